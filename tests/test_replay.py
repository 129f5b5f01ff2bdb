"""Replay: the same phases and kill come out as went in, at the recorded times / speed,
and stop.set() ends it at once. Also through the real command line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
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


def _two_kills(path: Path, header: dict) -> tuple[KillRecord, KillRecord]:
    """A recording of two kills of the hog, as a watch (or a stage restarted after its
    kill) writes it: calm, kill A at 0.5 s, calm again, kill B at 2.0 s, calm at 3 s.
    The states are made here; the Recorder and the reader are the real ones."""
    from beep_av.model import ShowState
    from beep_av.recording import Recorder

    ka = KillRecord(7, "a", 137, 9, 1, "Killed process 7 (a)", 100, ("oom_kill", "kmsg"), 1.0, 0.5)
    kb = KillRecord(8, "b", 137, 9, 2, "Killed process 8 (b)", 200, ("oom_kill", "kmsg"), 1.0, 2.0)
    rec = Recorder(str(path), header, every_kill=True)
    entered = ((Phase.CALM, 0.0),)
    t = 0.0
    while t < 3.2:
        phase, kill, oom_t = Phase.CALM, None, None
        if 0.5 <= t < 1.5:
            phase, kill, oom_t = (Phase.OOM if t < 0.52 else Phase.FINALE), ka, 0.5
        elif 2.0 <= t < 3.0:
            phase, kill, oom_t = (Phase.OOM if t < 2.02 else Phase.FINALE), kb, 2.0
        if phase is not entered[-1][0]:
            entered = (*entered, (phase, round(t, 4)))
        rec.write_state(ShowState(t=round(t, 4), phase=phase, kill=kill, oom_t=oom_t,
                                  entered=entered, intensity=0.7))  # fmt: skip
        t += 0.02
    rec.close()
    return ka, kb


def test_a_recording_of_two_kills_replays_each_in_its_turn(tmp_path):
    from beep_av.audio.synth import BeepSpec, render_offline

    path = tmp_path / "two.jsonl"
    ka, kb = _two_kills(path, {"stage": "watch", "watch": "cgroup v1 /w"})
    d = ReplayDriver(load(str(path)))
    assert d.every_kill and d.kill.pid == 7
    states = list(d.states())
    at = {round(s.t, 2): s for s in states}
    assert at[0.4].kill is None and at[1.0].kill.pid == 7 and at[1.0].oom_t == 0.5
    assert at[1.8].kill is None and at[1.8].phase is Phase.CALM  # watching again
    assert at[2.5].kill.pid == 8 and at[2.5].oom_t == 2.0
    assert at[2.5].snapshot.kmsg_kill.pid == 8 and at[2.5].snapshot.hog_pid == 8
    assert [p for p, _ in states[-1].entered].count(Phase.FINALE) == 2
    assert d.kills() == []  # nothing performed yet claims no kill
    # and both kills beep: the 1 kHz tone after each cut, noise in between
    rate = 48000
    out = render_offline([(s.t, s) for s in states], 3.4, rate=rate,
                         beep=BeepSpec(freq=1000.0, length_ms=300), seed=1)[:, 0]  # fmt: skip

    def tone(a: float, b: float) -> float:
        x = out[int(a * rate) : int(b * rate)]
        n = np.arange(len(x))
        return float(abs(np.dot(x, np.exp(-2j * np.pi * 1000.0 * n / rate))) / len(x))

    assert tone(0.55, 0.75) > 0.1 and tone(2.05, 2.25) > 0.1
    assert tone(1.65, 1.95) < 0.02


def test_a_replay_of_two_kills_records_both(tmp_path):
    path, again = tmp_path / "two.jsonl", tmp_path / "again.jsonl"
    _two_kills(path, {"stage": "container", "restarts": 1})
    r = beep("replay", str(path), "--speed", "4", "--output", "headless", "--audio", "off",
             "--record", str(again), timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    kills = load(str(again)).hog_kills
    assert [(k["pid"], k["t"]) for k in kills] == [(7, 0.5), (8, 2.0)]
    assert [p.value for p, _ in load(str(again)).phases()] == [
        "calm", "oom", "finale", "calm", "oom", "finale", "calm",
    ]  # fmt: skip
