"""The HTML check (`GET /api/v1/message/{ID}/html-check`, htmlcheck.py and
caniemail.py): the features found, table by table; the numbers as Mailpit
defines them; the endpoint over HTTP; the data set and its refresh script."""
from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import io
import json
import os
import tarfile
import threading

import pytest

import peers
from inbox_helpers import Http, InboxThread, send

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'smtp_stack', 'inbox', 'data')


@pytest.fixture(scope='module')
def htmlcheck():
    peers.python_module('tinycss2', 'inbox')
    from smtp_stack.inbox import htmlcheck as module
    return module


def found(htmlcheck, markup: str) -> dict[str, int]:
    return {w['Slug']: w['Score']['Found'] for w in htmlcheck.check(markup)['Warnings']}


# -- what is found ------------------------------------------------------------------------

INLINE_CSS = [    # Mailpit's own table of inline styles (inline_test.go), and more
    ('<h1 style="transform: rotate(20deg)">H</h1>', {'css-transform': 1}),
    ('<h1 style="color:green; transform :rotate(20deg)">H</h1>', {'css-transform': 1}),
    ('<h1 style="TRANSFORM:rotate(20deg)">H</h1>', {'css-transform': 1}),
    ('<h1 style="ignore-transform: something">H</h1>', {}),
    ('<h1 style="text-transform: uppercase; text-transform: uppercase">H</h1>',
     {'css-text-transform': 1}),
    ('<h1 style="padding-inline-start: 5rem">H</h1>',
     {'css-padding-inline-start-end': 1, 'css-unit-rem': 1}),
    ('<h1 style="margin-inline-middle: 5px">H</h1>', {}),
    ('<h1 style="color: green !important;">H</h1>', {'css-important': 1}),
    ('<h1 style="color:green!important-stuff;">H</h1>', {}),
    ('<h1 style="display  : flex ;">H</h1>', {'css-display': 1, 'css-display-flex': 1}),
    ('<h1 style="DISPLAY:FLEX;">H</h1>', {'css-display': 1, 'css-display-flex': 1}),
    ('<h1 style="display: flexing;">H</h1>', {'css-display': 1}),
    ('<h1 style="line-height: 1rem;opacity: 0.5; width: calc(10px + 100px)">H</h1>',
     {'css-line-height': 1, 'css-opacity': 1, 'css-width': 1, 'css-unit-calc': 1,
      'css-unit-rem': 1}),
    ('<h1 style="border: solid rgb(255,255,255) 1px; color:rgba(255,255,255, 0);">H</h1>',
     {'css-border': 1, 'css-rgb': 1, 'css-rgba': 1}),
    ('<h1 border="2" BACKGROUND="GREEN">H</h1>', {'css-border': 1, 'css-background': 1}),
    ('<h1 border-something="2" background-something="green">H</h1>', {}),
    ('<h1 border="2" style="border: solid green 1px!important">H</h1>',
     {'css-border': 1, 'css-important': 1}),
    # A parser, not patterns over text: no property in a comment, a string or an attribute.
    ('<p style="color: red /* width: 1px */">x</p>', {}),
    ('<p style="font-family: \'width: 3px\'">x</p>', {}),
    ('<p title="width: 5px">x</p>', {}),
    ('<p style="margin:0;width:2vw"><td style="width:3vw"></td></p>',
     {'css-margin': 1, 'css-width': 2, 'css-unit-vw': 2}),
    ('<p style="--brand: red; color: var(--brand)">x</p>', {'css-variables': 1}),
]

STYLE_BLOCKS = [
    ('<style>a:hover, a:focus { color: red } p::before { content: "x" } p:after {}'
     ' li:nth-child(2n) {} a:hash {}</style>',
     {'html-style': 1, 'css-pseudo-class-hover': 1, 'css-pseudo-class-focus': 1,
      'css-pseudo-element-before': 1, 'css-pseudo-element-after': 1,
      'css-pseudo-class-nth-child': 1}),
    ('<style>@media screen and (max-width: 600px) { .a { width: 10vw } }'
     ' @font-face { font-family: X; src: url(x.woff) } @import url(x.css);</style>',
     {'html-style': 1, 'css-at-media': 1, 'css-at-font-face': 1, 'css-at-import': 1,
      'css-width': 1, 'css-unit-vw': 1}),
    ('<style>/* a:hover { display: flex } */ .x { color: red }</style>', {'html-style': 1}),
    ('<!-- <style>a:hover {}</style> -->', {}),
    ('<style>.a { display: grid } .b { display: grid }</style>',
     {'html-style': 1, 'css-display': 2, 'css-display-grid': 2}),
]

