"""The acts' names and their pure checks: `--act`, `--hogs` (config.py validates with
these; nothing here touches the OS)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from beep_av.errors import BadInput

ACTS = ("story", "who-dies", "bystander", "throttle", "freeze", "high")
# the acts' own caption keys (optional in assets/captions/*.toml, shipped in en and fr)
CAPTION_KEYS = (
    "throttle_calm",
    "throttle_full",
    "throttle_slow",
    "throttle_end",
    "who_dies_guess",
    "who_dies_climb",
    "who_dies_kill",
    "who_dies_release",
    "bystander_cold",
    "bystander_readback",
    "freeze_fits",
    "freeze_thrash",
    "freeze_end",
    "high_climb",
    "high_held",
    "high_end",
)
MAX_HOGS = 4
MIN_HOGS = 2
DEFAULT_HOGS = "big:1.0,medium:0.6,small:0.3"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")


@dataclass(frozen=True)
class HogSpec:
    """One hog of who-dies: its name, its size relative to the others (it climbs at
    that share of --rate), and its oom_score_adj."""

    name: str
    size: float
    adj: int = 0


def parse_hogs(spec: str, flag: str = "--hogs") -> list[HogSpec]:
    """`big:1.0,small:0.4:500` -> [HogSpec(big, 1.0, 0), HogSpec(small, 0.4, 500)].
    2 to 4 hogs, sizes in (0, 1], distinct names, adj in -1000..1000. Raises BadInput."""
    out: list[HogSpec] = []
    items = [x.strip() for x in str(spec).split(",") if x.strip()]
    for item in items:
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise BadInput(f"{flag}: {item!r} is not NAME:SIZE[:OOM_SCORE_ADJ]")
        name = parts[0].strip().lower()
        if not _NAME_RE.match(name):
            raise BadInput(f"{flag}: {parts[0]!r} is not a name (a-z, 0-9, - or _)")
        try:
            size = float(parts[1])
        except ValueError:
            raise BadInput(f"{flag}: size {parts[1]!r} of {name} is not a number") from None
        if not (0 < size <= 1.0):
            raise BadInput(f"{flag}: size {parts[1]} of {name} must be more than 0 and at most 1")
        adj = 0
        if len(parts) == 3:
            try:
                adj = int(parts[2])
            except ValueError:
                raise BadInput(
                    f"{flag}: oom_score_adj {parts[2]!r} of {name} is not an integer"
                ) from None
            if not (-1000 <= adj <= 1000):
                raise BadInput(f"{flag}: oom_score_adj {adj} of {name} is outside -1000..1000")
        if any(h.name == name for h in out):
            raise BadInput(f"{flag}: two hogs are named {name}")
        out.append(HogSpec(name, size, adj))
    if not (MIN_HOGS <= len(out) <= MAX_HOGS):
        raise BadInput(f"{flag}: {len(out)} hog(s); who-dies takes {MIN_HOGS} to {MAX_HOGS}")
    return out


KILLERS = ("beep-av", "systemd-oomd")  # who ends the freeze (--killer)


def validate_act_value(key: str, value: str, flag: str) -> None:
    """The checks config.validate_values makes for `act` and `hogs`."""
    if key == "act" and value not in ACTS:
        raise BadInput(f"{flag}: unknown act {value!r} (use {', '.join(ACTS)})")
    if key == "hogs":
        parse_hogs(value, flag)
    if key == "killer" and value not in KILLERS:
        raise BadInput(f"{flag}: unknown killer {value!r} (use {', '.join(KILLERS)})")


def check_act_settings(settings) -> None:
    """What does not go together (exit 2 before anything is created)."""
    act = settings.act
    if settings.hogs is not None and act != "who-dies":
        raise BadInput(f"--hogs applies to --act who-dies only, not {act}")
    if getattr(settings, "killer", "beep-av") != "beep-av" and act != "freeze":
        raise BadInput(f"--killer applies to --act freeze only, not {act}")
    if act == "throttle":
        for key in ("swap", "cache", "ram", "rate"):
            if getattr(settings, key) != "auto":
                raise BadInput(f"--{key} does not apply to throttle (it limits CPU, not memory)")
    stage = str(settings.stage).split(":", 1)[0]
    if act != "story" and stage not in ("auto", "cgroup", "rehearsal"):
        raise BadInput(f"--stage {stage} does not apply to --act {act} (use cgroup or rehearsal)")


__all__ = [
    "ACTS",
    "DEFAULT_HOGS",
    "HogSpec",
    "parse_hogs",
    "validate_act_value",
    "check_act_settings",
]
