"""Opening images safely and turning every PIL mode into the RGB the encoders expect.

Reads image files (or bytes, or PIL images); writes nothing. Every failure is an
``ImageLoadError`` that names the file and says what is wrong with it, so callers can skip a
bad row with a reason instead of crashing deep inside Pillow.

Decisions on odd inputs (tested in tests/test_images.py):
- EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo is encoded the way
  people see it, not lying on its side.
- Transparency (RGBA, LA, P with a transparent colour) is composited onto white, because the
  colour hidden under transparent pixels is arbitrary (often black) and would dominate the
  embedding of a logo or a cut-out.
- 16-bit greyscale (I;16, and I/F holding values above 255) is rescaled from 0..65535 to 8
  bits; Pillow's own conversion clips everything above 255 to white. A float image (F) whose
  values lie within 0..1 is read as 0..1, not as 8-bit values (which would make it black).
- CMYK, YCbCr, L, 1, HSV, LAB: Pillow's standard conversion to RGB.
- Images over ``MAX_PIXELS`` are refused before they are decoded (decompression bombs), a
  PIL image over it before it is converted (whole, that cost hundreds of MB), and images of
  no pixels (a PIL image 0 pixels wide) are refused.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# 64 megapixels is far beyond what the 224-px encoders need and far below what exhausts memory
# (an RGBA 64 MP image decodes to 256 MB, and to_rgb keeps one or two more copies at most, of
# 64-256 MB). Pillow's own limit only warns up to twice its value.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

ImageInput = str | os.PathLike | bytes | Image.Image


class ImageLoadError(ValueError):
    """An input could not be used as an image. The message names the input and the reason;
    ``reason`` alone is for pages that must not show a server's file paths, and ``kind`` (one
    of KINDS) for pages that word the reason themselves (the app, in Turkish)."""

    KINDS = ("missing", "empty", "no_pixels", "too_large", "not_an_image", "broken")

    def __init__(self, name: str, reason: str, kind: str = "broken"):
        super().__init__(name, reason, kind)  # all in args: the error pickles across processes
        self.name, self.reason, self.kind = name, reason, kind

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def describe(source: ImageInput) -> str:
    """A short, printable name for an image input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<PIL image {getattr(source, 'mode', '?')} {getattr(source, 'size', '?')}>"


def open_image(source: ImageInput) -> Image.Image:
    """Open, fully decode and convert an image to RGB, or raise ImageLoadError (TypeError for
    what is not an image input at all)."""
    if isinstance(source, bytearray | memoryview):
        source = bytes(source)
    if not isinstance(source, str | os.PathLike | bytes | Image.Image):
        raise TypeError(
            f"an image must be a file path, bytes or a PIL image, not {type(source).__name__}"
        )
    name = describe(source)
    if isinstance(source, Image.Image):
        _check_pixels(name, *source.size)
        return to_rgb(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError(name, "empty image data (0 bytes)", "empty")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if path.is_dir():
            raise ImageLoadError(name, "a folder, not an image file", "not_an_image")
        if not path.is_file():
            raise ImageLoadError(name, "no such file", "missing")
        if path.stat().st_size == 0:
            raise ImageLoadError(name, "the file is empty (0 bytes)", "empty")
        fp = path
    try:
        with Image.open(fp) as img:
            _check_pixels(name, *img.size)
            img.load()  # decode now, so a truncated file fails here and not later
            return to_rgb(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image file Pillow can read", "not_an_image") from None
    except Image.DecompressionBombError:  # Pillow's, past twice the limit, which it names
        reason = (
            f"over the {MAX_PIXELS:,}-pixel limit (possible decompression bomb); resize it first"
        )
        raise ImageLoadError(name, reason, "too_large") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(name, f"broken or truncated image ({err})", "broken") from None


def _check_pixels(name: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            name,
            f"{width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit "
            "(possible decompression bomb); resize it first",
            "too_large",
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB following the decisions in the module docstring.

    Each step keeps as few full-size copies as it can (a 64 MP image is 64-256 MB a copy): an
    RGB image without an EXIF rotation comes back as it is.
    """
    if min(img.size) == 0:
        raise ImageLoadError(describe(img), "the image has no pixels", "no_pixels")
    img.load()  # the pixels are read now, while the caller's file is still open
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.array(img, dtype=np.float32)  # a copy, scaled in place below
        # 16-bit modes use the full 0..65535 range; "I"/"F" hold whatever the file held, so
        # values above 255 are read as 16-bit data and smaller ones as 8-bit data.
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        if img.mode == "F" and array.max() <= 1.0:
            top = 1.0
        array *= 255.0 / top
        array += 0.5
        np.clip(array, 0, 255, out=array)
        return Image.fromarray(array.astype(np.uint8), mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        if img.mode == "La":  # premultiplied: Pillow converts it only to LA
            img = img.convert("LA")
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)  # the alpha channel blends each pixel onto white
        return white
    return img.convert("RGB")