ELEMENTS = [
    ('<form><input type="submit"><input type="CHECKBOX"><button type="reset"></button>'
     '<input type="hidden" name="a"><input type="text" required></form>',
     {'html-form': 1, 'html-input-submit': 1, 'html-button-submit': 1, 'html-input-checkbox': 1,
      'html-button-reset': 1, 'html-input-hidden': 1, 'html-input-text': 1, 'html-required': 1}),
    ('<img src="a.webp"><img src="b.GIF?v=2"><img src="data:image/png;base64,AA">'
     '<img src="cid:logo"><img src="x.png">', {'image-webp': 1, 'image-gif': 1, 'image-base64': 1}),
    ('<a href="#top">t</a><a href="https://example.com/#top">e</a>', {'html-anchor-links': 1}),
    ('<script>1</script><script type="application/ld+json">{}</script>', {'html-script': 1}),
    ('<html><body><p>x</p></body></html>', {'html-body': 1}),
    ('<section><nav></nav></section><video></video><svg></svg><hr>',
     {'html-semantics': 2, 'html-video': 1, 'html-svg': 1, 'html-hr': 1}),
    ('<table bgcolor="#fff" width="100"><tr><td width="5" height="5">x</td></tr></table>',
     {'css-background-color': 1, 'css-width': 2, 'css-height': 1}),
    ('<p>plain</p><div><span>text</span></div>', {}),
]


@pytest.mark.parametrize('markup, expected', INLINE_CSS + STYLE_BLOCKS + ELEMENTS)
def test_features_found(htmlcheck, markup, expected):
    assert found(htmlcheck, markup) == expected


@pytest.mark.parametrize('markup, nodes', [
    # With a </body>: every element but html, head and meta, as Mailpit counts.
    ('<html><head><meta charset="utf-8"><title>t</title><style></style></head>'
     '<body><p>x</p></body></html>', 4),
    # A fragment: the elements of the body, and scripts wherever they are.
    ('<p>a<b>b</b></p><script></script>', 3),
    ('<head><title>t</title><script></script></head><p>x</p>', 2),
])
def test_nodes_are_counted_as_mailpit_counts_them(htmlcheck, markup, nodes):
    assert htmlcheck.check(markup)['Total']['Nodes'] == nodes


# -- the numbers --------------------------------------------------------------------------

def test_a_warning_reads_the_data_set_as_mailpit_does(htmlcheck):
    [flex] = [w for w in htmlcheck.check('<p style="display:flex">x</p>')['Warnings']
              if w['Slug'] == 'css-display-flex']
    assert (flex['Title'], flex['Category']) == ('display:flex', 'css')
    assert flex['URL'] == 'https://www.caniemail.com/features/css-display-flex/'
    assert flex['NotesByNumber']['2'] == '<code>display:inline-flex</code> is not supported.'
    by_client = {(r['Family'], r['Platform'], r['Version']): r for r in flex['Results']}
    assert by_client['outlook', 'windows', '2019'] == {
        'Name': 'Outlook Windows (2019)', 'Family': 'outlook', 'Platform': 'windows',
        'Version': '2019', 'Support': 'no', 'NoteNumber': ''}
    assert by_client['gmail', 'ios', '2019-02']['Support'] == 'yes'
    assert by_client['gmail', 'ios', '2020-11'] | {'Name': ''} == {        # "a #1"
        'Name': '', 'Family': 'gmail', 'Platform': 'ios', 'Version': '2020-11',
        'Support': 'partial', 'NoteNumber': '1'}
    supports = [r['Support'] for r in flex['Results']]
    score = flex['Score']
    assert score['Found'] == 1
    for verdict, share in (('yes', 'Supported'), ('partial', 'Partial'), ('no', 'Unsupported')):
        assert score[share] == pytest.approx(supports.count(verdict) / len(supports) * 100)


def test_the_total_is_the_worst_weighted_share_and_warnings_rank_by_it(htmlcheck):
    markup = ('<div style="display:flex"><p>a</p><p>b</p><p>c</p></div>'
              '<img src="a.webp"><img src="b.webp"><script></script>')
    result = htmlcheck.check(markup)
    total, warnings = result['Total'], result['Warnings']
    assert total['Nodes'] == 7
    weighted = [(w['Score']['Partial'] * w['Score']['Found'] / 7,
                 w['Score']['Unsupported'] * w['Score']['Found'] / 7) for w in warnings]
    assert total['Partial'] == pytest.approx(max(p for p, _ in weighted))
    assert total['Unsupported'] == pytest.approx(max(u for _, u in weighted))
    assert total['Supported'] == pytest.approx(100 - total['Partial'] - total['Unsupported'])
    ranks = [p + u for p, u in weighted]
    assert ranks == sorted(ranks, reverse=True)
    assert warnings[0]['Slug'] == 'html-script'          # unsupported everywhere
    assert warnings[0]['Score'] == {'Found': 1, 'Supported': 0.0, 'Partial': 0.0,
                                    'Unsupported': 100.0}
    assert total['Tests'] == len(htmlcheck.tested()) + 1 > 150
    assert result['Platforms']['windows'] == ['Mozilla Thunderbird', 'Outlook']
    assert 'Gmail' in result['Platforms']['android']


