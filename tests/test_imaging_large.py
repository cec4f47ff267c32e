"""Photos up to 200 MP are decoded with bounded memory (libjpeg DCT scaling via draft).

The 200 MP JPEG is generated in the test (never committed) in a child process, and decoded
in another fresh child so its peak RSS (ru_maxrss) is the decode's alone.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from adbflow.errors import JobError
from adbflow.runtime.imaging import MAX_FULL_DECODE_PIXELS, MAX_PIXELS, prepare_bmp

W, H = 16320, 12240          # a 200 MP sensor (199.8 MP)

_MAKE = """
import sys
from PIL import Image, ImageDraw
im = Image.new("L", ({w}, {h}), 90)
d = ImageDraw.Draw(im)
for x in range(0, {w}, 640):
    d.rectangle([x, 0, x + 320, {h}], fill=200)
im.save(sys.argv[1], "JPEG", quality=70)
"""

_DECODE = """
import json, resource, sys, time
from pathlib import Path
import adbflow.runtime.imaging as imaging
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
info = imaging.prepare_bmp(Path(sys.argv[1]), Path(sys.argv[2]), 224)
print(json.dumps({"before_kb": before, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "s": time.monotonic() - t0, "w": info.width, "h": info.height,
                  "out": info.output_size}))
"""


@pytest.fixture(scope="module")
def photo_200mp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "IMG_200MP.jpg"
    subprocess.run([sys.executable, "-c", _MAKE.format(w=W, h=H), str(path)], check=True,
                   timeout=300)
    return path


def test_200mp_jpeg_is_decoded_with_bounded_memory(photo_200mp: Path, tmp_path: Path) -> None:
    assert W * H <= MAX_PIXELS
    res = subprocess.run([sys.executable, "-c", _DECODE, str(photo_200mp),
                          str(tmp_path / "in.bmp")], check=True, capture_output=True,
                         text=True, timeout=300)
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert (doc["w"], doc["h"], doc["out"]) == (W, H, 224)
    grew_mb = (doc["peak_kb"] - doc["before_kb"]) / 1024
    # a full decode of this grayscale picture alone needs 200 MB (RGB: 600 MB)
    assert grew_mb < 80, doc
    with Image.open(tmp_path / "in.bmp") as bmp:
        assert bmp.size == (224, 224) and bmp.mode == "RGB"


def test_large_non_jpeg_is_still_refused_before_decoding(tmp_path: Path) -> None:
    # a PNG cannot be decoded at a reduced scale: above the full-decode cap it is bad input
    side = int(MAX_FULL_DECODE_PIXELS ** 0.5) + 200
    src = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(src, "PNG")
    with pytest.raises(JobError, match="too large"):
        prepare_bmp(src, tmp_path / "o.bmp", 224)
