"""The terminal output for real, in tmux: a private server (`tmux -L beeptest-<pid>`),
a fixed 120x40 pane, the pane's contents read back with `capture-pane -e -p`.

A small driver plays a scripted ShowState sequence through TerminalOutput and reports
its progress in a status file, so the test reads the pane at known moments (no sleeps
guessed against timing). One test also runs the real CLI (`beep-av rehearse`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require, wait_until

COLS, ROWS = 120, 40

DRIVER = r"""
import sys, time
from pathlib import Path
from beep_av.model import KillRecord, Phase, ShowState, Snapshot, MiB
from beep_av.video.terminal import TerminalOutput

status, ctl = Path(sys.argv[1]), Path(sys.argv[2])

def say(word):
    status.write_text(word)

def wait_for(name, limit=60.0):
    end = time.monotonic() + limit
    while not (ctl / name).exists() and time.monotonic() < end:
        time.sleep(0.02)

snap = Snapshot(t=0, anon_bytes=300 * MiB, cache_bytes=40 * MiB, swap_bytes=20 * MiB,
                ram_limit=512 * MiB, swap_limit=256 * MiB, hog_bytes=320 * MiB, hog_pid=4242)
kill = KillRecord(pid=424242, name="python3", exit=137, signal=9, oom_kill_count=1,
                  kmsg="Killed process 424242", anon_rss_kib=511856,
                  detected_by=("exit", "oom_kill", "kmsg"), latency_ms=1.5, t=2.0)
out = TerminalOutput(seed=3)
out.open()
try:
    t = 0.0
    for phase in (Phase.CALM, Phase.FILLING, Phase.EVICTING):
        for _ in range(5):
            out.frame(ShowState(t=t, phase=phase, intensity=0.3, snapshot=snap))
            t += 1 / 30
            time.sleep(1 / 30)
    say("swapping")
    end = time.monotonic() + 60
    while not (ctl / "go").exists() and time.monotonic() < end:
        out.frame(ShowState(t=t, phase=Phase.SWAPPING, intensity=0.8, stall=0.4, snapshot=snap))
        t += 1 / 30
        time.sleep(1 / 30)
    out.frame(ShowState(t=t, phase=Phase.OOM, kill=kill, oom_t=t, snapshot=snap))
    for _ in range(3):
        t += 1 / 30
        out.frame(ShowState(t=t, phase=Phase.FINALE, kill=kill, oom_t=t, snapshot=snap))
    say("finale")
    wait_for("end")
finally:
    out.close()
    say("closed")
    # stay alive: tmux hides the cursor of a dead pane, which would hide what we check
    wait_for("exit")
