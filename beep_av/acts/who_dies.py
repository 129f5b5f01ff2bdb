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

from dataclasses import dataclass, replace

from beep_av import clock, interrupt, summary
from beep_av.acts.common import ActDriver, Frame, ModelClock, ProcWatch
from beep_av.errors import CannotStage
from beep_av.model import KillRecord, KmsgKill, Lane, Phase, Snapshot
from beep_av.stages.cgroup import CgroupStage
from beep_av.story import evidence_record

TICK = 0.02
LANES_S = 0.04  # lanes (status, oom_score) at 25 Hz; the hogs' exits in every reading
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
    victim: str,
    lanes: list[dict],
    stage: dict[str, int],
    report: dict | None = None,
    modelled: bool = False,
) -> tuple[list[str], dict]:
    """The card's check and its record: did the kernel's own points rank the victim
    first? From the kernel's whole report (its task table, its oom_badness points:
    `report`), which the card's why line says (summary.why_lines), so no line is
    added here. Without the table (a rate-limited report, a rehearsal): the last
    lanes scaled to the stage as the kernel does, said as such. /proc's oom_score
    (scaled to the whole machine) stays the live lanes' figure; the record keeps its
    comparison too (highest_proc, agrees_proc). A tie is said as a tie, a score never
    read as unknown. `modelled`: a rehearsal's model, which has no kernel to print one."""
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
    what = "the model's lanes" if modelled else "the kernel's table is missing; the last lanes"
    if stage.get(victim) is None:
        line = f"{what}: {victim}'s score was not read (the others: {stage_vs})"
    elif victim in stage_leaders and len(stage_leaders) > 1:
        line = f"{what} scaled as the kernel does: a tie, {stage[victim]} vs {stage_vs}"
    elif by_stage == victim:
        line = f"{what} scaled as the kernel does: {stage[victim]} vs {stage_vs}"
    else:
        line = f"{what} scaled as the kernel does put it below: {stage[victim]} vs {stage_vs}"
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
                f"Memory cgroup out of memory: Killed process {self.pids[i]} ({name}) "
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


# ---------------------------------------------------------------- the seam: sources


@dataclass(frozen=True)
class WhoReading:
    """One reading of the who-dies stage, real or modelled."""

    t: float  # show time
    snap: Snapshot  # the stage's memory (hog_bytes: all the hogs), its oom_kill counter
    hogs: tuple[dict, ...]  # each hog's lane: name, pid, rss, swap, pte, oom_score, adj, alive
    records: tuple[tuple[int, KmsgKill], ...] = ()  # kernel records naming a hog, in order
    exits: tuple[int | None, ...] = ()  # each hog's exit status (None: running)
    caps_reached_s: float | None = None  # after the start, when the growth caps are met

    @property
    def lanes(self) -> tuple[Lane, ...]:
        return to_lanes(self.hogs)


def _victim_of(r: WhoReading) -> int | None:
    """The first hog gone: by a kernel record naming it, or by its exit."""
    if r.records:
        return r.records[0][0]
    return next((i for i, e in enumerate(r.exits) if e is not None), None)


def _kmsg_of(r: WhoReading, i: int) -> KmsgKill | None:
    return next((k for j, k in r.records if j == i and not k.text.startswith("oom-kill:")), None)


def _killed_by_kernel(r: WhoReading) -> list[int]:
    """Every hog a kernel record says was killed, in the kernel's order."""
    out: list[int] = []
    for i, k in r.records:
        if i not in out and not k.text.startswith("oom-kill:"):
            out.append(i)
    return out


