"""The host guard (issue 8): a cgroup show releases its hog when the host domain it lives
in has less than the floor left outside the stage.

Pure parts as tables; the adapter on fake cgroup and /proc files; then real shows: one
refused before anything is made (a floor this machine cannot keep), and one run inside
a 512 MiB memory cgroup standing in for the host while a second process in that cgroup,
outside the stage, eats its memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beep_av.errors import BadInput, CannotStage
from beep_av.guard import (
    END_REASON,
    HostGuard,
    auto_floor,
    cgroup_free,
    host_left,
    resolve_floor,
)
from beep_av.stages.host import Domain
from tests.conftest import beep
from tests.test_endings import FAST, SLOW, Show, end_of, make_machine, one_line_error

MiB = 1 << 20
GiB = 1 << 30

# ---------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("total", "floor"),
    [
        (0, 256 * MiB),
        (1 * GiB, 256 * MiB),
        (8 * GiB, 256 * MiB),  # 3% = 245 MiB: the 256 MiB minimum wins
        (24 * GiB, int(24 * GiB * 0.03)),
        (1024 * GiB, int(1024 * GiB * 0.03)),
    ],
)
def test_auto_floor(total, floor):
    assert auto_floor(total) == floor


@pytest.mark.parametrize(
    ("text", "floor"),
    [
        ("auto", 737 * MiB + int(0.28 * MiB)),
        ("128M", 128 * MiB),
        ("0", 0),
        ("1.5G", 3 * GiB // 2),
        ("10%", 2 * GiB),  # of MemAvailable
    ],
)
def test_resolve_floor(text, floor):
    assert abs(resolve_floor(text, 20 * GiB, 24 * GiB) - floor) < MiB


@pytest.mark.parametrize("text", ["", "-1M", "lots", "12parsecs", "1e9", "200%", "nan"])
def test_resolve_floor_rejects(text):
    with pytest.raises(BadInput, match="--host-floor"):
        resolve_floor(text, 20 * GiB, 24 * GiB)


@pytest.mark.parametrize(
    ("limit", "usage", "inactive", "free"),
    [
        (512 * MiB, 100 * MiB, 0, 412 * MiB),
        (512 * MiB, 100 * MiB, 40 * MiB, 452 * MiB),  # inactive cache is reclaimable
        (512 * MiB, 100 * MiB, 200 * MiB, 512 * MiB),  # a stat that races the usage
        (512 * MiB, 600 * MiB, 0, -88 * MiB),
        (512 * MiB, 0, -5, 512 * MiB),
    ],
)
def test_cgroup_free(limit, usage, inactive, free):
    assert cgroup_free(limit, usage, inactive) == free


@pytest.mark.parametrize(
    ("free", "stage_limit", "stage_usage", "left"),
    [
        (400 * MiB, 160 * MiB, 0, 240 * MiB),  # an empty stage may still take all of it
        (400 * MiB, 160 * MiB, 100 * MiB, 340 * MiB),
        (400 * MiB, 160 * MiB, 160 * MiB, 400 * MiB),
        (400 * MiB, 160 * MiB, 300 * MiB, 400 * MiB),  # over its limit: no headroom
        (100 * MiB, 160 * MiB, 0, -60 * MiB),
        (400 * MiB, 160 * MiB, -1, 240 * MiB),
    ],
)
def test_host_left(free, stage_limit, stage_usage, left):
    assert host_left(free, stage_limit, stage_usage) == left


# ---------------------------------------------------------------- the adapter on fake files


def _v1_domain(tmp_path: Path, limit: int, usage: int, inactive: int) -> Domain:
    d = tmp_path / "host"
    d.mkdir(exist_ok=True)
    (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (d / "memory.stat").write_text(f"cache 0\ntotal_cache 1\ntotal_inactive_file {inactive}\n")
    return Domain(1, str(d), "/host", limit, 0)


def test_guard_reads_a_v1_domain_and_trips_under_the_floor(tmp_path):
    dom = _v1_domain(tmp_path, 512 * MiB, 100 * MiB, 20 * MiB)
    stage = tmp_path / "stage_usage"
    stage.write_text(f"{60 * MiB}\n")
    g = HostGuard(128 * MiB, dom, 160 * MiB)
    try:
        assert g.left() == 512 * MiB - 80 * MiB - 160 * MiB  # nothing attached yet
        g.attach(str(stage))
        assert g.left() == 512 * MiB - 80 * MiB - 100 * MiB
        assert g.problem() is None
        # the host eats 250 MiB more: the same kept fds see it
        (tmp_path / "host" / "memory.usage_in_bytes").write_text(f"{350 * MiB}\n")
        why = g.problem()
        assert why is not None and why.startswith("host guard: cgroup /host (512 MiB")
        assert "82 MiB left outside the stage, under the floor of 128 MiB" in why
        assert "\n" not in why
    finally:
        g.close()
        g.close()  # safe twice


def test_guard_reads_the_machine_from_meminfo(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        "MemTotal: 1048576 kB\nMemFree: 10 kB\nMemAvailable: 409600 kB\nCached: 0 kB\n"
        "SwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
    g = HostGuard(256 * MiB, Domain(0, None, None, GiB, 0), 128 * MiB, proc_root=str(proc))
    try:
        assert g.left() == 400 * MiB - 128 * MiB
        assert g.problem() is None
        g.preflight()
        g.floor = 300 * MiB
        assert "the whole machine" in (g.problem() or "")
        with pytest.raises(CannotStage, match="use a smaller --ram or a lower --host-floor"):
            g.preflight()
        g.floor = 0  # --host-floor 0: off, even for a host with nothing left
        (proc / "meminfo").write_text((proc / "meminfo").read_text().replace("409600", "0"))
        assert g.left() < 0 and g.problem() is None
        g.preflight()
    finally:
        g.close()


@pytest.mark.parametrize(
    "usage", ["", "garbage\n", "-5\n", "99999999999999999999999999\n", "\x00\x01"]
)
def test_guard_never_trips_nor_raises_on_an_unreadable_domain(tmp_path, usage):
    dom = _v1_domain(tmp_path, 512 * MiB, 0, 0)
    (tmp_path / "host" / "memory.usage_in_bytes").write_text(usage)
    g = HostGuard(128 * MiB, dom, 160 * MiB)
    try:
        assert g.left() is None
        assert g.problem() is None
    finally:
        g.close()


def test_guard_of_a_missing_domain_is_cannot_stage(tmp_path):
    dom = Domain(1, str(tmp_path / "gone"), "/gone", 512 * MiB, 0)
    with pytest.raises(CannotStage, match="host guard: cannot read"):
        HostGuard(128 * MiB, dom, 160 * MiB)


# ---------------------------------------------------------------- real shows


@pytest.fixture
def machine(tmp_path, monkeypatch):
    return make_machine(tmp_path, monkeypatch)


def test_a_floor_the_host_cannot_keep_is_refused_before_anything_is_made(machine):
    m = machine()
    show = Show([*FAST, "--host-floor", "1T"])
    assert show.wait() == 3, show.stderr
    one_line_error(show.stderr, "host guard:")
    assert "--host-floor" in show.stderr  # the fix
    assert "stage:" not in show.stderr  # no stage was made
    assert m.residue(show.proc.pid) == []


def test_bad_host_floor_is_exit_2():
    r = beep("show", "--host-floor", "lots")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "beep-av: --host-floor: 'lots' is not a size (use e.g. 512M, 1.5G, 256MiB, 10%)"
    )


EATER = """
import sys, time
chunks = []
for _ in range(int(sys.argv[1])):
    chunks.append(bytearray(b"\\x5a") * (16 << 20))  # 16 MiB, every page touched
    time.sleep(0.05)
