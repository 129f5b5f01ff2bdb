"""The real-time rules of the audio callback, checked on the very function PortAudio
calls (`AudioOut.callback`) with a fake `outdata` and the real synth: no allocation
(tracemalloc), no kernel call for the noise (the feeder's thread does it), and never two
renderers at once when the device is given up."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest

import beep_av.noise as noise_mod
from beep_av.audio import output as out_mod
from beep_av.audio.output import CLOCK, AudioOut
from beep_av.audio.synth import BLOCK, BeepSpec, Synth
from beep_av.model import Phase, ShowState
from beep_av.noise import Feeder, Noise

STATES = {
    "calm": ShowState(phase=Phase.CALM, intensity=0.1),
    "evicting": ShowState(phase=Phase.EVICTING, intensity=0.6),
    "swapping": ShowState(phase=Phase.SWAPPING, intensity=0.9, stall=0.7),
    "beep": ShowState(phase=Phase.OOM, oom_t=0.0),
}


class Flags:
    output_underflow = False

    def __bool__(self) -> bool:
        return False


class IdleStream:
    """A stream that never calls back by itself: the test is the audio thread."""

    latency = 0.0
    active = True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def device_out(state: ShowState, noise: Noise, wav: str | None = None) -> AudioOut:
    return AudioOut(
        Synth(beep=BeepSpec(length_ms=1e6)),  # a beep as long as the test
        noise,
        lambda: state,
        time.monotonic(),
        device="fake",
        stream_factory=lambda cb: IdleStream(),
        wav_path=wav,
    )


# ---------------------------------------------------------------- no allocation


@pytest.mark.parametrize("name", list(STATES))
@pytest.mark.parametrize("raw", [False, True], ids=["seeded", "raw"])
def test_a_thousand_callbacks_allocate_nothing(name, raw, monkeypatch):
    """1,000 blocks through the callback: nothing kept (net), nothing growing (the first
    100 against the last 900), and no block-sized temporary at any moment (peak)."""
    # a raw ring that lasts the whole test: the feeder's own allocations (on its thread)
    # would count in this process-wide trace
    monkeypatch.setattr(noise_mod, "RAW_RING_WORDS", 2 << 20)
    audio = device_out(STATES[name], Noise(raw=raw, fed=True))  # kernel-seeded, as live
    outdata = np.zeros((BLOCK, 2), np.float32)
    flags = Flags()
    for _ in range(50):  # warm: first-call caches (views per block size, ufunc loops)
        audio.callback(outdata, BLOCK, None, flags)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(100):
            audio.callback(outdata, BLOCK, None, flags)
        after_100, _ = tracemalloc.get_traced_memory()
        for _ in range(900):
            audio.callback(outdata, BLOCK, None, flags)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    net = end - start
    growth = (end - after_100) - (after_100 - start)
    print(
        f"{name}/{'raw' if raw else 'seeded'}: net {net} B, growth {growth} B, peak +{peak - start} B"
    )
    # tracemalloc's own bookkeeping keeps a few hundred bytes: a bound, not zero
    assert net < 1024, f"{net} bytes kept over 1,000 blocks"
    assert abs(growth) < 256, f"memory grows: {growth} bytes more in the last 900 blocks"
    # one block of float32 stereo is 4 KiB: no temporary of that size ever exists
    assert peak - start < 2048, f"a {peak - start}-byte temporary inside the callback"
    assert audio.errors == 0 and np.isfinite(outdata).all()
    assert audio.noise.starved == 0
    audio.close()


def test_the_wav_ring_path_allocates_nothing(tmp_path):
    audio = device_out(STATES["swapping"], Noise(seed=3, fed=True), wav=str(tmp_path / "w.wav"))
    outdata = np.zeros((BLOCK, 2), np.float32)
    for _ in range(50):
        audio.callback(outdata, BLOCK, None, Flags())
    audio._ring_r = audio._ring_w  # no writer thread (not started): keep the ring free
    audio._wav = object()  # the callback only tests it for None
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(500):
            audio.callback(outdata, BLOCK, None, Flags())
            audio._ring_r = audio._ring_w
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 1024 and peak - start < 2048, (end - start, peak - start)
    assert audio.wav_dropped == 0


# ---------------------------------------------------------------- no kernel call


def test_the_kernel_reseed_happens_on_the_feeders_thread(monkeypatch):
    """Past RESEED_BYTES the callback swaps in a generator the feeder seeded: the only
    getrandom calls come from the constructor's and the feeder's threads."""
    monkeypatch.setattr(noise_mod, "RESEED_BYTES", 64 * 1024)  # every 16 blocks
    callers: list[str] = []
    real = noise_mod.os.getrandom

    def spy(n, flags=0):
        callers.append(threading.current_thread().name)
        return real(n, flags)

    monkeypatch.setattr(noise_mod.os, "getrandom", spy)
    noise = Noise(fed=True)
    feeder = Feeder(noise, every=0.005)
    feeder.start()
    gens: list = []  # the generators seen (kept: an id() may be reused)
    outdata = np.zeros((BLOCK, 2), np.float32)
    audio = device_out(STATES["swapping"], noise)

    def audio_thread():
        for _ in range(400):
            audio.callback(outdata, BLOCK, None, Flags())
            if not gens or gens[-1] is not noise._gen:
                gens.append(noise._gen)
            time.sleep(0.0005)

    t = threading.Thread(target=audio_thread, name="fake-portaudio")
    t.start()
    t.join(30)
    feeder.stop()
    assert len(gens) >= 5, "the generator was never reseeded"
    assert "fake-portaudio" not in callers
    assert "beep-noise-feed" in callers
    assert feeder.error is None


def test_a_fed_noise_waits_for_its_feeder_rather_than_reading_the_kernel(monkeypatch):
    monkeypatch.setattr(noise_mod, "RESEED_BYTES", 4096)
    noise = Noise(fed=True)  # its next generator is ready from the start
    monkeypatch.setattr(
        noise_mod.os, "getrandom", lambda *a: pytest.fail("getrandom from the consumer")
    )
    first = noise._gen
    buf = np.empty(2048, np.float32)  # 8 KiB: past the reseed point
    noise.fill_uniform(buf)
    second = noise._gen
    assert second is not first and noise._next is None
    noise.fill_uniform(buf)  # no next one yet: goes on with the current generator
    assert noise._gen is second


def test_raw_noise_comes_from_the_ring_and_stands_in_when_it_runs_dry(monkeypatch):
    noise = Noise(raw=True, fed=True)
    monkeypatch.setattr(
        noise_mod.os, "getrandom", lambda *a: pytest.fail("getrandom from the consumer")
    )
    buf = np.empty((BLOCK, 2), np.float32)
    blocks = noise_mod.RAW_RING_WORDS // buf.size
    for _ in range(blocks):
        noise.fill_uniform(buf)
        assert buf.min() >= -1 and buf.max() < 1
    assert noise.starved == 0 and len(np.unique(buf)) > 1000
    noise.fill_uniform(buf)  # the ring is empty and nobody feeds it
    assert noise.starved == 1 and buf.min() >= -1 and buf.max() < 1
    monkeypatch.undo()
    noise.feed()
    noise.fill_uniform(buf)
    assert noise.starved == 1


# ---------------------------------------------------------------- one renderer


def test_the_device_is_given_up_only_after_its_callback_leaves_the_block(monkeypatch):
    """A callback is inside a block (held there) when the watchdog decides the device
    is gone: the clock thread must not render until it leaves, and every callback after
    the handover is silent. Any overlap of two render() calls fails the test."""
    monkeypatch.setattr(out_mod, "STALL_S", 0.05)
    monkeypatch.setattr(out_mod, "WATCH_EVERY", 0.01)
    inside = threading.Event()
    release = threading.Event()
    active = [0]
    overlaps = [0]
    renders: list[str] = []

    class Probe(Synth):
        hold = True

        def render(self, state, out, noise, now):
            active[0] += 1
            if active[0] > 1:
                overlaps[0] += 1
            renders.append(threading.current_thread().name)
            try:
                if self.hold and threading.current_thread().name == "fake-portaudio":
                    self.hold = False
                    inside.set()
                    release.wait(10)  # stuck mid-block
                super().render(state, out, noise, now)
            finally:
                active[0] -= 1

    stream = IdleStream()
    audio = AudioOut(
        Probe(),
        Noise(seed=1, fed=True),
        lambda: STATES["calm"],
        time.monotonic(),
        device="fake",
        stream_factory=lambda cb: stream,
        say=lambda s: None,
    )
    audio.start()
    outdata = np.zeros((BLOCK, 2), np.float32)
    cb = threading.Thread(
        target=audio.callback, args=(outdata, BLOCK, None, Flags()), name="fake-portaudio"
    )
    cb.start()
    assert inside.wait(5)
    stream.active = False  # the server died while the callback was mid-block
    deadline = time.monotonic() + 5
    while audio._owner is not CLOCK and time.monotonic() < deadline:
        time.sleep(0.005)
    assert audio._owner is CLOCK
    time.sleep(0.2)  # the watchdog waits; the clock thread must not have started
    assert audio.vanished is None and "beep-clock" not in renders
    release.set()
    cb.join(5)
    deadline = time.monotonic() + 5
    while "beep-clock" not in renders and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "beep-clock" in renders and audio.vanished is not None
    late = np.full((BLOCK, 2), np.nan, np.float32)
    n = len([r for r in renders if r == "fake-portaudio"])
    audio.callback(late, BLOCK, None, Flags())  # a stalled callback comes back: silence
    assert (late == 0).all()
    assert len([r for r in renders if r == "fake-portaudio"]) == n
    audio.close()
    assert overlaps[0] == 0
