"""The host guard: a cgroup show must never squeeze the machine it runs on.

The host domain is the memory domain beep-av itself lives in (stages/host.py's
`find_domain`: the tightest memory cgroup limit above us, else the whole machine). What
the host has *left outside the stage* is the domain's free memory less what the stage
may still take (its RAM limit minus its usage): the stage is expected to fill, the rest
of the domain is not. When that falls under the floor (`--host-floor SIZE`, default the
larger of 256 MiB and 3% of RAM), the conductor releases the hog at once and the show
ends with exit 3, end reason "host-guard".

Pure parts (`auto_floor`, `resolve_floor`, `cgroup_free`, `host_left`) take numbers;
`HostGuard` is the adapter: it reads the domain's and the stage's files on kept fds."""

from __future__ import annotations

import os

from beep_av.config import format_mib, parse_size
from beep_av.errors import BadInput, CannotStage
from beep_av.procfs import ParseError, parse_int, parse_meminfo, pick_fields
from beep_av.readings import close_fds
from beep_av.stages.host import Domain

MiB = 1 << 20
MIN_FLOOR = 256 * MiB
FLOOR_SHARE = 0.03  # of MemTotal
CHECK_EVERY = 0.1  # s: 10 Hz is plenty for a floor of hundreds of MiB
END_REASON = "host-guard"

# ---------------------------------------------------------------- pure


def auto_floor(mem_total: int) -> int:
    """The default floor, bytes: the larger of 256 MiB and 3% of `mem_total` bytes."""
    return max(MIN_FLOOR, int(mem_total * FLOOR_SHARE))


def resolve_floor(text: str, mem_available: int, mem_total: int) -> int:
    """`--host-floor` ("auto" or a SIZE, `10%` of `mem_available`) -> bytes. Raises BadInput."""
    if text == "auto":
        return auto_floor(mem_total)
    return parse_size(text, mem_available, "--host-floor")


def cgroup_free(limit: int, usage: int, inactive_file: int) -> int:
    """Bytes a cgroup of `limit` can still hand out: page cache on the inactive list is
    reclaimed before anything suffers, so it counts as free (kubelet's working set)."""
    return limit - max(0, usage - max(0, inactive_file))


def host_left(domain_free: int, stage_limit: int, stage_usage: int) -> int:
    """Bytes the host domain keeps if the stage filled its RAM limit: the domain's free
    memory less the stage's remaining headroom. May be negative."""
    return domain_free - max(0, stage_limit - max(0, stage_usage))


class HostGuardTripped(CannotStage):
    """The host went under its floor: the hog was released; exit 3."""

    end_reason = END_REASON


# ---------------------------------------------------------------- the adapter


