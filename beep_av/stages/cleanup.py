"""The state file of a show, and the cleanup of crashed shows' leftovers.

Everything a stage creates is recorded the moment it exists, in one JSON file per show
(`<state dir>/<show pid>.json`, atomic temp + rename): cgroup dirs, swapfiles and their
dirs, hog pids with their start time (field 22 of /proc/<pid>/stat) so that a recycled
pid is never killed. State dir: $BEEP_AV_STATE_DIR, else /run/beep-av (root), else
$XDG_RUNTIME_DIR/beep-av, else /tmp/beep-av-<uid>."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from beep_av.stages.base import Say

KINDS = ("hog", "cgroup", "swapfile", "swapdir")
_lock = threading.Lock()

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


def proc_start_time(pid: int, proc_root: str = "/proc") -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # the name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = text[text.rfind(")") + 2 :].split()
    try:
        return int(rest[19])  # field 22 is the 20th after the name
    except (IndexError, ValueError):
        return None


def _cmdline(pid: int, proc_root: str = "/proc") -> list[str]:
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


# ---------------------------------------------------------------- recording


class StateFile:
    """The state file of one show (default: this process)."""

    def __init__(self, directory: Path | str | None = None, show_pid: int | None = None):
        self.dir = Path(directory) if directory else state_dir()
        self.show_pid = show_pid or os.getpid()
        self.path = self.dir / f"{self.show_pid}.json"

    def load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
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
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
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


def hog_value(pid: int, proc_root: str = "/proc") -> str:
    """The state value of a hog: "PID:STARTTIME"."""
    return f"{pid}:{proc_start_time(pid, proc_root) or 0}"


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


def find_leftovers(directory: Path | str | None = None, proc_root: str = "/proc") -> list[Leftover]:
    """State files whose show pid is dead (or recycled by another process)."""
    d = Path(directory) if directory else state_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text())
            pid = int(data["show_pid"])
            items = tuple((str(i["kind"]), str(i["value"])) for i in data["items"])
        except (OSError, ValueError, KeyError, TypeError):
            try:
                pid = int(p.stem)
            except ValueError:
                continue
            items = ()  # unreadable: still a leftover file to delete once the show is dead
            data = {}
        if _show_alive(pid, data.get("show_start"), proc_root):
            continue
        out.append(Leftover(str(p), pid, items))
    return out


def _kill_hog(value: str, say: Say, proc_root: str) -> bool:
    try:
        pid_s, start_s = value.split(":")
        pid, start = int(pid_s), int(start_s)
    except ValueError:
        return False
    now = proc_start_time(pid, proc_root)
    if now is None:
        return True  # already gone
    # a recycled pid belongs to someone else: same start time and our cmdline, or hands off
    if now != start or "beep_av.hog" not in _cmdline(pid, proc_root):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        if proc_start_time(pid, proc_root) is None:
            break
        st = _state(pid, proc_root)
        if st == "Z":  # a zombie holds no memory and leaves the cgroup
            break
        time.sleep(0.02)
    say(f"cleanup: killed leftover hog {pid}")
    return True


def _state(pid: int, proc_root: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return text[text.rfind(")") + 2 :].split()[0]
    except (OSError, IndexError):
        return ""


def kill_members(path: str) -> int:
    """SIGKILL every process in a stage cgroup of ours (its cgroup.procs). Only the hog
    ever goes there; this catches a hog whose handle was lost (a signal in the middle of
    spawning it). Returns how many were signalled."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split() if x.isdigit()]
    except (OSError, ValueError):
        return 0
    n = 0
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    return n


def rmdir_cgroup(path: str, tries: int = 50, delay: float = 0.05) -> bool:
    """rmdir a stage cgroup, killing what is left inside and retrying while it is busy
    (tasks still exiting). True when gone."""
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


def _swapoff(path: str, proc_root: str) -> bool:
    from beep_av.stages.swap import swap_active

    if swap_active(path, proc_root):
        subprocess.run(["swapoff", path], capture_output=True, timeout=300)
        if swap_active(path, proc_root):
            return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def cleanup(say: Say, directory: Path | str | None = None, proc_root: str = "/proc") -> int:
    """Remove every leftover of dead shows: kill their hogs (verified by start time and
    cmdline), rmdir their cgroups, swapoff and delete their swapfiles and dirs, delete
    their state files. Returns how many items were removed."""
    removed = 0
    for lo in find_leftovers(directory, proc_root):
        left: list[tuple[str, str]] = []
        by_kind = {k: [v for kk, v in lo.items if kk == k] for k in KINDS}
        for v in by_kind["hog"]:
            if _kill_hog(v, say, proc_root):
                removed += 1
            else:
                left.append(("hog", v))
        # children were created after their parents: remove in reverse order
        for v in reversed(by_kind["cgroup"]):
            if rmdir_cgroup(v):
                removed += 1
                say(f"cleanup: removed cgroup {v}")
            else:
                left.append(("cgroup", v))
        for v in by_kind["swapfile"]:
            if _swapoff(v, proc_root):
                removed += 1
                say(f"cleanup: removed swapfile {v}")
            else:
                left.append(("swapfile", v))
        for v in by_kind["swapdir"]:
            try:
                os.rmdir(v)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(("swapdir", v))
                continue
            removed += 1
        p = Path(lo.path)
        if left:
            sf = StateFile(p.parent, lo.show_pid)
            data = sf.load()
            data["items"] = [{"kind": k, "value": v} for k, v in left]
            sf._save(data)
            say(f"cleanup: {len(left)} item(s) of show {lo.show_pid} could not be removed yet")
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return removed
