"""Swap for a stage: `--swap auto|off|SIZE`.

auto: use existing swap when enough is free; else, as root, provision a temporary
swapfile (a private 0700 dir on a disk filesystem, 0600, mkswap, swapon); else no swap.
A provisioned swapfile is always swapoff'ed, then deleted with its dir."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from beep_av import interrupt
from beep_av.config import format_mib
from beep_av.errors import CannotStage
from beep_av.hog import disk_fs_problem
from beep_av.procfs import ParseError, meminfo_bytes, parse_swaps
from beep_av.stages.base import Say
from beep_av.tunables import auto_swap_size

MiB = 1 << 20
ALLOC_CHUNK = 64 * MiB  # the swapfile is allocated in chunks: a signal is seen within one
ZEROS_SYNC_MIB = 16  # without fallocate: written 1 MiB at a time, synced every 16 MiB
SWAP_DIR = "/var/tmp"
DISK_MARGIN = 256 * MiB  # leave this much free disk after the swapfile

# ---------------------------------------------------------------- filesystem checks


def free_disk(path: str) -> int:
    """Bytes an unprivileged user may still write under `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------- existing swap


def free_swap(proc_root: str = "/proc") -> int:
    """Free swap on the machine, bytes (SwapFree of meminfo); 0 when unreadable."""
    try:
        with open(os.path.join(proc_root, "meminfo"), "rb") as f:
            return meminfo_bytes(f.read(), "SwapFree") or 0
    except (OSError, ParseError):
        return 0


def swap_active(path: str, proc_root: str = "/proc") -> bool:
    """Is `path` listed in /proc/swaps?"""
    try:
        with open(os.path.join(proc_root, "swaps")) as f:
            text = f.read()
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(s.filename in (path, real) for s in parse_swaps(text))


# ---------------------------------------------------------------- the swapfile

Run = Callable[..., subprocess.CompletedProcess]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


class Swapfile:
    """A temporary swapfile in its own private dir. `record(kind, path)` is called just
    before each thing is created (the state file), so a crash at any line leaves it
    listed for cleanup (which takes a listed thing that is not there as done);
    `forget(kind, path)` once a failed or interrupted creation has removed it again."""

    def __init__(self, path: str, dir: str, proc_root: str = "/proc", run: Run = _run):
        self.path = path
        self.dir = dir
        self.proc_root = proc_root
        self.run = run
        self.active = False

    @classmethod
    def create(
        cls,
        size: int,
        say: Say,
        record: Callable[[str, str], None] = lambda kind, value: None,
        base_dir: str = SWAP_DIR,
        proc_root: str = "/proc",
        run: Run = _run,
        forget: Callable[[str, str], None] = lambda kind, value: None,
    ) -> Swapfile:
        """Provision, format and enable a swapfile of `size` bytes. Raises CannotStage,
        or Interrupted when SIGINT, SIGTERM or SIGHUP comes (checked between chunks of
        the write and between its steps); either way nothing of it is left."""
        size = max(MiB, size // MiB * MiB)
        problem = disk_fs_problem(base_dir)
        if problem:
            raise CannotStage(f"swapfile: {base_dir} is not on disk ({problem}); use --swap off")
        for tool in ("mkswap", "swapon", "swapoff"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                raise CannotStage(
                    f"swapfile: {tool} not found; install util-linux or use --swap off"
                )
        avail = free_disk(base_dir)
        if avail < size + DISK_MARGIN:
            raise CannotStage(
                f"swapfile: {base_dir} has {format_mib(avail)} free, {format_mib(size + DISK_MARGIN)}"
                " needed; free disk space or use a smaller --swap (or --swap off)"
            )
        d = _make_private_dir(base_dir, "beep-av-swap-", record, forget, size)
        self = cls(os.path.join(d, "swapfile"), d, proc_root, run)
        record("swapfile", self.path)  # before the open that creates it
        try:
            self._provision(size)
        except BaseException as e:
            self.remove()
            forget("swapfile", self.path)
            forget("swapdir", self.dir)
            if isinstance(e, OSError):  # disk full (or inodes, or quota) mid-write
                raise _disk_error(base_dir, size, e) from None
            raise
        say(f"swap: {format_mib(size)} swapfile {self.path} enabled (removed at exit)")
        return self

    def _provision(self, size: int) -> None:
        """Allocate, format and enable. OSError when the disk refuses (ENOSPC...);
        Interrupted on an ending signal, seen within one chunk of the write."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # before mkswap: swapon warns about (and leaks) other modes
            try:
                for off in range(0, size, ALLOC_CHUNK):
                    interrupt.check()
                    os.posix_fallocate(fd, off, min(ALLOC_CHUNK, size - off))
            except OSError:
                # some filesystems refuse fallocate (or give holes swapon rejects): zeros,
                # synced every few MiB so that no fsync (the last one too) is long
                os.ftruncate(fd, 0)
                zeros = bytes(MiB)
                for i in range(size // MiB):
                    interrupt.check()
                    if i and i % ZEROS_SYNC_MIB == 0:
                        os.fdatasync(fd)
                    _write_all(fd, zeros)
            interrupt.check()
            os.fsync(fd)
        finally:
            os.close(fd)
        for argv in (["mkswap", self.path], ["swapon", self.path]):
            interrupt.check()  # each runs to its end (milliseconds): swapon is recorded
            r = self.run(argv)
            if argv[0] == "swapon" and r.returncode == 0:
                self.active = True
            # a Ctrl-C reaches these children too: the signal is the news, not their end
            interrupt.check()
            if r.returncode != 0:
                msg = (r.stderr or r.stdout or "").strip().splitlines()
                raise CannotStage(
                    f"swapfile: {' '.join(argv)} failed ({msg[-1] if msg else r.returncode});"
                    " run as root on a disk filesystem, or use --swap off"
                )

    def remove(self) -> None:
        """swapoff (when listed in /proc/swaps), delete the file, then its dir. Idempotent."""
        if self.active or swap_active(self.path, self.proc_root):
            r = self.run(["swapoff", self.path])
            if r.returncode != 0 and swap_active(self.path, self.proc_root):
                # never delete an active swapfile: its blocks are still the kernel's
                raise OSError(f"swapoff {self.path} failed: {(r.stderr or '').strip()}")
            self.active = False
        for fn in (os.unlink, os.rmdir):
            target = self.path if fn is os.unlink else self.dir
            try:
                fn(target)
            except FileNotFoundError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _make_private_dir(
    base_dir: str,
    prefix: str,
    record: Callable[[str, str], None],
    forget: Callable[[str, str], None],
    size: int,
) -> str:
    """mkdtemp's private dir (0700, a fresh random name), but listed as a "swapdir" in
    the state file before the mkdir that makes it. Raises CannotStage."""
    for _ in range(100):
        d = os.path.join(base_dir, prefix + secrets.token_hex(4))
        record("swapdir", d)
        try:
            os.mkdir(d, 0o700)
            return d
        except FileExistsError:
            forget("swapdir", d)
            continue
        except OSError as e:
            forget("swapdir", d)
            raise _disk_error(base_dir, size, e) from None
    raise CannotStage(f"swapfile: no free name for a private dir under {base_dir}")


def _disk_error(base_dir: str, size: int, e: OSError) -> CannotStage:
    """A swapfile write the disk refused (ENOSPC, EDQUOT, EROFS...), with the fix."""
    return CannotStage(
        f"swapfile: cannot write {format_mib(size)} under {base_dir} ({e.strerror or e});"
        " free disk space or use a smaller --swap (or --swap off)"
    )


# ---------------------------------------------------------------- the policy


@dataclass(frozen=True)
class SwapChoice:
    """What a stage gets: `limit` bytes of swap (0: none), maybe a swapfile to make."""

    limit: int
    provision: int  # bytes of swapfile to create (0: none)
    note: str  # one line for the user


auto_size = auto_swap_size  # the one formula (tunables.py), the rehearsal's too


def choose_swap(mode: str | int, ram: int, free: int, is_root: bool) -> SwapChoice:
    """Pure policy. `mode`: "auto", "off", or bytes; `free`: free swap on the machine."""
    if mode == "off" or mode == 0:
        return SwapChoice(0, 0, "swap: off (no swapping act)")
    if mode == "auto":
        want = auto_size(ram)
        if free >= want:
            return SwapChoice(want, 0, f"swap: using {format_mib(want)} of the existing swap")
        if is_root:
            return SwapChoice(want, want, f"swap: provisioning a {format_mib(want)} swapfile")
        return SwapChoice(0, 0, "swap: none free and not root, so no swapping act (--swap off)")
    if not isinstance(mode, int) or mode < 0:
        raise ValueError(f"bad swap mode {mode!r}")
    if free >= mode:
        return SwapChoice(mode, 0, f"swap: using {format_mib(mode)} of the existing swap")
    if is_root:
        return SwapChoice(mode, mode, f"swap: provisioning a {format_mib(mode)} swapfile")
    raise CannotStage(
        f"--swap {format_mib(mode)}: only {format_mib(free)} of swap is free and creating a"
        " swapfile needs root; run as root, add swap, or use --swap auto/off"
    )


def parse_swap_mode(text: str | int) -> str | int:
    """ "auto" | "off" | SIZE -> "auto" | "off" | bytes."""
    if isinstance(text, int):
        return text
    t = text.strip().lower()
    if t in ("auto", "off"):
        return t
    from beep_av.config import parse_size

    return parse_size(text, None, "--swap")
