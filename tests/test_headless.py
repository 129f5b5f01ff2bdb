"""The headless output: one line per phase with its numbers, skips said, the card."""

from __future__ import annotations

import io
import re

from beep_av.model import KillRecord, Phase, ShowState, Snapshot
from beep_av.summary import victim_card
from beep_av.video.headless import HeadlessOutput

MiB = 1024**2
KILL = KillRecord(
    pid=4242,
    name="python3",
    exit=137,
    signal=9,
    oom_kill_count=1,
    kmsg="Memory cgroup out of memory: Killed process 4242 (python3)",
    anon_rss_kib=180_000,
    detected_by=("exit", "oom_kill", "kmsg"),
    latency_ms=3.25,
    t=9.0,
)


def _states():
    def st(t, phase, entered, skipped=(), kill=None, cache=40, swap=0, hog=0):
        return ShowState(
            t=t,
            phase=phase,
            entered=entered,
            skipped=skipped,
            kill=kill,
            snapshot=Snapshot(
                t=t,
                cache_bytes=cache * MiB,
                swap_bytes=swap * MiB,
                hog_bytes=hog * MiB,
                ram_limit=192 * MiB,
                swap_limit=0,
            ),
        )

    e = [(Phase.CALM, 0.0)]
    yield st(0.0, Phase.CALM, tuple(e), cache=48)
    e.append((Phase.FILLING, 3.0))
    yield st(3.1, Phase.FILLING, tuple(e), cache=48, hog=10)
    e.append((Phase.EVICTING, 5.5))
    yield st(5.6, Phase.EVICTING, tuple(e), cache=20, hog=150)
    e.append((Phase.OOM, 8.0))
    sk = ((Phase.SWAPPING, "no swap on the stage"),)
    yield st(8.0, Phase.OOM, tuple(e), sk, KILL, cache=0, hog=170)
    e.append((Phase.FINALE, 8.02))
    yield st(8.1, Phase.FINALE, tuple(e), sk, KILL, cache=0, hog=170)


def test_one_line_per_phase_then_the_card():
    buf = io.StringIO()
    out = HeadlessOutput(buf)
    for s in _states():
        assert out.frame(s) == []
        out.frame(s)  # a repeated frame prints nothing new
    out.close()
    text = buf.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    phases = [ln.split()[1] for ln in lines if re.fullmatch(r"\d+\.\ds", ln.split()[0])]
    assert phases == ["calm", "filling", "evicting", "oom", "finale"]
    assert any("swapping" in ln and "skipped: no swap on the stage" in ln for ln in lines)
    ev = next(ln for ln in lines if " evicting " in ln)
    assert "cache 48 -> 20 MiB" in ev and "hog 150 MiB" in ev
    assert "pid 4242 (python3)" in text and "exit 137 (OOMKilled)" in text
    assert "exit status + oom_kill counter + kernel log" in text
    assert "\a" in text  # the bell at the finale, once
    assert text.count("\a") == 1


def test_card_lines():
    card = victim_card(KILL)
    assert card[0] == "OOM KILL"
    assert "176 MiB" in card[2]
    assert "3.2 ms" in card[-1] or "3.3 ms" in card[-1]


def test_a_card_for_every_kill_in_watch_mode():
    from dataclasses import replace

    buf = io.StringIO()
    out = HeadlessOutput(buf)
    states = list(_states())
    finale = states[-1]
    out.frame(finale)
    out.frame(finale)  # the same kill again: no second card
    second = replace(finale, kill=replace(KILL, pid=5151, t=20.0), t=20.1)
    out.frame(second)
    text = buf.getvalue()
    assert text.count("OOM KILL") == 2
    assert "pid 4242 (python3)" in text and "pid 5151 (python3)" in text
