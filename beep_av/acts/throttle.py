"""`--act throttle`: CPU-bound workers in a cgroup whose CPU quota is lowered step by
step, down to a few percent. Everything slows, nothing dies, and the act ends on a low
descending two-tone instead of the beep.

Routes for the CPU cgroup (as the memory stage's, cgroup.py): a transient systemd scope
(`systemd-run --scope -p CPUQuota=`, systemd as PID 1 on cgroup v2, root), a child of our
own v2 cgroup with the cpu controller, or a child of our own v1 `cpu` cgroup
(cpu.cfs_quota_us / cpu.cfs_period_us). The quota is written to the cgroup's own file
(v2 cpu.max). The workers are hogs in `--mode spin` (armed, recorded and cleaned up like
the story's hog) that report their iterations; the throttling counters are the cgroup's
cpu.stat (nr_periods, nr_throttled, v1 throttled_time ns / v2 throttled_usec)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from beep_av import clock, interrupt
from beep_av.acts.common import ActDriver, Frame, ModelClock, ProcWatch, ReportPipe
from beep_av.errors import CannotStage
from beep_av.model import Lane, Phase, Snapshot
from beep_av.procfs import pick_fields

PERIOD_US = 100_000
# the quota, as a share of what the workers would use unthrottled (one CPU each)
STEPS = (None, 0.5, 0.2, 0.1, 0.04)
STEP_S = 2.0
CALM_S = 0.5
TICK = 0.05
CLOSING = (392.0, 261.63)  # G4 then C4: low, descending, nowhere near the beep's 880 Hz
FIX = "run as root on a machine with the cgroup cpu controller (v1 cpu, or v2 cpu)"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_route(cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc") -> tuple[str, str]:
    """(kind, parent dir or unified root): "systemd-system", "v2" or "v1". Raises
    CannotStage naming the fix."""
    text = _read(f"{proc_root}/self/cgroup") or ""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    root = Path(cgroup_root)
    uni = root if (root / "cgroup.controllers").exists() else root / "unified"
    root_ctrls = (_read(str(uni / "cgroup.controllers")) or "").split()
    pid1 = (_read(f"{proc_root}/1/comm") or "").strip()
    is_root = os.geteuid() == 0
    why = []
    if pid1 == "systemd" and v2 is not None and "cpu" in root_ctrls and is_root:
        if shutil.which("systemd-run"):
            return "systemd-system", str(uni)
        why.append("systemd-run is not installed")
    if v2 is not None and "cpu" in root_ctrls:
        own = uni / v2.lstrip("/")
        if "cpu" in (_read(str(own / "cgroup.controllers")) or "").split() and os.access(
            own, os.W_OK
        ):
            return "v2", str(own)
        why.append(f"{own} has no writable cpu controller")
    if v1 is not None:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            mount = root / name
            if (mount / "cpu.cfs_quota_us").exists():
                own = mount / v1.lstrip("/")
                if own.is_dir() and os.access(own, os.W_OK):
                    return "v1", str(own)
                why.append(f"{own} is not writable")
                break
        else:
            why.append("no v1 cpu controller mount with cpu.cfs_quota_us")
    raise CannotStage(f"no CPU cgroup to throttle in ({'; '.join(why) or 'none found'}): {FIX}")


class CpuStage:
    """The throttle act's real stage: the CPU cgroup and its spinning workers."""

    def __init__(self, workers: int, state_dir: str | None = None) -> None:
        from beep_av.stages.cleanup import StateFile

        self.n = workers
        self.state = StateFile(state_dir)
        self.kind = ""
        self.dir: str | None = None  # the cgroup's directory
        self._made: str | None = None  # a dir we made (v1/v2), removed at close
        self.name = f"beep-av-{os.getpid()}-throttle"
        self.workers: list = []  # HogProcess
        self._values: list[str] = []
        self._stat_fd: int | None = None

    def describe(self) -> str:
        where = {"systemd-system": "systemd scope", "v2": "cgroup v2", "v1": "cgroup v1"}
        return f"{where.get(self.kind, 'cgroup')} {self.name}: {self.n} CPU-bound workers"

    def prepare(self, say) -> None:
        from beep_av.hogproc import HogProcess
        from beep_av.stages.cleanup import hog_value

        self.state.ensure()
        self.kind, parent = cpu_route()
        interrupt.check()
        wrapper: list[str] = []
        if self.kind in ("v1", "v2"):
            path = os.path.join(parent, self.name)
            self.state.record("cgroup", path)  # before the mkdir: cleanup knows it
            try:
                os.mkdir(path, 0o755)
            except OSError as e:
                self.state.forget("cgroup", path)
                raise CannotStage(f"cannot create cgroup {path} ({e.strerror}): {FIX}") from None
            self.dir = self._made = path
            self.set_quota(None)
        else:
            wrapper = [
                "systemd-run", "--scope", "--quiet", "--collect", f"--unit={self.name}",
                "-p", f"CPUQuota={100 * self.n}%", "--",
            ]  # fmt: skip
        for i in range(self.n):
            interrupt.check()
            procs = os.path.join(self.dir, "cgroup.procs") if self.dir else None
            w = HogProcess(mode="spin", cgroup_procs=procs, wrapper=wrapper if i == 0 else [],
                           name=f"beep-worker-{i + 1}")  # fmt: skip
            self.workers.append(w)
            value = hog_value(w.pid)
            self._values.append(value)
            self.state.record("hog", value)
            w.wait_ready()
            if self.dir is None:  # the scope systemd made for the first worker
                v2 = next(
                    (ln[3:] for ln in (_read(f"/proc/{w.pid}/cgroup") or "").splitlines()
                     if ln.startswith("0::")),
                    None,
                )  # fmt: skip
                if not v2 or not v2.strip().endswith(f"{self.name}.scope"):
                    raise CannotStage(f"the worker is not in the scope {self.name}: {FIX}")
                self.dir = os.path.join(parent, v2.strip().lstrip("/"))
                self.state.record("cgroup", self.dir)
                self.set_quota(None)
        try:
            self._stat_fd = os.open(os.path.join(self.dir, "cpu.stat"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise CannotStage(f"cannot read {self.dir}/cpu.stat ({e.strerror}): {FIX}") from None
        say(f"stage: {self.describe()}")

    def set_quota(self, share: float | None) -> None:
        """`share` of the workers' unthrottled use (one CPU each); None: no quota."""
        assert self.dir
        quota = None if share is None else max(1000, int(share * self.n * PERIOD_US))
        if self.kind == "v1":
            files = [("cpu.cfs_period_us", str(PERIOD_US))]
            files.append(("cpu.cfs_quota_us", "-1" if quota is None else str(quota)))
        else:
            files = [("cpu.max", f"{'max' if quota is None else quota} {PERIOD_US}")]
        for name, value in files:
            path = os.path.join(self.dir, name)
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, value.encode())  # os.write: a refusal must not be swallowed
                finally:
                    os.close(fd)
            except OSError as e:
                raise CannotStage(f"cannot write {value} to {path} ({e.strerror}): {FIX}") from None

    def stat(self) -> dict[str, int]:
        """cpu.stat as {nr_periods, nr_throttled, throttled_us}."""
        try:
            text = os.pread(self._stat_fd, 4096, 0).decode() if self._stat_fd is not None else ""
            d = pick_fields(
                text, ("nr_periods", "nr_throttled", "throttled_time", "throttled_usec")
            )
        except Exception:  # noqa: BLE001 — a reading, not a reason to stop the act
            return {}
        us = d.get("throttled_usec")
        if us is None and d.get("throttled_time") is not None:
            us = d["throttled_time"] // 1000  # v1: nanoseconds
        return {
            "nr_periods": d.get("nr_periods", 0),
            "nr_throttled": d.get("nr_throttled", 0),
            "throttled_us": us or 0,
        }

    def close(self) -> list[str]:
        errors = []
        for w, value in zip(self.workers, self._values, strict=False):
            w.kill()
            w.wait(10)
            w.close()
            self.state.forget("hog", value)
        self.workers, self._values = [], []
        if self._stat_fd is not None:
            os.close(self._stat_fd)
            self._stat_fd = None
        if self._made:
            from beep_av.stages.cleanup import rmdir_cgroup

            if rmdir_cgroup(self._made):
                self.state.forget("cgroup", self._made)
                self._made = None
            else:
                errors.append(f"cgroup {self._made}")
        elif self.dir:
            deadline = time.monotonic() + 5.0
            while os.path.exists(self.dir) and time.monotonic() < deadline:
                time.sleep(0.02)
            if os.path.exists(self.dir):
                errors.append(f"scope {self.dir}")
            else:
                self.state.forget("cgroup", self.dir)
        self.dir = None
        return errors


class ModelCpu:
    """The rehearsal's stage: workers that do `base` iterations/s on a whole CPU and
    `share` of that when throttled; cpu.stat counted as the kernel would (a period
    throttled whenever the quota is below what the workers want). Deterministic."""

    def __init__(self, workers: int, seed: int | None) -> None:
        import random

        self.n = workers
        self.rng = random.Random(seed if seed is not None else 0)
        self.base = [15000.0 * (1 + 0.05 * self.rng.random()) for _ in range(workers)]
        self.share: float | None = None
        self.counts = [0.0] * workers
        self.periods = self.throttled = self.throttled_us = 0.0
        self.pids = [40000 + i for i in range(workers)]

    def advance(self, dt: float) -> None:
        f = 1.0 if self.share is None else min(1.0, self.share)
        for i in range(self.n):
            self.counts[i] += self.base[i] * f * dt * (1 + 0.02 * (self.rng.random() - 0.5))
        if self.share is not None:
            periods = dt * 1e6 / PERIOD_US
            self.periods += periods
            if self.share < 0.98:
                self.throttled += periods
                self.throttled_us += dt * 1e6 * (1 - self.share) * self.n

    def stat(self) -> dict[str, int]:
        return {
            "nr_periods": int(self.periods),
            "nr_throttled": int(self.throttled),
            "throttled_us": int(self.throttled_us),
        }


# ---------------------------------------------------------------- the seam: sources


@dataclass(frozen=True)
class CpuReading:
    """One reading of the throttle act's stage, real or modelled."""

    t: float  # show time
    counts: tuple[int, ...]  # each worker's iterations so far
    stat: dict  # cpu.stat: nr_periods, nr_throttled, throttled_us
    alive: tuple[bool, ...]
    mem: tuple[tuple[int, int], ...]  # each worker's (VmRSS, VmSwap), bytes


class CpuSource:
    """The real stage as a source: the CPU cgroup (CpuStage), its workers' report pipes
    and /proc watches, on the real clock. Actions: start(), set_quota(share)."""

    def __init__(self, n: int) -> None:
        self.stage = CpuStage(n)
        self.pipes: list[ReportPipe] = []
        self.watches: list[ProcWatch] = []
        self.t0 = 0.0

    where = property(lambda self: f"cgroup {self.stage.kind}")

    def prepare(self, say) -> None:
        self.stage.prepare(say)
        self.pipes = [ReportPipe(w.report_fd) for w in self.stage.workers]
        self.watches = [ProcWatch(w.pid) for w in self.stage.workers]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.stage.workers]

    def begin(self, t0: float) -> None:
        self.t0 = t0

    def now(self) -> float:
        return clock.now() - self.t0

    def wait(self, s: float, stop, wake: bool = False) -> None:
        stop.wait(s)

    def read(self) -> CpuReading:
        for w in self.watches:
            w.read()
        return CpuReading(
            t=self.now(),
            counts=tuple(p.drain() for p in self.pipes),
            stat=self.stage.stat(),
            alive=tuple(w.poll() is None for w in self.stage.workers),
            mem=tuple((w.rss, w.swap) for w in self.watches),
        )

    def start(self) -> None:
        for w in self.stage.workers:
            w.start()

    def set_quota(self, share: float | None) -> None:
        self.stage.set_quota(share)

    def close(self) -> list[str]:
        for w in self.watches:
            w.close()
        return self.stage.close()


