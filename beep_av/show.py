"""The conductor: builds a show from settings, runs the engine thread (stage readings
-> story -> ShowState) and the UI loop (outputs) on the main thread, feeds the audio and
the recorder, and always leaves the machine as it found it."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from beep_av import __version__, interrupt
from beep_av.config import Settings
from beep_av.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USER_KILL,
    BadInput,
    BeepError,
    CannotStage,
)
from beep_av.interrupt import Interrupted
from beep_av.model import Phase, ShowState

Say = Callable[[str], None]

# How long the finale stays on screen after the beep, by output (seconds). A presenter
# ends it sooner with q; headless has nothing to look at.
HOLD = {"headless": 0.2, "terminal": 3.0}
HOLD_DEFAULT = 8.0
RATE_STEP = 1.5  # + and - multiply or divide the hog's rate by this
ENGINE_JOIN_S = 5.0
# After the finale, the audio gets this long (plus the beeps' own length) to play the
# beep out; a device that never finishes must not hold the show on stage forever
BEEP_GRACE_S = 3.0
USER_KILL_REASON = "user-space-kill"  # the `end` reason when user space killed the hog


class OutputFailed(BeepError):
    """A picture or sound output raised mid-show: clean up, one line, exit 1."""

    code = 1
    end_reason = "error"


def open_fds() -> int | None:
    """How many file descriptors this process has open (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own fd
    except OSError:
        return None


# ---------------------------------------------------------------- process protection


def install_signal_handlers() -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP (a closed SSH session) end the show: their handler only
    notes the signal (beep_av.interrupt), and the show's loops end it at a safe point."""
    return interrupt.install()


# ---------------------------------------------------------------- the conductor


class Conductor:
    """Owns the single ShowState reference. The engine thread and the UI loop are the
    only writers, and never at the same time for the same fields: the engine publishes
    stage-derived states and merges the presenter's flags on each tick; the UI thread
    publishes only while no engine runs (before start, after the finale)."""

    def __init__(
        self,
        settings: Settings,
        output,
        audio,
        recorder,
        say: Say,
        output_name: str,
        stage=None,
        story_cfg=None,
        replay=None,
        initial: ShowState | None = None,
    ) -> None:
        self.settings = settings
        self.output = output
        self.audio = audio
        self.recorder = recorder
        self.say = say
        self.output_name = output_name
        self.stage = stage
        self.story_cfg = story_cfg
        self.replay = replay
        self.state = initial or ShowState()
        self.flags: dict[str, Any] = {
            "paused": False,
            "muted": False,
            "captions": settings.captions,
            "message": "",
        }
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.engine_done = threading.Event()
        self.engine_error: BaseException | None = None
        self.released = False
        self.started = False
        self._rec_lock = threading.Lock()
        self._beep_recorded = False
        self.end_reason = "finale"
        self.frames = 0
        self.run_started: float | None = None
        self.guard = None  # guard.HostGuard of a cgroup show, checked by the engine
        self.fds_start: int | None = None  # open fds before the show made anything

    def fps(self) -> float | None:
        """Frames drawn per second over the run so far."""
        if not self.run_started or self.frames < 2:
            return None
        return self.frames / max(1e-6, time.monotonic() - self.run_started)

    # -------------------------------------------------------------- publishing

    def now(self) -> float:
        return time.monotonic() - self.t0

    def publish(self, state: ShowState) -> None:
        state = replace(state, **self.flags)
        self.state = state  # one reference swap: readers never lock
        if self.recorder is not None:
            with self._rec_lock:
                self.recorder.write_state(state)

    def get_state(self) -> ShowState:
        return self.state

    # -------------------------------------------------------------- engine thread

    def _engine_live(self) -> None:
        from beep_av.guard import CHECK_EVERY, END_REASON, HostGuardTripped
        from beep_av.story import advance

        src = self.stage.source()
        try:
            hz = self.settings.sample_hz
            tick = 1.0 / hz
            state = self.state
            next_at = time.monotonic()
            next_guard = 0.0
            while not self.stop.is_set():
                t = self.now()
                if not self.started and t >= self.settings.calm and not self.flags["paused"]:
                    self.stage.start()
                    self.started = True
                snap = src.read(t)
                if self.released:  # the presenter's kill is not the kernel's: no story
                    break
                if self.guard is not None and t >= next_guard:
                    # 10 Hz on kept fds, beside the sampler rather than inside it
                    next_guard = t + CHECK_EVERY
                    why = self.guard.problem()
                    if why is not None:
                        self.released = True
                        self.stage.release()
                        self.end_reason = END_REASON
                        raise HostGuardTripped(why)
                if snap.hog_exit not in (None, -9, 137) and not self.released:
                    raise CannotStage(
                        f"the hog ended on its own (exit {snap.hog_exit}) before the kernel "
                        "killed it; run `beep-av doctor`"
                    )
                state = advance(self.story_cfg, state, snap)
                self.publish(state)
                if state.phase is Phase.FINALE:
                    break
                next_at += tick
                now = time.monotonic()
                if next_at < now:  # fell behind (a slow read): do not burst to catch up
                    next_at = now + tick
                src.wait(max(0.0, next_at - now))
        finally:
            src.close()

    def _engine(self) -> None:
        try:
            if self.replay is not None:
                self.replay.run(self.publish, self.stop, self.t0)
            else:
                self._engine_live()
        except BaseException as e:  # handed to the main thread, which reports it
            self.engine_error = e
        finally:
            self.engine_done.set()

    # -------------------------------------------------------------- presenter

    def command(self, cmd: str) -> bool:
        """Apply one presenter command; return False to end the show."""
        if cmd == "quit":
            self.end_reason = "quit"
            return False
        if cmd == "release":
            if self.stage is not None:
                self.released = True
                self.stage.release()
            self.flags["message"] = "released: the hog is gone, the stage torn down"
            self.end_reason = "released"
            return False
        if cmd == "mute":
            self.flags["muted"] = not self.flags["muted"]
            if self.audio is not None:
                self.audio.muted = self.flags["muted"]
        elif cmd == "captions":
            order = ["en", "fr", "off"]
            cur = self.flags["captions"]
            self.flags["captions"] = order[(order.index(cur) + 1) % 3] if cur in order else "en"
        elif cmd == "toggle_pause" and self.stage is not None:
            if not self.started:
                self.settings = replace(self.settings, calm=0.0)  # space in calm: start now
            elif self.stage.paused:
                self.stage.resume()
                self.flags["paused"] = False
                self.flags["message"] = ""
            else:
                self.stage.pause()
                self.flags["paused"] = True
                self.flags["message"] = "paused"
        elif cmd in ("rate_up", "rate_down") and self.stage is not None:
            rate = self.stage.rate * (RATE_STEP if cmd == "rate_up" else 1 / RATE_STEP)
            rate = int(min(4 << 30, max(1 << 20, rate)))
            self.stage.set_rate(rate)
            self.flags["message"] = f"rate {rate / 2**20:.0f} MiB/s"
        if self.engine_done.is_set() or not self._engine_running:
            self.publish(self.state)
        return True

    # -------------------------------------------------------------- main loop

    _engine_running = False

    def _record_beep(self) -> None:
        if self._beep_recorded or self.audio is None or self.audio.beep_t is None:
            return
        self._beep_recorded = True
        if self.recorder is not None:
            with self._rec_lock:
                self.recorder.beep(
                    self.audio.beep_t,
                    freq=self.settings.beep_freq,
                    length_ms=self.settings.beep_length,
                    repeats=self.settings.beep_repeats,
                )

    def run(self) -> int:
        """Run the show to its end. Returns the exit code; cleanup is the caller's."""
        engine = threading.Thread(target=self._engine, name="beep-engine", daemon=True)
        self._engine_running = True
        engine.start()
        self.engine = engine
        hold = HOLD.get(self.output_name, HOLD_DEFAULT)
        frame_dt = 1.0 / max(1.0, self.output.fps)
        paces_itself = getattr(self.output, "paces_itself", False)
        finished_at: float | None = None
        ended_at: float | None = None
        beeps_s = self.settings.beep_length * self.settings.beep_repeats / 1000.0
        next_frame = time.monotonic()
        self.run_started = time.monotonic()
        while True:
            # the one place a signal ends a running show: between two frames, never in
            # the middle of one (the handler only noted it)
            interrupt.check()
            self.frames += 1
            for cmd in self._frame():
                if not self.command(cmd):
                    return EXIT_OK
            self._record_beep()
            if self.engine_error is not None:
                raise self.engine_error
            audio_error = getattr(self.audio, "error", None)
            if audio_error is not None:
                raise OutputFailed(
                    f"the audio output failed ({type(audio_error).__name__}: {audio_error})"
                )
            if self.engine_done.is_set():
                self._engine_running = False
                state = self.state
                if self.replay is not None or state.phase is Phase.FINALE:
                    if ended_at is None:
                        ended_at = time.monotonic()
                    audio_done = self.audio is None or self.audio.finished
                    if not audio_done and time.monotonic() - ended_at > BEEP_GRACE_S + beeps_s:
                        self.say("audio: the final beep did not finish playing; ending anyway")
                        audio_done = True
                    if audio_done and finished_at is None:
                        finished_at = time.monotonic()
                    if finished_at is not None and time.monotonic() - finished_at >= hold:
                        self.end_reason = "finale" if state.phase is Phase.FINALE else "end"
                        if self.replay is None and state.kill is not None and not state.kill.oom:
                            self.end_reason = USER_KILL_REASON
                            return EXIT_USER_KILL
                        return EXIT_OK
            if not paces_itself:
                next_frame += frame_dt
                delay = next_frame - time.monotonic()
                if delay > 0:
                    interrupt.sleep(delay)  # returns at once on SIGINT, SIGTERM, SIGHUP
                else:
                    next_frame = time.monotonic()

    def _frame(self) -> list[str]:
        """One frame of the output; its own exceptions become OutputFailed (exit 1)."""
        try:
            return list(self.output.frame(self.state))
        except (BeepError, Interrupted):
            raise
        except Exception as e:
            raise OutputFailed(
                f"the {self.output_name} output failed ({type(e).__name__}: {e})"
            ) from e

    def shutdown(self) -> None:
        self.stop.set()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.join(ENGINE_JOIN_S)


# ---------------------------------------------------------------- building a show


def header_for(
    settings: Settings, stage_kind: str, ram: int, swap: int, cache: int, rate: int
) -> dict:
    return {
        "stage": stage_kind,
        "ram_limit": ram,
        "swap_limit": swap,
        "cache_bytes": cache,
        "rate": rate,
        "kernel": platform.release(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": settings.seed,
        "hz": settings.sample_hz,
        "beep_freq": settings.beep_freq,
        "beep_length_ms": settings.beep_length,
        "version": __version__,
    }


def finish(
    conductor: Conductor | None, stage, audio, output, recorder, code: int, say: Say
) -> None:
    """Tear everything down in the safe order: the hog and the stage first (the machine is
    safe), then the outputs, then the recording. Each step runs even if one before fails."""
    errors: list[str] = []

    def step(name: str, fn) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 — every step must run
            errors.append(f"{name}: {e}")

    if conductor is not None:
        step("engine", conductor.shutdown)
    if stage is not None:
        step("stage", stage.teardown)
    if conductor is not None and conductor.guard is not None:
        step("host guard", conductor.guard.close)
    report = None
    if audio is not None:

        def close_audio():
            nonlocal report
            report = audio.close()

        step("audio", close_audio)
    if output is not None:
        step("output", output.close)
    if recorder is not None:
        fields: dict[str, Any] = {"exit": code}
        if conductor is not None and conductor.fps() is not None:
            fields["fps"] = round(conductor.fps(), 1)
        if report is not None:
            fields["underflows"] = getattr(report, "underflows", None)
            fields["audio"] = getattr(report, "device", None)
        if conductor is not None and conductor.fds_start is not None:
            # everything but the recording is closed by now: its own fd is not a leak
            now_open = open_fds()
            fields["fds_start"] = conductor.fds_start
            fields["fds"] = None if now_open is None else now_open - 1
        reason = conductor.end_reason if conductor is not None else "error"
        kill = conductor.state.kill if conductor is not None else None
        if kill is not None and not kill.oom:
            fields.update(oom=False, killer=kill.killer)  # never an OOM kill
        if code == EXIT_INTERRUPTED:
            reason = "interrupted"
        t = conductor.now() if conductor is not None else 0.0
        step("recording", lambda: recorder.end(t, reason, **fields))
        step("recording", recorder.close)
    if (
        report is not None
        and getattr(report, "underflows", None) is not None
        and getattr(report, "device", "off") != "off"
    ):
        say(f"audio: {report.underflows} underflow(s) on {getattr(report, 'device', 'the device')}")
    for e in errors:
        say(f"warning: cleanup {e}")


__all__ = [
    "OutputFailed",
    "open_fds",
    "BadInput",
    "BeepError",
    "CannotStage",
    "Conductor",
    "Interrupted",
    "finish",
    "header_for",
    "install_signal_handlers",
]
