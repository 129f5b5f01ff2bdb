"""`--act bystander`: an idle process shares the stage with the hog. It writes random
bytes into its memory once (zeros would not go to swap honestly) and sleeps; the hog
climbs as in the story. The bystander's cold pages go to swap while the hog's hot ones
stay; the kernel kills the hog (oom_score_adj 1000); the bystander is still alive, its
pages still in swap. A few seconds later (or on space) it reads them back: the swap-ins
(/proc/vmstat pswpin) and the time that took are shown and recorded."""

from __future__ import annotations

from dataclasses import dataclass, replace

from beep_av import interrupt
from beep_av.acts.common import (
    LANE_EVERY,
    ActDriver,
    Frame,
    ModelClock,
    ProcWatch,
    ReportPipe,
    StageClock,
)
from beep_av.errors import CannotStage
from beep_av.model import KillRecord, Lane, Phase, Snapshot
from beep_av.procfs import parse_oom_kill
from beep_av.stages.cgroup import CgroupStage
from beep_av.story import evidence_record

TICK = 0.02
READBACK_AFTER_S = 3.0  # after the kill, unless the presenter presses space first
MiB = 1 << 20


class BystanderStage(CgroupStage):
    """The memory cgroup stage (CgroupStage) with the idle bystander spawned first and
    the climbing hog (oom_score_adj 1000, the story's) after it."""

    def __init__(self, size: int, **kw) -> None:
        super().__init__(**kw)
        self.size = size
        self.idle = None

    def _spawn_hog(self) -> None:
        self.idle = self._spawn_one(mode="idle", size=self.size, oom_score_adj=0, name="bystander")
        interrupt.check()
        self.climber = self._spawn_one(rate=self.rate, cache=self.cache_bytes)

    def start(self) -> None:
        self.climber.start()


def pswpin(path: str = "/proc/vmstat") -> int:
    """Pages swapped in since boot, machine-wide (/proc/vmstat pswpin)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("pswpin "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# ---------------------------------------------------------------- the seam: sources


@dataclass(frozen=True)
class ByReading:
    """One reading of the bystander act's stage, real or modelled."""

    t: float  # show time
    snap: Snapshot  # the stage's memory, the hog's exit and the kernel's evidence
    lanes: tuple[Lane, Lane]  # the bystander, the hog
    touched: int = 0  # bytes the bystander has touched so far
    read_s: float | None = None  # its read-back's own time, once it said it
    swapins: int = 0  # pages swapped in since the read-back began


class ByStageSource(StageClock):
    """The real stage as a source: BystanderStage (a memory cgroup, the bystander, the
    hog), the story's sampler on its files (woken by its event fds), the processes'
    /proc watches (at most every LANE_EVERY) and report pipe, /proc/vmstat pswpin
    during the read-back; the real clock. Actions: start_idle, start_hog, read_back."""

    def __init__(self, size: int, plan, ram: int, cache: int, rate: int) -> None:
        self.size = size
        self.stage = BystanderStage(
            size, ram=ram, swap="auto" if plan.swap is None else plan.swap, cache=cache, rate=rate
        )
        self.sampler = None
        self.pipe: ReportPipe | None = None
        self.watches: list[ProcWatch] = []
        self.t0 = 0.0
        self._lanes: tuple[Lane, Lane] | None = None
        self._lane_t = -1.0
        self._p0: int | None = None  # pswpin when the read-back began
        self.swap_limit = 0

    def prepare(self, say) -> None:
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        if not self.swap_limit:
            raise CannotStage(
                "no swap on the stage: the bystander act needs it (--swap SIZE, as root)"
            )
        self.watches = [ProcWatch(self.stage.idle.pid), ProcWatch(self.stage.climber.pid)]
        self.pipe = ReportPipe(self.stage.idle.report_fd)

    def begin(self, t0: float, ram: int, kernel_clock) -> None:
        from beep_av.sampler import Sampler

        self.t0 = t0
        st = self.stage
        self.sampler = Sampler(st.files(), st.climber, t0=t0, ram_limit=ram,
                               swap_limit=self.swap_limit, kernel_clock=kernel_clock)  # fmt: skip

    def _lanes_now(self, t: float) -> tuple[Lane, Lane]:
        procs = (self.stage.idle, self.stage.climber)
        if self._lanes is None or t - self._lane_t >= LANE_EVERY:
            out = []
            for i, (name, w, p) in enumerate(
                zip(("bystander", "hog"), self.watches, procs, strict=True)
            ):
                alive = p.poll() is None
                if alive:
                    w.read()
                out.append(Lane(name, p.pid, i + 1, rss=w.rss, swap=w.swap, oom_score=w.oom_score,
                                oom_score_adj=w.oom_score_adj, alive=alive))  # fmt: skip
            self._lanes, self._lane_t = (out[0], out[1]), t
        return self._lanes

    def read(self) -> ByReading:
        t = self.now()
        snap = self.sampler.read(t)
        touched = self.pipe.drain()
        read_s = next((float(x.split()[1]) for x in self.pipe.lines if x.startswith("read ")), None)
        swapins = pswpin() - self._p0 if self._p0 is not None else 0
        return ByReading(t, snap, self._lanes_now(t), touched, read_s, swapins)

    def start_idle(self) -> None:
        self.stage.idle.start()  # it touches its memory once

    def start_hog(self) -> None:
        self.stage.start()

    def read_back(self) -> None:
        self._p0 = pswpin()
        self._lanes = None  # fresh lanes from now on
        self.stage.idle.read_back()

    def close(self) -> None:
        for w in self.watches:
            w.close()
        if self.sampler is not None:
            self.sampler.close()
        self.stage.teardown()