print("ate", flush=True)
time.sleep(120)
"""


def _join(cgroup: str):
    def join() -> None:
        fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")  # "0": the writing process itself
        finally:
            os.close(fd)

    return join


@pytest.mark.real
def test_host_guard_trips_when_the_host_cgroup_is_eaten_from_outside_the_stage(
    machine, scratch_cgroup, tmp_path
):
    host = scratch_cgroup(512 * MiB)  # stands in for the host (or a container's limit)
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*SLOW, "--host-floor", "128M", "--record", str(rec)], preexec_fn=_join(host))
    eater = None
    try:
        show.wait_for(" filling ")
        # a second process in the host cgroup, outside the stage, eats up to 320 MiB
        eater = subprocess.Popen(
            [sys.executable, "-c", EATER, "20"],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_join(host),
        )
        code = show.wait(120)
    finally:
        if eater is not None and eater.poll() is None:
            eater.send_signal(signal.SIGKILL)  # our own child, by its pid
            eater.wait()
    # the stage's own growth cannot trip it (its headroom is counted from the start and
    # the preflight passed): only the eater, outside the stage, can
    assert code == 3, show.stdout + show.stderr
    one_line_error(show.stderr, "host guard: cgroup /")
    assert "under the floor of 128 MiB; the hog was released" in show.stderr
    assert " oom " not in show.stdout and " finale " not in show.stdout
    end = end_of(rec)
    assert end["reason"] == END_REASON and end["exit"] == 3
    assert not [r for r in map(json.loads, rec.read_text().splitlines()) if r["type"] == "kill"]
    header = json.loads(rec.read_text().splitlines()[0])
    assert header["host_floor"] == 128 * MiB
    deadline = time.monotonic() + 5
    while m.residue(show.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.residue(show.proc.pid) == []
