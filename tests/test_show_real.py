"""Issue 2's must-show: real shows on a cgroup stage with the kernel's own OOM killer.

Each test checks afterwards that no cgroup, swapfile, hog process or state file of the
run remains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, beep, require
from tests.fx_cgroup import beep_cgroups, beep_swaps, hog_pids

pytestmark = [pytest.mark.real, pytest.mark.slow]

SMALL = ["--ram", "192M", "--swap", "128M", "--cache", "48M", "--rate", "96M/s"]
QUIET = ["--output", "headless", "--audio", "off", "--calm", "0.5"]


def _memory_cgroup_root() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        if "memory" in ctrl.split(","):
            p = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return p if p.is_dir() else None
    return None


def _can_stage() -> bool:
    cg = _memory_cgroup_root()
    return os.geteuid() == 0 and cg is not None and os.access(cg, os.W_OK)


@pytest.fixture
def real_stage():
    require(_can_stage(), "needs root and a writable cgroup v1 memory controller")
    yield
    assert residue() == [], "a show left something behind"


def residue() -> list[str]:
    """Every trace a show could leave: cgroups, swapfiles, hog processes, state files."""
    left = sorted(beep_cgroups()) + beep_swaps() + [f"hog pid {p}" for p in hog_pids()]
    for d in (
        "/run/beep-av",
        os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"), "beep-av"),
    ):
        if os.path.isdir(d):
            left += [os.path.join(d, f) for f in os.listdir(d)]
    return left


def load(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def phases(records: list[dict]) -> list[str]:
    return [r["phase"] for r in records if r["type"] == "phase"]


def test_full_story_on_a_small_stage(real_stage, tmp_path):
    rec = tmp_path / "r.jsonl"
    r = beep("show", *SMALL, *QUIET, "--record", str(rec), timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    records = load(rec)
    assert records[0]["type"] == "header" and records[0]["format"] == "beep-av/1"
    assert phases(records) == ["calm", "filling", "evicting", "swapping", "oom", "finale"]
    kills = [x for x in records if x["type"] == "kill"]
    assert len(kills) == 1
    kill = kills[0]
    assert kill["exit"] == 137 and kill["signal"] == 9
    assert kill["detected_by"] == ["exit", "oom_kill", "kmsg"]
    assert kill["oom_kill_count"] >= 1
    assert f"Killed process {kill['pid']} " in kill["kmsg"]  # the kernel named the hog
    assert kill["anon_rss_kib"] > 0 and 0 < kill["latency_ms"] < 50
    assert kill["hog"] is True and kill["oom"] is True
    assert records[0]["kernel_clock"]["uncertainty_ns"] > 0
    assert not Path(f"/proc/{kill['pid']}").exists()
    samples = [x for x in records if x["type"] == "sample"]
    assert max(s["swap"] for s in samples) > 0
    assert all(s["ram"] + s["cache"] <= s["ram_limit"] + 8 * 2**20 for s in samples)
    # the stall is counted from the stage's first reading: no calm sample claims one
    # (the PSI totals since boot, differenced against 0, once made the first say 1.0)
    # the kernel's whole report in the kill record: the hog a candidate, the trigger named
    assert kill["trigger"]["name"] and kill["victim_rank"] == 1, kill
    assert kill["pid"] in [c["pid"] for c in kill["candidates"]], kill
    calm = [s for s in samples if s["phase"] == "calm"]
    assert len(calm) >= 5 and all(s["stall"] == 0 for s in calm), calm[:3]
    # the headless output told the story in one line per phase, then the card
    assert "exit 137 (OOMKilled)" in r.stdout
    for p in ("filling", "evicting", "swapping", "finale"):
        assert f" {p} " in r.stdout


def test_swap_off_skips_swapping_and_still_kills(real_stage, tmp_path):
    rec = tmp_path / "r.jsonl"
    r = beep(
        "show",
        "--ram",
        "160M",
        "--swap",
        "off",
        "--cache",
        "32M",
        "--rate",
        "96M/s",
        *QUIET,
        "--record",
        str(rec),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    records = load(rec)
    assert "swapping" not in phases(records)
    assert phases(records)[-2:] == ["oom", "finale"]
    skips = [x for x in records if x["type"] == "skip"]
    assert [s["phase"] for s in skips] == ["swapping"]
    assert "swap" in skips[0]["reason"]
    assert "skipped" in r.stdout


def _start_show(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "beep_av", "show", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    proc.kill()
    raise AssertionError(f"never saw {needle!r}; output: {''.join(seen)}")


@pytest.mark.parametrize("phase", ["filling", "swapping"])
def test_sigint_exits_130_and_leaves_nothing(real_stage, phase):
    proc = _start_show(
        ["--ram", "192M", "--swap", "256M", "--cache", "32M", "--rate", "24M/s", *QUIET]
    )
    try:
        _wait_for_line(proc, f" {phase} ")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, proc.stderr.read()
    assert "Traceback" not in proc.stderr.read()


def _sigkill_while_filling(args: list[str]) -> None:
    """Start a show, SIGKILL it once the hog climbs: what a crash leaves behind."""
    proc = _start_show(args)
    try:
        _wait_for_line(proc, " filling ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_of_the_show_then_cleanup(real_stage):
    _sigkill_while_filling(
        ["--ram", "192M", "--swap", "128M", "--cache", "32M", "--rate", "16M/s", *QUIET]
    )
    # the hog dies with the show (PR_SET_PDEATHSIG)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(x.startswith("hog pid") for x in residue()):
        time.sleep(0.1)
    assert not any(x.startswith("hog pid") for x in residue())
    left = residue()
    assert left, "a SIGKILLed show leaves its cgroup and state file for cleanup to find"
    r = beep("cleanup")
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout
    assert residue() == []


def test_next_show_mentions_leftovers(real_stage):
    _sigkill_while_filling(
        ["--ram", "160M", "--swap", "off", "--cache", "16M", "--rate", "8M/s", *QUIET]
    )
    r = beep("show", "--ram", "12parsecs")  # bad input: exits before creating anything ...
    assert r.returncode == 2
    r = beep(
        "show",
        "--ram",
        "160M",
        "--swap",
        "off",
        "--cache",
        "16M",
        "--rate",
        "128M/s",
        *QUIET,
        timeout=240,
    )
    assert "beep-av cleanup" in r.stderr  # ... but a real start says what was left
    assert r.returncode == 0, r.stderr
    beep("cleanup")
