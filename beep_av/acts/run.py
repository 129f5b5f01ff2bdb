"""Performing an act: its driver for the settings, through the conductor in the one
teardown ladder (`beep-av show|rehearse --act ACT`)."""

from __future__ import annotations

from collections.abc import Callable

from beep_av.acts.spec import DEFAULT_HOGS, check_act_settings, parse_hogs
from beep_av.errors import BadInput

Say = Callable[[str], None]


def make_driver(settings, say: Say):
    """The act's driver for these settings (a real stage or its rehearsal model)."""
    act = settings.act
    if act == "throttle":
        from beep_av.acts.throttle import ThrottleAct

        return ThrottleAct(settings)
    from beep_av.app import machine_memory
    from beep_av.plan import resolve_plan

    available, total = machine_memory()
    plan = resolve_plan(settings, available, total)
    if act == "who-dies":
        from beep_av.acts.who_dies import WhoDiesAct

        return WhoDiesAct(settings, plan, parse_hogs(settings.hogs or DEFAULT_HOGS))
    if act == "bystander":
        from beep_av.acts.bystander import BystanderAct

        return BystanderAct(settings, plan)
    raise BadInput(f"--act: unknown act {act!r}")


def run_act(settings, keys: str | None = None, say: Say = print) -> int:
    """`beep-av show|rehearse --act ACT`: the act's driver through the conductor, in the
    one teardown ladder (teardown.py). An act owns its stage (a CPU cgroup, a stage of
    several hogs, or its rehearsal model), so it comes in here rather than through
    app.STAGES. Exit codes as for the story: 0 done, 2 bad input (nothing created), 3
    cannot stage (the fix named), 130 interrupted (after the teardown)."""
    import time

    from beep_av import app
    from beep_av.errors import EXIT_INTERRUPTED
    from beep_av.interrupt import check
    from beep_av.model import ShowState
    from beep_av.teardown import Teardown

    key_plan = app.parse_key_plan(keys)
    app.check_output_paths(settings)
    check_act_settings(settings)
    if settings.stage == "auto":
        settings = app._auto_stage(settings, say)
    driver = make_driver(settings, say)  # BadInput or CannotStage here: nothing exists yet
    if settings.stage != "rehearsal":
        app.warn_leftovers(say)

    def recorder(t0: float):
        header = app.header_for(
            settings,
            driver.stage_kind,
            driver.ram_limit,
            driver.swap_limit,
            driver.cache_bytes,
            driver.rate,
        )
        header.update(driver.header())
        return app._recorder(settings, header, say)

    with Teardown(say) as ladder:
        ladder.push("act", driver.close)  # safe before, during and after prepare
        ladder.driver = driver
        t0 = time.monotonic()
        output, output_name = app._open_outputs(settings, key_plan, say)
        ladder.push("output", output.close)
        output.open()
        output.frame(
            ShowState(stage=driver.stage_kind, captions=settings.captions, act=settings.act,
                      message="preparing the stage")
        )  # fmt: skip
        check()
        driver.prepare(say)  # checks the flag itself; close() undoes any step
        check()
        initial = ShowState(stage=driver.stage_kind, captions=settings.captions, act=settings.act)
        ladder.code = app._perform(
            ladder, settings, driver, output, output_name, initial, t0, say,
            make_recorder=recorder,
        )  # fmt: skip
        c = ladder.conductor
        if c is not None and c.end_reason == "finale":
            c.end_reason = driver.end_reason
    if ladder.code == EXIT_INTERRUPTED:
        say("beep-av: interrupted; the stage is torn down")
    for line in driver.summary():
        say(line)
    return ladder.code


__all__ = ["make_driver", "run_act"]
