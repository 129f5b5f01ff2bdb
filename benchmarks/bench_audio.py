"""Audio figures: the cost of rendering one 512-frame stereo block against its 10.7 ms
budget (baseline: a plain sine block, same run), and the kill-to-beep latency of a
scripted show (from the oom state's publication to the beep's first sample handed to
the device; the clock driver stands in when there is no device)."""

from __future__ import annotations

import math
import os
import time

import numpy as np

from beep_av.audio.output import AudioOut, open_audio
from beep_av.audio.synth import BLOCK, RATE, BeepSpec, Synth
from beep_av.model import Phase, ShowState
from beep_av.noise import Noise
from benchmarks.harness import Row, median, p99

BUDGET = BLOCK / RATE  # s of sound in one block


WARMUP_S = 0.5  # of both, before timing: a cold vCPU here runs the first ~0.1 s slow


def _interleaved(fn, base, repeat: int = 3000, warmup_s: float = WARMUP_S) -> tuple[list, list]:
    """Time `fn` and `base` alternately, so a busy neighbour on this shared machine
    hits both figures alike. Warmed up for `warmup_s` first: with 50 calls of warm-up
    the first row of a run came out ~2x the same row measured again a second later
    (the sine baseline too), which said more about the run's order than the render."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        fn()
        base()
    xs, bs = [0.0] * repeat, [0.0] * repeat
    # an audio callback deserves the CPU when its block is due; a round-robin process
    # on 2 shared cores loses ~4 ms timeslices to neighbours instead, which says nothing
    # about the render. SCHED_FIFO for the ~0.3 s of timing (kernel RT throttling still
    # leaves others 5%), then back; without the privilege, measure as we are.
    old = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        pass
    try:
        for i in range(repeat):
            t0 = time.perf_counter()
            base()
            t1 = time.perf_counter()
            fn()
            t2 = time.perf_counter()
            bs[i] = t1 - t0
            xs[i] = t2 - t1
    finally:
        os.sched_setscheduler(0, old[0], old[1])
    return xs, bs


def _render_rows() -> list[Row]:
    out = np.empty((BLOCK, 2), np.float32)
    # baseline: the cheapest useful block, a sine written in place
    phase = np.arange(BLOCK, dtype=np.float64) * (2 * math.pi * 880 / RATE)
    tmp = np.empty(BLOCK, np.float64)
    base_out = np.empty((BLOCK, 2), np.float32)

    def sine() -> None:
        np.sin(phase, out=tmp)
        base_out[:, 0] = tmp
        base_out[:, 1] = tmp

    rows = []
    # a live show publishes a new state every ~2 blocks (50 Hz samples, 94 blocks/s),
    # so the gain ramps: two states a little apart, taking turns every other block
    states = {
        "calm": (
            ShowState(phase=Phase.CALM, intensity=0.10),
            ShowState(phase=Phase.CALM, intensity=0.11),
        ),
        "swapping": (
            ShowState(phase=Phase.SWAPPING, intensity=0.90, stall=0.70),
            ShowState(phase=Phase.SWAPPING, intensity=0.91, stall=0.71),
        ),
        "beep": (ShowState(phase=Phase.OOM), ShowState(phase=Phase.OOM)),
    }
    for name, pair in states.items():
        synth = Synth(beep=BeepSpec(length_ms=1e6))  # a beep that lasts the whole run
        noise = Noise(seed=1, fed=True)  # as live: the callback's own kind of noise
        k = [0]

        def block(s=synth, pair=pair, n=noise, k=k) -> None:
            k[0] += 1
            s.render(pair[(k[0] >> 1) & 1], out, n, 0.0)

        xs, base = _interleaved(block, sine)
        med, tail = median(xs) / BUDGET * 100, p99(xs) / BUDGET * 100
        bm = f"sine block {median(base) * 1e6:.1f} us median ({median(xs) / median(base):.1f}x)"
        bp = f"sine block {p99(base) * 1e6:.1f} us p99 ({p99(xs) / p99(base):.1f}x)"
        rows.append(
            Row(f"render 512 frames, {name}: median", med, "%", "<= 1% of 10.7 ms", med <= 1.0, bm)
        )
        rows.append(
            Row(f"render 512 frames, {name}: p99", tail, "%", "<= 5% of 10.7 ms", tail <= 5.0, bp)
        )
    # the whole function PortAudio calls (state read, render, WAV ring check), less
    # sounddevice's own wrapper
    pair = states["swapping"]
    k = [0]

    def state() -> ShowState:
        k[0] += 1
        return pair[(k[0] >> 1) & 1]

    audio = AudioOut(
        Synth(beep=BeepSpec(length_ms=1e6)),
        Noise(seed=1, fed=True),
        state,
        time.monotonic(),
        device="bench",
        stream_factory=lambda cb: None,  # never started: the bench is the audio thread
    )
    xs, base = _interleaved(lambda: audio.callback(out, BLOCK, None, None), sine)
    med = median(xs) / BUDGET * 100
    rows.append(
        Row(
            "callback 512 frames, swapping: median",
            med,
            "%",
            "<= 1% of 10.7 ms",
            med <= 1.0,
            f"sine block {median(base) * 1e6:.1f} us median ({median(xs) / median(base):.1f}x)",
        )
    )
    return rows


def _latency_row(runs: int = 5) -> Row:
    lat = []
    device = ""
    for k in range(runs):
        t0 = time.monotonic()
        current = [ShowState(phase=Phase.SWAPPING, intensity=0.8, stall=0.4)]
        audio = open_audio(
            "auto", lambda c=current: c[0], t0, BeepSpec(length_ms=50.0), seed=k, say=lambda s: None
        )
        device = audio.device
        audio.start()
        # publish the kill at a random point of a block period
        time.sleep(0.3 + (k * 0.0037) % BUDGET)
        current[0] = ShowState(phase=Phase.OOM)
        published = time.monotonic() - t0
        deadline = time.monotonic() + 5
        while not audio.finished and time.monotonic() < deadline:
            time.sleep(0.005)
        report = audio.close()
        if report.beep_t is not None:
            lat.append(report.beep_t - published)
        else:
            lat.append(float("inf"))
    worst = max(lat) * 1000
    limit = (BUDGET + 0.005) * 1000
    return Row(
        "kill to beep (worst of 5)",
        worst,
        "ms",
        f"<= {limit:.1f} ms (block + 5)",
        worst <= limit,
        f"device {device}; median {median(lat) * 1000:.1f} ms; block {BUDGET * 1000:.1f} ms",
    )


def run() -> list[Row]:
    return [*_render_rows(), _latency_row()]
