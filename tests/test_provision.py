"""Provisioning logic on in-memory phones: skip by digest, temp name then rename, verify,
the size+md5 fallback, one phone's failure stays its own, URLs through a local cache."""
from __future__ import annotations

import hashlib
import http.server
import shlex
import threading
from pathlib import Path

import pytest
from pipeline_fakes import FakeDevice

from adbflow.device import ShellResult
from adbflow.errors import AdbError, AdbflowError
from adbflow.runtime import provision as prov


class ToolPhone(FakeDevice):
    """A FakeDevice with the toybox tools provisioning uses (sha256sum, md5sum, mv, rm)."""

    def __init__(self, serial: str, *, sha256sum: bool = True, full: bool = False,
                 corrupt: bool = False) -> None:
        super().__init__(serial)
        self.has_sha = sha256sum
        self.full = full
        self.corrupt = corrupt

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        if self.full:
            raise AdbError(self.serial, f"push {remote}", message="push failed",
                           stderr="No space left on device")
        n = super().push(local, remote, timeout=timeout, mode=mode)
        if self.corrupt:
            data, t = self.files[remote]
            self.files[remote] = (data[:-1] + b"X", t)
        return n

    def run(self, argv, *, timeout: float, max_output: int = 1 << 24, check: bool = True,
            stdin: bytes | None = None) -> ShellResult:
        argv = list(argv)
        self.calls.append(argv)
        cmd = shlex.join(argv)
        prog = argv[0]

        def res(code: int, out: str = "", err: str = "") -> ShellResult:
            if check and code:
                raise AdbError(self.serial, cmd, stderr=err, exit_code=code)
            return ShellResult(self.serial, cmd, code, out, err, 0.001)
        if prog in ("sha256sum", "md5sum"):
            if prog == "sha256sum" and not self.has_sha:
                return res(127, err="sh: sha256sum: inaccessible or not found")
            if argv[1] not in self.files:
                return res(1, err=f"{prog}: {argv[1]}: No such file or directory")
            h = hashlib.sha256 if prog == "sha256sum" else hashlib.md5
            return res(0, f"{h(self.files[argv[1]][0]).hexdigest()}  {argv[1]}\n")
        if prog == "mv":
            src, dst = argv[-2], argv[-1]
            self.files[dst] = self.files.pop(src)
            return res(0)
        if prog == "rm":
            self.files.pop(argv[-1], None)
            return res(0)
        return res(127, err=f"{prog}: not found")


@pytest.fixture
def model(tmp_path: Path) -> prov.LocalFile:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(range(256)) * 500)
    return prov.prepare([prov.Item(str(f), "/data/local/tmp/m.gguf")], tmp_path / "cache")[0]


def test_parse_item_splits_at_the_device_path() -> None:
    assert prov.parse_item("a=b.bin=/data/local/tmp/x") == prov.Item("a=b.bin", "/data/local/tmp/x")
    url = prov.parse_item("http://h/x?a=1=/data/local/tmp/m")
    assert url.is_url and url.remote == "/data/local/tmp/m"
    for bad in ("nodest", "f=relative/path", "f=/data/local/tmp/", "f=/data/../etc/x"):
        with pytest.raises(AdbflowError):
            prov.parse_item(bad)


def test_pushes_to_a_temp_name_verifies_then_renames(model) -> None:
    phone = ToolPhone("p1")
    [out] = prov.provision([phone], [model])
    assert out.ok and out.files[0].state is prov.State.PUSHED
    assert out.files[0].method is prov.Method.SHA256
    assert phone.ops == [("push", "/data/local/tmp/.m.gguf.adbflow-part")]
    assert phone.files["/data/local/tmp/m.gguf"][0] == model.path.read_bytes()
    assert "/data/local/tmp/.m.gguf.adbflow-part" not in phone.files
    progs = [c[0] for c in phone.calls]
    assert progs.index("mv") > max(i for i, p in enumerate(progs) if p == "sha256sum")


def test_second_run_skips_when_the_phone_digest_matches(model) -> None:
    phone = ToolPhone("p1")
    prov.provision([phone], [model])
    phone.ops.clear()
    [again] = prov.provision([phone], [model])
    assert again.files[0].state is prov.State.SKIPPED and phone.ops == []


def test_changed_remote_file_is_replaced(model) -> None:
    phone = ToolPhone("p1")
    phone.files["/data/local/tmp/m.gguf"] = (b"old", 0.0)
    [out] = prov.provision([phone], [model])
    assert out.files[0].state is prov.State.PUSHED
    assert phone.files["/data/local/tmp/m.gguf"][0] == model.path.read_bytes()


def test_without_sha256sum_size_and_md5_are_compared_and_said(model) -> None:
    phone = ToolPhone("old", sha256sum=False)
    [first] = prov.provision([phone], [model])
    assert first.files[0].state is prov.State.PUSHED
    assert first.files[0].method is prov.Method.SIZE_MD5
    [second] = prov.provision([phone], [model])
    assert second.files[0].state is prov.State.SKIPPED
    assert second.files[0].method is prov.Method.SIZE_MD5
    assert any(c[0] == "md5sum" for c in phone.calls)


def test_a_full_phone_fails_alone_with_the_reason(model) -> None:
    good, full = ToolPhone("good"), ToolPhone("full", full=True)
    outs = prov.provision([good, full], [model])
    assert outs[0].ok and not outs[1].ok
    assert "No space left on device" in (outs[1].files[0].reason or "")
    assert "/data/local/tmp/m.gguf" not in full.files


def test_a_damaged_copy_is_never_renamed_over_the_target(model) -> None:
    phone = ToolPhone("bad", corrupt=True)
    phone.files["/data/local/tmp/m.gguf"] = (b"previous", 0.0)
    [out] = prov.provision([phone], [model])
    assert not out.ok and "differs" in (out.files[0].reason or "")
    assert phone.files["/data/local/tmp/m.gguf"][0] == b"previous"     # untouched
    assert "/data/local/tmp/.m.gguf.adbflow-part" not in phone.files   # cleaned up


def test_url_is_downloaded_once_into_the_cache(tmp_path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "tool.bin").write_bytes(b"\x7fELF" + b"z" * 5000)
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            hits.append(self.path)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/tool.bin"
        item = prov.parse_item(f"{url}=/data/local/tmp/tool")
        files = prov.prepare([item], tmp_path / "cache")
        again = prov.prepare([item], tmp_path / "cache")
        with pytest.raises(AdbflowError, match="cannot download"):
            prov.prepare([prov.parse_item(url + "x=/data/local/tmp/t")], tmp_path / "cache")
    finally:
        srv.shutdown()
    assert files[0].sha256 == hashlib.sha256((root / "tool.bin").read_bytes()).hexdigest()
    assert again[0].path == files[0].path and len([h for h in hits if "tool.bin" in h]) >= 1
    assert sum(1 for h in hits if h.endswith("tool.bin")) == 1          # cached the 2nd time
    phone = ToolPhone("p1")
    [out] = prov.provision([phone], files)
    assert out.ok and phone.files["/data/local/tmp/tool"][0].startswith(b"\x7fELF")
