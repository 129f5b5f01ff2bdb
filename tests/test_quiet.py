"""One voice on the terminal (issue 25): the C libraries' lines written to fd 2 during a
show are held back (kept for the recording), everything else goes through at once."""

from __future__ import annotations

import subprocess
import sys

from beep_av.quiet import is_library_line
from tests.conftest import ROOT

# PortAudio's and ALSA's own lines, as they reach stderr when a sound server dies
# (FIELD-NOTES: PulseAudio SIGKILLed mid-show) or a card is missing
LIBRARY_LINES = [
    b"Expression 'err' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 3355\n",
    b"Expression 'ContinuePoll( self, StreamDirection_Out, &pollTimeout, &pollCapture )'"
    b" failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 3907\n",
    b"ALSA lib pcm_dmix.c:1032:(snd_pcm_dmix_open) unable to open slave\n",
    b"ALSA lib pulse.c:242:(pulse_connect) PulseAudio: Unable to connect: Connection refused\n",
    b"Cannot connect to server socket err = No such file or directory\n",
    b"jack server is not running or cannot be started\n",
]

CHILD = r"""
import os, subprocess, sys
from beep_av.quiet import StderrFilter
kept = []
f = StderrFilter(kept.append)
f.start()
for line in sys.stdin.buffer.read().split(b"|"):
    os.write(2, line)
print("beep-av: one line of ours", file=sys.stderr, flush=True)
subprocess.run(["sh", "-c", "echo 'ALSA lib conf.c:5180: a child of the show' >&2; echo 'a child says this' >&2"])
f.stop()
os.write(2, b"after the show\n")
print("\n".join(kept))
"""


def test_library_lines_are_held_back_and_ours_go_through():
    r = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=b"|".join(LIBRARY_LINES),
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode().splitlines()
    assert err == ["beep-av: one line of ours", "a child says this", "after the show"], err
    kept = r.stdout.decode().splitlines()
    assert len(kept) == len(LIBRARY_LINES) + 1
    assert kept[0].startswith("Expression 'err' failed") and "a child of the show" in kept[-1]


def test_only_known_library_lines_are_held():
    assert all(is_library_line(x) for x in LIBRARY_LINES)
    for ours in (b"beep-av: internal error: x\n", b"Traceback (most recent call last):\n",
                 b"audio: default vanished mid-show\n", b"hog: cannot allocate\n"):  # fmt: skip
        assert not is_library_line(ours)
