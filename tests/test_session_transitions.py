"""The session's named transitions, pinned field by field by the table in
Session's docstring (Rule 1): first on the methods, then over loopback on
every command that calls one. The fields are read from the objects, so a
new field nobody put in the table fails here."""
from __future__ import annotations

import base64
import ssl

import pytest

from smtp_stack.addresses import Address
from smtp_stack.proxy import build_proxy_v1
from smtp_stack.session import Envelope, Session
from smtp_stack.stream import DataStream

from conftest import WAIT, RawClient

CELLS = {'kept', 'reset', 'set', 'command', 'new', 'if-MAIL'}
COLUMNS = ('greet', 'end_transaction', 'STARTTLS', 'XCLIENT')
# What if-MAIL does to each field it is written for.
IF_MAIL = {'transaction': lambda n: n + 1, 'xforward': lambda attrs: {}}
ENVELOPE_FIELDS = tuple(name for name in Envelope.__slots__ if name != '__dict__')


def read_table() -> dict[str, dict[str, str]]:
    """field -> {transition: cell}, from Session's docstring."""
    lines = [line.strip() for line in Session.__doc__.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith('field '))
    header = lines[start].split()[1:]
    table = {}
    for line in lines[start + 1:]:
        if not line:
            break
        field, *cells = line.split()
        table[field] = dict(zip(header, cells, strict=True))
    return table


TABLE = read_table()


def new_session() -> Session:
    return Session('198.51.100.1', 25, '192.0.2.7', 40000)


FRESH = vars(new_session())


def envelope_fields(envelope: Envelope) -> dict:
    fields = {name: getattr(envelope, name) for name in ENVELOPE_FIELDS}
    fields['rcpt_to'] = list(fields['rcpt_to'])
    fields['vars'] = dict(vars(envelope))       # what user code or policies added
    return fields


def snapshot(session: Session) -> dict:
    fields = {name: dict(value) if isinstance(value, dict) else value
              for name, value in vars(session).items()}
    return {'fields': fields, 'envelope': session.envelope,
            'envelope_fields': envelope_fields(session.envelope)}


def matches(value, expected) -> bool:
    return expected(value) if callable(expected) else value == expected


def check_transition(column: str, before: dict, after: dict, expected: dict,
                     body_sent: bool = False) -> None:
    """Every field of `after` is what the table's `column` says of `before`:
    `expected` gives the values of the set (and command) cells."""
    was, now = before['fields'], after['fields']
    assert set(now) == set(TABLE) == set(was), 'the table names every field, and only those'
    may_set = {field for field, cells in TABLE.items() if cells[column] in ('set', 'command')}
    assert set(expected) <= may_set, f'{column} sets only {sorted(may_set)}'
    mail = before['envelope_fields']['mail_from'] is not None
    for field, cells in TABLE.items():
        cell = cells[column]
        if field in expected:
            assert matches(now[field], expected[field]), (field, now[field])
        elif cell == 'set':
            pytest.fail(f'{column} sets {field}: the test must say to what')
        elif cell in ('kept', 'command'):       # a command cell the command did not name
            assert now[field] == was[field], field
        elif cell == 'reset':
            assert was[field] != FRESH[field], f'{field} was never set: the test proves nothing'
            assert now[field] == FRESH[field], field
        elif cell == 'if-MAIL':
            assert now[field] == (IF_MAIL[field](was[field]) if mail else was[field]), field
        elif cell == 'new':
            check_new_envelope(before, after, body_sent)
        else:
            pytest.fail(f'unknown cell {cell!r} for {field}')


def check_new_envelope(before: dict, after: dict, body_sent: bool) -> None:
    """A new Envelope, as fresh as one just made; the old one unchanged but
    for the body stream DATA/BDAT gave it, whose spool is gone."""
    old = before['envelope']
    assert after['envelope'] is not old
    assert after['envelope_fields'] == envelope_fields(Envelope())
    kept = envelope_fields(old)
    if body_sent:
        stream = kept.pop('data_stream')
        assert stream is not None
        assert stream.spooled is None or stream.spooled.closed
    assert kept == {k: v for k, v in before['envelope_fields'].items() if k in kept}


def test_the_table_names_every_field_of_a_session_and_nothing_else():
    assert set(TABLE) == set(vars(new_session()))
    assert all(tuple(cells) == COLUMNS for cells in TABLE.values())
    assert {cell for cells in TABLE.values() for cell in cells.values()} <= CELLS
    assert {field for field, cells in TABLE.items() if 'if-MAIL' in cells.values()} == set(IF_MAIL)


# -- the methods, on a session with every field set ------------------------------

