"""The pure synth: voice settings by phase, the cut, the final beep, levels, the golden
reference, and the allocation-free noise fill."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beep_av.audio.synth import (
    BEEP_LEVEL,
    BLOCK,
    PEAK,
    RATE,
    BeepSpec,
    Synth,
    render_offline,
    scripted_timeline,
    state_at,
    voice_params,
)
from beep_av.audio.wav import read_wav, write_wav
from beep_av.model import Phase, ShowState
from beep_av.noise import Noise

REFERENCES = Path(__file__).resolve().parent / "references" / "audio"


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def peak_hz(x: np.ndarray, rate: int = RATE) -> float:
    """Frequency of the largest FFT peak (zero-padded, parabolic interpolation)."""
    n = 1 << 20
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
    k_frac = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k_frac * rate / n


def cut_frame(oom_t: float, blocksize: int = BLOCK, rate: int = RATE) -> int:
    """First frame of the first block whose start time is at or after `oom_t`."""
    return math.ceil(oom_t * rate / blocksize - 1e-9) * blocksize


# ---------------------------------------------------------------- voice settings


def test_voice_gain_orders_phases_whatever_intensity():
    lows = {}
    highs = {}
    for phase in (Phase.CALM, Phase.FILLING, Phase.EVICTING, Phase.SWAPPING):
        gains = []
        for i in (0.0, 0.5, 1.0):
            for stall in (0.0, 1.0):
                p = voice_params(ShowState(phase=phase, intensity=i, stall=stall))
                # dropped and chopped segments take power away: count what stays
                gains.append(p.gain * math.sqrt(1 - p.drop - 0.5 * p.stutter))
        lows[phase], highs[phase] = min(gains), max(gains)
    assert highs[Phase.CALM] < lows[Phase.FILLING]
    assert highs[Phase.FILLING] < lows[Phase.EVICTING]
    assert highs[Phase.EVICTING] < lows[Phase.SWAPPING]


@pytest.mark.parametrize(
    "phase, stall, want",
    [
        (Phase.CALM, 0.0, dict(bits=16, hold=1, drop=0.0)),
        (Phase.EVICTING, 0.0, dict(drop=0.0)),
        (Phase.SWAPPING, 0.0, dict(bits=8, hold=2, drop=0.05, stutter=0.1)),
        (Phase.SWAPPING, 1.0, dict(bits=4, hold=8, drop=0.3, stutter=0.3)),
        (Phase.OOM, 1.0, dict(gain=0.0)),
        (Phase.FINALE, 0.0, dict(gain=0.0)),
    ],
)
def test_voice_params_table(phase, stall, want):
    p = voice_params(ShowState(phase=phase, intensity=0.5, stall=stall))
    for key, value in want.items():
        assert getattr(p, key) == pytest.approx(value), key


@pytest.mark.parametrize(
    "junk", [float("nan"), float("inf"), -float("inf"), -3.0, 1e300, "0.7", None]
)
def test_voice_params_hostile_readings_are_clamped(junk):
    p = voice_params(ShowState(phase=Phase.SWAPPING, intensity=junk, stall=junk))
    q0 = voice_params(ShowState(phase=Phase.SWAPPING, intensity=0.0, stall=0.0))
    q1 = voice_params(ShowState(phase=Phase.SWAPPING, intensity=1.0, stall=1.0))
    assert all(math.isfinite(v) for v in p)
    assert min(q0.gain, q1.gain) <= p.gain <= max(q0.gain, q1.gain)
    assert 2 <= p.bits <= 16 and 1 <= p.hold <= 8 and 0 <= p.drop <= 0.5


def test_a_cpu_gauge_plays_the_work_speed_not_the_intensity():
    """The CPU gauge's sound follows its work against full speed (the view's speed);
    intensity is pressure (1 - speed there) and the voice does not read it twice."""
    from beep_av.model import ActView

    def voice(speed, intensity):
        return voice_params(ShowState(phase=Phase.EVICTING, gauge="cpu", intensity=intensity,
                                      act_view=ActView(speed=speed)))  # fmt: skip

    assert voice(0.1, 0.9) == voice(0.1, 0.2)
    slow, fast = voice(0.05, 0.95), voice(1.0, 0.0)
    assert slow.cutoff_hz < fast.cutoff_hz and slow.hold > fast.hold


def test_muted_silences_the_noise_settings():
    assert voice_params(ShowState(phase=Phase.SWAPPING, intensity=1), muted=True).gain == 0
    assert voice_params(ShowState(phase=Phase.SWAPPING, muted=True)).gain == 0


# ---------------------------------------------------------------- render contract


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((512, 1), np.float32),
        np.zeros((512, 2), np.float64),
        np.zeros(1024, np.float32),
        np.zeros((512, 3), np.float32),
    ],
)
def test_render_rejects_wrong_buffers(bad):
    with pytest.raises(ValueError):
        Synth().render(ShowState(), bad, Noise(seed=1), 0.0)


@pytest.mark.parametrize("frames", [0, 1, 7, 512, 5000])
@pytest.mark.parametrize("phase", [Phase.CALM, Phase.SWAPPING, Phase.OOM])
def test_render_fills_every_sample(frames, phase):
    out = np.full((frames, 2), np.nan, dtype=np.float32)
    Synth(max_block=1024).render(ShowState(phase=phase, stall=0.5), out, Noise(seed=2), 0.0)
    assert np.isfinite(out).all()
    assert np.abs(out).max(initial=0) <= PEAK


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Phase)),
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True, allow_infinity=True),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 2**32),
)
def test_any_state_sequence_stays_within_peak(seq, seed):
    synth = Synth()
    noise = Noise(seed=seed)
    out = np.empty((BLOCK, 2), np.float32)
    for phase, i, stall, muted in seq:
        for _ in range(6):
            synth.render(
                ShowState(phase=phase, intensity=i, stall=stall, muted=muted), out, noise, 0
            )
            assert np.isfinite(out).all()
            assert np.abs(out).max() <= PEAK


# ---------------------------------------------------------------- the story in sound

ORDER_PHASES = [Phase.CALM, Phase.EVICTING, Phase.SWAPPING]


@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=3, max_size=3),
    st.floats(0, 1),
    st.integers(0, 2**32),
)
def test_noise_rms_rises_calm_evicting_swapping(intensities, stall, seed):
    timeline = [
        (float(k), ShowState(phase=ph, intensity=i, stall=stall))
        for k, (ph, i) in enumerate(zip(ORDER_PHASES, intensities, strict=True))
    ]
    a = render_offline(timeline, 3.0, seed=seed)
    # skip the first 100 ms of each phase: the gain ramps, the cutoff glides
    windows = [a[k * RATE + RATE // 10 : (k + 1) * RATE] for k in range(3)]
    levels = [rms(w) for w in windows]
    assert levels[0] < levels[1] < levels[2], levels
    # clearly, not barely: stutter segments are random, so leave them room
    assert levels[2] > 1.2 * levels[1] and levels[1] > 2 * levels[0], levels


def test_silence_after_the_kill_until_the_beep_and_after_it():
    beep = BeepSpec(freq=1000.0, length_ms=300.0)
    tl = scripted_timeline(0.3, 0.3, 0.3)
    oom_t = tl[-1][0]
    a = render_offline(tl, 2.0, seed=3, beep=beep)
    cut = cut_frame(oom_t)
    assert (
        np.abs(a[cut - RATE // 10 : cut]).max() > 0.01
    )  # noise up to the cut (a segment may drop out)
    lead = round(beep.lead_ms * RATE / 1000)
    tone = round(beep.length_ms * RATE / 1000)
    assert not a[cut : cut + lead].any()  # dead silence between the cut and the beep
    assert np.abs(a[cut + lead + 10 : cut + lead + tone - 10]).max() > 0.3
    assert not a[cut + lead + tone :].any()  # nothing after the beep


def test_kill_to_beep_is_the_next_block_plus_the_lead():
    synth = Synth(beep=BeepSpec(lead_ms=5.0))
    noise = Noise(seed=4)
    out = np.empty((BLOCK, 2), np.float32)
    synth.render(ShowState(phase=Phase.SWAPPING), out, noise, now=1.0)
    assert synth.cut_t is None and synth.beep_t is None
    synth.render(ShowState(phase=Phase.OOM), out, noise, now=1.0 + BLOCK / RATE)
    assert synth.cut_t == pytest.approx(1.0 + BLOCK / RATE)
    assert synth.beep_t - synth.cut_t == pytest.approx(0.005, abs=1 / RATE)


@pytest.mark.parametrize("freq", [220.0, 880.0, 1234.0, 5000.0])
def test_beep_frequency_by_fft(freq):
    beep = BeepSpec(freq=freq, length_ms=400.0)
    a = render_offline([(0.0, ShowState(phase=Phase.OOM))], 0.6, beep=beep)
    tone = a[:, 0][np.abs(a[:, 0]) > 0]
    assert peak_hz(tone) == pytest.approx(freq, abs=0.5)


@pytest.mark.parametrize("freq", [880.0, 1234.0, 4000.0])
def test_beep_has_no_clicks(freq):
    beep = BeepSpec(freq=freq, length_ms=400.0, fade_ms=5.0)
    a = render_offline([(0.0, ShowState(phase=Phase.FINALE))], 0.7, beep=beep)[:, 0]
    lead = round(beep.lead_ms * RATE / 1000)
    tone = round(beep.length_ms * RATE / 1000)
    x = a[lead : lead + tone]
    assert abs(x[0]) < 1e-3 and abs(x[-1]) < 1e-3
    assert abs(x[1]) < 1e-3 and abs(x[-2]) < 1e-3  # the fade starts gently
    # the steepest a clean sine of this level can move between two samples
    steepest = BEEP_LEVEL * 2 * math.pi * freq / RATE
    assert np.abs(np.diff(a)).max() <= steepest * 1.01
    assert np.abs(x).max() == pytest.approx(BEEP_LEVEL, rel=0.01)


@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_beep_repeats_then_finishes(repeats):
    beep = BeepSpec(freq=880.0, length_ms=100.0, repeats=repeats, gap_ms=100.0)
    synth = Synth(beep=beep)
    noise = Noise(seed=5)
    chunks = []
    out = np.empty((BLOCK, 2), np.float32)
    k = 0
    while not synth.finished:
        synth.render(ShowState(phase=Phase.OOM), out, noise, k * BLOCK / RATE)
        chunks.append(out[:, 0].copy())
        k += 1
        assert k < 1000
    a = np.concatenate(chunks)
    w = 240  # 5 ms windows: an envelope, not the sine's zero crossings
    env = np.abs(a[: len(a) // w * w]).reshape(-1, w).max(axis=1)
    loud = env > 0.05
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1])
    assert len(onsets) == repeats
    last = np.flatnonzero(np.abs(a) > 0)[-1]
    assert synth.finished_t - last / RATE >= 0.150  # at least 150 ms of silence after


def test_muted_noise_but_the_beep_still_sounds():
    tl = scripted_timeline(0.2, 0.2, 0.2)
    a = render_offline(tl, 1.3, seed=6, muted=True)
    cut = cut_frame(tl[-1][0])
    assert not a[BLOCK:cut].any()  # muted noise (the first block ramps down from 0 anyway)
    assert np.abs(a[cut:]).max() > 0.3  # the beep


def test_raw_noise_from_the_kernel_renders():
    a = render_offline([(0.0, ShowState(phase=Phase.SWAPPING, stall=0.5))], 0.3, raw=True)
    b = render_offline([(0.0, ShowState(phase=Phase.SWAPPING, stall=0.5))], 0.3, raw=True)
    assert rms(a) > 0.05 and not np.array_equal(a, b)


# ---------------------------------------------------------------- determinism and golden


def test_same_seed_same_sound_other_seed_other_sound():
    tl = scripted_timeline(0.2, 0.2, 0.2)
    a = render_offline(tl, 1.0, seed=11)
    assert np.array_equal(a, render_offline(tl, 1.0, seed=11))
    assert not np.array_equal(a, render_offline(tl, 1.0, seed=12))


def test_state_at_picks_the_latest_published():
    tl = scripted_timeline(1.0, 1.0, 1.0)
    assert state_at(tl, 0.0).phase is Phase.CALM
    assert state_at(tl, 0.999).phase is Phase.CALM
    assert state_at(tl, 1.0).phase is Phase.EVICTING
    assert state_at(tl, 99).phase is Phase.OOM
    assert state_at([], 1.0) == ShowState()


@pytest.mark.parametrize("duration", [-1.0, float("nan"), float("inf")])
def test_render_offline_rejects_bad_durations(duration):
    with pytest.raises(ValueError):
        render_offline([], duration)


GOLDEN = REFERENCES / "scripted.wav"


def golden_render() -> np.ndarray:
    return render_offline(scripted_timeline(0.5, 0.5, 0.5), 2.2, seed=7, beep=BeepSpec(freq=1234.0))


def test_offline_render_matches_the_golden_wav(request, tmp_path):
    a = golden_render()
    if request.config.getoption("--update-references"):
        REFERENCES.mkdir(parents=True, exist_ok=True)
        write_wav(str(GOLDEN), a, RATE)
    assert GOLDEN.is_file(), "no golden WAV: run pytest --update-references"
    ref, rate = read_wav(str(GOLDEN))
    assert rate == RATE and ref.shape == a.shape
    # compare in 16-bit steps: the WAV holds int16; a float ulp may round differently on
    # another CPU, so allow a handful of off-by-one-step samples and no real difference
    step = 1 / 32767
    diff = np.abs(ref - a)
    assert np.mean(diff > 1.5 * step) < 1e-3
    assert np.percentile(diff, 99.9) <= 1.5 * step
    # and it is a real show: noise, then the 1234 Hz beep
    assert rms(ref[: RATE // 2]) > 0.005
    cut = cut_frame(1.5)
    assert peak_hz(ref[cut : cut + RATE // 2, 0]) == pytest.approx(1234.0, abs=1.0)


# ---------------------------------------------------------------- noise


def test_fill_uniform_range_and_determinism():
    a = np.empty((4096, 2), np.float32)
    b = np.empty((4096, 2), np.float32)
    Noise(seed=9).fill_uniform(a)
    Noise(seed=9).fill_uniform(b)
    assert np.array_equal(a, b)
    assert a.min() >= -1 and a.max() < 1
    assert abs(float(a.mean())) < 0.05 and 0.5 < float(a.std()) < 0.65


def test_fill_uniform_raw_reads_the_kernel():
    a = np.empty(4096, np.float32)
    Noise(raw=True).fill_uniform(a)
    assert a.min() >= -1 and a.max() < 1 and len(np.unique(a)) > 4000


@pytest.mark.parametrize(
    "bad", [np.empty(8, np.float64), np.empty((8, 2), np.float32)[:, 0], np.empty(8, np.int32)]
)
def test_fill_uniform_rejects_other_arrays(bad):
    with pytest.raises(ValueError):
        Noise(seed=1).fill_uniform(bad)


def test_kernel_seeded_noise_reseeds(monkeypatch):
    import beep_av.noise as noise_mod

    monkeypatch.setattr(noise_mod, "RESEED_BYTES", 4096)
    n = Noise()
    gen = n._gen
    n.fill_uniform(np.empty(2048, np.float32))  # 8 KiB: past the reseed point
    assert n._gen is not gen


# ---------------------------------------------------------------- the bystander's read-back


def _readback_blocks(swapins, muted=False, blocks=60):
    """Blocks of a bystander finale: the kill at 0, then `swapins` (pages/s, or None)
    once the beep is over; returns (synth, the whole sound)."""
    from beep_av.model import ActView

    s = Synth()
    s.muted = muted
    noise = Noise(seed=3)
    out = np.zeros((BLOCK, 2), dtype=np.float32)
    got = []
    for k in range(blocks):
        view = ActView(swapins=swapins if s.finished else None)
        st = ShowState(t=k * BLOCK / RATE, phase=Phase.FINALE, oom_t=0.0, act="bystander",
                       act_view=view)  # fmt: skip
        s.render(st, out, noise, k * BLOCK / RATE)
        got.append(out.copy())
    return s, np.concatenate(got)


def test_a_read_back_is_heard_after_the_beep_as_a_crackle_and_stops_dead():
    s, x = _readback_blocks(50_000.0)
    assert s.finished
    end = round(s.finished_t * RATE)
    beep, after = x[: round(s.beep_t * RATE) + s._tone, 0], x[end + BLOCK :, 0]
    assert abs(peak_hz(beep) - 880.0) < 1.0  # the beep is still one clean tone
    assert rms(after) > 0.02, "the swap-ins are silent"
    spec = np.abs(np.fft.rfft(after * np.hanning(len(after))))
    assert spec.max() / spec.sum() < 0.01, "the crackle is a tone"
    # the read-back over: the next block is silent at once
    st = ShowState(t=1.0, phase=Phase.FINALE, oom_t=0.0, act="bystander")
    out = np.ones((BLOCK, 2), dtype=np.float32)
    s.render(st, out, Noise(seed=4), 1.0)
    assert not out.any()


def test_no_read_back_no_sound_and_mute_silences_it():
    s, x = _readback_blocks(None)
    assert not x[round(s.finished_t * RATE) :].any()
    s, x = _readback_blocks(50_000.0, muted=True)
    assert not x[round(s.finished_t * RATE) :].any()
    assert rms(x) > 0.1  # muted or not, the beep sounds


def test_the_crackle_is_louder_the_faster_the_pages_come_back():
    quiet = _readback_blocks(200.0, blocks=120)[1][-BLOCK * 40 :]
    loud = _readback_blocks(80_000.0, blocks=120)[1][-BLOCK * 40 :]
    assert rms(loud) > 1.5 * rms(quiet) > 0.005
