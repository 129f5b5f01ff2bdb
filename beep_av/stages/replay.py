"""Replay: re-perform a recording through the outputs.

`ReplayDriver` (a driver, driver.py) turns each recorded sample back into a ShowState
(snapshot fields, phase, entered, skipped, kill, oom_t, intensity, stall) and publishes
it at its recorded time divided by `speed`. The conductor calls `run()` in its engine
thread in place of a live stage; `beep` and `end` records are in `driver.events`. The
presenter's pause and rate do not apply to a recording."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

import numpy as np

from beep_av import clock
from beep_av.acts.spec import ACTS
from beep_av.errors import BadInput
from beep_av.model import PHASES, ActView, KillRecord, KmsgKill, Lane, Phase, ShowState, Snapshot
from beep_av.recording import ENGINE_KEYS, REPORT_KEYS, Recording

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
        report={k: e.get(k) for k in REPORT_KEYS} if any(k in e for k in REPORT_KEYS) else None,
    )


class ReplayDriver:
    """Re-performs `rec` at `speed` (2.0: twice as fast). Times in seconds.

    An act's recording replays as the act: its `lanes` lines become the states' lanes,
    its `view` lines their ActView (caption, card, closing tones, note, the read-back's
    swap-in rate) and its `act` lines the view's events. A recording with more than one
    kill of the hog (`--restarts`, `watch`) replays each kill in its turn: the states
    carry the kill whose time has come while the recorded phase is `oom` or `finale`."""

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
        act = rec.header.get("act")
        self.act = act if act in ACTS else "story"
        self.name = name if name is not None else rec.path  # the card names the file
        calibrated = isinstance(rec.header.get("kernel_clock"), dict)
        self._hog_kills = [kill_record(e, calibrated) for e in rec.hog_kills]
        self.kill = self._hog_kills[0] if self._hog_kills else None
        self._bystanders = [kill_record(e, calibrated) for e in rec.bystanders]
        # a watch, or a stage restarted after its kills: every kill has its turn
        self.every_kill = len(self._hog_kills) > 1 or "watch" in rec.header
        # the conductor's share: beeps to sound and the recorded end
        self.events = [e for e in rec.events if e["type"] in ("beep", "end")]
        self._played_t = -math.inf  # the recorded time of the last state published
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
        kills = self._hog_kills
        snaps = [_kill_snap(k) for k in kills]
        acted = self.act != "story" or bool(self.rec.views or self.rec.act_events)
        lane_rows = [(_at(r), _lanes(r)) for r in self.rec.lanes]
        views = [(_at(v), _view_fields(v)) for v in self.rec.views]
        act_events = [
            (_at(e), {k: v for k, v in e.items() if k not in ("type", "_sample")})
            for e in self.rec.act_events
        ]
        for rows in (lane_rows, views, act_events):  # in the file's order when it is known
            rows.sort(key=lambda r: r[0][1] if r[0][0] is None else r[0][0])
        entered: tuple[tuple[Phase, float], ...] = ()
        skipped: tuple[tuple[Phase, str], ...] = ()
        bystanders: tuple[KillRecord, ...] = ()
        lanes: tuple[Lane, ...] = ()
        view: dict = {}
        done: tuple[dict, ...] = ()
        pi = si = bi = li = vi = ai = ki = 0
        oom_t = None
        for i in range(len(cols["t"])):
            t = cols["t"][i]
            phase = PHASES[cols["phase"][i]]
            while pi < len(self._phase_events) and self._phase_events[pi][1] <= t + 1e-9:
                p, pt = self._phase_events[pi]
                if self.every_kill:  # a phase entered again after a kill is a new entry
                    entered = (*entered, (p, pt))[-MAX_ENTERED:]
                elif p not in dict(entered):
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
            # an act's lines belong to the sample they were written after (else: by time)
            now = (i, t)
            while li < len(lane_rows) and _due(lane_rows[li][0], now):
                lanes = lane_rows[li][1]
                li += 1
            while vi < len(views) and _due(views[vi][0], now):
                view = views[vi][1]
                vi += 1
            while ai < len(act_events) and _due(act_events[ai][0], now):
                done += (act_events[ai][1],)
                ai += 1
            # the kill on the stage at t
            on_stage = phase.index >= Phase.OOM.index
            while ki + 1 < len(kills) and kills[ki + 1].t <= t + 1e-9:
                ki += 1
            if not kills:
                kill = None
            elif self.every_kill:
                kill = kills[ki] if on_stage else None
            else:
                kill = kills[0] if on_stage or t >= kills[0].t else None
            if self.every_kill:
                if kill is not None:
                    oom_t = kill.t  # each kill's own: the synth beeps at every new one
            elif oom_t is None and on_stage:  # (a throttle's finale: nobody killed)
                oom_t = dict(entered).get(Phase.OOM, kills[0].t if kills else t)
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
                hog_pid=(kill or kills[ki]).pid if kills else None,
                hog_running=phase is not Phase.CALM and kill is None,
                **(snaps[kills.index(kill)] if kill is not None else {}),
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
                kill=kill,
                oom_t=oom_t,
                stage=self.stage,
                bystanders=bystanders,
                replay_of=self.name,
                act=self.act,
                gauge=self.rec.gauge,
                lanes=lanes,
                act_view=ActView(events=done, **view) if acted else None,
            )

    def run(self, publish: Callable[[ShowState], None], stop: threading.Event, t0: float) -> bool:
        """Publish every state at t0 + recorded_t / speed (time.monotonic() seconds).
        Returns True when the recording played to its end, False when `stop` was set."""
        for state in self.states():
            target = t0 + state.t / self.speed
            if not _sleep_until(target, stop):
                return False
            publish(state)
            self._played_t = state.t
        # hold until the last record (an `end` may come after the last sample)
        return _sleep_until(t0 + self.duration / self.speed, stop)

    def command(self, cmd: str) -> str | None:
        return None  # a recording has no hog to pause, speed up or release

    def kills(self) -> list[KillRecord]:
        """The recorded kills performed so far (a replay stopped early claims none of
        the later ones), in time order."""
        every = sorted([*self._bystanders, *self._hog_kills], key=lambda k: k.t)
        return [k for k in every if k.t <= self._played_t + 1e-9]

    def close(self) -> None:
        pass  # nothing open: the recording was read whole by load()


MAX_ENTERED = 32  # a multi-kill replay keeps the latest phase entries (as watch does)


def _kill_snap(kill: KillRecord) -> dict:
    """The Snapshot fields a kill's evidence sets once it is on the stage."""
    kmsg = None
    if kill.kmsg:
        kmsg = KmsgKill(
            pid=kill.pid,
            name=kill.name,
            anon_rss_kib=kill.anon_rss_kib,
            cgroup_oom="cgroup" in kill.kmsg,
            text=kill.kmsg,
        )
    return {
        "hog_exit": -kill.signal if kill.signal else kill.exit,
        "hog_exit_t": kill.t,
        "oom_kill_count": kill.oom_kill_count,
        "oom_kill_t": kill.t if kill.oom_kill_count else None,
        "kmsg_kill": kmsg,
        "kmsg_t": kill.t if kmsg else None,
    }