class ByModelSource(ModelClock):
    """The rehearsal's source, deterministic, on the model's own clock (ModelClock): the
    hog climbs at the plan's rate, the bystander's cold pages go to swap with the
    overflow, the model's kernel kills the hog when the stage is full (its own kill
    line as evidence), and a read-back swaps pages in at 20 µs each."""

    PIDS = (42000, 42001)

    def __init__(self, size: int, ram: int, swap: int, rate: int) -> None:
        self.size, self.ram, self.swap_limit, self.rate = size, ram, swap, rate
        self.touched = 0
        self.hog = 0.0
        self.by_swap = 0.0
        self.climbing = False
        self.killed = False
        self.kmsg = None
        self.back: tuple[float, float, int] | None = None  # (start, seconds, pages)

    def prepare(self, say) -> None:
        say("stage: rehearsal, a modelled bystander and hog (nothing is allocated)")

    def advance(self, s: float) -> None:
        if self.climbing and not self.killed:
            self.hog += self.rate * s
            # the cold pages go first: the bystander's swap grows with the overflow
            self.by_swap = min(self.size * 0.9, max(0.0, self.hog + self.size - self.ram))
            if self.hog + self.size >= self.ram + self.swap_limit - 4 * MiB:
                self.killed = True
                pid = self.PIDS[1]
                self.kmsg = parse_oom_kill(
                    f"Memory cgroup out of memory: Killed process {pid} (beep-hog) "
                    f"total-vm:1kB, anon-rss:{int(self.hog) // 1024}kB, file-rss:0kB, "
                    "shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:1000"
                )

    def _left(self) -> float:
        """The bystander's pages still in swap."""
        if self.back is None:
            return self.by_swap
        start, seconds, _ = self.back
        return self.by_swap * max(0.0, 1 - (self._t - start) / seconds)

    def read(self) -> ByReading:
        t = self._t
        hog = 0.0 if self.killed else self.hog
        by_swap = self._left()
        # the stage's swap: what overflows RAM, and at least the bystander's pages there
        used = hog + self.size
        sw = max(by_swap, used - self.ram, 0.0)
        snap = Snapshot(
            t=t, anon_bytes=int(used - sw), swap_bytes=int(sw), ram_limit=self.ram,
            swap_limit=self.swap_limit, hog_bytes=int(hog), hog_pid=self.PIDS[1],
            hog_running=self.climbing and not self.killed,
            hog_exit=137 if self.killed else None, oom_kill_count=int(self.killed),
            kmsg_kill=self.kmsg,
        )  # fmt: skip
        lanes = (
            Lane("bystander", self.PIDS[0], 1, rss=int(self.size - by_swap), swap=int(by_swap),
                 oom_score=0, oom_score_adj=0),
            Lane("hog", self.PIDS[1], 2, rss=int(hog), swap=0, oom_score=1000,
                 oom_score_adj=1000, alive=not self.killed),
        )  # fmt: skip
        read_s = swapins = None
        if self.back is not None:
            start, seconds, pages = self.back
            done = min(1.0, (t - start) / seconds)
            swapins = int(pages * done)
            read_s = seconds if done >= 1.0 else None
        return ByReading(t, snap, lanes, self.touched, read_s, swapins or 0)

    def start_idle(self) -> None:
        self.touched = self.size

    def start_hog(self) -> None:
        self.climbing = True

    def read_back(self) -> None:
        pages = int(self.by_swap) // 4096
        self.back = (self._t, max(1e-3, round(pages * 20e-6, 4)), pages)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the seam: the step


