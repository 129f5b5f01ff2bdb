"""An honest card, for real (issue 13, item 2): the kernel's kill of another process in
the stage's domain is not the hog's; a kill -9 from outside is not an OOM kill; the
detection latency is measured from the kernel's own time of the kill on a calibrated
clock. Each test leaves no cgroup, swapfile, hog or state file behind.

Heavy: run this file under `flock /var/lock/beep-av-heavy.lock`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, beep, require
from tests.test_show_real import _can_stage, residue

pytestmark = [pytest.mark.real, pytest.mark.slow]

MiB = 1 << 20
QUIET = ["--output", "headless", "--audio", "off", "--calm", "0.5"]
INSIDE = ["--host-floor", "0"]  # the outer cgroup is the domain: no host to guard
SMALL = ["--ram", "96M", "--swap", "64M", "--cache", "16M", "--rate", "128M/s"]


@pytest.fixture
def real_stage():
    require(_can_stage(), "needs root and a writable cgroup v1 memory controller")
    require(os.access("/dev/kmsg", os.W_OK), "needs /dev/kmsg writable (root) to calibrate")
    yield
    assert residue() == [], "a show left something behind"


def load(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def kills(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "kill"]


# ---------------------------------------------------------------- five real shows


def test_five_real_shows_measure_latency_from_the_kernels_time(real_stage, tmp_path):
    latencies, uncertainties = [], []
    for run in range(5):
        rec = tmp_path / f"r{run}.jsonl"
        r = beep("show", *SMALL, *QUIET, "--record", str(rec), timeout=240)
        assert r.returncode == 0, f"run {run}: {r.stderr}{r.stdout}"
        records = load(rec)
        clock = records[0]["kernel_clock"]
        assert isinstance(clock["offset_ns"], int) and clock["method"] == "kmsg marker"
        assert 0 < clock["uncertainty_ns"] < 1_000_000, clock  # well under a millisecond
        (kill,) = kills(records)
        assert kill["hog"] is True and kill["oom"] is True and kill["killer"] == "kernel"
        assert kill["detected_by"] == ["exit", "oom_kill", "kmsg"]
        assert f"Killed process {kill['pid']} " in kill["kmsg"]
        assert 0 < kill["latency_ms"] < 50, kill
        assert "detected in " in r.stdout and "latency unknown" not in r.stdout
        latencies.append(kill["latency_ms"])
        uncertainties.append(clock["uncertainty_ns"])
    print(f"latencies_ms={latencies} uncertainty_ns={uncertainties}")
    # measured, not a constant: a figure stuck at 0.0 (the old bug) would be all equal
    assert len(set(latencies)) > 1


# ---------------------------------------------------------------- a bystander dies first

BYSTANDER = textwrap.dedent(
    """
    import mmap, os, sys, time
    n = int(sys.argv[1])
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block = os.urandom(1 << 16)  # random pages: neither zero-skipped nor compressible
    for i in range(0, n, 1 << 16):
        m[i : i + (1 << 16)] = block
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _join(cg: str) -> str:
    return f"echo $$ > {cg}/cgroup.procs"


