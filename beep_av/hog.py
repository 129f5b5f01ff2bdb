"""The hog: the allocator process the show confines and the kernel kills.

Run as `python -m beep_av.hog --rate BYTES_PER_S --cache BYTES --report-fd FD ...`, or
as a script, `python3 /path/to/hog.py ...` (a container image holds this one file and
python3's standard library). So this module needs the standard library only, and imports
no other module of beep_av: nothing heavy runs before it arms itself, and nothing else
needs to be there. numpy, where it is installed, is imported after arming, for the climb
(see Hog). The show's handle on it is hogproc.HogProcess.

It arms itself first (an empty signal mask and default dispositions, PR_SET_PDEATHSIG,
joins its cgroup, oom_score_adj 1000) before it touches memory, warms the page cache
with a private unlinked file, then waits for "start" on stdin and climbs: private
anonymous mmap chunks, every page written with random bytes, paced to a rate. It reports
the total bytes touched as "N\\n" lines on the report fd (~50 Hz and after every chunk).

Control lines on stdin: start | rate N | limit N | pause | resume | stop | read. EOF on
stdin: exit."""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
NAME = "beep-hog"  # the comm the kernel prints in its OOM report (15 bytes at most)
MADV_POPULATE_WRITE = 23  # since Linux 5.14: fault pages in without one trap per page
PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNK = 16 << 20  # bytes per mmap chunk
STEP_MAX = 1 << 20  # bytes touched per step flat out (measured: larger steps gain nothing)
STEP_MIN = 64 << 10  # smallest paced step
REPORT_EVERY = 0.02  # s: ~50 Hz
CACHE_DIR = "/var/tmp"  # a disk filesystem on Debian; /tmp may be tmpfs
EXIT_SETUP = 3  # the hog could not arm itself or join its cgroup

USAGE = """\
usage: python3 -m beep_av.hog [--rate BYTES_PER_S] [--cache BYTES] [--cache-dir DIR]
       [--chunk BYTES] [--report-fd FD] [--parent PID] [--cgroup-procs FILE] [--populate 0|1]
       [--name COMM]
The allocator process of beep-av: climbs after "start" on stdin (rate N, pause, resume,
stop); reports bytes touched as lines on the report fd."""

# statfs f_type magics (linux/magic.h) of filesystems a swapfile or cache file must avoid
MEMORY_FS = {
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x794C7630: "overlayfs",  # often over tmpfs in containers; no swapfile support anyway
    0x73717368: "squashfs",
}

# ---------------------------------------------------------------- arming


def _fail(msg: str) -> None:
    os.write(2, f"beep-av hog: {msg}\n".encode())
    os._exit(EXIT_SETUP)


def _arm(parent: int) -> None:
    """Die with the parent (SIGKILL), and refuse to run if the parent is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        _fail(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
    # the usual race: the parent may have died between fork and prctl
    if parent and os.getppid() != parent:
        os._exit(EXIT_SETUP)


def _set_name(name: str) -> None:
    """Our comm, as the kernel's OOM report will print it ("beep-hog", who-dies' hogs by
    their names): the report then says who is who (all are python3 otherwise)."""
    libc = ctypes.CDLL(None, use_errno=True)
    raw = name.encode("utf-8", "replace")[:15]
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)  # cosmetic: no failure is fatal


def _join_cgroup(procs: str) -> None:
    """Move ourselves into the stage's cgroup before touching any memory."""
    try:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"%d\n" % os.getpid())
        finally:
            os.close(fd)
    except OSError as e:
        _fail(f"cannot join cgroup {procs}: {e.strerror}")


def _set_oom_score_adj(value: int) -> None:
    # os.write on an fd: a buffered write() can swallow EACCES (FIELD-NOTES)
    path = "/proc/self/oom_score_adj"
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            got = int(f.read().strip())
    except (OSError, ValueError) as e:
        _fail(f"cannot set oom_score_adj {value}: {e}")
    if got != value:
        _fail(f"oom_score_adj is {got}, wanted {value}")


