"""The state file of a show, and the cleanup of crashed shows' leftovers.

Everything a stage creates is recorded the moment it exists, in one JSON file per show
(`<state dir>/<show pid>.json`, atomic temp + rename): cgroup dirs, swapfiles and their
dirs, hogs with their identity (pid, psutil create time and command line) so that a
recycled pid is never killed. State dir: $BEEP_AV_STATE_DIR, else /run/beep-av (root),
else $XDG_RUNTIME_DIR/beep-av, else /tmp/beep-av-<uid>; it must be a directory of ours,
mode 0700, not a symlink (created so; anything else is refused: UnsafeStateDir).

`beep-av cleanup` trusts nothing a state file says. It removes only what a stage of ours
creates, and checks each item before it acts:
- a cgroup: named `beep-av-*`, a real cgroup directory under a cgroup or cgroup2 mount
  (/proc/self/mountinfo and statfs). Only hogs of ours inside it are killed (a
  `-m beep_av.hog` command line, our uid, its show gone); v2 `cgroup.kill` is used when
  every process in it is one of those;
- a swapfile: `beep-av-swap-*/swapfile`, a regular file of ours in a 0700 dir of ours
  (never a symlink or a device); swapoff before it is deleted;
- a hog: the recorded pid, started at the recorded time, running the recorded hog
  command line. A record without that identity (an older beep-av's "PID:START") is
  refused, not trusted.
Anything else is refused with one line naming it and why, and is not touched. A refused
item is dropped from the state file: it is not ours, so no later cleanup may act on it.
An item of ours that could not be removed yet (a busy cgroup, swapoff failing, a cgroup
holding a process that is not ours) stays in the state file for the next cleanup."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from beep_av import procfs
from beep_av.errors import CannotStage
from beep_av.hog import statfs_type
from beep_av.hogproc import HOG_MODULE
from beep_av.stages.base import Say
from beep_av.stages.swap import swap_active

KINDS = ("hog", "cgroup", "swapfile", "swapdir", "container")
CGROUP_PREFIX = "beep-av-"
SWAP_PREFIX = "beep-av-swap-"  # swap.Swapfile's mkdtemp prefix
SWAP_NAME = "swapfile"
# psutil's create time is boot time + start ticks; boot time (/proc/stat btime) moves
# with clock steps and may flicker by a second, so the same process may read slightly
# differently in the show and in a later cleanup
CREATE_TIME_SLACK = 1.0
_CGROUP_MAGIC = {0x27E0EB: "cgroup", 0x63677270: "cgroup2"}  # linux/magic.h
_lock = threading.Lock()


class UnsafeStateDir(CannotStage):
    """The state dir is not a private directory of ours: exit 3, the fix named."""


# ---------------------------------------------------------------- where


def state_dir() -> Path:
    """The directory of state files for this user."""
    env = os.environ.get("BEEP_AV_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/beep-av")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "beep-av"
    return Path(f"/tmp/beep-av-{os.getuid()}")


def private_dir_problem(st: os.stat_result, uid: int) -> str | None:
    """None when an lstat() result is a directory owned by `uid` with mode 0700; else why
    not. Pure."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not us (uid {uid})"
    if stat.S_IMODE(st.st_mode) & 0o777 != 0o700:
        return f"mode {stat.S_IMODE(st.st_mode) & 0o777:04o}, not 0700"
    return None


def open_state_dir(path: Path | str, create: bool = False) -> bool:
    """Check (and with `create`, make) a state dir: ours, mode 0700, not a symlink.
    A dir we create is made 0700 at once; one that was there before is never repaired
    (someone else may have had it). Returns False when it does not exist (and `create`
    is off). Raises UnsafeStateDir with the fix."""
    p = str(path)
    made = False
    if create:
        parent = os.path.dirname(p.rstrip("/")) or "/"
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(p, 0o700)
            made = True
        except FileExistsError:
            pass
    try:
        # O_NOFOLLOW: a symlink is refused, never followed; fstat then checks the dir we hold
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as e:
        try:  # O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a symlink too: tell them apart
            why = private_dir_problem(os.lstat(p), os.geteuid()) or e.strerror or str(e)
        except OSError:
            why = e.strerror or str(e)
        raise _unsafe(p, why) from None
    try:
        if made:
            os.fchmod(fd, 0o700)  # whatever the umask said
        problem = private_dir_problem(os.fstat(fd), os.geteuid())
    finally:
        os.close(fd)
    if problem:
        raise _unsafe(p, problem)
    return True


