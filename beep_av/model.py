"""The data that flows through a show: Snapshot (sampler -> story) and ShowState
(story -> conductor -> audio, renderers, recorder). All frozen; consumers read the latest
reference and never lock."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Phase(enum.StrEnum):
    CALM = "calm"
    FILLING = "filling"
    EVICTING = "evicting"
    SWAPPING = "swapping"
    OOM = "oom"
    FINALE = "finale"

    @property
    def index(self) -> int:
        return PHASES.index(self)


PHASES: tuple[Phase, ...] = tuple(Phase)

MiB = 1024 * 1024


@dataclass(frozen=True)
class KmsgKill:
    """One kernel "Killed process" record."""

    pid: int
    name: str
    anon_rss_kib: int | None
    cgroup_oom: bool  # "Memory cgroup out of memory" (True) or global "Out of memory"
    timestamp_us: int | None = None  # kernel monotonic timestamp from the kmsg prefix
    text: str = ""


@dataclass(frozen=True)
class Snapshot:
    """One reading of a stage. Bytes are bytes, times are seconds since show start,
    PSI totals are the kernel's cumulative microseconds."""

    t: float
    anon_bytes: int = 0  # stage anonymous memory resident in RAM
    cache_bytes: int = 0  # stage page cache
    swap_bytes: int = 0  # stage anonymous memory in swap
    usage_bytes: int = 0  # stage RAM usage as the kernel charges it
    ram_limit: int = 0
    swap_limit: int = 0  # 0: no swap on the stage
    psi_some_us: int = 0
    psi_full_us: int = 0
    hog_bytes: int = 0  # bytes the hog reports touched
    hog_pid: int | None = None
    hog_running: bool = False
    hog_exit: int | None = None  # returncode as subprocess gives it (-9 for SIGKILL)
    hog_exit_t: float | None = None  # when the exit was seen
    oom_kill_count: int = 0  # stage oom_kill counter, relative to the stage start
    oom_kill_t: float | None = None  # when the counter was first seen to rise
    kmsg_kill: KmsgKill | None = None  # record naming the hog's pid, if seen
    kmsg_t: float | None = None  # show time of the kmsg record (kernel timestamp)


@dataclass(frozen=True)
class KillRecord:
    """The confirmed kill, as in the recording's `kill` record."""

    pid: int
    name: str
    exit: int | None  # shell-style exit status: 137 for SIGKILL
    signal: int | None
    oom_kill_count: int
    kmsg: str | None
    anon_rss_kib: int | None
    detected_by: tuple[str, ...]  # subset of ("exit", "oom_kill", "kmsg"), in that order
    latency_ms: float  # earliest evidence to the story's `oom`
    t: float  # show time of the story's `oom`


@dataclass(frozen=True)
class ShowState:
    """What every output reads. Replaced as a whole by the conductor, never mutated."""

    t: float = 0.0
    phase: Phase = Phase.CALM
    intensity: float = 0.0  # [0, 1]
    stall: float = 0.0  # PSI "some" stall fraction over the last interval, [0, 1]
    fill_rate: float = 0.0  # hog bytes per second, smoothed
    snapshot: Snapshot = field(default_factory=lambda: Snapshot(t=0.0))
    entered: tuple[tuple[Phase, float], ...] = ((Phase.CALM, 0.0),)
    skipped: tuple[tuple[Phase, str], ...] = ()
    kill: KillRecord | None = None
    oom_t: float | None = None  # show time the story entered `oom`
    paused: bool = False
    muted: bool = False
    captions: str = "en"  # en | fr | off
    stage: str = "cgroup"
    message: str = ""  # one-line notice for the HUD (e.g. "released by presenter")
    cache_peak: int = 0  # the story's memory: largest stage cache seen so far, bytes

    def phase_time(self, phase: Phase) -> float | None:
        for p, t in self.entered:
            if p is phase:
                return t
        return None
