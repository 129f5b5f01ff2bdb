"""The host stage: no sandbox. The hog fills the memory domain beep-av itself lives in,
exactly like the original TTY demo.

The domain is the tightest memory limit of beep-av's own cgroup and its ancestors (a
container, a pod, a systemd slice; v1 `memory.limit_in_bytes` + `memory.memsw.*`, v2
`memory.max` + `memory.swap.max`), otherwise the whole machine (MemTotal, SwapTotal).
Nothing is created: no cgroup, no swapfile (the domain's swap is what it is). The hog
runs with oom_score_adj 1000 so the kernel's choice falls on it; the show tries to lower
its own score and says so when it cannot, and keeps a few MiB of room in the domain in a
ballast process that exits the moment the OOM killer is invoked (Ballast). Because it
fills a real domain, the stage states the domain and its size and needs `--yes` or an
interactive yes first.

/proc and the cgroup root are constructor parameters so tests run on fake trees."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beep_av.config import format_mib
from beep_av.errors import BadInput, CannotStage
from beep_av.procfs import ParseError, parse_limit, parse_meminfo, parse_proc_cgroup
from beep_av.stages.base import HogStage, Say, Source, StageFiles, memory_files
from beep_av.stages.swap import SWAP_DIR
from beep_av.tunables import MIN_STAGE_RAM as MIN_RAM
from beep_av.tunables import STORY_SECONDS

MiB = 1 << 20
UNLIMITED = 1 << 62  # v1 reports "no limit" as PAGE_COUNTER_MAX pages (~2^63 bytes)
AUTO_CACHE_MAX = 256 * MiB  # auto cache: a quarter of the domain, at most this
MIN_AUTO_RATE = 8 * MiB
SHOW_OOM_SCORE_ADJ = -500  # what the show asks for itself (earlyoom asks -100)

# ---------------------------------------------------------------- the domain


@dataclass(frozen=True)
class Domain:
    """The memory domain the hog will fill. Bytes."""

    version: int  # 1 or 2: a cgroup limit; 0: the whole machine
    cgroup_dir: str | None  # the limiting cgroup's directory (version 1 or 2)
    cgroup_path: str | None  # its path inside the hierarchy, e.g. "/kubepods/pod1"
    ram_limit: int
    swap_limit: int

    def describe(self) -> str:
        """'cgroup /x/y (256 MiB + 128 MiB swap)' or 'the whole machine (24576 MiB, no swap)'."""
        swap = f" + {format_mib(self.swap_limit)} swap" if self.swap_limit else ", no swap"
        where = f"cgroup {self.cgroup_path}" if self.version else "the whole machine"
        return f"{where} ({format_mib(self.ram_limit)}{swap})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _limit(path: Path) -> int | None:
    """A limit file in bytes; None when absent, unreadable or unlimited."""
    text = _read(path)
    if text is None:
        return None
    try:
        value = parse_limit(text)  # "max" -> None
    except ParseError:
        return None
    return value if value is not None and value < UNLIMITED else None


def _ancestors(mount: Path, rel: str) -> list[tuple[Path, str]]:
    """(dir, hierarchy path) from our own cgroup up to, not including, the root."""
    parts = [p for p in rel.split("/") if p]
    out = []
    while parts:
        out.append((mount.joinpath(*parts), "/" + "/".join(parts)))
        parts.pop()
    return out


def _v1_mount(root: Path) -> Path | None:
    mem = root / "memory"
    if mem.is_dir():
        return mem
    try:
        return next((d for d in root.iterdir() if "memory" in d.name.split(",")), None)
    except OSError:
        return None


def _v2_mount(root: Path) -> Path | None:
    if (root / "cgroup.controllers").exists():
        return root
    uni = root / "unified"
    return uni if (uni / "cgroup.controllers").exists() else None


def find_domain(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> Domain:
    """The memory domain of this process: the tightest cgroup memory limit of our own
    cgroup and its ancestors (v1 memory controller first, then v2), else the machine.
    A limit at or above MemTotal is the machine. Swap is capped by the host's SwapTotal."""
    mi_text = _read(Path(proc_root, "meminfo"))
    try:
        mi = parse_meminfo(mi_text or "")
    except ParseError:
        raise CannotStage(f"cannot read {proc_root}/meminfo: is /proc mounted?") from None
    host_ram, host_swap = mi.MemTotal_bytes, mi.SwapTotal_bytes
    v1_rel, v2_rel = parse_proc_cgroup(_read(Path(proc_root, "self", "cgroup")) or "")
    root = Path(cgroup_root)
    candidates: list[tuple[int, Path | None, str]] = []
    if v1_rel is not None:
        candidates.append((1, _v1_mount(root), v1_rel))
    if v2_rel is not None:
        candidates.append((2, _v2_mount(root), v2_rel))
    for version, mount, rel in candidates:
        if mount is None:
            continue
        ram_name = "memory.limit_in_bytes" if version == 1 else "memory.max"
        best: tuple[int, Path, str] | None = None
        swap_caps: list[int] = []
        for d, path in _ancestors(mount, rel):
            ram = _limit(d / ram_name)
            if ram is not None and (best is None or ram < best[0]):
                best = (ram, d, path)
            if version == 1:
                memsw = _limit(d / "memory.memsw.limit_in_bytes")
                if memsw is not None:
                    swap_caps.append(memsw)  # RAM + swap together, subtracted below
            else:
                swap = _limit(d / "memory.swap.max")
                if swap is not None:
                    swap_caps.append(swap)
        if best is None or best[0] >= host_ram:
            continue
        ram, d, path = best
        if version == 1:
            swap = min((max(0, m - ram) for m in swap_caps), default=host_swap)
        else:
            swap = min(swap_caps, default=host_swap)
        return Domain(version, str(d), path, ram, min(swap, host_swap))
    return Domain(0, None, None, host_ram, host_swap)


