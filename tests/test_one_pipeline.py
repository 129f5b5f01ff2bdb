"""Issue 21: one pipeline. Outputs, the synth, the report and the summaries draw and play
what the ShowState says and never ask which act is playing; recordings made before a
change of the pipeline replay and report as they did (real act recordings, kept as
fixtures: who-dies with two kernel kills, the bystander, throttle)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from beep_av.acts.spec import ACTS
from beep_av.recording import load
from tests.acts_checks import (
    check_bystander,
    check_throttle,
    check_who_dies,
    replay_performs_the_act,
)
from tests.conftest import ROOT, beep

PKG = ROOT / "beep_av"
OUTPUTS = sorted((PKG / "video").glob("*.py")) + sorted((PKG / "audio").glob("*.py"))
OUTPUTS += [PKG / "report.py", PKG / "summary.py"]
# an act's name as a word of its own ("throttle_calm" too; not "throttled", "bystanders")
ACT_WORD = re.compile(
    r"(?<![a-z])(" + "|".join(re.escape(a).replace("\\-", "[-_]") for a in ACTS) + r")(?![a-z])"
)
FIXTURES = ROOT / "tests" / "fixtures" / "recordings"


def names_an_act(source: str) -> list[str]:
    """Where `source` asks which act is playing: a string (not a docstring) that is or
    holds an act's name, the `act` attribute of anything, or the key "act"."""
    tree = ast.parse(source)
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            if n.value == "act" or ACT_WORD.search(n.value):
                found.append(f"line {n.lineno}: {n.value!r}")
        elif isinstance(n, ast.Attribute) and n.attr == "act":
            found.append(f"line {n.lineno}: .act")
    return found


@pytest.mark.parametrize("path", OUTPUTS, ids=lambda p: str(p.relative_to(PKG)))
def test_no_output_names_an_act(path: Path):
    assert names_an_act(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        'if state.act == "throttle":\n    pass',
        'cpu = rec.header.get("act")',
        'key = "who_dies_kill"',
        'x = f"{n} bystander lanes"',
    ],
)
def test_the_check_sees_an_output_that_names_an_act(snippet: str):
    assert names_an_act(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    ['"""The throttle act\'s gauge."""', 'w = "throttled in 40% of periods"', "b = s.bystanders"],
)
def test_the_check_lets_words_that_are_not_an_act_through(snippet: str):
    assert names_an_act(snippet) == []


# ---------------------------------------------------------------- recordings made before


def test_a_throttle_recording_without_a_gauge_still_draws_cpu():
    rec = load(str(FIXTURES / "real-throttle.jsonl"))
    assert "gauge" not in rec.header and rec.gauge == "cpu"
    assert load(str(FIXTURES / "real-bystander.jsonl")).gauge == "memory"


def test_a_throttle_recording_that_kept_the_speed_in_intensity_reads_as_pressure():
    """Before `intensity` meant pressure in every act, throttle kept its work speed
    there while the quotas ran: it is read back as the share held back (1 - speed), so
    the picture draws it as it did; the calm and the card stay 0."""
    path = FIXTURES / "real-throttle.jsonl"
    raw = [json.loads(x) for x in path.open()]
    assert "intensity" not in raw[0]
    written = np.array([r["intensity"] for r in raw if r["type"] == "sample"])
    phases = [r["phase"] for r in raw if r["type"] == "sample"]
    rec = load(str(path))
    running = np.array([p not in ("calm", "oom", "finale") for p in phases])
    assert running.sum() > 100 and (~running).sum() >= 2  # the calm and the card
    assert np.allclose(rec.samples["intensity"][running], 1.0 - written[running])
    assert np.array_equal(rec.samples["intensity"][~running], written[~running])
    # the view's speed (the gauge's figure) is what it was
    speeds = [v["speed"] for v in rec.views]
    assert min(speeds) < 0.1 and max(speeds) == 1.0


def test_every_new_recording_says_what_intensity_means(tmp_path):
    from beep_av.recording import INTENSITY

    out = tmp_path / "t.jsonl"
    r = beep("rehearse", "--act", "throttle", "--output", "headless", "--audio", "off",
             "--record", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    head = json.loads(out.open().readline())
    assert head["intensity"] == INTENSITY == "pressure" and head["gauge"] == "cpu"
    rec = load(str(out))
    assert rec.samples["intensity"].max() > 0.5  # the lowest quota presses hardest


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, check",
    [
        ("real-who-dies-two-kills.jsonl", check_who_dies),
        ("real-bystander.jsonl", check_bystander),
        ("real-throttle.jsonl", check_throttle),
    ],
    ids=["who-dies", "bystander", "throttle"],
)
def test_act_recordings_made_before_replay_and_report_as_before(name, check, tmp_path):
    original = FIXTURES / name
    figures = check(original)
    again = tmp_path / "again.jsonl"
    r = beep("replay", str(original), "--speed", "8", "--output", "headless",
             "--audio", "off", "--record", str(again))  # fmt: skip
    assert r.returncode == 0, r.stderr
    replay_performs_the_act(original, again)
    assert check(again) == figures
    out = tmp_path / "r.png"
    r = beep("report", str(original), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_who_dies_two_kills_are_in_the_kernels_order():
    """Both kills of the fixture are timed by the kernel's records, first the victim."""
    recs = [json.loads(x) for x in (FIXTURES / "real-who-dies-two-kills.jsonl").open()]
    kills = [r for r in recs if r["type"] == "kill"]
    assert [k.get("hog", True) for k in kills] == [True, False]
    assert kills[0]["t"] < kills[1]["t"]
    (released,) = [r for r in recs if r["type"] == "act" and r["event"] == "released"]
    pid_of = {
        h["name"]: h["pid"] for h in next(r for r in recs if r.get("event") == "scores")["hogs"]
    }
    assert [pid_of[n] for n in released["killed_by_kernel"]] == [k["pid"] for k in kills]
