"""Cgroup fixtures other tests can use.

- `scratch_cgroup(limit=128 MiB, swap=0)`: a limited v1 child of our own memory cgroup,
  always removed (our own leftover children are killed first). Limits capped at 512 MiB.
- `fake_cgroup_v2`: builds a fake unified tree + fake /proc in a temp dir; returns a
  FakeTree whose `fs` records every write in order and removes a dir like kernfs does.
- `state_dir`: a private state dir for the stage's state files ($BEEP_AV_STATE_DIR).
- `hog_pids`, `beep_swaps`, `beep_cgroups`: what real shows may leave behind, for the
  residue checks of the real tests."""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beep_av.procfs import ParseError, parse_proc_cgroup, parse_proc_stat, parse_swaps
from beep_av.stages.cgroup import CgroupFS
from beep_av.stages.cleanup import rmdir_cgroup

MiB = 1 << 20
V1_ROOT = "/sys/fs/cgroup/memory"
MAX_LIMIT = 512 * MiB  # house rule for memory experiments


def own_v1_cgroup() -> str | None:
    """Our own v1 memory cgroup dir, if this machine has one."""
    try:
        v1, _ = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    if v1 is None or not os.path.isdir(V1_ROOT):
        return None
    return os.path.join(V1_ROOT, v1.lstrip("/"))


def hog_pids(show_pid: int | None = None) -> list[int]:
    """Hogs running now (`... -m beep_av.hog ...`); with `show_pid`, only the hogs of that
    show (their `--parent`)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"beep_av.hog" not in cmd:
            continue
        if show_pid is not None:
            i = cmd.index(b"--parent") if b"--parent" in cmd else -1
            if i < 0 or cmd[i + 1 : i + 2] != [str(show_pid).encode()]:
                continue
        out.append(int(pid))
    return out


def beep_swaps() -> list[str]:
    """Active swap areas a stage of ours made (beep-av in the path)."""
    return [
        s.filename for s in parse_swaps(Path("/proc/swaps").read_text()) if "beep-av" in s.filename
    ]


def beep_cgroups(pattern: str = "beep-av-*") -> set[str]:
    """Stage cgroups under our own v1 memory cgroup (a show's: `beep-av-PID-*`)."""
    own = own_v1_cgroup()
    return {str(p) for p in Path(own).rglob(pattern) if p.is_dir()} if own else set()


def can_v1() -> tuple[bool, str]:
    """(ok, why not) for real v1 cgroup tests."""
    own = own_v1_cgroup()
    if own is None:
        return False, "no cgroup v1 memory controller"
    if os.geteuid() != 0 or not os.access(own, os.W_OK):
        return False, f"{own} is not writable (needs root)"
    if not os.path.exists(os.path.join(own, "memory.memsw.limit_in_bytes")):
        return False, "no memsw accounting (swapaccount=1)"
    return True, ""


def _children_pids(path: str) -> list[int]:
    try:
        return [int(x) for x in Path(path, "cgroup.procs").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def scratch_cgroup():
    """Factory: make(limit=128 MiB, swap=0) -> dir of a fresh limited v1 cgroup."""
    from tests.conftest import require

    ok, why = can_v1()
    require(ok, why)
    made: list[str] = []
    own = own_v1_cgroup()
    assert own

    def make(limit: int = 128 * MiB, swap: int = 0) -> str:
        assert 0 < limit <= MAX_LIMIT, "memory experiments stay within 512 MiB"
        path = os.path.join(own, f"beep-av-test-{os.getpid()}-{len(made)}")
        os.mkdir(path)
        made.append(path)
        for name, value in (
            ("memory.limit_in_bytes", limit),
            ("memory.memsw.limit_in_bytes", limit + swap),
        ):
            fd = os.open(os.path.join(path, name), os.O_WRONLY)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)
        return path

    yield make
    for path in reversed(made):
        for pid in _children_pids(path):
            # only processes this test started: our children (or theirs, via PDEATHSIG)
            try:
                if _ppid(pid) == os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        assert rmdir_cgroup(path, tries=100), f"scratch cgroup {path} still busy"


def _ppid(pid: int) -> int | None:
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text()).ppid
    except (OSError, ParseError):
        return None


# ---------------------------------------------------------------- fake v2 tree


class FakeFS(CgroupFS):
    """Records writes; mkdir/rmdir like cgroupfs (control files vanish with the dir).
    `busy_once` names files whose first write fails with EBUSY."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.busy_once: set[str] = set()

    def write(self, path: str, text: str) -> None:
        if path in self.busy_once:
            self.busy_once.discard(path)
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        self.writes.append((path, text))
        super().write(path, text)

    def rmdir(self, path: str) -> bool:
        p = Path(path)
        if p.is_dir():
            for f in p.iterdir():
                if f.is_file():
                    f.unlink()
        return super().rmdir(path)


@dataclass
class FakeTree:
    root: Path  # the cgroup mount root (pure v2)
    proc: Path  # the fake /proc
    own: Path  # our own cgroup in the fake tree
    fs: FakeFS = field(default_factory=FakeFS)


def build_fake_v2(base: Path, own_rel: str = "/user.slice/beep", memory: bool = True) -> FakeTree:
    """A pure-v2 tree: root with cgroup.controllers, our own cgroup with `memory` offered
    (or not), /proc/self/cgroup pointing at it, and PID 1 not systemd."""
    root = base / "cgroup"
    proc = base / "proc"
    own = root / own_rel.lstrip("/")
    own.mkdir(parents=True)
    ctrls = "cpuset cpu io memory pids" if memory else "cpu io pids"
    (root / "cgroup.controllers").write_text(ctrls + "\n")
    (own / "cgroup.controllers").write_text(ctrls + "\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(f"0::{own_rel}\n")
    (proc / "1").mkdir()
    (proc / "1" / "comm").write_text("init\n")
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nSwapFree: 0 kB\n")
    return FakeTree(root, proc, own)


@pytest.fixture
def fake_cgroup_v2(tmp_path):
    """Factory: make(own_rel="/user.slice/beep", memory=True) -> FakeTree."""

    def make(own_rel: str = "/user.slice/beep", memory: bool = True) -> FakeTree:
        return build_fake_v2(tmp_path / f"t{time.monotonic_ns()}", own_rel, memory)

    return make


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A private state dir (also for subprocesses, through $BEEP_AV_STATE_DIR)."""
    d = tmp_path / "state"
    monkeypatch.setenv("BEEP_AV_STATE_DIR", str(d))
    return d
