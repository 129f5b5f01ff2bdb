"""Issue 5: scripted key plans drive a whole show through the real conductor and the
pygame window (SDL events posted into the queue, SDL dummy driver)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import beep
from tests.test_show_real import real_stage, residue  # noqa: F401 — fixture

MiB = 2**20
ARGS = ["--ram", "192M", "--swap", "128M", "--cache", "32M", "--rate", "32M/s", "--calm", "0.5"]


def _run(tmp_path, stage: str, keys: str) -> tuple[list[dict], list[dict]]:
    rec = tmp_path / "k.jsonl"
    r = beep(
        "show",
        "--stage",
        stage,
        *ARGS,
        "--output",
        "window",
        "--audio",
        "off",
        "--keys",
        keys,
        "--record",
        str(rec),
        env={"SDL_VIDEODRIVER": "dummy"},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in rec.read_text().splitlines() if x.strip()]
    return records, [x for x in records if x["type"] == "sample"]


def _hog_at(samples: list[dict], t: float) -> int:
    return min(samples, key=lambda s: abs(s["t"] - t))["hog"]


@pytest.mark.parametrize("stage", ["rehearsal", pytest.param("cgroup", marks=pytest.mark.real)])
def test_pause_resume_rate_and_release(stage, tmp_path, request):
    if stage == "cgroup":
        request.getfixturevalue("real_stage")
    # hog climbs from 0.5 s; space pauses at 1.5 s and resumes at 2.5 s; + at 3 s;
    # r releases at 4 s (before the kill: 32..48 MiB/s cannot fill 320 MiB by then)
    records, samples = _run(tmp_path, stage, "1.5:space,2.5:space,3:+,4:r")
    # paused: the hog does not grow between 1.7 s and 2.4 s
    paused_growth = _hog_at(samples, 2.4) - _hog_at(samples, 1.7)
    running_growth = _hog_at(samples, 1.4) - _hog_at(samples, 0.7)
    assert paused_growth < 2 * MiB < running_growth
    # resumed, then faster after +
    before = (_hog_at(samples, 2.95) - _hog_at(samples, 2.65)) / 0.3
    after = (_hog_at(samples, 3.9) - _hog_at(samples, 3.3)) / 0.6
    assert after > 1.25 * before > 0
    # r: the show ends released, no kill, nothing left behind
    kinds = [x["type"] for x in records]
    assert "kill" not in kinds and "beep" not in kinds
    end = records[-1]
    assert end["type"] == "end" and end["reason"] == "released"
    assert 3.9 < end["t"] < 6
    if stage == "cgroup":
        assert residue() == []


def test_quit_key_ends_the_show_cleanly(tmp_path):
    records, samples = _run(tmp_path, "rehearsal", "1:q")
    end = records[-1]
    assert end["type"] == "end" and end["reason"] == "quit" and end["exit"] == 0
    assert end["t"] < 3


def test_one_key_map_for_every_output():
    """A key plan name means the same command in the window, the terminal and the
    outputs a plan drives (`--keys 2:plus` once worked in the terminal only)."""
    from beep_av.keys import PLAN_NAMES, plan_command
    from beep_av.video.select import KEY_NAMES
    from beep_av.video.terminal import parse_keys
    from beep_av.video.window import key_code, key_command

    for name, ch in PLAN_NAMES.items():
        want = plan_command(name)
        if want in ("fullscreen", "help"):
            continue  # the window's own keys
        assert key_command(key_code(name)) == want, name
        assert KEY_NAMES[name] == want, name
        if ch != "\x1b":  # a lone Esc is parsed on its own
            assert parse_keys(ch.encode()) == [want], name
    assert key_command(key_code("plus")) == "rate_up"
