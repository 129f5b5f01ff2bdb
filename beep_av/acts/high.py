"""`--act high` (cgroup v2): the kernel's brake that slows instead of killing. The hog
climbs as in the story in a memory cgroup whose `memory.max` is well above where it is
going and whose `memory.high` is below it: past `memory.high` the kernel makes every
allocation reclaim and sleep (memory.events `high` counts each time), so the climb
slows to a crawl; nobody dies. The memory twin of the throttle act (what Kubernetes'
memory QoS builds on). No swap by default: nothing to reclaim, all brake. On cgroup v1
there is no memory.high: exit 3 before any stage exists."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from beep_av.acts.common import (
    LANE_EVERY,
    ActDriver,
    Frame,
    ModelClock,
    ProcWatch,
    StageClock,
    watched_lane,
)
from beep_av.acts.throttle import CLOSING
from beep_av.errors import CannotStage
from beep_av.model import Lane, Phase, Snapshot
from beep_av.stages.cgroup import CgroupStage, pick_route
from beep_av.story import evidence_record
from beep_av.summary import share_text

MiB = 1 << 20
TICK = 0.02
HIGH_SHARE = 0.5  # memory.high, of memory.max (--ram)
TARGET_SHARE = 0.8  # where the hog is going: above high, well below max
HELD_S = 8.0  # how long the act shows the brake once the kernel holds the hog
RATE_WINDOW = 1.0  # s: the fill rate is measured over this
CLIMB_MAX_S = 120.0  # the hog never reached memory.high: the act says so


def events_high(raw: bytes) -> int | None:
    """memory.events' `high`: how many times the cgroup went over memory.high and the
    kernel throttled it (reclaim and a sleep)."""
    i = (b"\n" + raw).find(b"\nhigh ")
    if i < 0:
        return None
    end = raw.find(b"\n", i)
    try:
        return int(raw[i + 5 : end if end >= 0 else None])
    except ValueError:
        return None


# ---------------------------------------------------------------- the seam: sources


@dataclass(frozen=True)
class HighReading:
    t: float
    snap: Snapshot  # the stage's memory, PSI, the hog's bytes and exit, the kernel's records
    lanes: tuple[Lane, ...]  # the hog
    high: int  # memory.events high since the stage began


class HighStage(CgroupStage):
    """The memory cgroup stage (v2, or a systemd scope) with memory.high set below the
    hog's target: written into the cgroup, or given to systemd-run as MemoryHigh."""

    def __init__(self, high: int, **kw) -> None:
        super().__init__(**kw)
        self.high = high
        self.scope_props = (f"MemoryHigh={int(high)}",)

    def _make_v2(self, say) -> None:
        super()._make_v2(say)
        self._write("memory.high", self.high)


