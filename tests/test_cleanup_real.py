"""`beep-av cleanup` against real things, as root: a planted state file listing things
that are not ours (all of them must survive, each named), and real leftovers of ours
(orphaned hogs in beep-av cgroups, v1 and v2) that must go.

Light: the cgroups only hold sleeping processes and idle hogs (no memory is filled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from beep_av.stages import cleanup as cu
from tests.conftest import ROOT, beep, require
from tests.fx_cgroup import can_v1, own_v1_cgroup

pytestmark = pytest.mark.real

UNIFIED = "/sys/fs/cgroup/unified"
DEAD_SHOW = 2**22 + 4321  # above pid_max's default: never a live show


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _procs(cg: str) -> list[int]:
    return [int(x) for x in Path(cg, "cgroup.procs").read_text().split()]


def _plant(state: Path, items: list[tuple[str, str]]) -> Path:
    state.mkdir(mode=0o700, exist_ok=True)
    p = state / f"{DEAD_SHOW}.json"
    data = {
        "show_pid": DEAD_SHOW,
        "show_start": 1,
        "items": [{"kind": k, "value": v} for k, v in items],
    }
    p.write_text(json.dumps(data))
    return p


class Made:
    """What a test made, removed at the end whatever happened: its processes by pid
    (killed and reaped), then its cgroups."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.cgroups: list[str] = []

    def sleep(self, cgroup: str | None = None) -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "600"])
        self.procs.append(p)
        if cgroup:
            _write(os.path.join(cgroup, "cgroup.procs"), str(p.pid))
        return p

    def cgroup(self, parent: str, name: str) -> str:
        path = os.path.join(parent, name)
        os.mkdir(path)
        self.cgroups.append(path)
        return path

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for path in reversed(self.cgroups):
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            assert not os.path.exists(path), f"test cgroup {path} still busy"


@pytest.fixture
def made():
    m = Made()
    yield m
    m.close()


def test_planted_state_file_touches_nothing_foreign(tmp_path, made):
    """The Must-show: a planted state file lists a foreign file, foreign cgroups with a
    sleeping process, and a pid that is no hog. All survive; each is named."""
    ok, why = can_v1()
    require(ok, why)
    own = own_v1_cgroup()
    assert own
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    # (1) foreign files: a regular file, a dir, a symlink dressed as a beep-av swapfile
    precious = tmp_path / "thesis.tex"
    precious.write_text("four years of work")
    dressed = tmp_path / "beep-av-swap-planted"
    dressed.mkdir(mode=0o700)
    (dressed / "swapfile").symlink_to(precious)
    # (2) foreign cgroups with a sleeping process: one not named beep-av-*, one named so
    # but holding a process that is not a hog
    foreign_cg = made.cgroup(own, f"someone-else-{tag}")
    sleep_in_foreign = made.sleep(foreign_cg)
    dressed_cg = made.cgroup(own, f"beep-av-test-planted-{tag}")
    sleep_in_dressed = made.sleep(dressed_cg)
    not_a_cgroup = tmp_path / "beep-av-not-a-cgroup"
    not_a_cgroup.mkdir()
    # (3) a pid that is not a hog, listed as one three ways
    lone = made.sleep()
    p = psutil.Process(lone.pid)
    ct, cmd = p.create_time(), p.cmdline()
    as_itself = json.dumps({"pid": lone.pid, "create_time": ct, "cmdline": cmd})
    hog_cmd = [sys.executable, "-m", "beep_av.hog", "--parent", str(DEAD_SHOW)]
    as_a_hog = json.dumps({"pid": lone.pid, "create_time": ct, "cmdline": hog_cmd})
    old_style = f"{lone.pid}:{cu.proc_start_time(lone.pid)}"
    state = tmp_path / "state"
    sf = _plant(
        state,
        [
            ("hog", as_itself),
            ("hog", as_a_hog),
            ("hog", old_style),
            ("cgroup", foreign_cg),
            ("cgroup", dressed_cg),
            ("cgroup", str(not_a_cgroup)),
            ("swapfile", str(precious)),
            ("swapfile", str(dressed / "swapfile")),
            ("swapdir", str(tmp_path)),
        ],
    )

    r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)

    # everything survives, untouched
    assert precious.read_text() == "four years of work"
    assert (dressed / "swapfile").is_symlink() and tmp_path.is_dir()
    for s in (sleep_in_foreign, sleep_in_dressed, lone):
        assert s.poll() is None, f"sleep {s.pid} was killed"
    assert os.path.isdir(foreign_cg) and _procs(foreign_cg) == [sleep_in_foreign.pid]
    assert os.path.isdir(dressed_cg) and _procs(dressed_cg) == [sleep_in_dressed.pid]
    assert not_a_cgroup.is_dir()
    # each refused item named on its own line, on stderr, with why; exit 1
    err = r.stderr.splitlines()
    want = [
        f"cleanup: refused hog {lone.pid} (sleep 600): the recorded command line is not a beep-av hog",
        f"cleanup: refused hog {lone.pid} (sleep 600): not a beep-av hog (its command line differs from the record)",
        f"cleanup: refused hog {lone.pid} (sleep 600): its record has no process identity",
        f"cleanup: refused cgroup {not_a_cgroup}: not under a cgroup mount",
        f"cleanup: refused pid {sleep_in_dressed.pid} (sleep 600) in cgroup {dressed_cg}: not a beep-av hog; left running",
        f"cleanup: kept cgroup {dressed_cg}: it holds 1 process(es) that are not ours",
        f"cleanup: refused cgroup {foreign_cg}: not named beep-av-*",
        f"cleanup: refused swapfile {precious}: not a beep-av swapfile (beep-av-swap-*/swapfile)",
        f"cleanup: refused swapfile {dressed / 'swapfile'}: a symlink, not a file beep-av made",
        f"cleanup: refused swap dir {tmp_path}: not a beep-av swap dir (beep-av-swap-*)",
    ]
    assert len(err) == len(want), r.stderr
    for line, start in zip(err, want, strict=True):
        assert line.startswith(start), (line, start)
    assert r.returncode == 1, r
    assert r.stdout == (
        "cleanup: nothing to remove; refused 9, kept 1 (named above, left untouched)\n"
    )
    # the refused entries are dropped (no later cleanup may act on them); the cgroup
    # that passed its checks but holds a foreign process stays listed for a retry
    left = json.loads(sf.read_text())
    assert left["items"] == [{"kind": "cgroup", "value": dressed_cg}]
    r2 = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)
    assert r2.returncode == 1 and sleep_in_dressed.poll() is None
    assert r2.stderr.splitlines()[0].startswith(f"cleanup: refused pid {sleep_in_dressed.pid}")
    # once the foreign process is gone (its owner ended it), the empty cgroup goes
    sleep_in_dressed.kill()
    sleep_in_dressed.wait(10)
    r3 = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)
    assert (r3.returncode, r3.stderr) == (0, ""), r3
    assert f"cleanup: removed cgroup {dressed_cg}" in r3.stdout
    assert not os.path.exists(dressed_cg) and not sf.exists()