def test_a_bystander_killed_first_is_not_the_hog_and_the_show_goes_on(
    real_stage, scratch_cgroup, tmp_path
):
    """A 256 MiB outer cgroup (memory and swap) holds the show, its stage (a child of the
    show's own cgroup, so inside the outer one) and a bystander with oom_score_adj 1000
    and 120 MiB, more than the hog has when the outer limit is hit: the kernel kills the
    bystander first. The show says so and goes on to the hog's own kill at the stage's
    limit. The bystander lives in the outer cgroup, not the stage: the stage's counter
    does not count its kill, so the hog's rise is the hog's."""
    outer = scratch_cgroup(256 * MiB, 0)
    bystander = subprocess.Popen(
        ["sh", "-c", f"{_join(outer)} && echo 1000 > /proc/self/oom_score_adj && "
         f"exec {sys.executable} -c '{BYSTANDER}' {120 * MiB}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert bystander.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{bystander.pid}/oom_score_adj").read_text().strip() == "1000"
        rec = tmp_path / "r.jsonl"
        # no swap: the outer limit counts memory and swap alike, and the stage's own
        # limit (192 MiB) lies beyond what the outer one leaves the hog (~85 MiB)
        stage = ["--ram", "192M", "--swap", "off", "--cache", "16M", "--rate", "128M/s"]
        argv = " ".join(
            [sys.executable, "-m", "beep_av", "show", *stage, *QUIET, *INSIDE, "--record",
             str(rec)]
        )  # fmt: skip
        r = subprocess.run(
            ["sh", "-c", f"{_join(outer)} && exec {argv}"],
            cwd=ROOT,
            env=dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )
        # seen in CI: killed (-9) but reaped only after more than 30 s
        assert bystander.wait(120) == -9, f"the bystander lives: {r.stdout}{r.stderr}"
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()
    assert r.returncode == 0, r.stderr + r.stdout
    records = load(rec)
    first, hog = kills(records)
    assert first["pid"] == bystander.pid and first["hog"] is False, first
    assert f"Killed process {bystander.pid} " in first["kmsg"]
    assert first["detected_by"] == ["kmsg"] and 0 < first["latency_ms"] < 50
    assert hog["hog"] is True and hog["pid"] == records[0]["hog_pid"], hog
    assert hog["oom"] is True and hog["exit"] == 137 and "kmsg" in hog["detected_by"]
    assert first["t"] < hog["t"]
    phases = [x["phase"] for x in records if x["type"] == "phase"]
    assert phases[-2:] == ["oom", "finale"]
    assert [x["reason"] for x in records if x["type"] == "end"] == ["finale"]
    assert f"the kernel killed {bystander.pid} ({first['name']}), not the hog" in r.stdout
    assert r.stdout.index("not the hog") < r.stdout.index(" oom ")  # said while it went on


# ---------------------------------------------------------------- kill -9 from outside


def test_kill_9_of_the_hog_is_a_signal_from_user_space(real_stage, tmp_path):
    rec = tmp_path / "r.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1", SDL_VIDEODRIVER="dummy")
    proc = subprocess.Popen(
        [sys.executable, "-m", "beep_av", "show", "--ram", "192M", "--swap", "off",
         "--cache", "16M", "--rate", "16M/s", *QUIET, "--record", str(rec)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        out = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if " filling " in line or not line:
                break
        header = json.loads(rec.read_text().splitlines()[0])
        hog = header["hog_pid"]
        assert b"beep_av.hog" in Path(f"/proc/{hog}/cmdline").read_bytes()
        os.kill(hog, signal.SIGKILL)  # the hog is our show's child: ours to end
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(out) + stdout
    assert proc.returncode == 4, stderr + stdout
    errors = [ln for ln in stderr.splitlines() if ln.startswith("beep-av: ")]
    assert len(errors) == 1 and "killed by a signal from user space" in errors[0], stderr
    assert "Traceback" not in stderr
    records = load(rec)
    (kill,) = kills(records)
    assert kill["pid"] == hog and kill["oom"] is False and kill["hog"] is True
    assert kill["detected_by"] == ["exit"] and kill["killer"] == "user space"
    assert "latency_ms" not in kill and kill["kmsg"] is None
    (end,) = [x for x in records if x["type"] == "end"]
    assert end["reason"] == "user-space-kill" and end["oom"] is False and end["exit"] == 4
    phases = [x["phase"] for x in records if x["type"] == "phase"]
    assert "oom" not in phases and phases[-1] == "finale"
    assert any(x["type"] == "skip" and x["phase"] == "oom" for x in records)
    assert "NOT AN OOM KILL" in stdout and "OOMKilled" not in stdout
