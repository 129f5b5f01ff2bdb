"""The card says what happened, on every output: the hog's OOM kill (with a latency or
"latency unknown"), a kill of another process ("not the hog"), a signal from user space
("not an OOM kill"), a rehearsal ("rehearsal: nothing was killed") and a replay (names
its file). Pure card text first, then headless, terminal and window output, then the
real commands (headless, a window on SDL's dummy driver, a terminal in tmux)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from beep_av.model import KillRecord, MiB, Phase, ShowState, Snapshot
from beep_av.recording import Recorder, load
from beep_av.stages.rehearsal import RehearsalModel, offline_states
from beep_av.stages.replay import ReplayDriver
from beep_av.summary import card_lines, phase_line, victim_card
from beep_av.video.headless import HeadlessOutput
from beep_av.video.terminal import TerminalOutput, card_block
from tests.conftest import ROOT, beep, require

FIXTURE = ROOT / "tests" / "fixtures" / "recordings" / "rehearsal-192M-128M-seed1.jsonl"
EXAMPLE = ROOT / "assets" / "example-show.jsonl"  # a real show, recorded before calibration

HOG = KillRecord(4242, "python3", 137, 9, 1, "Killed process 4242", 190 * 1024,
                 ("exit", "oom_kill", "kmsg"), 0.43, 9.0)  # fmt: skip
OTHER = KillRecord(1234, "python3", None, 9, 0, "Killed process 1234", 120 * 1024, ("kmsg",),
                   0.3, 5.0, hog=False)  # fmt: skip
USER = KillRecord(4242, "hog", 137, 9, 0, None, None, ("exit",), None, 9.0, oom=False,
                  killer="user space")  # fmt: skip
SNAP = Snapshot(t=9.0, ram_limit=192 * MiB, swap_limit=128 * MiB, hog_bytes=190 * MiB)


def finale(kill, **kw) -> ShowState:
    return ShowState(t=9.1, phase=Phase.FINALE, kill=kill, snapshot=SNAP, oom_t=9.0,
                     entered=((Phase.CALM, 0.0), (Phase.OOM, 9.0), (Phase.FINALE, 9.05)), **kw)  # fmt: skip


# ---------------------------------------------------------------- card text (pure)

CASES = {
    "oom": (
        finale(HOG),
        ["pid 4242  python3", "anon-rss 190 MiB", "exit 137 (OOMKilled)",
         "confirmed by exit + oom_kill + kmsg", "detected in 0.4 ms"],
    ),
    "latency-unknown": (
        finale(replace(HOG, latency_ms=None)),
        ["pid 4242  python3", "anon-rss 190 MiB", "exit 137 (OOMKilled)",
         "confirmed by exit + oom_kill + kmsg", "latency unknown"],
    ),
    "after-a-bystander": (
        finale(HOG, bystanders=(OTHER,)),
        ["pid 4242  python3", "anon-rss 190 MiB", "exit 137 (OOMKilled)",
         "confirmed by exit + oom_kill + kmsg", "detected in 0.4 ms",
         "before: the kernel killed 1234 (python3), not the hog"],
    ),
    "user-space": (
        finale(USER),
        ["pid 4242  hog", "killed by a signal from user space",
         "not an OOM kill: the kernel said nothing", "exit 137 (SIGKILL)"],
    ),
    "systemd-oomd": (
        finale(replace(USER, killer="systemd-oomd")),
        ["pid 4242  hog", "killed by a signal from user space (systemd-oomd is running)",
         "not an OOM kill: the kernel said nothing", "exit 137 (SIGKILL)"],
    ),
    "rehearsal": (
        finale(HOG, stage="rehearsal"),
        ["rehearsal: nothing was killed", "the model's hog reached 190 MiB"],
    ),
    "replay": (
        finale(HOG, replay_of="talk.jsonl"),
        ["replay of talk.jsonl", "pid 4242  python3", "anon-rss 190 MiB",
         "exit 137 (OOMKilled)", "confirmed by exit + oom_kill + kmsg", "detected in 0.4 ms"],
    ),
    "replay-of-a-rehearsal": (
        finale(HOG, stage="rehearsal", replay_of="r.jsonl"),
        ["replay of r.jsonl", "rehearsal: nothing was killed", "the model's hog reached 190 MiB"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_card_lines(case):
    state, want = CASES[case]
    assert card_lines(state) == want


@pytest.mark.parametrize("case", list(CASES))
def test_one_card_builder_serves_every_output(case):
    """summary.card composes the card once: the window and the terminal lay out its
    lines under the same big word and title, headless and the terminal's main screen
    its columns; each has every fact, nothing an output composed on its own."""
    from beep_av.summary import card

    state, _ = CASES[case]
    c = card(state)
    assert c.lines() and c.columns()
    block = [x.strip() for x in card_block(state, 200, 60)]
    assert [x for x in block if x in c.lines()] == c.lines()
    assert (c.title in block) == bool(c.title)
    out = io.StringIO()
    HeadlessOutput(out, bell=False).frame(state)
    printed = [x.strip() for x in out.getvalue().splitlines()]
    assert [x for x in printed if x in c.columns()] == c.columns()
    # a fact in both layouts says the same: the pid, the size, the time to detect it
    for fact in ("4242", "190 MiB", "0.4 ms", "talk.jsonl", "nothing was killed"):
        assert (fact in " ".join(c.lines())) == (fact in " ".join(c.columns())), fact


def test_the_rehearsal_card_claims_no_confirmation():
    text = "\n".join(card_lines(finale(HOG, stage="rehearsal")))
    for claim in ("kernel killed", "confirmed", "detected in", "OOMKilled", "pid 4242"):
        assert claim not in text


def test_victim_cards_of_headless():
    assert victim_card(HOG) == [
        "OOM KILL", "victim      pid 4242 (python3)", "anon-rss    190 MiB",
        "status      exit 137 (OOMKilled)",
        "confirmed   exit status + oom_kill counter + kernel log", "detected in 0.4 ms",
    ]  # fmt: skip
    assert victim_card(OTHER) == [
        "OOM KILL (not the hog)", "victim      the kernel killed 1234 (python3), not the hog",
        "anon-rss    120 MiB", "confirmed   kernel log", "detected in 0.3 ms",
    ]  # fmt: skip
    assert victim_card(USER) == [
        "NOT AN OOM KILL", "victim      pid 4242 (hog)",
        "killed by   a signal from user space",
        "status      exit 137 (SIGKILL), no kernel OOM evidence",
    ]  # fmt: skip
    assert victim_card(HOG, "rehearsal", "r.jsonl") == [
        "replay of r.jsonl", "REHEARSAL", "rehearsal: nothing was killed",
        "model       the hog reached 190 MiB anon-rss",
    ]  # fmt: skip
    anonymous = replace(OTHER, pid=0, name="?", kmsg=None, detected_by=("oom_kill",),
                        latency_ms=None, anon_rss_kib=None)  # fmt: skip
    assert victim_card(anonymous)[1:] == [
        "victim      the kernel killed a process in the stage's domain, not the hog",
        "anon-rss    unknown", "confirmed   oom_kill counter", "latency unknown",
    ]  # fmt: skip


def test_phase_lines_of_a_rehearsal_say_nothing_was_killed():
    st = finale(HOG, stage="rehearsal")
    assert "rehearsal: nothing was killed" in phase_line(st, Phase.OOM, 9.0, 0)
    assert "kernel killed" not in phase_line(st, Phase.OOM, 9.0, 0)
    assert "rehearsal: nothing was killed" in phase_line(st, Phase.FINALE, 9.05, 0)
    user = phase_line(finale(USER), Phase.FINALE, 9.05, 0)
    assert "killed by a signal from user space: not an OOM kill" in user
    assert "latency unknown" in phase_line(
        finale(replace(HOG, latency_ms=None)), Phase.FINALE, 9, 0
    )


# ---------------------------------------------------------------- the outputs, in process


def _headless(states) -> str:
    buf = io.StringIO()
    out = HeadlessOutput(buf, bell=False)
    for s in states:
        out.frame(s)
    out.close()
    return buf.getvalue()


def _rehearsal_states() -> list[ShowState]:
    model = RehearsalModel(64 * MiB, 32 * MiB, 8 * MiB, 256 * MiB, seed=3)
    return [replace(s, stage="rehearsal") for s in offline_states(model, calm=0.1)]


def test_headless_rehearsal_says_nothing_was_killed():
    text = _headless(_rehearsal_states())
    assert "rehearsal: nothing was killed" in text and "REHEARSAL" in text
    assert "kernel killed" not in text and "confirmed" not in text


def test_headless_replay_names_its_file_and_the_rehearsal():
    d = ReplayDriver(load(str(FIXTURE)), name="rehearsal-192M-128M-seed1.jsonl")
    text = _headless(d.states())
    assert "replay of rehearsal-192M-128M-seed1.jsonl" in text
    assert "rehearsal: nothing was killed" in text


def test_headless_a_bystander_gets_its_card_while_the_show_goes_on():
    before = ShowState(t=5.0, phase=Phase.SWAPPING, snapshot=SNAP,
                       entered=((Phase.CALM, 0.0), (Phase.SWAPPING, 4.0)))  # fmt: skip
    text = _headless([before, replace(before, t=5.02, bystanders=(OTHER,)),
                      replace(before, t=5.04, bystanders=(OTHER,)), finale(HOG, bystanders=(OTHER,))])  # fmt: skip
    assert text.count("the kernel killed 1234 (python3), not the hog") == 1
    assert text.index("not the hog") < text.index("OOM KILL\n")


def test_headless_a_replay_of_an_uncalibrated_recording_says_latency_unknown():
    d = ReplayDriver(load(str(EXAMPLE)))
    assert "kernel_clock" not in d.rec.header
    text = _headless(d.states())
    assert "latency unknown" in text and "detected in" not in text
    assert f"replay of {EXAMPLE}" in text


def test_terminal_card_blocks():
    text = "\n".join(card_block(finale(HOG, stage="rehearsal", replay_of="r.jsonl"), 100, 40))
    assert "REHEARSAL" in text and "rehearsal: nothing was killed" in text
    assert "replay of r.jsonl" in text and "OOM KILLED" not in text
    user = "\n".join(card_block(finale(USER), 100, 40))
    assert "NOT AN OOM KILL" in user and "OOMKilled" not in user
    assert "OOM KILLED" in "\n".join(card_block(finale(HOG), 100, 40))


def test_terminal_draws_a_bystander_box_over_the_running_show():
    out = TerminalOutput(stream=io.BytesIO(), size=(100, 30), color="none", seed=1, keys=False)
    state = ShowState(t=5.02, phase=Phase.SWAPPING, snapshot=SNAP, bystanders=(OTHER,))
    assert b"the kernel killed 1234 (python3), not the hog" in out.build(state)
    gone = replace(state, t=11.0)  # BYSTANDER_S later: the show alone again
    assert b"not the hog" not in out.build(gone)


def test_terminal_output_of_a_replayed_rehearsal():
    out = TerminalOutput(stream=io.BytesIO(), size=(120, 40), color="none", seed=1, keys=False)
    d = ReplayDriver(load(str(FIXTURE)), name="r.jsonl")
    last = list(d.states())[-1]
    frame = out.build(last).decode()
    assert "rehearsal: nothing was killed" in frame and "replay of r.jsonl" in frame


def _window_texts(monkeypatch, state: ShowState) -> list[str]:
    """The strings the scene laid out for one window frame (SDL's dummy driver)."""
    from beep_av.noise import Noise
    from beep_av.video.scene import Scene
    from beep_av.video.window import WindowOutput

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    seen: list[str] = []
    orig = Scene._text

    def spy(self, s, px, color):
        seen.append(s)
        return orig(self, s, px, color)

    monkeypatch.setattr(Scene, "_text", spy)
    w = WindowOutput(size=(640, 360), noise=Noise(seed=1))
    try:
        w.open()
        w.frame(state)
    finally:
        w.close()
    return seen


@pytest.mark.parametrize("case", ["rehearsal", "replay", "replay-of-a-rehearsal", "user-space"])
def test_window_draws_the_card(monkeypatch, case):
    state, want = CASES[case]
    seen = _window_texts(monkeypatch, state)
    assert "BEEP" in seen
    for line in want:
        assert line in seen


def test_window_draws_a_bystander_card_over_the_running_show(monkeypatch):
    state = ShowState(t=5.02, phase=Phase.SWAPPING, snapshot=SNAP, bystanders=(OTHER,))
    seen = _window_texts(monkeypatch, state)
    assert "the kernel killed 1234 (python3), not the hog" in seen and "the show goes on" in seen


# ---------------------------------------------------------------- recordings


def test_recording_keeps_the_bystander_and_the_hog_apart(tmp_path):
    path = tmp_path / "r.jsonl"
    with Recorder(str(path), {"stage": "cgroup"}) as rec:
        base = ShowState(t=5.0, phase=Phase.SWAPPING, snapshot=SNAP)
        rec.write_state(base)
        rec.write_state(replace(base, t=5.02, bystanders=(OTHER,)))
        rec.write_state(replace(base, t=5.04, bystanders=(OTHER,)))
        rec.write_state(finale(replace(HOG, latency_ms=None), bystanders=(OTHER,)))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    kills = [x for x in lines if x["type"] == "kill"]
    assert [k["pid"] for k in kills] == [1234, 4242]
    assert kills[0]["hog"] is False and kills[0]["latency_ms"] == 0.3
    assert kills[1]["hog"] is True and "latency_ms" not in kills[1]  # never a fake 0
    r = load(str(path))
    assert r.kill["pid"] == 4242 and [b["pid"] for b in r.bystanders] == [1234]
    d = ReplayDriver(r)  # no kernel_clock in this header: latencies are not trusted
    states = list(d.states())
    assert states[-1].kill.pid == 4242 and states[-1].bystanders[0].pid == 1234
    assert states[-1].replay_of == str(path)


def test_replay_keeps_a_calibrated_latency_and_reads_unknown_keys(tmp_path):
    path = tmp_path / "r.jsonl"
    head = {
        "type": "header",
        "format": "beep-av/1",
        "stage": "cgroup",
        "kernel_clock": {"offset_ns": -760000, "uncertainty_ns": 2000},
        "future": 1,
    }
    kill = {
        "type": "kill",
        "t": 1.0,
        "pid": 7,
        "name": "python3",
        "exit": 137,
        "signal": 9,
        "detected_by": ["exit", "kmsg"],
        "latency_ms": 0.8,
        "hog": True,
        "oom": True,
        "killer": "kernel",
        "something_new": [1, 2],
    }
    sample = {"type": "sample", "t": 1.0, "phase": "finale"}
    path.write_text("\n".join(json.dumps(x) for x in (head, sample, kill)) + "\n")
    k = ReplayDriver(load(str(path))).kill
    assert k.latency_ms == 0.8 and k.hog and k.oom


# ---------------------------------------------------------------- the real commands

SMALL_REHEARSAL = ["--ram", "64M", "--swap", "32M", "--cache", "8M", "--rate", "256M/s",
                   "--calm", "0", "--seed", "3", "--audio", "off"]  # fmt: skip


def test_cli_rehearse_headless_says_nothing_was_killed(tmp_path):
    rec = tmp_path / "r.jsonl"
    r = beep("rehearse", *SMALL_REHEARSAL, "--output", "headless", "--record", str(rec))
    assert r.returncode == 0, r.stderr
    assert "rehearsal: nothing was killed" in r.stdout and "REHEARSAL" in r.stdout
    assert "kernel killed" not in r.stdout and "confirmed" not in r.stdout
    head = json.loads(rec.read_text().splitlines()[0])
    assert head["stage"] == "rehearsal"  # the recording says what it is
    assert "kernel_clock" not in head  # a model has no kernel clock to calibrate
    r = beep("replay", str(rec), "--output", "headless", "--audio", "off", "--speed", "8")
    assert r.returncode == 0, r.stderr
    assert f"replay of {rec}" in r.stdout and "rehearsal: nothing was killed" in r.stdout
    rerec = tmp_path / "again.jsonl"
    r = beep("replay", str(rec), "--output", "headless", "--audio", "off", "--speed", "8",
             "--record", str(rerec))  # fmt: skip
    head = json.loads(rerec.read_text().splitlines()[0])
    assert head["replay_of"] == str(rec) and head["stage"] == "rehearsal"


WINDOW_SPY = textwrap.dedent(
    """
    import sys
    import beep_av.show as show
    from beep_av.video import scene
    show.HOLD_DEFAULT = 0.5  # the card need not stay 8 s on a dummy display
    seen = set()
    orig = scene.Scene._text
    def spy(self, s, px, color):
        seen.add(s)
        return orig(self, s, px, color)
    scene.Scene._text = spy
    from beep_av.cli import main
    try:
        code = main(sys.argv[2:])
    finally:
        open(sys.argv[1], "w").write("\\n".join(sorted(seen)))
    sys.exit(code)
    """
)


def _window_run(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    spy, texts = tmp_path / "spy.py", tmp_path / "texts.txt"
    spy.write_text(WINDOW_SPY)
    r = subprocess.run(
        [sys.executable, str(spy), str(texts), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**__import__("os").environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
             "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return r, set(texts.read_text().splitlines()) if texts.exists() else set()


def test_cli_window_cards_of_a_rehearsal_and_a_replay(tmp_path):
    r, seen = _window_run(tmp_path, "rehearse", *SMALL_REHEARSAL, "--output", "window")
    assert r.returncode == 0, r.stderr
    assert {"BEEP", "rehearsal: nothing was killed"} <= seen, sorted(seen)[:40]
    r, seen = _window_run(tmp_path, "replay", str(FIXTURE), "--output", "window",
                          "--audio", "off", "--speed", "8")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {"BEEP", f"replay of {FIXTURE}", "rehearsal: nothing was killed"} <= seen


def _tmux_card(tmp_path, args: list[str], want: list[str]) -> str:
    """Run `beep-av ARGS --output terminal` in a private tmux server; return the first
    pane that shows every line of `want` (the card stays a few seconds)."""
    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux)")
    sock = f"beepcard-{tmp_path.name[-12:]}"
    status = tmp_path / "status"

    def tmux(*a: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *a], capture_output=True, text=True,
                              timeout=20).stdout  # fmt: skip

    cmd = (f"PYTHONPATH={ROOT} {sys.executable} -m beep_av {' '.join(args)} --output terminal "
           f"2>{tmp_path}/err; echo $? > {status}; sleep 30")  # fmt: skip
    tmux("new-session", "-d", "-x", "120", "-y", "40", "-c", str(ROOT), "sh", "-c", cmd)
    try:
        end = time.monotonic() + 150
        while time.monotonic() < end and not status.exists():
            text = tmux("capture-pane", "-p")
            if all(w in text for w in want):
                return text
            time.sleep(0.05)
        err = (tmp_path / "err").read_text() if (tmp_path / "err").exists() else ""
        raise AssertionError(f"never saw {want} in the pane: {err}")
    finally:
        path = tmux("display", "-p", "#{socket_path}").strip()
        tmux("kill-server")  # only our private server
        if path.endswith(sock):
            Path(path).unlink(missing_ok=True)


def test_cli_terminal_cards_of_a_rehearsal_and_a_replay(tmp_path):
    _tmux_card(tmp_path, ["rehearse", *SMALL_REHEARSAL],
               ["REHEARSAL", "rehearsal: nothing was killed"])  # fmt: skip
    sub = tmp_path / "b"
    sub.mkdir()
    _tmux_card(sub, ["replay", str(FIXTURE), "--audio", "off", "--speed", "8"],
               ["replay of ", FIXTURE.name, "rehearsal: nothing was killed"])  # fmt: skip


def _report(big: int, medium: int) -> dict:
    """A kill's report: big (the victim, pid 4242) and medium, who asked (pid 2)."""
    return {
        "trigger": {"name": "medium", "pid": 2},
        "candidates": [{"pid": 4242, "name": "big", "points": big},
                       {"pid": 2, "name": "medium", "points": medium}],
        "victim_rank": 1,
    }  # fmt: skip


def test_the_card_says_the_kernels_why_from_its_report():
    """With the kernel's whole report in the kill record: its ranking, and who asked for
    the page when it was not the victim (window/terminal lines, and headless columns);
    without a task table, that the ranking is unknown; without a report, nothing."""
    from beep_av.summary import victim_card, why_lines

    report = _report(300, 200)
    kill = replace(HOG, report=report)
    assert why_lines(kill) == [
        "why: most points of 2: big 300 — medium had 67% of that",
        "medium (pid 2) asked for the page that tipped it",
    ]
    card = victim_card(kill)
    assert "why         most points of 2: big 300 — medium had 67% of that" in card
    assert "asked       medium (pid 2) asked for the page that tipped it" in card
    blind = replace(HOG, report={**report, "candidates": None, "trigger": None})
    assert why_lines(blind) == [
        "why: the kernel's table was not printed (rate-limited): its ranking is unknown"
    ]
    assert why_lines(HOG) == []


def test_the_why_line_speaks_the_captions_language(monkeypatch):
    """The why and asked lines come from the captions (why_* keys): French from
    fr.toml, on the window's and terminal's card (card_lines follows the live
    language); an edited template that does not format falls back to English."""
    from beep_av import summary
    from beep_av.summary import why_lines

    kill = replace(HOG, report=_report(31100, 20837))
    assert why_lines(kill, "fr") == [
        "pourquoi: le plus de points sur 2 : big 31,100 — medium en avait 67 %",
        "medium (pid 2) a demandé la page de trop",
    ]
    monkeypatch.setitem(
        summary._CAPTIONS, "fr", {"why_first": "{victim} a {pointz}", "why_asked": "{name"}
    )
    assert why_lines(kill, "fr") == [
        "why: most points of 2: big 31,100 — medium had 67% of that",
        "medium (pid 2) asked for the page that tipped it",
    ]
