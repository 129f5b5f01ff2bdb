"""The acts other than the story (`--act who-dies|bystander|throttle`).

Each act is a driver (the COMMON driver interface: kind, run(publish, stop, t0),
command(cmd), close(), kills()) that owns its stage: a real one (a cgroup, its
processes) or a rehearsal model of it (`--stage rehearsal`, deterministic with --seed).
It publishes ShowStates with per-process lanes (model.Lane) and an ActView (captions,
card, closing sound, the act's events for the recording). app.ACTS registers them;
app.run_live performs each through the one assembly the story uses (acts.common.ActStage:
the act's driver seen as a stage), so every act gets the same host guard, memory lock,
kernel clock, recording header and teardown."""

from beep_av.acts.spec import (
    ACTS,
    DEFAULT_HOGS,
    HogSpec,
    check_act_settings,
    parse_hogs,
    validate_act_value,
)

__all__ = [
    "ACTS",
    "DEFAULT_HOGS",
    "HogSpec",
    "check_act_settings",
    "parse_hogs",
    "validate_act_value",
]