@dataclass(frozen=True)
class ByPlan:
    size: int
    calm_s: float
    rehearsal: bool = False
    touch_s: float = 30.0  # the bystander must touch its memory within this
    confirm_s: float = 1.0  # after the hog's death: the kernel's record within this
    card_s: float = 0.3  # the kill's card before the finale
    readback_after_s: float = READBACK_AFTER_S
    readback_s: float = 60.0  # the read-back must end within this


@dataclass(frozen=True)
class ByState:
    """Where the act is: touch, calm, climb, confirm, card, readback, done."""

    where: str = "new"
    since: float = 0.0  # when it got there
    before: Lane | None = None  # the bystander's lane at the hog's death
    kill: KillRecord | None = None
    card: tuple[str, ...] = ()
    swap_before: int = 0


def bystander_step(
    plan: ByPlan, st: ByState, r: ByReading, asked: bool = False
) -> tuple[ByState, Frame]:
    """The bystander act's pure step: (plan, state, reading, the presenter asked for
    the read-back) -> (next state, frame). Raises CannotStage for a bystander that never
    touched its memory and for a hog that ended on its own (never taken as a kill)."""
    by, snap, mb = r.lanes[0], r.snap, MiB
    cold = "bystander_cold"
    if st.where == "new":
        view = {"caption": cold, "note": "the bystander touches its memory once"}
        return ByState("touch", r.t), Frame(actions=(("start_idle",),), view=view, wait=0.05)
    if st.where == "touch":
        if r.touched >= plan.size:
            ready = ("bystander_ready", {"pid": by.pid, "bytes": plan.size})
            return replace(st, where="calm", since=r.t), Frame(events=(ready,), wait=plan.calm_s)
        if r.t - st.since > plan.touch_s:
            raise CannotStage(f"the bystander did not touch its memory within {plan.touch_s:.0f} s")
        view = {"caption": cold, "note": "the bystander touches its memory once"}
        return st, Frame(view=view, wait=0.05)
    if st.where == "calm":
        start = Frame(actions=(("start_hog",),), wait=TICK, wake=True)
        return replace(st, where="climb", since=r.t), start
    if st.where == "climb":
        if snap.kmsg_kill is None and snap.hog_exit not in (None, -9, 137):
            raise CannotStage(  # as the story: an exit on its own is never a kill
                f"the hog ended on its own (exit {snap.hog_exit}) before the kernel "
                "killed it; run `beep-av doctor`"
            )
        if snap.hog_exit is None and snap.kmsg_kill is None:
            note = f"bystander: {by.rss // mb} MiB in RAM, {by.swap // mb} MiB in swap"
            view = {"caption": cold, "note": note}
            return st, Frame(view=view, pressure=True, wait=TICK, wake=True)
        ev = ("before_kill", {"at": round(r.t, 4), "bystander_rss": by.rss,
                              "bystander_swap": by.swap, "bytes": plan.size})  # fmt: skip
        st = replace(st, where="confirm", since=r.t, before=by)
        return st, Frame(events=(ev,), wait=TICK, wake=True)
    if st.where == "confirm":  # the kernel's record within a moment of the hog's death
        has_all = snap.kmsg_kill is not None and snap.hog_exit is not None
        if not has_all and r.t - st.since < plan.confirm_s:
            return st, Frame(wait=TICK, wake=True)
        kill = evidence_record(r.lanes[1].pid, snap.hog_exit, snap.oom_kill_count,
                               snap.kmsg_kill, st.since, kernel_t=snap.kmsg_t,
                               seen_t=snap.kmsg_seen_t)  # fmt: skip
        ev = ("after_kill", {"bystander_alive": by.alive, "bystander_rss": by.rss,
                             "bystander_swap": by.swap})  # fmt: skip
        if plan.rehearsal:
            card = ("rehearsal: nothing was killed",
                    f"the bystander keeps {by.swap // mb} MiB in swap")  # fmt: skip
        else:
            killed = (
                f"the kernel killed the hog (pid {kill.pid})"
                if kill.kmsg
                else f"the hog (pid {kill.pid}) died"
            )
            card = (killed, f"the bystander (pid {by.pid}) is {'alive' if by.alive else 'DEAD'}: "
                    f"VmSwap {by.swap // mb} MiB (its {plan.size // mb} MiB block and its interpreter)")  # fmt: skip
        st = replace(st, where="card", since=r.t, kill=kill, card=card)
        view = {"kill": kill, "oom_t": kill.t, "caption": cold}
        return st, Frame(events=(ev,), enter=Phase.OOM, enter_t=kill.t, view=view,
                         kills=(kill,), wait=plan.card_s)  # fmt: skip
    view = {"kill": st.kill, "oom_t": st.kill.t if st.kill else None, "card": st.card}
    if st.where == "card":
        enter = Phase.FINALE if r.t - st.since >= plan.card_s - 1e-9 else None
        if not asked and r.t - st.since < plan.card_s + plan.readback_after_s:
            view.update(caption=cold, note="next: the bystander reads its memory back")
            return st, Frame(enter=enter, view=view, wait=0.1)
        ev = ("readback_start", {"swap_before": by.swap})
        st = replace(st, where="readback", since=r.t, swap_before=by.swap)
        return st, Frame(actions=(("read_back",),), events=(ev,), enter=enter, wait=0.01)
    if st.where == "readback":  # every page once: the swap-ins, heard as a crackle
        if r.read_s is None:
            if r.t - st.since > plan.readback_s:
                return st, Frame(done=True, ok=False)
            rate = r.swapins / max(1e-3, r.t - st.since)
            view.update(caption="bystander_readback", swapins=rate,
                        note=f"reading back: {r.swapins} pages swapped in so far")  # fmt: skip
            return st, Frame(view=view, wait=0.01)
        ev = ("readback", {"seconds": round(r.read_s, 4), "pswpin": r.swapins,
                           "swap_before": st.swap_before, "swap_after": by.swap,
                           "bystander_alive": by.alive})  # fmt: skip
        model = " (model)" if plan.rehearsal else ""
        card = (*st.card, f"read back in {r.read_s * 1000:.0f} ms: {r.swapins} pages swapped in "
                          f"({r.swapins * 4 // 1024} MiB){model}")  # fmt: skip
        view.update(card=card, caption="bystander_readback", note="")
        line = f"bystander: {card[1]}; {card[-1]}"
        frame = Frame(events=(ev,), view=view, lines=(line,), done=True)
        return replace(st, where="done", card=card), frame
    raise AssertionError(st.where)


