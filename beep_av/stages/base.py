"""What the conductor needs from a stage. A stage creates the confinement, starts the
hog, exposes readings as a `Source`, takes presenter controls, and tears down."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from beep_av.model import Snapshot

Say = Callable[[str], None]  # one line of progress for the user


@dataclass(frozen=True)
class StageFiles:
    """Where the sampler reads a live stage. Paths that the stage does not have are None."""

    cgroup_version: int  # 1 or 2; 0 for the host stage without a cgroup limit
    cgroup_dir: str | None
    memory_stat: str | None  # v1/v2 memory.stat
    usage: str | None  # v1 memory.usage_in_bytes, v2 memory.current
    memsw_usage: str | None  # v1 memory.memsw.usage_in_bytes
    swap_current: str | None  # v2 memory.swap.current
    oom_events: str | None  # v1 memory.oom_control, v2 memory.events
    event_control: str | None  # v1 cgroup.event_control (OOM eventfd), else None
    psi: str | None  # v2 <cgroup>/memory.pressure, else /proc/pressure/memory
    meminfo: str = "/proc/meminfo"
    vmstat: str = "/proc/vmstat"
    kmsg: str | None = "/dev/kmsg"


def memory_files(version: int, cgroup_dir: str | None, proc_root: str = "/proc") -> StageFiles:
    """Where the sampler reads a memory domain: a v1 or v2 cgroup directory, or the
    host (version 0, cgroup_dir None) through /proc."""
    j = os.path.join
    host = {
        "psi": j(proc_root, "pressure", "memory"),
        "meminfo": j(proc_root, "meminfo"),
        "vmstat": j(proc_root, "vmstat"),
    }
    d = cgroup_dir
    if version == 1 and d:
        return StageFiles(
            cgroup_version=1,
            cgroup_dir=d,
            memory_stat=j(d, "memory.stat"),
            usage=j(d, "memory.usage_in_bytes"),
            memsw_usage=j(d, "memory.memsw.usage_in_bytes"),
            swap_current=None,
            oom_events=j(d, "memory.oom_control"),
            event_control=j(d, "cgroup.event_control"),
            **host,
        )
    if version == 2 and d:
        return StageFiles(
            cgroup_version=2,
            cgroup_dir=d,
            memory_stat=j(d, "memory.stat"),
            usage=j(d, "memory.current"),
            memsw_usage=None,
            swap_current=j(d, "memory.swap.current"),
            oom_events=j(d, "memory.events"),
            event_control=None,
            **{**host, "psi": j(d, "memory.pressure")},
        )
    return StageFiles(0, None, None, None, None, None, None, None, **host)


class Source(Protocol):
    """Readings of a stage, one Snapshot at a time."""

    def read(self, t: float) -> Snapshot:
        """Read everything now; `t` is the show time (seconds since show start)."""
        ...

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s; return early when an event arrives (hog death,
        kmsg record, OOM eventfd)."""
        ...

    def close(self) -> None: ...


class Stage(Protocol):
    kind: str  # "cgroup" | "host" | "rehearsal"
    ram_limit: int  # bytes
    swap_limit: int  # bytes; 0 when the stage has no swap
    cache_bytes: int  # page cache warmed inside the stage
    rate: int  # hog bytes per second
    paused: bool

    def describe(self) -> str:
        """One line: what the stage is, e.g. 'cgroup v1 beep-av-1234: 192 MiB RAM + 128 MiB swap'."""
        ...

    def prepare(self, say: Say) -> None:
        """Create the confinement, provision swap, warm the page cache. Raises CannotStage."""
        ...

    def start(self) -> None:
        """Start the hog climbing (the show's calm ends)."""
        ...

    def source(self) -> Source: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_rate(self, rate: int) -> None: ...

    def release(self) -> None:
        """Kill the hog now (presenter's `r`, host guard). Safe to call twice."""
        ...

    def teardown(self) -> None:
        """Remove everything the stage created. Safe to call twice, and after a failed
        prepare."""
        ...


class HogHandle(Protocol):
    """The running hog process, as the sampler sees it."""

    pid: int
    report_fd: int  # read end of the hog's report pipe, non-blocking: "TOTAL_BYTES\n" lines
    pidfd: int | None  # os.pidfd_open(pid), readable when the hog exits

    def poll(self) -> int | None:
        """Return code once the hog has exited (-9 for SIGKILL), else None. Reaps it."""
        ...


class HogStage:
    """The presenter controls and the sampler of a stage whose hog is a HogProcess
    (cgroup and host stages). Subclasses set `hog`, `rate`, `paused`, the limits, and
    define `files()`."""

    hog = None  # HogProcess once prepared
    rate = 0
    paused = False
    ram_limit = 0
    swap_limit = 0

    def files(self) -> StageFiles:
        raise NotImplementedError

    def source(self) -> Source:
        """The sampler over this stage's files and hog."""
        from beep_av.sampler import Sampler

        return Sampler(self.files(), self.hog, ram_limit=self.ram_limit, swap_limit=self.swap_limit)

    def start(self) -> None:
        if self.hog:
            self.hog.start()

    def pause(self) -> None:
        self.paused = True
        if self.hog:
            self.hog.pause()

    def resume(self) -> None:
        self.paused = False
        if self.hog:
            self.hog.resume()

    def set_rate(self, rate: int) -> None:
        """Bytes per second; 0 = flat out."""
        self.rate = max(0, int(rate))
        if self.hog:
            self.hog.set_rate(self.rate)

    def release(self) -> None:
        """Kill the hog now. Safe twice."""
        if self.hog:
            self.hog.kill()
