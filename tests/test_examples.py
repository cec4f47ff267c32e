"""The examples/ directory works: scripts, the Python API example, profiles, the workflow.

Why test examples: they are what users copy. The emulator workflow cannot run here (no
KVM, no GitHub), so every script it runs is run here against the virtual fleet instead,
and the workflow file itself is checked for the things that silently break it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from adbflow.paths import ASSETS_DIR, PROFILES_DIR, REPO_DIR
from adbflow.scheduling.policy import Task
from adbflow.scheduling.profiles import ProfileBook

EXAMPLES = REPO_DIR / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))
WORKFLOW = EXAMPLES / "github-actions-emulator.yml"
CAT_CLASSES = re.compile(r"tabby|tiger cat|Persian cat|Siamese cat|Egyptian cat", re.I)


def _adb() -> str:
    import adbutils
    return os.environ.get("ADBFLOW_ADB") or shutil.which("adb") or adbutils.adb_path()


def _run_script(argv: list[str], *, timeout: float, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    """Run a script; on timeout send TERM (not KILL) so its trap tears its fleet down."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"{argv[0]} timed out after {timeout} s\n{err[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _load_library_example():
    spec = importlib.util.spec_from_file_location("library_example",
                                                  EXAMPLES / "library_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ static checks (fast)

def test_scripts_are_strict_executable_bash() -> None:
    assert {p.name for p in SCRIPTS} >= {"ci_fleet.sh", "ci_pipeline_check.sh",
                                         "emulator_ci.sh", "provision_device.sh"}
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "\nset -euo pipefail\n" in text, script
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


# commands that talk to devices, the network or a long-running program
_BOUNDED = re.compile(r'("\$ADB"|"\$\{ADB_S\[@\]\}"|"\$ADBFLOW"|\badbflow (?:fleet|devices|bid|'
                      r'watch)|\bcurl |\btar |\bpython3 |examples/[a-z_]+\.sh")')


def test_every_device_network_or_python_call_in_scripts_has_a_timeout() -> None:
    unbounded = []
    for script in SCRIPTS:
        for n, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split(" #", 1)[0].strip()
            code = re.sub(r"\b(fail|die|echo|step)\b.*", "", code)   # messages, not commands
            if not code or code.startswith("#") or code.startswith(("echo", "say", "step")):
                continue
            if _BOUNDED.search(code) and "timeout" not in code \
                    and not code.startswith(("ADB=", "ADB_S=", "ADBFLOW=", "case ", "[", "if ")):
                unbounded.append(f"{script.name}:{n}: {code}")
    assert not unbounded, "calls without `timeout`:\n" + "\n".join(unbounded)


def test_workflow_runs_our_scripts_on_two_x86_64_emulators() -> None:
    text = WORKFLOW.read_text()
    # every repository file the workflow names exists
    for ref in set(re.findall(r"(?<![\w/])examples/[\w./-]+", text)):
        assert (REPO_DIR / ref).exists(), f"workflow names missing {ref}"
    assert "reactivecircus/android-emulator-runner@v2" in text
    assert re.search(r"api-level: \[(\d+), (\d+)\]", text)
    assert all(int(v) >= 30 for v in re.search(r"api-level: \[(\d+), (\d+)\]", text).groups())
    assert "arch: x86_64" in text
    # the action runs each `script:` line in its own `sh -c`: background jobs and variables
    # would not survive between lines, so the whole run must be one line (one script)
    script_lines = [ln for ln in text.splitlines() if re.match(r"\s+script:", ln)]
    assert script_lines == ["          script: bash examples/emulator_ci.sh android-tools"]
    assert "pip install -e ." in text   # adbflow reads profiles/ from the checkout


def test_workflow_is_valid_yaml_with_the_expected_jobs() -> None:
    import yaml  # test extra only: the workflow is YAML, parse it for real
    doc = yaml.safe_load(WORKFLOW.read_text())
    jobs = doc["jobs"]
    assert jobs["emulator"]["needs"] == "build-tools"
    assert jobs["emulator"]["strategy"]["matrix"]["api-level"] == [30, 34]
    runner = [s for s in jobs["emulator"]["steps"]
              if str(s.get("uses", "")).startswith("reactivecircus/android-emulator-runner@")]
    assert len(runner) == 1 and runner[0]["with"]["arch"] == "x86_64"
    assert {"TF_TAG", "LLAMA_CPP_TAG", "INCEPTION_URL", "LABELS_URL", "GGUF_URL"} <= set(doc["env"])
    builds = "\n".join(str(s.get("run", "")) for s in jobs["build-tools"]["steps"])
    # CMake 4 refuses cmake_minimum_required(< 3.5) in TFLite's dependencies (neon2sse)
    assert builds.count("-DCMAKE_POLICY_VERSION_MINIMUM=3.5") == 2
    # today's llama.cpp: the one-shot program is llama-completion, pushed under that name
    assert "--target \"$target\"" in builds and "target=llama-completion" in builds
    assert "android-tools/llama-completion" in builds
    assert "llama-completion=$TOOLS/llama-completion" in (EXAMPLES / "emulator_ci.sh").read_text()


def test_example_profiles_load_and_match_their_devices(tmp_path: Path) -> None:
    shutil.copy(PROFILES_DIR / "default.toml", tmp_path / "default.toml")
    for p in (EXAMPLES / "profiles").glob("*.toml"):
        shutil.copy(p, tmp_path / p.name)
    book = ProfileBook.load(tmp_path)
    pixel = book.for_model("Pixel 7")
    assert pixel.name == "pixel7_inception_v3"
    assert book.for_model("pixel 7 pro").name == "pixel7_inception_v3"
    assert pixel.label_image.model == "/data/local/tmp/inception_v3.tflite"
    assert pixel.label_image.input_size == 299 and pixel.label_image.threads == 4
    assert "-no-cnv" in pixel.llama.extra_args
    emu = book.for_model("sdk_gphone64_x86_64")
    assert emu.name == "emulator_x86_64" and emu.label_image.threads == 2
    assert book.for_model("SM-X000").name == "default"
    default = book.get("default")
    for prof in (pixel, emu):   # the README layout: same files as default.toml expects
        assert (prof.label_image.binary, prof.label_image.model, prof.label_image.labels) == (
            default.label_image.binary, default.label_image.model, default.label_image.labels)
        assert (prof.llama.binary, prof.llama.model) == (default.llama.binary,
                                                         default.llama.model)


# ------------------------------------------------------------------ the custom policy (pure)

def _bid(serial: str, free_mb: int, *, load: float = 10.0, error: str | None = None,
         model: str = "Pixel 7"):
    return SimpleNamespace(serial=serial, model=model, cpu_load=math.nan if error else load,
                           mem_available_kb=free_mb * 1024, mem_total_kb=8 << 20,
                           battery_level=80, battery_charging=False, thermal_status=None,
                           temperature_c=30.0, error=error, ok=error is None)


def test_most_free_memory_policy_ranks_by_headroom_and_counts_awarded_work() -> None:
    policy = _load_library_example().MostFreeMemory()
    book = ProfileBook.load(PROFILES_DIR)
    bids = [_bid("a", 3000), _bid("b", 3500), _bid("c", 9000, error="timeout")]
    d = policy.choose(Task("classify"), bids, inflight={}, profiles=book)
    assert d.winner == "b" and d.policy == "most-free-memory"
    assert d.cost_of("c").excluded.startswith("probe failed")
    # b already runs a generate (its model's memory is spoken for): a wins now
    gen_mb = book.for_model("Pixel 7").timing.generate_mem_mb
    assert 3500 - gen_mb < 3000
    d = policy.choose(Task("classify"), bids, inflight={"b": [Task("generate")]}, profiles=book)
    assert d.winner == "a"
    # equal headroom: lower CPU load, then serial
    d = policy.choose(Task("classify"), [_bid("y", 4000, load=50), _bid("x", 4000, load=50),
                                         _bid("z", 4000, load=5)], inflight={}, profiles=book)
    assert d.winner == "z"
    d = policy.choose(Task("generate"), [_bid("c", 9000, error="offline")], inflight={},
                      profiles=book)
    assert d.winner is None and "no eligible device" in d.reason


# ------------------------------------------------------------------ against the virtual fleet

FLEET_CLASSES = ["lowend_2020", "flagship_2025", "midrange_2023"]


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    client = fleet_factory(devices=3, profiles=FLEET_CLASSES)
    yield client
    fleet_factory.release(client)


def _shell(fleet, serial: str, cmd: str) -> str:
    return subprocess.run([_adb(), "-P", str(fleet.adb_port), "-s", serial, "shell", cmd],
                          check=True, capture_output=True, text=True, timeout=30).stdout


def _provision(fleet, serial: str, *items: str, cache: Path, dest: str):
    return subprocess.run([str(EXAMPLES / "provision_device.sh"), "-s", serial,
                           "--adb-server", f"127.0.0.1:{fleet.adb_port}", "--dest", dest,
                           "--cache", str(cache), *items],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.fleet
def test_provision_device_pushes_verifies_and_sets_modes(fleet, tmp_path: Path) -> None:
    serial = fleet.serials[0]
    labels = tmp_path / "labels.txt"
    labels.write_text("0 background\n1 tench\n")
    member = tmp_path / "pkg" / "inception_v3.tflite"
    member.parent.mkdir()
    member.write_bytes(os.urandom(4096))
    archive = tmp_path / "model.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(member, arcname="./inception_v3.tflite")     # `./name` members, as TF's tgz
    elf = Path(shutil.which("true") or "/bin/true")
    script = tmp_path / "llama-cli"
    script.write_text("#!/system/bin/sh\necho hi\n")
    dest = "/data/local/tmp/provision test"                  # a space: quoting matters
    r = _provision(fleet, serial, f"labels.txt={labels}",
                   f"inception_v3.tflite=file://{archive}!inception_v3.tflite",
                   f"label_image={elf}", f"llama-cli={script}",
                   cache=tmp_path / "cache", dest=dest)
    assert r.returncode == 0, r.stderr
    listing = _shell(fleet, serial, f"cd '{dest}' && stat -c '%n %a %s' *")
    modes = dict((ln.split()[0], ln.split()[1]) for ln in listing.splitlines())
    assert modes == {"inception_v3.tflite": "644", "label_image": "755", "labels.txt": "644",
                     "llama-cli": "755"}
    sums = _shell(fleet, serial, f"cd '{dest}' && sha256sum inception_v3.tflite")
    import hashlib
    assert sums.split()[0] == hashlib.sha256(member.read_bytes()).hexdigest()
    assert _shell(fleet, serial, f"'{dest}/llama-cli'").strip() == "hi"

    # refused: a path as device name, a wrong checksum, a missing archive member
    for item in ("../evil=" + str(labels), f"x.txt={labels}#sha256=" + "0" * 64,
                 f"y.bin=file://{archive}!nope.tflite"):
        r = _provision(fleet, serial, item, cache=tmp_path / "cache", dest=dest)
        assert r.returncode == 1, (item, r.stderr)
        assert "provision_device:" in r.stderr
    assert "x.txt" not in _shell(fleet, serial, f"ls '{dest}'")


@pytest.mark.fleet
def test_library_example_runs_a_picture_with_the_custom_policy(fleet, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(EXAMPLES / "library_example.py"), "--adb-server",
                        f"127.0.0.1:{fleet.adb_port}", "--data-dir", str(tmp_path / "data"),
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert sorted(d["serial"] for d in out["devices"]) == sorted(fleet.serials)
    assert len(out["bids"]) == 3 and all(b["error"] is None for b in out["bids"])
    # flagship_2025 has 12 GB (the others 8 and 4): the most free memory, for both stages
    flagship = fleet.serials[FLEET_CLASSES.index("flagship_2025")]
    assert out["preview"]["policy"] == "most-free-memory"
    assert out["preview"]["winner"] == flagship
    job = out["job"]
    assert job["state"] == "done", job["error"]
    assert job["result"]["devices"]["classify"] == flagship
    assert job["result"]["devices"]["generate"] == flagship
    assert job["result"]["policy"] == "most-free-memory"
    assert CAT_CLASSES.search(job["result"]["labels"][0]["name"])
    assert job["result"]["story"].strip()
    stages = [(a["stage"], a["state"]) for a in out["attempts"]]
    assert stages == [("ingest", "done"), ("classify", "done"), ("generate", "done")]
    # the journal the example read is a real file others can read too
    assert (tmp_path / "data" / "journal.sqlite").is_file()


@pytest.mark.fleet
def test_ci_fleet_script_passes_on_a_cat() -> None:
    r = _run_script([str(EXAMPLES / "ci_fleet.sh")], timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "ci_pipeline_check: PASS" in r.stdout
    assert re.search(r"OK: IMG_\S+_ci\.png on 127\.0\.0\.1:\d+ -> '", r.stderr)
    assert "stopped" in r.stderr            # the trap took the fleet down


@pytest.mark.fleet
def test_ci_fleet_script_fails_on_a_wrong_result() -> None:
    r = _run_script([str(EXAMPLES / "ci_fleet.sh"), "--", "--image",
                     str(ASSETS_DIR / "coffee.png")], timeout=900)
    assert r.returncode == 1, r.stderr[-4000:]
    assert "does not match" in r.stderr and "FAIL: wrong result" in r.stderr
    assert "stopped" in r.stderr


@pytest.mark.fleet
def test_emulator_ci_script_runs_against_the_fleet(fleet, tmp_path: Path) -> None:
    """examples/emulator_ci.sh (the workflow's script) end to end, with the fleet standing in
    for the emulator: its stand-in programs are the "built tools", file:// archives stand in
    for the model URLs. The provisioned files go to another directory: the fleet's own
    labels.txt is a read-only link (real adbd would also fail to push over it)."""
    serial = fleet.serials[2]
    tools = tmp_path / "android-tools"
    tools.mkdir()
    for name in ("label_image", "benchmark_model", "llama-completion"):
        subprocess.run([_adb(), "-P", str(fleet.adb_port), "-s", serial, "pull",
                        f"/data/local/tmp/{name}", str(tools / name)],
                       check=True, capture_output=True, timeout=30)
    pkg = tmp_path / "pkg"
    (pkg / "mobilenet_v1_1.0_224").mkdir(parents=True)
    (pkg / "inception_v3.tflite").write_bytes(b"stand-in: the fleet runs efficientnet_lite0")
    shutil.copy(ASSETS_DIR / "imagenet_labels_1000.txt", pkg / "mobilenet_v1_1.0_224/labels.txt")
    with tarfile.open(tmp_path / "inception.tgz", "w:gz") as tar:
        tar.add(pkg / "inception_v3.tflite", arcname="./inception_v3.tflite")
    with tarfile.open(tmp_path / "labels.tgz", "w:gz") as tar:
        tar.add(pkg / "mobilenet_v1_1.0_224", arcname="mobilenet_v1_1.0_224")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    import hashlib
    env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(fleet.adb_port),
               CI_OUT=str(tmp_path / "ci-out"), EMULATOR_PROFILE_DEST=str(tmp_path),
               PROVISION_DEST="/data/local/tmp/emulator-ci", XDG_CACHE_HOME=str(tmp_path / "c"),
               INCEPTION_URL=f"file://{tmp_path}/inception.tgz",
               LABELS_URL=f"file://{tmp_path}/labels.tgz", GGUF_URL=f"file://{gguf}",
               GGUF_SHA256=hashlib.sha256(gguf.read_bytes()).hexdigest())
    r = _run_script([str(EXAMPLES / "emulator_ci.sh"), str(tools), serial], env=env,
                    timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    assert "provisioned 6 file(s) in /data/local/tmp/emulator-ci" in r.stdout
    assert "ci_pipeline_check: PASS" in r.stdout
    assert (tmp_path / "emulator_x86_64.toml").is_file()
    docs = [json.loads(x) for x in (tmp_path / "ci-out" / "watch.json").read_text().splitlines()]
    assert docs[0]["origin"] == serial and CAT_CLASSES.search(docs[0]["labels"][0]["name"])
    assert "emulator-ci" in _shell(fleet, serial, "ls /data/local/tmp")
