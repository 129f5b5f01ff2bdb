"""The picture's speed, headless (SDL dummy driver), pinned to one core.

- whole frame (static, tearing, gauges, captions, upload into the surface) at 1080p
  against a naive pipeline (full-resolution float blend + surfarray.blit_array, same HUD);
- at 360p, 720p, 1080p against the floor: copying raw noise words into the surface;
- under Xvfb (when installed): a flip with SDL_FRAMEBUFFER_ACCELERATION=0 against SDL's
  default (software GL), each in its own process (the hint is read at display init)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import pygame  # noqa: E402

from beep_av.model import MiB, Phase, ShowState, Snapshot  # noqa: E402
from beep_av.noise import Noise  # noqa: E402
from beep_av.video.captions import Captions  # noqa: E402
from beep_av.video.scene import LOOKS, Scene  # noqa: E402
from benchmarks.harness import Row, median, timeit  # noqa: E402

SIZES = ((640, 360), (1280, 720), (1920, 1080))
FRAMES = 120  # one state per frame, as a show at 60 fps would hand them over


def show_states(n: int = FRAMES) -> list[ShowState]:
    """Two seconds of a show under pressure: phases and figures change every frame, so
    text that depends on them is re-rendered as it would be live."""
    phases = (Phase.FILLING, Phase.EVICTING, Phase.SWAPPING)
    out = []
    for i in range(n):
        t = 20 + i / 60
        phase = phases[(i // 40) % 3]
        snap = Snapshot(
            t=t,
            anon_bytes=(200 + i) * MiB,
            cache_bytes=max(0, 60 - i) * MiB,
            swap_bytes=i * MiB,
            ram_limit=512 * MiB,
            swap_limit=512 * MiB,
            psi_full_us=i * 4000,
        )
        out.append(
            ShowState(
                t=t,
                phase=phase,
                intensity=0.3 + 0.6 * (i % 40) / 40,
                stall=0.1 + 0.4 * (i % 7) / 7,
                fill_rate=64 * MiB,
                snapshot=snap,
            )
        )
    return out


def bench_scene(size: tuple[int, int], states: list[ShowState]) -> list[float]:
    scene = Scene(size, Captions.load())
    surface = pygame.Surface(size)
    noise = Noise(seed=1)
    it = iter(range(10**9))

    def one() -> None:
        scene.draw(states[next(it) % len(states)], noise, surface)

    return timeit(one, repeat=FRAMES, warmup=20)


def bench_naive(size: tuple[int, int], states: list[ShowState]) -> list[float]:
    """What one writes first: float noise at full resolution, a float blend per channel,
    then surfarray.blit_array; the same HUD on top."""
    scene = Scene(size, Captions.load())
    surface = pygame.Surface(size)
    noise = Noise(seed=1)
    w, h = size
    it = iter(range(10**9))

    def one() -> None:
        s = states[next(it) % len(states)]
        look = LOOKS[s.phase]
        x = (noise.uniform(w * h).reshape(w, h) + 1) * np.float32(0.5)
        density = np.float32(0.12 + 0.8 * s.intensity)
        peak = np.float32(look.gain * (0.35 + 0.65 * s.intensity))
        level = np.clip(peak * (1 - x / density), 0, 1)
        dark = np.array(look.dark, dtype=np.float32)
        bright = np.array(look.bright, dtype=np.float32)
        rgb = dark + (bright - dark) * level[..., None]
        pygame.surfarray.blit_array(surface, rgb.astype(np.uint8))
        scene._draw_hud(s, surface)

    return timeit(one, repeat=30, warmup=3)


def bench_floor(size: tuple[int, int]) -> list[float]:
    """The floor: raw noise words copied into the surface, nothing else."""
    surface = pygame.Surface(size)
    noise = Noise(seed=1)
    w, h = size

    def one() -> None:
        proxy = surface.get_buffer()
        view = np.frombuffer(proxy, dtype=np.uint32).reshape(h, -1)[:, :w]
        view[...] = noise.u32(w * h).reshape(h, w)
        del view, proxy

    return timeit(one, repeat=FRAMES, warmup=20)


FLIP = textwrap.dedent(
    """
    import time, pygame
    pygame.display.init()
    screen = pygame.display.set_mode((1920, 1080))
    ts = []
    for i in range(80):
        screen.fill((i * 3 % 256, 0, 0))
        t0 = time.perf_counter()
        pygame.display.flip()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    print(ts[len(ts) // 2] * 1000)
    """
)


def bench_flip() -> list[Row]:
    """Xvfb: the X shared-memory path (hint 0) against SDL's default software-GL path."""
    if shutil.which("Xvfb") is None:
        return [Row("x11 flip 1080p (Xvfb missing)", float("nan"), "ms", "measured", False)]
    from tests.fx_xvfb import start_xvfb

    server = start_xvfb("1920x1080x24")
    try:
        got = {}
        for hint in ("default", "0"):
            env = server.env
            env.pop("SDL_FRAMEBUFFER_ACCELERATION", None)
            env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
            if hint != "default":
                env["SDL_FRAMEBUFFER_ACCELERATION"] = hint
            r = subprocess.run(
                [sys.executable, "-c", FLIP], env=env, capture_output=True, text=True, timeout=120
            )
            got[hint] = (
                float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")
            )
    finally:
        server.stop()
    fast, slow = got["0"], got["default"]
    return [
        Row(
            "x11 flip 1080p, SDL_FRAMEBUFFER_ACCELERATION=0",
            fast,
            "ms",
            "< default (window.py sets it)",
            fast < slow,
            f"default {slow:.2f} ms",
        )
    ]


def run() -> list[Row]:
    pygame.display.init()
    pygame.font.init()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # one core, as the target says
    try:
        states = show_states()
        rows: list[Row] = []
        for size in SIZES:
            ours = median(bench_scene(size, states))
            floor = median(bench_floor(size))
            label = f"{size[0]}x{size[1]}"
            if size == (1920, 1080):
                naive = median(bench_naive(size, states))
                rows.append(Row(f"whole frame {label}", ours * 1e3, "ms", "<= 8 ms", ours <= 0.008))
                rows.append(
                    Row(
                        f"whole frame {label} vs naive",
                        naive / ours,
                        "x",
                        ">= 4x naive",
                        naive / ours >= 4,
                        f"naive float blend + blit_array {naive * 1e3:.2f} ms",
                    )
                )
            rows.append(
                Row(
                    f"whole frame {label} vs raw-noise floor",
                    floor / ours,
                    "x",
                    ">= 0.5x floor",
                    floor / ours >= 0.5,
                    f"ours {ours * 1e3:.2f} ms, floor {floor * 1e3:.2f} ms",
                )
            )
        rows.extend(bench_flip())
        return rows
    finally:
        os.sched_setaffinity(0, cpus)
