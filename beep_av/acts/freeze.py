"""`--act freeze`: slow, not dead. The hog's working set first fits in the stage's RAM
and it touches every page in a loop at memory speed; then the set grows past RAM (but
inside RAM + swap), so every page it touches has gone to swap and comes straight back
(refaults). Its work rate falls from memory speed to swap speed, every task waits on
memory (PSI `full`), and the kernel's OOM killer stays away: reclaim still makes
progress, there is still swap. A user-space killer ends it, for real: Beep arms a
kernel PSI trigger (a `full` stall over a window) on the stage's pressure file
(`memory.pressure` on cgroup v2, the machine's `/proc/pressure/memory` on v1, said
which) and, when the kernel fires it and Beep's own reading of the stall agrees, kills
the hog with SIGKILL, as systemd-oomd or earlyoom would. If the kernel kills first,
the card says so."""

from __future__ import annotations

import os
import select
import signal
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
    watched_lane,
)
from beep_av.errors import BadInput, CannotStage
from beep_av.model import OWN_KILLER, Lane, Phase, Snapshot
from beep_av.stages.cgroup import CgroupStage
from beep_av.story import evidence_record
from beep_av.summary import share_text

MiB = 1 << 20
PAGE = 4096
TICK = 0.02
FIT_S = 3.0  # the working set fits: the work rate at memory speed, measured over this
FIT_SHARE = 0.5  # of RAM: the set that fits (the interpreter needs the rest)
FREEZE_SHARE = 1.875  # of RAM: the set that does not (measured: at 1.25-1.56x the kernel
# sometimes killed during a swap-in's charge; at 1.875x never, in 4 runs)
SWAP_SHARE = 2.0  # of RAM: the stage's swap for an `auto` stage (room for the set)
AUTO_RAM_MAX = 256 * MiB  # the default stage: a pass over the set stays a few seconds
TRIGGER = ("full", 200_000, 2_000_000)  # 0.2 s of full stall within 2 s (10%)
PSI_EVERY = 1.0  # s between reads of the pressure file (each read can starve the trigger)
COUNT_EVERY = 1.0  # s between two `count` events (the refault counter, for the report)
HOLD_S = 8.0  # the killer waits out this much pressure (systemd-oomd's default: 30 s)
FREEZE_MAX_S = 90.0  # the trigger never fired: Beep says so and ends the hog
OOMD = "systemd-oomd"  # --killer systemd-oomd: the running systemd-oomd ends the freeze
# ManagedOOMMemoryPressureLimit= of the stage (oomd's default: 60%): the freeze's full
# stall measured 21-30%, and at a 20% limit the guest's oomd waited 48 s for an avg10
# just over it (21.1%); 10% leaves room
OOMD_LIMIT = "10%"
OOMD_AFTER_S = 20.0  # the model's oomd acts once the pressure lasted this (the guest's
# systemd 252 said "for > 20s"; upstream's documented default is 30 s)
OOMD_LINE_S = 3.0  # after the hog's death: oomd's journal line is looked for this long
CARD_S = 0.3  # the kill, then the card and the beep
CONFIRM_S = 1.0  # after the kill: the hog's exit (and any kernel record) within this
RATE_WINDOW = 1.0  # s: the work rate is measured over this
CLOSING = ()  # the one clean beep


# ---------------------------------------------------------------- the kernel's trigger


def trigger_text(kind: str, stall_us: int, window_us: int) -> bytes:
    """A PSI trigger as the kernel takes it (a trailing NUL: /proc's parser overwrites
    the last byte)."""
    return f"{kind} {int(stall_us)} {int(window_us)}".encode() + b"\0"


