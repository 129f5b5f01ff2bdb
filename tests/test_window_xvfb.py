"""A real window on a real X server (Xvfb), checked from outside with ImageMagick's
`import -window root`: noise while the show runs, the card at the finale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pygame
import pytest

from beep_av.model import KillRecord, MiB, Phase, ShowState, Snapshot
from beep_av.noise import Noise
from beep_av.video.window import ACCEL_HINT, WindowOutput
from tests.conftest import ROOT, beep, require

IMPORT = "/usr/bin/import"  # Debian's ImageMagick (not /usr/local/bin's stand-in)

pytestmark = pytest.mark.real

KILL = KillRecord(4242, "python", 137, 9, 1, None, 511856, ("exit", "oom_kill", "kmsg"), 1.4, 2.0)


def screenshot_start(display: str, path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [IMPORT, "-display", display, "-window", "root", f"png:{path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def load(path: Path) -> np.ndarray:
    return pygame.surfarray.array3d(pygame.image.load(str(path))).astype(np.int16)


def scripted(t: float) -> ShowState:
    """calm (0-0.6 s) -> swapping (0.6-1.6 s) -> finale (1.6 s on)."""
    snap = Snapshot(
        t=t,
        anon_bytes=int(300 * MiB * min(1, t)),
        cache_bytes=40 * MiB,
        ram_limit=512 * MiB,
        swap_limit=512 * MiB,
        swap_bytes=int(100 * MiB * t),
    )
    if t < 0.6:
        return ShowState(t=t, phase=Phase.CALM, intensity=0.05, snapshot=snap)
    if t < 1.6:
        return ShowState(t=t, phase=Phase.SWAPPING, intensity=0.9, stall=0.5, snapshot=snap)
    return ShowState(t=t, phase=Phase.FINALE, intensity=1.0, snapshot=snap, kill=KILL, oom_t=1.6)


def test_window_under_xvfb_shows_noise_then_the_card(xvfb, monkeypatch, tmp_path: Path) -> None:
    require(os.access(IMPORT, os.X_OK), f"{IMPORT} missing (apt-get install imagemagick)")
    monkeypatch.setenv("DISPLAY", xvfb.display)
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv(ACCEL_HINT, raising=False)
    out = WindowOutput(size=(1280, 720), noise=Noise(seed=3))
    shots = {"noise1": 0.9, "noise2": 1.3, "finale": 2.2}
    running: dict[str, subprocess.Popen] = {}
    try:
        out.open()
        assert pygame.display.get_driver() == "x11"
        t0 = time.monotonic()
        frames = 0
        while (t := time.monotonic() - t0) < 2.8:
            assert out.frame(scripted(t)) == []
            frames += 1
            for name, at in shots.items():
                if t >= at and name not in running:
                    running[name] = screenshot_start(xvfb.display, tmp_path / f"{name}.png")
            time.sleep(1 / 60)
        for name, proc in running.items():
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"import {name}: {err.decode(errors='replace')}"
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.close()
    assert frames > 60
    noise1, noise2, finale = (load(tmp_path / f"{n}.png") for n in shots)
    assert noise1.shape[:2] == (1280, 720)
    # during the show: high pixel variance (noise), and moving (not a frozen frame)
    assert noise1.std() > 40 and noise2.std() > 40
    assert np.any(noise1 != noise2, axis=2).mean() > 0.3
    # the finale is mostly black with the card: unlike the noise
    assert finale.mean() < 20 < noise1.mean()
    assert np.any(finale != noise1, axis=2).mean() > 0.5
    assert finale.max() == 255  # the big white BEEP


def test_rehearse_in_a_window_under_xvfb(xvfb, tmp_path: Path) -> None:
    """End to end: `beep-av rehearse --output window` on the X server reaches the finale
    (exit 0) and the screen shows noise while it runs."""
    if not (ROOT / "beep_av" / "cli.py").exists():
        pytest.skip("the CLI (beep_av/cli.py) is not built yet")
    require(os.access(IMPORT, os.X_OK), f"{IMPORT} missing (apt-get install imagemagick)")
    env = xvfb.env
    env["SDL_AUDIODRIVER"] = "dummy"
    helptext = beep("rehearse", "--help", env=env, timeout=60)
    assert helptext.returncode == 0, helptext.stderr
    assert "window" in helptext.stdout
    args = ["rehearse", "--output", "window", "--audio", "off", "--seed", "1"]
    args += ["--ram", "256M", "--rate", "128M/s", "--calm", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "beep_av", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    best = 0.0  # highest pixel spread seen on the screen while the show ran
    try:
        deadline = time.monotonic() + 120
        n = 0
        while proc.poll() is None and time.monotonic() < deadline and best < 40:
            shot = tmp_path / f"show-{n}.png"
            n += 1
            r = subprocess.run(
                [IMPORT, "-display", xvfb.display, "-window", "root", f"png:{shot}"],
                timeout=30,
                capture_output=True,
            )
            if r.returncode == 0:
                best = max(best, float(load(shot).std()))
            time.sleep(0.3)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert best > 40, "no noise seen on the X screen during the rehearsal"