class Marker:
    """A value no transition could make up: kept means this very object."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f'<{self.name}>'


def dirty_envelope(mail: bool) -> Envelope:
    envelope = Envelope()
    envelope.add_header('X-Checked', 'yes')
    envelope.remove_header('X-Forged')
    envelope.auth_results = Marker('auth_results')      # a policy's finding
    if mail:
        envelope.mail_from = Address('a@b.example', {'SIZE': '10'})
        envelope.rcpt_to.append(Address('c@d.example'))
        chunks = [b'Subject: x\r\n\r\nhi\r\n']
        envelope.data_stream = DataStream(lambda: chunks.pop() if chunks else None)
        envelope.spool()
    return envelope


def dirty_session(mail: bool) -> Session:
    session = new_session()
    for name in vars(session):
        setattr(session, name, Marker(name))
    session.xclient = {'PROTO': 'ESMTP'}
    session.xforward = {'NAME': 'fwd.example'}
    session.transaction = 7
    session.envelope = dirty_envelope(mail)
    return session


# transition -> (the call, the values of its set cells)
METHODS = {
    'greet': (lambda s: s.greet('EHLO', 'name.example'),
              {'helo': 'name.example', 'greeting': 'EHLO'}),
    'end_transaction': (lambda s: s.end_transaction(), {}),
    'STARTTLS': (lambda s: s.start_over(keep_login=False), {}),
    'XCLIENT': (lambda s: s.start_over(keep_login=True, helo='orig.example'),
                {'helo': 'orig.example'}),
}


@pytest.mark.parametrize('mail', [True, False], ids=['in a transaction', 'outside'])
@pytest.mark.parametrize('column', COLUMNS)
def test_each_transition_does_what_its_column_says(column, mail):
    session = dirty_session(mail)
    before = snapshot(session)
    call, sets = METHODS[column]
    call(session)
    check_transition(column, before, snapshot(session), sets, body_sent=mail)
    if mail:
        assert before['envelope'].data_stream.spooled.closed


def test_user_attributes_survive_every_transition():
    session = dirty_session(True)
    session.dnsbl = Marker('dnsbl')
    for call, _ in METHODS.values():
        call(session)
    assert session.dnsbl.name == 'dnsbl'


def test_greet_keeps_the_name_xclient_gave():
    session = new_session()
    session.xclient = {'HELO': 'orig.example'}
    session.greet('HELO', 'proxy.example')
    assert (session.helo, session.greeting) == ('orig.example', 'HELO')


def test_reset_envelope_is_the_old_name_of_end_transaction():
    assert Session.reset_envelope is Session.end_transaction


# -- over loopback: every command that calls a transition --------------------------

class Recorder:
    """Middleware: the session as each NOOP finds it (what the commands
    before left); spools each whole body, as a content filter would."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def __call__(self, ctx, next):
        if ctx.command_name == 'NOOP':
            self.states.append(snapshot(ctx.session))
        next()
        if ctx.command_name == 'DATA' or ctx.command_args[-1:] == ['LAST']:
            ctx.session.envelope.spool()


def on_auth(session):
    auth = session.auth
    if auth.method == 'XCLIENT' or auth.validate('secret'):
        return {'name': auth.username}
    return None


def is_tls(info) -> bool:
    return info is not None and info['version'] in ('TLSv1.2', 'TLSv1.3')


def starttls(c: RawClient) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    c.sock = context.wrap_socket(c.sock, server_hostname='mx.test')
    c.buf = b''


PLAIN = base64.b64encode(b'\0alice\0secret').decode()
BODY = 'Subject: x\r\n\r\nhi\r\n'
ALL_ATTRIBUTES = ('XCLIENT NAME=x.example ADDR=192.0.2.50 PORT=1234 DESTADDR=198.51.100.9 '
                  'DESTPORT=2525 HELO=orig.example LOGIN=bob')

