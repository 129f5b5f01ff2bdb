"""The conductor: one performance, fed by one driver (driver.py).

    driver.run (engine thread) --ShowState--> Conductor.publish --> Latest
        Latest <-- audio callback, outputs (UI loop, main thread), recorder

The conductor runs the driver in its engine thread, draws the outputs on the main thread,
takes the presenter's commands (quit, mute and captions itself; the rest to the driver),
sounds and records the beep, and decides when the show is over. It is built complete by
app.py and torn down by the ladder (teardown.py); it creates and closes nothing itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from beep_av import clock, interrupt
from beep_av.config import Settings
from beep_av.errors import EXIT_OK, EXIT_USER_KILL, BeepError
from beep_av.interrupt import Interrupted
from beep_av.model import OWN_KILLER, Phase, ShowState

Say = Callable[[str], None]

# How long the finale stays on screen after the beep, by output (seconds). A presenter
# ends it sooner with q; headless has nothing to look at.
HOLD = {"headless": 0.2, "terminal": 3.0}
HOLD_DEFAULT = 8.0
ENGINE_JOIN_S = 5.0
# After the finale, the audio gets this long (plus the beeps' own length) to play the
# beep out; a device that never finishes must not hold the show on stage forever
BEEP_GRACE_S = 3.0
USER_KILL_REASON = "user-space-kill"  # the `end` reason when user space killed the hog


class OutputFailed(BeepError):
    """A picture or sound output raised mid-show: clean up, one line, exit 1."""

    code = 1
    end_reason = "error"


# ---------------------------------------------------------------- the conductor


class Latest:
    """The single ShowState reference: the conductor replaces it, everyone else (the
    audio callback, the outputs) reads it and never locks. Made before the audio, which
    reads it, and given to the conductor, which publishes into it."""

    def __init__(self, state: ShowState) -> None:
        self.state = state

    def get(self) -> ShowState:
        return self.state


class Conductor:
    """Runs `driver` in the engine thread and the outputs on the main thread (SDL wants
    it). The engine publishes the driver's states and merges the presenter's flags on
    each; the UI thread publishes only while no engine runs (before start, after the
    end), so the two never write at once.

    Given complete: `latest` (holding the first state), `t0` (time.monotonic() at show
    start), the opened `output` and its name, the `audio` (or None) and the `recorder`
    (or None). Cleanup is the teardown ladder's, not the conductor's."""

    def __init__(
        self,
        settings: Settings,
        driver,
        output,
        output_name: str,
        *,
        latest: Latest,
        t0: float,
        audio=None,
        recorder=None,
        say: Say = print,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.output = output
        self.output_name = output_name
        self.latest = latest
        self.t0 = t0
        self.audio = audio
        self.recorder = recorder
        self.say = say
        self.flags: dict[str, Any] = {
            "paused": False,
            "muted": False,
            "captions": settings.captions,
            "message": "",
        }
        self.stop = threading.Event()
        self.engine_done = threading.Event()
        self.engine_error: BaseException | None = None
        self.engine: threading.Thread | None = None
        self._engine_running = False
        self._rec_lock = threading.Lock()
        self._beep_recorded = False
        self.end_reason = "finale"
        self.frames = 0
        self.run_started: float | None = None

    @property
    def state(self) -> ShowState:
        return self.latest.state

    def fps(self) -> float | None:
        """Frames drawn per second over the run so far."""
        if not self.run_started or self.frames < 2:
            return None
        return self.frames / max(1e-6, clock.now() - self.run_started)

    # -------------------------------------------------------------- publishing

    def now(self) -> float:
        return clock.now() - self.t0

    def publish(self, state: ShowState) -> None:
        state = replace(state, **self.flags)
        self.latest.state = state  # one reference swap: readers never lock
        if self.recorder is not None:
            with self._rec_lock:
                self.recorder.write_state(state)

    def get_state(self) -> ShowState:
        return self.latest.state

    # -------------------------------------------------------------- engine thread

    def _engine(self) -> None:
        try:
            self.driver.run(self.publish, self.stop, self.t0)
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
        if cmd == "mute":
            self.flags["muted"] = not self.flags["muted"]
            if self.audio is not None:
                self.audio.muted = self.flags["muted"]
        elif cmd == "captions":
            order = ["en", "fr", "off"]
            cur = self.flags["captions"]
            self.flags["captions"] = order[(order.index(cur) + 1) % 3] if cur in order else "en"
        else:
            message = self.driver.command(cmd)
            if cmd == "release":  # whatever the driver lets go of, the show ends here
                self.flags["message"] = message or ""
                self.end_reason = "released"
                return False
            if message is not None:
                self.flags["message"] = message
            self.flags["paused"] = bool(getattr(self.driver, "paused", False))
        if self.engine_done.is_set() or not self._engine_running:
            self.publish(self.state)
        return True

    def suspend(self) -> None:
        """Ctrl-Z: the hog pauses as space pauses it, the output gives the terminal
        back (main screen, cursor, line mode), and the process stops; on `fg` the output
        takes the terminal again and redraws, the hog resumes, and the show's clock goes
        on from where it stopped (the recording has a `pause` line, not a jump)."""
        t = self.now()
        # a live hog that climbs (in calm, space would start it instead)
        d = self.driver
        hold_hog = getattr(d, "started", False) and getattr(d, "paused", True) is False
        if hold_hog:
            d.command("toggle_pause")
        parts = [p for p in (self.output, self.audio) if p is not None]
        for part in parts:
            give = getattr(part, "suspend", None)
            if give is not None:
                give()
        seconds = interrupt.stop_here()
        clock.hold(seconds)
        if self.recorder is not None and seconds > 0:
            with self._rec_lock:
                self.recorder.pause(t, seconds)
        for part in parts:
            take = getattr(part, "resume", None)
            if take is not None:
                take()
        if hold_hog:
            d.command("toggle_pause")

    # -------------------------------------------------------------- main loop

    def _record_beep(self) -> None:
        if self._beep_recorded or self.audio is None or self.audio.beep_t is None:
            return
        self._beep_recorded = True
        if self.recorder is not None:
            view = self.state.act_view
            tones = {"freq": self.settings.beep_freq, "repeats": self.settings.beep_repeats}
            if view is not None and view.closing:  # an act's closing tones, not the beep
                tones = {"freq": list(view.closing), "repeats": 1, "closing": True}
            with self._rec_lock:
                self.recorder.beep(self.audio.beep_t, length_ms=self.settings.beep_length, **tones)

    def run(self) -> int:
        """Run the show to its end: the driver's performance over (its finale held for
        the beep and a moment), or the presenter's quit or release. Returns the exit
        code; what goes wrong is raised (OutputFailed, the driver's own error)."""
        engine = threading.Thread(target=self._engine, name="beep-engine", daemon=True)
        self._engine_running = True
        self.engine = engine
        engine.start()
        hold = HOLD.get(self.output_name, HOLD_DEFAULT)
        frame_dt = 1.0 / max(1.0, self.output.fps)
        paces_itself = getattr(self.output, "paces_itself", False)
        finished_at: float | None = None
        ended_at: float | None = None
        beeps_s = self.settings.beep_length * self.settings.beep_repeats / 1000.0
        next_frame = time.monotonic()
        self.run_started = clock.now()
        while True:
            # the one place a signal ends a running show: between two frames, never in
            # the middle of one (the handler only noted it)
            interrupt.check()
            if interrupt.take_suspend():
                self.suspend()
                next_frame = time.monotonic()
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
            if self.engine_done.is_set():  # the driver's performance is over
                self._engine_running = False
                state = self.state
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
                    kill = state.kill
                    if (
                        self.driver.kind != "replay"
                        and kill is not None
                        and not kill.oom
                        and kill.killer
                        not in getattr(self.driver, "expected_killers", (OWN_KILLER,))
                    ):
                        self.end_reason = USER_KILL_REASON  # user space, not the kernel
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
        """Stop the engine (the teardown's first step). Safe twice."""
        self.stop.set()
        if self.engine is not None:
            self.engine.join(ENGINE_JOIN_S)


__all__ = [
    "Conductor",
    "Latest",
    "OutputFailed",
]
