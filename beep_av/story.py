"""The story: a pure phase machine and the intensity formula.

`advance(cfg, state, snap)` takes the previous ShowState and a new Snapshot and returns
the next ShowState. No I/O, no clock: time is whatever the snapshots say, so the same
sequence of snapshots always tells the same story (rehearsal, replay and tests rely on
it). Hostile snapshots (zero limits, counters going down, time going backwards, NaN)
never raise: the phase simply does not move backwards and rates hold their last value.

Phases only move forward: calm -> filling -> evicting -> swapping -> oom -> finale.
A phase passed over is recorded in `skipped` with its reason, in phase order.

`oom` means the kernel killed the hog (attribution.hog_verdict): a kernel record names
it, or (without a kernel log) its SIGKILL came with a rise of the oom_kill counter that
no other kill explains. A kernel kill of another process in the stage's domain is a
bystander: its own KillRecord (hog False) in `bystanders`, and the story goes on. A
SIGKILL without kernel OOM evidence is a signal from user space: `oom` is skipped, the
story ends in `finale` with a KillRecord that says so (oom False)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from beep_av.attribution import hog_verdict, killer_name, sigkilled
from beep_av.model import PHASES, KillRecord, KmsgKill, MiB, Phase, ShowState, Snapshot

# Evidence sources, in the order `detected_by` lists them.
SOURCES = ("exit", "oom_kill", "kmsg")

# Skip reasons (shown on screen and recorded; captions may translate them by key).
NO_SWAP = "no swap on the stage"
NO_CACHE = "no page cache on the stage"
SWAP_BEFORE_EVICT = "swap came before the cache was evicted"
KILL_BEFORE_EVICT = "the kill came before the cache was evicted"
KILL_BEFORE_SWAP = "the kill came before anything was swapped"
KILL_BEFORE_FILL = "the kill came before the hog was seen growing"
USER_SPACE_KILL = "the hog was killed by a signal from user space, not by the kernel"


@dataclass(frozen=True)
class StoryConfig:
    """What the story knows about the stage. Bytes and seconds."""

    ram_limit: int
    swap_limit: int  # 0: no swap on the stage
    cache_bytes: int  # page cache warmed in the stage; 0: nothing to evict
    expected_sources: tuple[str, ...] = SOURCES  # kill evidence the stage can give
    confirm_timeout: float = 1.0  # s after `oom` before `finale` without full confirmation
    # s after the hog's SIGKILL to wait for the kernel's evidence before calling it a
    # signal from user space: the kernel's record and counter come ~20 ms BEFORE waitpid
    # here (FIELD-NOTES), so this only covers a reader that fell behind a flood
    kernel_grace: float = 0.15
    # s an unexplained oom_kill rise may wait for the hog's exit (no kernel log) before
    # it is a kill of another process: a dying hog frees its memory first
    bystander_grace: float = 0.5
    evict_min_drop: int = 4 * MiB  # cache must fall by max(this, evict_fraction * peak)
    evict_fraction: float = 0.10
    swap_min: int = 1 * MiB  # swap in use above this, and rising, means `swapping`
    fill_rate_tau: float = 0.5  # s, time constant of the fill-rate smoothing


# ---------------------------------------------------------------- intensity

FILL_WEIGHT = 0.7
STALL_WEIGHT = 0.3


def intensity(fill: float, stall: float, phase: Phase) -> float:
    """Noise intensity in [0, 1].

        intensity = 0.7 * fill**2 + 0.3 * sqrt(stall), clamped to [0, 1]; 0 in oom/finale

    `fill` = (anon + cache + swap) / (ram_limit + swap_limit) of the stage, `stall` =
    PSI "some" stall fraction over the last interval. The square keeps a half-full stage
    quiet (0.18) and makes the last quarter climb steeply; the square root makes the
    first few percent of stall audible, since thrashing rarely stalls more than ~30%.
    After the kill the noise stops dead: 0."""
    if phase in (Phase.OOM, Phase.FINALE):
        return 0.0
    f = _unit(fill)
    s = _unit(stall)
    return _unit(FILL_WEIGHT * f * f + STALL_WEIGHT * math.sqrt(s))


def _unit(x: float) -> float:
    """Clamp to [0, 1]; NaN becomes 0."""
    if not x > 0.0:  # also catches NaN
        return 0.0
    return 1.0 if x > 1.0 else float(x)


def stage_fill(cfg: StoryConfig, snap: Snapshot) -> float:
    """(anon + cache + swap) / (ram_limit + swap_limit), in [0, 1]. The config's limits
    win; the snapshot's are the fallback; no limits at all: 0."""
    ram = cfg.ram_limit if cfg.ram_limit > 0 else snap.ram_limit
    swap = cfg.swap_limit if cfg.swap_limit > 0 else snap.swap_limit
    total = max(0, ram) + max(0, swap)
    if total <= 0:
        return 0.0
    used = max(0, snap.anon_bytes) + max(0, snap.cache_bytes) + max(0, snap.swap_bytes)
    return _unit(used / total)


