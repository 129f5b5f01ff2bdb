"""Reading videos back with a decoder that is not ours: Debian's ffprobe and ffmpeg
(installed by scripts/setup.sh for the tests; PyAV's own FFmpeg is not used here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.conftest import require


def need_ffmpeg() -> None:
    require(
        bool(shutil.which("ffprobe") and shutil.which("ffmpeg")),
        "needs Debian's ffmpeg (ffprobe, ffmpeg): scripts/setup.sh --test installs it",
    )


def probe(path: Path) -> dict:
    """ffprobe's streams and format of `path` as JSON."""
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def duration(path: Path) -> float:
    return float(probe(path)["format"]["duration"])


def frames(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Every decoded frame, (n, h, w, 3) RGB."""
    w, h = size
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return np.frombuffer(r.stdout, dtype=np.uint8).reshape(-1, h, w, 3)


def sound(path: Path, rate: int = 48000) -> np.ndarray:
    """The decoded audio, mono (the channels' mean) float32 at `rate`."""
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-f", "f32le", "-ac", "2", "-ar",
         str(rate), "-"],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return np.frombuffer(r.stdout, dtype=np.float32).reshape(-1, 2).mean(axis=1)


def peak_hz(x: np.ndarray, rate: int) -> float:
    """The frequency of the strongest component of `x` (Hann window, zero-padded 8x,
    parabolic peak interpolation)."""
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return (k + shift) * rate / (8 * n)


def envelope(x: np.ndarray, rate: int, window_s: float = 0.05) -> np.ndarray:
    """RMS over consecutive windows."""
    win = max(1, int(rate * window_s))
    n = len(x) // win
    return np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
