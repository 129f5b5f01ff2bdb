"""Watch mode: no hog. Follow the live memory pressure of the host or of one cgroup, and
bring the victim card and a beep at EVERY kernel OOM kill seen there.

Three parts:
- `resolve_target(path)`: where to watch (the host, or a v1/v2 memory cgroup; anything
  else is BadInput) and the StageFiles the sampler reads there.
- `WatchStory`: pure. Snapshots and kmsg kill records in, ShowStates out; no I/O, no
  clock (time is what the snapshots say).
- `WatchDriver`: the conductor's driver (driver.py): `run(publish, stop, t0)` samples at
  50 Hz with the Sampler (hog=None) until stopped. Watch has no finale: an interrupt is
  its end. There is no hog: pause, rate and release do not apply.

The phase follows the pressure, and unlike a show it may fall back (watch is not a
forward-only story). Each sample names a target from smoothed rates (bytes/s, time
constant 0.5 s): `swapping` when swap in use (> 1 MiB) is rising, `evicting` when the
page cache falls while anonymous memory grows, `filling` when anonymous memory grows,
else `calm`. A higher target is entered at once; a lower one only after the current
phase's condition has been absent for `hold` seconds (2 s), so the picture does not
flicker. A kill takes the stage: `oom` at the first evidence, `finale` once confirmed (or
after `confirm_timeout`), held `finale_hold` seconds, then back to watching. Kills that
arrive meanwhile wait their turn; each keeps its own time."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from beep_av import clock
from beep_av.errors import BadInput
from beep_av.model import KillRecord, KmsgKill, Phase, ShowState, Snapshot
from beep_av.procfs import cgroup_mount_path, in_memcg
from beep_av.procfs import task_memcg as _task_memcg
from beep_av.stages.base import StageFiles, memory_files
from beep_av.story import StoryConfig, intensity, stage_fill

MiB = 1 << 20

# ---------------------------------------------------------------- the target


@dataclass(frozen=True)
class WatchTarget:
    """What a watch follows: the host (version 0) or a memory cgroup (1, 2)."""

    version: int
    cgroup_dir: str | None
    memcg: str | None  # hierarchy path as the kernel writes it in kmsg (task_memcg=)
    files: StageFiles

    def describe(self) -> str:
        if not self.version:
            return "the host"
        return f"cgroup v{self.version} {self.memcg or self.cgroup_dir}"


def _candidates(path: str, cgroup_root: str) -> list[Path]:
    """`path` as given, then as a hierarchy path under the v1 memory and v2 mounts."""
    out = [Path(path)]
    rel = path.lstrip("/")
    if rel:
        for base in ("memory", "unified", ""):
            out.append(Path(cgroup_root, base, rel))
    return out


def resolve_target(
    path: str | None, cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc"
) -> WatchTarget:
    """The host (path None) or the memory cgroup at `path` (a directory, or a hierarchy
    path such as /system.slice). A missing or non-memory-cgroup path: BadInput."""
    if path is None:
        return WatchTarget(0, None, None, memory_files(0, None, proc_root))
    if not path.strip():
        raise BadInput("--cgroup: empty path")
    d = next((p for p in _candidates(path, cgroup_root) if p.is_dir()), None)
    if d is None:
        raise BadInput(f"--cgroup {path}: no such cgroup directory")
    d = d.resolve()
    if (d / "memory.limit_in_bytes").is_file() and (d / "memory.stat").is_file():
        version = 1
    elif (d / "memory.current").is_file() and (d / "memory.stat").is_file():
        version = 2
    else:
        raise BadInput(
            f"--cgroup {path}: {d} is not a memory cgroup (no memory.limit_in_bytes "
            "or memory.current)"
        )
    try:
        found = cgroup_mount_path(Path(proc_root, "self", "mountinfo").read_text(), str(d))
    except OSError:
        found = None
    memcg = found[1] if found and found[0] == version else None
    s = str(d)
    files = memory_files(version, s, proc_root)
    return WatchTarget(version, s, memcg, files)


# ---------------------------------------------------------------- the pure story


def task_memcg(kill: KmsgKill) -> str | None:
    """The victim's cgroup from an `oom-kill:` record (since 4.19), else None."""
    return _task_memcg(kill.text)