def _unsafe(path: str, why: str) -> UnsafeStateDir:
    return UnsafeStateDir(
        f"refused state dir {_show(path)}: {why}; beep-av keeps its state only in a private"
        " dir of its own (mode 0700): remove it if it is not yours, or set BEEP_AV_STATE_DIR"
        " (or XDG_RUNTIME_DIR) to one"
    )


def proc_start_time(pid: int, proc_root: str = "/proc") -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None.
    (A show's liveness; fake /proc trees in tests. Hogs are identified with psutil.)"""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            return procfs.parse_proc_stat(f.read().decode("utf-8", "replace")).starttime
    except (OSError, procfs.ParseError):
        return None


def _show(text: str, limit: int = 200) -> str:
    """`text` fit for one line of output: a planted name with a newline or an escape
    sequence is shown quoted, never printed raw."""
    s = text if text.isprintable() else repr(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ---------------------------------------------------------------- hog identity


@dataclass(frozen=True)
class HogRecord:
    """What the state file says about a hog."""

    pid: int
    create_time: float | None  # psutil's, seconds since the epoch; None: no identity
    cmdline: tuple[str, ...]  # as it was right after the spawn (maybe a wrapper's)


def hog_argv(cmdline: list[str] | tuple[str, ...]) -> tuple[str, ...] | None:
    """The hog part of a command line: from the interpreter before `-m beep_av.hog` to the
    end (a wrapper such as systemd-run before it is dropped), or None if it is no hog."""
    for i in range(1, len(cmdline) - 1):
        if cmdline[i] == "-m" and cmdline[i + 1] == HOG_MODULE:
            return tuple(cmdline[i - 1 :])
    return None


def hog_show_pid(argv: tuple[str, ...]) -> int:
    """The show a hog command line names (`--parent PID`), 0 when none."""
    for i, a in enumerate(argv[:-1]):
        if a == "--parent":
            try:
                return int(argv[i + 1])
            except ValueError:
                return 0
    return 0


def hog_value(pid: int, proc_root: str = "/proc") -> str:
    """The state value of a hog: its identity as JSON (pid, create_time, cmdline), read
    with psutil right after the spawn (Popen returns once the child has exec'd).
    `proc_root` is kept for callers; the identity always comes from the live system."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            ident = {"pid": pid, "create_time": p.create_time(), "cmdline": p.cmdline()}
    except psutil.Error:
        ident = {"pid": pid, "create_time": None, "cmdline": []}
    return json.dumps(ident, separators=(",", ":"))


def parse_hog_value(value: str) -> HogRecord | None:
    """A state value -> HogRecord. An older beep-av's "PID:START" gives a record with no
    identity (create_time None); anything unreadable gives None. Pure."""
    if re.fullmatch(r"\d{1,10}:\d{1,20}", value):
        return HogRecord(int(value.split(":")[0]), None, ())
    try:
        d = json.loads(value)
        pid = d["pid"]
        ct = d.get("create_time")
        cmd = d.get("cmdline") or []
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 31:
            return None
        if ct is not None and (isinstance(ct, bool) or not isinstance(ct, (int, float))):
            return None
        if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            return None
        return HogRecord(pid, float(ct) if ct is not None else None, tuple(cmd))
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None


def _settle(p: psutil.Process, timeout: float = 1.0) -> bool:
    """False when `p` is gone or a zombie (it holds no memory and has left its cgroup);
    True when it runs. A process mid-exit (its memory, and so its command line, already
    gone) is waited for up to `timeout` s; still so after that, it counts as running."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with p.oneshot():
                if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                    return False
                if p.cmdline() or time.monotonic() >= deadline:
                    return True
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True
        time.sleep(0.02)


def _describe(p: psutil.Process) -> str:
    """`1234 (sleep 600)` for a line of output."""
    try:
        cmd = " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        cmd = "?"
    return f"{p.pid} ({_show(cmd, 80)})"


def _hog_problem(p: psutil.Process) -> str | None:
    """None when `p` is a hog of ours whose show is gone, so ours to kill; else why not.
    psutil.NoSuchProcess when it is gone."""
    try:
        with p.oneshot():
            argv = hog_argv(p.cmdline())
            if argv is None:
                return "not a beep-av hog"
            uid = p.uids().real
            if uid != os.getuid():
                return f"a hog of uid {uid}, not ours"
            show = hog_show_pid(argv)
            # a hog exits when its parent is not the show it names (hog._arm), so while
            # its parent is that show, the show is running: it is that show's to end
            if show and p.ppid() == show:
                return f"a hog of show {show}, which is still running"
    except psutil.NoSuchProcess:
        raise
    except psutil.Error as e:
        return f"cannot inspect it ({type(e).__name__})"
    return None


# ---------------------------------------------------------------- recording


def _read_state_text(path: Path | str) -> str:
    """A state file's text; a symlink or anything but a regular file of ours: OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "not a regular file of ours")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


class StateFile:
    """The state file of one show (default: this process)."""

    def __init__(self, directory: Path | str | None = None, show_pid: int | None = None):
        self.dir = Path(directory) if directory else state_dir()
        self.show_pid = show_pid or os.getpid()
        self.path = self.dir / f"{self.show_pid}.json"

    def ensure(self) -> None:
        """Make (or check) the state dir before anything is created that it must list.
        Raises UnsafeStateDir."""
        open_state_dir(self.dir, create=True)

    def load(self) -> dict:
        try:
            data = json.loads(_read_state_text(self.path))
            if isinstance(data, dict) and isinstance(data.get("items"), list):
                return data
        except (OSError, ValueError):
            pass
        return {
            "show_pid": self.show_pid,
            "show_start": proc_start_time(self.show_pid),
            "items": [],
        }

    def _save(self, data: dict) -> None:
        if not data["items"]:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return
        self.ensure()
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def record(self, kind: str, value: str) -> None:
        """Add one created thing (kind in KINDS)."""
        if kind not in KINDS:
            raise ValueError(f"unknown state kind {kind!r}")
        with _lock:
            data = self.load()
            data["items"].append({"kind": kind, "value": str(value)})
            self._save(data)

    def forget(self, kind: str, value: str) -> None:
        """Remove one thing once it is gone; the file goes with its last item."""
        with _lock:
            data = self.load()
            data["items"] = [
                i
                for i in data["items"]
                if not (i.get("kind") == kind and i.get("value") == str(value))
            ]
            self._save(data)


def record(kind: str, value: str) -> None:
    """Record a created thing in this process's state file."""
    StateFile().record(kind, value)


# ---------------------------------------------------------------- leftovers


@dataclass(frozen=True)
class Leftover:
    """A state file whose show is dead."""

    path: str
    show_pid: int
    items: tuple[tuple[str, str], ...]  # (kind, value) in creation order


def _show_alive(pid: int, start: int | None, proc_root: str) -> bool:
    now = proc_start_time(pid, proc_root)
    return now is not None and (start is None or now == start)


def _scan(d: Path, proc_root: str) -> tuple[list[Leftover], list[str]]:
    """(leftovers, refusals) of a state dir that passed its checks."""
    out, refused = [], []
    for p in sorted(d.glob("*.json")):
        try:
            text = _read_state_text(p)
        except OSError as e:
            if not isinstance(e, FileNotFoundError):
                refused.append(f"refused state file {_show(str(p))}: {e.strerror or e}")
            continue
        try:
            data = json.loads(text)
            pid = int(data["show_pid"])
            items = tuple((str(i["kind"]), str(i["value"])) for i in data["items"])
        except (ValueError, KeyError, TypeError):
            try:
                pid = int(p.stem)
            except ValueError:
                continue
            items = ()  # unreadable: still a leftover file to delete once the show is dead
            data = {}
        start = data.get("show_start") if isinstance(data, dict) else None
        if _show_alive(pid, start if isinstance(start, int) else None, proc_root):
            continue
        out.append(Leftover(str(p), pid, items))
    return out, refused


def find_leftovers(directory: Path | str | None = None, proc_root: str = "/proc") -> list[Leftover]:
    """State files whose show pid is dead (or recycled by another process). A state dir
    that is not ours: UnsafeStateDir."""
    d = Path(directory) if directory else state_dir()
    if not open_state_dir(d):
        return []
    return _scan(d, proc_root)[0]


# ---------------------------------------------------------------- checks


def _norm_abs(path: str) -> bool:
    return os.path.isabs(path) and os.path.normpath(path) == path and "\0" not in path


def cgroup_problem(path: str, mountinfo: str) -> str | None:
    """None when `path` (absolute, symlinks resolved) may be a stage cgroup of ours by its
    name and place: basename `beep-av-*`, on a cgroup or cgroup2 mount (not its root).
    Pure: the mountinfo is text."""
    if not _norm_abs(path):
        return "not an absolute, normalized path"
    if not os.path.basename(path).startswith(CGROUP_PREFIX):
        return f"not named {CGROUP_PREFIX}*"
    m = procfs.mount_of(procfs.parse_mountinfo(mountinfo), path)
    if m is None:
        return "no mount holds it"
    if m.fstype not in ("cgroup", "cgroup2"):
        return f"not under a cgroup mount ({m.fstype} at {_show(m.mount_point)})"
    if (m.mount_point.rstrip("/") or "/") == path:
        return "it is a cgroup mount's root"
    return None


def check_cgroup(path: str, proc_root: str = "/proc") -> tuple[str, str | None]:
    """(the real path, None) when `path` is a stage cgroup of ours to act on, else
    (path, why not): name and mount (cgroup_problem), and a real cgroup directory
    (not a symlink, cgroup.procs there, a cgroup filesystem by statfs)."""
    if not _norm_abs(path):
        return path, "not an absolute, normalized path"
    real = os.path.realpath(path)
    try:
        mountinfo = Path(proc_root, "self", "mountinfo").read_text()
    except OSError as e:
        return real, f"cannot read the mount table ({e.strerror})"
    problem = cgroup_problem(real, mountinfo)
    if problem:
        return real, problem
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return real, None  # already gone: nothing to do
    except OSError as e:
        return real, e.strerror or str(e)
    if not stat.S_ISDIR(st.st_mode):
        return real, "not a directory"
    try:
        kind = _CGROUP_MAGIC.get(statfs_type(real) & 0xFFFFFFFF)
    except OSError as e:
        return real, f"cannot check its filesystem ({e.strerror})"
    if kind is None or not os.path.isfile(os.path.join(real, "cgroup.procs")):
        return real, "not a cgroup directory"
    return real, None


def swap_path_problem(path: str, kind: str) -> str | None:
    """None when `path` has the shape of a swapfile ("swapfile") or swap dir ("swapdir")
    that swap.Swapfile makes: <base>/beep-av-swap-*/swapfile. Pure."""
    if not _norm_abs(path):
        return "not an absolute, normalized path"
    if kind == "swapfile":
        ok = os.path.basename(path) == SWAP_NAME
        ok = ok and os.path.basename(os.path.dirname(path)).startswith(SWAP_PREFIX)
        return None if ok else f"not a beep-av swapfile ({SWAP_PREFIX}*/{SWAP_NAME})"
    if not os.path.basename(path).startswith(SWAP_PREFIX):
        return f"not a beep-av swap dir ({SWAP_PREFIX}*)"
    return None


def _swap_dir_problem(d: str) -> str | None:
    """The swap dir must be a real 0700 dir of ours (mkdtemp's)."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror or str(e)
    return private_dir_problem(st, os.geteuid())


def file_problem(st: os.stat_result, uid: int) -> str | None:
    """None when an lstat() result is a regular file owned by `uid`. Pure."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink, not a file beep-av made"
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return "a device, not a file beep-av made"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not us (uid {uid})"
    return None


# ---------------------------------------------------------------- removing


def _wait_gone(procs: list[psutil.Process], timeout: float = 2.0) -> None:
    """Until each is gone or a zombie (a zombie holds no memory and has left its cgroup)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)


def _members(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split() if x.isdigit()]
    except (OSError, ValueError):
        return []


def kill_members(path: str) -> int:
    """SIGKILL the hogs this process spawned that are in a stage cgroup of ours (its
    cgroup.procs): only a hog ever goes there, and this catches one whose handle was lost
    (a signal in the middle of spawning it). Anything else in it is left alone. Returns
    how many were signalled."""
    n = 0
    for pid in _members(path):
        if pid == os.getpid():
            continue
        try:
            p = psutil.Process(pid)
            argv = hog_argv(p.cmdline())
            if argv is None or hog_show_pid(argv) != os.getpid():
                continue
            p.kill()  # psutil refuses a pid reused since Process() was made
            n += 1
        except psutil.Error:
            pass
    return n


def rmdir_cgroup(path: str, tries: int = 50, delay: float = 0.05) -> bool:
    """rmdir a stage cgroup of this show, killing its hogs left inside and retrying while
    it is busy (tasks still exiting). True when gone."""
    for _ in range(tries):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN):
                return False
        kill_members(path)
        time.sleep(delay)
    return False


@dataclass
class CleanupResult:
    """What a cleanup did: items removed; lines for what it refused (not ours, untouched,
    dropped from the state file) and for what of ours it kept (still listed, for a retry)."""

    removed: int = 0
    refused: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.refused and not self.kept


class _Cleaner:
    """One cleanup run: each item checked, then acted on; every outcome said once."""

    def __init__(self, say: Say, refuse: Say, proc_root: str) -> None:
        self.say, self._refuse, self.proc_root = say, refuse, proc_root
        self.result = CleanupResult()

    def container(self, value: str) -> bool:
        return _container(self, value)

    def refuse(self, line: str) -> None:
        self.result.refused.append(line)
        self._refuse(f"cleanup: {line}")

    def keep(self, line: str) -> None:
        self.result.kept.append(line)
        self._refuse(f"cleanup: {line}")

    # ---- hogs: (done, keep) -> done True: out of the state file

    def hog(self, value: str) -> bool:
        """A recorded hog: killed only if it is the recorded process and a hog of ours."""
        rec = parse_hog_value(value)
        if rec is None:
            self.refuse(f"refused hog record {_show(value, 80)}: unreadable")
            return True
        try:
            p = psutil.Process(rec.pid)
            now = p.create_time()
        except psutil.NoSuchProcess:
            return True  # gone
        except psutil.Error as e:
            self.refuse(f"refused hog {rec.pid}: cannot inspect it ({type(e).__name__})")
            return True
        if not _settle(p):
            return True  # gone, or a zombie: nothing left to kill
        who = _describe(p)
        if rec.create_time is None:
            self.refuse(
                f"refused hog {who}: its record has no process identity (start time and"
                " command line; an older beep-av wrote it), so it is not trusted"
            )
            return True
        if abs(now - rec.create_time) > CREATE_TIME_SLACK:
            self.refuse(
                f"refused hog {who}: started at {_clock(now)}, not at the recorded"
                f" {_clock(rec.create_time)} (the pid was reused)"
            )
            return True
        try:
            current = hog_argv(p.cmdline())
        except psutil.Error as e:
            self.refuse(f"refused hog {who}: cannot read its command line ({type(e).__name__})")
            return True
        recorded = hog_argv(rec.cmdline)
        if recorded is None:
            self.refuse(f"refused hog {who}: the recorded command line is not a beep-av hog")
            return True
        if current != recorded:
            why = "not a beep-av hog" if current is None else "not the recorded hog"
            self.refuse(f"refused hog {who}: {why} (its command line differs from the record)")
            return True
        try:
            problem = _hog_problem(p)
        except psutil.NoSuchProcess:
            return True
        if problem:
            self.refuse(f"refused hog {who}: {problem}")
            return True
        try:
            p.kill()  # psutil checks the pid was not reused since Process() above
        except psutil.NoSuchProcess:
            return True
        except psutil.Error as e:
            self.keep(f"could not kill hog {who}: {type(e).__name__}")
            return False
        _wait_gone([p])
        self.say(f"cleanup: killed leftover hog {rec.pid}")
        self.result.removed += 1
        return True

    # ---- cgroups

    def cgroup(self, value: str) -> bool:
        real, problem = check_cgroup(value, self.proc_root)
        name = _show(value)
        if problem:
            self.refuse(f"refused cgroup {name}: {problem}")
            return True
        if not os.path.isdir(real):
            return True  # gone
        hogs: list[psutil.Process] = []
        foreign = []
        for pid in _members(real):
            if pid == os.getpid():
                foreign.append(pid)
                self.refuse(f"refused pid {pid} (beep-av cleanup itself) in cgroup {name}")
                continue
            try:
                p = psutil.Process(pid)
                if not _settle(p):
                    continue  # leaving (a hog that died with its show)
                why = _hog_problem(p)
            except psutil.NoSuchProcess:
                continue
            except psutil.Error as e:
                foreign.append(pid)
                self.refuse(
                    f"refused pid {pid} in cgroup {name}: cannot inspect it ({type(e).__name__})"
                )
                continue
            if why:
                foreign.append(pid)
                self.refuse(f"refused pid {_describe(p)} in cgroup {name}: {why}; left running")
            else:
                hogs.append(p)
        killed, how = self._kill(real, hogs, use_cgroup_kill=not foreign)
        for pid in killed:
            self.say(f"cleanup: killed leftover hog {pid} in cgroup {name}{how}")
        if foreign:
            self.keep(
                f"kept cgroup {name}: it holds {len(foreign)} process(es) that are not ours"
                " (named above); it stays listed for the next cleanup"
            )
            return False
        for _ in range(50):
            try:
                os.rmdir(real)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN):
                    self.keep(f"could not remove cgroup {name}: {e.strerror}")
                    return False
                time.sleep(0.05)
        else:
            self.keep(f"could not remove cgroup {name}: still busy; try again")
            return False
        self.say(f"cleanup: removed cgroup {name}")
        self.result.removed += 1
        return True

    @staticmethod
    def _kill(
        path: str, hogs: list[psutil.Process], use_cgroup_kill: bool
    ) -> tuple[list[int], str]:
        """Kill hogs already checked: v2 `cgroup.kill` when every process in the cgroup is
        one of them and it has no child cgroups (it kills the whole subtree), else each by
        pid through psutil (which refuses a pid reused since the check). Returns the pids
        killed and how (" (cgroup.kill)" or "")."""
        if not hogs:
            return [], ""
        kill_file = os.path.join(path, "cgroup.kill")
        if use_cgroup_kill and os.path.isfile(kill_file) and not _has_children(path):
            try:
                fd = os.open(kill_file, os.O_WRONLY)
                try:
                    os.write(fd, b"1")
                finally:
                    os.close(fd)
                _wait_gone(hogs)
                return [p.pid for p in hogs], " (cgroup.kill)"
            except OSError:
                pass  # fall back to one by one
        killed = []
        for p in hogs:
            try:
                p.kill()
                killed.append(p.pid)
            except psutil.Error:
                pass
        _wait_gone(hogs)
        return killed, ""

    # ---- swap

    def swapfile(self, value: str) -> bool:
        name = _show(value)
        problem = swap_path_problem(value, "swapfile")
        if problem is None:
            problem = _swap_dir_problem(os.path.dirname(value))
            problem = f"its dir is {problem}" if problem else None
        if problem is None:
            try:
                problem = file_problem(os.lstat(value), os.geteuid())
            except FileNotFoundError:
                if not swap_active(value, self.proc_root):
                    return True  # gone
                problem = "listed as active swap, but no such file"
            except OSError as e:
                problem = e.strerror or str(e)
        if problem:
            self.refuse(f"refused swapfile {name}: {problem}")
            return True
        if swap_active(value, self.proc_root):
            subprocess.run(["swapoff", value], capture_output=True, timeout=300)
            if swap_active(value, self.proc_root):
                # never delete an active swapfile: its blocks are still the kernel's
                self.keep(f"could not swapoff {name}; it stays listed")
                return False
        try:
            os.unlink(value)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.keep(f"could not delete swapfile {name}: {e.strerror}")
            return False
        self.say(f"cleanup: removed swapfile {name}")
        self.result.removed += 1
        return True

    def swapdir(self, value: str) -> bool:
        name = _show(value)
        problem = swap_path_problem(value, "swapdir") or _swap_dir_problem(value)
        if problem:
            self.refuse(f"refused swap dir {name}: {problem}")
            return True
        try:
            os.rmdir(value)
        except FileNotFoundError:
            return True
        except OSError as e:
            self.keep(f"could not remove swap dir {name}: {e.strerror}")
            return False
        self.result.removed += 1
        return True


def container_value(engine: str, base_url: str, name: str) -> str:
    """The state file's value for a container of the container stage: ENGINE|URL|NAME."""
    return f"{engine}|{base_url}|{name}"


def parse_container_value(value: str) -> tuple[str, str, str] | None:
    parts = value.split("|")
    if len(parts) != 3 or not parts[2].startswith(CGROUP_PREFIX):
        return None
    return parts[0], parts[1], parts[2]


def _container(c: _Cleaner, value: str) -> bool:
    """A recorded container: removed only if the engine names it beep-av-* and it
    carries our label beep-av=1. An engine that does not answer: kept for a retry."""
    rec = parse_container_value(value)
    if rec is None:
        c.refuse(f"refused container record {_show(value, 80)}: unreadable")
        return True
    engine, base_url, name = rec
    if not base_url.startswith("unix://"):
        c.refuse(f"refused container record {_show(value, 80)}: not a local socket")
        return True
    try:
        import docker

        client = docker.DockerClient(base_url=base_url, version="auto", timeout=30)
    except Exception as e:
        c.keep(
            f"kept container {name}: {engine} at {base_url} does not answer ({type(e).__name__})"
        )
        return False
    try:
        try:
            ctr = client.containers.get(name)
        except docker.errors.NotFound:
            return True  # never created, or gone already
        except Exception as e:
            c.keep(f"kept container {name}: {engine} does not answer ({type(e).__name__})")
            return False
        labels = (ctr.attrs.get("Config") or {}).get("Labels") or {}
        if not ctr.name.startswith(CGROUP_PREFIX) or labels.get("beep-av") != "1":
            c.refuse(f"refused container {_show(ctr.name, 80)}: not labelled beep-av=1 by us")
            return True
        try:
            ctr.remove(force=True, v=True)
        except docker.errors.NotFound:
            return True
        except Exception as e:
            c.keep(f"kept container {name}: {type(e).__name__}")
            return False
        c.result.removed += 1
        c.say(f"cleanup: removed container {name} ({engine})")
        return True
    finally:
        client.close()


def _has_children(path: str) -> bool:
    try:
        return any(e.is_dir(follow_symlinks=False) for e in os.scandir(path))
    except OSError:
        return True


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 100) % 100:02d}"


