"""`--output SPEC`: which picture output a show uses, and building it.

`choose_output` is pure (environment and a Probe of the machine in, a name and the
reason out); `probe_machine` is the adapter that looks at the machine; `make_output`
builds the chosen output (imports lazily: a terminal show never loads SDL windows)."""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from beep_av.errors import BadInput
from beep_av.keys import PLAN_NAMES, plan_command
from beep_av.model import ShowState

NAMES = ("auto", "window", "fullscreen", "kms", "framebuffer", "terminal", "headless")
CHOICES = "auto, window, fullscreen, kms, framebuffer[:DEV], terminal, headless"
DEFAULT_FB = "/dev/fb0"


@dataclass(frozen=True)
class Probe:
    """What the machine offers, as `auto` needs it (injectable for tests)."""

    has_display: bool  # the display named by DISPLAY/WAYLAND_DISPLAY has a socket
    has_dri: bool  # /dev/dri/card* present
    fb_writable: bool  # /dev/fb0 exists and is writable
    stdout_tty: bool
    stdin_vt: bool = False  # stdin is a Linux virtual console (/dev/ttyN)
    kms_missing: str = ""  # why kms cannot work here though DRM is present, "" when it can


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`framebuffer:/dev/fb1` -> ("framebuffer", "/dev/fb1"); others -> (name, None).

    Raises BadInput listing the choices for anything unknown."""
    text = (spec or "auto").strip()
    name, sep, arg = text.partition(":")
    name = name.lower()
    if name not in NAMES:
        raise BadInput(f"--output: unknown output {spec!r} (use {CHOICES})")
    if sep and name != "framebuffer":
        raise BadInput(f"--output: {name} takes no ':' argument ({spec!r})")
    if sep and not arg.strip():
        raise BadInput(f"--output: {spec!r} names no device (e.g. framebuffer:/dev/fb1)")
    return name, (arg.strip() if sep else None)


def choose_output(spec: str, env: Mapping[str, str], probe: Probe) -> tuple[str, str]:
    """(name, reason) of the output `spec` means here. Pure.

    `auto`: a window when DISPLAY or WAYLAND_DISPLAY is set (and answers); on a console
    (stdin a virtual terminal) kms where there is a DRM card, else the
    framebuffer when /dev/fb0 is writable; the terminal when stdout is one (a pseudo-
    terminal, as over SSH, never draws on the machine's screen); else headless."""
    name, _dev = parse_spec(spec)
    if name != "auto":
        return name, "asked for"
    said: list[str] = []
    shown = [f"{k}={env[k]}" for k in ("WAYLAND_DISPLAY", "DISPLAY") if env.get(k)]
    if shown and probe.has_display:
        return "window", f"{' and '.join(shown)} set"
    said.append(
        f"{', '.join(shown)} set but not answering" if shown else "no DISPLAY/WAYLAND_DISPLAY"
    )
    if probe.stdin_vt:
        if probe.has_dri and not probe.kms_missing:
            return "kms", ", ".join([*said, "/dev/dri present and stdin is a console"])
        said.append(f"kms lacks {probe.kms_missing}" if probe.has_dri else "no /dev/dri")
        if probe.fb_writable:
            return "framebuffer", ", ".join([*said, "stdin is a console, /dev/fb0 is writable"])
        said.append("no writable /dev/fb0")
    else:
        said.append("stdin is not a console")
    if probe.stdout_tty:
        return "terminal", ", ".join([*said, "stdout is a terminal"])
    return "headless", ", ".join([*said, "stdout is not a terminal"])


# ---------------------------------------------------------------- the machine (adapter)

_VT = re.compile(r"^/dev/tty[0-9]+$")


def _display_answers(env: Mapping[str, str]) -> bool:
    way = env.get("WAYLAND_DISPLAY")
    if way:
        path = way if way.startswith("/") else os.path.join(env.get("XDG_RUNTIME_DIR", ""), way)
        if os.path.exists(path):
            return True
    disp = env.get("DISPLAY", "")
    if not disp:
        return False
    host, _, rest = disp.rpartition(":")
    if host and host != "unix":
        return True  # a remote (e.g. SSH-forwarded) display: let SDL try it
    number = rest.split(".")[0]
    return number.isdigit() and os.path.exists(f"/tmp/.X11-unix/X{number}")


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def probe_machine(env: Mapping[str, str] | None = None, fb: str = DEFAULT_FB) -> Probe:
    """Look at this machine: display socket, DRM cards, framebuffer, stdin/stdout."""
    env = os.environ if env is None else env
    try:
        stdin_vt = bool(_VT.match(os.ttyname(0)))
    except OSError:
        stdin_vt = False
    try:
        out_fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        out_fd = 1
    return Probe(
        has_display=_display_answers(env),
        has_dri=bool(glob.glob("/dev/dri/card[0-9]*")),
        fb_writable=os.path.exists(fb) and os.access(fb, os.W_OK),
        stdout_tty=_isatty(out_fd),
        stdin_vt=stdin_vt,
    )


def describe_choice(env: Mapping[str, str] | None = None, probe: Probe | None = None) -> str:
    """One line for `beep-av doctor`: what `--output auto` would pick here, and why."""
    env = os.environ if env is None else env
    name, reason = choose_output("auto", env, probe or probe_machine(env))
    return f"output auto would pick {name}: {reason}"


# ---------------------------------------------------------------- building outputs

# key plan name -> command, from the one key map (beep_av/keys.py)
KEY_NAMES = {name: cmd for name in PLAN_NAMES if (cmd := plan_command(name)) and cmd != "help"}


class ScriptedKeys:
    """Wraps an output: also returns the commands of a key plan [(show seconds, key
    name)] once the show time reaches them (tests, scripted rehearsals)."""

    def __init__(self, inner: Any, plan: list[tuple[float, str]]) -> None:
        for _, key in plan:
            if key.lower() not in KEY_NAMES:
                raise BadInput(f"--keys: unknown key {key!r} (known: {', '.join(KEY_NAMES)})")
        self.inner = inner
        self.plan = sorted(plan)

    @property
    def fps(self) -> float:
        return self.inner.fps

    def open(self) -> None:
        self.inner.open()

    def frame(self, state: ShowState) -> list[str]:
        cmds = list(self.inner.frame(state))
        while self.plan and self.plan[0][0] <= state.t:
            cmds.append(KEY_NAMES[self.plan.pop(0)[1].lower()])
        return cmds

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # paces_itself and friends
        return getattr(self.inner, name)


def make_output(
    spec: str,
    settings: Any,
    say: Callable[[str], None],
    key_plan: list[tuple[float, str]] | None = None,
    env: Mapping[str, str] | None = None,
    probe: Probe | None = None,
) -> tuple[Any, str]:
    """Build the output `spec` names -> (output, name). Raises BadInput for an unknown
    spec and CannotStage (with the fix) when kms/framebuffer cannot work here; nothing
    is opened yet (the caller calls open())."""
    env = os.environ if env is None else env
    name, dev = parse_spec(spec)
    if name == "auto":
        name, reason = choose_output("auto", env, probe or probe_machine(env))
        say(f"output: {name} ({reason})")
    lang = getattr(settings, "captions", "en")
    seed = getattr(settings, "seed", None)
    out: Any
    window_args = dict(
        size=None,
        frames_dir=getattr(settings, "frames", None),
        frames_every=getattr(settings, "frames_every", 1),
        key_plan=key_plan,  # the window replays key plans itself
        captions=lang,
    )
    if name in ("window", "fullscreen"):
        from beep_av.noise import Noise
        from beep_av.video.window import WindowOutput

        out = WindowOutput(fullscreen=name == "fullscreen", noise=Noise(seed), **window_args)
        return out, name
    elif name == "kms":
        from beep_av.noise import Noise
        from beep_av.video.kms import KmsOutput

        out = KmsOutput(noise=Noise(seed), captions=lang)
        out.check()
    elif name == "framebuffer":
        from beep_av.video.framebuffer import FramebufferOutput

        out = FramebufferOutput(dev or DEFAULT_FB, lang=lang, seed=seed)
        out.check()
    elif name == "terminal":
        from beep_av.video.terminal import TerminalOutput

        out = TerminalOutput(seed=seed, env=env)
    else:
        from beep_av.video.headless import HeadlessOutput

        out = HeadlessOutput()
    if key_plan:
        out = ScriptedKeys(out, key_plan)
    return out, name
