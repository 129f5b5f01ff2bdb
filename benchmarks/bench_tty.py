"""TTY outputs: the terminal frame build against a per-cell string-join baseline, and a
1080p XRGB framebuffer frame into a file mapping against the floor of copying raw noise
into the same mapping. Every figure is measured side by side with its baseline."""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from benchmarks.harness import Row, median, timeit

COLS, ROWS = 200, 60


def _terminal_rows() -> list[Row]:
    from beep_av.model import MiB, Phase, ShowState, Snapshot
    from beep_av.noise import Noise
    from beep_av.video.terminal import TerminalOutput

    class Captions:
        def get(self, lang: str, key: str) -> str:
            return "Memory is full, so the kernel drops cached file pages first."

    out = TerminalOutput(
        size=(COLS, ROWS), color="truecolor", keys=False, seed=1, captions=Captions()
    )
    snap = Snapshot(t=1, anon_bytes=300 * MiB, cache_bytes=50 * MiB, ram_limit=512 * MiB)
    state = ShowState(t=12.3, phase=Phase.SWAPPING, intensity=0.8, stall=0.3, snapshot=snap)
    fast = timeit(lambda: out.build(state), repeat=200)

    pixels = out.picture.render(state, Noise(1), COLS, 2 * (ROWS - 3))
    top, bot = pixels[0::2].tolist(), pixels[1::2].tolist()

    def per_cell() -> bytes:
        # the obvious way: an f-string per cell, joined
        lines = []
        for y, (trow, brow) in enumerate(zip(top, bot, strict=True)):
            cells = "".join(
                f"\033[38;2;{t[0]};{t[1]};{t[2]};48;2;{b[0]};{b[1]};{b[2]}m▀"
                for t, b in zip(trow, brow, strict=True)
            )
            lines.append(f"\033[{y + 1};1H{cells}")
        return "".join(lines).encode()

    slow = timeit(per_cell, repeat=20, warmup=2)
    encode_only = timeit(lambda: out._encoder.encode(pixels), repeat=200)
    m, b = median(fast), median(slow)
    return [
        Row(
            f"terminal frame {COLS}x{ROWS} truecolor (picture+encode+text)",
            m * 1e3,
            "ms",
            "<= 1.5 ms",
            m <= 1.5e-3,
        ),
        Row(
            "terminal frame speed-up vs per-cell f-string join",
            b / m,
            "x",
            ">= 5x per-cell join",
            b / m >= 5,
            f"per-cell join {b * 1e3:.1f} ms (encode only {median(encode_only) * 1e3:.2f} ms)",
        ),
    ]


def _framebuffer_rows() -> list[Row]:
    import pygame

    from beep_av.video.framebuffer import FbGeometry, surface_pixels, write_pixels

    g = FbGeometry(1920, 1080, 32, 1920 * 4)
    fd, path = tempfile.mkstemp(prefix="beep-bench-fb-")
    try:
        os.ftruncate(fd, g.nbytes)  # our own scratch file, not a device
        mm = mmap.mmap(fd, g.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        dest = np.frombuffer(mm, dtype=np.uint8)
        rng = np.random.Generator(np.random.PCG64(1))
        raw = rng.bit_generator.random_raw(g.nbytes // 8).view(np.uint8)
        surface = pygame.Surface((g.width, g.height), 0, 32, (0xFF0000, 0xFF00, 0xFF, 0))
        surface_pixels(surface)[:] = raw.view(np.uint32).reshape(g.height, g.width)

        def floor() -> None:
            dest[:] = raw  # raw noise straight into the mapping: `cat /dev/random > /dev/fb0`

        def frame() -> None:
            write_pixels(surface_pixels(surface), g, mm)

        f_floor = timeit(floor, repeat=60)
        f_frame = timeit(frame, repeat=60)
        g16 = FbGeometry(1920, 1080, 16, 1920 * 2)
        f16 = timeit(lambda: write_pixels(surface_pixels(surface), g16, mm), repeat=30)
        rows = []
        ratio = median(f_floor) / median(f_frame)
        rows.append(
            Row(
                "framebuffer 1920x1080x32 frame into a file mapping",
                ratio,
                "x",
                ">= 0.5x raw-noise copy",
                ratio >= 0.5,
                f"frame {median(f_frame) * 1e3:.2f} ms, floor {median(f_floor) * 1e3:.2f} ms; "
                f"16 bpp {median(f16) * 1e3:.2f} ms",
            )
        )
        try:
            from beep_av.model import Phase, ShowState
            from beep_av.noise import Noise
            from beep_av.video.scene import Scene

            scene, noise = Scene((g.width, g.height), None, "en"), Noise(1)
            state = ShowState(t=3, phase=Phase.SWAPPING, intensity=0.8, stall=0.3)

            def full() -> None:
                scene.draw(state, noise, surface)
                write_pixels(surface_pixels(surface), g, mm)

            f_full = timeit(full, repeat=30)
            rows.append(
                Row(
                    "framebuffer 1080p frame with the Scene (info)",
                    median(f_full) * 1e3,
                    "ms",
                    "info: <= 33 ms (30 fps)",
                    median(f_full) <= 0.033,
                    f"floor {median(f_floor) * 1e3:.2f} ms",
                )
            )
        except ImportError:
            pass
        dest = None  # the mapping cannot close while a view exports it
        mm.close()
        return rows
    finally:
        os.close(fd)
        os.unlink(path)


def run() -> list[Row]:
    return _terminal_rows() + _framebuffer_rows()
