"""`--act who-dies`: two to four hogs of different sizes and oom_score_adj share one
memory cgroup stage. Each has a lane (RSS, swap, live /proc/PID/oom_score); a countdown
invites the room to guess; the kernel kills one; the card names the kernel's choice
from its own record (kmsg, by the pid the kernel prints) and says why from the kernel's
own report: its task table, each hog's points as oom_badness counts them (the verdict
checks that the victim had the most); the others live on until the act releases them.

/proc/PID/oom_score is the lanes' live figure only: it is scaled to the whole machine
(RAM + swap), while a memory cgroup's OOM scales each candidate's pages (RSS + swap +
page tables) to the cgroup's own limit before adding oom_score_adj (mm/oom_kill.c
oom_badness), so with oom_score_adj the two orders can disagree. Without the kernel's
table (a rate-limited report, a rehearsal), the card says so and scales the last lanes
to the stage as the kernel does."""

from __future__ import annotations

from dataclasses import replace

from beep_av import interrupt, summary
from beep_av.acts.common import (
    ActClock,
    ActDriver,
    ProcWatch,
)
from beep_av.errors import CannotStage
from beep_av.model import KillRecord, Lane, Phase, Snapshot
from beep_av.stages.cgroup import CgroupStage

TICK = 0.02
LANES_EVERY = 2  # ticks: lanes (status, oom_score) at 25 Hz
KMSG_GRACE_S = 1.0  # after the victim's exit, how long the kernel's record may take
CARD_S = 3.0  # the card, with the survivors alive, before they are released
CAP_SYS_RESOURCE = 24
CAP_OVERSHOOT = 0.95  # the hogs' caps add up to this much of what the stage leaves them
CAP_STEP = 0.02  # ... raised by this much every CAP_EVERY s once reached, until the kill
CAP_EVERY = 0.25


