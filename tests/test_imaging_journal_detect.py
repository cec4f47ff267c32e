"""Pure parts of the pipeline: imaging (BMP conversion, bad input), the SQLite journal
(exactly-once rules, crash recovery) and detection decisions (inotifyd lines, stability)."""
from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from adbflow.errors import JobError
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.detect import (
    DetectionState,
    Entry,
    InotifyEvent,
    inotifyd_command,
    is_candidate_name,
    parse_inotifyd_line,
)
from adbflow.runtime.imaging import prepare_bmp, sniff_format
from adbflow.runtime.journal import Journal, StageAlreadyDone
from adbflow.runtime.stages import label_image_argv, llama_argv, local_picture_path, safe_component

# ------------------------------------------------------------------ imaging

def test_chelsea_to_bmp(tmp_path: Path) -> None:
    info = prepare_bmp(ASSETS_DIR / "chelsea.png", tmp_path / "in.bmp", 224)
    with Image.open(tmp_path / "in.bmp") as im:
        assert (im.format, im.size, im.mode) == ("BMP", (224, 224), "RGB")
    assert (info.format, info.width, info.height) == ("PNG", 451, 300)
    assert info.output_bytes == (tmp_path / "in.bmp").stat().st_size


def _red_blue_portrait(src: Path, w: int, h: int) -> Path:
    """w x h landscape pixels, left half red, right half blue; EXIF 6 = "rotate 90 CW to
    view": upright, red is on top and blue at the bottom."""
    im = Image.new("RGB", (w, h), (255, 0, 0))
    im.paste((0, 0, 255), (w // 2, 0, w, h))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(src, "JPEG", exif=exif.tobytes(), quality=95)
    return src


def _assert_upright_64(bmp: Path) -> None:
    with Image.open(bmp) as out:
        assert (out.size, out.mode) == ((64, 64), "RGB")
        top, bottom = out.getpixel((32, 4)), out.getpixel((32, 60))
    # without EXIF handling: red left, blue right
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_exif_orientation_applied(tmp_path: Path) -> None:
    src = _red_blue_portrait(tmp_path / "portrait.jpg", 40, 20)
    info = prepare_bmp(src, tmp_path / "out.bmp", 64)
    assert info.orientation == 6
    _assert_upright_64(tmp_path / "out.bmp")


def test_large_jpeg_draft_keeps_orientation_and_source_size(tmp_path: Path) -> None:
    """Big enough that Image.draft really decodes at 1/8 scale: the EXIF rotation must still
    be applied to the reduced pixels, and the info reports the source's full size."""
    src = _red_blue_portrait(tmp_path / "big-portrait.jpg", 2400, 1200)
    with Image.open(src) as probe:            # the draft is effective for this size
        probe.draft("RGB", (64, 64))
        assert probe.size == (300, 150)
    info = prepare_bmp(src, tmp_path / "out.bmp", 64)
    assert (info.format, info.width, info.height, info.orientation) == ("JPEG", 2400, 1200, 6)
    _assert_upright_64(tmp_path / "out.bmp")


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpeg_become_rgb(tmp_path: Path, mode: str) -> None:
    src = tmp_path / f"{mode}.jpg"
    Image.new(mode, (1600, 1000)).save(src, "JPEG")
    prepare_bmp(src, tmp_path / "out.bmp", 224)
    with Image.open(tmp_path / "out.bmp") as out:
        assert (out.size, out.mode) == ((224, 224), "RGB")


def test_truncated_large_jpeg_still_rejected(tmp_path: Path) -> None:
    import io
    buf = io.BytesIO()
    Image.effect_noise((2000, 1500), 40).convert("RGB").save(buf, "JPEG", quality=90)
    src = tmp_path / "cut.jpg"
    src.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(JobError, match="damaged or truncated"):
        prepare_bmp(src, tmp_path / "out.bmp", 224)


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
    from pipeline_fakes import as_gone_process
    with as_gone_process():
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
    """Images by name only (any case), in the folder or a subfolder; hostile names stay
    candidates (they are only ever used through sync / quoted argv)."""
    for ok in ("IMG_1.jpg", "a b.jpg", "$(touch pwned).jpg", "x;rm -rf.jpg", "caf\u00e9.jpg",
               "new\nline.jpg", "S.PNG", "x.jpeg", "y.webp", "z.heic", "z.HEIF", "b.bmp",
               "g.gif", "Screenshots/S_1.png", "a/b.jpg", "2024/05/IMG.jpg"):
        assert is_candidate_name(ok), ok
    for bad in (".pending-IMG_1.jpg", ".pending-1700000000-IMG_1.jpg", ".trashed-1-IMG.jpg",
                ".nomedia", "", ".", "..", "x.jpg.part", "y" * 300 + ".jpg",
                "notes.txt", "VID_1.mp4", "clip.MOV", "noext", ".thumbnails/t.jpg",
                "a/../b.jpg", "a//b.jpg", "/abs.jpg", "a/b/c/d/e/f.jpg"):
        assert not is_candidate_name(bad), bad


def test_detection_stability_and_events() -> None:
    st = DetectionState("s", "/P", ignore={("old.jpg", 5, 1.0)})
    first = [Entry("old.jpg", 5, 1.0, True), Entry("grow.jpg", 100, 2.0, True),
             Entry(".pending-cam.jpg", 50, 2.0, True)]
    assert st.observe_listing(first) == []          # baseline ignored; new needs a 2nd look
    grown = [Entry("old.jpg", 5, 1.0, True), Entry("grow.jpg", 200, 3.0, True)]
    assert st.observe_listing(grown) == []          # still growing
    found = st.observe_listing(grown)
    assert [(p.name, p.size, p.how) for p in found] == [("grow.jpg", 200, "listing")]
    assert found[0].path == "/P/grow.jpg"
    assert st.observe_listing(grown) == []          # reported once only
    # camera flow: .pending-X closed (ignored), moved to X -> stat -> reported at once
    assert st.observe_event(InotifyEvent("w", "/P", ".pending-cam.jpg")) is None
    assert st.observe_event(InotifyEvent("m", "/P", ".pending-cam.jpg")) is None
    assert st.observe_event(InotifyEvent("y", "/P", "cam.jpg")) == "cam.jpg"
    pic = st.observe_stat("cam.jpg", Entry("cam.jpg", 50, 4.0, True))
    assert (pic.name, pic.how) == ("cam.jpg", "inotify")
    assert st.observe_listing([Entry("cam.jpg", 50, 4.0, True)]) == []    # no double report
    # an event whose file vanished before the stat reports nothing
    assert st.observe_event(InotifyEvent("w", "/P", "gone.jpg")) == "gone.jpg"
    assert st.observe_stat("gone.jpg", None) is None
    # a rewritten file is a new picture identity
    st.observe_listing([Entry("grow.jpg", 300, 9.0, True)])
    assert [p.size for p in st.observe_listing([Entry("grow.jpg", 300, 9.0, True)])] == [300]


def test_event_seen_before_listing() -> None:
    """An event for a file the listing already saw once makes it ready on that listing."""
    st = DetectionState("s", "/P")
    st.observe_listing([Entry("a.jpg", 9, 1.0, True)])
    st.observe_event(InotifyEvent("w", "/P", "a.jpg"))
    assert [p.how for p in st.observe_listing([Entry("a.jpg", 9, 1.0, True)])] == ["inotify"]


def test_settle_recheck_reports_after_one_listing() -> None:
    """Listing-only: the second look is one stat settle_s after the first listing, not the
    next listing; a file that changed meanwhile is not reported, and the re-checks stop."""
    st = DetectionState("s", "/P", settle_s=0.3, max_rechecks=2)
    assert st.observe_listing([Entry("a.jpg", 10, 1.0, True)], now=100.0) == []
    assert st.next_due() == pytest.approx(100.3)
    assert st.due(100.2) == [] and st.due(100.3) == ["a.jpg"]
    pic = st.observe_recheck("a.jpg", Entry("a.jpg", 10, 1.0, True), now=100.31)
    assert (pic.name, pic.size, pic.how) == ("a.jpg", 10, "listing")
    assert st.observe_listing([Entry("a.jpg", 10, 1.0, True)], now=101.0) == []   # reported once
    # still being written: the re-check sees it grow -> no report, one more re-check
    st.observe_listing([Entry("b.jpg", 5, 2.0, True)], now=200.0)
    assert st.observe_recheck("b.jpg", Entry("b.jpg", 9, 2.5, True), now=200.3) is None
    assert st.due(200.65) == ["b.jpg"]
    assert st.observe_recheck("b.jpg", Entry("b.jpg", 12, 2.9, True), now=200.65) is None
    assert st.next_due() is None                 # budget spent: left to the listings
    assert st.observe_listing([Entry("b.jpg", 14, 3.0, True)], now=201.0) == []
    assert st.next_due() is None                 # a change does not refill the budget
    assert [p.size for p in st.observe_listing([Entry("b.jpg", 14, 3.0, True)], now=202.0)] == [14]
    # vanished before its re-check: forgotten, nothing reported
    st.observe_listing([Entry("c.jpg", 1, 1.0, True)], now=300.0)
    assert st.observe_recheck("c.jpg", None, now=300.3) is None and st.next_due() is None
    # without settle_s (or without `now`) nothing is scheduled: two listings as before
    plain = DetectionState("s", "/P")
    plain.observe_listing([Entry("d.jpg", 1, 1.0, True)], now=1.0)
    assert plain.next_due() is None


def test_device_watch_settle_recheck_with_fake_device() -> None:
    import time as _time

    from pipeline_fakes import FakeDevice

    from adbflow.runtime.detect import DeviceWatch

    dev = FakeDevice("f1")
    w = DeviceWatch(dev, directory="/storage/emulated/0/Pictures", use_inotify=False,
                    settle_s=0.05)
    assert w.start(lambda serial, directory, entries: set()) == []
    dev.snap("new.jpg", b"x" * 50, mtime=1000.0)
    assert w.poll() == []                           # first look
    assert w.recheck(_time.monotonic()) == []       # not due yet
    _time.sleep(0.06)
    found = w.recheck(_time.monotonic())
    assert [(p.name, p.size, p.how) for p in found] == [("new.jpg", 50, "listing")]
    assert w.poll() == []


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
    from adbflow.scheduling.profiles import ProfileBook
    prof = ProfileBook.load().for_model("adbflow-virtual midrange_2023")
    argv = label_image_argv(prof.label_image)
    assert argv[:7] == ["/data/local/tmp/label_image", "-m", "/data/local/tmp/efficientnet_lite0.tflite",
                        "-l", "/data/local/tmp/labels.txt", "-i", "/data/local/tmp/received-image"]
    prompt = "a story about $(touch /tmp/pwned); `id` 'quoted'"
    largv = llama_argv(prof.llama, prompt)
    assert largv[largv.index("-p") + 1] == prompt and "-no-cnv" in largv
    import shlex
    assert shlex.split(shlex.join(largv)) == largv     # what Device.run sends is one argument


def test_recovery_abandons_only_attempts_of_processes_that_are_gone(tmp_path: Path) -> None:
    """A `watch` starting next to a live `adbflow run` must not abandon run's attempt (its
    result would be dropped); a dead process's attempt is abandoned."""
    from pipeline_fakes import as_gone_process
    j = Journal(tmp_path / "j.sqlite")
    jid, _ = j.add_job(source="laptop", serial="laptop", path="/x.png", size=1, mtime=1.0)
    live = j.begin_attempt(jid, "ingest", None)         # this (live) process
    with as_gone_process():
        dead = j.begin_attempt(jid, "classify", None)
    assert j.recover() == 1
    states = {a.id: a.state for a in j.attempts(jid)}
    assert states == {live: "running", dead: "abandoned"}
    j.commit_attempt(live, {"ok": 1})
    from adbflow.runtime.journal import AttemptAbandoned, IncompleteResult
    with pytest.raises(AttemptAbandoned):                 # never a silent no-op commit
        j.commit_attempt(dead, {"labels": []})
    with pytest.raises(IncompleteResult):                 # no `done` without the outputs
        j.finish_job(jid, "done", result={}, require=("ingest", "classify"))
    assert j.job(jid).state == "running"


def test_job_claims_keep_one_process_per_job(tmp_path: Path) -> None:
    from pipeline_fakes import as_gone_process

    from adbflow.runtime import owner
    j = Journal(tmp_path / "j.sqlite")
    jid, _ = j.add_job(source="laptop", serial="laptop", path="/x.png", size=1, mtime=1.0)
    assert j.claim_job(jid) is None                        # ours
    assert j.claim_job(jid) is None                        # still ours (re-entrant)
    other = owner.ProcessId(owner.current().host, 1, 0.0)  # pid 1 lives, but started at 0.0
    assert not owner.alive(other)                          # (pid reused: not the same process)
    with as_gone_process():
        assert j.claim_job(jid) is not None                # we (live) hold it
    j.release_job(jid)
    with as_gone_process():
        assert j.claim_job(jid) is None                    # free: the "gone" one claims it
    assert j.claim_job(jid) is None                        # its owner is gone: taken over


def _damage(path: Path, jobs: int = 300) -> None:
    """A journal with `jobs` jobs whose middle pages are overwritten with garbage."""
    j = Journal(path)
    for i in range(jobs):
        jid, _ = j.add_job(source="device", serial="s", path=f"/p/{i:04d}-{'x' * 200}.jpg",
                           size=i + 1, mtime=1.0)
        j.finish_job(jid, "done", result={"labels": [{"name": "cat"}], "story": "s" * 300})
    j._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    j.close()
    db = sqlite3.connect(path)                 # two leaf pages of the jobs table: garbage
    leaves = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name='jobs' AND "
                                        "pagetype='leaf' ORDER BY pageno")]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    rnd = random.Random(5)
    with path.open("r+b") as fh:
        for page in leaves[len(leaves) // 2:len(leaves) // 2 + 2]:
            fh.seek((page - 1) * size)
            fh.write(bytes(rnd.getrandbits(8) for _ in range(size)))


def test_a_damaged_journal_gives_a_clear_error_and_recover_keeps_what_can_be_read(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adbflow.cli import app
    from adbflow.errors import JournalCorrupt
    data = tmp_path / "data"
    data.mkdir()
    path = data / "journal.sqlite"
    _damage(path)
    runner = CliRunner()
    res = runner.invoke(app, ["jobs", "--limit", "1000", "--data-dir", str(data)])
    assert isinstance(res.exception, JournalCorrupt), res.output   # cli.main: message, exit 2
    assert "adbflow journal check" in str(res.exception)
    res = runner.invoke(app, ["journal", "check", "--data-dir", str(data)])
    assert res.exit_code == 1 and "DAMAGED" in res.output, res.output
    res = runner.invoke(app, ["journal", "recover", "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert Path(doc["damaged_copy"]).exists()
    assert 100 < doc["rows"]["jobs"] < 300, doc      # most rows kept, the damaged page lost
    res = runner.invoke(app, ["journal", "check", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    j = Journal(path)
    before = max(x.id for x in j.jobs(limit=None))
    new, _ = j.add_job(source="laptop", serial="laptop", path="/new.png", size=1, mtime=2.0)
    assert new > before
    j.close()


def test_python_salvage_without_the_sqlite3_program(tmp_path: Path) -> None:
    from adbflow.runtime.journal_repair import check, recover
    path = tmp_path / "journal.sqlite"
    _damage(path)
    rep = recover(path, use_cli=False, reserve_above=500)
    assert rep.method == "python" and 100 < rep.rows["jobs"] < 300, rep
    assert check(path).ok
    j = Journal(path)
    assert j.add_job(source="laptop", serial="laptop", path="/n.png", size=1, mtime=2.0)[0] == 501
    j.close()


def test_journal_deleted_while_running_is_detected_and_ids_are_never_reused(
        tmp_path: Path) -> None:
    from adbflow.errors import JournalReplaced
    from adbflow.runtime.pipeline import highest_output_id
    data = tmp_path / "data"
    (data / "stories").mkdir(parents=True)
    j = Journal(data / "journal.sqlite")
    j.check_identity()
    (data / "stories" / "7.txt").write_text("an old story")
    (data / "journal.sqlite").unlink()
    with pytest.raises(JournalReplaced, match="deleted"):
        j.check_identity()
    j.close()
    j2 = Journal(data / "journal.sqlite")            # a fresh journal next to old outputs
    j2.reserve_ids(highest_output_id(data))
    jid, _ = j2.add_job(source="laptop", serial="laptop", path="/a.png", size=1, mtime=1.0)
    assert jid == 8                                   # stories/7.txt is never overwritten
    other = tmp_path / "other.sqlite"
    Journal(other).close()
    os.replace(other, data / "journal.sqlite")
    with pytest.raises(JournalReplaced, match="replaced"):
        j2.check_identity()
    j2.close()


def test_detection_memory_is_bounded_by_the_directory_not_by_history() -> None:
    """5000 pictures taken and then deleted one after another: what detection remembers
    stays the size of the directory (before: every picture ever seen, ~2.7 KB RSS each)."""
    st = DetectionState("s", stable_looks=1)
    listing: list[Entry] = []
    reported = 0
    for i in range(5000):
        listing = listing[-20:] + [Entry(f"IMG_{i:05d}.jpg", 1000 + i, float(i), True)]
        reported += len(st.observe_listing(listing))
    assert reported == 5000
    assert len(st.ignore) <= 21 and len(st._obs) <= 21