class WhoStageSource:
    """The real stage as a source: MultiHogStage (a memory cgroup, its hogs), the
    story's sampler on its files (no one hog: woken by the kernel's records and OOM
    events), the hogs' /proc watches (rss, oom_score at most every LANES_S; their exit
    in every reading). Actions: start, raise_caps, pause_others, release."""

    def __init__(self, specs, plan, ram: int, cache: int, rate: int) -> None:
        self.specs, self.plan = specs, plan
        self.ram, self.cache, self.rate = ram, cache, rate
        self.stage: MultiHogStage | None = None
        self.sampler = None
        self.watches: list[ProcWatch] = []
        self.kpids: dict[int, int] = {}
        self.t0 = 0.0
        self.swap_limit = 0
        self._lanes: tuple[dict, ...] | None = None
        self._lane_t = -1.0
        self._started = False

    def prepare(self, say) -> None:
        swap = self.plan.swap
        if swap is None:
            swap = 0
            say(
                "note: who-dies stages without swap unless --swap SIZE is given: in a stage "
                "thrashing on swap the kernel often kills a second hog before the first "
                "one's memory is free"
            )
        self.stage = MultiHogStage(self.specs, self.ram, swap, self.cache, self.rate)
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        self.watches = [ProcWatch(h.pid) for h in self.stage.hogs]

    def begin(self, t0: float, kernel_clock) -> None:
        from beep_av.sampler import Sampler

        self.t0 = t0
        self.sampler = Sampler(
            self.stage.files(), None, t0=t0, ram_limit=self.ram,
            swap_limit=self.swap_limit, kernel_clock=kernel_clock,
        )  # fmt: skip
        self.kpids = self._kernel_pids()

    def _kernel_pids(self) -> dict[int, int]:
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

    def now(self) -> float:
        return clock.now() - self.t0

    def wait(self, s: float, stop, wake: bool = False) -> None:
        if wake:  # woken by the kernel's record or OOM event
            self.sampler.wait(s)
        else:
            stop.wait(s)

    def read(self) -> WhoReading:
        t = self.now()
        snap = self.sampler.read(t)  # no one hog: the hogs are the stage's anon + swap
        snap = replace(snap, hog_bytes=snap.anon_bytes + snap.swap_bytes)
        exits = tuple(h.poll() for h in self.stage.hogs)
        if self._lanes is None or t - self._lane_t >= LANES_S:
            out = []
            for spec, w, e in zip(self.specs, self.watches, exits, strict=True):
                if e is None:
                    w.read()
                out.append(
                    {"name": spec.name, "pid": w.pid, "rss": w.rss, "swap": w.swap, "pte": w.pte,
                     "oom_score": w.oom_score, "oom_score_adj": w.oom_score_adj, "alive": e is None}
                )  # fmt: skip
            self._lanes, self._lane_t = tuple(out), t
        hogs = tuple(dict(x, alive=e is None) for x, e in zip(self._lanes, exits, strict=True))
        records = tuple((self.kpids[k.pid], k) for k in self.sampler.kills if k.pid in self.kpids)
        caps = self.stage.caps_reached_s if self._started else None
        return WhoReading(t, snap, hogs, records, exits, caps)

    def start(self) -> None:
        self.stage.start()
        self._started = True

    def raise_caps(self) -> None:
        self.stage.raise_caps()

    def pause_others(self) -> None:
        for h in self.stage.hogs:
            h.pause()

    def release(self) -> None:
        for h in self.stage.hogs:
            h.kill()
        for h in self.stage.hogs:
            h.wait(10)
        self._lanes = None

    def close(self) -> None:
        for w in self.watches:
            w.close()
        if self.sampler is not None:
            self.sampler.close()
        if self.stage is not None:
            self.stage.teardown()


class WhoModelSource(ModelClock):
    """The rehearsal's source: ModelHogs on the model's own clock (ModelClock); its
    kernel's evidence is its own kill line, the victim's exit 137 and the counter."""

    def __init__(self, specs, ram: int, swap: int, cache: int, rate: int) -> None:
        self.model = ModelHogs(specs, ram, swap, cache, rate)
        self.ram, self.swap_limit = ram, swap

    def prepare(self, say) -> None:
        say(f"stage: rehearsal, {len(self.model.specs)} modelled hogs (nothing is allocated)")

    def advance(self, s: float) -> None:
        self.model.advance(s)

    def read(self) -> WhoReading:
        from beep_av.procfs import parse_oom_kill

        m = self.model
        anon, cache, swap = m.used()
        snap = Snapshot(t=self._t, anon_bytes=anon, cache_bytes=cache, swap_bytes=swap,
                        ram_limit=self.ram, swap_limit=self.swap_limit, hog_bytes=anon + swap,
                        oom_kill_count=int(m.killed is not None))  # fmt: skip
        killed = m.killed
        records = ((killed, parse_oom_kill(m.kmsg)),) if killed is not None else ()
        exits = tuple(137 if i == killed else None for i in range(len(m.specs)))
        return WhoReading(self._t, snap, tuple(m.lanes()), records, exits, None)

    def start(self) -> None:
        self.model.started = True

    def raise_caps(self) -> None:
        pass

    def pause_others(self) -> None:
        self.model.paused = True

    def release(self) -> None:
        self.model.alive = [False] * len(self.model.specs)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the seam: the step


@dataclass(frozen=True)
class WhoPlan:
    names: tuple[str, ...]
    ram: int
    swap: int
    countdown_s: float
    rehearsal: bool = False
    captions: str = "en"
    grace_s: float = KMSG_GRACE_S
    card_s: float = CARD_S


