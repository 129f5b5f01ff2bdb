"""Shared test helpers.

Real tests (kernel OOM in a cgroup, PulseAudio, Xvfb, tmux) need their prerequisites.
Outside CI a missing prerequisite skips the test; under CI=true it fails: CI must run
the real thing (`.ci/run` installs and starts everything)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytest_plugins = ["tests.fx_cgroup", "tests.fx_pulse", "tests.fx_xvfb", "tests.fx_guest"]


def require(ok: bool, why: str) -> None:
    """Skip (developer machine) or fail (CI) when a real prerequisite is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI=true: {why}")
    pytest.skip(why)


def beep(
    *args: str, timeout: float = 180, env: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run `python -m beep_av ARGS` and capture its output."""
    full_env = dict(os.environ)
    full_env.setdefault("SDL_VIDEODRIVER", "dummy")
    full_env.setdefault("SDL_AUDIODRIVER", "dummy")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "beep_av", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        **kw,
    )


@pytest.fixture(autouse=True, scope="session")
def _headless_sdl():
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    yield


def pytest_addoption(parser):
    parser.addoption(
        "--update-references",
        action="store_true",
        default=False,
        help="regenerate golden reference files (PNG frames, WAV) instead of comparing",
    )


def wait_until(pred, limit: float, every: float = 0.05) -> bool:
    """Poll `pred` until it is true (True) or `limit` s have passed (False)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False
