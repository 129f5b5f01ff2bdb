"""The audio outputs without a sound server: the callback wrapper against the offline
render, underflow counting, the WAV ring, `--audio` specs and their errors, and the
silent clock that keeps the show's time when there is no device."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest

from beep_av.audio import output as out_mod
from beep_av.audio.output import AudioOut, check_wav_path, open_audio
from beep_av.audio.synth import (
    BLOCK,
    RATE,
    BeepSpec,
    Synth,
    render_offline,
    scripted_timeline,
    state_at,
)
from beep_av.audio.wav import read_wav
from beep_av.errors import BadInput, CannotStage
from beep_av.model import Phase, ShowState
from beep_av.noise import Noise


class FakeStream:
    """Stands in for sounddevice.OutputStream: the test calls the callback itself."""

    latency = 0.02

    def __init__(self, callback):
        self.callback = callback
        self.started = self.stopped = self.closed = False

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


class Flags:
    def __init__(self, underflow: bool) -> None:
        self.output_underflow = underflow

    def __bool__(self) -> bool:
        return self.output_underflow


def drive(audio: AudioOut, timeline, blocks: int, flags=None) -> np.ndarray:
    """Call the callback `blocks` times, publishing the timeline's state for each block
    the way the conductor would (the latest state at the block's show time)."""
    current = [timeline[0][1]]
    audio._get_state = lambda: current[0]
    chunks = []
    for k in range(blocks):
        current[0] = state_at(timeline, k * BLOCK / RATE)
        buf = np.full((BLOCK, 2), np.nan, np.float32)
        audio.callback(buf, BLOCK, None, flags(k) if flags else Flags(False))
        chunks.append(buf)
    return np.concatenate(chunks)


def make_out(seed=21, wav_path=None, beep=None) -> tuple[AudioOut, list]:
    streams = []

    def factory(cb):
        streams.append(FakeStream(cb))
        return streams[-1]

    audio = AudioOut(
        Synth(RATE, beep or BeepSpec(freq=1234.0)),
        Noise(seed=seed),
        lambda: ShowState(),
        time.monotonic(),
        device="fake",
        stream_factory=factory,
        wav_path=wav_path,
    )
    return audio, streams


# ---------------------------------------------------------------- the callback


def test_live_callback_equals_the_offline_render():
    tl = scripted_timeline(0.4, 0.4, 0.4)
    blocks = 200
    audio, streams = make_out(seed=21)
    audio.start()
    live = drive(audio, tl, blocks)
    report = audio.close()
    offline = render_offline(tl, blocks * BLOCK / RATE, seed=21, beep=BeepSpec(freq=1234.0))
    assert np.array_equal(live, offline)
    assert streams[0].started and streams[0].stopped and streams[0].closed
    assert report.device == "fake" and report.underflows == 0
    assert report.beep_t is not None


def test_underflows_are_counted():
    audio, _ = make_out()
    audio.start()
    drive(audio, scripted_timeline(), 30, flags=lambda k: Flags(k % 10 == 3))
    assert audio.close().underflows == 3


def test_a_broken_publisher_does_not_stop_the_sound():
    audio, _ = make_out()
    audio.start()

    def boom():
        raise RuntimeError("publisher bug")

    audio._get_state = boom
    buf = np.full((BLOCK, 2), np.nan, np.float32)
    audio.callback(buf, BLOCK, None, Flags(False))
    assert np.isfinite(buf).all()
    report = audio.close()
    assert audio.errors == 1 and "1 render errors" in report.note


def test_mute_is_the_synths_and_the_beep_still_sounds():
    audio, _ = make_out()
    audio.start()
    audio.muted = True
    assert audio.synth.muted is True
    a = drive(audio, scripted_timeline(0.2, 0.2, 0.2), 120)
    cut = int(np.ceil(0.6 * RATE / BLOCK)) * BLOCK
    assert not a[BLOCK:cut].any() and np.abs(a[cut:]).max() > 0.3
    audio.close()


def test_close_twice_gives_the_same_report():
    audio, _ = make_out()
    audio.start()
    assert audio.close() is audio.close()


# ---------------------------------------------------------------- WAV


def test_wav_ring_gets_every_block_in_order(tmp_path):
    path = tmp_path / "show.wav"
    tl = scripted_timeline(0.3, 0.3, 0.3)
    audio, _ = make_out(seed=5, wav_path=str(path))
    audio.start()
    live = []
    for chunk in range(4):  # in bursts shorter than the ring, as a device would
        live.append(drive(audio, [(t - chunk * 50 * BLOCK / RATE, s) for t, s in tl], 50))
        time.sleep(0.1)
    report = audio.close()
    data, rate = read_wav(str(path))
    assert rate == RATE and data.shape == (200 * BLOCK, 2)
    assert np.abs(data - np.concatenate(live)).max() <= 1 / 32767
    assert "wrote" in report.note


def test_wav_ring_overflow_is_counted_not_blocking(tmp_path):
    audio, _ = make_out(wav_path=str(tmp_path / "x.wav"))
    audio._wav = object()  # a writer that never drains: the ring fills up
    drive(audio, scripted_timeline(), out_mod.RING_SLOTS + 10)
    assert audio.wav_dropped == 10


@pytest.mark.parametrize(
    "make_path, why",
    [
        (lambda d: "", "empty"),
        (lambda d: str(d), "directory"),
        (lambda d: str(d / "no" / "such" / "dir" / "x.wav"), "does not exist"),
        (lambda d: str(d / "file.txt" / "x.wav"), "not a directory"),
        (lambda d: "/dev/null", "not a regular file"),
    ],
)
def test_unwritable_wav_paths_are_bad_input(tmp_path, make_path, why):
    (tmp_path / "file.txt").write_text("a file, not a directory")
    path = make_path(tmp_path)
    with pytest.raises(BadInput) as e:
        check_wav_path(path)
    assert why in e.value.message and "\n" not in e.value.message
    with pytest.raises(BadInput):
        open_audio(f"wav:{path}", ShowState, time.monotonic(), BeepSpec())


def test_open_audio_with_an_unwritable_wav_creates_nothing(tmp_path):
    target = tmp_path / "missing" / "x.wav"
    with pytest.raises(BadInput, match="cannot write"):
        open_audio(f"wav:{target}", ShowState, time.monotonic(), BeepSpec())
    assert list(tmp_path.iterdir()) == []


def test_writable_wav_path_passes_and_creates_nothing(tmp_path):
    check_wav_path(str(tmp_path / "ok.wav"))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- specs


@pytest.mark.parametrize("spec", ["loud", "", "device:", "wav", "Auto", 3, None])
def test_unknown_audio_specs_are_bad_input(spec):
    with pytest.raises(BadInput):
        open_audio(spec, ShowState, time.monotonic(), BeepSpec())


@pytest.fixture
def no_portaudio(monkeypatch):
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (None, out_mod.NO_PORTAUDIO))


