"""`GET /api/v1/message/{ID}/part/{PartID}/thumb`: Mailpit's attachment thumbnails.

Mailpit's rules (server/apiv1/thumbnails.go): a 180x120 JPEG (quality
70) on white, so a transparent PNG or GIF does not come out black; an
image at least that large in both directions is scaled to cover the
box and cropped to its centre, a smaller one is scaled down to fit (never
up) and centred; a part that is no image, or one that cannot be read, is
a blank white thumbnail rather than an error.

Pillow is an optional dependency (the `inbox` extra): `available()` says
whether it is installed; without it the endpoint answers 501. Decoding
is CPU work: the caller runs `thumbnail()` off the hub (`offload`).
Images over MAX_PIXELS are not decoded (a small file can declare a huge
canvas: a decompression bomb) and get the blank thumbnail.
"""
from __future__ import annotations

import importlib.util
import io
from typing import Any

WIDTH, HEIGHT = 180, 120
QUALITY = 70
MAX_PIXELS = 40_000_000
WHITE = (255, 255, 255)


def available() -> bool:
    return importlib.util.find_spec('PIL') is not None


def thumbnail(content_type: str, data: bytes) -> bytes:
    """The JPEG thumbnail of an attachment's decoded bytes."""
    from PIL import Image

    canvas = Image.new('RGB', (WIDTH, HEIGHT), WHITE)
    if content_type.lower().startswith('image/'):
        picture = _decode(data)
        if picture is not None:
            canvas.paste(picture, ((WIDTH - picture.width) // 2, (HEIGHT - picture.height) // 2),
                         picture)
    out = io.BytesIO()
    canvas.save(out, 'JPEG', quality=QUALITY)
    return out.getvalue()


def _decode(data: bytes) -> Any:
    """The picture scaled as Mailpit scales it, in RGBA (its alpha the paste
    mask), or None when it is not an image Pillow can read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                return None
            opened.draft('RGB', (WIDTH * 2, HEIGHT * 2))      # JPEG: decode at a smaller scale
            picture = opened.convert('RGBA')
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if picture.width >= WIDTH and picture.height >= HEIGHT:
        return ImageOps.fit(picture, (WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    picture.thumbnail((WIDTH, HEIGHT), Image.Resampling.LANCZOS)    # down only, keeps the ratio
    return picture
