"""Where the show's sound goes: a sounddevice (PortAudio) stream, a WAV file written in
real time, or nowhere (silent, still keeping time so the show goes on).

The PortAudio callback is a thin wrapper over `Synth.render` and obeys the real-time
rules: no numpy allocation (the synth and the WAV ring are preallocated), no system call
(the noise's kernel reseeds and raw words come from a feeder thread, by reference), no
file I/O (a writer thread drains a lock-free single-producer ring into the WAV), no
locks, no logging, and it always fills the whole buffer.

One renderer at a time: the synth belongs to the device's callback until the watchdog
gives the device up, then to the clock thread; the handover waits for a callback that
is mid-block, and every callback after it plays silence.

`beep_t` is taken from `time.monotonic()` at the callback (the moment the block holding
the beep's first sample is handed to PortAudio) plus the sample's offset in the block;
the device's own latency (`stream.latency`) is reported in the note, not added."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from beep_av import clock, outfiles
from beep_av.audio.synth import BLOCK, RATE, BeepSpec, Synth
from beep_av.audio.wav import WavWriter
from beep_av.errors import BadInput, CannotStage
from beep_av.model import ShowState
from beep_av.noise import Feeder, Noise

Say = Callable[[str], None]
RING_SLOTS = 64  # blocks the WAV writer may lag behind (~0.7 s at 512 frames)
# A device whose stream goes inactive, or whose callbacks stop this long once they have
# begun, is gone: a killed sound server stops PortAudio's callbacks at once and
# `stream.active` turns False. Not shorter: an idle null sink may stall a new stream
# for 1-2 s (FIELD-NOTES, Sound).
STALL_S = 3.0
WATCH_EVERY = 0.1  # s
RETRY_EVERY = 1.0  # s between tries to open the device again once it vanished
# who renders the synth: exactly one of these at a time (see AudioOut._hand_over)
DEVICE, CLOCK = "device", "clock"
NO_PORTAUDIO = "PortAudio library not found (install libportaudio2)"
NO_DEVICE = "no output device"
FIX = "start a sound server (scripts/start-pulse.sh) or use --audio wav:PATH or --audio off"


@dataclass(frozen=True)
class AudioReport:
    """What the audio side saw: output underflows counted by PortAudio, the show time
    (s) the beep's first sample was handed out, the device's name, and a note."""

    underflows: int
    beep_t: float | None
    device: str
    note: str


class AudioOut:
    """A running (or ready) audio output. Built by `open_audio`; `stream_factory`
    takes the callback and returns a started-or-startable PortAudio-like stream
    (None: a clock thread paces the synth in real time, no device)."""

    def __init__(
        self,
        synth: Synth,
        noise: Noise,
        get_state: Callable[[], ShowState],
        t0: float,
        *,
        device: str = "none",
        stream_factory: Callable[[Callable[..., None]], Any] | None = None,
        reopen: Callable[[], Callable[[Callable[..., None]], Any] | None] | None = None,
        wav_path: str | None = None,
        blocksize: int = BLOCK,
        notes: tuple[str, ...] = (),
        required: bool = False,
        say: Say = print,
    ) -> None:
        self.synth = synth
        self.noise = noise
        self.device = device
        self.blocksize = blocksize
        self.underflows = 0
        self.errors = 0
        self.error: Exception | None = None  # the first render error: the show ends (exit 1)
        self.vanished: str | None = None  # why the device was given up mid-show
        self.wav_dropped = 0
        self._notes = list(notes)
        self._required = required  # a device the user named: failing to open is fatal
        self._say = say
        self._get_state = get_state
        self._t0 = t0
        self._last_state = ShowState()
        self._stream_factory = stream_factory
        # after the device vanished: a fresh factory once the device is there again
        # (PortAudio re-initialised, the device found anew), or None while it is not
        self._reopen = reopen
        self._stream: Any = None
        self._owner = DEVICE if stream_factory is not None else CLOCK
        self._in_callback = False  # the device's callback is inside a block
        self._in_clock = False  # the clock thread is inside a block
        self._feeder = Feeder(noise)
        self._latency = 0.0
        self._clock: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._last_cb = 0.0  # monotonic time of the last device callback
        self._suspended = False  # the show is stopped (Ctrl-Z): see suspend()
        self._watchdog: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._report: AudioReport | None = None
        # WAV: a single-producer single-consumer ring; the callback only copies into a
        # free slot and bumps `_ring_w`, the writer thread only bumps `_ring_r`
        self.wav_path = wav_path
        self._wav: WavWriter | None = None
        self._writer: threading.Thread | None = None
        self._ring = np.zeros((RING_SLOTS, blocksize, 2), dtype=np.float32)
        self._ring_n = np.zeros(RING_SLOTS, dtype=np.int64)
        self._ring_w = 0
        self._ring_r = 0
        self._writer_done = threading.Event()

    # ------------------------------------------------------------ the callback

    def _fill(self, out: np.ndarray, now: float) -> None:
        try:
            state = self._get_state()
            self._last_state = state
        except Exception:  # a broken publisher must not stop the sound
            state = self._last_state
            self.errors += 1
        try:
            self.synth.render(state, out, self.noise, now)
        except Exception as e:
            out.fill(0.0)
            self.errors += 1
            if self.error is None:
                self.error = e  # a reference store: the conductor ends the show with it
        if self._wav is not None:
            w = self._ring_w
            if w - self._ring_r < RING_SLOTS:
                n = out.shape[0]
                slot = w % RING_SLOTS
                if n <= self.blocksize:
                    self._ring[slot, :n] = out
                    self._ring_n[slot] = n
                    self._ring_w = w + 1  # published after the copy
                else:
                    self.wav_dropped += 1
            else:
                self.wav_dropped += 1

    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback: no allocation, system call, file I/O, locks or logging
        here (time.monotonic is the vDSO's clock_gettime)."""
        now = time.monotonic()
        self._last_cb = now
        # flag first, owner second; the watchdog writes them the other way round (see
        # _hand_over), so a callback either sees it has been replaced or is waited for
        self._in_callback = True
        try:
            if self._owner is not DEVICE:  # given up: the clock thread renders now
                outdata.fill(0.0)
                return
            if status and status.output_underflow:
                self.underflows += 1
            self._fill(outdata, clock.from_monotonic(now) - self._t0)
        finally:
            self._in_callback = False

    # ------------------------------------------------------------ threads

    def _start_clock(self) -> None:
        """The clock thread renders the synth from now on (no device, or not now)."""
        self._clock = threading.Thread(target=self._run_clock, name="beep-clock", daemon=True)
        self._clock.start()

    def suspend(self) -> None:
        """The process is about to stop (Ctrl-Z): the watchdog and the clock thread
        stand by until `resume`, so the stop counts as neither a vanished device nor an
        underrun."""
        self._suspended = True

    def resume(self) -> None:
        self._last_cb = time.monotonic()
        self._suspended = False

    def _run_clock(self) -> None:
        """Stand-in for a device: render a block every blocksize/rate seconds."""
        buf = np.zeros((self.blocksize, 2), dtype=np.float32)
        period = self.blocksize / self.synth.rate
        due = time.monotonic()
        while not self._stop.is_set():
            # flag first, owner second, as the callback (see _take_back)
            self._in_clock = True
            if self._owner is not CLOCK:
                self._in_clock = False
                return  # the device is back: it renders from here
            self._in_clock = False
            now = time.monotonic()
            if now < due:
                self._stop.wait(due - now)
                continue
            if self._suspended:  # stopped with the process (Ctrl-Z): not an underrun
                due = now
                self._stop.wait(period)
                continue
            if now - due > 0.5:  # the machine stalled: a real device would have underrun
                self.underflows += 1
                due = now
            self._in_clock = True
            if self._owner is CLOCK:
                self._fill(buf, clock.from_monotonic(now) - self._t0)
            self._in_clock = False
            due += period

    def _run_watchdog(self) -> None:
        """Notice a device that vanished mid-show (sound server killed, USB unplugged):
        its callbacks stop. Then go on silent on the clock thread, so the story, and
        the beep's timing, carry on to the finale; and try the device again once a
        second (off the audio path): when it plays again, it takes the synth back."""
        while not self._watch_stop.wait(WATCH_EVERY):
            stream = self._stream
            if stream is None:
                return
            if self._suspended:
                continue  # stopped with the process (Ctrl-Z): no callback is due
            stale = time.monotonic() - self._last_cb if self._last_cb else 0.0
            try:
                active = bool(getattr(stream, "active", True))
            except Exception:  # a stream of a dead server may fail to answer
                active = False
            if stale < STALL_S and active:
                continue
            why = "its stream stopped" if not active else f"no callback for {stale:.1f} s"
            if not self._hand_over():
                return  # closing meanwhile: nobody renders any more
            self.vanished = f"{self.device} vanished mid-show ({why})"
            self._notes.append(self.vanished)
            gone = time.monotonic()
            self._say(f"audio: {self.vanished}; the show goes on silent")
            self._start_clock()
            if self._reopen is None or not self._retry(stream):
                return
            back = time.monotonic() - gone
            self._notes.append(f"{self.device} back after {back:.1f} s")
            self._say(f"audio: back on {self.device} after {back:.1f} s")
            self.vanished = None

    def _retry(self, dead: Any) -> bool:
        """Try the device once a second until it plays again (True) or the output
        closes (False). The dead stream is closed first: PortAudio is initialised
        afresh to find a server that came back."""
        try:
            dead.close()
        except Exception:  # a stream of a dead server: nothing to close cleanly
            pass
        self._stream = None
        while not self._watch_stop.wait(RETRY_EVERY):
            if self._suspended:
                continue
            assert self._reopen is not None
            try:
                factory = self._reopen()
                stream = factory(self.callback) if factory is not None else None
            except Exception:  # not back yet (PortAudioError and friends)
                continue
            if stream is None:
                continue
            took = self._take_back(stream)
            if took:
                return True
            try:
                stream.close()
            except Exception:
                pass
            if took is None:
                return False  # closing
        return False

    def _take_back(self, stream: Any) -> bool | None:
        """Give the synth back to the device: owner first, then wait out the clock
        thread's block (as _hand_over, the other way), then start the new stream.
        False: it would not start (the clock renders on); None: closing meanwhile."""
        self._owner = DEVICE
        while self._in_clock:
            if self._watch_stop.wait(0.001):
                self._owner = CLOCK
                return None
        if self._clock is not None:
            self._clock.join(timeout=1.0)
            self._clock = None
        self._last_cb = time.monotonic()
        self._stream = stream
        try:
            self._latency = float(getattr(stream, "latency", 0.0) or 0.0)
            stream.start()
        except Exception:
            self._stream = None
            self._owner = CLOCK
            self._start_clock()
            return False
        return True

    def _hand_over(self) -> bool:
        """Take the synth from the device's callback for the clock thread. Owner first,
        then wait out a callback that is inside a block: under the GIL these plain
        reads and writes happen in one order, so a callback that began before the owner
        changed is waited for, and one that begins after it sees CLOCK and stays silent.
        False if the output closed while waiting."""
        self._owner = CLOCK
        while self._in_callback:
            if self._watch_stop.wait(0.001):
                return False
        return True

    def _run_writer(self) -> None:
        assert self._wav is not None
        while True:
            stopping = self._stop.is_set()
            while self._ring_r < self._ring_w:
                r = self._ring_r
                slot = r % RING_SLOTS
                self._wav.write(self._ring[slot, : self._ring_n[slot]])
                self._ring_r = r + 1
            if stopping:
                break
            time.sleep(0.02)
        self._writer_done.set()

    # ------------------------------------------------------------ public

    @property
    def muted(self) -> bool:
        """Presenter's mute: silences the noise; the final beep always sounds."""
        return self.synth.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self.synth.muted = bool(value)

    @property
    def beep_t(self) -> float | None:
        """Show time (s) the beep's first sample was handed to the device, or None."""
        return self.synth.beep_t

    @property
    def finished(self) -> bool:
        """True once the beep(s) and >= 150 ms of silence after them are out (handed
        to the device, plus its latency)."""
        ft = self.synth.finished_t
        if not self.synth.finished or ft is None:
            return False
        return clock.now() - self._t0 >= ft + self._latency

    def start(self) -> None:
        """Open the WAV (if any), start feeding the noise, and start the sound."""
        if self.wav_path is not None and self._wav is None:
            self._wav = WavWriter(  # BadInput: one line
                self.wav_path, self.synth.rate, label=f"--audio wav:{self.wav_path}"
            )
            self._writer = threading.Thread(target=self._run_writer, name="beep-wav", daemon=True)
            self._writer.start()
        self._feeder.start()
        if self._stream_factory is not None:
            try:
                self._stream = self._stream_factory(self.callback)
                self._latency = float(getattr(self._stream, "latency", 0.0) or 0.0)
                self._stream.start()
                self._watchdog = threading.Thread(
                    target=self._run_watchdog, name="beep-audio-watch", daemon=True
                )
                self._watchdog.start()
            except Exception as e:  # sounddevice.PortAudioError and friends
                if self._stream is not None:
                    self._stream.close()
                self._stream = None
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                if self._required:
                    self._stop.set()
                    self._feeder.stop()
                    raise CannotStage(
                        f"--audio: cannot open {self.device} ({why}); {FIX}"
                    ) from None
                self._say(f"audio: silent — cannot open {self.device} ({why})")
                self._notes.append(f"could not open {self.device}: {why}")
                self._stream_factory = None
                self._owner = CLOCK  # no callback ever ran a block
        if self._stream_factory is None:
            self._start_clock()

    def close(self) -> AudioReport:
        """Stop the sound (playing out what was handed), finish the WAV. Safe twice."""
        if self._report is not None:
            return self._report
        self._closed = True
        self._watch_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)  # it may be starting the clock thread
        if self._stream is not None:
            try:
                if self.vanished is None:
                    self._stream.stop()  # Pa_StopStream plays out the buffers handed
            except Exception:  # a vanished server: nothing to play out
                pass
            finally:
                try:
                    self._stream.close()
                except Exception:
                    pass
        self._stop.set()  # after the stream: the WAV writer drains what it played out
        if self._clock is not None:
            self._clock.join(timeout=5)
        self._feeder.stop()
        if self._writer is not None:
            self._writer.join(timeout=10)
        notes = list(self._notes)
        notes.append("beep_t = monotonic time at the callback that handed its first sample")
        if self._stream is not None:
            notes.append(f"output latency {self._latency * 1000:.0f} ms")
        if self._wav is not None:
            self._wav.close()
            notes.append(f"wrote {self.wav_path} ({self._wav.frames / self.synth.rate:.2f} s)")
        if self.wav_dropped:
            notes.append(f"{self.wav_dropped} blocks missing from the WAV (writer too slow)")
        if self.errors:
            notes.append(f"{self.errors} render errors (silence instead)")
        if self.noise.starved:
            notes.append(f"{self.noise.starved} blocks of seeded noise (kernel words late)")
        self._report = AudioReport(self.underflows, self.beep_t, self.device, "; ".join(notes))
        return self._report


