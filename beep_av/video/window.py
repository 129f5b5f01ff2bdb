"""The pygame-ce window output (a desktop window, or fullscreen).

Adapter: touches the display through SDL and nothing else. Draws the Scene, turns keys
into presenter commands, handles `f` (fullscreen) and `h` (help) itself, replays
scripted key plans by posting real KEYDOWN events into SDL's queue."""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pygame

from beep_av.errors import BadInput, CannotStage
from beep_av.keys import COMMANDS, PLAN_NAMES
from beep_av.model import ShowState
from beep_av.noise import Noise
from beep_av.video.captions import Captions
from beep_av.video.frames import FrameSaver
from beep_av.video.scene import Scene

# Under Xvfb (and plain X11 without a GPU) SDL's default window framebuffer goes
# through software GL: 3.8 ms a flip at 720p, 8-16 ms at 1080p here. With the hint at 0,
# SDL uses the X shared-memory path: 0.18 ms and 0.4-0.8 ms (benchmarks/bench_video.py).
ACCEL_HINT = "SDL_FRAMEBUFFER_ACCELERATION"
DEFAULT_SIZE = (1280, 720)  # windowed; fullscreen takes the desktop's size

# the one key map (beep_av/keys.py): SDL's key codes of ASCII keys are their characters
KEY_COMMANDS: dict[int, str] = {
    **{ord(ch): cmd for ch, cmd in COMMANDS.items()},
    pygame.K_KP_PLUS: "rate_up",
    pygame.K_KP_MINUS: "rate_down",
}
KEY_FULLSCREEN = pygame.K_f  # handled inside the window
KEY_HELP = pygame.K_h  # handled inside the window

# names a key plan may use (pygame's own key names are accepted too)
KEY_NAMES: dict[str, int] = {
    **{name: ord(ch) for name, ch in PLAN_NAMES.items()},
    "kp+": pygame.K_KP_PLUS,
    "kp-": pygame.K_KP_MINUS,
}


HELP_LINES = (
    ("space", "start / pause the hog"),
    ("+  -", "faster / slower"),
    ("r", "release: kill the hog now"),
    ("m", "mute"),
    ("c", "captions: en / fr / off"),
    ("f", "fullscreen"),
    ("h", "this help"),
    ("q  Esc", "quit"),
)


def key_command(key: int) -> str | None:
    """The presenter command of a key code (video/base.py COMMANDS), or None."""
    return KEY_COMMANDS.get(key)


def key_code(name: str) -> int:
    """A key plan's key name ("space", "+", "r", "escape", ...) -> SDL key code.

    Raises BadInput for a name SDL does not know."""
    if not isinstance(name, str) or not name:
        raise BadInput(f"key plan: {name!r} is not a key name")
    code = KEY_NAMES.get(name.lower())
    if code is not None:
        return code
    with warnings.catch_warnings():  # "pygame.init() has not been called": harmless here
        warnings.simplefilter("ignore")
        try:
            return pygame.key.key_code(name)
        except ValueError:
            raise BadInput(f"key plan: unknown key {name!r}") from None


def check_key_plan(plan: Sequence[tuple[float, str]] | None) -> list[tuple[float, int]]:
    """Validate a key plan [(show_time_s, key_name), ...] -> [(t, key code)] sorted by t."""
    out: list[tuple[float, int]] = []
    for item in plan or ():
        try:
            t, name = item
        except (TypeError, ValueError):
            raise BadInput(f"key plan: {item!r} is not a (time, key) pair") from None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise BadInput(f"key plan: time {t!r} is not a number of seconds")
        out.append((float(t), key_code(name)))
    out.sort(key=lambda p: p[0])
    return out


