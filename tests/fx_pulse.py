"""PulseAudio fixtures: a real sound server with a null sink (`beep_null`), and a recorder
of the sink's monitor into a file.

`pulse_server` (session) uses the server named by PULSE_SERVER/XDG_RUNTIME_DIR when one
answers there (`eval "$(scripts/start-pulse.sh)"` before pytest), otherwise starts one
with scripts/start-pulse.sh in a private runtime dir for this session and stops it (by
its pid, through the script) afterwards. Missing server: skip locally, fail under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, require

SCRIPT = ROOT / "scripts" / "start-pulse.sh"
SINK = "beep_null"
RATE = 48000


def _answers(env: dict[str, str]) -> bool:
    if not shutil.which("pactl"):
        return False
    try:
        r = subprocess.run(
            ["pactl", "info"], env={**os.environ, **env}, capture_output=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _has_sink(env: dict[str, str]) -> bool:
    r = subprocess.run(
        ["pactl", "list", "short", "sinks"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=5,
    )
    return r.returncode == 0 and SINK in r.stdout


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value.strip("'\"")
    return env


def _refresh_portaudio() -> None:
    # PortAudio lists devices once, at `import sounddevice`; a module imported before
    # the server existed would see none
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="session")
def pulse_server():
    """Environment (XDG_RUNTIME_DIR, PULSE_SERVER) of a running PulseAudio server with
    the `beep_null` sink as default; also exported into os.environ for this process."""
    given = {k: os.environ[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER") if k in os.environ}
    if "PULSE_SERVER" in given and _answers(given) and _has_sink(given):
        _refresh_portaudio()
        yield given
        return
    require(shutil.which("pulseaudio") is not None, "pulseaudio is not installed")
    require(shutil.which("parec") is not None, "parec (pulseaudio-utils) is not installed")
    rundir = f"/tmp/beep-av-pulse-test-{os.getpid()}"
    script_env = {**os.environ, "BEEP_PULSE_DIR": rundir}
    r = subprocess.run(
        ["sh", str(SCRIPT)], env=script_env, capture_output=True, text=True, timeout=60
    )
    require(r.returncode == 0, f"start-pulse.sh failed: {r.stderr.strip()}")
    env = _parse_exports(r.stdout)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _refresh_portaudio()
    try:
        yield env
    finally:
        subprocess.run(["sh", str(SCRIPT), "--stop"], env=script_env, timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MonitorRecording:
    """`parec` recording the null sink's monitor (float32 stereo 48 kHz) into a file."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                "parec",
                "-d",
                f"{SINK}.monitor",
                "--format=float32le",
                f"--rate={RATE}",
                "--channels=2",
                "--latency-msec=10",
            ],
            stdout=self._file,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        self.started = time.monotonic()

    def stop(self) -> np.ndarray:
        """End the recorder (by its pid) and return the (frames, 2) float32 samples."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._file.close()
        data = np.fromfile(self.path, dtype=np.float32)
        return data[: data.size // 2 * 2].reshape(-1, 2)


@pytest.fixture
def monitor_recording(pulse_server, tmp_path):
    """Start recording the sink monitor to a file; call `.stop()` to get the samples."""
    rec = MonitorRecording(tmp_path / "monitor.f32", pulse_server)
    time.sleep(0.3)  # let the recorder attach before the stream starts
    try:
        yield rec
    finally:
        rec.stop()
