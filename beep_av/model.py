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
    # from the "oom-kill:" line (since 4.19): which OOM it was and where the victim lived
    global_oom: bool = False  # a machine-wide OOM (no memory cgroup limit was hit)
    oom_memcg: str | None = None  # the memory cgroup whose limit was hit
    task_memcg: str | None = None  # the victim's memory cgroup
    # set by the sampler (show time, seconds): when it read the record, and the kernel's
    # own time of it on the show's clock (None without a calibrated kernel clock)
    seen_t: float | None = None
    kernel_t: float | None = None
    # the kernel's whole report of this kill, as read live (oomreport.OomEvent.kill_fields:
    # trigger, constraint, candidates with their points, victim_rank); None: not read
    report: dict | None = field(default=None, hash=False, compare=False)


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
    # the kernel's own time of the hog's kill record on the show's clock (calibrated);
    # None when no kernel time is comparable with the show's (no calibration)
    kmsg_t: float | None = None
    kmsg_seen_t: float | None = None  # when the show first read a kernel record of it
    # kernel kill records of OTHER processes in an OOM the hog was a candidate in (the
    # stage's domain), in the order read
    others: tuple[KmsgKill, ...] = ()
    others_counted: int = 0  # how many of `others` the stage's oom_kill counter counts
    kernel_log: bool | None = None  # the kernel log can name the hog (None: not said)
    user_killers: tuple[str, ...] = ()  # user-space OOM killers running at the hog's death


# KillRecord.killer of a kill the show itself made from user space, by design (the
# freeze act's PSI-triggered killer): an ending, not a failure to show the kernel's
OWN_KILLER = "beep-av"


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
    # from the kernel's own time of the kill (its kmsg record, on the calibrated clock)
    # to the moment the show read that record; None: no comparable kernel time
    latency_ms: float | None
    t: float  # show time of the story's `oom` (the kill's time for a bystander)
    hog: bool = True  # False: the kernel killed another process, not the hog
    oom: bool = True  # False: a SIGKILL without kernel OOM evidence (user space)
    killer: str = "kernel"  # "kernel", or "user space" / "systemd-oomd" / "earlyoom" ...
    # the container stage and `watch --containers`: the engine's verdict on the kill
    # (engine, container, image, oom_killed, exit_code, restart_count, engine_oom_t,
    # engine_latency_ms, backoff_s ...), written into the `kill` line as they are
    engine: dict | None = field(default=None, hash=False)
    # from the kernel's whole report (oomreport): trigger, constraint, candidates,
    # victim_rank, written into the `kill` line as they are; None: no report was read
    report: dict | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Lane:
    """One process of an act, as the picture, the sound and the recording see it
    (who-dies: a hog; bystander: the idle process and the hog; throttle: a worker).
    Bytes are bytes; `oom_score` is the kernel's live /proc/PID/oom_score (None: not
    read); `work_rate` is iterations per second (throttle; None elsewhere), `full_rate`
    the same process's rate at full speed, measured before any quota (None until then):
    the bar of a throttled lane is its work rate against its own full speed."""

    name: str
    pid: int | None
    colour: int  # index into the scene's lane palette
    rss: int = 0  # VmRSS
    swap: int = 0  # VmSwap
    oom_score: int | None = None
    oom_score_adj: int | None = None
    alive: bool = True
    work_rate: float | None = None
    full_rate: float | None = None
    work_unit: str = "it/s"  # what work_rate counts: iterations (throttle), pages (freeze)


@dataclass(frozen=True)
class ActView:
    """What an act other than the story adds to a state: the caption key it wants
    (None: the phase's), the card's title and lines at its end (empty: the story's),
    the closing tones (Hz, played in turn instead of the beep; empty: the beep), how
    fast the picture moves (1 = normal; throttle slows it), the act's events for the
    recording (cumulative, in order: each a dict with `event`), a one-line note, and
    `swapins`: while the bystander reads its memory back, the pages it swaps in per
    second (measured so far), heard as a crackle after the beep; None: no read-back.
    `word`: the big word of the HUD in place of the phase's name (throttle's "FULL
    SPEED", "THROTTLING": a CPU act does not fill memory); None: the phase's."""

    caption: str | None = None
    title: str | None = None
    card: tuple[str, ...] = ()
    closing: tuple[float, ...] = ()
    speed: float = 1.0
    events: tuple[dict, ...] = ()
    note: str = ""  # one line for the HUD (the countdown, the read-back's figures)
    swapins: float | None = None  # pages/s swapped in by a read-back under way
    word: str | None = None


@dataclass(frozen=True)
class ShowState:
    """What every output reads. Replaced as a whole by the conductor, never mutated."""

    t: float = 0.0
    phase: Phase = Phase.CALM
    # how hard the stage is pressed, [0, 1], the same in every act: memory by the one
    # formula (story.intensity), a CPU gauge by the share of work held back (1 - speed)
    intensity: float = 0.0
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
    # kills of other processes in the stage's domain (not the hog), in the order seen
    bystanders: tuple[KillRecord, ...] = ()
    counter_seen_t: float | None = None  # the story's memory: an unexplained counter rise
    replay_of: str | None = None  # the recording a replay performs
    act: str = "story"  # story | who-dies | bystander | throttle (for the recording only)
    # what the bottom gauge shows, read by every output instead of the act's name:
    # "memory" (the stage's RAM and swap), or "cpu" (act_view.speed, the work against
    # full speed; `stall`, the share of CPU periods throttled so far)
    gauge: str = "memory"
    lanes: tuple[Lane, ...] = ()  # per-process lanes of an act (empty: the story)
    act_view: ActView | None = None

    def phase_time(self, phase: Phase) -> float | None:
        for p, t in self.entered:
            if p is phase:
                return t
        return None