# (id, LMTP, in a transaction, the opening XCLIENT, the transition's lines
# with their replies, its column, the values of its set and command cells)
SCENARIOS = [
    ('RSET in a transaction', False, True, None, [('RSET', 250)], 'end_transaction', {}),
    ('RSET outside one', False, False, None, [('RSET', 250)], 'end_transaction', {}),
    ('DATA', False, True, None, [('DATA', 354), (BODY + '.\r\n', 250)], 'end_transaction', {}),
    ('BDAT LAST', False, True, None, [(f'BDAT {len(BODY)} LAST\r\n{BODY}', 250)],
     'end_transaction', {}),
    ('BDAT abandoned', False, True, None, [('BDAT 3\r\nabc', 250)], 'end_transaction', {}),
    ('EHLO in a transaction', False, True, None, [('EHLO second.example', 250)], 'greet',
     {'helo': 'second.example', 'greeting': 'EHLO'}),
    ('HELO', False, False, None, [('HELO second.example', 250)], 'greet',
     {'helo': 'second.example', 'greeting': 'HELO'}),
    ('LHLO in a transaction', True, True, None, [('LHLO second.example', 250)], 'greet',
     {'helo': 'second.example', 'greeting': 'LHLO'}),
    ('EHLO after XCLIENT HELO=', False, False, 'XCLIENT PROTO=ESMTP HELO=orig.example',
     [('EHLO second.example', 250)], 'greet', {'helo': 'orig.example', 'greeting': 'EHLO'}),
    ('STARTTLS in a transaction', False, True, None, [('STARTTLS', 220)], 'STARTTLS',
     {'secure': True, 'tls': is_tls}),
    ('STARTTLS', False, False, None, [('STARTTLS', 220)], 'STARTTLS',
     {'secure': True, 'tls': is_tls}),
    ('XCLIENT with every attribute', False, False, None, [(ALL_ATTRIBUTES, 220)], 'XCLIENT',
     {'remote_address': '192.0.2.50', 'remote_port': 1234, 'client_hostname': 'x.example',
      'local_address': '198.51.100.9', 'local_port': 2525, 'helo': 'orig.example',
      'xclient': {'PROTO': 'ESMTP', 'NAME': 'x.example', 'ADDR': '192.0.2.50',
                  'PORT': '1234', 'DESTADDR': '198.51.100.9', 'DESTPORT': '2525',
                  'HELO': 'orig.example', 'LOGIN': 'bob'},
      'auth': lambda auth: (auth.method, auth.username) == ('XCLIENT', 'bob'),
      'user': {'name': 'bob'}}),
    ('XCLIENT ADDR= alone', False, False, None, [('XCLIENT ADDR=192.0.2.51', 220)], 'XCLIENT',
     {'remote_address': '192.0.2.51', 'client_hostname': '[192.0.2.51]', 'helo': None,
      'xclient': {'PROTO': 'ESMTP', 'ADDR': '192.0.2.51'}, 'auth': None, 'user': None}),
    ('XCLIENT LOGIN=[UNAVAILABLE]', False, False, None,
     [('XCLIENT LOGIN=[UNAVAILABLE]', 220)], 'XCLIENT',
     {'auth': None, 'user': None, 'helo': None,
      'xclient': {'PROTO': 'ESMTP', 'LOGIN': None}}),
]


@pytest.mark.parametrize('lmtp, in_mail, opening, lines, column, expected',
                         [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_each_command_makes_its_transition(serve, lmtp, in_mail, opening, lines, column,
                                           expected):
    recorder = Recorder()
    server = serve(middleware=[recorder], lmtp=lmtp, use_proxy=['127.0.0.1'],
                   use_xclient=True, use_xforward=True, allow_insecure_auth=True,
                   greeting_delay=WAIT, on_auth=on_auth)
    c = RawClient(server.address)
    try:
        # A PROXY header and a NOOP before the 220: `proxy` and
        # `pre_greeting_data` are set too (the NOOP records a first state).
        c.send(build_proxy_v1('192.0.2.7', 40001, '198.51.100.1', 25) + b'NOOP\r\n')
        c.expect(220)
        c.expect(250)
        c.expect(220, opening or 'XCLIENT PROTO=ESMTP')
        c.expect(250, ('LHLO' if lmtp else 'EHLO') + ' first.example')
        c.expect(235, 'AUTH PLAIN ' + PLAIN)
        c.expect(250, 'XFORWARD NAME=fwd.example ADDR=192.0.2.99')
        if in_mail:
            c.expect(250, 'MAIL FROM:<a@b.example>')
            c.expect(250, 'RCPT TO:<c@d.example>')
        c.expect(250, 'NOOP')
        for line, code in lines:
            if '\r\n' in line:        # a body or a BDAT chunk: sent as it is
                c.send(line)
                c.expect(code)
            else:
                c.expect(code, line)
        if column == 'STARTTLS':
            starttls(c)
        c.expect(250, 'NOOP')
        c.expect(221, 'QUIT')
    finally:
        c.close()
    first, before, after = recorder.states[0], recorder.states[-2], recorder.states[-1]
    assert first['fields']['pre_greeting_data'] and first['fields']['proxy'] is not None
    assert (before['envelope_fields']['mail_from'] is not None) == in_mail
    body_sent = lines[0][0].startswith(('DATA', 'BDAT'))
    check_transition(column, before, after, expected, body_sent)
