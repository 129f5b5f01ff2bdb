"""The console, for real: KMS, the framebuffer and a sound card with no sound server, in
the Debian guest (scripts/vm.sh --console: tty1 in the normal user's seat session on a
bochs-drm GPU with /dev/fb0, an Intel HDA card whose output QEMU writes to card.wav).

One boot runs tests/vm/console.sh; screendumps are taken from the host through QEMU's
monitor when the guest's recording enters a phase."""

from __future__ import annotations

import json
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pygame
import pytest

from beep_av.model import Phase
from beep_av.noise import Noise
from beep_av.recording import load
from beep_av.stages.replay import ReplayDriver
from beep_av.video.captions import Captions
from beep_av.video.scene import Scene

# a boot (and an image build from nothing) runs in the first test's setup
pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.guest, pytest.mark.timeout(1800)]

SHOWS = ("kms", "fb", "auto", "fb-q")


@pytest.fixture(scope="module")
def run(guest):
    r = guest("console.sh", "console")
    assert r.rc == 0 and (r.out / "done").exists(), r.tail()
    return r


def shot(run, name: str) -> np.ndarray:
    path = run.out / f"shot-{name}.png"
    assert path.exists(), f"no screendump {path.name}; serial log:\n{run.tail()}"
    return pygame.surfarray.array3d(pygame.image.load(str(path))).astype(np.int16)


def finale_alone(rec_path: Path, size: tuple[int, int]) -> np.ndarray:
    """The finale of a recording drawn by the Scene on its own, at the screen's size."""
    states = list(ReplayDriver(load(str(rec_path))).states())
    # the live show's finale, not the replay's (whose card opens with "replay of FILE")
    fin = replace([s for s in states if s.phase is Phase.FINALE][-1], replay_of=None)
    scene = Scene(size, Captions.load())
    surface = pygame.Surface(size)
    scene.draw(fin, Noise(1), surface)
    return pygame.surfarray.array3d(surface).astype(np.int16)


def bright(a: np.ndarray) -> np.ndarray:
    return a.max(axis=2) > 100


