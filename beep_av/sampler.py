"""The sampler: reads a live stage on kept file descriptors and returns Snapshots.

An adapter over one outside thing, the kernel's view of the stage: the cgroup (or host)
memory files, PSI, /dev/kmsg, the v1 OOM eventfd, and the hog's pidfd and report pipe.
Every file is opened once; each sample is a `pread(fd, n, 0)` (kernfs and procfs
regenerate the text on a read at offset 0) of the memory, usage and PSI files, parsed by
procfs's pure fast paths (only the fields the story needs, found by search in the raw
bytes). Sources that announce themselves (kmsg, the journal, the v1 OOM eventfd, the
hog's pidfd) are read only when the wait() before found them ready, and the oom_kill
counter file only when a notification says it may have moved (and every
OOM_READ_EVERY samples): a quiet tick is a pread per memory file, one read of the
hog's pipe and one poll.

Times: `read(t)` takes the show time t (seconds since show start). Evidence times are
the earliest each was seen: the hog's exit and the oom_kill counter carry the `t` of the
read that first saw them (the thread wakes on the event fds, so that read is prompt);
each kernel record carries the show time just after the read that returned it
(`time.monotonic() - t0`: `t` is taken before the read, and a record that came in
between would look older than the kernel's own time of it). A kernel record also
carries the kernel's own time of it on the show's clock, through the calibration of the
printk clock (kclock.KernelClock: `monotonic = printk - offset`), and none without one:
the two clocks differ (printk is ~0.76 ms behind CLOCK_MONOTONIC here), so an
uncalibrated kernel time means nothing.

Attribution (attribution.py decides): a record names the hog when its pid is the hog's
pid as the kernel prints it (the initial PID namespace's, found through the hog's NSpid);
a record of another process counts when the hog was a candidate in that OOM (a global
OOM, or the limit of a memory cgroup holding the hog), and goes to `others`."""

from __future__ import annotations

import errno
import os
import select
import time
from dataclasses import replace

from beep_av import attribution, clock
from beep_av.model import KmsgKill, Snapshot
from beep_av.oomreport import OomParser
from beep_av.procfs import (
    ParseError,
    cgroup_mount_path,
    meminfo_use,
    oom_counts,
    parse_int,
    parse_kmsg_record,
    parse_limit,
    parse_meminfo,
    parse_nspid,
    parse_oom_kill,
    parse_proc_cgroup,
    psi_totals,
    v1_memory_use,
    v2_memory_use,
)
from beep_av.readings import HogHandle, StageFiles, close_fds

BUF = 16384  # memory.stat v1 is ~1.2 KiB, v2 ~1.5 KiB; /proc/meminfo ~1.5 KiB
KMSG_READ = 8192  # /dev/kmsg rejects reads shorter than a record with EINVAL
RECHECK = 0.002  # s: wait after an OOM eventfd wake-up whose kill is not counted yet
KMSG_MAX_RECORDS = 4096  # per drain: a flood of kernel messages must not stall a sample
SCOPES_KEPT = 64  # "oom-kill:" lines kept to place the "Killed process" line after them
OOM_READ_EVERY = 25  # with an OOM notification, the counter file is also read every N samples
HOG_READ = 65536