# -- the endpoint ------------------------------------------------------------------------

HTML = ('<html><head><style>a:hover { color: red }</style></head><body>'
        '<p style="display:flex">Hi</p><img src="cid:logo"></body></html>')


def test_html_check_over_http_in_mailpit_shape(tmp_path, htmlcheck):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='Rich', html=HTML)
        send(inbox.smtp, subject='Plain')
        web = Http(inbox.url)
        listing = web.json('GET', '/api/v1/messages')['messages']
        ids = {m['Subject']: m['ID'] for m in listing}
        reply = web.get(f'/api/v1/message/{ids["Rich"]}/html-check')
        assert reply.status == 200 and reply.headers['content-type'].startswith(
            'application/json')
        result = reply.json()
        assert set(result) == {'Platforms', 'Total', 'Warnings'}
        assert set(result['Total']) == {'Nodes', 'Partial', 'Supported', 'Tests', 'Unsupported'}
        assert {w['Slug']: w['Score']['Found'] for w in result['Warnings']} == {
            'html-body': 1, 'html-style': 1, 'css-pseudo-class-hover': 1, 'css-display': 1,
            'css-display-flex': 1}
        for warning in result['Warnings']:
            assert set(warning) == {'Slug', 'Title', 'Description', 'URL', 'Category', 'Tags',
                                    'Keywords', 'NotesByNumber', 'Results', 'Score'}
            assert set(warning['Score']) == {'Found', 'Supported', 'Partial', 'Unsupported'}
            for row in warning['Results']:
                assert set(row) == {'Name', 'Family', 'Platform', 'Version', 'Support',
                                    'NoteNumber'}
        assert web.get('/api/v1/message/latest/html-check').status == 400     # Plain: latest
        plain = web.get(f'/api/v1/message/{ids["Plain"]}/html-check')
        assert (plain.status, plain.text) == (400, 'message does not contain HTML\n')
        assert web.get('/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA/html-check').status == 404
        assert web.get('/api/v1/message/latest/html-check?query=subject:Rich').json() == result
        assert web.json('GET', '/api/v1/messages')['unread'] == 2      # checking is not reading


# -- the data set and its refresh ---------------------------------------------------------

def test_the_data_set_is_carried_with_its_licence_and_source():
    with open(os.path.join(DATA, 'LICENSE')) as f:
        licence = f.read()
    assert licence.startswith('MIT License') and 'Avi Goldman' in licence
    with open(os.path.join(DATA, 'SOURCE')) as f:
        assert f.readline() == 'npm package caniemail 2.0.2 (license: MIT)\n'
    with open(os.path.join(DATA, 'caniemail.json'), 'rb') as f:
        data = json.load(f)
    assert {'api_version', 'nicenames', 'data'} <= set(data) and len(data['data']) > 300


def _refresh_script():
    spec = importlib.util.spec_from_file_location(
        'refresh_caniemail', os.path.join(ROOT, 'scripts', 'refresh_caniemail.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w:gz') as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


class _Registry(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self):
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b'')

    def log_message(self, *args):
        pass


@pytest.mark.parametrize('tampered', [False, True])
def test_refresh_takes_the_files_from_a_verified_npm_tarball(tmp_path, tampered):
    script = _refresh_script()
    data = json.dumps({'api_version': '9', 'nicenames': {}, 'data': []}).encode()
    tarball = _tarball({'package/data/caniemail.json': data, 'package/LICENSE': b'MIT License\n',
                        'package/package.json': b'{}'})
    digest = hashlib.sha512(tarball + (b'x' if tampered else b'')).digest()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Registry)
    base = f'http://127.0.0.1:{server.server_address[1]}'
    _Registry.routes = {
        '/caniemail/9.9.9': json.dumps({'version': '9.9.9', 'license': 'MIT', 'dist': {
            'tarball': f'{base}/caniemail/-/caniemail-9.9.9.tgz',
            'integrity': 'sha512-' + base64.b64encode(digest).decode()}}).encode(),
        '/caniemail/-/caniemail-9.9.9.tgz': tarball}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if tampered:
            with pytest.raises(SystemExit, match='integrity'):
                script.refresh('9.9.9', tmp_path, base)
            assert os.listdir(tmp_path) == []
        else:
            assert script.refresh('9.9.9', tmp_path, base) == '9.9.9'
            assert (tmp_path / 'caniemail.json').read_bytes() == data
            assert (tmp_path / 'LICENSE').read_bytes() == b'MIT License\n'
            assert (tmp_path / 'SOURCE').read_text().startswith(
                'npm package caniemail 9.9.9 (license: MIT)\n')
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
