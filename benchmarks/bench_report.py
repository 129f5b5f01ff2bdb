"""Report and replay figures.

- load + render of a one-hour 50 Hz recording (180,000 samples, made by the rehearsal
  model in a temp dir): target < 2 s; baseline: a plain json.loads of every line.
- replay timing error per published state at speed 1 over ~200 states: median and max,
  target < 5 ms; baseline: a plain time.sleep(delay) loop over the same states."""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from beep_av.model import MiB
from beep_av.recording import Recorder, load
from beep_av.report import render_report
from beep_av.stages.rehearsal import RehearsalModel, offline_states
from beep_av.stages.replay import ReplayDriver
from benchmarks.harness import Row

HOUR_SAMPLES = 180_000


def _hour_recording(path: str) -> int:
    """A rehearsal paced to last about an hour at 50 Hz; returns the sample count."""
    probe = RehearsalModel(192 * MiB, 128 * MiB, 48 * MiB, MiB, seed=1)
    rate = int(probe.bytes_to_effort(probe.h_kill) / (HOUR_SAMPLES / 50 - 10))  # kill at ~1 h
    model = RehearsalModel(192 * MiB, 128 * MiB, 48 * MiB, rate, seed=1)
    n = 0
    with Recorder(path, {"stage": "rehearsal", "kernel": "bench", "hz": 50}) as rec:
        for state in offline_states(model, calm=5.0, limit=HOUR_SAMPLES / 50):
            rec.write_state(state)
            n += 1
            if n >= HOUR_SAMPLES:
                break
    return n


def _report_rows(tmp: Path) -> list[Row]:
    src = str(tmp / "hour.jsonl")
    n = _hour_recording(src)
    t = time.perf_counter()
    lines = Path(src).read_bytes().splitlines()
    for line in lines:
        json.loads(line)
    base = time.perf_counter() - t

    times, loads = [], []
    for _ in range(3):
        t = time.perf_counter()
        rec = load(src)
        t_load = time.perf_counter() - t
        render_report(rec, str(tmp / "hour.png"))
        times.append(time.perf_counter() - t)
        loads.append(t_load)
    best = min(times)
    return [
        Row(
            f"report: load + render, {n} samples",
            best * 1e3,
            "ms",
            "< 2000 ms",
            best < 2.0,
            f"plain json.loads of the lines: {base * 1e3:.0f} ms",
        ),
        Row(
            "report: load alone (numpy fast path)",
            min(loads) * 1e3,
            "ms",
            "< json.loads",
            min(loads) < base,
            f"plain json.loads of the lines: {base * 1e3:.0f} ms",
        ),
    ]


def _replay_rows(tmp: Path, events: int = 200) -> list[Row]:
    src = str(tmp / "short.jsonl")
    model = RehearsalModel(192 * MiB, 128 * MiB, 48 * MiB, 48 * MiB, seed=1)  # > 200 states
    with Recorder(src, {"stage": "rehearsal"}) as rec:
        for i, state in enumerate(offline_states(model, calm=0.5)):
            if i >= events:
                break
            rec.write_state(state)
    recording = load(src)
    driver = ReplayDriver(recording, speed=1.0)

    errors: list[float] = []
    t0 = time.monotonic() + 0.05
    driver.run(lambda s: errors.append(abs(time.monotonic() - (t0 + s.t))), threading.Event(), t0)

    naive: list[float] = []
    t0 = time.monotonic() + 0.05
    for state in driver.states():
        delay = t0 + state.t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        naive.append(abs(time.monotonic() - (t0 + state.t)))

    med, worst = statistics.median(errors) * 1e3, max(errors) * 1e3
    base = f"plain time.sleep: median {statistics.median(naive) * 1e3:.3f}, max {max(naive) * 1e3:.3f} ms"
    return [
        Row(f"replay timing error, median of {len(errors)}", med, "ms", "< 5 ms", med < 5, base),
        Row(f"replay timing error, max of {len(errors)}", worst, "ms", "< 5 ms", worst < 5, base),
    ]


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="beep-bench-report-") as d:
        tmp = Path(d)
        return _report_rows(tmp) + _replay_rows(tmp)
