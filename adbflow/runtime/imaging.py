"""Turn a picture from a phone into the classifier's input: a square 24-bit BMP.

Why on the laptop: TFLite's label_image reads BMP only and the phone's camera writes
JPEG/HEIC/PNG; converting here keeps the phones free of tools and lets us reject bad input
(not an image, truncated, decompression bombs, huge files) before any device time is spent.
EXIF orientation is applied because phones store portrait shots as rotated landscape pixels.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from adbflow.errors import JobError
from adbflow.runtime.laptop import LAPTOP_ERRNOS, fault_from_os

DEFAULT_MAX_BYTES = 64 << 20
# A 200 MP sensor writes 16320x12240 = 199.8 MP. Baseline JPEGs up to MAX_PIXELS are decoded
# at 1/8 scale by libjpeg itself (draft: DCT scaling, a ~2040x1530 buffer, ~10 MB), so their
# memory is bounded whatever their pixel count. Every other picture (PNG, WEBP, GIF, BMP,
# TIFF, progressive JPEG: libjpeg keeps every coefficient of a progressive file) is decoded
# at full size, ~3-4 bytes a pixel: those stay capped at MAX_FULL_DECODE_PIXELS.
MAX_PIXELS = 210_000_000
MAX_FULL_DECODE_PIXELS = 80_000_000
# Pillow's own bomb guard (warning above MAX_IMAGE_PIXELS, error above twice that) would refuse
# a 200 MP photo in Image.open, before we can ask for a draft; our checks below replace it
# (a warning is still turned into an error by prepare_bmp above this).
if (Image.MAX_IMAGE_PIXELS or 0) < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# magic prefix -> format name; checked before Pillow so the error says what the file is
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What we learnt about the source picture and what we produced from it."""

    format: str
    width: int
    height: int
    orientation: int | None   # EXIF orientation tag (1-8) applied, None when absent
    output_bytes: int
    output_size: int          # side of the square BMP

    def to_json(self) -> dict:
        return {"format": self.format, "width": self.width, "height": self.height,
                "orientation": self.orientation, "output_bytes": self.output_bytes,
                "output_size": self.output_size}


def sniff_format(head: bytes) -> str | None:
    """Image format from the first bytes, or None. WEBP/HEIF need a look inside the header."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc",
                                               b"avif"):
        return "HEIF"
    return None


def check_source(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Reject what cannot be a usable picture with a JobError saying why; return the format."""
    size = path.stat().st_size
    if size == 0:
        raise JobError(f"{path.name}: empty file (0 bytes)",
                       hint="the camera app may have failed to write it")
    if size > max_bytes:
        raise JobError(f"{path.name}: {size} bytes exceeds the {max_bytes}-byte limit",
                       hint="raise --max-bytes if such pictures are expected")
    with path.open("rb") as fh:
        head = fh.read(32)
    fmt = sniff_format(head)
    if fmt is None:
        raise JobError(f"{path.name}: not an image (unknown file signature {head[:8].hex()})",
                       hint="only JPEG, PNG, GIF, BMP, TIFF and WEBP pictures are classified")
    if fmt == "HEIF":
        raise JobError(f"{path.name}: HEIF/AVIF pictures are not supported by pillow here",
                       hint="set the camera to JPEG (\"Most compatible\")")
    return fmt


def prepare_bmp(src: Path, dst: Path, size: int, *,
                max_bytes: int = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Write `dst` = `src` with EXIF orientation applied, center-cropped to a square and
    resized to `size`x`size`, RGB, as BMP (atomically: tmp + rename).

    Raises JobError for bad input (not an image, truncated, bomb, too big): re-running the
    stage on another device cannot fix those, so the caller must not retry.
    """
    if size < 8 or size > 4096:
        raise JobError(f"input size {size} is not a sane model input side",
                       hint="check label_image.input_size in the device profile")
    fmt = check_source(src, max_bytes=max_bytes)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                pixels = im.width * im.height
                scalable = fmt == "JPEG" and not im.info.get("progressive") \
                    and not im.info.get("progression")
                limit = MAX_PIXELS if scalable else MAX_FULL_DECODE_PIXELS
                if pixels > limit:
                    raise JobError(f"{src.name}: {im.width}x{im.height} pixels is too large",
                                   hint=f"{fmt} pictures above {limit} pixels are refused"
                                        + ("" if scalable else
                                           f" (baseline JPEG: up to {MAX_PIXELS})"))
                orientation = im.getexif().get(0x0112)
                width, height = im.width, im.height   # the source's size, before draft
                if fmt == "JPEG":
                    # libjpeg decodes straight to 1/2, 1/4 or 1/8 scale (DCT scaling: each
                    # output pixel averages its block, no aliasing) keeping both sides
                    # >= size: a 12 MP photo costs ~45 ms instead of ~350 ms (a 2*size box:
                    # ~57 ms; the BMPs differ by 0.5/255 on average). The box is square, so
                    # it holds whichever way EXIF rotates the picture afterwards.
                    im.draft("RGB", (size, size))
                im.load()  # forces a full decode: truncated files fail here
                upright = ImageOps.exif_transpose(im)
                rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
                square = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
                square.save(tmp, format="BMP")
        os.replace(tmp, dst)
    except JobError:
        tmp.unlink(missing_ok=True)
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        tmp.unlink(missing_ok=True)
        raise JobError(f"{src.name}: cannot decode {fmt} picture: {exc}",
                       hint="the file is not a valid image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in LAPTOP_ERRNOS:
            raise fault_from_os(exc, exc.filename or dst.parent) from exc   # our disk, not it
        raise JobError(f"{src.name}: damaged or truncated {fmt} picture: {exc}",
                       hint="the file may still be being written or is corrupt") from exc
    return ImageInfo(format=fmt, width=width, height=height,
                     orientation=int(orientation) if isinstance(orientation, int) else None,
                     output_bytes=dst.stat().st_size, output_size=size)
