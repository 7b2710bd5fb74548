"""Attachment thumbnails (`/api/v1/message/{ID}/part/{PartID}/thumb`): Mailpit's
180x120 JPEG on white, made with Pillow (the inbox extra), 501 without it."""
from __future__ import annotations

import io

import pytest

import peers
from inbox_helpers import Http, InboxThread, send
from smtp_stack.inbox import api_extra

Image = peers.python_module('PIL.Image', extra='inbox')

RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)


def image_bytes(size, colour, fmt='PNG', transparent_left=False):
    picture = Image.new('RGBA', size, colour + (255,))
    if transparent_left:
        picture.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    out = io.BytesIO()
    (picture if fmt == 'PNG' else picture.convert('RGB')).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


def thumb_of(inbox, filename, ctype, data):
    send(inbox.smtp, subject='with attachment', attachments=[(filename, ctype, data)])
    web = Http(inbox.url)
    message = web.json('GET', '/api/v1/message/latest')
    [attachment] = message['Attachments']
    reply = web.get(f'/api/v1/message/{message["ID"]}/part/{attachment["PartID"]}/thumb')
    assert reply.status == 200, reply.body[:200]
    assert reply.headers['content-type'] == 'image/jpeg'
    assert reply.headers['content-disposition'] == f'filename="{filename}"'
    picture = Image.open(io.BytesIO(reply.body))
    assert picture.format == 'JPEG' and picture.size == (180, 120)
    return picture.convert('RGB')


def near(pixel, colour, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_a_large_image_fills_the_box_and_transparency_is_white(inbox):
    thumb = thumb_of(inbox, 'photo.png', 'image/png',
                     image_bytes((600, 300), RED, transparent_left=True))
    assert near(thumb.getpixel((170, 60)), RED)          # right half: the picture
    assert near(thumb.getpixel((10, 60)), WHITE)         # left half: transparent, so white
    assert near(thumb.getpixel((170, 2)), RED)           # cropped to fill: no band above


def test_a_small_image_is_not_enlarged_but_centred(inbox):
    thumb = thumb_of(inbox, 'icon.jpg', 'image/jpeg', image_bytes((40, 30), BLUE, fmt='JPEG'))
    assert near(thumb.getpixel((90, 60)), BLUE)
    for corner in ((5, 5), (174, 5), (5, 114), (174, 114)):
        assert near(thumb.getpixel(corner), WHITE)
    assert near(thumb.getpixel((90 - 25, 60)), WHITE)       # 40 px wide, not 180


def test_a_wide_short_image_is_fitted_inside(inbox):
    thumb = thumb_of(inbox, 'banner.gif', 'image/gif', image_bytes((900, 100), RED, fmt='GIF'))
    assert near(thumb.getpixel((90, 60)), RED) and near(thumb.getpixel((5, 60)), RED)
    assert near(thumb.getpixel((90, 10)), WHITE)            # scaled to 180x20: white above


@pytest.mark.parametrize('filename, ctype, data', [
    ('notes.txt', 'text/plain', b'not a picture'),
    ('broken.png', 'image/png', b'\x89PNG\r\n\x1a\n' + b'\0' * 40),
])
def test_what_is_no_readable_image_gets_a_blank_thumbnail(inbox, filename, ctype, data):
    thumb = thumb_of(inbox, filename, ctype, data)
    assert thumb.getextrema() == ((255, 255), (255, 255), (255, 255))


def test_unknown_parts_and_messages_are_404(inbox):
    send(inbox.smtp, subject='plain')
    web = Http(inbox.url)
    assert web.get('/api/v1/message/latest/part/9/thumb').status == 404
    assert web.get('/api/v1/message/latest/part/x/thumb').status == 404
    assert web.get('/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA/part/1/thumb').status == 404


def test_without_pillow_the_endpoint_says_why(inbox, monkeypatch):
    monkeypatch.setattr(api_extra, 'thumbnails_available', lambda: False)
    send(inbox.smtp, subject='x', attachments=[('a.png', 'image/png', image_bytes((9, 9), RED))])
    reply = Http(inbox.url).get('/api/v1/message/latest/part/2/thumb')
    assert reply.status == 501 and 'Pillow' in reply.json()['Error']