def run_cleanup(
    say: Say,
    directory: Path | str | None = None,
    proc_root: str = "/proc",
    refuse: Say | None = None,
) -> CleanupResult:
    """Remove every leftover of dead shows that passes its checks (module doc): kill their
    hogs, rmdir their cgroups, swapoff and delete their swapfiles and dirs, delete their
    state files. `say` gets what was done, `refuse` (default `say`) one line for each
    refused or kept item. A state dir that is not ours: UnsafeStateDir, nothing read."""
    d = Path(directory) if directory else state_dir()
    c = _Cleaner(say, refuse or say, proc_root)
    if not open_state_dir(d):
        return c.result
    leftovers, refused = _scan(d, proc_root)
    for line in refused:
        c.refuse(line)
    act: dict[str, Callable[[str], bool]] = {
        "hog": c.hog,
        "cgroup": c.cgroup,
        "swapfile": c.swapfile,
        "swapdir": c.swapdir,
        "container": c.container,
    }
    for lo in leftovers:
        left: list[tuple[str, str]] = []
        by_kind = {k: [v for kk, v in lo.items if kk == k] for k in KINDS}
        for k in lo.items:
            if k[0] not in KINDS:
                c.refuse(f"refused {_show(k[0], 40)} record {_show(k[1], 80)}: unknown kind")
        # hogs first; children were created after their parents: cgroups in reverse order
        order = [
            ("container", by_kind["container"]),
            ("hog", by_kind["hog"]),
            ("cgroup", list(reversed(by_kind["cgroup"]))),
            ("swapfile", by_kind["swapfile"]),
            ("swapdir", by_kind["swapdir"]),
        ]
        for kind, values in order:
            for v in values:
                if not act[kind](v):
                    left.append((kind, v))
        p = Path(lo.path)
        if left:
            sf = StateFile(p.parent, lo.show_pid)
            data = sf.load()
            data["items"] = [{"kind": k, "value": v} for k, v in left]
            sf._save(data)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return c.result


def cleanup(say: Say, directory: Path | str | None = None, proc_root: str = "/proc") -> int:
    """run_cleanup, for callers that only want how many items were removed."""
    return run_cleanup(say, directory, proc_root).removed