def _at(line: dict) -> tuple[int | None, float]:
    """Where an act's line belongs: (the index of the sample it was written after, or
    None when the reader could not tell; its time)."""
    at = line.get("_sample")
    return (at if isinstance(at, int) else None, float(line["t"]))


def _due(at: tuple[int | None, float], now: tuple[int, float]) -> bool:
    """Whether a line placed `at` applies by the sample `now` (index, time)."""
    if at[0] is not None:
        return at[0] <= now[0]
    return at[1] <= now[1] + 1e-9


def _int_or_none(v: object) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _lanes(row: dict) -> tuple[Lane, ...]:
    """A `lanes` line back as Lanes (a field of the wrong type becomes its default)."""
    out = []
    for x in row.get("lanes") or ():
        if not isinstance(x, dict):
            continue
        rate, full = x.get("work_rate"), x.get("full_rate")
        out.append(
            Lane(
                name=str(x.get("name") or "?"),
                pid=_int_or_none(x.get("pid")),
                colour=_int_or_none(x.get("colour")) or 0,
                rss=_int_or_none(x.get("rss")) or 0,
                swap=_int_or_none(x.get("swap")) or 0,
                oom_score=_int_or_none(x.get("oom_score")),
                oom_score_adj=_int_or_none(x.get("oom_score_adj")),
                alive=x.get("alive") is not False,
                work_rate=float(rate) if _num(rate) else None,
                full_rate=float(full) if _num(full) and full > 0 else None,
                work_unit=str(x.get("work_unit") or "it/s")[:16],
            )
        )
    return tuple(out)


def _num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _view_fields(v: dict) -> dict:
    """A `view` line back as ActView's fields (VIEW_KEYS; a bad field is left out)."""
    out: dict = {}
    for key in ("caption", "title", "word"):
        if isinstance(v.get(key), str):
            out[key] = v[key]
    if isinstance(v.get("note"), str):
        out["note"] = v["note"]
    if isinstance(v.get("card"), list):
        out["card"] = tuple(str(x) for x in v["card"])
    if isinstance(v.get("closing"), list):
        out["closing"] = tuple(float(f) for f in v["closing"] if _num(f) and f > 0)
    if _num(v.get("speed")):
        out["speed"] = float(v["speed"])
    if _num(v.get("swapins")):
        out["swapins"] = float(v["swapins"])
    return out


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
        left = target - clock.now()
        if left <= 0:
            return True
        stop.wait(left)  # wakes at once on stop.set()