class WindowOutput:
    """Output protocol on a pygame-ce window: resizable, 60 fps target."""

    fps: float = 60.0

    def __init__(
        self,
        fullscreen: bool = False,
        size: tuple[int, int] | None = (1280, 720),
        frames_dir: str | Path | None = None,
        frames_every: int = 1,
        key_plan: Sequence[tuple[float, str]] | None = None,
        captions: str | Captions | None = "en",
        noise: Noise | None = None,
    ) -> None:
        if size is None:  # the caller has no preference
            size = DEFAULT_SIZE
        if len(size) != 2 or min(size) < 1:
            raise BadInput(f"window size {size!r} must be two positive numbers")
        self.fullscreen = fullscreen
        self.size = (int(size[0]), int(size[1]))
        self.plan = check_key_plan(key_plan)
        self._plan_next = 0
        # every language is loaded up front: `c` cycles en -> fr -> off during the show
        if isinstance(captions, Captions) or captions is None:
            self.captions = captions
            self.lang = "en"
        elif captions in ("en", "fr", "off"):
            self.captions = Captions.load()
            self.lang = captions if captions != "off" else "en"
        else:
            raise BadInput(f"--captions: {captions!r} is not one of en, fr, off")
        self.noise = noise if noise is not None else Noise()
        self.saver = FrameSaver(frames_dir, frames_every) if frames_dir is not None else None
        self.help = False
        self.screen: pygame.Surface | None = None
        self.scene: Scene | None = None
        self.last_frame_ms = 0.0  # draw + flip time of the last frame
        self._hint_set = False
        self._help_cache: (
            tuple[tuple[int, int], list[tuple[pygame.Surface, pygame.Surface]]] | None
        ) = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open the window. Raises CannotStage (exit 3) with the fix."""
        if self.screen is not None:
            return
        if ACCEL_HINT not in os.environ:
            os.environ[ACCEL_HINT] = "0"
            self._hint_set = True
        try:
            pygame.display.init()
            self._set_mode()
        except pygame.error as e:
            self.close()
            raise CannotStage(self._fix(str(e))) from None
        pygame.display.set_caption("beep-av")
        pygame.key.set_repeat()  # a held key is one command, not a stream
        self.scene = Scene(self.screen.get_size(), self.captions, self.lang)

    def _fix(self, err: str) -> str:
        return (
            f"cannot open a window ({err}): run inside a desktop session (DISPLAY or "
            "WAYLAND_DISPLAY set), or use --output kms, terminal or headless"
        )

    def _set_mode(self) -> None:
        if self.fullscreen:
            self.screen = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
            pygame.mouse.set_visible(False)
        else:
            self.screen = pygame.display.set_mode(self.size, pygame.RESIZABLE)
            pygame.mouse.set_visible(True)

    def close(self) -> None:
        """Close the window and give SDL's environment back as it was. Safe twice.
        Saved frames are finished first (raises BadInput if one could not be written)."""
        try:
            if self.saver is not None:
                self.saver.close()
        finally:
            self._close_display()
        if self.saver is not None and self.saver.dropped:
            s = self.saver
            print(
                f"frames: {s.written} saved in {s.dir}, {s.dropped} dropped "
                "(saving was slower than the show)",
                file=sys.stderr,
            )
            s.dropped = 0  # said once

    def _close_display(self) -> None:
        if pygame.display.get_init():
            pygame.display.quit()
        self.screen = None
        if self._hint_set:
            os.environ.pop(ACCEL_HINT, None)
            self._hint_set = False

    # ------------------------------------------------------------ frames

    def frame(self, state: ShowState) -> list[str]:
        """Draw `state`, flip; return the presenter commands seen since the last call."""
        if self.screen is None:
            self.open()
        t0 = time.perf_counter()
        self._post_plan(state.t)
        commands = self._events()
        screen = self.screen
        assert screen is not None and self.scene is not None
        if screen.get_size() != self.scene.size:
            self.scene.resize(screen.get_size())
        self.scene.draw(state, self.noise, screen)
        if self.help:
            self._draw_help(screen)
        pygame.display.flip()
        if self.saver is not None:
            self.saver.offer(screen)
        self.last_frame_ms = (time.perf_counter() - t0) * 1000
        return commands

    def _post_plan(self, t: float) -> None:
        """Post the planned keys whose time has come as real SDL KEYDOWN events."""
        while self._plan_next < len(self.plan) and self.plan[self._plan_next][0] <= t:
            key = self.plan[self._plan_next][1]
            self._plan_next += 1
            pygame.event.post(
                pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0)
            )

    def _events(self) -> list[str]:
        commands: list[str] = []
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                commands.append("quit")
            elif event.type == pygame.KEYDOWN:
                key = getattr(event, "key", None)
                if key == KEY_FULLSCREEN:
                    self.fullscreen = not self.fullscreen
                    self._set_mode()
                elif key == KEY_HELP:
                    self.help = not self.help
                elif key is not None:
                    cmd = key_command(key)
                    if cmd is not None:
                        commands.append(cmd)
            elif event.type in (pygame.VIDEORESIZE, pygame.WINDOWSIZECHANGED):
                self.screen = pygame.display.get_surface()
                if not self.fullscreen and self.screen is not None:
                    self.size = self.screen.get_size()
        return commands

    def _draw_help(self, screen: pygame.Surface) -> None:
        w, h = screen.get_size()
        if self._help_cache is None or self._help_cache[0] != (w, h):
            if not pygame.font.get_init():
                pygame.font.init()
            font = pygame.font.Font(None, max(10, int(h * 0.05)))
            rows = [
                (font.render(k, True, (255, 210, 60)), font.render(d, True, (255, 255, 255)))
                for k, d in HELP_LINES
            ]
            self._help_cache = ((w, h), rows)
        rows = self._help_cache[1]
        kw = max(k.get_width() for k, _ in rows) + h // 20
        lw = kw + max(d.get_width() for _, d in rows)
        lh = sum(d.get_height() for _, d in rows)
        pad = int(h * 0.03)
        x, y = (w - lw) // 2, (h - lh) // 2
        screen.fill((10, 10, 30), (x - pad, y - pad, lw + 2 * pad, lh + 2 * pad))
        for k, d in rows:
            screen.blit(k, (x, y))
            screen.blit(d, (x + kw, y))
            y += d.get_height()
