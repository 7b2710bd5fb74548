"""The pure pieces of benchmarks/inbox_bench.py: the PNG it attaches, the
message mix, how the mix is dealt to the connections, and how py-spy's
stacks are summed (tools, not tests of speed: no figure is asserted)."""
from __future__ import annotations

import collections
import email
import email.policy
import io
import os
import sys

import pytest

import peers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
try:
    import inbox_bench
finally:
    sys.path.pop(0)


@pytest.mark.parametrize('width, height', [(1, 1), (64, 48), (3, 200)])
def test_the_png_is_one_that_pillow_reads(width, height):
    image = peers.python_module('PIL.Image', extra='inbox')
    with image.open(io.BytesIO(inbox_bench.png_bytes(width, height))) as picture:
        picture.load()                              # checks every CRC and the zlib stream
        assert (picture.format, picture.mode, picture.size) == ('PNG', 'RGB', (width, height))
        assert picture.getpixel((width - 1, 0))[0] == (255 if width > 1 else 0)


def test_the_mix_cycles_text_html_and_png():
    messages = inbox_bench.make_messages(0, 300)
    assert collections.Counter(m.kind for m in messages) == {'text': 100, 'html': 100, 'png': 100}
    for item in messages[:3]:
        parsed = email.message_from_bytes(item.data, policy=email.policy.default)
        types = [part.get_content_type() for part in parsed.walk()]
        assert {'text': ['text/plain'],
                'html': ['multipart/alternative', 'text/plain', 'text/html'],
                'png': ['multipart/mixed', 'text/plain', 'image/png']}[item.kind] == types
        assert item.data.endswith(b'\r\n') and b'\n' not in item.data.replace(b'\r\n', b'')
    attached = email.message_from_bytes(messages[2].data, policy=email.policy.default)
    [png] = attached.iter_attachments()
    assert png.get_filename() == 'pixel.png' and png.get_content() == inbox_bench.PNG


def test_the_mix_feeds_the_tag_rule_and_plus_addresses():
    messages = inbox_bench.make_messages(0, 20)
    subjects = [email.message_from_bytes(m.data)['Subject'] for m in messages]
    assert sum('Invoice' in s for s in subjects) == 5              # tag rule: subject:invoice
    assert inbox_bench.TAG_RULE == 'billing=subject:invoice'
    assert sum(m.recipients == ('ann+signup@example.com',) for m in messages) == 4
    assert len({email.message_from_bytes(m.data)['Message-ID'] for m in messages}) == 20
    assert inbox_bench.make_message(7) == inbox_bench.make_message(7)      # the same every run


def test_each_connection_gets_the_same_mix():
    messages = inbox_bench.make_messages(0, 1200)
    shares = inbox_bench.shares(messages, 4)
    assert sorted(m.data for share in shares for m in share) == sorted(m.data for m in messages)
    for share in shares:
        assert collections.Counter(m.kind for m in share) == {'text': 100, 'html': 100,
                                                              'png': 100}


def test_py_spy_stacks_are_summed_self_and_inclusive():
    lines = ['thread (0x1);run (a.py:1);add (smtp_stack/inbox/store.py:9);execute (x) 6\n',
             'thread (0x1);run (a.py:1);add (smtp_stack/inbox/store.py:9) 3\n',
             'thread (0x2);run (a.py:1);run (a.py:1);parse (smtp_stack/inbox/parse.py:5) 1\n',
             'garbage line\n', '\n']
    total, own, inclusive = inbox_bench.summarize_collapsed(lines, top=2, keep='smtp_stack')
    assert total == 10
    assert own == [('execute (x)', 6), ('add (smtp_stack/inbox/store.py:9)', 3)]
    assert inclusive == [('add (smtp_stack/inbox/store.py:9)', 9),
                         ('parse (smtp_stack/inbox/parse.py:5)', 1)]
    _, _, everything = inbox_bench.summarize_collapsed(lines, top=5)
    assert ('run (a.py:1)', 10) in everything             # a recursive frame counted once