# ---------------------------------------------------------------- evidence


def evidence(snap: Snapshot, accounted: int = 0) -> dict[str, float]:
    """Evidence of the HOG's kill in `snap`: source name -> show time it was seen (the
    snapshot's time when the source gave none). `accounted`: the rises of the oom_kill
    counter that kills of other processes explain; only a rise beyond them is the hog's."""
    out: dict[str, float] = {}
    if sigkilled(snap):
        out["exit"] = _time(snap.hog_exit_t, snap.t)
    if snap.oom_kill_count > accounted:
        out["oom_kill"] = _time(snap.oom_kill_t, snap.t)
    if snap.kmsg_kill is not None:
        out["kmsg"] = _time(snap.kmsg_seen_t, snap.t)
    return out


def _time(t: float | None, default: float) -> float:
    return t if t is not None and math.isfinite(t) else default


def psi_baseline(state: ShowState, snap: Snapshot) -> ShowState:
    """`state` with the PSI totals of `snap`, the stage's first reading, as its own: the
    stall is measured from there. The counters run since boot (or since the cgroup was
    made): differenced against 0, the first sample claimed a stall of 1.0."""
    prev = state.snapshot
    return replace(
        state, snapshot=replace(prev, psi_some_us=snap.psi_some_us, psi_full_us=snap.psi_full_us)
    )


def latency_ms(kernel_t: float | None, seen_t: float | None) -> float | None:
    """From the kernel's own time of a kill (its record, on the show's calibrated
    clock) to the moment the show read that record, in ms; None when either is unknown
    (no comparable kernel time: never 0)."""
    if kernel_t is None or seen_t is None:
        return None
    if not (math.isfinite(kernel_t) and math.isfinite(seen_t)):
        return None
    return (seen_t - kernel_t) * 1000.0


def evidence_record(
    pid: int,
    exit_code: int | None,
    oom_kill_count: int,
    kmsg: KmsgKill | None,
    t: float,
    *,
    nth: int = 1,
    hog: bool = True,
    kernel_t: float | None = None,
    seen_t: float | None = None,
    timed_by_kernel: bool = False,
) -> KillRecord:
    """One process's kill record from the evidence an act gathered: its exit status
    (137 or -9: a SIGKILL), its stage's oom_kill counter (at least `nth`: the kernel's
    nth kill there) and the kernel's record `kmsg` (its name, anon-rss; `kernel_t` and
    `seen_t` default to the record's own: the latency runs between them). It is an OOM
    kill when the kernel says so (record or counter), else a signal from user space.
    `timed_by_kernel`: `t` becomes the kernel's time of the record (else when it was
    read), so several kills keep the kernel's order."""
    sigkill = exit_code in (-9, 137)
    oom = kmsg is not None or oom_kill_count >= nth
    if kmsg is not None:
        kernel_t = kmsg.kernel_t if kernel_t is None else kernel_t
        seen_t = kmsg.seen_t if seen_t is None else seen_t
        if timed_by_kernel:
            t = _time(kernel_t, _time(seen_t, t))
    detected = {"exit": sigkill, "oom_kill": oom_kill_count >= nth, "kmsg": kmsg is not None}
    return KillRecord(
        pid=pid,
        name=kmsg.name if kmsg is not None else "python3",
        exit=137 if sigkill else exit_code,
        signal=9 if sigkill else None,
        oom_kill_count=oom_kill_count,
        kmsg=kmsg.text if kmsg is not None else None,
        anon_rss_kib=kmsg.anon_rss_kib if kmsg is not None else None,
        detected_by=tuple(s for s in SOURCES if detected[s]),
        latency_ms=latency_ms(kernel_t, seen_t) if kmsg is not None else None,
        t=t,
        hog=hog,
        oom=oom,
        killer="kernel" if oom else "user space",
        report=kmsg.report if kmsg is not None else None,
    )