@dataclass(frozen=True)
class WatchConfig:
    """What the watch story knows. Bytes, bytes/s and seconds."""

    ram_limit: int
    swap_limit: int
    host: bool = True  # fill from MemTotal - MemAvailable (cache is reclaimable there)
    memcg: str | None = None  # kmsg kills count only at or below this cgroup
    kmsg: bool = True  # kmsg records are expected (else the counter alone is a kill)
    hold: float = 2.0  # a phase stays this long after its condition was last true
    rate_min: float = 4 * MiB  # growth below this is not "filling"
    swap_min: int = 1 * MiB
    tau: float = 0.5  # smoothing of the rates
    confirm_timeout: float = 0.5  # oom -> finale without full confirmation
    finale_hold: float = 3.0  # the victim card stays this long ...
    finale_hold_busy: float = 0.8  # ... or this long when more kills wait
    max_entered: int = 32  # entered keeps the latest transitions only


@dataclass
class _Draft:
    """A kill being assembled from its evidence."""

    t: float  # show time it was first seen (the kill's `oom` time)
    pid: int = 0
    name: str = "?"
    anon_rss_kib: int | None = None
    kmsg: str | None = None
    kmsg_t: float | None = None  # the kernel's time of it on the show's clock (calibrated)
    kmsg_seen_t: float | None = None  # when the show read its first kernel record
    counter_t: float | None = None  # when the oom_kill counter rose for it
    report: dict | None = None  # the kernel's whole report (oomreport), when read
    oom_kill_count: int = 0
    killed_line: bool = False  # the "Killed process" record (with anon-rss) arrived

    def record(self) -> KillRecord:
        sources = []
        if self.counter_t is not None:
            sources.append("oom_kill")
        if self.kmsg is not None:
            sources.append("kmsg")
        lat = None
        if self.kmsg_t is not None and self.kmsg_seen_t is not None:
            lat = (self.kmsg_seen_t - self.kmsg_t) * 1000.0
        return KillRecord(
            pid=self.pid,
            name=self.name,
            exit=137,  # an OOM kill is SIGKILL: what a shell would report (not read)
            signal=9,  # the OOM killer always sends SIGKILL
            oom_kill_count=self.oom_kill_count,
            kmsg=self.kmsg,
            anon_rss_kib=self.anon_rss_kib,
            detected_by=tuple(sources),
            latency_ms=lat,
            t=self.t,
            report=self.report,
        )


@dataclass
class _Rates:
    anon: float = 0.0
    cache: float = 0.0
    swap: float = 0.0