def domain_files(domain: Domain, proc_root: str = "/proc") -> StageFiles:
    """Where the sampler reads the domain: the limiting cgroup's files, or the host's."""
    return memory_files(domain.version if domain.cgroup_dir else 0, domain.cgroup_dir, proc_root)


# ---------------------------------------------------------------- protecting the show


def lower_oom_score_adj(value: int = SHOW_OOM_SCORE_ADJ, proc_root: str = "/proc") -> str | None:
    """Ask the kernel to spare the show: write `value` to our oom_score_adj. Returns None
    when it took, else why not. os.write on an fd: a buffered write() can swallow EACCES
    (FIELD-NOTES: negative values fail with EACCES on these machines)."""
    path = os.path.join(proc_root, "self", "oom_score_adj")
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
        got = int(Path(path).read_text().strip())
    except OSError as e:
        return e.strerror or str(e)
    except ValueError:
        return "unreadable"
    return None if got == value else f"it stayed at {got}"


# ---------------------------------------------------------------- the stage


# ---------------------------------------------------------------- the show's ballast

BALLAST_BYTES = 8 << 20
BALLAST_NAME = "beep-ballast"  # its comm, as the kernel's OOM report prints it
BALLAST_READY_TIMEOUT = 10.0  # s for the ballast process to start and fault its memory in

# The ballast process, `python -I -S -c BALLAST_SCRIPT EFD READY_FD PARENT SIZE NAME`:
# the standard library only, no site, no environment. It arms itself (SIGKILL when the
# show's spawning thread dies, and not at all if the show is already gone), names itself,
# faults SIZE bytes of anonymous memory in (huge pages where it can: its exit then frees
# a few huge pages, not thousands of small ones; wake-up to reaped, measured 0.7 against
# 1.7 ms), locks what is resident (MCL_ONFAULT: nothing else is faulted in; a swapped-out
# page would give back swap, not the RAM a charge needs), asks for SCHED_FIFO (see
# Ballast), says "ready LOCKED RT" on READY_FD and blocks on the eventfd. Whatever wakes
# it, it exits at once.
BALLAST_SCRIPT = """\
import ctypes, mmap, os, sys
efd, ready, parent, size = map(int, sys.argv[1:5])
name = sys.argv[5].encode()[:15]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != parent:
    os._exit(1)
libc.prctl(15, name, 0, 0, 0)  # PR_SET_NAME
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
try:
    m.madvise(mmap.MADV_HUGEPAGE)
except (AttributeError, OSError):
    pass
for off in range(0, size, mmap.PAGESIZE):
    m[off] = 1
locked = libc.mlockall(5) == 0  # MCL_CURRENT | MCL_ONFAULT
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    rt = 1
except (AttributeError, OSError):
    rt = 0
os.write(ready, b"ready %d %d\\n" % (locked, rt))
os.close(ready)
try:
    os.read(efd, 8)
finally:
    os._exit(0)
"""


