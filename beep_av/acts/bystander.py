"""`--act bystander`: an idle process shares the stage with the hog. It writes random
bytes into its memory once (zeros would not go to swap honestly) and sleeps; the hog
climbs as in the story. The bystander's cold pages go to swap while the hog's hot ones
stay; the kernel kills the hog (oom_score_adj 1000); the bystander is still alive, its
pages still in swap. A few seconds later (or on space) it reads them back: the swap-ins
(/proc/vmstat pswpin) and the time that took are shown and recorded."""

from __future__ import annotations

import time

from beep_av import interrupt
from beep_av.acts.common import (
    LANE_EVERY,
    ActDriver,
    ProcWatch,
    ReportPipe,
)
from beep_av.errors import CannotStage
from beep_av.model import Lane, Phase, Snapshot
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
        self.stage: BystanderStage | None = None
        self.watch: ProcWatch | None = None
        self.hog_watch: ProcWatch | None = None
        self.sampler = None
        self._read_now = False
        if plan.swap == 0:
            raise CannotStage("--act bystander needs swap on the stage: give --swap SIZE or auto")

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
            self.swap_limit = (
                auto_swap_size(self.plan.ram) if self.plan.swap is None else self.plan.swap
            )
            say("stage: rehearsal, a modelled bystander and hog (nothing is allocated)")
            return
        swap = "auto" if self.plan.swap is None else self.plan.swap
        self.stage = BystanderStage(
            self.size, ram=self.ram_limit, swap=swap, cache=self.cache_bytes, rate=self.rate
        )
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        if not self.swap_limit:
            raise CannotStage(
                "no swap on the stage: the bystander act needs it (--swap SIZE, as root)"
            )
        self.watch = ProcWatch(self.stage.idle.pid)
        self.hog_watch = ProcWatch(self.stage.climber.pid)

    # ---- the act

    def run(self, publish, stop, t0: float) -> bool:
        if self.rehearsal:
            return self._run_model(publish, stop, t0)
        from beep_av.sampler import Sampler

        st = self.stage
        self.sampler = Sampler(st.files(), st.climber, t0=t0, ram_limit=self.ram_limit,
                               swap_limit=self.swap_limit, kernel_clock=self.kernel_clock)  # fmt: skip
        pipe = ReportPipe(st.idle.report_fd)
        now = lambda: time.monotonic() - t0  # noqa: E731

        def lanes() -> tuple[Lane, ...]:
            out = []
            for i, (name, w, p) in enumerate(
                (("bystander", self.watch, st.idle), ("hog", self.hog_watch, st.climber))
            ):
                alive = p.poll() is None
                if alive:
                    w.read()
                out.append(Lane(name, p.pid, i + 1, rss=w.rss, swap=w.swap,
                                oom_score=w.oom_score, oom_score_adj=w.oom_score_adj, alive=alive))  # fmt: skip
            return tuple(out)

        st.idle.start()  # it touches its memory once
        deadline = time.monotonic() + 30
        while pipe.drain() < self.size:
            if stop.is_set() or time.monotonic() > deadline:
                if not stop.is_set():
                    raise CannotStage("the bystander did not touch its memory within 30 s")
                return False
            publish(self.state(now(), Snapshot(t=now()), lanes(), caption="bystander_cold",
                               note="the bystander touches its memory once"))  # fmt: skip
            stop.wait(0.05)
        self.event(now(), "bystander_ready", pid=st.idle.pid, bytes=self.size)
        cal = max(0.0, float(self.settings.calm))
        stop.wait(cal)
        st.start()
        last = lanes()
        tick = 0
        while True:
            if stop.is_set():
                return False
            self.sampler.wait(TICK)  # woken by the hog's exit, a kernel record, an OOM event
            t = now()
            snap = self.sampler.read(t)
            if snap.kmsg_kill is None and snap.hog_exit not in (None, -9, 137):
                raise CannotStage(  # as the story: an exit on its own is never a kill
                    f"the hog ended on its own (exit {snap.hog_exit}) before the kernel "
                    "killed it; run `beep-av doctor`"
                )
            if snap.hog_exit is not None or snap.kmsg_kill is not None:
                break
            tick += 1
            if tick % 5 == 0:
                last = lanes()
            b = last[0]
            publish(self.state(t, snap, last, **self.memory(snap), caption="bystander_cold",
                               note=f"bystander: {b.rss // MiB} MiB in RAM, {b.swap // MiB} MiB in swap"))  # fmt: skip
        # the kill: the hog's (oom_score_adj 1000); the kernel's record within a moment
        t = now()
        self.event(t, "before_kill", at=round(t, 4),
                   bystander_rss=last[0].rss, bystander_swap=last[0].swap, bytes=self.size)  # fmt: skip
        end = time.monotonic() + 1.0
        while time.monotonic() < end and (snap.kmsg_kill is None or snap.hog_exit is None):
            self.sampler.wait(TICK)
            snap = self.sampler.read(now())
        kill = evidence_record(st.climber.pid, snap.hog_exit, snap.oom_kill_count, snap.kmsg_kill,
                               t, kernel_t=snap.kmsg_t, seen_t=snap.kmsg_seen_t)  # fmt: skip
        self._kills.append(kill)
        self.enter(Phase.OOM, t)
        ln = lanes()
        alive = ln[0].alive
        self.event(now(), "after_kill", bystander_alive=alive, bystander_rss=ln[0].rss,
                   bystander_swap=ln[0].swap)  # fmt: skip
        card = [
            f"the kernel killed the hog (pid {kill.pid})" if kill.kmsg else f"the hog (pid {kill.pid}) died",
            f"the bystander (pid {st.idle.pid}) is {'alive' if alive else 'DEAD'}: "
            f"VmSwap {ln[0].swap // MiB} MiB (its {self.size // MiB} MiB block and its interpreter)",
        ]  # fmt: skip
        publish(self.state(t, snap, ln, kill=kill, oom_t=t, caption="bystander_cold"))
        stop.wait(0.3)
        self.enter(Phase.FINALE, now())
        self.end_reason = "finale"
        wait_until = time.monotonic() + READBACK_AFTER_S
        while time.monotonic() < wait_until and not self._read_now and not stop.is_set():
            publish(self.state(now(), snap, lanes(), kill=kill, oom_t=t, card=tuple(card),
                               caption="bystander_cold", note="next: the bystander reads its memory back"))  # fmt: skip
            stop.wait(0.1)
        if stop.is_set():
            return False
        # the read-back: every page, once; the swap-ins it causes and the time it takes
        # (heard: the crackle's level follows the swap-in rate, read every 10 ms)
        before_swap = lanes()[0].swap
        p0 = pswpin()
        self.event(now(), "readback_start", swap_before=before_swap)
        m0 = time.monotonic()
        st.idle.read_back()
        deadline = m0 + 60
        seconds = None
        lane_at = 0.0
        ln = lanes()
        while seconds is None and time.monotonic() < deadline and not stop.is_set():
            stop.wait(0.01)
            pipe.drain()
            for line in pipe.lines:
                if line.startswith("read "):
                    seconds = float(line.split()[1])
            d = pswpin() - p0
            if time.monotonic() - lane_at >= LANE_EVERY:
                ln, lane_at = lanes(), time.monotonic()
            rate = d / max(1e-3, time.monotonic() - m0)
            publish(self.state(now(), snap, ln, kill=kill, oom_t=t, card=tuple(card),
                               caption="bystander_readback", swapins=rate,
                               note=f"reading back: {d} pages swapped in so far"))  # fmt: skip
        if seconds is None:
            return False
        d = pswpin() - p0
        ln = lanes()
        self.event(now(), "readback", seconds=round(seconds, 4), pswpin=d, swap_before=before_swap,
                   swap_after=ln[0].swap, bystander_alive=ln[0].alive)  # fmt: skip
        card.append(
            f"read back in {seconds * 1000:.0f} ms: {d} pages swapped in ({d * 4 // 1024} MiB)"
        )
        self.lines.append(f"bystander: {card[1]}; {card[-1]}")
        publish(self.state(now(), snap, ln, kill=kill, oom_t=t, card=tuple(card),
                           caption="bystander_readback", note=""))  # fmt: skip
        return True

    def _run_model(self, publish, stop, t0: float) -> bool:
        """The rehearsal: the same events from a model (deterministic, no clock)."""
        v = 0.0
        size, ram, swap = self.size, self.ram_limit, self.swap_limit
        hog = 0.0
        pid_b, pid_h = 42000, 42001

        def snap_at(t, hog_b, by_swap):
            # the stage's swap: what overflows RAM, and at least the bystander's pages
            # there (they stay in swap after the hog's kill until they are read back)
            used = hog_b + size
            sw = max(by_swap, used - ram, 0.0)
            return Snapshot(
                t=t,
                anon_bytes=int(used - sw),
                swap_bytes=int(sw),
                ram_limit=ram,
                swap_limit=swap,
                hog_bytes=int(hog_b),
            )

        def lanes(by_swap, hog_b, alive_h=True):
            return (Lane("bystander", pid_b, 1, rss=int(size - by_swap), swap=int(by_swap), oom_score=0,
                         oom_score_adj=0),
                    Lane("hog", pid_h, 2, rss=int(hog_b), swap=0, oom_score=1000, oom_score_adj=1000,
                         alive=alive_h))  # fmt: skip

        self.event(v, "bystander_ready", pid=pid_b, bytes=size)
        by_swap = 0.0
        while hog + size < ram + swap - 4 * MiB:
            if stop.is_set():
                return False
            stop.wait(TICK)
            v = round(v + TICK, 4)
            hog += self.rate * TICK
            # the cold pages go first: the bystander's swap grows with the overflow
            by_swap = min(size * 0.9, max(0.0, hog + size - ram))
            snap = snap_at(v, hog, by_swap)
            publish(self.state(v, snap, lanes(by_swap, hog), **self.memory(snap),
                               caption="bystander_cold"))  # fmt: skip
        self.event(
            v,
            "before_kill",
            bystander_rss=int(size - by_swap),
            bystander_swap=int(by_swap),
            bytes=size,
        )
        kmsg = (f"Memory cgroup out of memory: Killed process {pid_h} (python3) total-vm:1kB, "
                f"anon-rss:{int(hog) // 1024}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:1000")  # fmt: skip
        kill = evidence_record(pid_h, 137, 1, parse_oom_kill(kmsg), v)  # the model's evidence
        self._kills.append(kill)
        self.enter(Phase.OOM, v)
        snap = snap_at(v, 0, by_swap)
        self.event(
            v,
            "after_kill",
            bystander_alive=True,
            bystander_rss=int(size - by_swap),
            bystander_swap=int(by_swap),
        )
        card = [
            "rehearsal: nothing was killed",
            f"the bystander keeps {int(by_swap) // MiB} MiB in swap",
        ]
        publish(self.state(v, snap, lanes(by_swap, 0, False), kill=kill, oom_t=v))
        self.end_reason = "finale"
        for k in range(10):
            stop.wait(0.1)
            v = round(v + 0.1, 4)
            if k == 2:  # the model's confirmation, 0.3 s after the kill
                self.enter(Phase.FINALE, v)
            publish(
                self.state(
                    v, snap, lanes(by_swap, 0, False), kill=kill, oom_t=kill.t, card=tuple(card)
                )
            )
        pages = int(by_swap) // 4096
        seconds = round(pages * 20e-6, 4)  # the model: 20 µs a swap-in
        self.event(v, "readback_start", swap_before=int(by_swap))
        start = v
        while v < start + seconds - 1e-9:  # the read-back, heard for as long as it takes
            if stop.is_set():
                return False
            step = min(TICK, round(start + seconds - v, 4))
            stop.wait(step)
            v = round(v + step, 4)
            done = (v - start) / seconds
            snap = snap_at(v, 0, by_swap * (1 - done))
            publish(self.state(v, snap, lanes(by_swap * (1 - done), 0, False), kill=kill,
                               oom_t=kill.t, card=tuple(card), caption="bystander_readback",
                               swapins=pages / seconds))  # fmt: skip
        self.event(v, "readback", seconds=seconds, pswpin=pages, swap_before=int(by_swap), swap_after=0,
                   bystander_alive=True)  # fmt: skip
        card.append(f"read back in {seconds * 1000:.0f} ms: {pages} pages swapped in (model)")
        snap = snap_at(v, 0, 0)
        publish(self.state(v, snap, lanes(0, 0, False), kill=kill, oom_t=kill.t, card=tuple(card),
                           caption="bystander_readback"))  # fmt: skip
        return True

    def proc_watches(self) -> list[ProcWatch]:
        return [w for w in (self.watch, self.hog_watch) if w is not None]

    def _teardown_stage(self) -> None:
        if self.stage is not None:
            self.stage.teardown()
