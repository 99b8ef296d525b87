"""Decoding images by content, never by extension.

The real datasets have files named ``*.png`` that hold JPEG data, modes L, RGB and RGBA,
and sizes from ~115 to ~1,900 px. :func:`load_image` opens whatever PIL recognises from
the bytes and converts it to one mode; a file that cannot be decoded raises
:class:`ImageDecodeError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_MODES", "ImageDecodeError", "load_image"]

#: the modes covtl normalises to: "RGB" for networks, "L" for masks
IMAGE_MODES = ("RGB", "L")


class ImageDecodeError(ValueError):
    """An image file that exists but cannot be decoded."""


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` by content and convert it to ``mode`` ("RGB" or "L").

    Transparency is composited onto black (CT backgrounds are black), so an RGBA or LA file
    with an alpha channel reads the same as its opaque version.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the bytes are not an image PIL can decode (truncated, corrupt, or
            not an image at all); the message names the file.
    """
    if mode not in IMAGE_MODES:
        raise ValueError(f"mode must be one of {IMAGE_MODES}, got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, rgba)
            return image.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageDecodeError(
            f"cannot decode image {path}: {err}. The file is corrupt or not an image; replace "
            "it with a good copy (or remove it from the split lists)."
        ) from err