class FakeSD:
    """A sounddevice stand-in with one output device (or none)."""

    def __init__(self, outputs=("pulse",)):
        self.devices = [
            {"index": i, "name": n, "max_output_channels": 2} for i, n in enumerate(outputs)
        ]

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return self.devices
        if device is None:
            if not self.devices:
                raise RuntimeError("no default output")
            return self.devices[0]
        if isinstance(device, int):
            if device >= len(self.devices):
                raise RuntimeError("bad index")
            return self.devices[device]
        hits = [d for d in self.devices if device.lower() in d["name"].lower()]
        if len(hits) != 1:
            raise ValueError(f"no or many devices match {device!r}")
        return hits[0]


def test_auto_without_portaudio_says_one_line_and_stays_silent(no_portaudio):
    said = []
    audio = open_audio("auto", ShowState, time.monotonic(), BeepSpec(), say=said.append)
    assert said == ["audio: silent — PortAudio library not found (install libportaudio2)"]
    assert audio.device == "none" and audio._stream_factory is None


def test_auto_without_devices_says_no_output_device(monkeypatch):
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (FakeSD(outputs=()), ""))
    said = []
    open_audio("auto", ShowState, time.monotonic(), BeepSpec(), say=said.append)
    assert said == ["audio: silent — no output device"]


def test_device_without_portaudio_cannot_stage(no_portaudio):
    with pytest.raises(CannotStage, match="libportaudio2"):
        open_audio("device", ShowState, time.monotonic(), BeepSpec())