# ---------------------------------------------------------------- opening


def _import_sounddevice() -> tuple[Any, str]:
    """(module, "") or (None, why). `import sounddevice` raises OSError without PortAudio."""
    try:
        import sounddevice as sd
    except OSError:
        return None, NO_PORTAUDIO
    except ImportError:
        return None, "sounddevice not installed (pip install sounddevice)"
    return sd, ""


def _outputs(sd: Any) -> list[str]:
    try:
        return [
            f"{i}: {d['name']}"
            for i, d in enumerate(sd.query_devices())
            if d["max_output_channels"] > 0
        ]
    except Exception:
        return []


def _find_device(sd: Any, which: str | None) -> tuple[int, str] | None:
    """(index, name) of the default output (`which` None) or of a named/numbered one."""
    try:
        if which is None:
            d = sd.query_devices(kind="output")
        elif which.strip().isdigit():
            d = sd.query_devices(int(which))
        else:
            d = sd.query_devices(which, "output")
    except Exception:  # PortAudioError, ValueError: none, or no such device
        return None
    if not d or d.get("max_output_channels", 0) < 1:
        return None
    return int(d["index"]), str(d["name"])


def _stream_factory(sd: Any, index: int, rate: int, blocksize: int) -> Callable[..., Any]:
    def make(callback: Callable[..., None]) -> Any:
        return sd.OutputStream(
            samplerate=rate,
            blocksize=blocksize,
            channels=2,
            dtype="float32",
            device=index,
            callback=callback,
            # "low": PortAudio then calls back once a block; with the default high
            # latency the ALSA->PulseAudio path calls in bursts every ~20-40 ms, which
            # would delay the beep after the kill by that much
            latency="low",
        )

    return make


