"""`beep-av render` (issue 24): bad input, determinism, every kind of recording, the
terminal style, Ctrl-C. Videos are read back with Debian's ffmpeg, not with PyAV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from beep_av.audio.synth import OfflineSound
from beep_av.recording import Recorder, load
from beep_av.render import Painter, job_for
from beep_av.resources import example_recording
from tests.conftest import ROOT, beep
from tests.fx_video import duration, envelope, frames, need_ffmpeg, sound

EXAMPLE = str(example_recording())
FIXTURES = ROOT / "tests" / "fixtures" / "recordings"
SMALL = ("--size", "320x180", "--fps", "10")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, words",
    [
        (["-o", "{d}/x.avi"], ".avi is not a format"),
        (["-o", "{d}/x"], "the name says the format"),
        (["-o", "{d}/nodir/x.mp4"], "does not exist"),
        (["-o", "{d}/x.mp4", "--size", "321x180"], "even sides"),
        (["-o", "{d}/x.mp4", "--size", "big"], "not a video size"),
        (["-o", "{d}/x.mp4", "--size", "100x50"], "outside"),
        (["-o", "{d}/x.mp4", "--fps", "0"], "--fps"),
        (["-o", "{d}/x.mp4", "--style", "tty"], "--style"),
        (["-o", "{d}/x.mp4", "--look", "pretty"], "--look"),
        (["-o", "{d}/x.mp4", "--captions", "de"], "--captions"),
    ],
)
def test_bad_input_exits_2_in_one_line_and_writes_nothing(args, words, tmp_path):
    r = beep("render", "example", *[a.format(d=tmp_path) for a in args])
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content", [b"", b"junk\n", b'{"type":"header","format":"beep-av/9"}\n', b"\0\1\2"]
)
def test_a_file_that_is_not_a_recording_exits_2_and_writes_nothing(content, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    r = beep("render", str(bad), "-o", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_a_target_that_exists_is_replaced_only_when_the_new_one_is_whole(tmp_path):
    out = tmp_path / "x.gif"
    out.write_bytes(b"old")
    r = beep("render", "example", "-o", str(out), "--fps", "0")
    assert r.returncode == 2 and out.read_bytes() == b"old"
    r = beep("render", "example", "-o", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:6] == b"GIF89a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gif"]  # no temporary left


# ---------------------------------------------------------------- real decodes


@pytest.mark.real
@pytest.mark.slow
def test_the_same_seed_gives_the_same_video_and_another_seed_another(tmp_path):
    need_ffmpeg()
    outs = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / f"{name}.mp4"
        r = beep("render", "example", "-o", str(out), *SMALL, "--seed", seed, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append((frames(out, (320, 180)), sound(out)))
    (fa, sa), (fb, sb), (fc, sc) = outs
    assert fa.shape[0] == round(load(EXAMPLE).duration * 10)
    assert np.array_equal(fa, fb) and np.array_equal(sa, sb)
    assert not np.array_equal(fa, fc) and not np.array_equal(sa, sc)


@pytest.mark.real
@pytest.mark.slow
def test_a_truncated_last_line_is_a_recording_that_renders(tmp_path):
    need_ffmpeg()
    text = open(EXAMPLE, "rb").read().rstrip(b"\n")
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(text[: text.rindex(b"\n") + 15])  # the `end` line cut short
    rec = load(str(cut))
    out = tmp_path / "cut.mp4"
    r = beep("render", str(cut), "-o", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    assert abs(duration(out) - rec.duration) <= 0.1 + 0.03


def _watch_recording(path) -> None:
    """A watch's recording with two kills, written by the real Recorder."""
    from beep_av.model import KillRecord, Phase, ShowState

    ka = KillRecord(7, "a", None, 9, 1, "k7", 100, ("oom_kill", "kmsg"), 1.0, 0.5)
    kb = KillRecord(8, "b", None, 9, 2, "k8", 200, ("oom_kill", "kmsg"), 1.0, 2.0)
    rec = Recorder(str(path), {"stage": "watch", "watch": "host"}, every_kill=True)
    entered = ((Phase.CALM, 0.0),)
    for k in range(61):
        t = k * 0.05
        phase, kill = Phase.CALM, None
        if 0.5 <= t < 1.5:
            phase, kill = (Phase.OOM if t < 0.55 else Phase.FINALE), ka
        elif t >= 2.0:
            phase, kill = (Phase.OOM if t < 2.05 else Phase.FINALE), kb
        if phase is not entered[-1][0]:
            entered = (*entered, (phase, t))
        oom_t = kill.t if kill else None
        rec.write_state(ShowState(t=t, phase=phase, kill=kill, entered=entered, oom_t=oom_t,
                                  intensity=0.4, stage="watch"))  # fmt: skip
    rec.beep(0.51, freq=880.0, length_ms=400.0, repeats=1)
    rec.close()


