"""Settings, SIZE and RATE parsing, TOML config files and presets.

All tunables of a show live in `Settings`; the command line, `--config FILE` and
`--preset NAME` all fill the same fields (flags override the file)."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from beep_av.errors import BadInput
from beep_av.resources import asset

# ---------------------------------------------------------------- SIZE and RATE

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*|%)\s*$")
MAX_BYTES = 1 << 50  # 1 PiB: anything above is a typo, not a machine


def parse_size(text: str, available: int | None = None, what: str = "size") -> int:
    """`512M`, `1.5G`, `256MiB`, `4096`, `10%` (of `available` bytes) -> bytes.

    Raises BadInput with a one-line message naming the value."""
    if not isinstance(text, str):
        raise BadInput(f"{what}: expected a size such as 512M, got {text!r}")
    if text.strip().startswith("-"):
        raise BadInput(f"{what}: {text!r} is negative (a size is 0 or more, e.g. 512M)")
    m = _SIZE_RE.match(text)
    if not m:
        raise BadInput(f"{what}: {text!r} is not a size (use e.g. 512M, 1.5G, 256MiB, 10%)")
    number, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(number):
        raise BadInput(f"{what}: {text!r} is not a size")
    if unit == "%":
        if available is None:
            raise BadInput(f"{what}: a percentage is not allowed here ({text!r})")
        if number > 100:
            raise BadInput(f"{what}: {text!r} is more than 100%")
        value = available * number / 100
    elif unit in _UNITS:
        value = number * _UNITS[unit]
    else:
        raise BadInput(f"{what}: unknown unit {m.group(2)!r} in {text!r} (use K, M, G, T or %)")
    if value > MAX_BYTES:
        raise BadInput(f"{what}: {text!r} is absurdly large")
    return int(value)


def parse_rate(text: str, what: str = "--rate") -> int:
    """`64M/s`, `64M`, `1G/s` -> bytes per second (> 0)."""
    if not isinstance(text, str):
        raise BadInput(f"{what}: expected a rate such as 64M/s, got {text!r}")
    body = text.strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    value = parse_size(body, None, what)
    if value <= 0:
        raise BadInput(f"{what}: {text!r} must be more than 0 bytes per second")
    return value


def format_mib(n: float) -> str:
    return f"{n / 1024**2:.0f} MiB"


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Every option of a show. Sizes are kept as the user's strings until the stage
    resolves them against the machine (so `10%` means 10% of *this* machine)."""

    stage: str = "auto"  # auto | cgroup | host | rehearsal
    ram: str = "auto"  # SIZE, or auto: a safe share of MemAvailable
    swap: str = "auto"  # auto | off | SIZE
    cache: str = "auto"  # SIZE, or auto: a quarter of --ram
    rate: str = "auto"  # RATE, or auto: pace the story to about a minute
    output: str = "auto"
    audio: str = "auto"
    beep_freq: float = 880.0
    beep_length: float = 400.0  # ms
    beep_repeats: int = 1
    record: str | None = None
    captions: str = "en"
    seed: int | None = None
    yes: bool = False
    calm: float = 3.0  # seconds of calm before the hog climbs
    sample_hz: float = 50.0
    frames: str | None = None
    frames_every: int = 1
    look: str = "static"  # static | raw
    host_floor: str = "auto"
    speed: float = 1.0  # replay only
    restarts: int = 0  # the container stage: the engine's restart policy on-failure:N
    act: str = "story"  # story | who-dies | bystander | throttle (beep_av.acts)
    hogs: str | None = None  # who-dies: NAME:SIZE[:ADJ],... (beep_av.acts.parse_hogs)
    killer: str = "beep-av"  # freeze: who ends it, beep-av (its PSI trigger) | systemd-oomd


SETTING_TYPES: dict[str, type | tuple[type, ...]] = {
    "stage": str,
    "ram": str,
    "swap": str,
    "cache": str,
    "rate": str,
    "output": str,
    "audio": str,
    "beep_freq": (int, float),
    "beep_length": (int, float),
    "beep_repeats": int,
    "record": str,
    "captions": str,
    "seed": int,
    "yes": bool,
    "calm": (int, float),
    "sample_hz": (int, float),
    "frames": str,
    "frames_every": int,
    "look": str,
    "host_floor": str,
    "speed": (int, float),
    "restarts": int,
    "act": str,
    "hogs": str,
    "killer": str,
}
assert set(SETTING_TYPES) == {f.name for f in fields(Settings)}

STAGES = ("auto", "cgroup", "host", "rehearsal", "container")
CONTAINER_ENGINES = ("docker", "podman")  # --stage container:ENGINE


def stage_ok(value: str) -> bool:
    """auto, cgroup, host, rehearsal, container or container:docker|podman."""
    kind, sep, engine = value.partition(":")
    if kind == "container" and sep:
        return engine in CONTAINER_ENGINES
    return not sep and value in STAGES


CAPTIONS = ("en", "fr", "off")
LOOKS = ("static", "raw")


