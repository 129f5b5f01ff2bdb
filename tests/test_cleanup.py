"""State files and leftovers: fake /proc trees for the logic, a real crashed show
(SIGKILLed mid-show) for cleanup()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beep_av.stages import cleanup as cu
from beep_av.stages.cleanup import StateFile, cleanup, find_leftovers, proc_start_time
from beep_av.stages.swap import swap_active
from tests.conftest import ROOT, require
from tests.fx_cgroup import can_v1


def _fake_proc(base: Path, pid: int, start: int, name: str = "python3", cmdline: str = "") -> None:
    d = base / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    rest = " ".join(["S"] + ["0"] * 18 + [str(start)] + ["0"] * 10)
    (d / "stat").write_text(f"{pid} ({name}) {rest}\n")
    (d / "cmdline").write_text(cmdline.replace(" ", "\0"))


@pytest.mark.parametrize(
    "name",
    [
        "python3",
        "foo) Z (bar",
        "a b c",
        ")",
        "((",
        "x) 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    ],
)
def test_proc_start_time_hostile_names(tmp_path, name):
    _fake_proc(tmp_path, 42, 123456, name)
    assert proc_start_time(42, str(tmp_path)) == 123456


def test_proc_start_time_missing_or_broken(tmp_path):
    assert proc_start_time(7, str(tmp_path)) is None
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "stat").write_text("8 (x) S 1 2")
    assert proc_start_time(8, str(tmp_path)) is None


def test_proc_start_time_real():
    assert proc_start_time(os.getpid()) == proc_start_time(os.getpid()) > 0


def test_state_file_records_forgets_and_vanishes(tmp_path):
    sf = StateFile(tmp_path / "s", show_pid=os.getpid())
    sf.record("cgroup", "/sys/fs/cgroup/memory/x")
    sf.record("hog", "12:34")
    data = json.loads(sf.path.read_text())
    assert data["show_pid"] == os.getpid() and data["show_start"] == proc_start_time(os.getpid())
    assert data["items"] == [
        {"kind": "cgroup", "value": "/sys/fs/cgroup/memory/x"},
        {"kind": "hog", "value": "12:34"},
    ]
    assert not [p for p in sf.dir.iterdir() if p.name.startswith(".")]  # no temp left
    assert find_leftovers(sf.dir) == []  # our show is alive
    sf.forget("hog", "12:34")
    sf.forget("cgroup", "/sys/fs/cgroup/memory/x")
    assert not sf.path.exists()
    with pytest.raises(ValueError):
        sf.record("bogus", "x")


@pytest.mark.parametrize(
    "alive_start, recorded_start, leftover",
    [(None, 100, True), (100, 100, False), (200, 100, True), (100, None, False)],
)
def test_find_leftovers_by_pid_and_start_time(tmp_path, alive_start, recorded_start, leftover):
    proc, d = tmp_path / "proc", tmp_path / "state"
    d.mkdir()
    if alive_start is not None:
        _fake_proc(proc, 4242, alive_start)
    items = [{"kind": "cgroup", "value": "/nowhere"}]
    (d / "4242.json").write_text(
        json.dumps({"show_pid": 4242, "show_start": recorded_start, "items": items})
    )
    got = find_leftovers(d, str(proc))
    assert [lo.show_pid for lo in got] == ([4242] if leftover else [])
    if leftover:
        assert got[0].items == (("cgroup", "/nowhere"),)


def test_corrupt_state_file_of_a_dead_show_is_removed(tmp_path):
    proc, d = tmp_path / "proc", tmp_path / "state"
    d.mkdir()
    proc.mkdir()
    (d / "999999.json").write_text("{not json")
    (d / "notapid.json").write_text("[]")
    said = []
    assert cleanup(said.append, d, str(proc)) == 0
    assert not (d / "999999.json").exists()


def test_never_kills_a_recycled_or_foreign_pid(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = proc_start_time(sleeper.pid)
        said = []
        # right pid, wrong start time: a recycled pid
        assert cu._kill_hog(f"{sleeper.pid}:{start + 1}", said.append, "/proc")
        # right pid and start, but not a hog
        assert cu._kill_hog(f"{sleeper.pid}:{start}", said.append, "/proc")
        assert sleeper.poll() is None and said == []
        assert not cu._kill_hog("garbage", said.append, "/proc")
    finally:
        sleeper.kill()
        sleeper.wait()


CRASHING_SHOW = """
import os, sys, time
from beep_av.stages.cgroup import CgroupStage
st = CgroupStage(ram=96 << 20, swap=64 << 20, cache=8 << 20, rate=8 << 20)
st.prepare(lambda s: None)
st.start()
print(st.cgroup_dir, st.swapfile.path if st.swapfile else "", st.hog.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.real
def test_cleanup_after_a_crashed_show(state_dir):
    ok, why = can_v1()
    require(ok, why)
    show = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SHOW], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = show.stdout.readline().split()
        assert len(line) in (2, 3), "the show did not come up"
        cgroup_dir, hog_pid = line[0], int(line[-1])
        swapfile = line[1] if len(line) == 3 else None
        show.kill()
        show.wait(10)
    finally:
        show.kill()
        show.wait(10)
    los = find_leftovers(state_dir)
    assert [lo.show_pid for lo in los] == [show.pid]
    kinds = {k for k, _ in los[0].items}
    assert {"cgroup", "hog"} <= kinds
    said = []
    n = cleanup(said.append, state_dir)
    assert n >= 2
    assert not os.path.exists(cgroup_dir)
    if swapfile:
        assert "swapfile" in kinds and "swapdir" in kinds
        assert not os.path.exists(swapfile) and not swap_active(swapfile)
        assert not os.path.exists(os.path.dirname(swapfile))
    assert (
        proc_start_time(hog_pid) is None
        or "beep_av.hog" not in Path(f"/proc/{hog_pid}/cmdline").read_text()
    )
    assert find_leftovers(state_dir) == [] and not list(state_dir.glob("*.json"))
    assert cleanup(said.append, state_dir) == 0
