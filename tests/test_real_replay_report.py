"""Issue 3 on a real recording made here: replay it at --speed 4 (same phases, same
kill, a quarter of the time) and draw its report (bands where the phases begin, the
kill marked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pygame
import pytest

from beep_av.recording import load
from beep_av.report import KILL_COLOUR, layout, render_report
from tests.conftest import ROOT, beep
from tests.test_report import test_phase_bands_begin_at_the_phase_times as check_bands
from tests.test_show_real import _can_stage, require, residue

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_recording(tmp_path_factory):
    require(_can_stage(), "needs root and a writable cgroup v1 memory controller")
    path = tmp_path_factory.mktemp("real") / "show.jsonl"
    r = beep(
        "show",
        "--ram",
        "192M",
        "--swap",
        "128M",
        "--cache",
        "48M",
        "--rate",
        "64M/s",
        "--calm",
        "1",
        "--output",
        "headless",
        "--audio",
        "off",
        "--record",
        str(path),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    assert residue() == []
    return path


def test_replay_at_speed_4(real_recording):
    rec = load(str(real_recording))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beep_av",
            "replay",
            str(real_recording),
            "--speed",
            "4",
            "--output",
            "headless",
            "--audio",
            "off",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    seen: dict[str, float] = {}
    lines = []
    for line in proc.stdout:  # the time each phase line reaches us
        lines.append(line)
        m = re.match(r"^\s*[\d.]+s\s+(\w+)\s", line)
        if m:
            seen[m.group(1)] = time.monotonic()
    assert proc.wait(60) == 0, proc.stderr.read()
    out = "".join(lines)
    phases = [p.value for p, _ in rec.phases()]
    assert list(seen) == phases == ["calm", "filling", "evicting", "swapping", "oom", "finale"]
    kill = rec.kill
    assert f"pid {kill['pid']} ({kill['name']})" in out
    assert "exit 137 (OOMKilled)" in out
    # a quarter of the recorded time, within 20%: calm to finale as replayed vs recorded
    times = dict((p.value, t) for p, t in rec.phases())
    recorded = (times["finale"] - times["calm"]) / 4
    replayed = seen["finale"] - seen["calm"]
    assert 0.8 * recorded <= replayed <= 1.2 * recorded, (replayed, recorded)


def test_report_of_the_real_recording(real_recording, tmp_path):
    rec = load(str(real_recording))
    check_bands(tmp_path, rec, (1600, 900))
    # the kill marker: a vertical line in the kill colour at the kill's time (the area
    # checks of test_report assume the rehearsal's smooth shapes; a real show's swap
    # comes in bursts, so only the marker is checked here)
    out = tmp_path / "kill.png"
    render_report(rec, str(out), size=(1600, 900))
    px = pygame.surfarray.array3d(pygame.image.load(str(out)))
    lay = layout(rec, (1600, 900))
    x = round(lay.x_of(rec.kill["t"]))
    column = [tuple(c) for c in px[x, lay.top : lay.bottom]]
    assert column.count(KILL_COLOUR) > 0.5 * (lay.bottom - lay.top)
    r = beep("report", str(real_recording), "-o", str(tmp_path / "cli.png"), "--size", "800x450")
    assert r.returncode == 0 and (tmp_path / "cli.png").stat().st_size > 1000