class HostGuard:
    """Reads the host domain's free memory and the stage's usage on kept fds.

    `domain`: where beep-av lives; `floor`: bytes; `stage_limit`: the stage's RAM limit
    (bytes). `attach(path)` names the stage's usage file once the stage exists; until
    then the stage counts as empty (its whole limit still to come)."""

    def __init__(
        self, floor: int, domain: Domain, stage_limit: int, proc_root: str = "/proc"
    ) -> None:
        self.floor = int(floor)
        self.domain = domain
        self.stage_limit = int(stage_limit)
        self._fds: dict[str, int] = {}
        self._stage_fd: int | None = None
        d = domain.cgroup_dir
        if domain.version == 1 and d:
            self._usage_name, self._inactive_key = "memory.usage_in_bytes", "total_inactive_file"
        elif domain.version == 2 and d:
            self._usage_name, self._inactive_key = "memory.current", "inactive_file"
        else:
            self._usage_name, self._inactive_key = "", ""
        try:
            if self._usage_name and d:
                self._fds["usage"] = os.open(os.path.join(d, self._usage_name), os.O_RDONLY)
                self._fds["stat"] = os.open(os.path.join(d, "memory.stat"), os.O_RDONLY)
            else:
                self._fds["meminfo"] = os.open(os.path.join(proc_root, "meminfo"), os.O_RDONLY)
        except OSError as e:
            self.close()
            raise CannotStage(
                f"host guard: cannot read {domain.describe()} ({e.strerror}); use --stage rehearsal"
            ) from None

    def attach(self, stage_usage_path: str | None) -> None:
        """Follow the stage's usage file (v1 memory.usage_in_bytes, v2 memory.current)."""
        if stage_usage_path:
            try:
                self._stage_fd = os.open(stage_usage_path, os.O_RDONLY)
            except OSError:
                self._stage_fd = None  # the stage then counts as empty: stricter, not laxer

    def _pread(self, fd: int) -> str:
        return os.pread(fd, 65536, 0).decode("ascii", "replace")

    def domain_free(self) -> int:
        """Free bytes in the host domain now. Raises OSError or ParseError."""
        if "meminfo" in self._fds:
            m = parse_meminfo(self._pread(self._fds["meminfo"]))
            return m.MemAvailable_bytes if m.MemAvailable_bytes is not None else m.MemFree_bytes
        usage = parse_int(self._pread(self._fds["usage"]), self._usage_name)
        stat = pick_fields(self._pread(self._fds["stat"]), (self._inactive_key,))
        return cgroup_free(self.domain.ram_limit, usage, stat.get(self._inactive_key, 0))

    def stage_usage(self) -> int:
        if self._stage_fd is None:
            return 0
        try:
            return parse_int(self._pread(self._stage_fd), "stage usage")
        except (OSError, ParseError):
            return 0  # a stage being torn down: count it as empty (stricter)

    def left(self) -> int | None:
        """Bytes left to the host outside the stage, or None when unreadable."""
        try:
            free = self.domain_free()
        except (OSError, ParseError):
            return None
        return host_left(free, self.stage_limit, self.stage_usage())

    def problem(self) -> str | None:
        """One line when the host is under its floor now, else None."""
        if self.floor <= 0:  # --host-floor 0: the guard is off
            return None
        left = self.left()
        if left is None or left >= self.floor:
            return None
        return (
            f"host guard: {self.domain.describe()} has {format_mib(max(0, left))} left outside"
            f" the stage, under the floor of {format_mib(self.floor)}; the hog was released"
            " (free memory, use a smaller --ram, or lower --host-floor)"
        )

    def preflight(self) -> None:
        """Refuse a stage the host cannot afford before anything is created (exit 3)."""
        left = self.left()
        if self.floor > 0 and left is not None and left < self.floor:
            raise CannotStage(
                f"host guard: {self.domain.describe()} would keep {format_mib(max(0, left))}"
                f" outside a {format_mib(self.stage_limit)} stage, under the floor of"
                f" {format_mib(self.floor)}; use a smaller --ram or a lower --host-floor"
            )

    def close(self) -> None:
        """Close the kept fds. Safe twice."""
        close_fds([*self._fds.values(), self._stage_fd])
        self._fds = {}
        self._stage_fd = None


def make_guard(
    floor_text: str,
    stage_limit: int,
    mem_available: int,
    mem_total: int,
    proc_root: str = "/proc",
    cgroup_root: str = "/sys/fs/cgroup",
) -> HostGuard:
    """The guard of a cgroup show: find the host domain, resolve the floor."""
    from beep_av.stages.host import find_domain

    floor = resolve_floor(floor_text, mem_available, mem_total)
    if floor < 0:
        raise BadInput(f"--host-floor: {floor_text!r} must not be negative")
    return HostGuard(floor, find_domain(proc_root, cgroup_root), stage_limit, proc_root)


__all__ = [
    "CHECK_EVERY",
    "END_REASON",
    "HostGuard",
    "HostGuardTripped",
    "auto_floor",
    "cgroup_free",
    "host_left",
    "make_guard",
    "resolve_floor",
]