def grow(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dx in range(-r, r + 1, max(1, r // 2)):
        for dy in range(-r, r + 1, max(1, r // 2)):
            out |= np.roll(np.roll(mask, dx, 0), dy, 1)
    return out


def test_tty1_is_the_users_seat_session(run):
    assert run.text("info/tty.txt").strip() == "/dev/tty1"
    s = run.text("info/session.txt")
    assert "Seat=seat0" in s and "VTNr=1" in s and "Active=yes" in s, s


def test_auto_picks_kms_on_the_console_and_the_terminal_on_a_pty(run):
    assert "output auto would pick kms" in run.text("info/doctor.txt")
    assert "output auto would pick terminal" in run.text("info/doctor-pty.txt")
    assert "output: kms" in run.text("auto.out") + run.text("auto.err")


@pytest.mark.parametrize("name", ["kms", "fb", "auto"])
def test_console_show_draws_noise_then_the_card_and_no_console_text(run, name):
    assert run.rc_of(f"{name}.rc") == 0, run.text(f"{name}.err")
    a, b, fin = (
        shot(run, f"{name}-swapping"),
        shot(run, f"{name}-swapping2"),
        shot(run, f"{name}-finale"),
    )
    print(
        f"{name}: swapping std {a.std():.1f}, {np.any(a != b, axis=2).mean():.2f} of pixels moved"
    )
    assert a.std() > 20 and b.std() > 20
    assert np.any(a != b, axis=2).mean() > 0.2  # two shots 0.5 s apart differ
    ref = finale_alone(run.out / f"{name}.jsonl", fin.shape[:2])
    want, got = bright(ref), bright(fin)
    held = (got & grow(want, 6)).sum() / max(1, want.sum())
    extra = (got & ~grow(want, 6)).mean()
    print(f"{name}: finale holds {held:.2f} of the card's pixels, {extra:.4f} of the screen extra")
    assert held > 0.6, "the finale shot does not hold the card"
    assert extra < 0.003, "something else (console text?) is drawn on the finale"


@pytest.mark.parametrize("name", ["kms", "fb", "fb-q", "kms-term"])
def test_every_ending_gives_the_console_back_in_text_mode(run, name):
    assert run.text(f"{name}.vtmode").strip() == "0", f"{name}: the VT stayed in graphics mode"
    after = shot(run, f"{name}-after")
    # a text console: dark, with the prompt's glyphs, no noise
    assert after.mean() < 30 and after.std() < 60, f"{name}: not the text console afterwards"
    assert bright(after).sum() > 200, f"{name}: no text on the console afterwards"
    rc = run.rc_of(f"{name}.rc")
    assert rc == {"kms": 0, "fb": 0, "fb-q": 0, "kms-term": 130}[name], run.text(f"{name}.err")


def test_the_shell_prompt_is_back_on_the_console_at_the_end(run):
    prompt = shot(run, "prompt")
    assert prompt.mean() < 30 and prompt.std() < 60 and bright(prompt).sum() > 200


def test_the_sound_card_plays_the_rising_noise_the_cut_and_the_beep(run):
    with wave.open(str(run.out / "card.wav")) as w:
        rate, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, ch)
    x = x.astype(np.float64).mean(axis=1) / 32768
    assert len(x) > 5 * rate, "the card played less than 5 s"
    # the beep: the last stretch whose spectrum is one tone; find where it starts
    win = rate // 10
    blocks = [x[i : i + win] for i in range(0, len(x) - win, win)]
    rms = np.array([np.sqrt(np.mean(b**2)) for b in blocks])
    tonal = []
    for b in blocks:
        spec = np.abs(np.fft.rfft(b * np.hanning(len(b))))
        tonal.append(spec.max() / (spec.sum() + 1e-12))
    tonal = np.array(tonal)
    beep = [i for i in range(len(blocks)) if tonal[i] > 0.05 and rms[i] > 0.01]
    assert beep, "no tone in the card's output"
    end = beep[-1]
    start = end
    while start > 0 and (start - 1) in beep:
        start -= 1
    tone = x[start * win : (end + 1) * win]
    spec = np.abs(np.fft.rfft(tone * np.hanning(len(tone)), n=len(tone) * 8))
    peak = np.argmax(spec) * rate / (len(tone) * 8)
    # the last second of noise before the kill (the cut, then the beep) against calm
    noise = [i for i in range(start) if rms[i] > 1e-4]
    last = rms[max(0, noise[-1] - 9) : noise[-1] + 1] if noise else np.array([0.0])
    calm = rms[:10]
    print(f"card.wav: {len(x) / rate:.1f} s; beep at {peak:.1f} Hz; last second RMS"
          f" {last.mean():.4f} vs calm {calm.mean():.4f}")  # fmt: skip
    # The emulated HDA card and QEMU's resampling into the 44.1 kHz WAV are paced by
    # emulated timers; under TCG on a loaded machine the played rate drifts by a few tenths
    # of a percent (a CI run measured 996.9 Hz for the 1000 Hz beep; earlier runs were within 2 Hz). On the host's real PulseAudio
    # path the beep is held to 2 Hz (test_audio_real); here 1% still tells the beep from
    # every other sound Beep makes (the nearest, the throttle act's closing tone, is 392 Hz)
    assert abs(peak - 1000) <= 10, f"the beep peaks at {peak:.1f} Hz"
    assert last.mean() > calm.mean()


def test_look_raw_shows_kernel_bytes(run):
    assert run.rc_of("raw.rc") == 0, run.text("raw.err")
    a = shot(run, "raw-swapping")
    assert a.std() > 20
    hdr = json.loads(run.text("raw.jsonl").splitlines()[0])
    assert hdr.get("stage") == "rehearsal"