class WatchStory:
    """Snapshots (hog-less) + kmsg kill records -> ShowStates. Pure: no I/O, no clock."""

    def __init__(self, cfg: WatchConfig, stage: str = "watch") -> None:
        self.cfg = cfg
        self.state = ShowState(stage=stage)
        self.done: list[KillRecord] = []  # kills shown to their finale, in order
        self._queue: deque[_Draft] = deque()  # kills waiting for the stage
        self._current: _Draft | None = None
        self._current_since = 0.0  # show time the current kill took the stage
        self._finale_t: float | None = None
        self._drafts: dict[int, _Draft] = {}  # pid -> draft (kmsg kills), recent
        self._foreign: set[int] = set()  # pids killed outside the domain
        # "Killed process" records of unknown domain: (record, kernel time, seen at)
        self._orphans: list[tuple[KmsgKill, float | None, float]] = []
        self._credits: deque[float] = deque()  # counter rises not yet matched to a record
        self._count = 0
        self._rates = _Rates()
        self._seen: dict[Phase, float] = {}  # last time each pressure phase was true
        self._prev: Snapshot | None = None

    # ---- kills

    def all_kills(self) -> list[KillRecord]:
        """Every kill seen so far, shown or not, in the order seen."""
        out = list(self.done)
        if self._current is not None and self._finale_t is None:
            out.append(self._current.record())
        out += [d.record() for d in self._queue]
        return out

    def _new_draft(self, draft: _Draft) -> None:
        self._queue.append(draft)

    def _take_kmsg(self, k: KmsgKill, t: float, t0: float) -> None:
        cfg = self.cfg
        # the sampler's annotations: the kernel's time on the show's (calibrated) clock,
        # None without a calibration; and when the record was read
        kt = k.kernel_t
        seen = k.seen_t if k.seen_t is not None else t
        if k.pid in self._foreign:
            return
        draft = self._drafts.get(k.pid)
        memcg = task_memcg(k)
        if draft is None:
            if memcg is not None and cfg.memcg is not None and not in_memcg(memcg, cfg.memcg):
                self._foreign.add(k.pid)
                return
            if memcg is None and not cfg.host and cfg.memcg is not None:
                # no oom-kill: line to place it (kernels before 4.19): it counts only
                # with a rise of the cgroup's own counter
                self._orphans.append((k, kt, seen))
                return
            draft = _Draft(t=t, pid=k.pid, name=k.name, kmsg_t=kt, kmsg_seen_t=seen)
            self._drafts[k.pid] = draft
            self._new_draft(draft)
        if kt is not None and (draft.kmsg_t is None or kt < draft.kmsg_t):
            draft.kmsg_t = kt
        if draft.kmsg_seen_t is None or seen < draft.kmsg_seen_t:
            draft.kmsg_seen_t = seen
        if draft.kmsg is None or k.anon_rss_kib is not None:
            draft.kmsg = k.text  # the "Killed process" line wins over "oom-kill:"
            draft.name = k.name
            draft.report = k.report or draft.report
        if k.anon_rss_kib is not None:
            draft.anon_rss_kib = k.anon_rss_kib
            draft.killed_line = True

    def _match_counter(self, t: float) -> None:
        """Pair counter rises with kmsg kills; a rise left alone long enough is a kill of
        its own (no kmsg, or a record we could not place)."""
        cfg = self.cfg
        waiting = [d for d in self._drafts.values() if d.counter_t is None]
        waiting.sort(key=lambda d: d.t)
        for d in waiting:
            if not self._credits:
                break
            d.counter_t = self._credits.popleft()
            d.oom_kill_count = self._count
        while self._credits and self._orphans:
            k, kt, seen = self._orphans.pop(0)
            draft = _Draft(
                t=seen,
                pid=k.pid,
                name=k.name,
                anon_rss_kib=k.anon_rss_kib,
                kmsg=k.text,
                kmsg_t=kt,
                kmsg_seen_t=seen,
                counter_t=self._credits.popleft(),
                oom_kill_count=self._count,
                killed_line=k.anon_rss_kib is not None,
                report=k.report,
            )
            self._drafts[k.pid] = draft
            self._new_draft(draft)
        while self._credits and (not cfg.kmsg or t - self._credits[0] >= cfg.confirm_timeout):
            ct = self._credits.popleft()
            self._new_draft(_Draft(t=ct, counter_t=ct, oom_kill_count=self._count))
        # a record no counter rise claimed in time was a kill outside the cgroup
        self._orphans = [o for o in self._orphans if t - o[2] < cfg.confirm_timeout]

    def _confirmed(self, d: _Draft, t: float) -> bool:
        cfg = self.cfg
        full = d.counter_t is not None and (d.killed_line or not cfg.kmsg)
        return full or t - max(d.t, self._current_since) >= cfg.confirm_timeout

    # ---- pressure

    def _pressure_phase(self, snap: Snapshot, dt: float) -> Phase:
        cfg, r, prev = self.cfg, self._rates, self._prev
        if prev is not None and dt > 0:
            a = 1.0 - math.exp(-dt / cfg.tau) if cfg.tau > 0 else 1.0
            r.anon += a * ((snap.anon_bytes - prev.anon_bytes) / dt - r.anon)
            r.cache += a * ((snap.cache_bytes - prev.cache_bytes) / dt - r.cache)
            r.swap += a * ((snap.swap_bytes - prev.swap_bytes) / dt - r.swap)
        if snap.swap_bytes > cfg.swap_min and r.swap > cfg.rate_min / 4:
            return Phase.SWAPPING
        if r.anon > cfg.rate_min and r.cache < -cfg.rate_min:
            return Phase.EVICTING
        if r.anon > cfg.rate_min:
            return Phase.FILLING
        return Phase.CALM

    def _follow(self, current: Phase, target: Phase, t: float) -> Phase:
        """Rise at once; fall back only after `hold` s without the current condition."""
        for p in (Phase.FILLING, Phase.EVICTING, Phase.SWAPPING):
            if p.index <= target.index:
                self._seen[p] = t
        if current.index >= Phase.OOM.index:
            return target
        if target.index >= current.index:
            return target
        last = self._seen.get(current, -math.inf)
        return target if t - last >= self.cfg.hold else current

    def _fill(self, snap: Snapshot) -> float:
        cfg = self.cfg
        if cfg.host:
            total = cfg.ram_limit + cfg.swap_limit
            used = max(0, snap.usage_bytes) + max(0, snap.swap_bytes)
            return used / total if total > 0 else 0.0
        return stage_fill(StoryConfig(cfg.ram_limit, cfg.swap_limit, 0), snap)

    # ---- one step

    def step(self, snap: Snapshot, kills: list[KmsgKill], t0: float) -> ShowState:
        """The next ShowState after `snap` and the kmsg kill records read with it
        (`t0`: clock.now() at show start, to place kernel timestamps)."""
        cfg, state = self.cfg, self.state
        t = snap.t if math.isfinite(snap.t) else state.t
        prev = self._prev
        dt = t - prev.t if prev is not None and math.isfinite(prev.t) else 0.0
        stall = state.stall
        if prev is not None and dt > 0:
            d_some = snap.psi_some_us - prev.psi_some_us
            stall = min(1.0, max(0.0, d_some / (dt * 1e6))) if d_some >= 0 else 0.0

        # evidence
        for k in kills:
            self._take_kmsg(k, t, t0)
        if snap.oom_kill_count > self._count:
            for _ in range(snap.oom_kill_count - self._count):
                self._credits.append(t)
            self._count = snap.oom_kill_count
        self._match_counter(t)
        if len(self._drafts) > 256:  # forget old pids; a kill is settled long before
            for pid in list(self._drafts)[:128]:
                del self._drafts[pid]
        if len(self._foreign) > 4096:
            self._foreign.clear()

        pressure = self._pressure_phase(snap, dt)
        phase, kill, oom_t = state.phase, state.kill, state.oom_t
        steps: list[Phase] = []  # phases entered in this step, in order
        # the stage: the current kill, its finale, then the next or back to watching
        if self._current is not None and self._finale_t is not None:
            hold = cfg.finale_hold_busy if self._queue else cfg.finale_hold
            if t - self._finale_t >= hold:
                self._current = None
                self._finale_t = None
                kill = None
                phase = pressure
                self._seen.clear()
        if self._current is None and self._queue:
            self._current = self._queue.popleft()
            self._current_since = t
            phase = Phase.OOM
            steps.append(phase)
            oom_t = self._current.t
        if self._current is not None:
            kill = self._current.record()
            if self._finale_t is None and self._confirmed(self._current, t):
                self._finale_t = t
                phase = Phase.FINALE
                steps.append(phase)
                self.done.append(kill)
        else:
            phase = self._follow(phase, pressure, t)
            if phase is not state.phase:
                steps.append(phase)

        entered = state.entered
        if steps:
            entered = (*entered, *((p, t) for p in steps))[-cfg.max_entered :]
        self._prev = snap
        self.state = replace(
            state,
            t=t,
            snapshot=snap,
            phase=phase,
            entered=entered,
            stall=stall,
            fill_rate=max(0.0, self._rates.anon),
            cache_peak=max(state.cache_peak, snap.cache_bytes),
            kill=kill,
            oom_t=oom_t,
            intensity=intensity(self._fill(snap), stall, phase),
        )
        return self.state