def _register_oom_eventfd(efd: int, cgroup_dir: str) -> bool:
    """Have the kernel signal `efd` whenever the OOM killer is invoked in the v1 memory
    cgroup `cgroup_dir` (cgroup.event_control + memory.oom_control). The registration
    lives as long as the eventfd. False when the cgroup has no such files (v2)."""
    try:
        ctl = os.open(os.path.join(cgroup_dir, "memory.oom_control"), os.O_RDONLY)
        try:
            ev = os.open(os.path.join(cgroup_dir, "cgroup.event_control"), os.O_WRONLY)
            try:
                os.write(ev, f"{efd} {ctl}".encode())
            finally:
                os.close(ev)
        finally:
            os.close(ctl)
    except OSError:
        return False
    return True


class Ballast:
    """A few MiB of memory in the show's domain, held by a tiny separate process (the
    ballast process, `beep-ballast`, a child of the show) that exits the moment the
    kernel's OOM killer is invoked in the domain, giving all of it back.

    Why: the show shares the domain with the hog. Seen here (about one CI run in five):
    the kernel's OOM killer rightly takes the hog; 3-4 ms later, before the hog's pages
    are uncharged, the show needs a page charged to the still-full domain (a munmap's
    VMA split, its recording's page-cache write), and a second OOM kill, the hog being
    out of the running, takes the show. The ballast's room is what that charge finds.

    Why a process: a thread of the show, woken by the same eventfd, needed the GIL
    before it could free anything, and another thread of the show held it: the second
    kill's report still counted the ballast in the show's anon-rss. The ballast
    process is single-threaded: its read of the v1 OOM eventfd returns to nothing but
    `os._exit`, and its exit frees its whole memory (ballast and interpreter) in the
    kernel. It runs SCHED_FIFO where it may (CAP_SYS_NICE or RLIMIT_RTPRIO): measured
    with perf in the five-run test, its wake-up to exit took 0.05-4.1 ms as a normal
    task (it waited for its CPU, held by the show's thread, itself in the kernel
    invoking the OOM killer; these kernels do not preempt), and 0.05-0.12 ms as
    SCHED_FIFO, before the kernel had even killed the hog. It blocks or exits, so it
    never holds a CPU. It is no likelier a victim than the hog (oom_score_adj 1000 and
    far more memory). Start it from the thread that lives as long as the show: its
    PR_SET_PDEATHSIG fires when that thread exits.

    Without the v1 eventfd (v2, no cgroup.event_control) `release()` ends it, on the
    sampler's first evidence of a kill (BallastSource)."""

    def __init__(self, size: int, cgroup_dir: str | None = None) -> None:
        self.size = size
        self.pid: int | None = None
        self.watching = False  # the v1 OOM eventfd wakes the ballast process
        self.locked = False  # its memory is locked in RAM
        self.realtime = False  # it runs SCHED_FIFO: its wake-up preempts at once
        self.problem: str | None = None  # why there is no ballast, when there is none
        self._proc: subprocess.Popen | None = None
        self._released = False
        try:
            efd = os.eventfd(0, os.EFD_CLOEXEC)
        except OSError as e:
            self.problem = f"no eventfd: {e.strerror}"
            return
        try:
            if cgroup_dir:
                self.watching = _register_oom_eventfd(efd, cgroup_dir)
            self._spawn(efd)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(efd)  # the ballast process holds it, and with it the registration

    def _spawn(self, efd: int) -> None:
        from beep_av import interrupt

        r, w = os.pipe()
        try:
            argv = [sys.executable, "-I", "-S", "-c", BALLAST_SCRIPT]
            argv += [str(efd), str(w), str(os.getpid()), str(int(self.size)), BALLAST_NAME]
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(efd, w),
                    start_new_session=True,  # the terminal's Ctrl-C goes to the show only
                )
            except OSError as e:
                self.problem = f"cannot start it: {e.strerror}"
                return
            os.close(w)
            w = -1
            self.pid = self._proc.pid
            got = b""
            deadline = time.monotonic() + BALLAST_READY_TIMEOUT
            while b"\n" not in got:
                interrupt.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    self.problem = f"not ready within {BALLAST_READY_TIMEOUT:.0f} s"
                    break
                if interrupt.wait_readable([r], min(left, 0.2)):
                    chunk = os.read(r, 64)
                    if not chunk:
                        self.problem = f"it exited at start ({self._proc.poll()})"
                        break
                    got += chunk
            if self.problem:
                self.release()
                return
            flags = got.split()[1:3]
            self.locked = flags[:1] == [b"1"]
            self.realtime = flags[1:2] == [b"1"]
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def release(self) -> None:
        """End the ballast process now (SIGKILL; its exit gives all its memory back).
        Does not wait: close() does."""
        self._released = True
        p = self._proc
        if p is not None:
            try:
                p.kill()  # no-op once reaped: the pid is never someone else's
            except OSError:
                pass

    def close(self) -> None:
        """Release and reap the ballast process. Idempotent."""
        self.release()
        p = self._proc
        if p is not None:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    @property
    def held(self) -> bool:
        """The ballast process is alive and not released (reaps it once it exits)."""
        p = self._proc
        return p is not None and not self._released and p.poll() is None

    @property
    def returncode(self) -> int | None:
        """0 when the OOM eventfd ended it, -9 when release() did; None while alive."""
        return None if self._proc is None else self._proc.returncode


