"""Pure parts of the pipeline: imaging (BMP conversion, bad input), the SQLite journal
(exactly-once rules, crash recovery) and detection decisions (inotifyd lines, stability)."""
from __future__ import annotations

import sqlite3
import zlib
import struct
from pathlib import Path

import pytest
from PIL import Image

from adbflow.detect import (DetectionState, Entry, InotifyEvent, inotifyd_command,
                            is_candidate_name, parse_inotifyd_line)
from adbflow.errors import JobError
from adbflow.imaging import prepare_bmp, sniff_format
from adbflow.journal import Journal, StageAlreadyDone
from adbflow.paths import ASSETS_DIR
from adbflow.stages import label_image_argv, llama_argv, local_picture_path, safe_component


# ------------------------------------------------------------------ imaging

def test_chelsea_to_bmp(tmp_path: Path) -> None:
    info = prepare_bmp(ASSETS_DIR / "chelsea.png", tmp_path / "in.bmp", 224)
    with Image.open(tmp_path / "in.bmp") as im:
        assert (im.format, im.size, im.mode) == ("BMP", (224, 224), "RGB")
    assert (info.format, info.width, info.height) == ("PNG", 451, 300)
    assert info.output_bytes == (tmp_path / "in.bmp").stat().st_size


def test_exif_orientation_applied(tmp_path: Path) -> None:
    # 40x20 landscape pixels: left half red, right half blue; EXIF 6 = "rotate 90 CW to view"
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "portrait.jpg"
    im.save(src, "JPEG", exif=exif.tobytes(), quality=95)
    info = prepare_bmp(src, tmp_path / "out.bmp", 64)
    assert info.orientation == 6
    with Image.open(tmp_path / "out.bmp") as out:
        top, bottom = out.getpixel((32, 4)), out.getpixel((32, 60))
    # upright: red on top, blue at the bottom (without EXIF handling: red left, blue right)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk +
            struct.pack(">I", zlib.crc32(chunk)))