# ignored on purpose: Python's own start-up choice, the hog counts on BrokenPipeError
KEEP_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def default_signals() -> None:
    """No signal blocked, and every signal at its default action (SIGINT, SIGTERM and
    SIGHUP end the hog), whatever the process that spawned us held or ignored: a mask
    or a SIG_IGN survives exec (a show started under nohup, or in the background of a
    script with SIGINT and SIGQUIT ignored, or a wrapper such as systemd-run, would pass
    them on). Kept: Python's SIG_IGN of SIGPIPE and SIGXFSZ. The terminal's Ctrl-C never
    reaches the hog anyway: it runs in a session of its own."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in signal.valid_signals():
        if sig in KEEP_IGNORED or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if sig == signal.SIGINT or signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # a signal number the C library keeps for itself
            pass


# ---------------------------------------------------------------- filesystem check


def statfs_type(path: str) -> int:
    """The statfs(2) f_type of the filesystem holding `path` (os.statvfs lacks it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64/arm64
    if libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    # f_type is the first member, a long (__fsword_t)
    return ctypes.c_long.from_buffer(buf).value


def disk_fs_problem(path: str) -> str | None:
    """None when `path` is on a disk filesystem; else a short reason. (The swapfile's
    check too: it lives here so that this file stands alone.)"""
    try:
        ftype = statfs_type(path)
    except OSError as e:
        return f"cannot check the filesystem ({e.strerror})"
    name = MEMORY_FS.get(ftype & 0xFFFFFFFF)
    if name:
        return f"{name} is memory, not disk"
    return None


# ---------------------------------------------------------------- page cache warm-up


def warm_cache(nbytes: int, directory: str = CACHE_DIR) -> int | None:
    """Write then read back `nbytes` of a private file that has no name (O_TMPFILE, or
    created and unlinked at once) on a disk filesystem; return its fd, to keep open."""
    if nbytes <= 0:
        return None
    problem = disk_fs_problem(directory)
    if problem:
        _fail(f"cache dir {directory}: {problem}")
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="beep-av-cache-", dir=directory)
        os.unlink(name)
    block = os.urandom(1 << 20)
    left = nbytes
    while left > 0:
        n = os.write(fd, block[: min(left, len(block))])
        left -= n
    # clean pages are evicted without writeback: the evicting act stays quick and smooth
    os.fdatasync(fd)
    os.lseek(fd, 0, os.SEEK_SET)
    buf = bytearray(1 << 20)
    while os.readv(fd, [buf]) > 0:
        pass
    return fd


# ---------------------------------------------------------------- the climb