def _kill_record(
    prev: KillRecord | None, snap: Snapshot, seen: dict[str, float], oom_t: float
) -> KillRecord:
    """The hog's kill as known now: merged with what earlier samples confirmed."""
    detected = set(seen) | set(prev.detected_by if prev else ())
    k = snap.kmsg_kill
    pid = k.pid if k else (snap.hog_pid if snap.hog_pid is not None else (prev.pid if prev else 0))
    name = k.name if k else (prev.name if prev else "hog")
    exited = sigkilled(snap) or (prev is not None and prev.exit == 137)
    lat = prev.latency_ms if prev is not None else None
    if k is not None:
        lat = latency_ms(snap.kmsg_t, snap.kmsg_seen_t) if lat is None else lat
    return KillRecord(
        pid=pid,
        name=name,
        exit=137 if exited else None,
        signal=9 if exited else None,
        oom_kill_count=max(snap.oom_kill_count, prev.oom_kill_count if prev else 0),
        kmsg=k.text if k else (prev.kmsg if prev else None),
        anon_rss_kib=k.anon_rss_kib if k else (prev.anon_rss_kib if prev else None),
        detected_by=tuple(s for s in SOURCES if s in detected),
        latency_ms=lat,
        t=oom_t,
        report=k.report if k is not None and k.report else (prev.report if prev else None),
    )


def _user_space_record(snap: Snapshot, t: float) -> KillRecord:
    """The hog's SIGKILL with no kernel OOM evidence: a signal from user space."""
    return KillRecord(
        pid=snap.hog_pid or 0,
        name="hog",
        exit=137,
        signal=9,
        oom_kill_count=snap.oom_kill_count,
        kmsg=None,
        anon_rss_kib=None,
        detected_by=("exit",),
        latency_ms=None,
        t=t,
        oom=False,
        killer=killer_name(snap.user_killers),
    )


def bystander_record(k: KmsgKill, t: float) -> KillRecord:
    """A kernel kill of another process in the stage's domain (not the hog)."""
    return KillRecord(
        pid=k.pid,
        name=k.name,
        exit=None,  # not our child: no exit status to read
        signal=9,  # the OOM killer always sends SIGKILL
        oom_kill_count=0,
        kmsg=k.text,
        anon_rss_kib=k.anon_rss_kib,
        detected_by=("kmsg",),
        latency_ms=latency_ms(k.kernel_t, k.seen_t),
        t=_time(k.seen_t, t),
        hog=False,
        report=k.report,
    )