class HighStageSource(StageClock):
    """The real stage as a source: HighStage, the story's sampler (the climbing hog's
    bytes, woken by its event fds), the hog's /proc watch, memory.events; the real
    clock. Actions: start (climb to the target)."""

    def __init__(self, plan: HighPlan, rate: int) -> None:
        self.plan = plan
        self.stage = HighStage(plan.high, ram=plan.ram, swap=plan.swap, rate=rate)
        self.sampler = None
        self.watch: ProcWatch | None = None
        self.t0 = 0.0
        self.swap_limit = 0
        self._events_fd: int | None = None
        self._high0: int | None = None
        self._lane: Lane | None = None
        self._lane_t = -1.0

    def prepare(self, say) -> None:
        route = pick_route(self.stage.cgroup_root, self.stage.proc_root)
        if route.kind == "v1":  # before anything exists
            raise CannotStage(
                "--act high needs cgroup v2: memory.high does not exist on cgroup v1, "
                "which is where this machine stages (try --act freeze, or a v2 machine)"
            )
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        self.watch = ProcWatch(self.stage.hog.pid)
        files = self.stage.files()
        self._events_fd = os.open(files.oom_events, os.O_RDONLY | os.O_CLOEXEC)
        self._high0 = self._high()
        self.stage.hog.set_limit(self.plan.target)

    def _high(self) -> int:
        try:
            return events_high(os.pread(self._events_fd, 4096, 0)) or 0
        except OSError:
            return 0

    def begin(self, t0: float, ram: int, kernel_clock) -> None:
        from beep_av.sampler import Sampler

        self.t0 = t0
        self.sampler = Sampler(self.stage.files(), self.stage.hog, t0=t0, ram_limit=ram,
                               swap_limit=self.swap_limit, kernel_clock=kernel_clock)  # fmt: skip

    def read(self) -> HighReading:
        t = self.now()
        snap = self.sampler.read(t)
        if self._lane is None or t - self._lane_t >= LANE_EVERY:
            self._lane, self._lane_t = watched_lane("hog", self.stage.hog, self.watch), t
        return HighReading(t, snap, (self._lane,), self._high() - (self._high0 or 0))

    def start(self) -> None:
        self.stage.start()

    def close(self) -> None:
        if self._events_fd is not None:
            os.close(self._events_fd)
            self._events_fd = None
        if self.watch is not None:
            self.watch.close()
        if self.sampler is not None:
            self.sampler.close()
        self.stage.teardown()


class HighModelSource(ModelClock):
    """The rehearsal's source, deterministic: the hog climbs at the plan's rate; above
    memory.high each allocation waits longer the further over it is (the kernel's
    penalty grows with the overage), memory.events high counts ~50 a second, and every
    task stalls a third of the time."""

    PID = 44000

    def __init__(self, plan: HighPlan, rate: int) -> None:
        self.plan, self.rate = plan, rate
        self.swap_limit = plan.swap
        self.hog = 0.0
        self.high = 0.0
        self.stall_us = 0.0
        self.running = False

    def prepare(self, say) -> None:
        say("stage: rehearsal, a modelled hog under memory.high (nothing is allocated)")

    def advance(self, s: float) -> None:
        while s > 1e-9:  # in steps of at most 20 ms: the brake depends on where it is
            dt = min(s, TICK)
            s -= dt
            if not self.running or self.hog >= self.plan.target:
                return
            over = max(0.0, self.hog - self.plan.high) / max(1.0, self.plan.ram - self.plan.high)
            speed = 1.0 if self.hog < self.plan.high else max(0.004, 0.03 * (1 - over) ** 2)
            self.hog = min(float(self.plan.target), self.hog + self.rate * speed * dt)
            if self.hog > self.plan.high:
                self.high += 50 * dt
                self.stall_us += 0.33 * dt * 1e6

    def read(self) -> HighReading:
        hog = int(self.hog)
        snap = Snapshot(
            t=self._t, anon_bytes=hog, usage_bytes=hog, ram_limit=self.plan.ram,
            swap_limit=self.swap_limit, hog_bytes=hog, hog_pid=self.PID,
            hog_running=self.running, psi_some_us=int(self.stall_us),
            psi_full_us=int(self.stall_us * 0.9),
        )  # fmt: skip
        lane = Lane("hog", self.PID, 1, rss=hog, oom_score=1000, oom_score_adj=1000)
        return HighReading(self._t, snap, (lane,), int(self.high))

    def start(self) -> None:
        self.running = True

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the seam: the step


@dataclass(frozen=True)
class HighPlan:
    ram: int  # memory.max
    high: int  # memory.high
    target: int  # where the hog is going
    swap: int
    calm_s: float
    rehearsal: bool = False
    held_s: float = HELD_S
    climb_max_s: float = CLIMB_MAX_S


@dataclass(frozen=True)
class HighState:
    """Where the act is: new, climb, held, done."""

    where: str = "new"
    since: float = 0.0
    hist: tuple[tuple[float, int], ...] = ()  # (t, hog bytes)
    base_rate: float | None = None  # bytes/s before memory.high
    low_rate: float | None = None
    held_t: float | None = None  # when the kernel first held it
    lanes: tuple[Lane, ...] = ()