@dataclass(frozen=True)
class WhoState:
    """Where the act is: countdown, climb, confirm, card, release, done."""

    where: str = "new"
    since: float = 0.0  # when it got there
    next_raise: float | None = None
    last_raw: tuple[dict, ...] = ()  # the last lanes with every hog alive
    last_t: float = 0.0
    victim: int | None = None
    kill: KillRecord | None = None
    oom_t: float = 0.0
    card: tuple[str, ...] = ()
    also: tuple[KillRecord, ...] = ()
    released: tuple[str, ...] = ()


def to_lanes(raw) -> tuple[Lane, ...]:
    return tuple(
        Lane(x["name"], x["pid"], i, rss=x["rss"], swap=x["swap"],
             oom_score=x["oom_score"], oom_score_adj=x["oom_score_adj"], alive=x["alive"])
        for i, x in enumerate(raw)
    )  # fmt: skip


def _record(r: WhoReading, i: int, t: float, nth: int = 1, victim: bool = True) -> KillRecord:
    """Hog i's kill record from the reading's evidence: its exit, the stage's oom_kill
    counter (at least `nth`: the kernel's nth kill on this stage) and the kernel's
    record, timed by that record (the kernel's time on the show's clock, else when it
    was read; `t` without one), so a second kill comes after the first as the kernel
    logged them. `victim` False: a later kernel kill (`hog: false` in the recording)."""
    return evidence_record(r.hogs[i]["pid"], r.exits[i], r.snap.oom_kill_count, _kmsg_of(r, i),
                           t, nth=nth, hog=victim, timed_by_kernel=True)  # fmt: skip


def who_dies_step(plan: WhoPlan, st: WhoState, r: WhoReading) -> tuple[WhoState, Frame]:
    """The who-dies act's pure step: (plan, state, reading) -> (next state, frame)."""
    names = plan.names
    if st.where == "new":
        st = WhoState("countdown", r.t, last_raw=r.hogs, last_t=r.t)
    if st.where == "countdown":
        left = plan.countdown_s - (r.t - st.since)
        if left > 1e-9:
            note = f"guess who dies: {', '.join(names)} ... {left:.0f}"
            return st, Frame(view={"caption": "who_dies_guess", "note": note}, wait=0.1)
        start = ("start", {"hogs": list(names)})
        st = replace(st, where="climb", since=r.t)
        return st, Frame(actions=(("start",),), events=(start,), wait=TICK, wake=True)
    if st.where == "climb":
        victim = _victim_of(r)
        if victim is not None:
            scores = ("scores", {"at": round(st.last_t, 4), "hogs": _clean(st.last_raw)})
            st = replace(st, where="confirm", since=r.t, victim=victim)
            return st, Frame(actions=(("pause_others",),), events=(scores,), wait=TICK, wake=True)
        actions: tuple[tuple, ...] = ()
        next_raise = st.next_raise
        if next_raise is None and r.caps_reached_s is not None:
            next_raise = st.since + r.caps_reached_s + CAP_EVERY
        if next_raise is not None and r.t >= next_raise:
            actions, next_raise = (("raise_caps",),), r.t + CAP_EVERY
        st = replace(st, next_raise=next_raise)
        if all(x["alive"] for x in r.hogs):
            st = replace(st, last_raw=r.hogs, last_t=r.t)
        view = {"caption": "who_dies_climb", "note": ""}
        return st, Frame(actions=actions, view=view, pressure=True, wait=TICK, wake=True)
    if st.where == "confirm":  # the kernel's record and the victim's exit, or the grace
        v = st.victim
        complete = _kmsg_of(r, v) is not None and r.exits[v] is not None
        if not complete and r.t - st.since < plan.grace_s:
            return st, Frame(wait=TICK, wake=True)
        return _the_kill(plan, st, r)
    view = {"kill": st.kill, "oom_t": st.oom_t, "caption": "who_dies_kill", "card": st.card,
            "title": "BEEP"}  # fmt: skip
    if st.where == "card":
        enter = Phase.FINALE if r.t - st.since >= 0.3 - 1e-9 else None
        if r.t - st.since < 0.3 + plan.card_s - 1e-9:
            return st, Frame(enter=enter, view=view if enter else None, wait=0.1)
        return _release(plan, st, r)
    if st.where == "release":  # the released hogs, in the final state
        note = f"released: {', '.join(st.released) or 'nobody'} (ended by beep-av)"
        view.update(bystanders=st.also, caption="who_dies_release", note=note)
        return replace(st, where="done"), Frame(view=view, done=True)
    raise AssertionError(st.where)


