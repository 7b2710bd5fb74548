"""parse.html_text (the snippet of an HTML message) reads plain markup
with regular expressions instead of html.parser: both readings must give
the reader the same events, on a table of the edge cases and on markup
generated from the pieces where the two could part (tags and their
attributes, character references, stray `<` and `>`, comments, scripts,
whitespace the parser treats as part of a tag name)."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_stack.inbox.parse import _read_plain_html, _TextOfHtml, html_text

SCALE = max(1, int(os.environ.get('SMTP_STACK_FUZZ', '1')))
MANY = settings(max_examples=300 * SCALE, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def parsed(markup: str) -> str:
    """What html.parser gives the reader."""
    reader = _TextOfHtml()
    reader.feed(markup)
    reader.close()
    return ''.join(reader.out)


def read_plainly(markup: str) -> str | None:
    """What the fast reading gives it (None: not plain, the parser's turn)."""
    reader = _TextOfHtml()
    return ''.join(reader.out) if _read_plain_html(markup, reader) else None


PLAIN = [
    '<html><body><h1>Order 1</h1><p>Your order left our <b>warehouse</b> today.</p>'
    '<p><a href="https://shop.example.org/orders/1">Track it</a></p></body></html>\r\n',
    'a &amp; b<br/>c<p/>d<br />e',
    '<head><title>T</title><meta charset="utf-8"><link rel=x></head><body>x</body>',
    '<P CLASS=x>Hi</P >', '<p\nclass="a">b</p>', '&#x41;&nbsp;&amp &lt;&gt;', '<div  >x</div>',
    '<td>1</td><td>2</td>', '<noscript>n</noscript>y', 'text > more',
    "<img src='a.png' alt=\"x\" width=1>", '<o:p>word</o:p>', '<head>left open<body>z',
]
NOT_PLAIN = [
    'a < b', '<a title="x>y">z</a>', "<img alt='it''s'>", '<p/ >x', '<!-- c --><p>x</p>',
    '<!DOCTYPE html><p>x</p>', '<script>var a = "</p>";</script>x', '<STYLE>p{}</STYLE>y',
    '<?xml version="1.0"?><p>x</p>', '<p\x0b>x</p>', '<a href=x/>y', '<p class=x/>y', '</p class=x>',
]


@pytest.mark.parametrize('markup', PLAIN)
def test_plain_markup_is_read_as_the_parser_reads_it(markup):
    assert read_plainly(markup) == parsed(markup)


@pytest.mark.parametrize('markup', NOT_PLAIN)
def test_other_markup_goes_to_the_parser(markup):
    assert read_plainly(markup) is None
    reader = _TextOfHtml()
    reader.feed(markup)
    reader.close()
    assert html_text(markup) == ' '.join(''.join(reader.out).split())


NAMES = st.sampled_from(['p', 'P', 'br', 'img', 'head', 'title', 'body', 'div', 'b', 'a',
                         'h1', 'td', 'meta', 'link', 'noscript', 'script', 'style', 'o:p',
                         'x-y', 'Li'])
SPACE = st.sampled_from([' ', '  ', '\n', '\t', '\r\n', '\f', '\x0b', ''])
VALUE = st.sampled_from(['"a"', "'b c'", 'x', '"x>y"', "'it's'", 'http://e/x', '""', 'x/',
                         '"a/"', '`q`'])
ATTRIBUTE = st.builds(lambda s, n, eq, v: s + n + (eq + v if eq else ''), SPACE,
                      st.sampled_from(['href', 'class', 'alt', 'data-x', 'w']),
                      st.sampled_from(['', '=', ' = ']), VALUE)
START = st.builds(lambda n, attrs, s, close: f'<{n}{"".join(attrs)}{s}{close}>', NAMES,
                  st.lists(ATTRIBUTE, max_size=3), SPACE, st.sampled_from(['', '/', ' /']))
END = st.builds(lambda s1, n, s2: f'<{s1}/{n}{s2}>'.replace('</', '</', 1)
                if not s1 else f'</{s1}{n}{s2}>', SPACE, NAMES, SPACE)
TEXT = st.sampled_from(['word', ' ', 'a &amp; b', '&#65;', '&nbsp;', '&amp', '1 < 2', '3 > 2',
                        '\u00e9t\u00e9', '\x01', '&#x1F600;', '<', '>', '&lt;p&gt;', '\r\n'])
OTHER = st.sampled_from(['<!-- c -->', '<!DOCTYPE html>', '<?php ?>', '<![CDATA[x]]>', '< p>',
                         '</>', '<3'])
MARKUP = st.lists(st.one_of(START, END, TEXT, OTHER), max_size=14).map(''.join)


@MANY
@given(MARKUP)
def test_generated_markup_is_read_alike(markup):
    fast = read_plainly(markup)
    if fast is not None:
        assert fast == parsed(markup)