def _rate(hist) -> float:
    if len(hist) < 2:
        return 0.0
    (ta, a), (tb, b) = hist[0], hist[-1]
    return (b - a) / (tb - ta) if tb > ta else 0.0


def high_step(plan: HighPlan, st: HighState, r: HighReading) -> tuple[HighState, Frame]:
    """The high act's pure step: (plan, state, reading) -> (next state, frame); the state
    keeps the lanes to publish (the hog's, with its fill rate in MiB/s)."""
    snap = r.snap
    hist = tuple(h for h in (*st.hist, (r.t, snap.hog_bytes)) if r.t - h[0] <= RATE_WINDOW)
    rate = _rate(hist)
    base = st.base_rate
    lane = replace(r.lanes[0], work_rate=round(rate / MiB, 2),
                   full_rate=round(base / MiB, 2) if base else None, work_unit="MiB/s")  # fmt: skip
    st = replace(st, hist=hist, lanes=(lane,))
    mb = MiB
    where = f"memory.high {plan.high // mb} MiB, memory.max {plan.ram // mb} MiB"
    if st.where == "new":  # the calm, then the climb
        view = {"caption": "high_climb", "note": where, "word": "FULL SPEED"}
        return replace(st, where="calm"), Frame(view=view, pressure=True, wait=plan.calm_s)
    if st.where == "calm":
        st = replace(st, where="climb", since=r.t)
        return st, Frame(actions=(("start",),), wait=TICK, wake=True)
    if snap.hog_exit is not None or snap.kmsg_kill is not None:
        return _killed(plan, st, r)
    if st.where == "climb":
        # the climb's own rate, once it has one (the first second after the start)
        if r.t - st.since > 0.5 and snap.hog_bytes < plan.high * 0.9:
            base = max(base or 0.0, rate)
        st = replace(st, base_rate=base)
        view = {"caption": "high_climb", "word": "FULL SPEED", "speed": 1.0,
                "note": f"{snap.hog_bytes // mb} MiB at {rate / mb:,.0f} MiB/s; {where}"}  # fmt: skip
        if r.high > 0 and _charged(snap) >= plan.high * 0.95:
            st = replace(st, where="held", held_t=r.t)
            ev = ("held", {"at": round(r.t, 4), "hog": snap.hog_bytes, "held_count": r.high,
                           "mark": f"held at memory.high {plan.high // mb} MiB",
                           "base_rate": round(base or 0.0, 1)})  # fmt: skip
            return st, Frame(events=(ev,), view=view, pressure=True, wait=TICK, wake=True)
        if r.t - st.since > plan.climb_max_s:
            raise CannotStage(
                f"the hog did not reach memory.high in {plan.climb_max_s:.0f} s "
                f"({snap.hog_bytes // mb} of {plan.high // mb} MiB)"
            )
        return st, Frame(view=view, pressure=True, wait=TICK, wake=True)
    if st.where == "held":
        low = st.low_rate
        if r.t - st.held_t > RATE_WINDOW and (low is None or rate < low):
            low = rate
        st = replace(st, low_rate=low)
        speed = max(0.0, min(1.0, rate / base)) if base else 1.0
        view = {"caption": "high_held", "word": "HELD", "speed": speed,
                "note": f"{snap.hog_bytes // mb} MiB at {rate / mb:,.1f} MiB/s "
                        f"({share_text(speed)} of its climb); memory.events high {r.high}"}  # fmt: skip
        if r.t - st.held_t < plan.held_s and snap.hog_bytes < plan.target:
            return st, Frame(view=view, pressure=True, wait=TICK, wake=True)
        return _end(plan, st, r, view)
    raise AssertionError(st.where)


def _charged(snap: Snapshot) -> int:
    """What the cgroup is charged (memory.current: the hog's pages and its interpreter),
    which is what memory.high holds; the hog's own bytes where the stage has no figure."""
    return max(snap.usage_bytes, snap.hog_bytes)