# ---------------------------------------------------------------- leftovers of ours

# A parent for hogs that outlive their show, as a hog whose PR_SET_PDEATHSIG never
# fired would: a child subreaper that double-forks each hog so it is orphaned (then
# re-parented here) *before* it arms, with `--parent 0`. It reaps them, and kills what
# is left when its stdin closes (the hogs die with it: their death signal is armed
# against it).
ORPHANS = r"""
import ctypes, json, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
me = os.getpid()
hog_stdin_r, hog_stdin_w = os.pipe()  # EOF on stdin ends a hog: keep the write end
report_r, report_w = os.pipe()
os.set_inheritable(report_w, True)
pids = []
for spec in sys.argv[1:]:  # each: cgroup dirs to put one hog in, joined by ","
    tell_r, tell_w = os.pipe()
    mid = os.fork()
    if mid == 0:
        if os.fork():
            os._exit(0)
        while os.getppid() != me:  # orphaned, then ours: arm only after that
            time.sleep(0.001)
        for cg in filter(None, spec.split(",")):
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        os.write(tell_w, b"%d" % os.getpid())
        os.dup2(hog_stdin_r, 0)
        os.execv(sys.executable, [sys.executable, "-m", "beep_av.hog", "--rate", "0",
                 "--cache", "0", "--report-fd", str(report_w), "--parent", "0"])
    os.waitpid(mid, 0)
    pids.append(int(os.read(tell_r, 32)))
deadline = time.monotonic() + 60
for pid in pids:  # exec'd into the hog and armed (its first report)
    while b"beep_av.hog" not in open(f"/proc/{pid}/cmdline", "rb").read():
        assert time.monotonic() < deadline
        time.sleep(0.01)
seen = b""
while seen.count(b"\n") < len(pids) and time.monotonic() < deadline:
    seen += os.read(report_r, 4096)
print(json.dumps(pids), flush=True)
signal.signal(signal.SIGCHLD, lambda *a: None)
os.set_blocking(0, False)
while True:  # reap the hogs as cleanup kills them; end when the test closes our stdin
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    try:
        if os.read(0, 1) == b"":
            break
    except BlockingIOError:
        time.sleep(0.02)
for pid in pids:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
try:
    while True:
        os.waitpid(-1, 0)
except ChildProcessError:
    pass
"""


