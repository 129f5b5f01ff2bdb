"""The kernel's log clock against the show's: one calibration at the start of a show.

A kmsg record carries the printk clock's time (`local_clock()`, µs), and the show runs
on CLOCK_MONOTONIC. They are not the same clock (measured here: printk is ~0.76 ms
behind, the gap steady within a few µs over minutes), so a kernel timestamp means
nothing to the show until the offset between them is measured.

How (as root): write a marker line "beep-av: clock marker <monotonic_ns>" to /dev/kmsg
between two CLOCK_MONOTONIC readings, read the record back, and take

    offset = record time − the write's midpoint      (printk − monotonic, ns)
    uncertainty = half the write's duration + 0.5 µs (the record's µs truncation)

since the kernel stamps the record during the write. The best of a few markers (the
shortest write) is kept. A kernel time then maps to the show's clock as
`monotonic = printk − offset`. Without root (no write to /dev/kmsg), or without a
readable kmsg, there is no calibration and no kernel time is comparable: latencies are
unknown, never 0.

`estimate` and `to_monotonic` are pure; `calibrate` touches /dev/kmsg and nothing else.
A marker line must end in a newline: without it the kernel keeps the record open for a
continuation and readers see it only when the next record arrives (seconds later)."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from beep_av.procfs import ParseError, parse_kmsg_record

MARKER = "beep-av: clock marker"
TRIES = 3  # markers per calibration; the kernel rate-limits /dev/kmsg writers (10 per 5 s)
READBACK_S = 0.5  # give up on a marker not read back within this long
KMSG_READ = 8192


@dataclass(frozen=True)
class KernelClock:
    """printk clock − CLOCK_MONOTONIC, in ns, and how sure we are of it."""

    offset_ns: int
    uncertainty_ns: int
    write_ns: int = 0  # the chosen marker's write duration
    readback_ns: int = 0  # from the end of its write to reading it back
    markers: int = 1  # how many markers were read back

    def to_monotonic(self, timestamp_us: int) -> float:
        """A kmsg timestamp (µs, printk clock) as time.monotonic() seconds."""
        return (timestamp_us * 1000 + 500 - self.offset_ns) / 1e9

    def header(self) -> dict:
        """The recording header's `kernel_clock` value."""
        return {
            "offset_ns": self.offset_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "method": "kmsg marker",
            "write_ns": self.write_ns,
            "readback_ns": self.readback_ns,
            "markers": self.markers,
        }


def estimate(samples: list[tuple[int, int, int, int]]) -> KernelClock | None:
    """Pure: from markers (before_ns, after_ns, record_ts_us, read_ns) — CLOCK_MONOTONIC
    before and after the write, the record's printk time, CLOCK_MONOTONIC when it was
    read back — the calibration of the marker with the shortest write. None for none.

    The record was stamped during the write, somewhere in [before, after]; its µs
    timestamp truncates the stamp, which lies in [ts*1000, ts*1000 + 999] ns."""
    good = [s for s in samples if s[1] >= s[0]]
    if not good:
        return None
    before, after, ts_us, read = min(good, key=lambda s: s[1] - s[0])
    mid2 = before + after  # twice the midpoint: keep it exact in integers
    offset = (2 * (ts_us * 1000 + 500) - mid2) // 2
    half = (after - before + 1) // 2
    return KernelClock(
        offset_ns=offset,
        uncertainty_ns=half + 500,
        write_ns=after - before,
        readback_ns=max(0, read - after),
        markers=len(good),
    )


def calibrate(path: str = "/dev/kmsg", tries: int = TRIES) -> tuple[KernelClock | None, str]:
    """(clock, "") or (None, why not). Writes `tries` marker lines to the kernel log."""
    try:
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return None, f"{path} is not readable ({e.strerror})"
    try:
        os.lseek(rfd, 0, os.SEEK_END)
        try:
            wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            return None, f"{path} is not writable ({e.strerror}; needs root)"
        samples = []
        try:
            for _ in range(tries):
                got = _one(rfd, wfd)
                if got is not None:
                    samples.append(got)
        finally:
            os.close(wfd)
    except OSError as e:
        return None, f"{path}: {e.strerror or e}"
    finally:
        os.close(rfd)
    clock = estimate(samples)
    if clock is None:
        return None, f"no clock marker came back from {path}"
    return clock, ""


def _one(rfd: int, wfd: int) -> tuple[int, int, int, int] | None:
    tag = f"{MARKER} {time.monotonic_ns()} {os.getpid()}"
    line = (tag + "\n").encode()
    before = time.monotonic_ns()
    try:
        os.write(wfd, line)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EINVAL, errno.EAGAIN):
            return None  # printk_devkmsg=off, or rate-limited: this marker is lost
        raise
    after = time.monotonic_ns()
    want = tag.encode()
    deadline = after + int(READBACK_S * 1e9)
    while time.monotonic_ns() < deadline:
        try:
            raw = os.read(rfd, KMSG_READ)
        except BlockingIOError:
            time.sleep(0.0002)
            continue
        except OSError as e:
            if e.errno == errno.EPIPE:  # fell behind a flood: records were overwritten
                continue
            raise
        if want not in raw:
            continue
        try:
            rec = parse_kmsg_record(raw.decode("utf-8", "replace"))
        except ParseError:
            return None
        if rec is None or not rec.message.endswith(tag):
            continue
        return before, after, rec.timestamp_us, time.monotonic_ns()
    return None


def header_fields(clock: KernelClock | None, why: str) -> dict:
    """A recording header's fields for a calibration (or the reason there is none)."""
    if clock is None:
        return {"kernel_clock": None, "kernel_clock_why": why}
    return {"kernel_clock": clock.header()}