# ---------------------------------------------------------------- the driver


@dataclass
class WatchDriver:
    """Samples `target` at `hz` and publishes the watch story's states until stopped.
    `open()` starts the sampler (kmsg from now on) and gives the limits; `run()` is the
    conductor's engine; `close()` is safe twice."""

    kind = "watch"
    target: WatchTarget
    hz: float = 50.0
    cfg_overrides: dict = field(default_factory=dict)
    sampler: object | None = None
    story: WatchStory | None = None
    kernel_clock: object | None = None  # kclock.KernelClock: kernel times -> show times

    def open(self) -> tuple[int, int]:
        """Open the sampler; return (ram_limit, swap_limit) in bytes."""
        if self.sampler is None:
            from beep_av.sampler import Sampler

            self.sampler = Sampler(
                self.target.files, None, hz=self.hz, kernel_clock=self.kernel_clock
            )
            s = self.sampler
            cfg = WatchConfig(
                ram_limit=s.ram_limit,
                swap_limit=s.swap_limit,
                host=self.target.version == 0,
                memcg=self.target.memcg,
                kmsg=s._kmsg_fd is not None,
                **self.cfg_overrides,
            )
            self.story = WatchStory(cfg)
        return self.sampler.ram_limit, self.sampler.swap_limit

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.sampler, "notes", []))

    def kills(self) -> list[KillRecord]:
        return self.story.all_kills() if self.story is not None else []

    def run(self, publish: Callable[[ShowState], None], stop: threading.Event, t0: float) -> bool:
        """Publish a state every 1/hz s (sooner on a kmsg record or the OOM eventfd)
        until `stop` is set. Returns False: a watch ends only when stopped."""
        self.open()
        src, story = self.sampler, self.story
        assert src is not None and story is not None
        src.t0 = t0
        tick = 1.0 / self.hz
        next_at = clock.now()
        try:
            while not stop.is_set():
                snap = src.read(clock.now() - t0)
                new = list(src.kills)
                src.kills.clear()  # ours to consume: it would grow for as long as we watch
                publish(story.step(snap, new, t0))
                next_at += tick
                now = clock.now()
                if next_at < now:  # fell behind: do not burst to catch up
                    next_at = now + tick
                src.wait(max(0.0, next_at - now))
        finally:
            self.close()
        return False

    def command(self, cmd: str) -> str | None:
        return None  # no hog: nothing to pause, speed up or release

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()


def summary_lines(kills: list[KillRecord], seconds: float, what: str) -> list[str]:
    """The summary printed when a watch ends: one line per kill, then the total."""
    out = []
    for i, k in enumerate(kills, 1):
        rss = f"{k.anon_rss_kib / 1024:.0f} MiB" if k.anon_rss_kib is not None else "unknown"
        who = f"pid {k.pid} ({k.name})" if k.pid else "an unnamed process"
        by = "+".join(k.detected_by) or "-"
        out.append(f"kill {i}: {k.t:8.2f}s  {who}  anon-rss {rss}  seen by {by}")
    n = len(kills)
    out.append(f"watch: {n} OOM kill{'s' if n != 1 else ''} seen in {what} over {seconds:.1f} s")
    return out