class ModelCpuSource(ModelClock):
    """The rehearsal's source: ModelCpu on the model's own clock (ModelClock)."""

    where = "the model"

    def __init__(self, n: int, seed: int | None) -> None:
        self.model = ModelCpu(n, seed)
        self.pids = self.model.pids

    def prepare(self, say) -> None:
        say(f"stage: rehearsal, {self.model.n} modelled workers (nothing is throttled)")

    def advance(self, s: float) -> None:
        self.model.advance(s)

    def read(self) -> CpuReading:
        m = self.model
        return CpuReading(
            t=self._t,
            counts=tuple(int(c) for c in m.counts),
            stat=m.stat(),
            alive=(True,) * m.n,
            mem=((0, 0),) * m.n,
        )

    def start(self) -> None:
        pass

    def set_quota(self, share: float | None) -> None:
        self.model.share = share

    def close(self) -> list[str]:
        return []


# ---------------------------------------------------------------- the seam: the step


@dataclass(frozen=True)
class ThrottlePlan:
    n: int
    steps: tuple[float | None, ...] = STEPS
    step_s: float = STEP_S
    calm_s: float = CALM_S
    rehearsal: bool = False
    where: str = ""  # the stage, for the card: "cgroup v1", "the model"


@dataclass(frozen=True)
class ThrottleState:
    """Where the act is: index -1 calm, i the quota steps[i], len(steps) the end."""

    index: int = -1
    started: bool = False
    step_t: float = 0.0
    c0: int = 0
    stat0: dict = field(default_factory=dict)
    hist: tuple[tuple[float, int], ...] = ()  # (t, all workers' iterations), 0.6 s
    per_hist: tuple[tuple[tuple[float, int], ...], ...] = ()  # each worker's
    measure_from: tuple[float, int] | None = None
    base_rate: float | None = None
    full: tuple[float | None, ...] = ()  # each worker's rate at full speed
    step_rates: tuple[float, ...] = ()
    rates: tuple[float, ...] = ()  # each worker's last measured rate


