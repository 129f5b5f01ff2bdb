"""Issue 24 on a real show recorded here (a cgroup stage, the kernel's own OOM kill):
its MP4, WebM and GIF read back with Debian's ffprobe and ffmpeg."""

from __future__ import annotations

import numpy as np
import pygame
import pytest

from beep_av.model import Phase
from beep_av.recording import load
from beep_av.render import job_for
from beep_av.video.captions import Captions
from beep_av.video.scene import Scene
from tests.conftest import beep
from tests.fx_video import duration, frames, need_ffmpeg, peak_hz, probe, sound
from tests.test_real_replay_report import real_recording  # noqa: F401 - a fixture

pytestmark = [pytest.mark.real, pytest.mark.slow]

SIZE = (640, 360)
FPS = 30


@pytest.fixture(scope="module")
def mp4(real_recording, tmp_path_factory):  # noqa: F811 - the fixture above
    need_ffmpeg()
    out = tmp_path_factory.mktemp("render") / "show.mp4"
    r = beep("render", str(real_recording), "-o", str(out), "--size", "640x360", timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_the_mp4_has_a_picture_and_a_sound_as_long_as_the_show(real_recording, mp4):  # noqa: F811
    info = probe(mp4)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in info["streams"])
    assert kinds == [("audio", "aac"), ("video", "h264")]
    rec = load(str(real_recording))
    assert abs(duration(mp4) - rec.duration) <= 1 / FPS + 1e-3


def test_the_swapping_frames_are_noise_that_moves(real_recording, mp4):  # noqa: F811
    rec = load(str(real_recording))
    times = dict(rec.phases())
    a, b = times[Phase.SWAPPING], times[Phase.OOM]
    assert b - a > 0.3, times
    video = frames(mp4, SIZE)
    idx = [i for i in range(len(video)) if a + 0.05 <= i / FPS < b - 0.05][:6]
    assert len(idx) >= 3
    picture = [video[i][: int(SIZE[1] * 0.75)].astype(float) for i in idx]  # above the HUD
    assert all(p.std() > 20 for p in picture)
    assert all(np.abs(p - q).mean() > 5 for p, q in zip(picture, picture[1:], strict=False))


def test_the_finale_frame_shows_the_card(real_recording, mp4):  # noqa: F811
    rec = load(str(real_recording))
    video = frames(mp4, SIZE)
    job = job_for(rec, str(mp4), name=str(real_recording), size=SIZE, fps=FPS)
    last = list(job.states())[-1]
    assert last.phase is Phase.FINALE
    pygame.font.init()
    scene = Scene(SIZE, Captions.load(), "en")
    alone = pygame.Surface(SIZE, depth=32)
    area = scene.draw_card(last, alone)  # where the card is, drawn on its own
    frame = video[-1].astype(float)
    inside = frame[area.top : area.bottom, area.left : area.right]
    assert inside.max() > 200 and inside.mean() > 15  # the big word and its lines
    assert frame[: max(1, area.top - 4)].mean() < 6  # black above it
    card = pygame.surfarray.array3d(alone).swapaxes(0, 1)[
        area.top : area.bottom, area.left : area.right
    ]
    lit = card.max(axis=2) > 128
    assert (inside.max(axis=2)[lit] > 100).mean() > 0.9  # its pixels are where the card's are


def test_the_beep_sounds_at_the_recorded_time_at_its_frequency(real_recording, mp4):  # noqa: F811
    rec = load(str(real_recording))
    b = rec.events_of("beep")[0]
    x = sound(mp4)
    rate = 48000
    start = b["t"] + 0.05
    seg = x[int(start * rate) : int((b["t"] + b["length_ms"] / 1000 - 0.05) * rate)]
    assert len(seg) > rate // 10
    assert abs(peak_hz(seg, rate) - b["freq"]) < 3.0
    before = x[int((b["t"] - 0.3) * rate) : int((b["t"] - 0.05) * rate)]
    assert abs(peak_hz(before, rate) - b["freq"]) > 20 or np.abs(before).max() < 0.01


@pytest.mark.parametrize("ext, fps", [(".webm", 30), (".gif", 10)])
def test_webm_and_gif_of_the_same_show_open_and_last_as_long(real_recording, ext, fps, tmp_path):  # noqa: F811
    need_ffmpeg()
    out = tmp_path / f"show{ext}"
    r = beep("render", str(real_recording), "-o", str(out), "--size", "480x270", timeout=300)
    assert r.returncode == 0, r.stderr
    info = probe(out)
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == (["audio", "video"] if ext == ".webm" else ["video"])
    rec = load(str(real_recording))
    assert abs(duration(out) - rec.duration) <= 1 / fps + 0.01
    video = frames(out, (480, 270))
    assert abs(len(video) - rec.duration * fps) <= 1