def _orphan_hogs(specs: list[list[str]]) -> tuple[subprocess.Popen, list[int]]:
    helper = subprocess.Popen(
        [sys.executable, "-c", ORPHANS, *[",".join(s) for s in specs]],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = helper.stdout.readline()
    if not line:
        helper.stdin.close()
        helper.wait(30)
        pytest.fail("the orphaned hogs did not come up")
    return helper, json.loads(line)


def _end_helper(helper: subprocess.Popen) -> None:
    helper.stdin.close()
    helper.wait(30)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _has_cgroup_kill() -> tuple[bool, str]:
    if not os.path.isfile(os.path.join(UNIFIED, "cgroup.procs")):
        return False, f"no cgroup2 mount at {UNIFIED}"
    probe = os.path.join(UNIFIED, f"beep-av-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError as e:
        return False, f"cannot make a cgroup under {UNIFIED} ({e.strerror})"
    try:
        return os.path.isfile(os.path.join(probe, "cgroup.kill")), "no cgroup.kill (kernel < 5.14)"
    finally:
        os.rmdir(probe)


def test_orphaned_hogs_of_ours_are_killed_and_their_cgroups_removed(tmp_path, made):
    """v1: a recorded hog killed by its identity, an unrecorded one killed as a member of
    a beep-av cgroup, one by one. v2: the hog of a beep-av cgroup with cgroup.kill."""
    ok, why = can_v1()
    require(ok, why)
    ok, why = _has_cgroup_kill()
    require(ok, why)
    own = own_v1_cgroup()
    assert own
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    v1 = made.cgroup(own, f"beep-av-test-orphans-{tag}")
    for name, value in (("memory.limit_in_bytes", 512 << 20),):
        _write(os.path.join(v1, name), str(value))
    v2 = made.cgroup(UNIFIED, f"beep-av-test-orphans-{tag}")
    helper, (recorded, member, in_v2) = _orphan_hogs([[v1], [v1], [v2]])
    try:
        assert sorted(_procs(v1)) == sorted([recorded, member]) and _procs(v2) == [in_v2]
        state = tmp_path / "state"
        sf = _plant(
            state,
            [("hog", cu.hog_value(recorded)), ("cgroup", v1), ("cgroup", v2)],
        )
        r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)
        assert (r.returncode, r.stderr) == (0, ""), r
        out = r.stdout.splitlines()
        # cgroups in reverse order of creation: v2 first
        assert out == [
            f"cleanup: killed leftover hog {recorded}",
            f"cleanup: killed leftover hog {in_v2} in cgroup {v2} (cgroup.kill)",
            f"cleanup: removed cgroup {v2}",
            f"cleanup: killed leftover hog {member} in cgroup {v1}",
            f"cleanup: removed cgroup {v1}",
            "cleanup: removed 3 item(s)",  # the listed items; members are not items
        ], r.stdout
        assert not os.path.exists(v1) and not os.path.exists(v2)
        assert all(_gone(pid) for pid in (recorded, member, in_v2))
        assert not sf.exists()
        r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)
        assert (r.returncode, r.stdout) == (0, "cleanup: nothing to remove\n")
    finally:
        _end_helper(helper)


def test_a_hog_of_a_running_show_is_refused(tmp_path, made):
    """A hog whose show is alive (its parent is the show it names) is that show's: a
    state file listing it, or its cgroup, does not get it killed."""
    ok, why = can_v1()
    require(ok, why)
    from beep_av.hogproc import HogProcess

    own = own_v1_cgroup()
    assert own
    cg = made.cgroup(own, f"beep-av-test-alive-{os.getpid()}")
    _write(os.path.join(cg, "memory.limit_in_bytes"), str(256 << 20))
    hog = HogProcess(cgroup_procs=os.path.join(cg, "cgroup.procs"), populate=False)
    try:
        hog.wait_ready(60)
        state = tmp_path / "state"
        sf = _plant(state, [("hog", cu.hog_value(hog.pid)), ("cgroup", cg)])
        r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(state)}, timeout=60)
        assert r.returncode == 1 and hog.poll() is None, r
        me = os.getpid()
        err = r.stderr.splitlines()
        assert err[0].startswith(f"cleanup: refused hog {hog.pid} (")
        assert err[0].endswith(f": a hog of show {me}, which is still running")
        assert err[1].startswith(f"cleanup: refused pid {hog.pid} (")
        assert err[1].endswith(
            f"in cgroup {cg}: a hog of show {me}, which is still running; left running"
        )
        assert err[2].startswith(f"cleanup: kept cgroup {cg}")
        assert json.loads(sf.read_text())["items"] == [{"kind": "cgroup", "value": cg}]
    finally:
        hog.kill()
        hog.wait(10)
        hog.close()


def test_teardown_kills_only_its_own_hogs_in_its_cgroup(made):
    """rmdir_cgroup (a show's own teardown) kills the hogs this process spawned that are
    left in the cgroup, and nothing else that may have been put there."""
    ok, why = can_v1()
    require(ok, why)
    from beep_av.hogproc import HogProcess

    own = own_v1_cgroup()
    assert own
    cg = made.cgroup(own, f"beep-av-test-teardown-{os.getpid()}")
    _write(os.path.join(cg, "memory.limit_in_bytes"), str(256 << 20))
    hog = HogProcess(cgroup_procs=os.path.join(cg, "cgroup.procs"), populate=False)
    try:
        hog.wait_ready(60)
        stranger = made.sleep(cg)
        assert cu.rmdir_cgroup(cg, tries=5, delay=0.05) is False  # the stranger stays
        assert hog.wait(10) == -9 and stranger.poll() is None
        assert _procs(cg) == [stranger.pid]
        stranger.kill()
        stranger.wait(10)
        assert cu.rmdir_cgroup(cg) is True
    finally:
        hog.kill()
        hog.wait(10)
        hog.close()