def _pct(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def _recent(h: tuple, t: float, item) -> tuple:
    return tuple(x for x in (*h, item) if t - x[0] <= 0.6)


def throttle_step(
    plan: ThrottlePlan, st: ThrottleState, r: CpuReading
) -> tuple[ThrottleState, Frame]:
    """The throttle act's pure step: (plan, state, reading) -> (next state, frame)."""
    n = plan.n
    if not st.started:  # the first reading: calm, the workers start, wait out the calm
        st = replace(st, started=True, stat0=r.stat, rates=(0.0,) * n, full=(None,) * n,
                     per_hist=((),) * n)  # fmt: skip
        view = {"caption": "throttle_calm", "note": "workers ready"}
        return st, Frame(actions=(("start",),), view=view, wait=plan.calm_s)
    if st.index < 0:  # the calm is over: the first quota
        return _next_quota(plan, st, r, (), Phase.FILLING)
    share = plan.steps[st.index]
    t, total = r.t, sum(r.counts)
    hist = _recent(st.hist, t, (t, total))
    per_hist = tuple(_recent(h, t, (t, c)) for h, c in zip(st.per_hist, r.counts, strict=True))
    measure_from = st.measure_from
    if measure_from is None and t - st.step_t >= 0.5:
        measure_from = (t, total)  # the first half second settles the quota
    rate = _rate(hist)
    rates = tuple(_rate(h) for h in per_hist)
    ref = st.base_rate or rate or 1.0
    speed = max(0.02, min(1.0, rate / ref)) if ref > 0 else 1.0
    throttled, periods = _throttled(st, r)
    quota = "no quota" if share is None else f"quota {100 * share:.0f}%"
    view = {
        "intensity": 1.0 - speed,  # pressure, as in every act: the share of work held back
        "stall": min(1.0, throttled / periods) if share else 0.0,
        "caption": "throttle_full" if share is None else "throttle_slow",
        "speed": speed,
        "note": f"{quota}: {rate:,.0f} iterations/s ({100 * speed:.0f}%), "
        f"throttled {throttled} of {periods} periods",
        "word": "FULL SPEED" if share is None else "THROTTLING",
    }
    st = replace(st, hist=hist, per_hist=per_hist, measure_from=measure_from, rates=rates)
    if t - st.step_t < plan.step_s:
        return st, Frame(view=view)
    # the step is over: its rate, then the next quota (or the end)
    a_t, a_c = measure_from or (st.step_t, st.c0)
    step_rate = (total - a_c) / max(1e-3, t - a_t)
    st = replace(st, step_rates=(*st.step_rates, step_rate))
    if share is None:
        st = replace(
            st, base_rate=step_rate, full=tuple(round(_rate(h), 1) or None for h in per_hist)
        )
    done = ("step", {"quota_pct": _pct(share), "rate": round(step_rate, 1), **r.stat})
    if st.index + 1 < len(plan.steps):
        st, frame = _next_quota(plan, st, r, (done,), None)
        return st, replace(frame, view=view)
    return _end(plan, st, r, (done,), view)


def _throttled(st: ThrottleState, r: CpuReading) -> tuple[int, int]:
    throttled = r.stat.get("nr_throttled", 0) - st.stat0.get("nr_throttled", 0)
    periods = max(1, r.stat.get("nr_periods", 0) - st.stat0.get("nr_periods", 0))
    return throttled, periods


def _next_quota(plan, st, r, events, enter) -> tuple[ThrottleState, Frame]:
    i = st.index + 1
    share = plan.steps[i]
    st = replace(st, index=i, step_t=r.t, c0=sum(r.counts), measure_from=None)
    ev = ("quota", {"quota_pct": _pct(share), **r.stat})
    return st, Frame(actions=(("set_quota", share),), events=(*events, ev), enter=enter)


def _end(plan, st, r, events, view) -> tuple[ThrottleState, Frame]:
    """Who is alive, how much was throttled: the card, the closing tones."""
    throttled, periods = _throttled(st, r)
    pct = 100.0 * throttled / periods
    low = st.step_rates[-1] / st.base_rate if st.base_rate else 0.0
    dead = [f"worker {i + 1}" for i, a in enumerate(r.alive) if not a]
    end = ("end", {"throttled_pct": round(pct, 1), "nr_throttled": throttled,
                   "nr_periods": periods, "lowest_ratio": round(low, 4),
                   "alive": sum(r.alive), "dead": dead})  # fmt: skip
    card = (
        f"throttled {pct:.0f}% of the time, killed: {', '.join(dead) if dead else 'nobody'}",
        f"at {100 * plan.steps[-1]:.0f}% quota the work ran at {100 * low:.0f}% of full speed",
        f"nr_throttled {throttled} of {periods} periods",
    )
    if plan.rehearsal:  # says so first: the model's figures, nothing was throttled
        card = ("rehearsal: nothing was throttled", *card)
    else:
        card = (*card, f"{plan.n} workers, {plan.where}")
    # the gauge and the lanes hold the last step's figures (the workers still run until
    # the stage is torn down): work at the lowest quota, the periods throttled
    final = {
        "intensity": 0.0, "stall": min(1.0, throttled / periods), "caption": "throttle_end",
        "title": "THROTTLED", "card": card, "word": "THROTTLED", "closing": CLOSING,
        "speed": max(0.0, min(1.0, low)), "note": "",
    }  # fmt: skip
    st = replace(st, index=len(plan.steps))
    line = f"throttle: {card[0]}; lowest quota at {100 * low:.1f}% of full speed"
    return st, Frame(events=(*events, end), enter=Phase.FINALE, view=final, lines=(line,),
                     done=True)  # fmt: skip


# ---------------------------------------------------------------- the driver


class ThrottleAct(ActDriver):
    act = "throttle"
    kind = "throttle"
    gauge = "cpu"
    end_reason = "end"

    def __init__(self, settings, workers: int | None = None) -> None:
        super().__init__(settings)
        self.n = workers or max(1, min(2, os.cpu_count() or 1))
        self.source: CpuSource | ModelCpuSource = (
            ModelCpuSource(self.n, settings.seed) if self.rehearsal else CpuSource(self.n)
        )
        self.steps = STEPS
        self.step_s = STEP_S

    def header(self) -> dict:
        return {
            "act": self.act,
            "gauge": self.gauge,
            "workers": self.n,
            "steps": [_pct(s) for s in self.steps],
            "step_s": self.step_s,
            "period_us": PERIOD_US,
        }

    def prepare(self, say) -> None:
        self.source.prepare(say)

    def run(self, publish, stop, t0: float) -> bool:
        """The one loop: read the source, step, carry out the frame's actions, publish,
        wait; the same for the real stage and the model."""
        src = self.source
        plan = ThrottlePlan(self.n, tuple(self.steps), self.step_s, CALM_S, self.rehearsal,
                            src.where)  # fmt: skip
        src.begin(t0)
        names = [f"worker {i + 1}" for i in range(self.n)]

        def lanes(st: ThrottleState, r: CpuReading) -> tuple[Lane, ...]:
            return tuple(
                Lane(names[i], src.pids[i], i, rss=r.mem[i][0], swap=r.mem[i][1],
                     alive=r.alive[i], work_rate=round(st.rates[i], 1), full_rate=st.full[i])
                for i in range(self.n)
            )  # fmt: skip

        return self.play(
            src,
            lambda st, r: throttle_step(plan, st or ThrottleState(), r),
            publish,
            stop,
            lanes=lanes,
            snap=lambda r: Snapshot(t=0.0),
        )

    def _teardown_stage(self) -> None:
        errors = self.source.close()
        if errors:
            raise CannotStage(f"could not remove {', '.join(errors)}; run `beep-av cleanup`")


def _rate(h) -> float:
    if len(h) < 2:
        return 0.0
    (ta, ca), (tb, cb) = h[0], h[-1]
    return (cb - ca) / (tb - ta) if tb > ta else 0.0
