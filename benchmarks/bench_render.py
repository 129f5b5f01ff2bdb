"""`beep-av render` figures (issue 24).

- MP4 render speed as a ratio of real time, at 1280x720 and 1920x1080, 30 fps, on the
  shipped example show: target >= 2x at 720p. Baseline, in the same run: drawing the
  same frames alone (no encoding), as a ratio of real time.
- The GIF of a one-minute show at 480x270 (a rehearsal paced to end at ~1 min, made by
  the model in a temp dir): target < 10 MiB."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from beep_av.model import MiB
from beep_av.recording import Recorder, load
from beep_av.render import Painter, job_for, render
from beep_av.resources import example_recording
from beep_av.stages.rehearsal import RehearsalModel, offline_states
from benchmarks.harness import Row


def _speed(rec, out: Path, size: tuple[int, int]) -> tuple[float, float]:
    """(render, drawing alone) as ratios of real time."""
    job = job_for(rec, str(out), name="example", size=size, fps=30)
    seconds = job.frames / job.fps
    painter = Painter(job)
    t = time.perf_counter()
    for i in range(job.frames):
        painter.frame(i)
    draw = seconds / (time.perf_counter() - t)
    result = render(job)
    return seconds / result.wall, draw


def _minute_recording(path: str) -> float:
    """A rehearsal paced so the kill comes at about a minute; returns its duration."""
    probe = RehearsalModel(192 * MiB, 128 * MiB, 48 * MiB, MiB, seed=1)
    rate = int(probe.bytes_to_effort(probe.h_kill) / 57)
    model = RehearsalModel(192 * MiB, 128 * MiB, 48 * MiB, rate, seed=1)
    with Recorder(path, {"stage": "rehearsal", "kernel": "bench", "hz": 50}) as rec:
        for state in offline_states(model, calm=3.0, limit=66.0):
            rec.write_state(state)
    return load(path).duration


def run() -> list[Row]:
    rows = []
    rec = load(str(example_recording()))
    with tempfile.TemporaryDirectory(prefix="beep-bench-render-") as d:
        tmp = Path(d)
        for size, target in (((1280, 720), 2.0), ((1920, 1080), 0.0)):
            speed, draw = _speed(rec, tmp / "x.mp4", size)
            name = f"render MP4 {size[0]}x{size[1]} 30 fps, x real time"
            rows.append(
                Row(
                    name,
                    speed,
                    "x",
                    f">= {target:g}x" if target else "(measured)",
                    speed >= target,
                    f"drawing alone {draw:.1f}x",
                )
            )
        src = str(tmp / "minute.jsonl")
        seconds = _minute_recording(src)
        minute = load(src)
        job = job_for(minute, str(tmp / "m.gif"), name="minute")
        result = render(job)
        mib = result.bytes / (1 << 20)
        rows.append(
            Row(
                f"GIF of a {seconds:.0f} s show at 480x270 10 fps",
                mib,
                "MiB",
                "< 10 MiB",
                mib < 10,
                f"{result.bytes / max(1, result.frames) / 1024:.0f} KiB a frame",
            )
        )
    return rows