def _the_kill(plan: WhoPlan, st: WhoState, r: WhoReading) -> tuple[WhoState, Frame]:
    """The kernel's record, the check, the card."""
    names, v = plan.names, st.victim
    kill = _record(r, v, r.t)
    stage_sc = stage_scores(list(st.last_raw), plan.ram, plan.swap)
    check, record = verdict(names[v], list(st.last_raw), stage_sc, kill.report, plan.rehearsal)
    record.update(pid=kill.pid, kmsg=kill.kmsg, stage_scores=stage_sc,
                  kernel_rank=(kill.report or {}).get("victim_rank"))  # fmt: skip
    survivors = [x for x in r.hogs if x["alive"]]
    if plan.rehearsal:
        who = f"in the model, the kernel kills {names[v]} (pid {kill.pid})"
    elif kill.kmsg:
        who = f"the kernel killed {names[v]} (pid {kill.pid})"
    else:
        who = f"{names[v]} (pid {kill.pid}) died, but the kernel's record is missing"
    why = summary.why_lines(kill, plan.captions)  # the kernel's own points
    card = (
        who, *why, *check,
        "the others live on: " + (", ".join(f"{x['name']} (pid {x['pid']})" for x in survivors) or "none"),
        "confirmed by " + " + ".join(kill.detected_by),
    )  # fmt: skip
    if plan.rehearsal:  # says so first, and confirms nothing: the model's kill
        card = ("rehearsal: nothing was killed", *card[:-1])
    said = check[0] if check else (summary.why_lines(kill) or ["the kernel's table is missing"])[0]
    line = f"who-dies: {'rehearsal: ' if plan.rehearsal else ''}{who}; {said}"
    st = replace(st, where="card", since=r.t, kill=kill, oom_t=r.t, card=card)
    view = {"kill": kill, "oom_t": r.t, "caption": "who_dies_kill"}
    return st, Frame(events=(("verdict", record),), kills=(kill,), enter=Phase.OOM, view=view,
                     lines=(line,), wait=0.3)  # fmt: skip


def _release(plan: WhoPlan, st: WhoState, r: WhoReading) -> tuple[WhoState, Frame]:
    """The others are released: they were alive (the kernel killed one), we end them.
    A later kernel kill (the stage still at its limit before the victim's memory was
    free) gets its own kill record (`hog: false`), taken before the release so its exit
    is the kernel's SIGKILL, not ours."""
    names = plan.names
    alive = tuple(x["name"] for x in r.hogs if x["alive"])
    killed = _killed_by_kernel(r)
    by_kernel = [names[i] for i in killed]
    later = [i for i in killed if i != st.victim]
    also = tuple(_record(r, i, r.t, nth=n + 2, victim=False) for n, i in enumerate(later))
    ev = ("released", {"alive_before": list(alive), "killed_by_kernel": by_kernel})
    card, lines = st.card, ()
    more = [n for n in by_kernel if n != names[st.victim]]
    if more:
        card = (*card, f"then the kernel killed {', '.join(more)} too")
        lines = (f"who-dies: the kernel also killed {', '.join(more)}",)
    st = replace(st, where="release", since=r.t, card=card, also=also, released=alive)
    return st, Frame(actions=(("release",),), events=(ev,), lines=lines, wait=0.0)


# ---------------------------------------------------------------- the driver


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
        self.source: WhoStageSource | WhoModelSource | None = None
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
        if self.rehearsal:  # the real stage's swap: none unless --swap SIZE
            swap = 0 if self.plan.swap is None else self.plan.swap
            self.source = WhoModelSource(self.specs, self.ram_limit, swap, self.cache_bytes,
                                         self.rate)  # fmt: skip
        else:
            self.source = WhoStageSource(self.specs, self.plan, self.ram_limit, self.cache_bytes,
                                         self.rate)  # fmt: skip
        self.source.prepare(say)
        self.swap_limit = self.source.swap_limit
        if not self.swap_limit:
            self.skipped.append((Phase.SWAPPING, "no swap on this stage"))

    def run(self, publish, stop, t0: float) -> bool:
        """The one loop: read the source, step, carry out the frame, publish, wait; the
        same for the real stage and the model."""
        src = self.source
        plan = WhoPlan(tuple(s.name for s in self.specs), self.ram_limit, self.swap_limit,
                       max(0.0, float(self.settings.calm)), self.rehearsal,
                       self.settings.captions)  # fmt: skip
        src.begin(t0, self.kernel_clock)
        step = lambda st, r: who_dies_step(plan, st or WhoState(), r)  # noqa: E731
        return self.play(src, step, publish, stop)


def _clean(raw: list[dict]) -> list[dict]:
    return [{k: v for k, v in x.items() if k != "pte"} for x in raw]


__all__ = ["WhoDiesAct", "MultiHogStage", "stage_scores", "verdict", "can_lower_adj"]