"""


@pytest.fixture
def tmux(tmp_path):
    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux)")
    sock = f"beeptest-{os.getpid()}-{tmp_path.name[-12:]}"

    def run(*args: str, check: bool = True) -> str:
        p = subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=20)
        if check and p.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    yield run
    path = run("display", "-p", "#{socket_path}", check=False).strip()
    run("kill-server", check=False)  # only our private server
    if path.endswith(sock):
        Path(path).unlink(missing_ok=True)  # tmux leaves its socket file behind


def start(tmux, tmp_path, env: dict[str, str], cmd: list[str] | None = None):
    status, ctl = tmp_path / "status", tmp_path / "ctl"
    ctl.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    cmd = cmd or [sys.executable, str(script), str(status), str(ctl)]
    env = {"PYTHONPATH": str(ROOT), "SDL_VIDEODRIVER": "dummy", **env}
    full = " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(cmd)
    # remain-on-exit keeps the pane after the program ends (or a Ctrl-C), so its last
    # state can be read; set in the same command queue, before the child can exit
    tmux(
        "new-session",
        "-d",
        "-x",
        str(COLS),
        "-y",
        str(ROWS),
        "-c",
        str(ROOT),
        full,
        ";",
        "set-option",
        "remain-on-exit",
        "on",
    )
    return status, ctl


def wait_status(status: Path, word: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if status.exists() and status.read_text() == word:
            return
        time.sleep(0.05)
    got = status.read_text() if status.exists() else "nothing"
    raise AssertionError(f"driver did not reach {word!r} (last: {got!r})")


def pane(tmux, escapes: bool = True) -> str:
    return tmux("capture-pane", "-p", *(["-e"] if escapes else []))


def modes(tmux) -> tuple[str, str]:
    a, c = tmux("display", "-p", "#{alternate_on} #{cursor_flag}").split()
    return a, c


def test_show_fills_the_pane_in_truecolor_then_restores(tmux, tmp_path):
    status, ctl = start(tmux, tmp_path, {"COLORTERM": "truecolor"})
    wait_status(status, "swapping")
    time.sleep(0.3)  # a few frames in swapping
    assert modes(tmux) == ("1", "0")  # alternate screen, cursor hidden
    text = pane(tmux)
    assert "38;2;" in text and "48;2;" in text
    plain = pane(tmux, escapes=False).splitlines()
    picture = [line for line in plain if line.count("▀") == COLS]
    assert len(picture) >= ROWS - 3, f"only {len(picture)} full rows of half blocks"
    assert any("RAM [" in line and "MiB" in line for line in plain)
    assert any("SWAPPING" in line for line in plain)
    (ctl / "go").touch()
    wait_status(status, "finale")
    finale = pane(tmux, escapes=False)
    assert "424242" in finale and "exit 137 (OOMKilled)" in finale
    assert "████" in finale  # the big BEEP
    (ctl / "end").touch()
    wait_status(status, "closed")
    time.sleep(0.2)
    assert modes(tmux) == ("0", "1")
    # the main screen keeps the victim card (the picture went with the alternate one)
    main = pane(tmux, escapes=False).splitlines()
    assert "  victim      pid 424242 (python3)" in main, main
    assert "  status      exit 137 (OOMKilled)" in main
    assert not any("▀" in line or "RAM [" in line for line in main)


def test_ctrl_c_in_the_middle_restores_the_terminal(tmux, tmp_path):
    status, ctl = start(tmux, tmp_path, {"COLORTERM": "truecolor"})
    wait_status(status, "swapping")
    assert modes(tmux) == ("1", "0")
    tmux("send-keys", "C-c")
    wait_status(status, "closed")
    time.sleep(0.2)
    assert modes(tmux) == ("0", "1")
    assert "victim" not in pane(tmux, escapes=False)  # no kill, no card


def test_no_color_has_no_colour_sequences(tmux, tmp_path):
    status, ctl = start(tmux, tmp_path, {"NO_COLOR": "1", "COLORTERM": "truecolor"})
    wait_status(status, "swapping")
    time.sleep(0.3)
    text = pane(tmux)
    assert not re.search(r"\033\[[0-9;]*[34]8;", text), "colour sequence under NO_COLOR"
    assert "▀" not in text
    plain = pane(tmux, escapes=False).splitlines()
    assert sum(1 for line in plain[: ROWS - 3] if set(line) & set("@%#*+=-:.")) >= ROWS - 6
    (ctl / "go").touch()
    wait_status(status, "finale")
    assert "424242" in pane(tmux, escapes=False)
    (ctl / "end").touch()
    wait_status(status, "closed")
    time.sleep(0.2)
    assert modes(tmux) == ("0", "1")


def test_keys_reach_the_show(tmux, tmp_path):
    """q typed in the pane comes back from frame() as `quit` (the driver's stdin is the pane)."""
    script = tmp_path / "keys.py"
    script.write_text(
        "import sys, time\n"
        "from beep_av.model import ShowState\n"
        "from beep_av.video.terminal import TerminalOutput\n"
        "out = TerminalOutput(seed=1)\n"
        "out.open()\n"
        "got = []\n"
        "try:\n"
        "    open(sys.argv[1], 'w').write('ready')\n"
        "    end = time.monotonic() + 30\n"
        "    while 'quit' not in got and time.monotonic() < end:\n"
        "        got += out.frame(ShowState())\n"
        "        time.sleep(0.03)\n"
        "finally:\n"
        "    out.close()\n"
        "open(sys.argv[1], 'w').write(','.join(got))\n"
        "time.sleep(30)  # tmux hides the cursor of a dead pane\n"
    )
    status = tmp_path / "status"
    start(tmux, tmp_path, {}, [sys.executable, str(script), str(status)])
    wait_status(status, "ready")
    tmux("send-keys", "m", "+", "Space", "q")
    wait_status(status, "mute,rate_up,toggle_pause,quit")
    time.sleep(0.2)
    assert modes(tmux) == ("0", "1")


def test_cli_rehearse_in_the_terminal(tmux, tmp_path):
    """The real command: `beep-av rehearse --output terminal` in the pane."""
    status = tmp_path / "status"
    cmd = [
        "sh",
        "-c",
        f"'{sys.executable} -m beep_av rehearse --output terminal --audio off --seed 5 "
        f"--calm 0 2>{tmp_path}/err; echo $? >{status}; sleep 30'",
    ]
    start(tmux, tmp_path, {"COLORTERM": "truecolor"}, cmd)
    seen_picture = False
    end = time.monotonic() + 150
    while time.monotonic() < end and not status.exists():
        if not seen_picture and modes(tmux)[0] == "1":
            text = pane(tmux)
            seen_picture = "▀" in text and "38;2;" in text
        time.sleep(0.2)
    err = (tmp_path / "err").read_text() if (tmp_path / "err").exists() else ""
    assert status.exists(), "rehearsal did not end"
    assert status.read_text().strip() == "0", err
    assert seen_picture, "no half-block truecolor picture seen during the rehearsal"
    time.sleep(0.2)
    assert modes(tmux) == ("0", "1")
    main = pane(tmux, escapes=False)
    # the card stayed, and says what a rehearsal is: nothing was killed (it once kept
    # the headless card of a kill with a pid, as if the kernel had acted)
    assert "REHEARSAL" in main and "rehearsal: nothing was killed" in main, main
    assert "OOM KILL" not in main and "victim" not in main, main


def test_cli_who_dies_lanes_in_the_terminal(tmux, tmp_path):
    """`beep-av rehearse --act who-dies --output terminal`: the three hogs' lanes are
    rows of the pane above the gauge line, by name and pid (the recording's), with
    their oom_score; under the finale's card the model's victim is marked DEAD and the
    others still show their oom_score; big's marker is in the palette's first colour."""
    import json

    status, rec = tmp_path / "status", tmp_path / "w.jsonl"
    quick = "--ram 192M --swap 96M --rate 128M/s --calm 0.3 --seed 1"
    cmd = [
        "sh",
        "-c",
        f"'{sys.executable} -m beep_av rehearse --act who-dies {quick} --output terminal "
        f"--audio off --record {rec} 2>{tmp_path}/err; echo $? >{status}; sleep 30'",
    ]
    start(tmux, tmp_path, {"COLORTERM": "truecolor"}, cmd)
    caps: list[list[str]] = []
    colours: list[str] = []
    end = time.monotonic() + 120
    while time.monotonic() < end and not status.exists():
        if modes(tmux)[0] == "1":
            caps.append(pane(tmux, escapes=False).splitlines())
            if len(colours) < 3 and any("oom_score" in x for x in caps[-1]):
                colours.append(pane(tmux))
        time.sleep(0.1)
    err = (tmp_path / "err").read_text() if (tmp_path / "err").exists() else ""
    assert status.exists() and status.read_text().strip() == "0", err
    lanes = next(
        json.loads(line)["lanes"] for line in rec.read_text().splitlines() if '"lanes"' in line
    )
    names = {x["name"]: x["pid"] for x in lanes}
    assert sorted(names) == ["big", "medium", "small"]

    def lane_rows(cap: list[str]) -> dict[str, str]:
        """The lane rows of a capture, by name: the rows right above "RAM [" """
        gauge = next(i for i, line in enumerate(cap) if line.startswith("RAM ["))
        rows = {}
        for line in cap[:gauge][-4:]:
            m = re.match(r"█ (\w+) +pid (\d+)  ", line)
            if m:
                rows[m.group(1)] = line
        return rows

    seen = [lane_rows(c) for c in caps if any(x.startswith("RAM [") for x in c)]
    assert seen, "no frame with a gauge line captured"
    first = next((s for s in seen if s), {})  # the show's first frames may precede the act's
    assert sorted(first) == sorted(names), caps[-1]
    for name, pid in names.items():
        assert f"pid {pid}  " in first[name] and "oom_score" in first[name], first[name]
    # the kill, as the model has it: big dead, the others alive with their oom_score
    dead = [
        s
        for s in seen
        if "DEAD (killed in the model)" in s.get("big", "")
        and all(re.search(r"oom_score [1-9]\d*", s.get(n, "")) for n in ("medium", "small"))
    ]
    assert dead, seen[-1]
    # the marker is drawn in its lane's colour (the palette's first: big)
    assert colours and all(
        re.search(r"38;2;235;95;55m(\x1b\[[0-9;]*m)*█(\x1b\[[0-9;]*m)* big ", c) for c in colours
    ), [c.splitlines()[-6] for c in colours]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _hog_rss_kib(shell_pid: int) -> int | None:
    """VmRSS of the hog: a grandchild of the pane's shell (shell -> beep-av -> hog)."""
    for show in _children(shell_pid):
        for kid in _children(show):
            try:
                cmd = Path(f"/proc/{kid}/cmdline").read_bytes()
                status = Path(f"/proc/{kid}/status").read_text()
            except OSError:
                continue
            if b"hog" in cmd:
                m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
                return int(m.group(1)) if m else None
    return None


@pytest.mark.parametrize("stage", ["rehearsal", "cgroup"])
def test_ctrl_z_gives_the_terminal_back_and_fg_takes_it_again(stage, tmux, tmp_path):
    """Ctrl-Z in a job-control shell: the pane is back on the main screen with the cursor
    shown and the shell says Stopped; a real stage's hog does not grow meanwhile; after
    `fg` the picture is back and `q` alone (no Enter) ends the show at once; the
    recording has the pause and no jump in its samples."""
    import json

    if stage == "cgroup":
        from tests.test_show_real import _can_stage

        require(_can_stage(), "needs root and a writable cgroup v1 memory controller")
        args = "show --ram 192M --swap 128M --cache 48M --rate 24M/s --calm 0.5"
    else:
        args = "rehearse --calm 0.5 --seed 2"
    status, rec = tmp_path / "status", tmp_path / "z.jsonl"
    tmux("new-session", "-d", "-x", str(COLS), "-y", str(ROWS), "-c", str(ROOT),
         "env PS1='$ ' COLORTERM=truecolor SDL_VIDEODRIVER=dummy bash --norc --noprofile -i")  # fmt: skip
    tmux("send-keys", f"{sys.executable} -m beep_av {args} --output terminal --audio off "
         f"--record {rec} 2>{tmp_path}/err", "Enter")  # fmt: skip
    assert wait_until(lambda: modes(tmux)[0] == "1" and "▀" in pane(tmux), 60), pane(tmux)
    assert wait_until(lambda: rec.exists() and '"filling"' in rec.read_text(), 60)
    time.sleep(1.0)
    tmux("send-keys", "C-z")
    assert wait_until(lambda: modes(tmux) == ("0", "1"), 10), modes(tmux)
    assert wait_until(lambda: "Stopped" in pane(tmux, escapes=False), 5), pane(tmux, escapes=False)
    if stage == "cgroup":
        shell = int(tmux("display", "-p", "#{pane_pid}").strip())
        before = _hog_rss_kib(shell)
        time.sleep(2.5)
        after = _hog_rss_kib(shell)
        assert before and after and after - before < 2048, (before, after)  # 24M/s: 60 MiB
    else:
        time.sleep(2.5)
    assert modes(tmux) == ("0", "1")
    tmux("send-keys", "fg", "Enter")
    assert wait_until(lambda: modes(tmux) == ("1", "0") and "▀" in pane(tmux), 10), modes(tmux)
    time.sleep(0.5)
    t = time.monotonic()
    tmux("send-keys", "q")
    assert wait_until(lambda: '"type":"end"' in rec.read_text(), 10), pane(tmux, escapes=False)
    took = time.monotonic() - t
    assert took < 3.0, took  # at once: the keys are raw again, no Enter needed
    assert wait_until(lambda: modes(tmux) == ("0", "1"), 5)
    # (a stopped job's list would go on at once: its status is asked for afterwards)
    tmux("send-keys", f"echo $? >{status}", "Enter")
    assert wait_until(lambda: status.exists() and status.read_text().strip(), 10)
    assert status.read_text().strip() == "0", (tmp_path / "err").read_text()
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    pauses = [x for x in lines if x["type"] == "pause"]
    assert len(pauses) == 1 and pauses[0]["seconds"] >= 2.5, pauses
    ts = [x["t"] for x in lines if x["type"] == "sample"]
    assert max(b - a for a, b in zip(ts, ts[1:], strict=False)) < 0.5  # no jump
    assert any(t > pauses[0]["t"] for t in ts)  # the show went on after it
    assert lines[-1]["type"] == "end" and lines[-1]["reason"] == "quit"
