"""Pieces every act shares: reading one process on kept fds (/proc/PID/status for VmRSS
and VmSwap, /proc/PID/oom_score and oom_score_adj), reading an act process's report
pipe, and the driver base (state building, events, the story's phases for a memory
stage)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from beep_av import clock
from beep_av.model import ActView, KillRecord, Lane, Phase, ShowState, Snapshot
from beep_av.readings import close_fds
from beep_av.story import (
    StoryConfig,
    intensity,
    memory_phase,
    smooth_fill,
    stage_fill,
    stall_share,
)

MiB = 1 << 20
_VM_RE = re.compile(rb"^(VmRSS|VmSwap|VmPTE):\s+(\d+) kB$", re.M)
LANE_EVERY = 0.1  # s: lanes (status, oom_score) are read at 10 Hz, not in every 50 Hz tick


# ---------------------------------------------------------------- one process


def parse_status_vm(raw: bytes) -> tuple[int, int]:
    """/proc/PID/status -> (VmRSS, VmSwap) in bytes (0 where absent: a kernel thread,
    a zombie)."""
    got = {k: int(v) * 1024 for k, v in _VM_RE.findall(raw)}
    return got.get(b"VmRSS", 0), got.get(b"VmSwap", 0)


class ProcWatch:
    """One process's memory and OOM score, read with pread on fds opened once."""

    def __init__(self, pid: int, proc_root: str = "/proc") -> None:
        self.pid = pid
        self._fds: dict[str, int] = {}
        for name in ("status", "oom_score", "oom_score_adj"):
            try:
                self._fds[name] = os.open(f"{proc_root}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        self.rss = self.swap = self.pte = 0  # bytes: VmRSS, VmSwap, VmPTE (page tables)
        self.oom_score: int | None = None
        self.oom_score_adj: int | None = None

    def _pread(self, name: str) -> bytes | None:
        fd = self._fds.get(name)
        if fd is None:
            return None
        try:
            return os.pread(fd, 4096, 0)
        except OSError:  # ESRCH: the process is gone; the last values stay
            return None

    def read(self) -> None:
        raw = self._pread("status")
        if raw:
            got = {k: int(v) * 1024 for k, v in _VM_RE.findall(raw)}
            self.rss, self.swap = got.get(b"VmRSS", 0), got.get(b"VmSwap", 0)
            self.pte = got.get(b"VmPTE", 0)
        for name in ("oom_score", "oom_score_adj"):
            raw = self._pread(name)
            if raw and raw.strip().lstrip(b"-").isdigit():
                setattr(self, name, int(raw))

    def close(self) -> None:
        close_fds(self._fds.values())
        self._fds.clear()


class ReportPipe:
    """An act process's report pipe (non-blocking): the last "N" line, and the other
    lines ("read SECONDS") in order."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.value = 0
        self.lines: list[str] = []
        self._tail = b""

    def drain(self) -> int:
        if self.fd is None:
            return self.value
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            data += chunk
        if data:
            buf = self._tail + data
            *lines, self._tail = buf.split(b"\n")
            for line in lines:
                line = line.strip()
                if line.isdigit():
                    self.value = int(line)
                elif line:
                    self.lines.append(line.decode("ascii", "replace"))
        return self.value


# ---------------------------------------------------------------- the seam: a step's frame


@dataclass(frozen=True)
class Frame:
    """What an act's pure step asks of its driver: the actions to carry out on the
    source (method names and their arguments, after the state is published), the act's
    events, the kill records, the phase to enter (at enter_t, else the reading's time),
    the state's view (None: publish nothing; `pressure`: with the story's rules applied
    to the reading's memory), how long to wait and whether to wake on the stage's event
    fds, and whether the act is done (ok: it reached its end)."""

    actions: tuple[tuple, ...] = ()  # the source's methods: ("start",), ("set_quota", share)
    events: tuple[tuple[str, dict], ...] = ()
    kills: tuple[KillRecord, ...] = ()
    enter: Phase | None = None
    enter_t: float | None = None
    view: dict | None = None
    pressure: bool = False
    wait: float = 0.05
    wake: bool = False
    lines: tuple[str, ...] = ()  # said after the show (stderr)
    done: bool = False
    ok: bool = True


class StageClock:
    """A real stage's source clock: show time from t0 (time.monotonic()); a wait that
    wakes on its sampler's event fds when the step asks (`wake`), else a plain one."""

    t0 = 0.0
    sampler = None

    def now(self) -> float:
        return clock.now() - self.t0

    def wait(self, s: float, stop, wake: bool = False) -> None:
        if wake:  # woken by the hog's exit, a kernel record, an OOM event
            self.sampler.wait(s)
        else:
            stop.wait(s)


def watched_lane(name: str, proc, watch: ProcWatch, colour: int = 1) -> Lane:
    """One process's lane from its /proc watch (read while it lives; the last figures
    stay once it is gone)."""
    alive = proc.poll() is None
    if alive:
        watch.read()
    return Lane(name, proc.pid, colour, rss=watch.rss, swap=watch.swap,
                oom_score=watch.oom_score, oom_score_adj=watch.oom_score_adj, alive=alive)  # fmt: skip


class ModelClock:
    """A rehearsal model source's clock: show time is the model's own, advanced by each
    wait (so a rehearsal plays the same whatever the machine; it still waits in real
    time). Subclasses move their model in `advance`."""

    _t = 0.0

    def begin(self, t0: float, *_) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def wait(self, s: float, stop, wake: bool = False) -> None:
        stop.wait(s)
        self.advance(s)
        self._t = round(self._t + s, 6)

    def advance(self, s: float) -> None:
        """Move the model on by s seconds."""


# ---------------------------------------------------------------- the act as a stage


class ActStage:
    """An act's driver seen as a stage by the one assembly (app.run_live): it owns its
    stage (a cgroup of several processes, a CPU cgroup, or its rehearsal model), so the
    assembly prepares and tears it down through here, attaches the host guard to its
    memory cgroup, and gives it the calibrated kernel clock. `driver` is then the
    show's driver (app.ACTS)."""

    def __init__(self, driver: ActDriver) -> None:
        self.driver = driver

    @property
    def kind(self) -> str:
        return self.driver.stage_kind

    ram_limit = property(lambda self: self.driver.ram_limit)
    swap_limit = property(lambda self: self.driver.swap_limit)
    cache_bytes = property(lambda self: self.driver.cache_bytes)
    rate = property(lambda self: self.driver.rate)

    @property
    def kernel_clock(self):
        return self.driver.kernel_clock

    @kernel_clock.setter
    def kernel_clock(self, clock) -> None:
        self.driver.kernel_clock = clock

    @property
    def guarded(self) -> bool:
        """A memory stage the host guard watches (not throttle's CPU cgroup)."""
        return self.kind == "cgroup" and self.driver.ram_limit > 0

    def prepare(self, say) -> None:
        self.driver.prepare(say)

    def files(self):
        """The act's memory cgroup files (the guard follows its usage)."""
        return self.driver.stage.files()

    def teardown(self) -> None:
        self.driver.close()


# ---------------------------------------------------------------- the driver base


class ActDriver:
    """The shared parts of an act's driver. Subclasses set `act`, the limits, and
    implement prepare/run/close (the COMMON driver interface)."""

    act = "story"
    kind = "act"
    gauge = "memory"  # what its states' bottom gauge shows (model.ShowState.gauge)
    stage_kind = "cgroup"
    ram_limit = 0
    swap_limit = 0
    cache_bytes = 0
    rate = 0
    end_reason = "end"
    kernel_clock = None  # the assembly's calibration (kclock.py), for the act's sampler
    source = None  # the act's source: its real stage, or its rehearsal model
    guard = None  # the host guard of a cgroup stage (guard.py), checked in state()
    psi_every = 0.0  # s between its sampler's PSI reads (0: every sample)

    def __init__(self, settings) -> None:
        self.settings = settings
        self.rehearsal = settings.stage == "rehearsal"
        self.stage_kind = "rehearsal" if self.rehearsal else "cgroup"
        self.events: list[dict] = []
        self.entered: list[tuple[Phase, float]] = [(Phase.CALM, 0.0)]
        self.skipped: list[tuple[Phase, str]] = []
        self._kills: list[KillRecord] = []
        self._fill: tuple[float, int, float] | None = None  # (t, hog bytes, fill rate)
        self._closed = False
        self._next_guard = 0.0
        self._prev_snap: Snapshot | None = None  # memory(): the previous reading
        self._psi_prev: Snapshot | None = None  # memory(): the last with new PSI totals
        self._cache_peak = 0
        self._stall = 0.0
        self.lines: list[str] = []  # said after the show (stderr)

    @property
    def stage(self):
        """The real stage behind the source (None in a rehearsal)."""
        return getattr(self.source, "stage", None)

    # ---- the interface

    def command(self, cmd: str) -> str | None:
        return None

    def kills(self) -> list[KillRecord]:
        return list(self._kills)

    def header(self) -> dict:
        """The act's fields in the recording header."""
        return {"act": self.act}

    def summary(self) -> list[str]:
        return self.lines

    def close(self) -> None:
        """Close the act's source (_teardown_stage): its watches, sampler and stage.
        Safe twice."""
        if self._closed:
            return
        self._closed = True
        self._teardown_stage()

    def _teardown_stage(self) -> None:
        """Close the act's source: its watches, its sampler, its stage."""
        if self.source is not None:
            self.source.close()

    # ---- building states

    def event(self, t: float, event: str, **fields) -> None:
        self.events.append({"t": round(t, 4), "event": event, **fields})

    def enter(self, phase: Phase, t: float) -> None:
        if all(p is not phase for p, _ in self.entered):
            self.entered.append((phase, t))

    @property
    def phase(self) -> Phase:
        return self.entered[-1][0]

    def memory(self, snap: Snapshot) -> dict:
        """The story's rules on a memory stage's reading (story.memory_phase,
        story.stall_share, story.intensity: one set for every act): enters the phase the
        reading shows when it is ahead, and returns the state's `intensity` and `stall`.
        The first reading is the PSI baseline (stall 0)."""
        cfg = StoryConfig(
            ram_limit=self.ram_limit, swap_limit=self.swap_limit, cache_bytes=self.cache_bytes
        )
        prev = self._prev_snap if self._prev_snap is not None else snap
        self._cache_peak = max(self._cache_peak, snap.cache_bytes)
        target = memory_phase(cfg, prev, snap, self._cache_peak)
        if target is not None and target.index > self.phase.index:
            self.enter(target, snap.t)
        if self._psi_prev is None:
            self._psi_prev = snap  # the baseline
        psi = self._psi_prev
        if not (
            self.psi_every
            and snap.psi_some_us == psi.psi_some_us
            and snap.t - psi.t < 1.5 * self.psi_every
        ):  # a PSI file read seldom: the stall since it was last read, held in between
            self._stall = stall_share(psi if self.psi_every else prev, snap, self._stall)
            self._psi_prev = snap
        self._prev_snap = snap
        fill = stage_fill(cfg, snap)
        return {"intensity": intensity(fill, self._stall, self.phase), "stall": self._stall}

    def _fill_rate(self, snap: Snapshot) -> float:
        """The smoothed fill rate after `snap` (it moves only when the snapshot is newer)."""
        if self._fill is None:
            self._fill = (snap.t, snap.hog_bytes, 0.0)
        t, nbytes, rate = self._fill
        if snap.t > t:
            rate = smooth_fill(rate, snap.hog_bytes - nbytes, snap.t - t, StoryConfig.fill_rate_tau)
            self._fill = (snap.t, snap.hog_bytes, rate)
        return rate

    def play(self, src, step, publish, stop, lanes=None, snap=None) -> bool:
        """The one loop of an act on the seam, the same for its real stage and its model:
        read the source, step (`step(state, reading) -> (state, Frame)`, the state kept
        here), carry the frame out (events, kills, phase, lines, the published state:
        `lanes(state, reading)`, `snap(reading)`: by default the reading's own `lanes` and
        `snap`), then its actions on the source (after the state that led to them), then
        wait. Returns whether the act reached its end."""
        lanes = lanes or (lambda st, r: r.lanes)
        snap = snap or (lambda r: r.snap)
        st = None
        while True:
            r = src.read()
            st, frame = step(st, r)
            t = r.t
            for name, fields in frame.events:
                self.event(t, name, **fields)
            self._kills.extend(frame.kills)
            if frame.enter is not None:
                self.enter(frame.enter, frame.enter_t if frame.enter_t is not None else t)
                if frame.enter is Phase.FINALE:
                    self.end_reason = "finale"
            self.lines.extend(frame.lines)
            if frame.view is not None:
                view = dict(frame.view)
                if frame.pressure:
                    view.update(self.memory(snap(r)))  # the story's phases, stall, intensity
                publish(self.state(t, snap(r), lanes(st, r), **view))
            if frame.done:
                return frame.ok
            for name, *args in frame.actions:
                getattr(src, name)(*args)
            if stop.is_set():
                return False
            src.wait(frame.wait, stop, frame.wake)
            if stop.is_set():
                return False

    def check_guard(self) -> None:
        """Ten times a second, on kept fds: raise HostGuardTripped (exit 3, the hogs
        released by the teardown) when the host is under its floor."""
        if self.guard is None:
            return
        from beep_av.guard import CHECK_EVERY, HostGuardTripped

        now = time.monotonic()
        if now < self._next_guard:
            return
        self._next_guard = now + CHECK_EVERY
        why = self.guard.problem()
        if why is not None:
            raise HostGuardTripped(why)

    def state(self, t: float, snapshot: Snapshot, lanes: tuple[Lane, ...], **view) -> ShowState:
        """A ShowState of this act at show time t; its fill rate is the story's, from
        the snapshots' hog bytes (the act's hogs). Checks the host guard first."""
        self.check_guard()
        kw = {
            k: view.pop(k)
            for k in ("kill", "intensity", "stall", "oom_t", "bystanders")
            if k in view
        }
        kw["fill_rate"] = self._fill_rate(snapshot)
        return ShowState(
            t=t,
            phase=self.phase,
            snapshot=snapshot,
            entered=tuple(self.entered),
            skipped=tuple(self.skipped),
            stage=self.stage_kind,
            captions=self.settings.captions,
            act=self.act,
            gauge=self.gauge,
            lanes=lanes,
            act_view=ActView(events=tuple(self.events), **view),
            **kw,
        )