class BallastSource:
    """A Source that also ends the ballast process at the first evidence of a kill
    (for domains where the v1 OOM eventfd cannot wake it: v2, or no event_control)."""

    def __init__(self, inner: Source, ballast: Ballast | None) -> None:
        self.inner = inner
        self.ballast = ballast

    def read(self, t: float):
        snap = self.inner.read(t)
        if self.ballast is not None and self.ballast.held:
            if (
                getattr(self.inner, "oom_notified", False)
                or snap.oom_kill_count
                or snap.kmsg_kill is not None
                or snap.hog_exit is not None
            ):
                self.ballast.release()
        return snap

    def wait(self, timeout: float) -> None:
        self.inner.wait(timeout)

    def close(self) -> None:
        self.inner.close()


class HostStage(HogStage):
    """The hog in the domain beep-av lives in. `cache` bytes of page cache (None: a
    quarter of the domain, at most 256 MiB), `rate` bytes/s (None: RAM + swap in about
    50 s; 0: flat out). The domain is found at construction; nothing runs until
    `confirm` and `prepare`."""

    kind = "host"
    # the show lives in the domain it fills: no parsing of the kernel's ~100-record
    # report while that domain is full (its allocations met the full domain, and a
    # second OOM kill took the show, 1 run in 5 in CI); the kill is still named by the
    # Killed line, and the card has no "why" line (`beep-av explain` reads it after)
    reads_reports = False

    def __init__(
        self,
        cache: int | None = None,
        rate: int | None = None,
        seed: int | None = None,
        *,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
        cache_dir: str = SWAP_DIR,
    ) -> None:
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.cache_dir = cache_dir
        self.seed = seed  # nothing to seed on a real stage; kept for a uniform signature
        self.domain = find_domain(proc_root, cgroup_root)
        self.ram_limit = self.domain.ram_limit
        self.swap_limit = self.domain.swap_limit
        if self.ram_limit < MIN_RAM:
            raise CannotStage(
                f"the host domain ({self.domain.describe()}) is too small for a show "
                f"(at least {format_mib(MIN_RAM)}); use --stage rehearsal"
            )
        if cache is None:
            cache = min(AUTO_CACHE_MAX, self.ram_limit // 4 // MiB * MiB)
        if cache < 0 or cache >= self.ram_limit:
            raise BadInput(
                f"--cache {format_mib(cache)} must be less than the host domain's "
                f"{format_mib(self.ram_limit)}"
            )
        self.cache_bytes = int(cache)
        if rate is None:
            rate = max(MIN_AUTO_RATE, int((self.ram_limit + self.swap_limit) / STORY_SECONDS))
        self.rate = max(0, int(rate))
        self.paused = False
        self.confirmed = False
        self.hog = None  # HogProcess once spawned
        self.ballast: Ballast | None = None

    def describe(self) -> str:
        """One line: the domain, the cache and the rate."""
        rate = f"{format_mib(self.rate)}/s" if self.rate else "flat out"
        return f"host {self.domain.describe()}, {format_mib(self.cache_bytes)} cache, hog at {rate}"

    def statement(self) -> str:
        """What the user confirms."""
        return (
            f"host stage: the hog will fill {self.domain.describe()} until the kernel's "
            "OOM killer ends it (oom_score_adj 1000 makes the hog its choice)"
        )

    def confirm(
        self,
        say: Say,
        yes: bool,
        *,
        tty: bool | None = None,
        ask: Callable[[str], str] | None = None,
        protect: Callable[[], list[str]] | None = None,
    ) -> None:
        """State the domain and what the show cannot protect, then need `yes` or an
        interactive yes (asked only when stdin is a terminal). Raises BadInput (exit 2)
        otherwise; nothing is allocated before this returns."""
        for gap in (protect or self.protect)():
            say(f"warning: {gap}")
        say(self.statement())
        if not yes:
            interactive = sys.stdin.isatty() if tty is None else tty
            if not interactive:
                raise BadInput(
                    "--stage host needs --yes (no terminal to ask on); nothing was allocated"
                )
            answer = (ask or _ask_terminal)("fill it? type yes to go on: ")
            if answer.strip().lower() not in ("y", "yes"):
                raise BadInput("--stage host was not confirmed; nothing was allocated")
        self.confirmed = True

    def protect(self) -> list[str]:
        """Lock the show in RAM and lower its OOM score; one line per protection that
        failed (the show carries on without it)."""
        from beep_av.protect import lock_memory

        gaps = []
        why = lock_memory()
        if why:
            gaps.append(
                f"cannot lock beep-av in memory ({why}): sound and picture may stall "
                "while the domain swaps"
            )
        why = lower_oom_score_adj(SHOW_OOM_SCORE_ADJ, self.proc_root)
        if why:
            gaps.append(
                f"cannot lower beep-av's oom_score_adj to {SHOW_OOM_SCORE_ADJ} ({why}; "
                "negative values need CAP_SYS_RESOURCE): only the hog's 1000 steers "
                "the kernel away from the show"
            )
        return gaps

    def prepare(self, say: Say) -> None:
        """Spawn the hog (oom_score_adj 1000, no cgroup move) and let it warm the cache."""
        if not self.confirmed:
            raise BadInput("--stage host was not confirmed; nothing was allocated")
        from beep_av.hogproc import HogProcess

        self.hog = HogProcess(rate=self.rate, cache=self.cache_bytes, cache_dir=self.cache_dir)
        self.hog.wait_ready()
        self.ballast = Ballast(
            BALLAST_BYTES, self.domain.cgroup_dir if self.domain.version == 1 else None
        )
        if self.ballast.problem:
            say(f"note: no ballast for the show ({self.ballast.problem})")
        say(f"stage: {self.describe()}")

    def source(self) -> Source:
        """The sampler, wrapped so that the show's ballast is dropped at the first sign
        of the kill (see Ballast)."""
        return BallastSource(super().source(), self.ballast)

    def files(self) -> StageFiles:
        """Where the sampler reads this stage."""
        return domain_files(self.domain, self.proc_root)

    def teardown(self) -> None:
        """Kill the hog if it is alive and close our ends. Idempotent."""
        if self.ballast is not None:
            self.ballast.close()
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait(10)
            self.hog.close()


def _ask_terminal(prompt: str) -> str:
    from beep_av import interrupt

    sys.stderr.write(prompt)
    sys.stderr.flush()
    # the ending signals only set a flag: wait for the answer where they can end the wait
    while not interrupt.wait_readable([sys.stdin.fileno()], 0.5):
        interrupt.check()
    interrupt.check()
    return sys.stdin.readline()