class Hog:
    """The climbing loop. `rate` bytes/s, 0 = flat out."""

    def __init__(
        self,
        rate: int,
        report_fd: int | None,
        ctl_fd: int = 0,
        chunk: int = CHUNK,
        populate: bool = True,
        use_numpy: bool = True,
    ):
        self.np = None
        if use_numpy:
            try:
                # after arming; a bare python3 (a container image) may have none. The
                # submodule by name: an image built from these imports needs all of it.
                import numpy
                import numpy.random

                self.np = numpy
            except ImportError:
                pass
        self.rate = max(0, rate)
        self.report_fd = report_fd
        self.ctl_fd = ctl_fd
        self.chunk = max(PAGE, chunk // PAGE * PAGE)
        self.started = False
        self.paused = False
        self.touched = 0
        self.maps: list[mmap.mmap] = []
        self.view: memoryview | None = None  # the current chunk, bytes
        self._words: memoryview | None = None  # the same chunk as 64-bit words
        self.off = self.chunk  # forces a new chunk on the first step
        self.populate = populate
        self.limit = 0  # bytes: stop growing there (0: never)
        self._ctl_buf = b""
        # One random block tiled across the pages, and the first words of every page
        # fresh, so no two pages are alike (KSM, same-filled pages) and none compresses
        # (zram, zswap). Without numpy: a memoryview slice assignment is one memmove, as
        # fast as numpy's copy, and a strided one writes every page's first word at once.
        # numpy stays the first choice where it is installed, for what measured: with the
        # stdlib path alone, a 192M/128M stage at 96 MiB/s reached its swapping act in 2
        # of 4 shows (the kernel killed the hog before it swapped a page), with numpy 4/4.
        self.block = memoryview(os.urandom(STEP_MAX))
        if self.np is not None:
            np = self.np
            self.gen = np.random.PCG64(int.from_bytes(os.getrandom(32), "little"))
            self._np_block = self.gen.random_raw(STEP_MAX // 8).reshape(-1, PAGE // 8)
            self._np_view = None
        self._reset_bucket()

    def _reset_bucket(self) -> None:
        self.base_t = time.monotonic()
        self.base_bytes = self.touched

    # ---- control

    def _control(self, line: str) -> bool:
        """Apply one control line; False means exit."""
        words = line.split()
        if not words:
            return True
        cmd = words[0]
        if cmd == "stop":
            return False
        if cmd == "start":
            if not self.started:
                self.started = True
                self._reset_bucket()
        elif cmd == "pause":
            self.paused = True
        elif cmd == "resume":
            if self.paused:
                self.paused = False
                self._reset_bucket()
        elif cmd == "limit" and len(words) == 2:  # an act's hog: stop growing there
            try:
                self.limit = max(0, int(words[1]))
            except ValueError:
                return True
        elif cmd == "rate" and len(words) == 2:
            try:
                self.rate = max(0, int(words[1]))
            except ValueError:
                return True
            self._reset_bucket()
        return True

    def _read_control(self) -> bool:
        """Read what is waiting on the control fd; False on EOF or "stop"."""
        try:
            data = os.read(self.ctl_fd, 4096)
        except BlockingIOError:
            return True
        if not data:
            return False  # EOF: the show is gone
        self._ctl_buf += data
        *lines, self._ctl_buf = self._ctl_buf.split(b"\n")
        return all(self._control(x.decode("ascii", "replace")) for x in lines)

    def _report(self) -> None:
        if self.report_fd is None:
            return
        try:
            os.write(self.report_fd, b"%d\n" % self.touched)
        except BlockingIOError:
            pass  # the reader is behind; it only needs the latest figure
        except BrokenPipeError:
            os._exit(0)  # the show is gone

    # ---- touching pages

    def _new_chunk(self) -> None:
        if self.maps:
            self._report()
        m = mmap.mmap(-1, self.chunk, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.maps.append(m)
        self.view = memoryview(m)
        self._words = self.view.cast("Q")
        if self.np is not None:
            self._np_view = self.np.frombuffer(m, dtype=self.np.uint64).reshape(-1, PAGE // 8)
        self.off = 0

    def touch(self, n: int) -> int:
        """Write random bytes into the next `n` bytes (rounded to pages, within one
        chunk); return the bytes touched."""
        if self.off >= self.chunk:
            self._new_chunk()
        n = max(PAGE, min(n, self.chunk - self.off, STEP_MAX) // PAGE * PAGE)
        off, end = self.off, self.off + n
        if self.populate:
            try:
                self.maps[-1].madvise(MADV_POPULATE_WRITE, off, n)
            except OSError:
                # EINVAL: kernel < 5.14; ENOMEM: let the ordinary faults below meet the limit
                self.populate = False
        if self.np is not None:
            npages = n // PAGE
            pages = self._np_view[off // PAGE : off // PAGE + npages]
            self.np.copyto(pages, self._np_block[:npages])
            pages[:, :8] = self.gen.random_raw(npages * 8).reshape(npages, 8)
        else:
            self.view[off:end] = self.block[:n]
            fresh = memoryview(os.urandom(n // PAGE * 8)).cast("Q")
            self._words[off // 8 : end // 8 : PAGE // 8] = fresh
        self.off = end
        self.touched += n
        return n

    def step_bytes(self) -> int:
        """Bytes per step: at least ~100 steps/s when paced, so pacing is smooth."""
        if self.rate <= 0:
            return STEP_MAX
        return max(STEP_MIN, min(STEP_MAX, self.rate // 100 // PAGE * PAGE))

    def run(self) -> int:
        os.set_blocking(self.ctl_fd, False)
        if self.report_fd is not None:
            os.set_blocking(self.report_fd, False)
        next_report = 0.0
        while True:
            now = time.monotonic()
            if now >= next_report:
                self._report()
                next_report = now + REPORT_EVERY
            wait = None
            if not self.started or self.paused or (self.limit and self.touched >= self.limit):
                wait = next_report - now  # `limit`: an act's hog stops growing there
            elif self.rate > 0:
                step = self.step_bytes()
                allowed = self.base_bytes + self.rate * (now - self.base_t)
                if allowed - self.touched > 4 * step:
                    # no saved-up burst after a stall (e.g. reclaim): pace from now on
                    self.base_t, self.base_bytes = now, self.touched
                elif self.touched + step > allowed:
                    wait = min(next_report - now, (self.touched + step - allowed) / self.rate)
            ready, _, _ = select.select([self.ctl_fd], [], [], max(0.0, wait or 0.0))
            if ready and not self._read_control():
                self._report()
                return 0
            if wait is None:
                self.touch(self.step_bytes())


# ---------------------------------------------------------------- the acts' other modes


def spin(report_fd: int | None, ctl_fd: int = 0) -> int:
    """`--mode spin` (the throttle act): burn CPU and report the iterations done so far
    ("N\n", ~20 Hz), after "start" on stdin; exit on EOF or "stop"."""
    import select
    import time

    os.set_blocking(ctl_fd, False)
    if report_fd is not None:
        os.set_blocking(report_fd, False)
    n = 0
    started = False
    next_report = 0.0
    while True:
        now = time.monotonic()
        if now >= next_report or not started:
            if report_fd is not None:
                try:
                    os.write(report_fd, b"%d\n" % n)
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    return 0
            next_report = now + 0.05
            ready, _, _ = select.select([ctl_fd], [], [], 0.0 if started else 0.05)
            if ready:
                try:
                    data = os.read(ctl_fd, 4096)
                except BlockingIOError:
                    data = b"?"
                if not data or b"stop" in data:
                    return 0
                started = started or b"start" in data
        if started:
            x = 0
            for i in range(2000):  # one iteration: a fixed piece of work (~60 µs)
                x += i * i
            n += 1


def idle(nbytes: int, report_fd: int | None, ctl_fd: int = 0) -> int:
    """`--mode idle` (the bystander act): on "start", write random bytes into `nbytes`
    of private anonymous memory once (zeros would not go to swap honestly) and report
    them; then sleep. On "read", read every page back and report "read SECONDS"; exit
    on EOF or "stop"."""
    import time

    hog = Hog(0, report_fd, ctl_fd)
    hog._report()
    buf = b""
    while True:
        data = os.read(ctl_fd, 4096)
        if not data:
            return 0
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            cmd = line.strip()
            if cmd == b"stop":
                return 0
            if cmd == b"start" and hog.touched == 0:
                while hog.touched < nbytes:
                    hog.touch(min(STEP_MAX, nbytes - hog.touched))
                hog._report()
            elif cmd == b"read":
                t = time.monotonic()
                total = 0
                for m in hog.maps:
                    view = hog.np.frombuffer(m, dtype=hog.np.uint64)
                    total += int(view[:: PAGE // 8].sum(dtype=hog.np.uint64) & 1)
                dt = time.monotonic() - t
                if report_fd is not None:
                    os.write(report_fd, b"read %.6f\n" % dt)


def thrash(nbytes: int, report_fd: int | None, ctl_fd: int = 0) -> int:
    """`--mode thrash` (the freeze act): on "start", write random bytes into a working
    set of `nbytes` (tiled from one random MiB: incompressible, and fast), then touch
    every page of it in a loop, writing one byte a page, so a set that no longer fits
    goes out to swap and comes straight back. "grow N" makes the set N bytes. Reports
    the pages touched so far ("N\n", ~20 Hz) and the set's size ("ws BYTES") when it
    changes; exits on EOF or "stop"."""
    import time

    try:
        import numpy as np
    except ImportError:
        _fail("--mode thrash needs numpy (a strided write is one call a MiB)")
        return EXIT_SETUP

    block = np.frombuffer(os.urandom(1 << 20), dtype=np.uint8)
    maps: list[tuple[mmap.mmap, object]] = []
    size = 0
    touched = 0
    value = 0
    started = False
    next_report = 0.0
    os.set_blocking(ctl_fd, False)
    buf = b""

    def say(line: bytes) -> bool:
        if report_fd is None:
            return True
        try:
            os.write(report_fd, line)
        except BlockingIOError:
            pass
        except BrokenPipeError:
            return False
        return True

    def grow(to: int) -> None:
        nonlocal size, touched
        while size < to:
            n = min(16 << 20, to - size)
            n -= n % PAGE
            if n <= 0:
                break
            m = mmap.mmap(-1, n, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            a = np.frombuffer(m, dtype=np.uint8)
            for off in range(0, n, 1 << 20):
                end = min(n, off + (1 << 20))
                a[off:end] = block[: end - off]
                touched += (end - off) // PAGE
            maps.append((m, a))
            size += n
        say(b"ws %d\n%d\n" % (size, touched))

    say(b"0\n")  # ready: armed, in the cgroup
    while True:
        # the presenter's controls between pieces of work (one MiB: a few ms in swap)
        try:
            data = os.read(ctl_fd, 4096)
            if not data:
                return 0
            buf += data
        except BlockingIOError:
            pass
        *lines, buf = buf.split(b"\n")
        for line in lines:
            cmd = line.strip()
            if cmd == b"stop":
                return 0
            if cmd == b"start" and not started:
                started = True
                grow(nbytes)
            elif cmd.startswith(b"grow "):
                grow(int(cmd.split()[1]))
        if not started:
            select.select([ctl_fd], [], [], 0.05)
            continue
        value = (value + 1) & 255
        for m, a in maps:
            for off in range(0, len(m), 1 << 20):
                a[off : off + (1 << 20) : PAGE] = value
                touched += min(1 << 20, len(m) - off) // PAGE
                now = time.monotonic()
                if now >= next_report:
                    next_report = now + 0.05
                    if not say(b"%d\n" % touched):
                        return 0
                    if select.select([ctl_fd], [], [], 0.0)[0]:
                        break
            else:
                continue
            break


# ---------------------------------------------------------------- entry point


def _parse(argv: list[str]) -> dict[str, str]:
    """--key value pairs; nothing more is needed, and argparse is not."""
    out: dict[str, str] = {}
    it = iter(argv)
    for key in it:
        if not key.startswith("--"):
            _fail(f"unexpected argument {key!r}")
        try:
            out[key[2:]] = next(it)
        except StopIteration:
            _fail(f"{key} needs a value")
    return out


def main(argv: list[str] | None = None) -> int:
    """Arm, join the cgroup, warm the cache, then climb under control of stdin."""
    default_signals()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    args = _parse(argv)
    _arm(int(args.get("parent", "0")))
    _set_name(args.get("name", NAME))
    if args.get("cgroup-procs"):
        _join_cgroup(args["cgroup-procs"])
    try:
        adj = int(args.get("oom-score-adj", "1000"))
    except ValueError as e:
        _fail(f"bad argument: {e}")
    _set_oom_score_adj(adj)
    try:
        rate = int(args.get("rate", "0"))
        cache = int(args.get("cache", "0"))
        report_fd = int(args["report-fd"]) if "report-fd" in args else None
        chunk = int(args.get("chunk", str(CHUNK)))
        populate = args.get("populate", "1") != "0"
    except ValueError as e:
        _fail(f"bad argument: {e}")
    cache_fd = warm_cache(cache, args.get("cache-dir", CACHE_DIR))  # noqa: F841 (kept open)
    mode = args.get("mode", "climb")
    if mode == "spin":
        return spin(report_fd)
    if mode == "idle":
        return idle(int(args.get("size", "0")), report_fd)
    if mode == "thrash":
        return thrash(int(args.get("size", "0")), report_fd)
    hog = Hog(rate, report_fd, chunk=chunk, populate=populate)
    return hog.run()


if __name__ == "__main__":
    raise SystemExit(main())