def settings_from_mapping(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a config mapping (TOML keys use the long flag names, `-` or `_`)."""
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in SETTING_TYPES:
            raise BadInput(f"{source}: unknown key {raw_key!r}")
        expected = SETTING_TYPES[key]
        # bool is an int in Python; a TOML `true` is never a number here
        if isinstance(value, bool) and expected is not bool:
            raise BadInput(f"{source}: key {raw_key!r} has the wrong type (got a boolean)")
        if not isinstance(value, expected):
            raise BadInput(
                f"{source}: key {raw_key!r} has the wrong type (got {type(value).__name__})"
            )
        out[key] = value
    return out


def load_config(path: str) -> dict[str, Any]:
    """Read a TOML config file into checked settings fields."""
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise BadInput(f"--config {path}: cannot read ({e.strerror or e})") from None
    return _checked_toml(text, str(path))


def _checked_toml(text: bytes, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInput(f"--config {source}: not valid TOML ({e})") from None
    checked = settings_from_mapping(data, source)
    validate_values(checked, source)
    return checked


def preset_names() -> list[str]:
    """The presets shipped in assets/presets, sorted."""
    folder = asset("presets")
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset's checked settings fields, from assets/presets/NAME.toml (packaged)."""
    # a name, never a path: "../x" must not reach outside the presets folder
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or "") or name not in preset_names():
        known = preset_names()
        raise BadInput(f"--preset: unknown preset {name!r} (known: {', '.join(known) or 'none'})")
    path = asset("presets", f"{name}.toml")
    try:
        text = path.read_bytes()
    except OSError as e:
        raise BadInput(f"--preset {name}: cannot read {path} ({e.strerror or e})") from None
    return _checked_toml(text, str(path))


OUTPUTS = ("auto", "window", "fullscreen", "kms", "framebuffer", "terminal", "headless")
OUTPUT_CHOICES = "auto, window, fullscreen, kms, framebuffer[:DEV], terminal, headless"
AUDIO_CHOICES = "auto, device[:NAME], wav:PATH, off"


def _output_ok(value: str) -> bool:
    name, sep, dev = value.partition(":")
    return name in OUTPUTS and (not sep or (name == "framebuffer" and bool(dev)))


def _audio_ok(value: str) -> bool:
    name, sep, rest = value.partition(":")
    if name in ("auto", "off"):
        return not sep
    if name == "device":
        return not sep or bool(rest)
    return name == "wav" and bool(rest)


def validate_values(values: dict[str, Any], source: str) -> None:
    """Check the values that can be checked without the machine. Raises BadInput."""
    for key, value in values.items():
        if value is None:
            continue
        flag = f"{source}: {key}" if source != "flags" else "--" + key.replace("_", "-")
        if key == "ram" and value != "auto":
            n = parse_size(value, available=1 << 40, what=flag)
            if n <= 0:
                raise BadInput(f"{flag}: {value!r} must be more than 0")
        elif key == "cache" and value != "auto":
            parse_size(value, available=1 << 40, what=flag)  # 0: nothing to evict
        elif key == "output" and not _output_ok(value):
            raise BadInput(f"{flag}: {value!r} is not one of {OUTPUT_CHOICES}")
        elif key == "audio" and not _audio_ok(value):
            raise BadInput(f"{flag}: {value!r} is not one of {AUDIO_CHOICES}")
        elif key == "swap" and value not in ("auto", "off"):
            parse_size(value, available=1 << 40, what=flag)
        elif key == "rate" and value != "auto":
            parse_rate(value, what=flag)
        elif key == "host_floor" and value != "auto":
            parse_size(value, available=1 << 40, what=flag)  # 0: the guard never trips
        elif key == "stage" and not stage_ok(value):
            if value.startswith("container:"):
                raise BadInput(
                    f"{flag}: unknown engine {value.partition(':')[2]!r}"
                    f" (use container, container:docker or container:podman)"
                )
            raise BadInput(f"{flag}: unknown stage {value!r} (use {', '.join(STAGES)})")
        elif key == "restarts" and not (0 <= value <= 10):
            raise BadInput(f"{flag}: {value} is outside 0..10")
        elif key == "captions" and value not in CAPTIONS:
            raise BadInput(f"{flag}: {value!r} is not one of {', '.join(CAPTIONS)}")
        elif key == "look" and value not in LOOKS:
            raise BadInput(f"{flag}: {value!r} is not one of {', '.join(LOOKS)}")
        elif key == "beep_freq" and not (20 <= value <= 20000):
            raise BadInput(f"{flag}: {value} Hz is outside 20..20000 Hz")
        elif key == "beep_length" and not (10 <= value <= 10000):
            raise BadInput(f"{flag}: {value} ms is outside 10..10000 ms")
        elif key == "beep_repeats" and not (1 <= value <= 20):
            raise BadInput(f"{flag}: {value} is outside 1..20")
        elif key == "sample_hz" and not (1 <= value <= 1000):
            raise BadInput(f"{flag}: {value} Hz is outside 1..1000 Hz")
        elif key == "calm" and not (0 <= value <= 600):
            raise BadInput(f"{flag}: {value} s is outside 0..600 s")
        elif key == "frames_every" and value < 1:
            raise BadInput(f"{flag}: {value} must be at least 1")
        elif key == "speed" and not (0.01 <= value <= 1000):
            raise BadInput(f"{flag}: {value} is outside 0.01..1000")
        elif key in ("act", "hogs", "killer"):
            from beep_av.acts.spec import validate_act_value

            validate_act_value(key, value, flag)
        elif key == "seed" and value < 0:
            raise BadInput(f"{flag}: {value} must not be negative")


def merge(base: Settings, *layers: dict[str, Any]) -> Settings:
    """Apply layers in order (preset, then config file, then flags)."""
    s = base
    for layer in layers:
        s = replace(s, **{k: v for k, v in layer.items() if v is not None})
    return s
