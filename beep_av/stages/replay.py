"""Replay: re-perform a recording through the outputs.

`ReplayDriver` (a driver, driver.py) turns each recorded sample back into a ShowState
(snapshot fields, phase, entered, skipped, kill, oom_t, intensity, stall) and publishes
it at its recorded time divided by `speed`. The conductor calls `run()` in its engine
thread in place of a live stage; `beep` and `end` records are in `driver.events`. The
presenter's pause and rate do not apply to a recording."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from beep_av.errors import BadInput
from beep_av.model import PHASES, KillRecord, KmsgKill, Phase, ShowState, Snapshot
from beep_av.recording import ENGINE_KEYS, Recording

# No spinning: measured on this 2-core machine under load, Event.wait overshoots by
# ~0.1 ms (max ~0.5 ms), while a 1 ms spin got preempted and came out up to 3 ms late
# (benchmarks/bench_report.py).


def kill_record(e: dict, calibrated: bool = True) -> KillRecord:
    """A `kill` line back as a KillRecord (missing fields become None / 0). With
    `calibrated` False (a recording whose header has no `kernel_clock`: older versions
    compared the kernel's timestamps with a clock it does not share) the recorded
    latency measured nothing and is dropped."""

    def _int(v: object) -> int | None:
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    detected = e.get("detected_by") or []
    lat = e.get("latency_ms")
    ok = calibrated and isinstance(lat, int | float) and not isinstance(lat, bool)
    killer = e.get("killer")
    return KillRecord(
        pid=_int(e.get("pid")) or 0,
        name=str(e.get("name") or "?"),
        exit=_int(e.get("exit")),
        signal=_int(e.get("signal")),
        oom_kill_count=_int(e.get("oom_kill_count")) or 0,
        kmsg=e.get("kmsg") if isinstance(e.get("kmsg"), str) else None,
        anon_rss_kib=_int(e.get("anon_rss_kib")),
        detected_by=tuple(str(x) for x in detected) if isinstance(detected, list) else (),
        latency_ms=float(lat) if ok and math.isfinite(lat) else None,
        t=float(e["t"]),
        hog=e.get("hog") is not False,
        oom=e.get("oom") is not False,
        killer=killer if isinstance(killer, str) else "kernel",
        engine={k: e[k] for k in ENGINE_KEYS if k in e}
        if isinstance(e.get("engine"), str)
        else None,
    )


class ReplayDriver:
    """Re-performs `rec` at `speed` (2.0: twice as fast). Times in seconds."""

    kind = "replay"

    def __init__(self, rec: Recording, speed: float = 1.0, name: str | None = None) -> None:
        if (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not math.isfinite(speed)
            or speed <= 0
        ):
            raise BadInput(f"--speed: {speed!r} must be a number above 0")
        self.rec = rec
        self.speed = float(speed)
        self.stage = str(rec.header.get("stage", "replay"))
        self.name = name if name is not None else rec.path  # the card names the file
        calibrated = isinstance(rec.header.get("kernel_clock"), dict)
        self.kill = kill_record(rec.kill, calibrated) if rec.kill is not None else None
        self._bystanders = [kill_record(e, calibrated) for e in rec.bystanders]
        # the conductor's share: beeps to sound and the recorded end
        self.events = [e for e in rec.events if e["type"] in ("beep", "end")]
        self._phase_events = [(Phase(e["phase"]), float(e["t"])) for e in rec.events_of("phase")]
        self._skip_events = [
            (float(e["t"]), Phase(e["phase"]), str(e.get("reason", "")))
            for e in rec.events_of("skip")
        ]

    @property
    def duration(self) -> float:
        """Recorded seconds from show start to the last record (wall time: / speed)."""
        return self.rec.duration

    def states(self) -> Iterator[ShowState]:
        """Every sample as a ShowState, in order (no clock involved)."""
        s = self.rec.samples
        cols = {k: v.tolist() for k, v in s.items()}  # Python numbers, not numpy scalars
        cols["fill_rate"] = _fill_rate(s["t"], s["hog"]).tolist()
        kill = self.kill
        kill_snap: dict = {}
        if kill is not None:
            kmsg = None
            if kill.kmsg:
                kmsg = KmsgKill(
                    pid=kill.pid,
                    name=kill.name,
                    anon_rss_kib=kill.anon_rss_kib,
                    cgroup_oom="cgroup" in kill.kmsg,
                    text=kill.kmsg,
                )
            kill_snap = {
                "hog_exit": -kill.signal if kill.signal else kill.exit,
                "hog_exit_t": kill.t,
                "oom_kill_count": kill.oom_kill_count,
                "oom_kill_t": kill.t if kill.oom_kill_count else None,
                "kmsg_kill": kmsg,
                "kmsg_t": kill.t if kmsg else None,
            }
        entered: tuple[tuple[Phase, float], ...] = ()
        skipped: tuple[tuple[Phase, str], ...] = ()
        bystanders: tuple[KillRecord, ...] = ()
        pi = si = bi = 0
        oom_t = None
        for i in range(len(cols["t"])):
            t = cols["t"][i]
            phase = PHASES[cols["phase"][i]]
            while pi < len(self._phase_events) and self._phase_events[pi][1] <= t + 1e-9:
                p, pt = self._phase_events[pi]
                if p not in dict(entered):
                    entered += ((p, pt),)
                pi += 1
            if phase not in dict(entered):  # a recording without phase lines
                entered += ((phase, t),)
            while si < len(self._skip_events) and self._skip_events[si][0] <= t + 1e-9:
                skipped += ((self._skip_events[si][1], self._skip_events[si][2]),)
                si += 1
            while bi < len(self._bystanders) and self._bystanders[bi].t <= t + 1e-9:
                bystanders += (self._bystanders[bi],)
                bi += 1
            if oom_t is None and phase.index >= Phase.OOM.index:
                oom_t = dict(entered).get(Phase.OOM, kill.t if kill else t)
            killed = kill is not None and (phase.index >= Phase.OOM.index or t >= kill.t)
            snap = Snapshot(
                t=t,
                anon_bytes=cols["ram"][i],
                cache_bytes=cols["cache"][i],
                swap_bytes=cols["swap"][i],
                usage_bytes=cols["usage"][i],
                ram_limit=cols["ram_limit"][i],
                swap_limit=cols["swap_limit"][i],
                psi_some_us=cols["psi_some_us"][i],
                psi_full_us=cols["psi_full_us"][i],
                hog_bytes=cols["hog"][i],
                hog_pid=kill.pid if kill else None,
                hog_running=phase is not Phase.CALM and not killed,
                **(kill_snap if killed else {}),
            )
            yield ShowState(
                t=t,
                phase=phase,
                intensity=cols["intensity"][i],
                fill_rate=cols["fill_rate"][i],
                stall=cols["stall"][i],
                snapshot=snap,
                entered=entered,
                skipped=skipped,
                kill=kill if killed else None,
                oom_t=oom_t,
                stage=self.stage,
                bystanders=bystanders,
                replay_of=self.name,
            )

    def run(self, publish: Callable[[ShowState], None], stop: threading.Event, t0: float) -> bool:
        """Publish every state at t0 + recorded_t / speed (time.monotonic() seconds).
        Returns True when the recording played to its end, False when `stop` was set."""
        for state in self.states():
            target = t0 + state.t / self.speed
            if not _sleep_until(target, stop):
                return False
            publish(state)
        # hold until the last record (an `end` may come after the last sample)
        return _sleep_until(t0 + self.duration / self.speed, stop)

    def command(self, cmd: str) -> str | None:
        return None  # a recording has no hog to pause, speed up or release

    def kills(self) -> list[KillRecord]:
        return [*self._bystanders, *([self.kill] if self.kill is not None else [])]

    def close(self) -> None:
        pass  # nothing open: the recording was read whole by load()


def _fill_rate(t: np.ndarray, hog: np.ndarray, window: float = 0.5) -> np.ndarray:
    """Hog bytes per second over the last `window` seconds (the recording does not keep
    the story's smoothed rate; this is close enough for the HUD)."""
    if t.size < 2:
        return np.zeros(t.size)
    back = np.clip(np.searchsorted(t, t - window, side="left"), 0, t.size - 1)
    dt = t - t[back]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, (hog - hog[back]) / dt, 0.0)
    return np.clip(np.nan_to_num(rate), 0.0, None)


def _sleep_until(target: float, stop: threading.Event) -> bool:
    """Sleep until time.monotonic() >= target; False as soon as `stop` is set."""
    while True:
        if stop.is_set():
            return False
        left = target - time.monotonic()
        if left <= 0:
            return True
        stop.wait(left)  # wakes at once on stop.set()