@pytest.mark.parametrize("name,content,match", [
    ("empty.jpg", b"", "empty"),
    ("notes.jpg", b"hello, I am text, not a picture\n" * 10, "not an image"),
    ("elf.png", b"\x7fELF\x02\x01\x01" + b"\0" * 100, "not an image"),
    ("truncated.png", None, "damaged or truncated"),
    ("bomb.png", _png_header_only(100_000, 100_000), "too large|cannot decode"),
    ("heic.jpg", b"\0\0\0\x18ftypheic" + b"\0" * 64, "HEIF"),
])
def test_bad_input_is_job_error(tmp_path: Path, name: str, content: bytes | None,
                                match: str) -> None:
    src = tmp_path / name
    if content is None:
        full = (ASSETS_DIR / "chelsea.png").read_bytes()
        content = full[: len(full) // 3]
    src.write_bytes(content)
    with pytest.raises(JobError, match=match):
        prepare_bmp(src, tmp_path / "out.bmp", 224)
    assert not (tmp_path / "out.bmp").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_size_limit(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="limit"):
        prepare_bmp(ASSETS_DIR / "chelsea.png", tmp_path / "o.bmp", 224, max_bytes=1000)


def test_sniff() -> None:
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"
    assert sniff_format(b"hello") is None


# ------------------------------------------------------------------ journal

def test_journal_exactly_once(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    jid, created = j.add_job(source="device", serial="s1", path="/p/a.jpg", size=10, mtime=5.0)
    again, created2 = j.add_job(source="device", serial="s1", path="/p/a.jpg", size=10, mtime=5.0)
    assert created and not created2 and jid == again
    other, _ = j.add_job(source="device", serial="s1", path="/p/a.jpg", size=11, mtime=6.0)
    assert other != jid      # a changed file is a new picture
    a1 = j.begin_attempt(jid, "classify", "dev1")
    a2 = j.begin_attempt(jid, "classify", "dev2")
    j.commit_attempt(a1, {"labels": [1]})
    with pytest.raises(StageAlreadyDone):
        j.commit_attempt(a2, {"labels": [2]})
    assert j.stage_output(jid, "classify") == {"labels": [1]}
    assert j.job(jid).state == "running"
    j.close()
    mode = sqlite3.connect(tmp_path / "j.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_journal_recover_and_sessions(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    s1 = j.begin_session()
    assert not s1.previous_crashed
    jid, _ = j.add_job(source="device", serial="s", path="/p/x.jpg", size=1, mtime=1.0)
    att = j.begin_attempt(jid, "pull", "s")
    j.close()                                   # "crash": session never ended
    j = Journal(path)
    s2 = j.begin_session()
    assert s2.previous_crashed
    assert j.recover() == 1
    assert [a.state for a in j.attempts(jid)] == ["abandoned"]
    assert [x.id for x in j.incomplete_jobs()] == [jid]
    assert j.failed_attempts(jid, "pull") == []     # abandoned attempts cost no budget
    j.end_session(s2.id)
    assert not j.begin_session().previous_crashed
    j.fail_attempt(j.begin_attempt(jid, "pull", "s"), "boom", kind="exit")
    assert [a.error_kind for a in j.failed_attempts(jid, "pull")] == ["exit"]
    j.finish_job(jid, "done", result={"story": "s"})
    assert j.job(jid).result == {"story": "s"} and j.incomplete_jobs() == []
    assert att


def test_journal_duplicate_content(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    a, _ = j.add_job(source="device", serial="s", path="/p/x.jpg", size=1, mtime=1.0)
    j.update_job(a, sha256="abc")
    b, _ = j.add_job(source="device", serial="s", path="/p/x.jpg", size=1, mtime=2.0)
    assert j.duplicate_of(b, "s", "/p/x.jpg", "abc") == a
    j.finish_job(a, "failed", error="x")
    assert j.duplicate_of(b, "s", "/p/x.jpg", "abc") is None   # a failed job may be redone


# ------------------------------------------------------------------ detection

def test_inotifyd_lines() -> None:
    assert parse_inotifyd_line("w\t/storage/emulated/0/Pictures\tIMG 1.jpg") == \
        InotifyEvent("w", "/storage/emulated/0/Pictures", "IMG 1.jpg")
    assert parse_inotifyd_line("y\t/d\tname\twith\ttabs\r\n").name == "name\twith\ttabs"
    assert parse_inotifyd_line("x\t/d") == InotifyEvent("x", "/d", None)
    for junk in ("", "hello world", "inotifyd: bad mask 'q'", "Q\t/d\tn", "w /d n"):
        assert parse_inotifyd_line(junk) is None
    cmd = inotifyd_command("/storage/emulated/0/Pictures")
    assert "inotifyd - /storage/emulated/0/Pictures:wwmy" in cmd      # first letter doubled
    assert "'/sto re:wwmy'" in inotifyd_command("/sto re")           # quoted when needed


def test_candidate_names() -> None:
    for ok in ("IMG_1.jpg", "a b.jpg", "$(touch pwned).jpg", "x;rm -rf.jpg", "caf\u00e9.jpg",
               "new\nline.jpg", "notes.txt"):
        assert is_candidate_name(ok), ok
    for bad in (".pending-IMG_1.jpg", ".nomedia", "", ".", "..", "a/b.jpg", "x.jpg.part",
                "y" * 300):
        assert not is_candidate_name(bad), bad


def test_detection_stability_and_events() -> None:
    st = DetectionState("s", "/P", ignore={("old.jpg", 5, 1.0)})
    first = [Entry("old.jpg", 5, 1.0), Entry("grow.jpg", 100, 2.0),
             Entry(".pending-cam.jpg", 50, 2.0)]
    assert st.observe_listing(first) == []          # baseline ignored; new needs a 2nd look
    grown = [Entry("old.jpg", 5, 1.0), Entry("grow.jpg", 200, 3.0)]
    assert st.observe_listing(grown) == []          # still growing
    found = st.observe_listing(grown)
    assert [(p.name, p.size, p.how) for p in found] == [("grow.jpg", 200, "listing")]
    assert found[0].path == "/P/grow.jpg"
    assert st.observe_listing(grown) == []          # reported once only
    # camera flow: .pending-X closed (ignored), moved to X -> stat -> reported at once
    assert st.observe_event(InotifyEvent("w", "/P", ".pending-cam.jpg")) is None
    assert st.observe_event(InotifyEvent("m", "/P", ".pending-cam.jpg")) is None
    assert st.observe_event(InotifyEvent("y", "/P", "cam.jpg")) == "cam.jpg"
    pic = st.observe_stat("cam.jpg", Entry("cam.jpg", 50, 4.0))
    assert (pic.name, pic.how) == ("cam.jpg", "inotify")
    assert st.observe_listing([Entry("cam.jpg", 50, 4.0)]) == []    # no double report
    # an event whose file vanished before the stat reports nothing
    assert st.observe_event(InotifyEvent("w", "/P", "gone.jpg")) == "gone.jpg"
    assert st.observe_stat("gone.jpg", None) is None
    # a rewritten file is a new picture identity
    st.observe_listing([Entry("grow.jpg", 300, 9.0)])
    assert [p.size for p in st.observe_listing([Entry("grow.jpg", 300, 9.0)])] == [300]


def test_event_seen_before_listing() -> None:
    """An event for a file the listing already saw once makes it ready on that listing."""
    st = DetectionState("s", "/P")
    st.observe_listing([Entry("a.jpg", 9, 1.0)])
    st.observe_event(InotifyEvent("w", "/P", "a.jpg"))
    assert [p.how for p in st.observe_listing([Entry("a.jpg", 9, 1.0)])] == ["inotify"]


# ------------------------------------------------------------------ names and argv

HOSTILE = ["$(touch pwned).jpg", "a b.jpg", "'; rm -rf ~; '.jpg", "../../etc/passwd",
           "new\nline.png", "\u732b\u306e\u5199\u771f.jpg", "..", "`id`.jpg", "x" * 250]


@pytest.mark.parametrize("name", HOSTILE)
def test_local_paths_stay_inside(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    p = local_picture_path(data, 7, "127.0.0.1:5555", "/storage/emulated/0/Pictures/" + name)
    assert data.resolve() in p.resolve().parents
    assert p.name.startswith("7-") and len(p.name) < 100
    assert all(c.isalnum() or c in "._-" for c in p.name)
    assert safe_component(name) and "/" not in safe_component(name)


def test_argv_from_profiles() -> None:
    from adbflow.profiles import ProfileBook
    prof = ProfileBook.load().for_model("adbflow-virtual midrange_2023")
    argv = label_image_argv(prof.label_image)
    assert argv[:7] == ["/data/local/tmp/label_image", "-m", "/data/local/tmp/efficientnet_lite0.tflite",
                        "-l", "/data/local/tmp/labels.txt", "-i", "/data/local/tmp/received-image"]
    prompt = "a story about $(touch /tmp/pwned); `id` 'quoted'"
    largv = llama_argv(prof.llama, prompt)
    assert largv[largv.index("-p") + 1] == prompt and "-no-cnv" in largv
    import shlex
    assert shlex.split(shlex.join(largv)) == largv     # what Device.run sends is one argument