def _end(plan: HighPlan, st: HighState, r: HighReading, view: dict):
    base, low = st.base_rate or 0.0, st.low_rate if st.low_rate is not None else 0.0
    mb = MiB
    charged = _charged(r.snap)
    card = (
        f"held at memory.high {r.high} times, killed: nobody",
        f"the climb fell from {base / mb:,.0f} to {low / mb:,.1f} MiB/s",
        f"{charged // mb} MiB charged at memory.high {plan.high // mb} MiB, under memory.max "
        f"{plan.ram // mb} MiB: the kernel slowed it, it did not kill",
    )
    if plan.rehearsal:
        card = ("rehearsal: nothing was throttled", *card)
    ev = ("end", {"held_count": r.high, "base_rate": round(base, 1), "low_rate": round(low, 1),
                  "hog": r.snap.hog_bytes, "usage": charged, "oom_kill": r.snap.oom_kill_count,
                  "alive": r.lanes[0].alive})  # fmt: skip
    final = {**view, "caption": "high_end", "title": "THROTTLED", "card": card,
             "word": "THROTTLED", "closing": CLOSING, "note": "", "intensity": 0.0}  # fmt: skip
    line = f"high: {card[0]}; {card[1]}"
    return replace(st, where="done"), Frame(events=(ev,), enter=Phase.FINALE, view=final,
                                            lines=(line,), done=True)  # fmt: skip


def _killed(plan: HighPlan, st: HighState, r: HighReading):
    """The hog died under memory.high: the kernel's OOM killer (memory.max was reached
    after all) or something else; said as it is, never as the act's end."""
    snap = r.snap
    kill = evidence_record(r.lanes[0].pid or 0, snap.hog_exit, snap.oom_kill_count,
                           snap.kmsg_kill, r.t, kernel_t=snap.kmsg_t, seen_t=snap.kmsg_seen_t)  # fmt: skip
    if not kill.oom and snap.hog_exit not in (-9, 137):
        raise CannotStage(f"the hog ended on its own (exit {snap.hog_exit}) under memory.high")
    ev = ("killed", {"oom": kill.oom, "held_count": r.high})
    view = {"kill": kill, "oom_t": kill.t, "card": ("the hog was killed under memory.high",)}
    return replace(st, where="done"), Frame(events=(ev,), kills=(kill,), enter=Phase.FINALE,
                                            view=view, done=True, ok=False)  # fmt: skip


# ---------------------------------------------------------------- the driver


class HighAct(ActDriver):
    act = "high"
    kind = "high"

    def __init__(self, settings, plan) -> None:
        super().__init__(settings)
        self.ram_limit = plan.ram
        self.rate = plan.rate
        swap = 0 if plan.swap is None else plan.swap  # no swap unless asked: all brake
        self.high_plan = HighPlan(
            plan.ram, int(plan.ram * HIGH_SHARE) // MiB * MiB,
            int(plan.ram * TARGET_SHARE) // MiB * MiB, swap,
            max(0.0, float(settings.calm)), self.rehearsal,
        )  # fmt: skip
        self.source: HighStageSource | HighModelSource | None = None

    def header(self) -> dict:
        p = self.high_plan
        return {"act": self.act, "memory_high": p.high, "target_bytes": p.target}

    def prepare(self, say) -> None:
        p = self.high_plan
        if self.rehearsal:
            self.source = HighModelSource(p, self.rate or 256 * MiB)
        else:
            self.source = HighStageSource(p, self.rate)
        self.source.prepare(say)
        self.swap_limit = self.source.swap_limit

    def run(self, publish, stop, t0: float) -> bool:
        src = self.source
        plan = self.high_plan
        src.begin(t0, self.ram_limit, self.kernel_clock)
        step = lambda st, r: high_step(plan, st or HighState(), r)  # noqa: E731
        return self.play(src, step, publish, stop, lanes=lambda st, r: st.lanes)