class Sampler:
    """Source over a live stage (the Source protocol of stages/base.py).

    `t0`: time.monotonic() at show start, used to turn kmsg timestamps into show time;
    None: derived from the first read(t) as time.monotonic() - t.
    `kernel_clock`: the printk clock's calibration (kclock.KernelClock); None: kernel
    times are not comparable with the show's, and none is given.
    `ram_limit`/`swap_limit` (bytes): None reads them from the cgroup (or the host).
    Sources that cannot be opened are absent; `notes` says which and why."""

    def __init__(
        self,
        files: StageFiles,
        hog: HogHandle | None,
        t0: float | None = None,
        hz: float = 50.0,
        *,
        ram_limit: int | None = None,
        swap_limit: int | None = None,
        kernel_clock=None,
        proc_root: str = "/proc",
        reports: bool = True,
        psi_every: float = 0.0,
    ) -> None:
        self.files = files
        # seconds between reads of the PSI file (0: every read). Reading a pressure file
        # updates its group's averages, and the kernel then skips the unprivileged
        # triggers of that 2 s period: a show that arms one reads the file seldom
        self.psi_every = psi_every
        self._psi_t = -1e9
        self.hog = hog
        # read the kernel's whole OOM report (oomreport) into the kill records; off for
        # a show that lives in the domain it watches (the host stage): parsing ~100
        # records allocates, at the moment that domain is full
        self.reports = reports
        self.t0 = t0
        self.kernel_clock = kernel_clock
        self.proc_root = proc_root
        self.hz = hz
        self.notes: list[str] = []  # one line per absent source
        self.errors = 0  # reads that failed (file gone, garbage); last values are kept
        self._oom = OomParser()  # the kernel's whole OOM report, record by record
        self.kills: list[KmsgKill] = []  # every OOM kill record seen, any pid (watch mode)
        self._fds: list[int] = []
        self._closed = False
        v = files.cgroup_version
        self._mem_fd = self._open(files.memory_stat if v else None, "memory.stat")
        self._usage_fd = self._open(files.usage if v else None, "usage")
        self._swap_fd = self._open(files.swap_current if v == 2 else None, "memory.swap.current")
        self._oom_fd = self._open(files.oom_events if v else None, "oom events")
        self._psi_fd = self._open(files.psi, "PSI")
        self._meminfo_fd = self._open(files.meminfo if v == 0 else None, "meminfo")
        self._vmstat_fd = self._open(files.vmstat if v == 0 else None, "vmstat")

        self._poll = select.poll()
        self._journal = None  # JournalKernelLog when /dev/kmsg is refused
        self._efd = self._register_oom_eventfd()
        # v2: memory.events itself is the OOM wake-up (kernfs wakes pollers with POLLPRI
        # on every change of the file; a pread at offset 0 re-arms it)
        self._v2_notify = v == 2 and self._oom_fd is not None
        self._v2_fired = False
        self._v2_oom_seen = 0  # the `oom` (not oom_kill) count when last looked at
        if self._v2_notify:
            self._poll.register(self._oom_fd, select.POLLPRI)
        self._kmsg_fd = self._open_kmsg()
        self._pidfd = hog.pidfd if hog is not None else None
        self._report_fd = hog.report_fd if hog is not None else None
        if self._pidfd is not None:
            self._poll.register(self._pidfd, select.POLLIN)
        if self._report_fd is not None:
            # Wake when the pipe closes (POLLHUP: the hog is gone), not on every report:
            # the hog reports at ~50 Hz, out of step with our tick, which would double
            # the sample rate. Reports are drained on each tick instead.
            self._poll.register(self._report_fd, 0)

        self.ram_limit, self.swap_limit = self._limits(ram_limit, swap_limit)
        oom0, kill0 = self._oom_counts()
        self._oom_start = kill0 or 0
        self._v2_oom_seen = oom0 or 0

        # sticky state: the latest readings and the earliest evidence
        self._anon = self._cache = self._swap = self._usage = 0
        self._psi_some = self._psi_full = 0
        self._hog_bytes = 0
        self._report_tail = b""
        self._hog_exit: int | None = None
        self._hog_exit_t: float | None = None
        self._oom_count = 0
        self._oom_t: float | None = None
        self._kmsg_kill: KmsgKill | None = None
        self._recheck = 0  # short waits left after an OOM eventfd without a counted kill
        self.oom_notified = False  # the v1 OOM eventfd has fired: the kernel is killing
        self._samples = 0
        # what the last wait() found ready; until a wait() polls, every source is read
        self._polled = False
        self._ready: set[int] = set()
        self._init_attribution()

    # ------------------------------------------------------------ opening

    def _open(self, path: str | None, what: str, flags: int = os.O_RDONLY) -> int | None:
        if not path:
            return None
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as e:
            self.notes.append(f"{what} unreadable ({path}: {e.strerror}); that reading is absent")
            return None
        self._fds.append(fd)
        return fd

    def _open_kmsg(self) -> int | None:
        fd = self._open(self.files.kmsg, "kmsg", os.O_RDONLY | os.O_NONBLOCK)
        if fd is None:
            self._open_journal()
            return None
        try:
            os.lseek(fd, 0, os.SEEK_END)  # only records from now on
        except OSError as e:
            self.notes.append(f"kmsg cannot seek ({e.strerror}); that reading is absent")
            self._fds.remove(fd)
            os.close(fd)
            return None
        self._poll.register(fd, select.POLLIN)
        return fd

    def _open_journal(self) -> None:
        """dmesg_restrict keeps /dev/kmsg from a normal user; the journal may not."""
        if self.files.kmsg != "/dev/kmsg":
            return  # a test's stand-in kmsg: no fallback to the real machine's
        from beep_av.kernlog import JournalKernelLog, journal_readable

        if not journal_readable():
            self.notes.append(
                "the kernel's records are not readable either in the journal (join the adm"
                " or systemd-journal group); kills are confirmed without them"
            )
            return
        try:
            self._journal = JournalKernelLog()
        except OSError as e:
            self.notes.append(f"journalctl failed ({e.strerror}); the kernel's records are absent")
            return
        self.notes = [n for n in self.notes if not n.startswith("kmsg unreadable")]
        self.notes.append("kernel records from the journal (journalctl -k): /dev/kmsg is root's")
        self._poll.register(self._journal.fd, select.POLLIN)

    def _register_oom_eventfd(self) -> int | None:
        """v1: an eventfd that the kernel signals on OOM in the stage cgroup."""
        if self.files.cgroup_version != 1 or not self.files.event_control or self._oom_fd is None:
            return None
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._fds.append(efd)
        ctl = self._open(self.files.event_control, "cgroup.event_control", os.O_WRONLY)
        try:
            if ctl is None:
                raise OSError(errno.ENOENT, "cannot open")
            os.write(ctl, f"{efd} {self._oom_fd}".encode())
        except OSError as e:
            self.notes.append(f"OOM eventfd not registered ({e.strerror}); the 50 Hz tick remains")
            self._fds.remove(efd)
            os.close(efd)
            return None
        finally:
            if ctl is not None:
                self._fds.remove(ctl)
                os.close(ctl)  # the registration lives as long as the eventfd
        self._poll.register(efd, select.POLLIN)
        return efd

    def _limits(self, ram: int | None, swap: int | None) -> tuple[int, int]:
        """Stage limits in bytes: given, else from the cgroup, else the host's totals."""
        host_ram = host_swap = 0
        try:
            with open(self.files.meminfo) as f:
                mi = parse_meminfo(f.read())
            host_ram, host_swap = mi.MemTotal_bytes, mi.SwapTotal_bytes
        except (OSError, ParseError):
            pass
        d = self.files.cgroup_dir
        v = self.files.cgroup_version

        def limit(name: str) -> int | None:
            try:
                with open(os.path.join(d or "", name)) as f:
                    return parse_limit(f.read())
            except (OSError, ParseError):
                return None

        if ram is None:
            r = limit("memory.limit_in_bytes" if v == 1 else "memory.max") if d and v else None
            ram = min(r, host_ram) if r is not None and host_ram else (r or host_ram)
        if swap is None:
            if d and v == 1:
                memsw = limit("memory.memsw.limit_in_bytes")
                swap = max(0, memsw - ram) if memsw is not None else host_swap
            elif d and v == 2:
                s = limit("memory.swap.max")
                swap = host_swap if s is None else s
            else:
                swap = host_swap
            swap = min(swap, host_swap)  # a swap limit without swap devices is no swap
        return int(ram), int(swap)

    # ------------------------------------------------------------ reading

    def _pread(self, fd: int | None) -> bytes | None:
        if fd is None:
            return None
        try:
            return os.pread(fd, BUF, 0)
        except OSError:
            self.errors += 1
            return None

    def _pending(self, fd: int | None) -> bool:
        """Might `fd` have something to read? Yes unless the wait() since the last read
        polled it and found nothing: a read that would only say EAGAIN is skipped."""
        return fd is not None and (not self._polled or fd in self._ready)

    def _oom_counter(self) -> int | None:
        """The stage's oom_kill counter (v1 oom_control, v2 memory.events, host vmstat)."""
        return self._oom_counts()[1]

    def _oom_counts(self) -> tuple[int | None, int | None]:
        """(oom, oom_kill) from the stage's file: `oom` (the limit was hit and the OOM
        killer invoked) is v2's only; v1's OOM eventfd plays its part."""
        raw = self._pread(self._oom_fd if self.files.cgroup_version else self._vmstat_fd)
        if raw is None:
            return None, None
        try:
            return oom_counts(raw)
        except ParseError:
            self.errors += 1
            return None, None

    def _read_memory(self) -> None:
        v = self.files.cgroup_version
        try:
            if v == 1:
                raw = self._pread(self._mem_fd)
                if raw is not None:
                    self._anon, self._cache, self._swap = v1_memory_use(raw)
            elif v == 2:
                raw = self._pread(self._mem_fd)
                if raw is not None:
                    self._anon, self._cache = v2_memory_use(raw)
                raw = self._pread(self._swap_fd)
                if raw is not None:
                    self._swap = parse_int(raw, "memory.swap.current")
            else:
                raw = self._pread(self._meminfo_fd)
                if raw is not None:
                    self._anon, self._cache, self._swap, self._usage = meminfo_use(raw)
            if v:
                raw = self._pread(self._usage_fd)
                if raw is not None:
                    self._usage = parse_int(raw, "usage")
        except ParseError:
            self.errors += 1

    def _read_psi(self) -> None:
        raw = self._pread(self._psi_fd)
        if raw is None:
            return
        try:
            some, full = psi_totals(raw)
        except ParseError:
            self.errors += 1
            return
        self._psi_some = some
        if full is not None:
            self._psi_full = full

    def _read_hog(self, t: float) -> None:
        fd = self._report_fd
        if fd is not None:
            # one read takes every report waiting (a pipe hands over up to 64 KiB at once)
            data = b""
            while True:
                try:
                    chunk = os.read(fd, HOG_READ)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:  # EOF: the hog is gone; stop polling the pipe
                    self._unpoll(fd)
                    self._report_fd = None
                    break
                data += chunk
                if len(chunk) < HOG_READ:
                    break
            if data:
                buf = self._report_tail + data
                end = buf.rfind(b"\n")
                if end >= 0:
                    start = buf.rfind(b"\n", 0, end) + 1
                    line = buf[start:end].strip()
                    if line.isdigit():
                        self._hog_bytes = int(line)
                    self._report_tail = buf[end + 1 :][-64:]
                else:
                    self._report_tail = buf[-64:]
        # with a pidfd, the hog's exit is news only when poll saw the pidfd readable
        if (
            self.hog is not None
            and self._hog_exit is None
            and (self._pidfd is None or self._pending(self._pidfd))
        ):
            code = self.hog.poll()
            if code is not None:
                self._hog_exit, self._hog_exit_t = code, t
                if self._pidfd is not None:
                    self._unpoll(self._pidfd)  # stays readable forever once exited
                if code in attribution.SIGKILLED:
                    # once per show, not in the 50 Hz path: who could have sent it
                    self._user_killers = running_killers(self.proc_root)

    def _read_oom(self, t: float) -> None:
        fired = self._v2_fired
        self._v2_fired = False
        if self._pending(self._efd):
            try:
                fired = os.eventfd_read(self._efd) > 0  # also re-arms the wake-up
            except BlockingIOError:
                pass
            except OSError:
                self.errors += 1
        # With the eventfd, the counter can only rise after it fires; read the file then
        # (and every OOM_READ_EVERY samples in case a notification was missed).
        self._samples += 1
        notified = self._efd is not None or self._v2_notify
        due = not notified or fired or self._recheck > 0
        n = self._oom_counter() if due or self._samples % OOM_READ_EVERY == 0 else None
        if n is not None:
            count = max(0, n - self._oom_start)
            if count > 0 and self._oom_t is None:
                self._oom_t = t
            self._oom_count = max(self._oom_count, count)
        # The eventfd fires when the cgroup goes under OOM, before the kill is counted
        # (measured here: the counter follows within ~1 ms). Look again soon, not a
        # whole tick later.
        if fired:
            self.oom_notified = True
        if fired and self._oom_t is None:
            self._recheck = 25  # at most 25 short waits (~50 ms)
        elif self._oom_t is not None:
            self._recheck = 0

    def _kmsg_records(self):
        """Raw kernel records, /dev/kmsg's format: from the device, or the journal's
        records of the same kernel messages put in that form (same printk clock)."""
        if self._journal is not None:
            if not self._pending(self._journal.fd):
                return
            for ts_us, message in self._journal.drain(KMSG_MAX_RECORDS):
                yield b"6,0,%d,-;%s" % (ts_us, message.encode("utf-8", "replace"))
            return
        fd = self._kmsg_fd
        if not self._pending(fd):
            return
        for _ in range(KMSG_MAX_RECORDS):
            try:
                raw = os.read(fd, KMSG_READ)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EPIPE:  # we fell behind and records were overwritten
                    continue
                self.notes.append(f"kmsg read failed ({e.strerror}); that reading is now absent")
                self._unpoll(fd)
                self._kmsg_fd = None
                return
            if not raw:
                return
            yield raw

    def _drain_kmsg(self) -> None:
        # every waiting record is read (and timed) first, then parsed: reading the whole
        # report (~100 records) must not delay the moment the kill's own record is read
        records = self._kmsg_records()
        if self.reports:
            records = [(raw, clock.now() - self.t0) for raw in records]
        else:  # no parsing between reads: read lazily, allocating nothing more
            records = ((raw, clock.now() - self.t0) for raw in records)
        for raw, seen in records:  # `seen`: the show has this record from then on
            # cheap filter first: nearly every record is not about an OOM kill; the
            # records of an OOM report (from its trigger line on) go to the report parser
            killed = b"Killed process" in raw or b"oom-kill:" in raw
            reading = self.reports and (
                self._oom.current is not None or b"invoked oom-killer" in raw
            )
            if not killed and not reading:
                continue
            try:
                rec = parse_kmsg_record(raw.decode("utf-8", "replace"))
                if rec is not None and self.reports:
                    self._oom.feed_text(rec.message)
                kill = parse_oom_kill(rec.message, rec.timestamp_us) if rec and killed else None
            except ParseError:
                self.errors += 1
                continue
            if kill is None:
                continue
            report = self._oom.current  # the kernel's whole report, up to this line
            kill = replace(
                kill,
                seen_t=seen,
                kernel_t=self._kernel_time(rec.timestamp_us),
                report=report.kill_fields() if report is not None else None,
            )
            if "Killed process" in rec.message:  # the report is whole: stop reading it,
                self._oom.close()  # so later records go back to the cheap filter
            self.kills.append(kill)
            self._take_kill(kill)

    def _kernel_time(self, timestamp_us: int | None) -> float | None:
        """A printk timestamp as show time, when the clocks are calibrated."""
        if self.kernel_clock is None or timestamp_us is None or self.t0 is None:
            return None
        return clock.from_monotonic(self.kernel_clock.to_monotonic(timestamp_us)) - self.t0

    def _take_kill(self, kill: KmsgKill) -> None:
        """One kernel kill record: the hog's, another's in the stage's domain, or none
        of the show's business. The "oom-kill:" line comes first and says which OOM it
        was; the "Killed process" line after it carries anon-rss."""
        scope = kill.text.startswith("oom-kill:")
        if scope:
            self._scopes[kill.pid] = kill
            if len(self._scopes) > SCOPES_KEPT:
                self._scopes.pop(next(iter(self._scopes)))
        else:
            first = self._scopes.get(kill.pid)
            if first is not None:  # the same kill: its scope and its earliest times
                kill = replace(
                    kill,
                    global_oom=first.global_oom,
                    oom_memcg=first.oom_memcg,
                    task_memcg=first.task_memcg,
                    seen_t=_earliest(first.seen_t, kill.seen_t),
                    kernel_t=_earliest(first.kernel_t, kill.kernel_t),
                )
        if self.hog is None:
            return
        if self._hog_kpid is not None and kill.pid == self._hog_kpid:
            self._kmsg_t = _earliest(self._kmsg_t, kill.kernel_t)
            self._kmsg_seen_t = _earliest(self._kmsg_seen_t, kill.seen_t)
            # the "Killed process" record carries anon-rss; the earlier oom-kill: line
            # only stands in until it arrives
            if self._kmsg_kill is None or kill.anon_rss_kib is not None:
                self._kmsg_kill = kill
            return
        if scope or not self.kernel_log:
            return
        if attribution.oom_covers(kill, self._hog_memcg):
            self._others.append(kill)
            if attribution.counted_by(kill, self._counter_memcg, self.files.cgroup_version == 2):
                self._others_counted += 1

    # ------------------------------------------------------------ attribution

    def _init_attribution(self) -> None:
        """Once, at the start: how the kernel log names the hog (its pid in the initial
        PID namespace; its memory cgroup) and which kills the stage's counter counts."""
        self._scopes: dict[int, KmsgKill] = {}  # pid -> its "oom-kill:" line
        self._others: list[KmsgKill] = []
        self._others_counted = 0
        self._kmsg_t: float | None = None  # kernel time of the hog's kill (show clock)
        self._kmsg_seen_t: float | None = None
        self._user_killers: tuple[str, ...] = ()
        self._hog_kpid: int | None = None
        self._hog_memcg: str | None = None
        self._counter_memcg = self._memcg_of_dir(self.files.cgroup_dir)
        has_log = self._kmsg_fd is not None or self._journal is not None
        self.kernel_log = False  # the kernel log can name the hog
        if self.hog is None:
            return
        self._hog_kpid = attribution.kernel_pid(
            self._hog_nspid(), procfs_initial(self.proc_root), self.hog.pid
        )
        self._hog_memcg = self._read_text(
            f"{self.proc_root}/{self.hog.pid}/cgroup", lambda t: parse_proc_cgroup(t).memcg
        )
        if has_log and self._hog_kpid is None:
            self.notes.append(
                "the kernel log names processes by their pid in the initial PID namespace, "
                "which this /proc does not show: it cannot name the hog; kills are "
                "confirmed by exit status and counter"
            )
        self.kernel_log = has_log and self._hog_kpid is not None

    def _hog_nspid(self) -> tuple[int, ...] | None:
        """The hog's NSpid: from its pidfd's fdinfo (exact whatever namespace we are in),
        else /proc/PID/status."""
        pidfd = getattr(self.hog, "pidfd", None)
        paths = [f"{self.proc_root}/self/fdinfo/{pidfd}"] if pidfd is not None else []
        paths.append(f"{self.proc_root}/{self.hog.pid}/status")
        for path in paths:
            got = self._read_text(path, parse_nspid)
            if got:
                return got
        return None

    def _memcg_of_dir(self, cgroup_dir: str | None) -> str | None:
        """A cgroup directory's hierarchy path, as the kernel log writes it."""
        if not cgroup_dir:
            return None
        found = self._read_text(
            f"{self.proc_root}/self/mountinfo", lambda t: cgroup_mount_path(t, cgroup_dir)
        )
        return found[1] if found else None

    @staticmethod
    def _read_text(path: str, parse):
        try:
            with open(path) as f:
                return parse(f.read())
        except (OSError, ParseError, ValueError):
            return None

    def _unpoll(self, fd: int) -> None:
        try:
            self._poll.unregister(fd)
        except (KeyError, ValueError):
            pass

    def read(self, t: float) -> Snapshot:
        """Read everything now; `t` is the show time in seconds."""
        if self.t0 is None:
            self.t0 = clock.now() - t
        self._read_memory()
        if t - self._psi_t >= self.psi_every:
            self._psi_t = t
            self._read_psi()
        self._read_hog(t)
        self._read_oom(t)
        self._drain_kmsg()
        self._polled = False  # until the next wait(), every source may have news
        self._ready.clear()
        return Snapshot(
            t=t,
            anon_bytes=self._anon,
            cache_bytes=self._cache,
            swap_bytes=self._swap,
            usage_bytes=self._usage,
            ram_limit=self.ram_limit,
            swap_limit=self.swap_limit,
            psi_some_us=self._psi_some,
            psi_full_us=self._psi_full,
            hog_bytes=self._hog_bytes,
            hog_pid=self.hog.pid if self.hog is not None else None,
            hog_running=self.hog is not None and self._hog_exit is None,
            hog_exit=self._hog_exit,
            hog_exit_t=self._hog_exit_t,
            oom_kill_count=self._oom_count,
            oom_kill_t=self._oom_t,
            kmsg_kill=self._kmsg_kill,
            kmsg_t=self._kmsg_t,
            kmsg_seen_t=self._kmsg_seen_t,
            others=tuple(self._others),
            others_counted=self._others_counted,
            kernel_log=self.kernel_log if self.hog is not None else None,
            user_killers=self._user_killers,
        )

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s; return early when the hog exits (pidfd, or its
        report pipe closing), a kmsg record arrives, or the v1 OOM eventfd fires."""
        if self._closed:
            time.sleep(max(0.0, timeout))
            return
        if self._recheck > 0:
            self._recheck -= 1
            timeout = min(timeout, RECHECK)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            try:
                ready = self._poll.poll(max(0, int(left * 1000 + 0.999)))
            except InterruptedError:
                self._polled = False  # cut short: the next read looks at everything
                return
            self._polled = True
            for fd, _ in ready:
                self._ready.add(fd)
            if not self._v2_notify or not ready:
                return
            if any(fd != self._oom_fd for fd, _ in ready):
                return
            if self._v2_event_matters() or time.monotonic() >= deadline:
                return

    def _v2_event_matters(self) -> bool:
        """memory.events changed. Its `max` and `high` counters tick at the limit many
        times a second while the stage swaps: wake the loop only for `oom` (the kernel is
        killing: look again soon) or `oom_kill` (the kill)."""
        oom, kill = self._oom_counts()  # the pread also re-arms the wake-up
        if kill is not None and kill - self._oom_start > self._oom_count:
            self._v2_fired = True
            return True
        if oom is not None and oom > self._v2_oom_seen:
            self._v2_oom_seen = oom
            self._v2_fired = True
            return True
        return False

    def close(self) -> None:
        """Close every fd the sampler opened (the hog's pipe and pidfd stay the hog's).
        Safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._journal is not None:
            self._journal.close()
        close_fds(self._fds)
        self._fds.clear()


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def procfs_initial(proc_root: str = "/proc") -> bool | None:
    """Does this /proc belong to the initial PID namespace? Its pid 1 lives in /proc's
    namespace; None when that cannot be read (not root) and ours is not /proc's."""
    try:
        return os.stat(f"{proc_root}/1/ns/pid").st_ino == attribution.PROC_PID_INIT_INO
    except OSError:
        pass
    try:
        with open(f"{proc_root}/self/status") as f:
            own = parse_nspid(f.read())
        if len(own) == 1:  # our namespace is /proc's
            return os.stat(f"{proc_root}/self/ns/pid").st_ino == attribution.PROC_PID_INIT_INO
    except (OSError, ParseError):
        pass
    return None


def running_killers(proc_root: str = "/proc") -> tuple[str, ...]:
    """The user-space OOM killers running now, by their comm (a scan of /proc: call it
    once, never in the 50 Hz path)."""
    found = set()
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return ()
    for pid in pids:
        try:
            with open(f"{proc_root}/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in attribution.USER_SPACE_KILLERS:
            found.add(comm)
    return tuple(sorted(found))
