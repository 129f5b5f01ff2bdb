"""The window output on SDL's dummy driver: keys -> commands, key plans through SDL's real
event queue, frames to PNG, a display that cannot open -> CannotStage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygame
import pytest

from beep_av.errors import BadInput, CannotStage
from beep_av.model import Phase, ShowState
from beep_av.noise import Noise
from beep_av.video.base import COMMANDS
from beep_av.video.window import (
    ACCEL_HINT,
    KEY_COMMANDS,
    WindowOutput,
    check_key_plan,
    key_code,
    key_command,
)


@pytest.fixture
def dummy(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.delenv(ACCEL_HINT, raising=False)
    outputs: list[WindowOutput] = []
    yield outputs
    for o in outputs:
        o.close()


def open_window(outputs: list, **kw) -> WindowOutput:
    w = WindowOutput(size=(320, 180), noise=Noise(seed=1), **kw)
    outputs.append(w)
    w.open()
    return w


@pytest.mark.parametrize(
    "key,command",
    [
        (pygame.K_SPACE, "toggle_pause"),
        (pygame.K_PLUS, "rate_up"),
        (pygame.K_EQUALS, "rate_up"),
        (pygame.K_KP_PLUS, "rate_up"),
        (pygame.K_MINUS, "rate_down"),
        (pygame.K_KP_MINUS, "rate_down"),
        (pygame.K_r, "release"),
        (pygame.K_m, "mute"),
        (pygame.K_c, "captions"),
        (pygame.K_q, "quit"),
        (pygame.K_ESCAPE, "quit"),
        (pygame.K_f, None),  # handled inside the window
        (pygame.K_h, None),  # handled inside the window
        (pygame.K_x, None),
        (-1, None),
    ],
)
def test_key_command_table(key: int, command: str | None) -> None:
    assert key_command(key) == command


def test_every_key_command_is_a_protocol_command() -> None:
    assert set(KEY_COMMANDS.values()) <= set(COMMANDS)


@pytest.mark.parametrize(
    "name,code",
    [
        ("space", pygame.K_SPACE),
        ("+", pygame.K_PLUS),
        ("kp+", pygame.K_KP_PLUS),
        ("Escape", pygame.K_ESCAPE),
        ("esc", pygame.K_ESCAPE),
        ("r", pygame.K_r),
        ("x", pygame.K_x),
    ],
)
def test_key_names(name: str, code: int) -> None:
    assert key_code(name) == code


@pytest.mark.parametrize(
    "plan",
    [
        [(1.0, "no-such-key")],
        [(1.0, "")],
        [(1.0, None)],
        [(float("nan"), "q")],
        [("1", "q")],
        [(True, "q")],
        [(1.0,)],
        [5],
    ],
)
def test_bad_key_plans(plan) -> None:
    with pytest.raises(BadInput):
        check_key_plan(plan)


def test_key_plan_is_sorted_by_time() -> None:
    assert check_key_plan([(2, "q"), (1, "space")]) == [(1.0, pygame.K_SPACE), (2.0, pygame.K_q)]


def test_key_plan_comes_back_as_commands(dummy) -> None:
    plan = [
        (0.10, "space"),
        (0.20, "+"),
        (0.20, "kp+"),
        (0.30, "-"),
        (0.40, "r"),
        (0.50, "m"),
        (0.50, "c"),
        (0.60, "h"),  # inside: no command
        (0.70, "escape"),
        (0.90, "q"),
    ]
    w = open_window(dummy, key_plan=plan)
    seen = {}
    for t in (0.0, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.5):
        seen[t] = w.frame(ShowState(t=t, phase=Phase.FILLING, intensity=0.3))
    assert seen == {
        0.0: [],
        0.15: ["toggle_pause"],
        0.25: ["rate_up", "rate_up"],
        0.35: ["rate_down"],
        0.45: ["release"],
        0.55: ["mute", "captions"],
        0.65: [],
        0.75: ["quit"],
        0.85: [],
        0.95: ["quit"],
        1.5: [],
    }
    assert w.help


def test_help_overlay_draws_over_the_scene(dummy) -> None:
    w = open_window(dummy, key_plan=[(0.5, "h")])
    state = ShowState(t=0.0, phase=Phase.FINALE)
    w.frame(state)
    before = pygame.surfarray.array3d(w.screen)
    w.frame(ShowState(t=1.0, phase=Phase.FINALE))
    after = pygame.surfarray.array3d(w.screen)
    assert w.help
    assert not np.array_equal(before, after)


def test_window_close_is_quit(dummy) -> None:
    w = open_window(dummy)
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert w.frame(ShowState()) == ["quit"]


def test_f_toggles_fullscreen_inside(dummy) -> None:
    w = open_window(dummy, key_plan=[(0.1, "f"), (0.2, "f")])
    assert w.frame(ShowState(t=0.1)) == []
    assert w.fullscreen
    assert w.frame(ShowState(t=0.2)) == []
    assert not w.fullscreen
    assert w.screen.get_size() == (320, 180)


def test_frames_are_saved(dummy, tmp_path: Path) -> None:
    w = open_window(dummy, frames_dir=tmp_path / "frames", frames_every=3)
    for i in range(7):
        w.frame(ShowState(t=i / 60, phase=Phase.SWAPPING, intensity=0.9, stall=0.5))
    w.close()  # the saver thread writes the files; closing waits for it
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["frame-00001.png", "frame-00002.png", "frame-00003.png"]
    img = pygame.image.load(str(tmp_path / "frames" / "frame-00002.png"))
    assert img.get_size() == (320, 180)
    assert pygame.surfarray.array3d(img).std() > 20  # noise, not a blank frame


def test_accel_hint_set_and_given_back(dummy, monkeypatch) -> None:
    import os

    w = open_window(dummy)
    assert os.environ.get(ACCEL_HINT) == "0"
    w.close()
    assert ACCEL_HINT not in os.environ
    monkeypatch.setenv(ACCEL_HINT, "1")  # the user's choice wins
    w2 = open_window(dummy)
    assert os.environ[ACCEL_HINT] == "1"
    w2.close()


def test_display_that_cannot_open_is_cannot_stage(dummy, monkeypatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "no-such-driver")
    w = WindowOutput()
    dummy.append(w)
    with pytest.raises(CannotStage) as e:
        w.open()
    assert e.value.code == 3
    assert "--output" in e.value.message and "\n" not in e.value.message
    w.close()
    w.close()  # safe twice


@pytest.mark.parametrize("captions", ["de", "", 3])
def test_bad_captions_language(captions) -> None:
    with pytest.raises(BadInput):
        WindowOutput(captions=captions)


@pytest.mark.parametrize("size", [(0, 100), (100, -1), (5,)])
def test_bad_sizes(size) -> None:
    with pytest.raises(BadInput):
        WindowOutput(size=size)