def _recordings(tmp_path):
    """(name, path) of every kind of recording: the story, every act, two kills, a
    watch, a replay's own recording."""
    yield "example", EXAMPLE
    for f in sorted(FIXTURES.glob("*.jsonl")):
        yield f.stem, str(f)
    w = tmp_path / "watch.jsonl"
    _watch_recording(w)
    yield "watch", str(w)
    again = tmp_path / "replayed.jsonl"
    r = beep("replay", "example", "--speed", "8", "--output", "headless", "--audio", "off",
             "--record", str(again))  # fmt: skip
    assert r.returncode == 0, r.stderr
    yield "replayed", str(again)
    for act, extra in (("freeze", ["--ram", "128M"]), ("high", ["--ram", "256M"])):
        p = tmp_path / f"{act}.jsonl"
        r = beep("rehearse", "--act", act, *extra, "--calm", "0.3", "--seed", "1",
                 "--output", "headless", "--audio", "off", "--record", str(p), timeout=240)  # fmt: skip
        assert r.returncode == 0, r.stderr
        yield act, str(p)


@pytest.mark.real
@pytest.mark.slow
def test_every_kind_of_recording_renders_its_picture_and_its_sound(tmp_path):
    """Each recording's MP4: as long as the recording (one frame), its last frame the
    scene's own drawing of the last state, and its sound the live synth's (the RMS
    envelope of the decoded AAC follows the synth's own block by block)."""
    need_ffmpeg()
    seen = []
    for name, path in _recordings(tmp_path):
        out = tmp_path / f"{name}.mp4"
        r = beep("render", path, "-o", str(out), *SMALL, timeout=300)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        rec = load(path)
        assert abs(duration(out) - rec.duration) <= 0.1 + 0.03, name  # one frame (+ AAC's block)
        job = job_for(rec, str(out), name=path, size=(320, 180), fps=10)
        painter = Painter(job)
        mine = [painter.frame(i) for i in range(job.frames)][-1][..., 2::-1]
        theirs = frames(out, (320, 180))[-1]
        mse = np.mean((mine.astype(float) - theirs) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 24, name
        synth = OfflineSound([(s.t, s) for s in job.states()], beep=job.beep, seed=1)
        want = synth.take(round(job.frames / 10 * 48000)).mean(axis=1)
        got = sound(out)[: len(want)]
        a, b = envelope(want, 48000), envelope(got, 48000)
        n = min(len(a), len(b))
        if a[:n].std() > 1e-4:
            assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9, name
        else:
            assert b[:n].max() < 0.01, name
        seen.append(name)
    assert len(seen) >= 9, seen


@pytest.mark.real
@pytest.mark.slow
def test_the_terminal_style_draws_the_terminals_cells_with_the_card(tmp_path):
    need_ffmpeg()
    out = tmp_path / "tty.mp4"
    r = beep("render", "example", "-o", str(out), "--size", "640x360", "--fps", "10",
             "--style", "terminal")  # fmt: skip
    assert r.returncode == 0, r.stderr
    video = frames(out, (640, 360))
    last = video[-1].astype(int)
    red = (last[..., 0] > 150) & (last[..., 1] < 60) & (last[..., 2] < 60)
    assert red.mean() > 0.03  # the card's red box (SGR 41)
    rec = load(EXAMPLE)
    swap_t = next(t for p, t in rec.phases() if p.value == "swapping")
    pic = video[int(swap_t * 10) + 2][: 360 - 3 * 16 - 8]  # the picture rows
    assert pic.std() > 20


@pytest.mark.real
@pytest.mark.slow
def test_ctrl_c_stops_the_render_and_leaves_no_file(tmp_path):
    out = tmp_path / "big.webm"
    env = dict(os.environ, SDL_VIDEODRIVER="dummy")
    proc = subprocess.Popen(
        [sys.executable, "-m", "beep_av", "render", "example", "-o", str(out), "--size",
         "1920x1080"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    first = proc.stderr.readline()
    assert first.startswith("render: 1/"), first  # the progress line
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "interrupted" in rest
    assert list(tmp_path.iterdir()) == []


def test_the_progress_line_and_the_last_line(tmp_path):
    out = tmp_path / "x.gif"
    r = beep("render", "example", "-o", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("render: 1/72 frames")
    assert lines[-1].startswith(f"render: wrote {out} (320x180, 10 fps, 7.2 s")
    assert "x real time" in lines[-1]


def test_the_header_of_a_render_job_comes_from_the_recording():
    rec = load(EXAMPLE)
    job = job_for(rec, "x.webm", name="example")
    head = json.loads(open(EXAMPLE).readline())
    assert (job.size, job.fps) == ((1280, 720), 30)
    assert job.beep.freq == head["beep_freq"] and job.beep.length_ms == head["beep_length_ms"]
    assert job.frames == round(rec.duration * 30)
    assert job_for(rec, "x.gif", name="example").size == (480, 270)


@pytest.mark.real
@pytest.mark.slow
def test_the_readme_opens_with_the_example_gif_as_make_gif_renders_it(tmp_path):
    need_ffmpeg()
    readme = (ROOT / "README.md").read_text()
    first = next(line for line in readme.splitlines()[1:] if line.strip())
    assert first.startswith("![") and "(docs/example.gif)" in readme.split("\n\n")[1]
    gif = ROOT / "docs" / "example.gif"
    assert gif.stat().st_size < 2 << 20
    fresh = tmp_path / "example.gif"
    r = beep("render", "example", "-o", str(fresh))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(frames(gif, (480, 270)), frames(fresh, (480, 270))), "run `make gif`"