def _bystanders(
    cfg: StoryConfig, state: ShowState, snap: Snapshot, kernel_log: bool, t: float
) -> tuple[tuple[KillRecord, ...], float | None, int]:
    """Kills of other processes in the stage's domain: (all of them, the time an
    unexplained counter rise was first seen, the counter rises they explain)."""
    out = list(state.bystanders)
    named = sum(1 for b in out if b.kmsg is not None)
    for k in snap.others[named:]:
        out.append(bystander_record(k, t))
    anonymous = sum(1 for b in out if b.kmsg is None)
    accounted = snap.others_counted + anonymous
    counter_t = state.counter_seen_t
    if kernel_log or state.kill is not None:
        return tuple(out), None, accounted
    # without a kernel log, only the counter says a kill happened: it is another
    # process's when the hog lives on well after it
    if snap.oom_kill_count > accounted and not sigkilled(snap):
        if counter_t is None:
            counter_t = t
        if t - counter_t >= cfg.bystander_grace and snap.hog_running:
            out.append(
                KillRecord(
                    pid=0,
                    name="?",
                    exit=None,
                    signal=9,
                    oom_kill_count=snap.oom_kill_count,
                    kmsg=None,
                    anon_rss_kib=None,
                    detected_by=("oom_kill",),
                    latency_ms=None,
                    t=counter_t,
                    hog=False,
                )
            )
            accounted += 1
            counter_t = None
    else:
        counter_t = None
    return tuple(out), counter_t, accounted


# ---------------------------------------------------------------- the phase machine


def _skip_reason(cfg: StoryConfig, state_cache_peak: int, phase: Phase, target: Phase) -> str:
    if phase is Phase.FILLING:
        return KILL_BEFORE_FILL
    if phase is Phase.EVICTING:
        if cfg.cache_bytes <= 0 or state_cache_peak < cfg.evict_min_drop:
            return NO_CACHE
        return SWAP_BEFORE_EVICT if target is Phase.SWAPPING else KILL_BEFORE_EVICT
    if phase is Phase.SWAPPING:
        return NO_SWAP if cfg.swap_limit <= 0 else KILL_BEFORE_SWAP
    if phase is Phase.OOM:
        return USER_SPACE_KILL
    return "passed over"


def _known_impossible(cfg: StoryConfig, phase: Phase) -> str | None:
    """A phase the stage can never show, skipped as soon as it is next in line."""
    if phase is Phase.EVICTING and cfg.cache_bytes <= 0:
        return NO_CACHE
    if phase is Phase.SWAPPING and cfg.swap_limit <= 0:
        return NO_SWAP
    return None


def smooth_fill(rate: float, grown: int, dt: float, tau: float) -> float:
    """The fill rate (bytes/s) after `grown` more bytes in `dt` > 0 seconds, smoothed
    with time constant `tau` (s); memory given back counts as no growth."""
    raw = max(0, grown) / dt
    alpha = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
    return rate + alpha * (raw - rate)


def stall_share(prev: Snapshot, snap: Snapshot, held: float = 0.0) -> float:
    """The PSI "some" stall fraction between two snapshots, in [0, 1]; `held` when time
    did not move forward, 0 when the counter went backwards (a reset, not negative
    pressure)."""
    dt = snap.t - prev.t if math.isfinite(snap.t) and math.isfinite(prev.t) else 0.0
    if dt <= 0:
        return held
    d_some = snap.psi_some_us - prev.psi_some_us
    return _unit(d_some / (dt * 1e6)) if d_some >= 0 else 0.0


def memory_phase(cfg: StoryConfig, prev: Snapshot, snap: Snapshot, cache_peak: int) -> Phase | None:
    """The memory phase `snap` shows against `prev`, by the story's rules (every memory
    stage, every act): swapping when swap in use is above cfg.swap_min and rising;
    evicting when the cache fell from its peak by max(evict_min_drop, evict_fraction of
    the peak) while the hog grows; filling when the hog grows; else None."""
    hog_growing = snap.hog_bytes > prev.hog_bytes or snap.anon_bytes > prev.anon_bytes
    drop_needed = max(cfg.evict_min_drop, cfg.evict_fraction * cache_peak)
    if snap.swap_bytes > cfg.swap_min and snap.swap_bytes > prev.swap_bytes:
        return Phase.SWAPPING
    if cache_peak > 0 and cache_peak - snap.cache_bytes >= drop_needed and hog_growing:
        return Phase.EVICTING
    if snap.hog_bytes > prev.hog_bytes:
        return Phase.FILLING
    return None