class PsiTrigger:
    """A kernel PSI trigger armed on a pressure file: `fired()` says whether the kernel
    signalled it (POLLPRI) since the last call. One trigger per open fd."""

    def __init__(self, path: str, kind: str, stall_us: int, window_us: int) -> None:
        self.path = path
        self.text = trigger_text(kind, stall_us, window_us).rstrip(b"\0").decode()
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise CannotStage(f"cannot open {path} for a PSI trigger ({e.strerror})") from None
        try:
            os.write(self.fd, trigger_text(kind, stall_us, window_us))
        except OSError as e:
            os.close(self.fd)
            self.fd = -1
            hint = (
                " (a window is whole 2 s steps up to 10 s without CAP_SYS_RESOURCE)"
                if e.errno == 22
                else ""
            )
            raise CannotStage(
                f"the kernel refused the PSI trigger '{self.text}' on {path}: {e.strerror}{hint}"
            ) from None
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLPRI)

    def fired(self) -> bool:
        if self.fd < 0:
            return False
        return any(ev & select.POLLPRI for _, ev in self._poll.poll(0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def refaults(raw: bytes) -> int | None:
    """Anonymous pages read back after they were evicted, from a memory.stat (v1 or v2)
    or /proc/vmstat: workingset_refault_anon, else pswpin (pages swapped in)."""
    for key in (b"\nworkingset_refault_anon ", b"\npswpin "):
        i = (b"\n" + raw).find(key)
        if i >= 0:
            j = i + len(key) - 1
            end = raw.find(b"\n", j)
            try:
                return int(raw[j : end if end >= 0 else None])
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------- the seam: sources


@dataclass(frozen=True)
class FreezeReading:
    """One reading of the freeze act's stage, real or modelled."""

    t: float
    snap: Snapshot  # the stage's memory and PSI totals, the hog's exit, the kernel's records
    lanes: tuple[Lane, ...]  # the hog
    touched: int  # pages the hog has touched so far
    ws: int  # its working set's bytes
    refaults: int | None  # the refault (or swap-in) counter
    fired: bool  # the kernel fired the PSI trigger since the last reading
    psi_where: str  # which pressure file: "the stage's" or "the machine's"
    killer_line: str | None = None  # the user-space killer's own words (oomd's journal)


class FreezeStage(CgroupStage):
    """The memory cgroup stage with the thrashing hog (oom_score_adj 1000).

    `oomd`: the stage is a systemd scope that systemd-oomd watches
    (ManagedOOMMemoryPressure=kill). oomd never kills the unit it watches, only leaf
    cgroups below it: the scope is delegated and the hog moves into a child, `hog`,
    with the memory controller enabled for it (oomd ranks candidates by memory.stat)."""

    def __init__(self, fit: int, oomd: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.fit = fit
        self.oomd = oomd
        if oomd:
            self.scope_props = ("Delegate=yes", "ManagedOOMMemoryPressure=kill",
                                f"ManagedOOMMemoryPressureLimit={OOMD_LIMIT}",
                                "ManagedOOMPreference=none")  # fmt: skip
        self.leaf: str | None = None

    def _spawn_hog(self) -> None:
        interrupt.check()
        if self.oomd:
            if not (self.route and self.route.systemd):
                raise CannotStage(
                    "--killer systemd-oomd needs a systemd scope on cgroup v2 (this machine's"
                    " stage is a plain cgroup): use the default killer, beep-av"
                )
            why = oomd_missing()
            if why:
                raise CannotStage(f"--killer systemd-oomd: {why}")
        self._spawn_one(mode="thrash", size=self.fit)
        if self.oomd:
            self._leaf()

    def _leaf(self) -> None:
        """The hog into the delegated scope's child `hog`, memory enabled for it."""
        assert self.cgroup_dir and self.hog
        leaf = os.path.join(self.cgroup_dir, "hog")
        try:
            os.mkdir(leaf)
            self.leaf = leaf
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write(f"{self.hog.pid}\n")
            with open(os.path.join(self.cgroup_dir, "cgroup.subtree_control"), "w") as f:
                f.write("+memory\n")
        except OSError as e:
            raise CannotStage(
                f"cannot give systemd-oomd a cgroup to kill in {self.cgroup_dir} ({e.strerror})"
            ) from None

    def teardown(self) -> None:
        if self.leaf is not None:  # the child first, so systemd can collect an empty scope
            if self.hog is not None:
                self.hog.kill()
                self.hog.wait(10)
            try:
                os.rmdir(self.leaf)
            except OSError:
                pass  # systemd removes a delegated scope's children with it
            self.leaf = None
        super().teardown()


def oomd_missing() -> str | None:
    """Why systemd-oomd cannot act here, or None when it runs."""
    import subprocess

    try:
        r = subprocess.run(["systemctl", "is-active", "systemd-oomd.service"],
                           capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "systemctl is not here to ask whether systemd-oomd runs"
    if r.stdout.strip() != "active":
        return "systemd-oomd is not running (systemctl start systemd-oomd)"
    return None


def oomd_line(scope: str, since_epoch: float) -> str | None:
    """systemd-oomd's journal line that says it killed in `scope` since then."""
    import subprocess

    try:
        r = subprocess.run(
            ["journalctl", "-u", "systemd-oomd.service", "-o", "cat", "--no-pager", "-q",
             f"--since=@{int(since_epoch)}"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("Killed ") and scope in line:
            return line.strip()
    return None


class _NoReport:
    """The hog as the sampler should see it: its pid, pidfd and exit, but not its report
    pipe (that counts pages touched, read by the act, not bytes climbed)."""

    def __init__(self, hog) -> None:
        self._hog = hog
        self.pid, self.pidfd, self.report_fd = hog.pid, hog.pidfd, None

    def poll(self):
        return self._hog.poll()


class FreezeStageSource(StageClock):
    """The real stage as a source: FreezeStage, the story's sampler on its files (woken
    by its event fds), the hog's /proc watch and report pipe, the refault counter and
    the PSI trigger; the real clock. Actions: start, grow, arm, kill_hog."""

    def __init__(self, plan: FreezePlan, swap) -> None:
        self.stage = FreezeStage(plan.fit, oomd=plan.killer == OOMD, ram=plan.ram, swap=swap)
        self.plan = plan
        self.sampler = None
        self.pipe: ReportPipe | None = None
        self.watch: ProcWatch | None = None
        self.trigger: PsiTrigger | None = None
        self.t0 = 0.0
        self.swap_limit = 0
        self._lane: Lane | None = None
        self._lane_t = -1.0
        self._ws = 0
        self._stat_fd: int | None = None
        self.psi_path = ""
        self.psi_where = ""
        self._since_epoch = 0.0
        self._killer_line: str | None = None
        self._looked = False

    def prepare(self, say) -> None:
        import time

        self._since_epoch = time.time() - 1.0
        if self.stage.oomd:  # before anything exists (the route is checked at the spawn)
            why = oomd_missing()
            if why:
                raise CannotStage(f"--killer systemd-oomd: {why}")
        self.stage.prepare(say)
        self.swap_limit = self.stage.swap_limit
        need = self.plan.freeze - self.plan.ram + 64 * MiB
        if self.swap_limit < need:
            raise CannotStage(
                f"the stage has {self.swap_limit // MiB} MiB of swap; the freeze needs "
                f"{need // MiB} MiB (--swap auto, or at least that)"
            )
        hog = self.stage.hog
        self.watch = ProcWatch(hog.pid)
        self.pipe = ReportPipe(hog.report_fd)
        files = self.stage.files()
        self.psi_path = files.psi or "/proc/pressure/memory"
        self.psi_where = "the stage's" if files.cgroup_version == 2 else "the machine's"
        try:
            self._stat_fd = os.open(files.memory_stat, os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, TypeError):
            self._stat_fd = None

    def begin(self, t0: float, ram: int, kernel_clock) -> None:
        from beep_av.sampler import Sampler

        self.t0 = t0
        self.sampler = Sampler(self.stage.files(), _NoReport(self.stage.hog), t0=t0,
                               ram_limit=ram, swap_limit=self.swap_limit,
                               kernel_clock=kernel_clock, psi_every=PSI_EVERY)  # fmt: skip

    def _lane_now(self, t: float) -> Lane:
        if self._lane is None or t - self._lane_t >= LANE_EVERY:
            self._lane, self._lane_t = watched_lane("hog", self.stage.hog, self.watch), t
        return self._lane

    def read(self) -> FreezeReading:
        t = self.now()
        snap = self.sampler.read(t)
        touched = self.pipe.drain()
        for line in self.pipe.lines:
            if line.startswith("ws "):
                self._ws = int(line.split()[1])
        self.pipe.lines.clear()
        count = None
        if self._stat_fd is not None:
            try:
                count = refaults(os.pread(self._stat_fd, 16384, 0))
            except OSError:
                count = None
        fired = self.trigger.fired() if self.trigger is not None else False
        snap = replace(snap, hog_bytes=self._ws)
        lane = self._lane_now(t)
        if snap.hog_exit is not None and self.stage.oomd and not self._looked:
            self._looked = True  # oomd logs as it kills: give its journal a moment
            self._killer_line = self._wait_for_oomd_line()
        return FreezeReading(t, snap, (lane,), touched, self._ws, count, fired, self.psi_where,
                             self._killer_line)  # fmt: skip

    def _wait_for_oomd_line(self) -> str | None:
        import time

        scope = os.path.basename(self.stage.cgroup_dir or "")
        end = time.monotonic() + OOMD_LINE_S
        while True:
            line = oomd_line(scope, self._since_epoch) if scope else None
            if line is not None or time.monotonic() >= end:
                return line
            interrupt.sleep(0.2)

    def start(self) -> None:
        self.stage.hog.start()

    def grow(self, nbytes: int) -> None:
        self.stage.hog.grow(nbytes)

    def arm(self, kind: str, stall_us: int, window_us: int) -> None:
        self.trigger = PsiTrigger(self.psi_path, kind, stall_us, window_us)

    def kill_hog(self) -> None:
        """The user-space killer's act: SIGKILL, as systemd-oomd and earlyoom send."""
        try:
            os.kill(self.stage.hog.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.trigger is not None:
            self.trigger.close()
        if self._stat_fd is not None:
            os.close(self._stat_fd)
            self._stat_fd = None
        if self.watch is not None:
            self.watch.close()
        if self.sampler is not None:
            self.sampler.close()
        self.stage.teardown()


class FreezeModelSource(ModelClock):
    """The rehearsal's source, deterministic, on the model's own clock: the set fits
    and is touched at memory speed; grown past RAM, it is touched at swap speed, each
    touch a swap-in, with a full stall of STALL of the time; the model's kernel fires
    the trigger on its 2 s tick once the window's stall passes the threshold; the kill
    ends the hog (exit 137, no kernel record: the kernel's OOM killer never acts)."""

    PID = 43000
    FAST = 2.0e7  # pages/s: a resident set, one byte a page
    SLOW = 4.0e4  # pages/s: every touch a swap-in (measured 34,000-53,000 here)
    STALL = 0.28  # share of the time every task waits on memory (measured 21-30%)

    def __init__(self, plan: FreezePlan, swap: int) -> None:
        self.plan, self.swap_limit = plan, swap
        self.psi_where = "the model's"
        self.ws = 0
        self.touched = 0.0
        self.full_us = 0.0
        self.some_us = 0.0
        self.refaulted = 0.0
        self.running = False
        self.killed = False
        self.trigger: tuple[int, int] | None = None
        self._stalls: list[tuple[float, float]] = []  # (t, full_us) at each tick
        self._fired = False
        self._next_tick = 0.0
        self._frozen_t: float | None = None  # when the set grew past RAM
        self.killer_line: str | None = None

    def prepare(self, say) -> None:
        say("stage: rehearsal, a modelled thrashing hog (nothing is allocated)")

    def advance(self, s: float) -> None:
        if not self.running or self.killed:
            return
        frozen = self.ws > self.plan.ram
        rate = self.SLOW if frozen else self.FAST
        self.touched += rate * s
        if frozen:
            self.refaulted += rate * s
            self.full_us += self.STALL * s * 1e6
            self.some_us += (self.STALL + 0.02) * s * 1e6
        t = self._t + s
        if frozen and self._frozen_t is None:
            self._frozen_t = self._t
        if (frozen and self.plan.killer == OOMD and self._frozen_t is not None
                and t - self._frozen_t >= OOMD_AFTER_S):  # fmt: skip
            # the model's systemd-oomd: the pressure over its limit for its duration
            self.killed = True
            self.killer_line = (f"the model's systemd-oomd: pressure over {OOMD_LIMIT} for "
                                f"{OOMD_AFTER_S:.0f} s")  # fmt: skip
        if self.trigger is not None and t >= self._next_tick:
            self._next_tick = t + 2.0
            stall, window = self.trigger
            self._stalls.append((t, self.full_us))
            past = [x for tt, x in self._stalls if t - tt <= window / 1e6 + 1e-9]
            if past and self.full_us - past[0] >= stall:
                self._fired = True

    def read(self) -> FreezeReading:
        t = self._t
        swap = max(0, self.ws - int(self.plan.ram * 0.95)) if not self.killed else 0
        ws = 0 if self.killed else self.ws
        snap = Snapshot(
            t=t, anon_bytes=ws - swap, swap_bytes=swap, ram_limit=self.plan.ram,
            swap_limit=self.swap_limit, hog_bytes=ws, hog_pid=self.PID,
            hog_running=self.running and not self.killed,
            hog_exit=137 if self.killed else None,
            psi_some_us=int(self.some_us), psi_full_us=int(self.full_us),
        )  # fmt: skip
        lane = Lane("hog", self.PID, 1, rss=ws - swap, swap=swap, oom_score=1000,
                    oom_score_adj=1000, alive=not self.killed)  # fmt: skip
        fired, self._fired = self._fired, False
        return FreezeReading(t, snap, (lane,), int(self.touched), ws, int(self.refaulted), fired,
                             self.psi_where, self.killer_line)  # fmt: skip

    def start(self) -> None:
        self.running = True
        self.ws = self.plan.fit

    def grow(self, nbytes: int) -> None:
        self.ws = nbytes

    def arm(self, kind: str, stall_us: int, window_us: int) -> None:
        self.trigger = (stall_us, window_us)
        self._next_tick = self._t + 2.0

    def kill_hog(self) -> None:
        self.killed = True

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the seam: the step


@dataclass(frozen=True)
class FreezePlan:
    ram: int
    fit: int  # bytes of the working set that fits
    freeze: int  # bytes of the one that does not
    calm_s: float
    rehearsal: bool = False
    fit_s: float = FIT_S
    trigger: tuple[str, int, int] = TRIGGER
    hold_s: float = HOLD_S
    freeze_max_s: float = FREEZE_MAX_S
    confirm_s: float = CONFIRM_S
    killer: str = OWN_KILLER  # or OOMD: the running systemd-oomd ends it


@dataclass(frozen=True)
class FreezeState:
    """Where the act is: new, fill, fits, freeze, confirm, done."""

    where: str = "new"
    since: float = 0.0
    hist: tuple[tuple[float, int, int, int], ...] = ()  # (t, touched, refaults, full_us)
    base_rate: float | None = None  # pages/s while the set fitted
    frozen_t: float | None = None  # when the rate first fell below a tenth of the base
    low_rate: float | None = None  # the lowest rate seen in the freeze
    fired: tuple[float, ...] = ()  # the trigger's firings Beep acted on (show times)
    ignored: int = 0  # firings the measured stall did not bear out
    killed_t: float | None = None
    fired_by: str = ""
    stall_at_kill: float = 0.0  # full stall share over the window when Beep killed
    lanes: tuple[Lane, ...] = ()  # to publish: the hog's, with its work rate
    card: dict | None = None  # the view of the ending, kept for the finale
    counted_t: float = -1e9  # when the refault counter was last written (a `count` event)


def _rate(hist, i: int, window: float = RATE_WINDOW) -> float:
    if len(hist) < 2:
        return 0.0
    t1 = hist[-1][0]
    first = next((h for h in hist if t1 - h[0] <= window), hist[0])
    last = hist[-1]
    dt = last[0] - first[0]
    return (last[i] - first[i]) / dt if dt > 0 else 0.0


def freeze_step(plan: FreezePlan, st: FreezeState, r: FreezeReading) -> tuple[FreezeState, Frame]:
    """The freeze act's pure step: (plan, state, reading) -> (next state, frame); the
    state keeps the lanes to publish (the hog's, with its work rate)."""
    st, frame, lanes = _step(plan, st, r)
    if r.refaults is not None and st.where in ("fits", "freeze", "confirm"):
        if r.t - st.counted_t >= COUNT_EVERY:  # the report draws refaults/s from these
            ev = ("count", {"refaults": r.refaults})
            frame = replace(frame, events=(*frame.events, ev))
            st = replace(st, counted_t=r.t)
    return replace(st, lanes=lanes), frame


def _step(plan: FreezePlan, st: FreezeState, r: FreezeReading):
    kind, stall_us, window_us = plan.trigger
    window = window_us / 1e6
    snap = r.snap
    hist = (*st.hist, (r.t, r.touched, r.refaults or 0, snap.psi_full_us))
    hist = tuple(h for h in hist if r.t - h[0] <= window + 1.0)
    st = replace(st, hist=hist)
    rate = _rate(hist, 1)
    refault_rate = _rate(hist, 2) if r.refaults is not None else None
    base = st.base_rate
    speed = max(0.0, min(1.0, rate / base)) if base else 1.0
    full = _rate(hist, 3, 2.0) / 1e6  # share of the last 2 s every task waited
    lane = replace(r.lanes[0], work_rate=round(rate, 1), full_rate=round(base, 1) if base else None,
                   work_unit="pages/s")  # fmt: skip
    lanes = (lane,)
    fig = (
        f"work {share_text(speed)} of its start, "
        + (f"{refault_rate:,.0f} refaults/s, " if refault_rate is not None else "")
        + f"PSI full {100 * full:.0f}% ({r.psi_where})"
    )
    if st.where == "new":
        view = {"caption": "freeze_fits", "note": "the hog's working set fits in RAM",
                "word": "MEMORY SPEED"}  # fmt: skip
        return (
            replace(st, where="fill", since=r.t),
            Frame(actions=(("start",),), view=view, pressure=True, wait=plan.calm_s),
            lanes,
        )
    if st.where in ("fill", "fits", "freeze") and snap.hog_exit is not None:
        return _ended(plan, st, r, lanes)
    if st.where == "fill":  # the set is being written: the rate is not the loop's yet
        if r.ws < plan.fit or r.touched * PAGE < plan.fit * 2:
            view = {"caption": "freeze_fits", "note": f"writing the working set: {r.ws // MiB} MiB",
                    "word": "MEMORY SPEED"}  # fmt: skip
            return st, Frame(view=view, pressure=True, wait=0.05, enter=Phase.FILLING), lanes
        st = replace(st, where="fits", since=r.t, hist=hist[-1:])
        return st, Frame(wait=0.05), lanes
    if st.where == "fits":
        view = {"caption": "freeze_fits", "speed": 1.0, "word": "MEMORY SPEED",
                "note": f"{r.ws // MiB} MiB fits in {plan.ram // MiB} MiB of RAM: "
                        f"{rate:,.0f} pages/s"}  # fmt: skip
        if r.t - st.since < plan.fit_s:
            return st, Frame(view=view, pressure=True, wait=0.05), lanes
        ev = ("fits", {"ws": r.ws, "rate": round(rate, 1)})
        st = replace(st, where="freeze", since=r.t, base_rate=rate, hist=hist[-1:])
        grow = ("grow", {"ws": plan.freeze, "ram": plan.ram,
                         "mark": f"working set {plan.freeze // MiB} MiB > RAM {plan.ram // MiB} MiB"})  # fmt: skip
        arm = ("armed", {"trigger": f"{kind} {stall_us} {window_us}", "psi": r.psi_where})
        return st, Frame(actions=(("grow", plan.freeze), ("arm", kind, stall_us, window_us)),
                         events=(ev, grow, arm), view=view, pressure=True, wait=TICK), lanes  # fmt: skip
    if st.where == "freeze":
        frozen_t = st.frozen_t
        if frozen_t is None and base and rate < base / 10 and r.t - st.since > 0.5:
            frozen_t = r.t
        low = st.low_rate
        if r.t - st.since > 1.0 and rate > 0 and (low is None or rate < low):
            low = rate
        st = replace(st, frozen_t=frozen_t, low_rate=low)
        view = {"caption": "freeze_thrash", "speed": speed, "note": fig,
                "word": "FROZEN" if frozen_t is not None else "SWAPPING"}  # fmt: skip
        return _killer(plan, st, r, view, lanes)
    if st.where == "confirm":
        if snap.hog_exit is None and r.t - st.since < plan.confirm_s:
            return st, Frame(wait=TICK, wake=True), lanes
        return _ended(plan, st, r, lanes)
    if st.where == "card":  # the noise stopped dead at the kill; now the card, the beep
        frame = Frame(enter=Phase.FINALE, view=dict(st.card), done=True)
        return replace(st, where="done"), frame, st.lanes
    raise AssertionError(st.where)


def _killer(plan: FreezePlan, st: FreezeState, r: FreezeReading, view: dict, lanes):
    """The user-space killer, as systemd-oomd works: it kills when the pressure has
    lasted `hold_s`. Each firing of the kernel's trigger says the window just past had
    more full stall than its threshold; Beep's own reading of the PSI totals over that
    window must agree (an unprivileged trigger on /proc's file fires once at once, on
    the stall since boot): else the firing is counted and ignored. Firings more than
    two windows apart start the pressure over."""
    kind, stall_us, window_us = plan.trigger
    window = window_us / 1e6
    hist = st.hist
    first = next((h for h in hist if r.t - h[0] <= window + 0.05), hist[0])
    waited = hist[-1][3] - first[3]
    span = hist[-1][0] - first[0]
    agrees = span >= window * 0.9 and waited >= stall_us * min(1.0, span / window)
    if r.fired and not agrees:
        st = replace(st, ignored=st.ignored + 1)
    elif r.fired:
        fired = st.fired
        if fired and r.t - fired[-1] > 2 * window + 2.0:
            fired = ()  # the pressure eased in between: it starts over
        st = replace(st, fired=(*fired, r.t), stall_at_kill=waited / 1e6 / max(1e-3, span))
    by = ""
    # the first firing saw a whole window of stall: the pressure began a window before
    if plan.killer == OOMD:  # systemd-oomd acts: Beep watches, and ends it only at the last
        if r.t - st.since >= plan.freeze_max_s:
            by = f"systemd-oomd did not act in {plan.freeze_max_s:.0f} s"
    elif r.fired and agrees and r.t - st.fired[0] + window >= plan.hold_s - 0.1:
        by = "the kernel's PSI trigger"
    elif r.t - st.since >= plan.freeze_max_s:
        by = f"no lasting firing in {plan.freeze_max_s:.0f} s"
    if not by:
        return st, Frame(view=view, pressure=True, wait=TICK, wake=True), lanes
    st = replace(st, where="confirm", since=r.t, killed_t=r.t, fired_by=by)
    mark = (
        f"PSI trigger fired {len(st.fired)}x: beep-av kills" if st.fired else f"{by}: beep-av kills"
    )
    ev = ("fired", {"by": by, "mark": mark, "trigger": f"{kind} {stall_us} {window_us}", "psi": r.psi_where,
                    "firings": len(st.fired), "first_t": round(st.fired[0], 4) if st.fired else None,
                    "full_us_in_window": int(waited), "window_s": round(span, 3),
                    "ignored": st.ignored})  # fmt: skip
    return st, Frame(actions=(("kill_hog",),), events=(ev,), view=view, pressure=True,
                     wait=TICK, wake=True), lanes  # fmt: skip


def _ended(plan: FreezePlan, st: FreezeState, r: FreezeReading, lanes):
    """The hog is gone: by Beep's kill, by the kernel's (it acted first), or on its own
    (an error, never taken as a kill)."""
    snap = r.snap
    mb = MiB
    if snap.hog_exit is None and snap.kmsg_kill is None:
        raise CannotStage("the hog did not die within a second of Beep's SIGKILL")
    if st.killed_t is None and snap.kmsg_kill is None and snap.hog_exit not in (-9, 137):
        raise CannotStage(
            f"the hog ended on its own (exit {snap.hog_exit}) before anything killed it; "
            "run `beep-av doctor`"
        )
    pid = lanes[0].pid or 0
    at = st.killed_t if st.killed_t is not None else r.t
    kill = evidence_record(pid, snap.hog_exit, snap.oom_kill_count, snap.kmsg_kill, at,
                           kernel_t=snap.kmsg_t, seen_t=snap.kmsg_seen_t)  # fmt: skip
    base = st.base_rate or 0.0
    low = st.low_rate if st.low_rate is not None else 0.0
    frozen = (at - st.frozen_t) if st.frozen_t is not None else 0.0
    by_oomd = plan.killer == OOMD and st.killed_t is None and not kill.oom
    if by_oomd:  # named only from its own words; a SIGKILL without them is unexplained
        kill = replace(kill, killer=OOMD if r.killer_line else "user space")
    elif not kill.oom:
        kill = replace(kill, killer=OWN_KILLER)
    kind, stall_us, window_us = plan.trigger
    trig = f"{kind} {stall_us / 1e6:g} s in {window_us / 1e6:g} s"
    slow = (
        f"work fell {base / low:,.0f}x, {base:,.0f} to {low:,.0f} pages/s"
        if base and low
        else "work rate unknown"
    )
    lines = [f"frozen for {frozen:.1f} s: {slow}"]
    if kill.oom:  # the kernel acted before Beep did: said plainly
        lines.append(f"the kernel's OOM killer acted first (pid {kill.pid}, exit {kill.exit})")
    elif by_oomd:
        if r.killer_line and plan.rehearsal:
            lines.append(f"{r.killer_line}: it ended the hog (pid {kill.pid})")
        elif r.killer_line:
            lines.append(f"systemd-oomd killed the hog (pid {kill.pid}) from user space:")
            lines.append(r.killer_line[:160])
        else:
            lines.append(f"a SIGKILL from user space ended the hog (pid {kill.pid}); "
                         "systemd-oomd's journal does not say it was its")  # fmt: skip
        lines.append(f"the kernel's OOM killer never acted (oom_kill {snap.oom_kill_count})")
    else:
        if st.fired_by == "the kernel's PSI trigger":
            n = len(st.fired)
            lines.append(f"PSI trigger {trig} ({r.psi_where}): fired {n}x in "
                         f"{at - st.fired[0]:.1f} s, {100 * st.stall_at_kill:.0f}% full stall")  # fmt: skip
        else:
            lines.append(f"the PSI trigger ({trig}) did not fire for long: {st.fired_by}")
        who = "the model's killer ended" if plan.rehearsal else "beep-av killed"
        lines.append(f"{who} the hog (pid {kill.pid}) from user space, as systemd-oomd would")
        lines.append(f"the kernel's OOM killer never acted (oom_kill {snap.oom_kill_count})")
    if plan.rehearsal:
        lines = ["rehearsal: nothing was killed", *lines]
    ev = ("end", {"frozen_s": round(frozen, 3), "base_rate": round(base, 1),
                  "low_rate": round(low, 1), "killer": kill.killer, "oom": kill.oom,
                  "oom_kill": snap.oom_kill_count, "fired_by": st.fired_by,
                  "ignored": st.ignored, "ws": plan.freeze, "ram": plan.ram,
                  "swap": snap.swap_bytes // mb, "killer_line": r.killer_line})  # fmt: skip
    view = {"kill": kill, "oom_t": kill.t, "card": tuple(lines),
            "caption": None if kill.oom else "freeze_end",
            "note": "", "speed": max(0.0, min(1.0, low / base)) if base else 0.0}  # fmt: skip
    line = "freeze: " + "; ".join(lines)
    st = replace(st, where="card", since=r.t, card=view)
    return st, Frame(events=(ev,), kills=(kill,), enter=Phase.OOM, enter_t=kill.t, view=view,
                     lines=(line,), wait=CARD_S), lanes  # fmt: skip


# ---------------------------------------------------------------- the driver


def freeze_sizes(ram: int) -> tuple[int, int, int]:
    """(the set that fits, the one that does not, the swap an `auto` stage gets)."""
    fit = int(ram * FIT_SHARE) // MiB * MiB
    freeze = int(ram * FREEZE_SHARE) // MiB * MiB
    return fit, freeze, int(ram * SWAP_SHARE) // MiB * MiB


class FreezeAct(ActDriver):
    act = "freeze"
    psi_every = PSI_EVERY
    kind = "freeze"  # its gauge is the memory's (RAM, swap); the work rate is the lane's

    def __init__(self, settings, plan) -> None:
        super().__init__(settings)
        ram = plan.ram
        if settings.ram == "auto":
            ram = min(ram, AUTO_RAM_MAX)
        self.ram_limit = ram
        fit, freeze, auto_swap = freeze_sizes(ram)
        if plan.swap == 0:
            raise BadInput("--act freeze needs swap on the stage: give --swap SIZE or auto")
        self.swap = auto_swap if plan.swap is None else plan.swap
        if self.swap < freeze - ram + 64 * MiB:
            raise BadInput(
                f"--swap {self.swap // MiB}M is too small for the freeze: its working set "
                f"({freeze // MiB} MiB) must fit in RAM + swap with room to spare "
                f"(at least {(freeze - ram + 64 * MiB) // MiB}M, or auto)"
            )
        killer = getattr(settings, "killer", OWN_KILLER) or OWN_KILLER
        self.freeze_plan = FreezePlan(ram, fit, freeze, max(0.0, float(settings.calm)),
                                      self.rehearsal, killer=killer)  # fmt: skip
        # the kill this act stages is by design, not a surprise from user space (exit 0)
        self.expected_killers = (OWN_KILLER, killer)
        self.source: FreezeStageSource | FreezeModelSource | None = None

    def header(self) -> dict:
        p = self.freeze_plan
        kind, stall_us, window_us = p.trigger
        return {"act": self.act, "psi_every": self.psi_every, "fit_bytes": p.fit,
                "freeze_bytes": p.freeze, "trigger": f"{kind} {stall_us} {window_us}",
                "killer": p.killer}  # fmt: skip

    def prepare(self, say) -> None:
        if self.rehearsal:
            self.source = FreezeModelSource(self.freeze_plan, self.swap)
        else:
            self.source = FreezeStageSource(self.freeze_plan, self.swap)
        self.source.prepare(say)
        self.swap_limit = self.source.swap_limit

    def run(self, publish, stop, t0: float) -> bool:
        src = self.source
        plan = self.freeze_plan
        src.begin(t0, self.ram_limit, self.kernel_clock)
        step = lambda st, r: freeze_step(plan, st or FreezeState(), r)  # noqa: E731
        return self.play(src, step, publish, stop, lanes=lambda st, r: st.lanes)
