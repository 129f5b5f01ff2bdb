"""Where a live memory domain is read: the files of a v1 or v2 cgroup or of the host
(StageFiles), and the hog as the sampler sees it (HogHandle). Shared by the stages and
the sampler, so neither imports the other's module."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol


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


class HogHandle(Protocol):
    """The running hog process, as the sampler sees it."""

    pid: int
    report_fd: int  # read end of the hog's report pipe, non-blocking: "TOTAL_BYTES\n" lines
    pidfd: int | None  # os.pidfd_open(pid), readable when the hog exits

    def poll(self) -> int | None:
        """Return code once the hog has exited (-9 for SIGKILL), else None. Reaps it."""
        ...


def close_fds(fds) -> None:
    """Close each fd of `fds` (None is skipped); one already closed, or whose file is
    gone, is not an error: the callers are closing down."""
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
