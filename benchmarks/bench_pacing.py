"""Frame pacing while a real stage swaps: the p99 interval between frames in the
`swapping` phase against the p99 in `calm` of the same real cgroup shows (target <=
1.5x), for the window (under Xvfb) and the terminal (on a pseudo-terminal whose other
end this process reads as fast as it comes).

Each show runs as its own process, `beep-av show` with its output wrapped to stamp the
monotonic time and the phase of every frame() call; an interval counts for a phase when
both of its frames are in it. The first CALM_SKIP frames are the window's and fonts'
warm-up, not calm. Needs root and a cgroup v1 memory controller (as bench_show)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from benchmarks.harness import Row, p99

ROOT = Path(__file__).resolve().parent.parent
SHOWS = int(os.environ.get("BEEP_BENCH_PACING_SHOWS", "2"))  # per output, pooled
CALM_SKIP = 30
TARGET = 1.5
# a slow hog, so that swapping lasts ~3 s (~180 window frames) per show
ARGS = [
    "--ram", "160M", "--swap", "96M", "--cache", "32M", "--rate", "32M/s",
    "--calm", "3", "--audio", "off",
]  # fmt: skip

DRIVER = r"""
import json, sys, time
import beep_av.app as app

stamps = []
real = app._open_outputs


class Timed:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def frame(self, state):
        stamps.append((time.monotonic(), state.phase.value))
        return self.inner.frame(state)


def timed_outputs(settings, keys, say):
    out, name = real(settings, keys, say)
    return Timed(out), name


app._open_outputs = timed_outputs
from beep_av.cli import main

try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump(stamps, f)
raise SystemExit(code)
"""


def intervals(stamps: list[tuple[float, str]]) -> dict[str, list[float]]:
    """Seconds between consecutive frames, by the phase both frames are in."""
    out: dict[str, list[float]] = {}
    calm_seen = 0
    for (t0, p0), (t1, p1) in zip(stamps, stamps[1:], strict=False):
        if p0 == "calm":
            calm_seen += 1
            if calm_seen <= CALM_SKIP:
                continue
        if p0 == p1:
            out.setdefault(p0, []).append(t1 - t0)
    return out


def _run_show(output: str, env: dict[str, str], log: Path) -> tuple[int, str]:
    argv = [sys.executable, "-c", DRIVER, str(log), "show", *ARGS, "--output", output]
    env = {**env, "PYTHONPATH": str(ROOT), "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    if output != "terminal":
        r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        return r.returncode, r.stderr
    # the terminal: a real tty (isatty, termios, a size), drained as fast as it writes
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env["COLORTERM"] = "truecolor"
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    deadline = time.monotonic() + 300
    try:
        while p.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 1 << 16)
                except OSError:  # the child closed its end
                    break
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()  # our own child, by its handle
            p.wait()
        os.close(master)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    return p.returncode, err


def _pacing_row(name: str, output: str, env: dict[str, str]) -> Row:
    pooled: dict[str, list[float]] = {}
    problems = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(SHOWS):
            log = Path(d) / f"{output}{i}.json"
            code, err = _run_show(output, env, log)
            if code != 0 or not log.exists():
                last = err.strip().splitlines()[-1:] or ["no output"]
                problems.append(f"show {i} exit {code}: {last[0]}")
                continue
            for phase, xs in intervals(json.loads(log.read_text())).items():
                pooled.setdefault(phase, []).extend(xs)
    calm, swap = pooled.get("calm", []), pooled.get("swapping", [])
    if problems or len(calm) < 50 or len(swap) < 50:
        why = "; ".join(problems) or f"{len(calm)} calm, {len(swap)} swapping intervals"
        return Row(f"frame pacing while swapping, {name}", float("nan"), "x", "runs", False, why)
    c, s = p99(calm), p99(swap)
    ratio = s / c
    return Row(
        f"frame pacing while swapping, {name}: p99 vs calm p99",
        ratio,
        "x",
        f"<= {TARGET}x calm p99",
        ratio <= TARGET,
        f"calm p99 {c * 1e3:.1f} ms ({len(calm)}), swapping p99 {s * 1e3:.1f} ms ({len(swap)}),"
        f" {SHOWS} shows",
    )


def run() -> list[Row]:
    if os.geteuid() != 0:
        return [Row("frame pacing while swapping (needs root)", float("nan"), "x", "runs", False)]
    rows = []
    if shutil.which("Xvfb") is None:
        rows.append(Row("frame pacing, window (Xvfb missing)", float("nan"), "x", "runs", False))
    else:
        from tests.fx_xvfb import start_xvfb

        server = start_xvfb("1280x720x24")
        try:
            rows.append(_pacing_row("window (Xvfb)", "window", server.env))
        finally:
            server.stop()
    rows.append(_pacing_row("terminal (pty)", "terminal", dict(os.environ)))
    return rows
