"""The rehearsal stage: nothing is allocated; a model of a memory cgroup under a
growing hog produces Snapshots with every phase of the story, deterministic for a seed.

The model (all bytes, seconds of show time):
- The presenter's controls give the hog's *effort* E(t): the integral of `rate` over the
  time it ran (start, pause, resume, set_rate). Effort is what the hog would have
  touched at full speed.
- Touched bytes H grow with effort at a speed that depends on where the stage is:
  full speed while filling, a little slower while the kernel reclaims cache, much slower
  while every new page costs a swap-out (the hog waits on the disk). H(E) is piecewise
  linear, so every phase boundary has an exact time: reads at any instants tell the
  same story.
- anon = base (the hog's interpreter) + H. The cache stays until anon + cache reaches
  the usable RAM, then gives way; swap takes the overflow once the cache is gone; the
  kernel kills the hog when anon reaches usable RAM + swap.
- PSI "some"/"full" totals grow at a stall fraction fixed per region (reclaim stalls a
  little, swapping a lot, more as swap fills).
- The kill's evidence arrives as measured on real machines (FIELD-NOTES): the OOM
  counter and the kmsg record within 1 ms of the kill, waitpid ~20 ms later."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from beep_av.errors import BadInput
from beep_av.model import KmsgKill, MiB, Phase, ShowState, Snapshot
from beep_av.stages.base import Say

# Calibrated against a real show on this machine (assets/example-show.jsonl: cgroup v1,
# 192M RAM + 128M swapfile, 48M cache, 96M/s): the hog keeps its pace while the kernel
# evicts the cache (96 MiB/s) and nearly keeps it while swapping (~92 MiB/s);
# PSI "some" barely moves while evicting and averages ~18% while swapping (in bursts;
# the model is smooth), with "full" ~94% of "some"; RAM usage reaches the limit.
# Hog speed (touched bytes per byte of effort) in each region.
SPEED_FILL = 1.0
SPEED_EVICT = 1.0
SPEED_SWAP = 0.95
# PSI "some" stall fraction per region; "full" is FULL_SHARE of it.
STALL_FILL = 0.0
STALL_EVICT = 0.005
STALL_SWAP = (0.12, 0.18, 0.24)  # first, second, last third of the swap
FULL_SHARE = 0.94
HOG_BASE = int(9.6 * MiB)  # the hog's interpreter and numpy, resident before it climbs
KERNEL_SLACK = 0.004  # share of the RAM limit that is neither hog nor cache at the limit


@dataclass(frozen=True)
class _Region:
    h0: float  # touched bytes where the region starts
    h1: float  # ... and ends (inf for the last)
    speed: float  # dH/dE
    stall: float  # PSI some fraction while in it


@dataclass(frozen=True)
class KillPlan:
    """When the modelled kill happens and how its evidence arrives (show time, s)."""

    t: float
    oom_kill_t: float
    kmsg_t: float
    exit_t: float
    pid: int
    anon_rss_kib: int
    kmsg: KmsgKill | None  # None: released by the presenter (no OOM evidence)


class RehearsalModel:
    """The pure part: controls in, Snapshots out. No clock, no sleeping."""

    def __init__(self, ram: int, swap: int, cache: int, rate: int, seed: int) -> None:
        if ram <= 0:
            raise BadInput(f"--ram: {ram} bytes is not a stage size")
        if swap < 0 or cache < 0:
            raise BadInput("--swap/--cache: sizes must not be negative")
        if rate <= 0:
            raise BadInput(f"--rate: {rate} bytes/s must be more than 0")
        rng = np.random.default_rng(seed)
        self.ram, self.swap, self.rate = int(ram), int(swap), int(rate)
        # plain floats: numpy scalars would leak into the ShowState and the recording
        self.base = int(HOG_BASE * float(rng.uniform(0.9, 1.1)))
        self.usable = int(ram * (1 - KERNEL_SLACK * float(rng.uniform(0.8, 1.2))))
        # the warmed cache cannot hold more than what the hog's base leaves of the RAM
        self.cache = int(min(cache, max(0, self.usable - self.base) * 0.9))
        self.pid = int(rng.integers(2000, 60000))
        self._jitter = [
            float(x) for x in rng.uniform(0.92, 1.08, size=3)
        ]  # speeds wobble a little per run
        self._kill_delays = (
            float(rng.uniform(0.0001, 0.0008)),  # oom_kill counter after the kill
            float(rng.uniform(0.0001, 0.0009)),  # kmsg record
            float(rng.uniform(0.016, 0.024)),  # waitpid
        )
        self._noise_seed = int(rng.integers(1 << 31))
        self.regions = self._regions()
        # controls: (show time, rate while running from then on; 0 = paused)
        self._segments: list[tuple[float, float]] = []
        self.started_at: float | None = None
        self.paused = False
        self.released_at: float | None = None

    # ------------------------------------------------------------ geometry

    def _regions(self) -> list[_Region]:
        j = self._jitter
        h_evict = max(0.0, self.usable - self.cache - self.base)  # anon + cache = usable
        h_swap = max(h_evict, float(self.usable - self.base))  # cache gone
        h_kill = h_swap + self.swap
        regions = [
            _Region(0.0, h_evict, SPEED_FILL, STALL_FILL),
            _Region(h_evict, h_swap, SPEED_EVICT * j[0], STALL_EVICT),
        ]
        third = self.swap / 3
        for k, stall in enumerate(STALL_SWAP):
            regions.append(
                _Region(
                    h_swap + k * third, h_swap + (k + 1) * third, SPEED_SWAP * j[1 + k % 2], stall
                )
            )
        regions = [r for r in regions if r.h1 > r.h0]
        self.h_kill = h_kill
        return regions

    def effort_to_bytes(self, e: float) -> float:
        """Touched bytes after `e` bytes of effort (capped at the kill)."""
        h = 0.0
        for r in self.regions:
            need = (r.h1 - r.h0) / r.speed
            if e <= need:
                return h + e * r.speed
            e -= need
            h = r.h1
        return self.h_kill

    def bytes_to_effort(self, h: float) -> float:
        e = 0.0
        for r in self.regions:
            if h <= r.h1:
                return e + (h - r.h0) / r.speed
            e += (r.h1 - r.h0) / r.speed
        return e

    # ------------------------------------------------------------ controls

    def start(self, t: float) -> None:
        if self.started_at is None:
            self.started_at = t
            self._segments.append((t, 0.0 if self.paused else float(self.rate)))

    def pause(self, t: float) -> None:
        self.paused = True
        if self.started_at is not None:
            self._segments.append((t, 0.0))

    def resume(self, t: float) -> None:
        self.paused = False
        if self.started_at is None:
            self.start(t)
        else:
            self._segments.append((t, float(self.rate)))

    def set_rate(self, t: float, rate: int) -> None:
        if rate <= 0:
            raise BadInput(f"--rate: {rate} bytes/s must be more than 0")
        self.rate = int(rate)
        if self.started_at is not None and not self.paused:
            self._segments.append((t, float(self.rate)))

    def release(self, t: float) -> None:
        """The presenter kills the hog: it dies by SIGKILL, no OOM evidence."""
        if self.released_at is None and self.kill_plan(t) is None:
            self.released_at = t

    # ------------------------------------------------------------ time

    def effort(self, t: float) -> float:
        """Effort spent by show time `t`."""
        e = 0.0
        for i, (ts, rate) in enumerate(self._segments):
            if t <= ts:
                break
            end = self._segments[i + 1][0] if i + 1 < len(self._segments) else math.inf
            e += rate * (min(t, end) - ts)
        return e

    def time_of_effort(self, e: float) -> float | None:
        """When the effort reaches `e` under the controls given so far (None: never,
        e.g. paused)."""
        if e <= 0:
            return self._segments[0][0] if self._segments else None
        done = 0.0
        for i, (ts, rate) in enumerate(self._segments):
            end = self._segments[i + 1][0] if i + 1 < len(self._segments) else math.inf
            span = rate * (end - ts)
            if rate > 0 and done + span >= e:
                return ts + (e - done) / rate
            done += span
        return None

    def kill_plan(self, t: float) -> KillPlan | None:
        """The kill, if it has happened by `t` (evidence may still be on its way)."""
        if self.released_at is not None and self.released_at <= t:
            tk = self.released_at
            anon = self.base + self.effort_to_bytes(self.effort(tk))
            d = self._kill_delays
            return KillPlan(tk, math.inf, math.inf, tk + d[2], self.pid, int(anon) // 1024, None)
        tk = self.time_of_effort(self.bytes_to_effort(self.h_kill))
        if tk is None or tk > t or (self.released_at is not None and self.released_at < tk):
            return None
        d = self._kill_delays
        anon_ram = min(self.base + self.h_kill, self.usable)
        rss_kib = int(anon_ram) // 1024
        total_vm = rss_kib + 24_000 + self.pid % 997
        text = (
            f"Memory cgroup out of memory: Killed process {self.pid} (python3) "
            f"total-vm:{total_vm}kB, anon-rss:{rss_kib}kB, file-rss:{5120 + self.pid % 113}kB, "
            f"shmem-rss:0kB, UID:0 pgtables:{rss_kib // 500 + 80}kB oom_score_adj:1000"
        )
        kmsg = KmsgKill(
            pid=self.pid, name="python3", anon_rss_kib=rss_kib, cgroup_oom=True, text=text
        )
        return KillPlan(tk, tk + d[0], tk + d[1], tk + d[2], self.pid, rss_kib, kmsg)

    def next_event(self, t: float) -> float | None:
        """The first modelled event after `t`: a region boundary, the kill or one of its
        pieces of evidence. None when nothing more will happen under these controls."""
        times = []
        for r in self.regions:
            ts = self.time_of_effort(self.bytes_to_effort(r.h1))
            if ts is not None and math.isfinite(r.h1):
                times.append(ts)
        plan = self.kill_plan(math.inf)
        if plan is not None:
            times += [plan.oom_kill_t, plan.kmsg_t, plan.exit_t]  # what a read can see
        later = [x for x in times if x > t and math.isfinite(x)]
        return min(later) if later else None

    def _psi(self, t: float, end: float) -> float:
        """PSI some stall microseconds accumulated until min(t, end)."""
        total = 0.0
        for r in self.regions:
            if r.stall <= 0:
                continue
            a = self.time_of_effort(self.bytes_to_effort(r.h0))
            if a is None or a >= t:
                continue
            b = self.time_of_effort(self.bytes_to_effort(r.h1))
            b = min(t, end, b if b is not None else math.inf)
            if b > a:
                total += r.stall * (b - a)
        return total * 1e6

    def read(self, t: float) -> Snapshot:
        """The stage at show time `t` (seconds)."""
        plan = self.kill_plan(t)
        running = self.started_at is not None and self.started_at <= t
        end = plan.t if plan is not None else math.inf
        h = self.effort_to_bytes(self.effort(min(t, end))) if running else 0.0
        anon = self.base + h  # the hog process is resident (and waiting) from prepare on
        # reclaim keeps the cache just under the usable RAM's leftovers
        cache = float(min(self.cache, max(0.0, self.usable - anon)))
        anon_ram = min(anon, self.usable - cache)
        swap = max(0.0, anon - anon_ram)
        noise = self._noise(t)
        anon_ram = max(0.0, anon_ram - noise * 0.002 * self.ram)
        psi_some = self._psi(t, end)
        snap = dict(
            t=t,
            anon_bytes=int(anon_ram),
            cache_bytes=int(cache),
            swap_bytes=int(min(swap, self.swap)),
            usage_bytes=int(min(self.ram, anon_ram + cache + self.ram * 0.004)),
            ram_limit=self.ram,
            swap_limit=self.swap,
            psi_some_us=int(psi_some),
            psi_full_us=int(psi_some * FULL_SHARE),
            hog_bytes=int(h),
            hog_pid=self.pid,
            hog_running=True,
        )
        if plan is not None:
            if t >= plan.exit_t:
                # the dead hog's memory is freed; the cache it never owned stays evicted
                snap.update(anon_bytes=0, swap_bytes=0, usage_bytes=int(self.ram * 0.004))
                snap.update(hog_running=False, hog_exit=-9, hog_exit_t=plan.exit_t)
            if t >= plan.oom_kill_t:
                snap.update(oom_kill_count=1, oom_kill_t=plan.oom_kill_t)
            if t >= plan.kmsg_t and plan.kmsg is not None:
                snap.update(kmsg_kill=plan.kmsg, kmsg_t=plan.kmsg_t, kmsg_seen_t=t)
        return Snapshot(**snap)

    def _noise(self, t: float) -> float:
        """A small deterministic wobble in [0, 1) for show time `t` (ms resolution)."""
        x = (self._noise_seed * 0x9E3779B1 + int(t * 1000) * 0x85EBCA77) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
        x ^= x >> 12
        return x / 2**32


class RehearsalSource:
    """The model as a Source: read() is the model; wait() sleeps but wakes right when a
    modelled event falls inside the timeout, so detection latency stays tiny."""

    def __init__(self, model: RehearsalModel, t0: float) -> None:
        self.model = model
        self.t0 = t0
        self._last_read = -math.inf

    def read(self, t: float) -> Snapshot:
        self._last_read = t
        return self.model.read(t)

    def wait(self, timeout: float) -> None:
        now = time.monotonic() - self.t0
        # an event since the last read is pending: like a readable eventfd, return now
        nxt = self.model.next_event(self._last_read)
        if nxt is not None and nxt <= now:
            return
        if nxt is not None and nxt < now + timeout:
            timeout = nxt - now + 0.0002  # land just after the event
        if timeout > 0:
            time.sleep(timeout)

    def close(self) -> None:
        pass


class RehearsalStage:
    """Stage protocol (kind "rehearsal"). `t0` is time.monotonic() at show start; show
    time is time.monotonic() - t0. Sizes in bytes, rate in bytes per second."""

    kind = "rehearsal"

    def __init__(
        self, ram: int, swap: int, cache: int, rate: int, seed: int | None, t0: float
    ) -> None:
        if seed is None:
            seed = int.from_bytes(os.getrandom(4), "little")
        self.seed = seed
        self.t0 = t0
        self.model = RehearsalModel(ram, swap, cache, rate, seed)
        self.ram_limit = self.model.ram
        self.swap_limit = self.model.swap
        self.cache_bytes = self.model.cache
        self._source: RehearsalSource | None = None

    @property
    def rate(self) -> int:
        return self.model.rate

    @property
    def paused(self) -> bool:
        return self.model.paused

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def describe(self) -> str:
        swap = f"{self.swap_limit // MiB} MiB swap" if self.swap_limit else "no swap"
        return (
            f"rehearsal (nothing allocated, seed {self.seed}): "
            f"{self.ram_limit // MiB} MiB RAM + {swap}, {self.cache_bytes // MiB} MiB cache"
        )

    def prepare(self, say: Say) -> None:
        say(f"stage: {self.describe()}")

    def start(self) -> None:
        self.model.start(self._now())

    def source(self) -> RehearsalSource:
        if self._source is None:
            self._source = RehearsalSource(self.model, self.t0)
        return self._source

    def pause(self) -> None:
        self.model.pause(self._now())

    def resume(self) -> None:
        self.model.resume(self._now())

    def set_rate(self, rate: int) -> None:
        self.model.set_rate(self._now(), rate)

    def release(self) -> None:
        self.model.release(self._now())

    def teardown(self) -> None:
        pass


def offline_states(
    model: RehearsalModel, calm: float = 1.0, hz: float = 50.0, limit: float = 3600.0
) -> Iterator[ShowState]:
    """Drive the model through the story without a clock: start after `calm` s, one
    ShowState every 1/hz s until finale (or `limit` s). For tests, benchmarks, and
    writing a rehearsal recording fast."""
    from beep_av import story  # the story is pure; imported here to keep stages light

    cfg = story.StoryConfig(ram_limit=model.ram, swap_limit=model.swap, cache_bytes=model.cache)
    state = ShowState(stage="rehearsal")
    i = 0
    while True:
        t = i / hz
        if model.started_at is None and t >= calm:
            model.start(calm)
        state = story.advance(cfg, state, model.read(t))
        yield state
        if state.phase is Phase.FINALE or t >= limit:
            return
        i += 1
