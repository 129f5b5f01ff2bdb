"""--output selection: the pure `auto` rules (table), spec parsing (hostile input), and
kms/framebuffer on this machine (no /dev/dri, no /dev/fb0) -> CannotStage with the fix."""

from __future__ import annotations

import glob
import os

import pytest

from beep_av.config import Settings
from beep_av.errors import BadInput, CannotStage
from beep_av.model import ShowState
from beep_av.video.select import (
    Probe,
    ScriptedKeys,
    choose_output,
    describe_choice,
    make_output,
    parse_spec,
)
from tests.conftest import beep

NOTHING = Probe(has_display=False, has_dri=False, fb_writable=False, stdout_tty=False)


def P(**kw) -> Probe:
    return Probe(**{**NOTHING.__dict__, **kw})


@pytest.mark.parametrize(
    "env, probe, name, reason",
    [
        ({"DISPLAY": ":0"}, P(has_display=True), "window", "DISPLAY=:0 set"),
        ({"WAYLAND_DISPLAY": "wayland-0"}, P(has_display=True), "window", "WAYLAND_DISPLAY"),
        # a display wins over everything else
        (
            {"DISPLAY": ":1"},
            P(has_display=True, has_dri=True, stdin_vt=True, fb_writable=True, stdout_tty=True),
            "window",
            "DISPLAY=:1",
        ),
        # DISPLAY set but nobody answers: fall through
        ({"DISPLAY": ":9"}, P(stdout_tty=True), "terminal", "DISPLAY=:9 set but not answering"),
        ({"DISPLAY": ""}, P(stdout_tty=True), "terminal", "no DISPLAY/WAYLAND_DISPLAY"),
        ({}, P(has_dri=True, stdin_vt=True), "kms", "/dev/dri present and stdin is a console"),
        # a pseudo-terminal (SSH, tmux) never draws on the machine's own screen
        ({}, P(has_dri=True, fb_writable=True, stdout_tty=True), "terminal", "not a console"),
        ({}, P(fb_writable=True, stdin_vt=True), "framebuffer", "/dev/fb0 is writable"),
        # kms without SDL's libraries: the framebuffer, and the reason says why
        (
            {},
            P(has_dri=True, stdin_vt=True, fb_writable=True, kms_missing="libGLESv2.so.2"),
            "framebuffer",
            "kms lacks libGLESv2.so.2",
        ),
        (
            {},
            P(stdout_tty=True),
            "terminal",
            "no DISPLAY/WAYLAND_DISPLAY, stdin is not a console, stdout is a terminal",
        ),
        ({}, NOTHING, "headless", "stdout is not a terminal"),
    ],
)
def test_auto(env, probe, name, reason):
    got, why = choose_output("auto", env, probe)
    assert got == name
    assert reason in why


@pytest.mark.parametrize(
    "spec, name",
    [
        ("window", "window"),
        ("fullscreen", "fullscreen"),
        ("kms", "kms"),
        ("framebuffer", "framebuffer"),
        ("framebuffer:/dev/fb1", "framebuffer"),
        ("terminal", "terminal"),
        ("headless", "headless"),
        ("TERMINAL", "terminal"),
    ],
)
def test_explicit_specs_are_taken_as_asked(spec, name):
    assert choose_output(spec, {"DISPLAY": ":0"}, NOTHING) == (name, "asked for")


def test_framebuffer_device_argument():
    assert parse_spec("framebuffer:/dev/fb1") == ("framebuffer", "/dev/fb1")
    assert parse_spec("framebuffer") == ("framebuffer", None)


@pytest.mark.parametrize(
    "spec", ["vga", "terminal:x", "framebuffer:", "window:1", "ｗindow", "kms\x00", "-1", "a:b:c"]
)
def test_unknown_specs_list_the_choices(spec):
    with pytest.raises(BadInput, match="window.*terminal.*headless|no device|no ':'"):
        choose_output(spec, {}, NOTHING)


def test_describe_choice():
    text = describe_choice({}, P(stdout_tty=True))
    assert text == (
        "output auto would pick terminal: no DISPLAY/WAYLAND_DISPLAY, stdin is not a console, "
        "stdout is a terminal"
    )


def test_describe_choice_probes_this_machine():
    text = describe_choice({})
    assert text.startswith("output auto would pick ")


# ---------------------------------------------------------------- this machine


def test_kms_here_cannot_stage_with_the_fix():
    if glob.glob("/dev/dri/card*"):
        pytest.skip("this machine has /dev/dri")
    with pytest.raises(CannotStage, match="/dev/dri.*video"):
        make_output("kms", Settings(), lambda s: None)


def test_framebuffer_here_cannot_stage_with_the_fix():
    if os.path.exists("/dev/fb0"):
        pytest.skip("this machine has /dev/fb0")
    with pytest.raises(CannotStage, match="fb0.*text console.*video"):
        make_output("framebuffer", Settings(), lambda s: None)
    with pytest.raises(CannotStage, match="/dev/fb9"):
        make_output("framebuffer:/dev/fb9", Settings(), lambda s: None)


@pytest.mark.parametrize("spec", ["kms", "framebuffer"])
def test_cli_exit_3_for_kms_and_framebuffer_here(spec):
    if glob.glob("/dev/dri/card*") or os.path.exists("/dev/fb0"):
        pytest.skip("this machine has a display device")
    p = beep("rehearse", "--output", spec, "--audio", "off", timeout=60)
    assert p.returncode == 3, p.stderr
    lines = p.stderr.strip().splitlines()
    assert "video" in lines[-1] and "Traceback" not in p.stderr


def test_cli_unknown_output_exit_2():
    p = beep("rehearse", "--output", "vga", "--audio", "off", timeout=60)
    assert p.returncode == 2
    assert "terminal" in p.stderr and "Traceback" not in p.stderr


def test_make_output_builds_terminal_and_headless():
    out, name = make_output("terminal", Settings(), lambda s: None)
    assert name == "terminal" and type(out).__name__ == "TerminalOutput"
    said = []
    out, name = make_output("auto", Settings(), said.append, env={}, probe=NOTHING)
    assert name == "headless" and type(out).__name__ == "HeadlessOutput"
    assert said and "headless" in said[0]


# ---------------------------------------------------------------- scripted keys


class Null:
    fps = 12.0

    def __init__(self):
        self.opened = self.closed = False

    def open(self):
        self.opened = True

    def frame(self, state):
        return ["mute"] if state.t == 0 else []

    def close(self):
        self.closed = True


def test_scripted_keys_fire_at_show_time():
    inner = Null()
    out = ScriptedKeys(inner, [(2.0, "plus"), (0.5, "space"), (2.0, "q")])
    out.open()
    assert out.fps == 12.0
    assert out.frame(ShowState(t=0)) == ["mute"]
    assert out.frame(ShowState(t=1)) == ["toggle_pause"]
    assert out.frame(ShowState(t=1.5)) == []
    assert out.frame(ShowState(t=2.0)) == ["rate_up", "quit"]
    assert out.frame(ShowState(t=9)) == []
    out.close()
    assert inner.opened and inner.closed


def test_scripted_keys_reject_unknown_keys():
    with pytest.raises(BadInput, match="unknown key"):
        ScriptedKeys(Null(), [(1.0, "hyperspace")])
