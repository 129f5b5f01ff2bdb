"""Issue 13's must-show for item 4, "Signals that cannot leak", on real cgroup shows:

- SIGTERM at 40 moments spread over prepare, run and teardown of small real shows (half
  of them with a temporary swapfile, so swapon and swapoff are crossed too) leaves
  nothing behind each time: exit 130 (0 when the story had already finished), no
  beep-av cgroup, no swapfile active or on disk, no hog, no state file.
- The hog runs with no signal blocked (SigBlk 0 in /proc/PID/status) and none of
  SIGINT, SIGTERM, SIGHUP ignored, also when the show itself was started with signals
  blocked and ignored.

The moments are spread by time, from the instant the show's handler is installed (its
SigCgt in /proc/PID/status shows SIGTERM: before that, Python is still starting and
nothing exists) to the end of a calibration show of the same flags."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.fx_cgroup import beep_cgroups, beep_swaps, hog_pids
from tests.test_endings import Machine, can_stage

pytestmark = [pytest.mark.real, pytest.mark.slow]

BASE = ["--ram", "64M", "--cache", "8M", "--rate", "256M/s"]
QUIET = ["--output", "headless", "--audio", "off", "--calm", "0.5"]
CONFIGS = {
    "swapfile": [*BASE, "--swap", "32M", *QUIET],  # no swap here: a temporary swapfile
    "no swap": [*BASE, "--swap", "off", *QUIET],
}
MOMENTS = 40
ENDING_BITS = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _mask(pid: int, field: str) -> int | None:
    v = _status(pid).get(field)
    return int(v.strip(), 16) if v else None


class TimedShow:
    """A show in a subprocess; each output line kept with its arrival time."""

    def __init__(self, args: list[str], argv0: list[str] | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", SDL_VIDEODRIVER="dummy")
        cmd = [*(argv0 or [sys.executable]), "-m", "beep_av", "show", *args]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[tuple[float, str, str]] = []  # (t, "out"|"err", line)
        self._q: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(s, n), daemon=True)
            for s, n in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self.lines.append((time.monotonic() - self.t0, name, line))
            self._q.put(line)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def handler_installed(self, timeout: float = 30) -> float:
        """Wait until the show catches SIGTERM (its handler is in); the time since spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cgt = _mask(self.proc.pid, "SigCgt")
            if cgt is not None and cgt & (1 << (signal.SIGTERM - 1)):
                return self.now()
            if self.proc.poll() is not None:
                break
            time.sleep(0.002)
        raise AssertionError(f"the show never installed its SIGTERM handler: {self.text}")

    def ignoring(self) -> bool:
        """The show ignores SIGTERM now: its teardown has begun (interrupt.ignore)."""
        ign = _mask(self.proc.pid, "SigIgn")
        return ign is not None and bool(ign & (1 << (signal.SIGTERM - 1)))

    def anchor(self, section: int, timeout: float = 60) -> float | None:
        """Wait for the start of SECTIONS[section] (0: now, the handler is in; 1: the
        calm line; 2: the finale line; 3: the teardown) and return its time since spawn;
        None when the show ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if section == 0:
                return self.now()
            if section == 3:
                if self.ignoring():
                    return self.now()
            else:
                t = self.first(" calm " if section == 1 else " finale ")
                if t is not None:
                    return t
            time.sleep(0.001)
        return None

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if needle in self._q.get(timeout=0.1):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    break
        raise AssertionError(f"never saw {needle!r}: {self.text}")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._readers:
                t.join(5)

    def seen(self, needle: str, before: float | None = None) -> bool:
        return any(needle in ln for t, _, ln in list(self.lines) if before is None or t <= before)

    def first(self, needle: str) -> float | None:
        return next((t for t, _, ln in self.lines if needle in ln), None)

    @property
    def text(self) -> str:
        return "".join(ln for _, _, ln in self.lines)

    @property
    def stderr(self) -> str:
        return "".join(ln for _, n, ln in self.lines if n == "err")


def where(show: TimedShow, t: float) -> str:
    """Where a signal sent at `t` (since spawn) landed, from what the show had said."""
    if show.seen(" finale ", t):
        return "finale"  # the beep, the hold (or the teardown: see the exit code)
    if show.seen(" calm ", t):
        lines = [ln for tt, _, ln in list(show.lines) if tt <= t and "skipped" not in ln]
        phases = ("calm", "filling", "evicting", "swapping", "oom")
        said = [p for p in phases if any(f" {p} " in ln for ln in lines)]
        return f"run: {said[-1]}"
    if show.seen("stage: ", t):
        return "prepare: outputs"
    if show.seen("swap: ", t):
        return "prepare: cgroup+hog"
    return "prepare: route+swapfile"


@pytest.fixture
def stage_machine(tmp_path, monkeypatch):
    ok, why = can_stage()
    require(ok, why)
    state = tmp_path / "state"
    monkeypatch.setenv("BEEP_AV_STATE_DIR", str(state))  # our shows' state files only
    return state


def _residue(m: Machine, pid: int, cgroups_before: set[str]) -> list[str]:
    left = m.residue(pid)
    left += sorted(beep_cgroups() - cgroups_before - set(left))
    left += [s for s in beep_swaps() if s not in left]
    return left


def _calibrate(args: list[str], state: Path) -> tuple[list[float], TimedShow]:
    """One show to its end, and when (seconds since spawn) its handler was installed, it
    said calm, it said finale, its teardown began (SIGTERM turns ignored in its SigIgn:
    interrupt.ignore()), it exited."""
    m, before = Machine(state, []), beep_cgroups()
    show = TimedShow(args)
    armed = show.handler_installed()
    ignored = show.anchor(3)
    rc = show.wait(120)
    end = show.now()
    assert rc == 0, show.text
    assert _residue(m, show.proc.pid, before) == []
    calm, finale = show.first(" calm "), show.first(" finale ")
    assert None not in (calm, finale, ignored), show.text
    return [armed, calm, finale, ignored, end], show


SECTIONS = ("prepare", "run", "finale", "teardown")


def moments(n: int) -> list[tuple[int, float]]:
    """n moments as (section, fraction): a quarter each in prepare (handler installed to
    calm), the run (calm to finale), the finale (the beep and the hold) and the teardown
    (to the exit), evenly spread inside each."""
    k = len(SECTIONS)
    out = []
    for i in range(n):
        sec = i * k // n
        first = next(j for j in range(n) if j * k // n == sec)
        size = sum(1 for j in range(n) if j * k // n == sec)
        out.append((sec, (i - first) / size))
    return out


def test_sigterm_at_40_moments_leaves_nothing_behind(stage_machine):
    state = stage_machine
    marks = {}
    for name, args in CONFIGS.items():
        marks[name], show = _calibrate(args, state)
        if name == "swapfile" and not show.seen("swapfile /"):
            print("note: this machine has swap: no temporary swapfile was made")
    results = []
    for i, (sec, frac) in enumerate(moments(MOMENTS)):
        name = "swapfile" if i % 2 == 0 else "no swap"
        cal = marks[name]  # handler, calm, finale, teardown, exit
        m, before = Machine(state, []), beep_cgroups()
        show = TimedShow(CONFIGS[name])
        armed = show.handler_installed()
        # each section starts at this show's own event (shows differ by tens of ms),
        # then the calibration's share of the section is waited out
        anchor = show.anchor(sec)
        if anchor is not None:
            time.sleep(max(0.0, anchor + frac * (cal[sec + 1] - cal[sec]) - show.now()))
        sent_at = show.now()
        sent = show.proc.poll() is None
        if sent:
            show.proc.send_signal(signal.SIGTERM)
        rc = show.wait(60)
        if not sent:
            landed = "after the exit"
        elif SECTIONS[sec] == "teardown":
            landed = "teardown"  # seen started: SIGTERM already ignored in its SigIgn
        else:
            landed = where(show, sent_at)
            if landed == "finale" and rc == 0:
                landed = "teardown"  # aimed at the hold, this show's teardown had begun
        results.append((i, name, SECTIONS[sec], round(sent_at - armed, 3), landed, rc))
        detail = f"moment {i} ({name}, {sent_at - armed:.3f} s, {landed}): rc {rc}\n{show.text}"
        assert "Traceback" not in show.text and "warning: cleanup" not in show.text, detail
        if rc == 130:
            assert "beep-av: interrupted; the stage is torn down" in show.stderr, detail
        else:
            # 0 only when the story was over: the signal came in the teardown (ignored
            # there) or after the exit
            assert rc == 0 and show.seen(" finale "), detail
            assert landed in ("teardown", "after the exit"), detail
        if landed == "teardown":
            assert rc == 0, detail  # the teardown is never cut short
        assert _residue(m, show.proc.pid, before) == [], detail
        assert not list(state.glob("*.json")), detail
    print("\ncalibration (s since spawn: handler, calm, finale, teardown, exit):")
    for name, cal in marks.items():
        print(f"   {name}: {', '.join(f'{x:.2f}' for x in cal)}")
    print("SIGTERM moments (i, stage, aimed at, s after the handler, landed in, exit):")
    for r in results:
        print("  ", r)
    by_where = Counter((landed, rc) for *_, landed, rc in results)
    print("by where it landed, exit code:", dict(sorted(by_where.items())))
    places = {landed for *_, landed, _ in results}
    # spread over prepare, the run, the finale and the teardown
    assert any(p.startswith("prepare") for p in places), results
    assert any(p.startswith("run") for p in places), results
    assert {"finale", "teardown"} <= places, results


# ---------------------------------------------------------------- the hog's signals


def _hog_of(show_pid: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in hog_pids(show_pid):
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no hog of show {show_pid} appeared")


# a launcher that starts the show the way a careless parent might: SIGTERM and SIGUSR1
# blocked, SIGINT and SIGQUIT ignored (a script's `&`), SIGHUP ignored (nohup)
HOSTILE = (
    "import os, signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})\n"
    "for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "os.execv(sys.executable, sys.argv[1:])\n"
)


@pytest.mark.parametrize("parent", ["plain", "hostile"])
def test_the_hog_has_no_signal_blocked_or_ignored(stage_machine, parent):
    state = stage_machine
    m, before = Machine(state, []), beep_cgroups()
    args = ["--ram", "64M", "--cache", "8M", "--rate", "32M/s", "--swap", "off"]
    args += ["--output", "headless", "--audio", "off", "--calm", "2"]
    argv0 = [sys.executable, "-c", HOSTILE, sys.executable] if parent == "hostile" else None
    show = TimedShow(args, argv0=argv0)
    show.wait_for(" calm ")  # the hog is ready, the show in its calm: "during a show"
    hog = _hog_of(show.proc.pid)
    st = _status(hog)
    show_st = _status(show.proc.pid)
    keys = ("SigBlk", "SigIgn", "SigCgt")
    print(f"\n{parent}: hog {hog}", {k: st.get(k) for k in keys})
    print(f"{parent}: show", {k: show_st.get(k) for k in keys})
    show.proc.send_signal(signal.SIGTERM)
    rc = show.wait(60)
    assert st["SigBlk"].strip() == "0000000000000000", st
    assert int(st["SigIgn"], 16) & ENDING_BITS == 0, st
    assert int(st["SigIgn"], 16) & (1 << (signal.SIGQUIT - 1)) == 0, st
    assert int(show_st["SigBlk"], 16) & ENDING_BITS == 0, show_st  # the show hears them
    assert rc == 130, show.text
    assert _residue(m, show.proc.pid, before) == []