# ---------------------------------------------------------------- the driver


class BystanderAct(ActDriver):
    act = "bystander"
    kind = "bystander"

    def __init__(self, settings, plan) -> None:
        super().__init__(settings)
        self.plan = plan
        self.ram_limit = plan.ram
        self.cache_bytes = plan.cache
        self.rate = plan.rate
        self.size = max(8 * MiB, plan.ram // 4 // MiB * MiB)
        self._read_now = False
        if plan.swap == 0:
            raise CannotStage("--act bystander needs swap on the stage: give --swap SIZE or auto")
        self.source: ByStageSource | ByModelSource | None = None

    def header(self) -> dict:
        return {"act": self.act, "bystander_bytes": self.size}

    def command(self, cmd: str) -> str | None:
        if cmd == "toggle_pause":
            self._read_now = True
            return "reading the bystander's memory back"
        return None

    def prepare(self, say) -> None:
        from beep_av.tunables import auto_swap_size

        if self.rehearsal:
            swap = auto_swap_size(self.plan.ram) if self.plan.swap is None else self.plan.swap
            self.source = ByModelSource(self.size, self.ram_limit, swap, self.rate)
        else:
            self.source = ByStageSource(
                self.size, self.plan, self.ram_limit, self.cache_bytes, self.rate
            )
        self.source.prepare(say)
        self.swap_limit = self.source.swap_limit

    def run(self, publish, stop, t0: float) -> bool:
        """The one loop: read the source, step, carry out the frame, publish, wait; the
        same for the real stage and the model."""
        src = self.source
        plan = ByPlan(self.size, max(0.0, float(self.settings.calm)), self.rehearsal)
        src.begin(t0, self.ram_limit, self.kernel_clock)
        step = lambda st, r: bystander_step(plan, st or ByState(), r, self._read_now)  # noqa: E731
        return self.play(src, step, publish, stop)
