"""The story: a pure phase machine and the intensity formula.

`advance(cfg, state, snap)` takes the previous ShowState and a new Snapshot and returns
the next ShowState. No I/O, no clock: time is whatever the snapshots say, so the same
sequence of snapshots always tells the same story (rehearsal, replay and tests rely on
it). Hostile snapshots (zero limits, counters going down, time going backwards, NaN)
never raise: the phase simply does not move backwards and rates hold their last value.

Phases only move forward: calm -> filling -> evicting -> swapping -> oom -> finale.
A phase passed over is recorded in `skipped` with its reason, in phase order."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from beep_av.model import PHASES, KillRecord, MiB, Phase, ShowState, Snapshot

# Evidence sources, in the order `detected_by` lists them.
SOURCES = ("exit", "oom_kill", "kmsg")

# Skip reasons (shown on screen and recorded; captions may translate them by key).
NO_SWAP = "no swap on the stage"
NO_CACHE = "no page cache on the stage"
SWAP_BEFORE_EVICT = "swap came before the cache was evicted"
KILL_BEFORE_EVICT = "the kill came before the cache was evicted"
KILL_BEFORE_SWAP = "the kill came before anything was swapped"
KILL_BEFORE_FILL = "the kill came before the hog was seen growing"


@dataclass(frozen=True)
class StoryConfig:
    """What the story knows about the stage. Bytes and seconds."""

    ram_limit: int
    swap_limit: int  # 0: no swap on the stage
    cache_bytes: int  # page cache warmed in the stage; 0: nothing to evict
    expected_sources: tuple[str, ...] = SOURCES  # kill evidence the stage can give
    confirm_timeout: float = 1.0  # s after `oom` before `finale` without full confirmation
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


def evidence(snap: Snapshot) -> dict[str, float]:
    """Kill evidence in `snap`: source name -> show time it was seen or stamped
    (the snapshot's time when the source gave none)."""
    out: dict[str, float] = {}
    if snap.hog_exit in (-9, 137):
        out["exit"] = _time(snap.hog_exit_t, snap.t)
    if snap.oom_kill_count > 0:
        out["oom_kill"] = _time(snap.oom_kill_t, snap.t)
    if snap.kmsg_kill is not None:
        out["kmsg"] = _time(snap.kmsg_t, snap.t)
    return out


def _time(t: float | None, default: float) -> float:
    return t if t is not None and math.isfinite(t) else default


def _kill_record(
    prev: KillRecord | None, snap: Snapshot, seen: dict[str, float], oom_t: float
) -> KillRecord:
    """The kill as known now: merged with what earlier samples confirmed."""
    detected = set(seen) | set(prev.detected_by if prev else ())
    times = list(seen.values())
    if prev is not None:
        times.append(prev.t - prev.latency_ms / 1000.0)  # earliest evidence so far
    earliest = min(times) if times else oom_t
    k = snap.kmsg_kill
    pid = k.pid if k else (snap.hog_pid if snap.hog_pid is not None else (prev.pid if prev else 0))
    name = k.name if k else (prev.name if prev else "hog")
    exited = snap.hog_exit in (-9, 137) or (prev is not None and prev.exit == 137)
    return KillRecord(
        pid=pid,
        name=name,
        exit=137 if exited else None,
        signal=9 if exited else None,
        oom_kill_count=max(snap.oom_kill_count, prev.oom_kill_count if prev else 0),
        kmsg=k.text if k else (prev.kmsg if prev else None),
        anon_rss_kib=k.anon_rss_kib if k else (prev.anon_rss_kib if prev else None),
        detected_by=tuple(s for s in SOURCES if s in detected),
        latency_ms=max(0.0, (oom_t - earliest) * 1000.0),
        t=oom_t,
    )


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
    return "passed over"


def _known_impossible(cfg: StoryConfig, phase: Phase) -> str | None:
    """A phase the stage can never show, skipped as soon as it is next in line."""
    if phase is Phase.EVICTING and cfg.cache_bytes <= 0:
        return NO_CACHE
    if phase is Phase.SWAPPING and cfg.swap_limit <= 0:
        return NO_SWAP
    return None


def advance(cfg: StoryConfig, state: ShowState, snap: Snapshot) -> ShowState:
    """The next ShowState after `snap`. Pure; never raises on odd snapshots."""
    prev = state.snapshot
    dt = snap.t - prev.t if math.isfinite(snap.t) and math.isfinite(prev.t) else 0.0

    # PSI stall fraction and the smoothed fill rate hold their value when time does not
    # move forward (or a counter went backwards: a reset, not negative pressure).
    stall, fill_rate = state.stall, state.fill_rate
    if dt > 0:
        d_some = snap.psi_some_us - prev.psi_some_us
        stall = _unit(d_some / (dt * 1e6)) if d_some >= 0 else 0.0
        raw = max(0, snap.hog_bytes - prev.hog_bytes) / dt
        alpha = 1.0 - math.exp(-dt / cfg.fill_rate_tau) if cfg.fill_rate_tau > 0 else 1.0
        fill_rate = fill_rate + alpha * (raw - fill_rate)
    cache_peak = max(state.cache_peak, snap.cache_bytes)

    # What is true now, each condition judged on this snapshot against the previous one.
    seen = evidence(snap)
    seen_any = state.kill is not None or bool(seen)
    hog_growing = snap.hog_bytes > prev.hog_bytes or snap.anon_bytes > prev.anon_bytes
    drop_needed = max(cfg.evict_min_drop, cfg.evict_fraction * cache_peak)
    target = state.phase
    if seen_any:
        target = Phase.OOM
    elif snap.swap_bytes > cfg.swap_min and snap.swap_bytes > prev.swap_bytes:
        target = Phase.SWAPPING
    elif cache_peak > 0 and cache_peak - snap.cache_bytes >= drop_needed and hog_growing:
        target = Phase.EVICTING
    elif snap.hog_bytes > prev.hog_bytes:
        target = Phase.FILLING

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

    # Phases this stage cannot show are skipped as soon as they are next in line.
    while frontier + 1 < Phase.OOM.index:
        nxt = PHASES[frontier + 1]
        reason = _known_impossible(cfg, nxt)
        if reason is None:
            break
        skipped = skipped + ((nxt, reason),)
        frontier = nxt.index

    # The kill record: created at oom, updated with each new source until finale.
    kill, oom_t = state.kill, state.oom_t
    if phase is Phase.OOM:
        if oom_t is None:
            oom_t = stamp
        kill = _kill_record(kill, snap, seen, oom_t)
        confirmed = set(cfg.expected_sources) <= set(kill.detected_by)
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
        intensity=intensity(stage_fill(cfg, snap), stall, phase),
    )
