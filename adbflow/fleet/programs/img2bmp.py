"""Stand-in `img2bmp SRC DST SIZE`: a camera picture (JPEG/PNG) to the BMP label_image reads.

Why it exists: a phone-side orchestrator (the mesh, issue 16) must feed label_image, which
reads BMP only (TFLite's bitmap_helpers), and a phone's shell has no image decoder. On a
real phone this is a small pushed program like label_image (not provided by adbflow yet);
in the virtual fleet it does what the laptop does (adbflow.runtime.imaging.prepare_bmp:
EXIF orientation, center crop, resize, 24-bit BMP) with pillow. Exit 1 with a message on
anything that is not a decodable image (bounded size: no decompression bombs).
"""
from __future__ import annotations

import sys
from pathlib import Path

MAX_BYTES = 64 << 20
MAX_PIXELS = 50_000_000


def convert(src: Path, dst: Path, size: int) -> None:
    from PIL import Image, ImageOps
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    if src.stat().st_size > MAX_BYTES:
        raise ValueError("picture larger than 64 MiB")
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size))
        tmp = dst.with_name(dst.name + ".tmp")
        im.save(tmp, format="BMP")
        tmp.replace(dst)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[2].isdigit() or not 8 <= int(args[2]) <= 4096:
        print("usage: img2bmp SRC DST SIZE (8..4096)", file=sys.stderr)
        return 2
    try:
        convert(Path(args[0]), Path(args[1]), int(args[2]))
    except Exception as exc:  # noqa: BLE001 - any decode failure is the same answer
        print(f"img2bmp: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