def _reopener(sd: Any, which: str | None, rate: int, blocksize: int) -> Callable[[], Any]:
    """After the device vanished: PortAudio initialised afresh (it lists devices once,
    at its start, so a sound server that came back is only seen by a new list), the
    same device looked up again, and a factory for it; None while it is not there."""

    def reopen() -> Callable[..., Any] | None:
        sd._terminate()
        sd._initialize()
        found = _find_device(sd, which)
        if found is None:
            return None
        return _stream_factory(sd, found[0], rate, blocksize)

    return reopen


def check_wav_path(path: str) -> None:
    """Raise BadInput unless a WAV could be written at `path` (creates nothing)."""
    if not path:
        raise BadInput("--audio wav:PATH: the path is empty")
    outfiles.check_file(path, f"--audio wav:{path}")


def open_audio(
    spec: str,
    get_state: Callable[[], ShowState],
    t0: float,
    beep: BeepSpec,
    seed: int | None = None,
    say: Say = print,
    *,
    look: str = "static",
    raw: bool = False,
    rate: int = RATE,
    blocksize: int = BLOCK,
) -> AudioOut:
    """Build the show's audio output for `--audio SPEC` (auto | device | device:NAME |
    device:INDEX | wav:PATH | off). `t0` is time.monotonic() at show start; `look`
    "raw" (or `raw`) plays kernel bytes straight from getrandom. Raises BadInput (bad
    spec, unwritable WAV) or CannotStage (asked-for device missing)."""
    if not isinstance(spec, str):
        raise BadInput(f"--audio: expected a string, got {spec!r}")
    raw = raw or look == "raw"

    def build(
        device: str,
        factory: Any = None,
        wav: str | None = None,
        notes: tuple = (),
        required: bool = False,
        reopen: Any = None,
    ) -> AudioOut:
        return AudioOut(
            Synth(rate, beep, max_block=max(blocksize, 4096)),
            Noise(seed=seed, raw=raw, fed=True),  # reseeded by a feeder, not the callback
            get_state,
            t0,
            device=device,
            stream_factory=factory,
            reopen=reopen,
            wav_path=wav,
            blocksize=blocksize,
            notes=notes,
            required=required,
            say=say,
        )

    if spec == "off":
        return build("off", notes=("audio off",))

    if spec.startswith("wav:"):
        path = spec[4:]
        check_wav_path(path)
        sd, why = _import_sounddevice()
        found = _find_device(sd, None) if sd is not None else None
        if found is None:
            say(f"audio: writing {path} only — {why or NO_DEVICE}")
            return build(f"wav:{path}", wav=path, notes=(why or NO_DEVICE,))
        index, name = found
        return build(f"wav:{path} + {name}", _stream_factory(sd, index, rate, blocksize), wav=path,
                     reopen=_reopener(sd, None, rate, blocksize))  # fmt: skip

    if spec == "auto":
        sd, why = _import_sounddevice()
        found = _find_device(sd, None) if sd is not None else None
        if found is None:
            why = why or NO_DEVICE
            say(f"audio: silent — {why}")
            return build("none", notes=(why,))
        index, name = found
        return build(name, _stream_factory(sd, index, rate, blocksize),
                     reopen=_reopener(sd, None, rate, blocksize))  # fmt: skip

    if spec == "device" or spec.startswith("device:"):
        which = spec[7:] if spec.startswith("device:") else None
        if which is not None and not which.strip():
            raise BadInput("--audio device:NAME: the name is empty")
        sd, why = _import_sounddevice()
        if sd is None:
            raise CannotStage(f"--audio {spec}: {why}")
        found = _find_device(sd, which)
        if found is None:
            known = _outputs(sd)
            listing = f" (outputs: {', '.join(known)})" if known else ""
            what = "no output device" if which is None else f"no output device {which!r}"
            raise CannotStage(f"--audio {spec}: {what}{listing}; {FIX}")
        index, name = found
        return build(name, _stream_factory(sd, index, rate, blocksize), required=True,
                     reopen=_reopener(sd, which, rate, blocksize))  # fmt: skip

    raise BadInput(f"--audio: unknown output {spec!r} (use auto, device[:NAME], wav:PATH or off)")
