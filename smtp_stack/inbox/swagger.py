"""`/api/v1/swagger.json`: an OpenAPI 2.0 description of what this inbox serves.

Made from the app's route table (app.ROUTES) and the notes below, one per
route, so a route cannot be served without being described, nor described
without being served (tests/test_inbox_api.py checks both ways). The
shapes are Mailpit's API v1 objects, written here from what the handlers
return; where this inbox answers differently from Mailpit (the 501s of
what it cannot serve, the stricter HTML view), the description says so.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__

Json = dict[str, Any]

PATH_PARAMETERS = {
    'ID': 'Message database ID, or `latest` (the newest message; with `query`, the newest '
          'that matches)',
    'PartID': 'The MIME part\'s ID (`1`, `2.1` ...), from `Attachments` or `Inline`',
    'Tag': 'The tag\'s name',
    'name': 'A file of the page',
}


def _query(name: str, text: str, kind: str = 'string', required: bool = False) -> Json:
    return {'name': name, 'in': 'query', 'type': kind, 'required': required, 'description': text}


def _body(ref: str) -> Json:
    return {'name': 'Body', 'in': 'body', 'schema': {'$ref': f'#/definitions/{ref}'}}


def _ok(text: str, schema: Json | None = None) -> Json:
    return {'description': text, **({'schema': schema} if schema else {})}


def _ref(name: str) -> Json:
    return {'$ref': f'#/definitions/{name}'}


PAGING = [_query('start', 'Pagination offset (malformed: 0)', 'integer'),
          _query('limit', 'Messages per page (default 50; 0: all of the mailbox, none of a '
                          'search; malformed: 50)', 'integer'),
          _query('before', 'Only messages received before this time (ISO 8601)')]
SEARCH = [_query('query', 'Search (docs/inbox.md: Search)', required=True),
          _query('tz', 'Time zone of after: and before: (IANA name; default UTC)')]
TEXT_OK = _ok('`ok`', {'type': 'string'})
NO_SUCH = {'404': _ok('No such message (or part, or path)')}
NOT_HERE = {'501': _ok('Not available in this inbox: `{"Error": "..."}` says what is missing',
                       _ref('Error'))}

# (method, path) -> (tag, summary, parameters besides the path's, responses besides 400)
NOTES: dict[tuple[str, str], tuple[str, str, list[Json], Json]] = {
    ('GET', '/'): ('page', 'The web page', [], {'200': _ok('HTML')}),
    ('GET', '/static/{name}'): ('page', 'A file of the web page', [], {'200': _ok('The file')}),
    ('GET', '/view/{ID}.html'): (
        'testing', "Render the message's HTML part (cid: links made part URLs); marks it "
        'read. Served with a sandboxing CSP: no script of the mail runs.',
        [_query('embed', '1: links open in a new tab (a <base target="_blank">)'),
         _query('remote', '1: allow remote images')],
        {'200': _ok('HTML'), **NO_SUCH}),
    ('GET', '/view/{ID}.txt'): ('testing', "Render the message's text part; marks it read", [],
                                {'200': _ok('text/plain'), **NO_SUCH}),
    ('GET', '/api/v1/messages'): ('messages', 'List messages, newest first', PAGING,
                                  {'200': _ok('The list', _ref('MessagesSummary'))}),
    ('PUT', '/api/v1/messages'): (
        'messages', 'Set the read flag of IDs, of the matches of Search, or of all (not IDs '
        'and Search both)', [_body('ReadStatus'), SEARCH[1]], {'200': TEXT_OK}),
    ('DELETE', '/api/v1/messages'): ('messages', 'Delete IDs, or all without any',
                                     [_body('IDs')], {'200': TEXT_OK}),
    ('GET', '/api/v1/search'): ('messages', 'Search messages, newest first', SEARCH + PAGING,
                                {'200': _ok('The matches', _ref('MessagesSummary'))}),
    ('DELETE', '/api/v1/search'): ('messages', 'Delete the matches of a search', SEARCH,
                                   {'200': TEXT_OK}),
    ('POST', '/api/v1/send'): ('message', 'Send a message: stored as if it came over SMTP; '
                               'the basic-auth user is its Username', [_body('SendRequest')],
                               {'200': _ok('Its ID', _ref('SendResponse')),
                                '400': _ok('`{"Error": "..."}`', _ref('Error'))}),
    ('GET', '/api/v1/tags'): ('tags', 'Every tag, by name', [],
                              {'200': _ok('Names', {'type': 'array',
                                                    'items': {'type': 'string'}})}),
    ('PUT', '/api/v1/tags'): ('tags', 'Set the tags of messages (replacing theirs)',
                              [_body('SetTags')], {'200': TEXT_OK}),
    ('PUT', '/api/v1/tags/{Tag}'): ('tags', 'Rename a tag', [_body('RenameTag')],
                                    {'200': TEXT_OK}),
    ('DELETE', '/api/v1/tags/{Tag}'): ('tags', 'Take a tag off every message', [],
                                       {'200': TEXT_OK}),
    ('GET', '/api/v1/message/{ID}'): ('message', 'The message; marks it read', [SEARCH[0]],
                                      {'200': _ok('The message', _ref('Message')), **NO_SUCH}),
    ('GET', '/api/v1/message/{ID}/raw'): (
        'message', 'The message as stored', [_query('dl', '1: as a download')],
        {'200': _ok('text/plain'), **NO_SUCH}),
    ('GET', '/api/v1/message/{ID}/headers'): (
        'message', 'Its header fields, unfolded and undecoded', [],
        {'200': _ok('{Name: [values]}', {'type': 'object', 'additionalProperties': {
            'type': 'array', 'items': {'type': 'string'}}}), **NO_SUCH}),
    ('GET', '/api/v1/message/{ID}/part/{PartID}'): (
        'message', 'One MIME part, decoded, as a download (never inline)', [],
        {'200': _ok('The part'), **NO_SUCH}),
    ('GET', '/api/v1/message/{ID}/part/{PartID}/thumb'): (
        'message', 'A 180x120 JPEG thumbnail of an image part (blank white for any other '
        'part); 501 where Pillow is not installed', [],
        {'200': _ok('image/jpeg'), **NO_SUCH, **NOT_HERE}),
    ('POST', '/api/v1/message/{ID}/release'): (
        'message', 'Send the message to the relay (--relay) from its envelope sender',
        [_body('ReleaseRequest')], {'200': TEXT_OK, **NO_SUCH,
                                    '502': _ok('The relay failed or refused')}),
    ('GET', '/api/v1/message/{ID}/html-check'): (
        'other', 'HTML check: the HTML and CSS features of the HTML part that mail clients '
        'lack (caniemail data, as Mailpit); 400 for a message without HTML; remote '
        'stylesheets are not fetched; 501 without tinycss2', [],
        {'200': _ok('The result', _ref('HTMLCheckResponse')), **NO_SUCH, **NOT_HERE}),
    ('GET', '/api/v1/message/{ID}/link-check'): (
        'other', "Link check: each link's status (HEAD); private addresses are not asked",
        [_query('follow', '1 or true: follow up to three redirects')],
        {'200': _ok('The links', _ref('LinkCheckResponse')), **NO_SUCH}),
    ('GET', '/api/v1/message/{ID}/sa-check'): (
        'other', 'SpamAssassin check through spamd (--enable-spamassassin), or through '
        "rspamd (--enable-rspamd); the checker's trouble is an `Error` in a 200; 501 "
        'without either', [],
        {'200': _ok('The result', _ref('SpamAssassinResponse')), **NO_SUCH, **NOT_HERE}),
    ('GET', '/api/v1/chaos'): ('testing', 'The chaos triggers (SMTP errors on demand)', [],
                               {'200': _ok('The triggers', _ref('ChaosTriggers'))}),
    ('PUT', '/api/v1/chaos'): ('testing', 'Set every trigger; those left out are reset to 0 %',
                               [_body('ChaosTriggers')],
                               {'200': _ok('The triggers', _ref('ChaosTriggers'))}),
    ('GET', '/api/v1/info'): ('application', 'About this inbox', [],
                              {'200': _ok('Information', _ref('AppInformation'))}),
    ('GET', '/api/v1/mailboxes'): (
        'application', 'Ours, not Mailpit\'s: the mailboxes (--mailboxes) the caller may '
        'read, the default one first; another mailbox\'s API is this one under its `Path`',
        [], {'200': _ok('The mailboxes', _ref('Mailboxes'))}),
    ('GET', '/api/v1/webui'): ('application', "The web page's settings", [],
                               {'200': _ok('Settings', _ref('WebUIConfiguration'))}),
    ('GET', '/api/v1/swagger.json'): ('application', 'This description', [],
                                      {'200': _ok('OpenAPI 2.0')}),
    ('GET', '/livez'): ('application', 'Alive', [], {'200': TEXT_OK}),
    ('GET', '/readyz'): ('application', 'Ready (the database answers)', [], {'200': TEXT_OK}),
    ('GET', '/metrics'): ('application', "Mailpit's Prometheus metrics, with "
                          '`--enable-prometheus true` (else 404)', [], {'200': TEXT_OK}),
}


def _object(**properties: Json) -> Json:
    return {'type': 'object', 'properties': properties}


def _array(item: Json) -> Json:
    return {'type': 'array', 'items': item}


STRING: Json = {'type': 'string'}
INTEGER: Json = {'type': 'integer'}
BOOLEAN: Json = {'type': 'boolean'}
NUMBER: Json = {'type': 'number'}
TIME: Json = {'type': 'string', 'format': 'date-time'}
STRINGS = _array(STRING)
ADDRESSES = _array(_ref('Address'))
LIST_ITEM = _object(
    ID=STRING, MessageID=STRING, Read=BOOLEAN, From=_ref('Address'),
    To={**ADDRESSES, 'x-nullable': True}, Cc={**ADDRESSES, 'x-nullable': True},
    Bcc={**ADDRESSES, 'x-nullable': True}, ReplyTo=ADDRESSES, Subject=STRING, Created=TIME,
    Username=STRING, Tags=STRINGS, Size=INTEGER, Attachments=INTEGER, Snippet=STRING)
TRIGGER = _object(ErrorCode={**INTEGER, 'description': '400 to 599'},
                  Probability={**INTEGER, 'description': '0 to 100 (%)'})
PERSON = {**_object(Email=STRING, Name=STRING), 'required': ['Email']}

DEFINITIONS: dict[str, Json] = {
    'Address': _object(Name=STRING, Address=STRING),
    'Attachment': _object(PartID=STRING, FileName=STRING, ContentType=STRING, ContentID=STRING,
                          Size=INTEGER, Checksums=_object(MD5=STRING, SHA1=STRING,
                                                          SHA256=STRING)),
    'ListUnsubscribe': _object(Header=STRING, Links=STRINGS, Errors=STRING, HeaderPost=STRING),
    'MessageSummary': LIST_ITEM,
    'MessagesSummary': _object(total=INTEGER, unread=INTEGER, count=INTEGER,
                               messages_count=INTEGER, messages_unread=INTEGER, start=INTEGER,
                               tags=STRINGS, messages=_array(_ref('MessageSummary'))),
    'Message': _object(
        ID=STRING, MessageID=STRING, From=_ref('Address'), To=ADDRESSES, Cc=ADDRESSES,
        Bcc=ADDRESSES, ReplyTo=ADDRESSES, ReturnPath=STRING, Subject=STRING,
        ListUnsubscribe=_ref('ListUnsubscribe'), Date=TIME, Tags=STRINGS, Username=STRING,
        Text=STRING, HTML=STRING, Size=INTEGER, Inline=_array(_ref('Attachment')),
        Attachments=_array(_ref('Attachment'))),
    'ReadStatus': _object(Read=BOOLEAN, IDs=STRINGS, Search=STRING),
    'IDs': _object(IDs=STRINGS),
    'SetTags': _object(IDs=STRINGS, Tags=STRINGS),
    'RenameTag': _object(Name=STRING),
    'ReleaseRequest': {**_object(To=STRINGS), 'required': ['To']},
    'SendRequest': {**_object(
        From=PERSON, To=_array(PERSON), Cc=_array(PERSON), Bcc=STRINGS,
        ReplyTo=_array(PERSON), Subject=STRING, Text=STRING, HTML=STRING,
        Attachments=_array({**_object(Content={**STRING, 'description': 'base64'},
                                      Filename=STRING, ContentType=STRING, ContentID=STRING),
                            'required': ['Content', 'Filename']}),
        Headers={'type': 'object', 'additionalProperties': STRING}, Tags=STRINGS),
        'required': ['From']},
    'SendResponse': _object(ID=STRING),
    'ChaosTriggers': _object(Sender=TRIGGER, Recipient=TRIGGER, Authentication=TRIGGER),
    'AppInformation': _object(
        Version=STRING, LatestVersion=STRING, Database=STRING, DatabaseSize=INTEGER,
        Messages=INTEGER, Unread=INTEGER,
        Tags={'type': 'object', 'additionalProperties': INTEGER},
        RuntimeStats=_object(Uptime=INTEGER, Memory=INTEGER, MessagesDeleted=INTEGER,
                             SMTPAccepted=INTEGER, SMTPAcceptedSize=INTEGER,
                             SMTPRejected=INTEGER, SMTPIgnored=INTEGER)),
    'Mailboxes': _object(
        Mode={**STRING, 'enum': ['off', 'by-user', 'by-recipient']},
        Mailbox={**STRING, 'description': "This request's mailbox ('' the default one)"},
        Mailboxes=_array(_object(Name=STRING, Path=STRING, Total=INTEGER, Unread=INTEGER))),
    'WebUIConfiguration': _object(Label=STRING, SpamAssassin=BOOLEAN, ChaosEnabled=BOOLEAN,
                                  DuplicatesIgnored=BOOLEAN, HideDeleteAllButton=BOOLEAN,
                                  MessageRelay={'type': 'object'}),
    'LinkCheckResponse': _object(Errors=INTEGER, Links=_array(_object(
        URL=STRING, StatusCode=INTEGER, Status=STRING))),
    'SpamAssassinResponse': _object(IsSpam=BOOLEAN, Error=STRING, Score=NUMBER, Rules=_array(
        _object(Score=NUMBER, Name=STRING, Description=STRING))),
    'HTMLCheckResponse': _object(
        Platforms={'type': 'object', 'additionalProperties': STRINGS},
        Total=_object(Nodes=INTEGER, Tests=INTEGER, Supported=NUMBER, Partial=NUMBER,
                      Unsupported=NUMBER),
        Warnings=_array(_object(
            Slug=STRING, Title=STRING, Description=STRING, URL=STRING, Category=STRING,
            Tags=STRINGS, Keywords=STRING,
            NotesByNumber={'type': 'object', 'additionalProperties': STRING},
            Results=_array(_object(Name=STRING, Family=STRING, Platform=STRING,
                                   Version=STRING, Support=STRING, NoteNumber=STRING)),
            Score=_object(Found=INTEGER, Supported=NUMBER, Partial=NUMBER,
                          Unsupported=NUMBER)))),
    'Error': _object(Error=STRING),
}


def document(routes: Sequence[tuple[str, str, Callable[..., Any]]], base_path: str = '') -> Json:
    """The OpenAPI 2.0 document of `routes` (method, path template, handler).
    KeyError for a route without its note: every served route is described."""
    paths: dict[str, Json] = {}
    for method, path, _handler in routes:
        tag, summary, parameters, responses = NOTES[(method, path)]
        in_path = [{'name': name, 'in': 'path', 'type': 'string', 'required': True,
                    'description': PATH_PARAMETERS[name]}
                   for name in re.findall(r'\{(\w+)\}', path)]
        paths.setdefault(path, {})[method.lower()] = {
            'tags': [tag], 'summary': summary, 'parameters': in_path + parameters,
            'responses': {**responses, '400': _ok('A bad request: the reason as text')},
        }
    doc: Json = {
        'swagger': '2.0',
        'info': {'title': 'smtp-stack inbox: Mailpit API v1', 'version': __version__,
                 'description': "Mailpit's API v1 as the smtp-stack inbox serves it "
                                '(docs/inbox.md).'},
        'consumes': ['application/json'],
        'produces': ['application/json'],
        'paths': paths,
        'definitions': DEFINITIONS,
    }
    if base_path.strip('/'):
        doc['basePath'] = '/' + base_path.strip('/')
    return doc