@pytest.mark.parametrize("spec", ["device", "device:speakers", "device:7"])
def test_missing_devices_cannot_stage_and_name_the_fix(monkeypatch, spec):
    outputs = () if spec == "device" else ("pulse", "default")
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (FakeSD(outputs), ""))
    with pytest.raises(CannotStage) as e:
        open_audio(spec, ShowState, time.monotonic(), BeepSpec())
    msg = e.value.message
    assert "start-pulse.sh" in msg and "\n" not in msg
    if outputs:
        assert "0: pulse" in msg  # the outputs there are


@pytest.mark.parametrize("spec, name", [("device:pulse", "pulse"), ("device:1", "default")])
def test_named_and_numbered_devices_are_found(monkeypatch, spec, name):
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (FakeSD(("pulse", "default")), ""))
    audio = open_audio(spec, ShowState, time.monotonic(), BeepSpec())
    assert audio.device == name and audio._stream_factory is not None


# ---------------------------------------------------------------- the silent clock


def run_silent_show(spec: str, oom_after: float, say=None) -> tuple[AudioOut, float, float]:
    """A scripted show on the clock driver: swapping, then oom after `oom_after` s.
    Returns (audio, the oom publication's show time, the close's show time)."""
    t0 = time.monotonic()
    current = [ShowState(phase=Phase.SWAPPING, intensity=0.8, stall=0.5)]
    audio = open_audio(
        spec,
        lambda: current[0],
        t0,
        BeepSpec(freq=1234.0, length_ms=200.0),
        seed=3,
        say=say or (lambda s: None),
    )
    audio.start()
    time.sleep(oom_after)
    current[0] = ShowState(phase=Phase.OOM)
    pub = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while not audio.finished:
        assert time.monotonic() < deadline, "the silent audio never finished"
        time.sleep(0.01)
    return audio, pub, time.monotonic() - t0


def test_off_still_keeps_time_for_the_beep():
    audio, pub, _ = run_silent_show("off", 0.2)
    report = audio.close()
    assert report.device == "off"
    # the beep "starts" after the kill's publication, a block or so later (loose: CI load)
    assert pub <= report.beep_t <= pub + 0.5


def test_wav_only_show_writes_the_show_in_real_time(tmp_path, monkeypatch):
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (None, out_mod.NO_PORTAUDIO))
    path = tmp_path / "show.wav"
    said = []
    audio, pub, _ = run_silent_show(f"wav:{path}", 0.5, say=said.append)
    shown = time.monotonic() - audio._t0
    report = audio.close()
    assert said and said[0].startswith(f"audio: writing {path} only")
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)
        duration = w.getnframes() / RATE
    # the file is the show: as long as it ran (blocks are rendered on a real-time clock)
    assert abs(duration - shown) < 0.25, (duration, shown)
    data, _ = read_wav(str(path))
    loud = np.flatnonzero(np.abs(data[:, 0]) > 0.05)
    last_tone = data[loud[-1] - int(0.15 * RATE) : loud[-1], 0]
    spec = np.abs(np.fft.rfft(last_tone * np.hanning(len(last_tone)), 1 << 20))
    assert np.argmax(spec) * RATE / (1 << 20) == pytest.approx(1234.0, abs=2.0)
    assert report.beep_t is not None and report.beep_t >= pub


class BrokenStream(FakeStream):
    def start(self):
        raise RuntimeError("Error opening OutputStream: Device unavailable [PaErrorCode -9985]")


def _broken_sd(monkeypatch):
    monkeypatch.setattr(out_mod, "_import_sounddevice", lambda: (FakeSD(("pulse",)), ""))
    monkeypatch.setattr(out_mod, "_stream_factory", lambda *a: BrokenStream)


def test_auto_falls_back_to_silence_when_the_device_will_not_open(monkeypatch):
    _broken_sd(monkeypatch)
    said = []
    audio = open_audio("auto", ShowState, time.monotonic(), BeepSpec(), say=said.append)
    audio.start()
    report = audio.close()
    assert said == [
        "audio: silent — cannot open pulse (Error opening OutputStream: Device unavailable [PaErrorCode -9985])"
    ]
    assert "could not open pulse" in report.note


def test_a_named_device_that_will_not_open_cannot_stage(monkeypatch):
    _broken_sd(monkeypatch)
    audio = open_audio("device:pulse", ShowState, time.monotonic(), BeepSpec())
    with pytest.raises(CannotStage, match="cannot open pulse"):
        audio.start()
    audio.close()
