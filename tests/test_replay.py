"""Replay: the same phases and kill come out as went in, at the recorded times / speed,
and stop.set() ends it at once. Also through the real command line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from beep_av.errors import BadInput
from beep_av.model import KillRecord, Phase
from beep_av.recording import load
from beep_av.stages.replay import ReplayDriver, kill_record
from tests.conftest import beep

FIXTURE = Path(__file__).parent / "fixtures" / "recordings" / "rehearsal-192M-128M-seed1.jsonl"


@pytest.fixture(scope="module")
def rec():
    return load(str(FIXTURE))


def test_states_carry_phases_kill_and_snapshot(rec):
    d = ReplayDriver(rec)
    states = list(d.states())
    assert len(states) == len(rec)
    last = states[-1]
    assert [p for p, _ in last.entered] == [p for p, _ in rec.phases()]
    assert dict(last.entered) == pytest.approx(dict(rec.phases()))
    k = rec.kill
    assert isinstance(last.kill, KillRecord)
    assert (last.kill.pid, last.kill.name, last.kill.exit, last.kill.signal) == (
        k["pid"],
        k["name"],
        k["exit"],
        k["signal"],
    )
    assert last.kill.detected_by == tuple(k["detected_by"]) and last.kill.kmsg == k["kmsg"]
    assert last.oom_t == pytest.approx(dict(rec.phases())[Phase.OOM])
    assert last.snapshot.hog_exit == -9 and last.snapshot.kmsg_kill.pid == k["pid"]
    # before the kill nothing of it shows
    before = [s for s in states if s.phase.index < Phase.OOM.index]
    assert before and all(s.kill is None and s.oom_t is None for s in before)
    mid = states[len(states) // 2]
    i = len(states) // 2
    assert mid.snapshot.anon_bytes == rec.samples["ram"][i]
    assert mid.snapshot.cache_bytes == rec.samples["cache"][i]
    assert mid.intensity == rec.samples["intensity"][i] and type(mid.intensity) is float
    assert mid.stage == "rehearsal"
    assert [e["type"] for e in d.events] == ["beep", "end"]
    assert d.duration == pytest.approx(d.events[-1]["t"])


def _run(d, speed_t0_delay=0.05):
    out = []
    t0 = time.monotonic() + speed_t0_delay
    done = d.run(lambda s: out.append((time.monotonic() - t0, s)), threading.Event(), t0)
    return done, out, time.monotonic() - t0


@pytest.mark.slow
def test_speed_four_takes_a_quarter_of_the_time(rec):
    d = ReplayDriver(rec, speed=4.0)
    done, out, took = _run(d)
    assert done
    assert took == pytest.approx(rec.duration / 4, rel=0.2)
    assert [s.phase for _, s in out][-1] is Phase.FINALE
    # each state came out at its recorded time / 4 (a generous bound: CI machines are busy)
    worst = max(abs(at - s.t / 4) for at, s in out)
    assert worst < 0.05


def test_stop_ends_it_promptly(rec):
    d = ReplayDriver(rec, speed=1.0)
    stop = threading.Event()
    seen = []
    th = threading.Thread(target=lambda: seen.append(d.run(lambda s: None, stop, time.monotonic())))
    th.start()
    time.sleep(0.2)
    t = time.monotonic()
    stop.set()
    th.join(2)
    assert not th.is_alive() and seen == [False]
    assert time.monotonic() - t < 0.1


@pytest.mark.parametrize("speed", [0, -1, float("nan"), float("inf"), "2", True])
def test_bad_speed(rec, speed):
    with pytest.raises(BadInput):
        ReplayDriver(rec, speed=speed)


def test_kill_record_from_a_sparse_kill_line():
    k = kill_record({"type": "kill", "t": 3.5, "pid": 7, "detected_by": "junk"})
    assert k.pid == 7 and k.name == "?" and k.exit is None and k.detected_by == () and k.t == 3.5


def test_replay_through_the_command_line():
    r = beep(
        "replay",
        str(FIXTURE),
        "--speed",
        "4",
        "--output",
        "headless",
        "--audio",
        "off",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for phase in ("filling", "evicting", "swapping", "oom", "finale"):
        assert phase in out
    assert "Traceback" not in out


def test_replay_cli_rejects_a_bad_recording(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"beep-av/2"}\n')
    r = beep("replay", str(bad), "--output", "headless", "--audio", "off", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and str(bad) in r.stderr


def test_replay_records_what_it_performs(tmp_path):
    out = tmp_path / "again.jsonl"
    r = beep(
        "replay", str(FIXTURE), "--speed", "8", "--output", "headless", "--audio", "off",
        "--record", str(out), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    original, again = load(str(FIXTURE)), load(str(out))
    assert again.phases() == original.phases()
    assert again.kill["pid"] == original.kill["pid"]
    assert again.header["replay_of"] == str(FIXTURE)