def advance(cfg: StoryConfig, state: ShowState, snap: Snapshot) -> ShowState:
    """The next ShowState after `snap`. Pure; never raises on odd snapshots."""
    prev = state.snapshot
    dt = snap.t - prev.t if math.isfinite(snap.t) and math.isfinite(prev.t) else 0.0

    # PSI stall fraction and the smoothed fill rate hold their value when time does not
    # move forward (or a counter went backwards: a reset, not negative pressure).
    stall, fill_rate = stall_share(prev, snap, state.stall), state.fill_rate
    if dt > 0:
        fill_rate = smooth_fill(fill_rate, snap.hog_bytes - prev.hog_bytes, dt, cfg.fill_rate_tau)
    cache_peak = max(state.cache_peak, snap.cache_bytes)

    # What is true now, each condition judged on this snapshot against the previous one.
    stamp0 = snap.t if math.isfinite(snap.t) else state.t
    kernel_log = "kmsg" in cfg.expected_sources and snap.kernel_log is not False
    bystanders, counter_seen_t, accounted = _bystanders(cfg, state, snap, kernel_log, stamp0)
    seen = evidence(snap, accounted)
    verdict = None
    if state.kill is None:
        verdict = hog_verdict(snap, kernel_log, accounted, cfg.kernel_grace)
    seen_any = (state.kill is not None and state.kill.oom) or verdict == "oom"
    target = state.phase
    if seen_any:
        target = Phase.OOM
    else:
        target = memory_phase(cfg, prev, snap, cache_peak) or target

    entered = state.entered
    skipped = state.skipped
    stamp = snap.t if math.isfinite(snap.t) else state.t
    if entered:
        stamp = max(stamp, entered[-1][1])  # entered times never go backwards either
    frontier = max([state.phase.index] + [p.index for p, _ in skipped])

    def enter(phase: Phase) -> None:
        nonlocal entered, skipped, frontier
        for p in PHASES[frontier + 1 : phase.index]:
            skipped = skipped + ((p, _skip_reason(cfg, cache_peak, p, phase)),)
        entered = entered + ((phase, stamp),)
        frontier = phase.index

    phase = state.phase
    if target.index > frontier:
        enter(target)
        phase = target

    kill, oom_t = state.kill, state.oom_t
    if verdict == "user":
        # a signal from user space: never an OOM kill; the story ends here
        kill = _user_space_record(snap, stamp)
        enter(Phase.FINALE)
        phase = Phase.FINALE

    # Phases this stage cannot show are skipped as soon as they are next in line.
    while frontier + 1 < Phase.OOM.index:
        nxt = PHASES[frontier + 1]
        reason = _known_impossible(cfg, nxt)
        if reason is None:
            break
        skipped = skipped + ((nxt, reason),)
        frontier = nxt.index

    # The kill record: created at oom, updated with each new source until finale.
    if phase is Phase.OOM:
        if oom_t is None:
            oom_t = stamp
        kill = _kill_record(kill, snap, seen, oom_t)
        expected = set(cfg.expected_sources) - (set() if kernel_log else {"kmsg"})
        confirmed = expected <= set(kill.detected_by)
        if confirmed or (math.isfinite(snap.t) and snap.t - oom_t >= cfg.confirm_timeout):
            enter(Phase.FINALE)
            phase = Phase.FINALE

    return replace(
        state,
        t=snap.t if math.isfinite(snap.t) else state.t,
        snapshot=snap,
        stall=stall,
        fill_rate=fill_rate,
        cache_peak=cache_peak,
        phase=phase,
        entered=entered,
        skipped=skipped,
        kill=kill,
        oom_t=oom_t,
        bystanders=bystanders,
        counter_seen_t=counter_seen_t,
        intensity=intensity(stage_fill(cfg, snap), stall, phase),
    )