def can_lower_adj(proc_root: str = "/proc") -> bool:
    """A negative oom_score_adj needs CAP_SYS_RESOURCE (FIELD-NOTES: root here has not)."""
    try:
        with open(f"{proc_root}/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


class MultiHogStage(CgroupStage):
    """The memory cgroup stage (CgroupStage: routes, swap, state file, teardown) with
    several hogs: one per spec, climbing at its share of `rate`, with its own
    oom_score_adj. The first warms the cache; all are killed at teardown."""

    def __init__(self, specs, ram: int, swap, cache: int, rate: int, seed=None) -> None:
        super().__init__(ram=ram, swap=swap, cache=cache, rate=rate, seed=seed)
        self.specs = specs
        self.hogs: list = []

    def _spawn_hog(self) -> None:
        for i, spec in enumerate(self.specs):
            interrupt.check()
            hog = self._spawn_one(
                rate=max(1 << 20, int(self.rate * spec.size)),
                cache=self.cache_bytes if i == 0 else 0,
                oom_score_adj=spec.adj,
                name=spec.name,  # the kernel's report names each hog as the show does
            )
            self.hogs.append(hog)

    def start(self) -> None:
        # what the hogs may touch: the stage less their interpreters' own anonymous
        # memory (the page cache is evicted, so it does not count)
        base = sum(_rss_anon(h.pid) for h in self.hogs)
        self.budget = self.ram_limit + self.swap_limit - base
        self.overshoot = CAP_OVERSHOOT
        self._set_caps()
        for h in self.hogs:
            h.start()
        s = sum(x.size for x in self.specs)
        # when the caps are reached (each climbs at its share of the rate): raise them
        # step by step from then on, until the kernel kills
        self.caps_reached_s = self.overshoot * self.budget / max(1, self.rate * s)

    def _set_caps(self) -> None:
        for h, cap in zip(
            self.hogs, growth_caps(self.specs, self.budget, self.overshoot), strict=True
        ):
            h.set_limit(cap)

    def raise_caps(self) -> None:
        """No kill yet at the caps (hot file pages, swap to spare): a little more."""
        self.overshoot += CAP_STEP
        self._set_caps()


def _rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def growth_caps(specs, budget: int, overshoot: float = 1.05) -> list[int]:
    """Where each hog stops growing (bytes), in proportion to its size: together just
    over what the stage leaves them (`budget`: RAM + swap less their interpreters), so
    the kernel must kill one, and no further: the victim's memory is not free at once
    (its exit, the OOM reaper), and hogs still climbing hard then make the kernel kill
    again (seen here: a second kill 9 ms after the first)."""
    s = sum(x.size for x in specs)
    return [int(overshoot * budget * x.size / s) for x in specs]


def stage_scores(lanes: list[dict], ram: int, swap: int) -> dict[str, int]:
    """The score a memory cgroup's OOM gives each candidate: its pages (RSS + swap +
    page tables) over the cgroup's limit (RAM + swap) in thousandths, plus
    oom_score_adj (mm/oom_kill.c oom_badness)."""
    total = max(1, ram + swap)
    out = {}
    for ln in lanes:
        pages = ln["rss"] + ln["swap"] + ln.get("pte", 0)
        out[ln["name"]] = int(1000 * pages / total) + int(ln["oom_score_adj"] or 0)
    return out


def verdict(
    victim: str, lanes: list[dict], stage: dict[str, int], report: dict | None = None
) -> tuple[list[str], dict]:
    """The card's check and its record: did the kernel's own points rank the victim
    first? From the kernel's whole report (its task table, its oom_badness points:
    `report`), which the card's why line says (summary.why_lines), so no line is
    added here. Without the table (a rate-limited report, a rehearsal): the last
    lanes scaled to the stage as the kernel does, said as such. /proc's oom_score
    (scaled to the whole machine) stays the live lanes' figure; the record keeps its
    comparison too (highest_proc, agrees_proc). A tie is said as a tie, a score never
    read as unknown."""
    procs = {ln["name"]: ln["oom_score"] for ln in lanes}
    read = [ln for ln in lanes if ln["oom_score"] is not None]
    top = max([ln["oom_score"] for ln in read], default=None)
    proc_leaders = [ln["name"] for ln in read if ln["oom_score"] == top]
    agrees_proc = procs.get(victim) is not None and procs.get(victim) == top
    stage_top = max(stage.values(), default=None)
    stage_leaders = [k for k, v in stage.items() if v == stage_top]
    by_stage = victim if victim in stage_leaders else (stage_leaders or [None])[0]
    record = {
        "victim": victim,
        "highest_proc": proc_leaders[0] if proc_leaders else None,
        "agrees_proc": agrees_proc,
        "highest_stage": by_stage,
        "agrees_stage": by_stage == victim,
    }
    cands = [c for c in (report or {}).get("candidates") or [] if isinstance(c.get("points"), int)]
    mine = next((c for c in cands if c.get("name") == victim), None)
    if mine is not None:
        best = max(c["points"] for c in cands)
        leaders = [c["name"] for c in cands if c["points"] == best]
        record.update(
            source="kernel",
            highest=victim if victim in leaders else leaders[0],
            agrees=mine["points"] == best,
            tied=[n for n in leaders if n != victim] if mine["points"] == best else [],
        )
        return [], record
    stage_vs = ", ".join(f"{k} {v}" for k, v in stage.items() if k != victim)
    if stage.get(victim) is None:
        line = f"the kernel's table is missing, and {victim}'s score was not read (the others: {stage_vs})"
    elif victim in stage_leaders and len(stage_leaders) > 1:
        line = f"the kernel's table is missing; the last lanes scaled as the kernel does: a tie, {stage[victim]} vs {stage_vs}"
    elif by_stage == victim:
        line = f"the kernel's table is missing; the last lanes scaled as the kernel does: {stage[victim]} vs {stage_vs}"
    else:
        line = f"the kernel's table is missing; the last lanes scaled as the kernel does put it below: {stage[victim]} vs {stage_vs}"
    tied = [k for k in stage_leaders if k != victim] if by_stage == victim else []
    record.update(source="lanes", highest=by_stage, agrees=by_stage == victim, tied=tied)
    return [line], record


class ModelHogs:
    """The rehearsal's stage: hogs that grow at their share of the rate; the cache goes
    first, then swap takes the overflow in proportion; at the limit the kernel model
    kills the highest stage score. What the kernel frees at the kill is the victim's
    memory only: the evicted cache stays evicted and the survivors' pages stay in swap
    until touched (as the bystander act shows). Deterministic (no clock, no randomness)."""

    def __init__(self, specs, ram: int, swap: int, cache: int, rate: int) -> None:
        self.specs = specs
        self.ram, self.swap_limit, self.rate = ram, swap, rate
        self.cache = float(cache)  # only falls: nothing reads the evicted file back
        self.size = [0.0] * len(specs)
        self.swapped = [0.0] * len(specs)  # each hog's bytes in swap
        self.alive = [True] * len(specs)
        self.paused = False
        self.started = False  # the hogs wait for the countdown, as the real ones do
        self.pids = [41000 + i for i in range(len(specs))]
        self.killed: int | None = None
        self.kmsg: str | None = None

    def advance(self, dt: float) -> None:
        if not self.started or self.paused or self.killed is not None:
            return
        for i, s in enumerate(self.specs):
            if self.alive[i]:
                self.size[i] += self.rate * s.size * dt
        total = sum(self.size) or 1.0
        over = max(0.0, total - self.ram)
        self.swapped = [over * x / total for x in self.size]
        self.cache = max(0.0, min(self.cache, self.ram - total))
        if sum(self.size) >= self.ram + self.swap_limit - (4 << 20):
            lanes = self.lanes()
            stage = stage_scores(lanes, self.ram, self.swap_limit)
            name = max(stage, key=lambda k: stage[k])
            i = [s.name for s in self.specs].index(name)
            self.killed = i
            self.alive[i] = False
            self.kmsg = (
                f"Memory cgroup out of memory: Killed process {self.pids[i]} (python3) "
                f"total-vm:{int(self.size[i] // 1024) + 60000}kB, "
                f"anon-rss:{lanes[i]['rss'] // 1024}kB, file-rss:0kB, shmem-rss:0kB, "
                f"UID:0 pgtables:{int(self.size[i] // 512 // 1024)}kB "
                f"oom_score_adj:{self.specs[i].adj}"
            )
            self.size[i] = self.swapped[i] = 0.0

    def used(self) -> tuple[int, int, int]:
        """(anon in RAM, cache, swap) of the stage."""
        swap = sum(self.swapped)
        return int(sum(self.size) - swap), int(self.cache), int(swap)

    def lanes(self) -> list[dict]:
        out = []
        for i, s in enumerate(self.specs):
            sw = self.swapped[i]
            rss = self.size[i] - sw
            score = int(1000 * self.size[i] / max(1, self.ram + self.swap_limit)) + s.adj
            out.append(
                {"name": s.name, "pid": self.pids[i], "rss": int(rss), "swap": int(sw),
                 "oom_score": min(2000, max(0, score)) if self.alive[i] else None,
                 "oom_score_adj": s.adj, "alive": self.alive[i]}
            )  # fmt: skip
        return out


class WhoDiesAct(ActDriver):
    act = "who-dies"
    kind = "who-dies"

    def __init__(self, settings, plan, specs) -> None:
        super().__init__(settings)
        self.specs = specs
        self.plan = plan
        self.ram_limit = plan.ram
        self.cache_bytes = plan.cache
        self.rate = plan.rate
        self.stage: MultiHogStage | None = None
        self.model: ModelHogs | None = None
        self.watches: list[ProcWatch] = []
        self.sampler = None
        if not self.rehearsal and any(s.adj < 0 for s in specs) and not can_lower_adj():
            bad = next(s for s in specs if s.adj < 0)
            raise CannotStage(
                f"--hogs: oom_score_adj {bad.adj} of {bad.name} needs CAP_SYS_RESOURCE, which "
                "this process lacks: give 0 or more, or run with that capability"
            )

    def header(self) -> dict:
        return {
            "act": self.act,
            "hogs": [{"name": s.name, "size": s.size, "oom_score_adj": s.adj} for s in self.specs],
        }

    def prepare(self, say) -> None:

        if self.rehearsal:  # the real stage's swap: none unless --swap SIZE (below)
            swap = 0 if self.plan.swap is None else self.plan.swap
            self.swap_limit = swap
            if not swap:
                self.skipped.append((Phase.SWAPPING, "no swap on this stage"))
            self.model = ModelHogs(self.specs, self.ram_limit, swap, self.cache_bytes, self.rate)
            say(f"stage: rehearsal, {len(self.specs)} modelled hogs (nothing is allocated)")
            return
        swap = self.plan.swap
        if swap is None:
            swap = 0
            say(
                "note: who-dies stages without swap unless --swap SIZE is given: in a stage "
                "thrashing on swap the kernel often kills a second hog before the first "
                "one's memory is free"
            )
        self.stage = MultiHogStage(self.specs, self.ram_limit, swap, self.cache_bytes, self.rate)
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        if not self.swap_limit:
            self.skipped.append((Phase.SWAPPING, "no swap on this stage"))
        self.watches = [ProcWatch(h.pid) for h in self.stage.hogs]

    # ---- readings

    def _lanes(self) -> list[dict]:
        if self.model is not None:
            return self.model.lanes()
        out = []
        for spec, w, h in zip(self.specs, self.watches, self.stage.hogs, strict=True):
            alive = h.poll() is None
            if alive:
                w.read()
            out.append(
                {"name": spec.name, "pid": h.pid, "rss": w.rss, "swap": w.swap, "pte": w.pte,
                 "oom_score": w.oom_score, "oom_score_adj": w.oom_score_adj, "alive": alive}
            )  # fmt: skip
        return out

    def _kpids(self) -> dict[int, int]:
        """kernel pid (as kmsg prints it) -> hog index."""
        from beep_av import attribution
        from beep_av.procfs import parse_nspid
        from beep_av.sampler import procfs_initial

        out = {}
        initial = procfs_initial()
        for i, h in enumerate(self.stage.hogs):
            try:
                with open(f"/proc/{h.pid}/status") as f:
                    nspid = parse_nspid(f.read())
            except (OSError, ValueError):
                nspid = None
            k = attribution.kernel_pid(nspid, initial, h.pid)
            if k is not None:
                out[k] = i
        return out

    def _snapshot(self, t: float) -> Snapshot:
        if self.model is not None:
            anon, cache, swap = self.model.used()
            return Snapshot(t=t, anon_bytes=anon, cache_bytes=cache, swap_bytes=swap,
                            ram_limit=self.ram_limit, swap_limit=self.swap_limit,
                            hog_bytes=anon + swap)  # fmt: skip
        snap = self.sampler.read(t)  # no one hog: the hogs are the stage's anon + swap
        return replace(snap, hog_bytes=snap.anon_bytes + snap.swap_bytes)

    # ---- the act

    def run(self, publish, stop, t0: float) -> bool:
        model = self.model
        clock = ActClock(t0, model)
        kpids: dict[int, int] = {}
        if model is None:
            from beep_av.sampler import Sampler

            self.sampler = Sampler(
                self.stage.files(), None, t0=t0, ram_limit=self.ram_limit,
                swap_limit=self.swap_limit, kernel_clock=self.kernel_clock,
            )  # fmt: skip
            kpids = self._kpids()
        names = [s.name for s in self.specs]

        def to_lanes(raw: list[dict]) -> tuple[Lane, ...]:
            return tuple(
                Lane(x["name"], x["pid"], i, rss=x["rss"], swap=x["swap"],
                     oom_score=x["oom_score"], oom_score_adj=x["oom_score_adj"], alive=x["alive"])
                for i, x in enumerate(raw)
            )  # fmt: skip

        raw = self._lanes()
        lanes = to_lanes(raw)
        countdown = max(0.0, float(self.settings.calm))
        start = clock.now()
        while clock.now() - start < countdown:
            if stop.is_set():
                return False
            left = countdown - (clock.now() - start)
            snap = self._snapshot(clock.now())
            note = f"guess who dies: {', '.join(names)} ... {left:.0f}"
            publish(self.state(clock.now(), snap, lanes, caption="who_dies_guess", note=note))
            clock.sleep(0.1, stop)
        if model is None:
            self.stage.start()
        else:
            model.started = True
        started = clock.now()
        next_raise = None if model is not None else started + self.stage.caps_reached_s + CAP_EVERY
        self.event(clock.now(), "start", hogs=names)
        last_raw = raw
        last_t = clock.now()
        victim: int | None = None
        exit_seen: float | None = None
        tick = 0
        while victim is None or (not self._complete(victim, kpids)
                                 and clock.now() - exit_seen < KMSG_GRACE_S):  # fmt: skip
            if stop.is_set():
                return False
            if self.sampler is not None:  # woken by the kernel's record or OOM event
                self.sampler.wait(TICK)
            else:
                clock.sleep(TICK, stop)
            t = clock.now()
            snap = self._snapshot(t)
            pressure = self.memory(snap)  # the story's phases, stall and intensity
            if victim is None:
                victim, how = self._victim(kpids)
                if victim is not None:
                    exit_seen = t
                    self._pause_others()
                    self.event(t, "scores", at=round(last_t, 4), hogs=_clean(last_raw))
                    continue
                if next_raise is not None and t >= next_raise:
                    self.stage.raise_caps()
                    next_raise = t + CAP_EVERY
                tick += 1
                if tick % LANES_EVERY == 0:
                    raw = self._lanes()
                    if all(x["alive"] for x in raw):
                        last_raw, last_t = raw, t
                    lanes = to_lanes(raw)
                publish(self.state(t, snap, lanes, **pressure, caption="who_dies_climb", note=""))
        # the kill: the kernel's record, the check, the card
        t = clock.now()
        snap = self._snapshot(t)
        kill = self._kill_record(victim, kpids, snap, t)
        self._kills.append(kill)
        stage_sc = stage_scores(last_raw, self.ram_limit, self.swap_limit)
        check, record = verdict(names[victim], last_raw, stage_sc, kill.report)
        record.update(pid=kill.pid, kmsg=kill.kmsg, stage_scores=stage_sc,
                      kernel_rank=(kill.report or {}).get("victim_rank"))  # fmt: skip
        self.event(t, "verdict", **record)
        self.enter(Phase.OOM, t)
        raw = self._lanes()
        lanes = to_lanes(raw)
        survivors = [x for x in raw if x["alive"]]
        if self.rehearsal:
            who = f"in the model, the kernel kills {names[victim]} (pid {kill.pid})"
        elif kill.kmsg:
            who = f"the kernel killed {names[victim]} (pid {kill.pid})"
        else:
            who = f"{names[victim]} (pid {kill.pid}) died, but the kernel's record is missing"
        card = (
            who,
            *summary.why_lines(kill, self.settings.captions),  # the kernel's own points
            *check,
            "the others live on: " + (", ".join(f"{x['name']} (pid {x['pid']})" for x in survivors) or "none"),
            "confirmed by " + " + ".join(kill.detected_by),
        )  # fmt: skip
        if self.rehearsal:  # says so first, and confirms nothing: the model's kill
            card = ("rehearsal: nothing was killed", *card[:-1])
        said = (
            check[0] if check else (summary.why_lines(kill) or ["the kernel's table is missing"])[0]
        )
        self.lines.append(f"who-dies: {'rehearsal: ' if self.rehearsal else ''}{who}; {said}")
        publish(self.state(t, snap, lanes, kill=kill, oom_t=t, caption="who_dies_kill"))
        clock.sleep(0.3, stop)
        self.enter(Phase.FINALE, clock.now())
        self.end_reason = "finale"
        view = {"caption": "who_dies_kill", "card": card, "title": "BEEP"}
        end = clock.now() + CARD_S
        while clock.now() < end and not stop.is_set():
            publish(
                self.state(clock.now(), snap, to_lanes(self._lanes()), kill=kill, oom_t=t, **view)
            )
            clock.sleep(0.1, stop)
        # the others are released: they were alive (the kernel killed one), we end them
        raw = self._lanes()
        alive = [x["name"] for x in raw if x["alive"]]
        if self.sampler is not None:
            self.sampler.read(clock.now())  # the last kernel records
        killed = self._killed_by_kernel(kpids)
        by_kernel = [names[i] for i in killed]
        # a second kernel kill (the stage still at its limit before the victim's memory
        # was free): its own kill record, `hog: false` (not the act's victim), taken
        # before the release so its exit is the kernel's SIGKILL, not ours
        snap = self._snapshot(clock.now())
        later = [i for i in killed if i != victim]
        also = tuple(
            self._kill_record(i, kpids, snap, clock.now(), nth=n + 2, victim=False)
            for n, i in enumerate(later)
        )
        self._release()
        self.event(clock.now(), "released", alive_before=alive,
                   killed_by_kernel=by_kernel)  # fmt: skip
        more = [n for n in by_kernel if n != names[victim]]
        if more:
            card = (*card, f"then the kernel killed {', '.join(more)} too")
            self.lines.append(f"who-dies: the kernel also killed {', '.join(more)}")
        publish(
            self.state(clock.now(), snap, to_lanes(self._lanes()), kill=kill, oom_t=t,
                       bystanders=also, **{**view, "caption": "who_dies_release"},
                       note=f"released: {', '.join(alive) or 'nobody'} (ended by beep-av)")
        )  # fmt: skip
        return True

    def _complete(self, i: int, kpids) -> bool:
        """Both the kernel's record and the victim's exit are in."""
        if self.model is not None:
            return True
        return self._kmsg_of(i, kpids) is not None and self.stage.hogs[i].poll() is not None

    def _killed_by_kernel(self, kpids) -> list[int]:
        """Every hog a kernel record says was killed, in order."""
        if self.model is not None:
            return [self.model.killed] if self.model.killed is not None else []
        out = []
        for k in self.sampler.kills:
            i = kpids.get(k.pid)
            if i is not None and i not in out and not k.text.startswith("oom-kill:"):
                out.append(i)
        return out

    def _kmsg_of(self, i: int, kpids: dict[int, int]):
        if self.model is not None:
            return self.model.kmsg if self.model.killed == i else None
        for k in self.sampler.kills:
            if not k.text.startswith("oom-kill:") and kpids.get(k.pid) == i:
                return k
        return None

    def _victim(self, kpids) -> tuple[int | None, str]:
        """The first hog gone: by a kernel record naming it, or by its exit."""
        if self.model is not None:
            return self.model.killed, "model"
        for k in self.sampler.kills:
            if kpids.get(k.pid) is not None:
                return kpids[k.pid], "kmsg"
        for i, h in enumerate(self.stage.hogs):
            if h.poll() is not None:
                return i, "exit"
        return None, ""

    def _pause_others(self) -> None:
        if self.model is not None:
            self.model.paused = True
            return
        for h in self.stage.hogs:
            h.pause()

    def _release(self) -> None:
        if self.model is not None:
            self.model.alive = [False] * len(self.specs)
            return
        for h in self.stage.hogs:
            h.kill()
        for h in self.stage.hogs:
            h.wait(10)

    def _kill_record(
        self, i: int, kpids, snap: Snapshot, t: float, nth: int = 1, victim: bool = True
    ) -> KillRecord:
        """Hog i's kill record: its exit, the stage's oom_kill counter (at least `nth`:
        the kernel's nth kill on this stage) and the kernel's record, timed by that record
        (the kernel's time on the show's clock, else when it was read; `t` without one).
        Timed so, a second kill comes after the first as the kernel logged them (the
        victim's was timed at its detection, a later one by the kernel: out of order).
        `victim` False: a later kernel kill (`hog: false` in the recording)."""
        from beep_av.story import evidence_record

        if self.model is not None:  # the model's evidence: all three, its kernel line
            from beep_av.procfs import parse_oom_kill

            k = parse_oom_kill(self.model.kmsg)
            return evidence_record(self.model.pids[i], 137, 1, k, t, hog=victim)
        hog = self.stage.hogs[i]
        k = self._kmsg_of(i, kpids)
        return evidence_record(hog.pid, hog.poll(), snap.oom_kill_count, k, t, nth=nth,
                               hog=victim, timed_by_kernel=True)  # fmt: skip

    def proc_watches(self) -> list[ProcWatch]:
        return self.watches

    def _teardown_stage(self) -> None:
        if self.stage is not None:
            self.stage.teardown()


def _clean(raw: list[dict]) -> list[dict]:
    return [{k: v for k, v in x.items() if k != "pte"} for x in raw]


__all__ = ["WhoDiesAct", "MultiHogStage", "stage_scores", "verdict", "can_lower_adj"]
