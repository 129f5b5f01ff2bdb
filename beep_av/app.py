"""Assembling a performance from settings, and the one place where its parts are chosen.

A performance is one driver feeding one conductor (driver.py, show.py), following
DESIGN.md's data flow:

    hog -> stage -> sampler -> story    (the driver: live.LiveDriver on a stage,
                                         stages.replay.ReplayDriver, watch.WatchDriver)
        -> conductor -> audio, outputs (renderers), recorder

Each command (run_live for show and rehearse, run_replay, run_watch):
1. checks its input before anything is created (exit 2; the host stage's confirmation);
2. builds the parts in order inside one teardown ladder (teardown.py), pushing each as
   soon as it exists: the stage (prepared after the output shows "preparing the
   stage"), the output, the host guard, the driver, the audio, the recording, the
   conductor. The conductor is built last, complete;
3. runs the conductor; the ladder tears down whatever exists, in reverse order, once;
4. says its last line (interrupted, released, a user-space kill, a watch's summary).

Where to plug in:
- a stage: STAGES maps `--stage KIND` to factory(settings, plan, t0, say) -> Stage
  (stages/base.py). It must allocate nothing until `prepare(say)`, and its `teardown()`
  must be safe before, during and after a failed prepare.
- an act: ACTS maps `--act NAME` (settings.act; "story" without one) to
  factory(stage, initial, settings, guard) -> Driver, called on the prepared stage
  (make_live_driver). Replay and watch have one driver each (run_replay, run_watch)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from beep_av import clock
from beep_av.config import Settings
from beep_av.errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_KILL,
    BadInput,
    CannotStage,
)
from beep_av.model import ShowState, Snapshot
from beep_av.plan import Plan, auto_swap_size, resolve_plan
from beep_av.quiet import StderrFilter

Say = Callable[[str], None]
MiB = 1024**2


def check_output_paths(settings: Settings) -> None:
    """Every file the show will write at a path it was given (the recording, the WAV,
    the frames) must be one Beep may write (outfiles' rules) before anything is created
    (exit 2, one line naming the path)."""
    from beep_av import outfiles

    if settings.record:
        from beep_av.recording import check_writable

        check_writable(settings.record)
    audio = settings.audio or ""
    if audio.startswith("wav:"):
        from beep_av.audio.output import check_wav_path

        check_wav_path(audio[len("wav:") :])
    if settings.frames:
        from beep_av.video.frames import FRAME_NAME

        outfiles.check_dir(settings.frames, f"--frames {settings.frames}", FRAME_NAME)


def parse_key_plan(plan: str | None) -> list[tuple[float, str]] | None:
    """`2.5:space,4:plus` -> [(2.5, "space"), (4.0, "plus")] (a hidden test option)."""
    if not plan:
        return None
    out = []
    for item in plan.split(","):
        t, _, key = item.partition(":")
        try:
            out.append((float(t), key.strip()))
        except ValueError:
            raise BadInput(f"--keys: bad item {item!r} (use SECONDS:KEY,...)") from None
    return out


def machine_memory() -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes, from psutil (once per show, never at 50 Hz)."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def warn_leftovers(say: Say) -> None:
    try:
        from beep_av.stages.cleanup import find_leftovers

        left = find_leftovers()
    except Exception:  # leftovers are advice; never block a show on them
        return
    if left:
        say(
            f"note: a previous show left {len(left)} item(s) behind "
            "(cgroup, swapfile or hog); run `beep-av cleanup` to remove them"
        )


# ---------------------------------------------------------------- the stages
# `--stage KIND` -> factory(settings, plan, t0, say) -> Stage (stages/base.py), built
# before anything is allocated (it may refuse with BadInput) and prepared later.


def _rehearsal_stage(settings: Settings, plan: Plan, t0: float, say: Say):
    from beep_av.stages.rehearsal import RehearsalStage

    swap = auto_swap_size(plan.ram) if plan.swap is None else plan.swap
    return RehearsalStage(
        ram=plan.ram, swap=swap, cache=plan.cache, rate=plan.rate, seed=settings.seed, t0=t0
    )


def _host_stage(settings: Settings, plan: Plan, t0: float, say: Say):
    from beep_av.stages.host import HostStage

    # the domain is what it is: --ram and --swap do not apply; auto cache and rate
    # follow the domain's size
    given = [f"--{k}" for k in ("ram", "swap") if getattr(settings, k) != "auto"]
    if given:
        say(
            f"note: {' and '.join(given)} ignored on the host stage: the hog fills the "
            "domain beep-av lives in, whatever its size"
        )
    stage = HostStage(
        cache=None if settings.cache == "auto" else plan.cache,
        rate=None if settings.rate == "auto" else plan.rate,
        seed=settings.seed,
    )
    stage.confirm(say, yes=bool(settings.yes))  # BadInput before anything is allocated
    return stage


def _cgroup_stage(settings: Settings, plan: Plan, t0: float, say: Say):
    from beep_av.stages.cgroup import CgroupStage

    swap = "auto" if plan.swap is None else plan.swap
    return CgroupStage(
        ram=plan.ram, swap=swap, cache=plan.cache, rate=plan.rate, seed=settings.seed
    )


def _container_stage(settings: Settings, plan: Plan, t0: float, say: Say):
    from beep_av.stages.container import ContainerStage

    return ContainerStage(
        ram=plan.ram,
        swap="auto" if plan.swap is None else plan.swap,
        cache=plan.cache,
        rate=plan.rate,
        engine=settings.stage.partition(":")[2] or None,  # container:docker|podman
        restarts=settings.restarts,
    )


STAGES: dict[str, Callable] = {
    "cgroup": _cgroup_stage,
    "host": _host_stage,
    "rehearsal": _rehearsal_stage,
    "container": _container_stage,
}


def build_stage(settings: Settings, plan: Plan, t0: float, say: Say):
    """The stage `settings.stage` names (auto already resolved), from STAGES; an act
    other than the story owns its stage (ACTS): its driver, seen as a stage."""
    act = getattr(settings, "act", "story") or "story"
    if act != "story":
        from beep_av.acts.common import ActStage

        return ActStage(ACTS[act](settings, plan))
    return STAGES[settings.stage.partition(":")[0]](settings, plan, t0, say)


# ---------------------------------------------------------------- the acts
# `--act NAME` -> factory(settings, plan) -> an act's driver that owns its stage (a real
# one or its rehearsal model; acts/); it allocates nothing until prepare(say). The story
# is the stage's own (STAGES) with the live driver (live.py). Every act goes through the
# same assembly (run_live): plan, leftovers, host guard, memory lock, kernel clock,
# recording header, fd check, the one teardown ladder.


def _who_dies(settings: Settings, plan: Plan):
    from beep_av.acts.spec import DEFAULT_HOGS, parse_hogs
    from beep_av.acts.who_dies import WhoDiesAct

    return WhoDiesAct(settings, plan, parse_hogs(settings.hogs or DEFAULT_HOGS))


def _bystander(settings: Settings, plan: Plan):
    from beep_av.acts.bystander import BystanderAct

    return BystanderAct(settings, plan)


def _throttle(settings: Settings, plan: Plan):
    from beep_av.acts.throttle import ThrottleAct

    return ThrottleAct(settings)


def _freeze(settings: Settings, plan: Plan):
    from beep_av.acts.freeze import FreezeAct

    return FreezeAct(settings, plan)


def _high(settings: Settings, plan: Plan):
    from beep_av.acts.high import HighAct

    return HighAct(settings, plan)


ACTS: dict[str, Callable] = {
    "who-dies": _who_dies,
    "bystander": _bystander,
    "throttle": _throttle,
    "freeze": _freeze,
    "high": _high,
}


# ---------------------------------------------------------------- the drivers
# The driver of a command: show and rehearse -> make_live_driver on the prepared stage;
# replay -> stages.replay.ReplayDriver; watch -> watch.WatchDriver (run_replay and
# run_watch). Called once the stage is prepared, the host guard attached and the kernel
# clock calibrated; `initial` is the first ShowState (the stage's limits).


def make_live_driver(stage, initial: ShowState, settings: Settings, guard):
    """The driver of `show` and `rehearse`: an act's own (its ActStage's), the
    container's lives (stages/container.py), or the story's live driver."""
    from beep_av.acts.common import ActStage

    if isinstance(stage, ActStage):
        stage.driver.guard = guard
        return stage.driver
    if stage.kind == "container":
        from beep_av.stages.container import ContainerDriver

        return ContainerDriver(stage, initial, hz=settings.sample_hz)
    from beep_av.live import LiveDriver

    return LiveDriver(stage, initial, calm=settings.calm, hz=settings.sample_hz, guard=guard)


# ---------------------------------------------------------------- outputs and audio


def _open_outputs(settings: Settings, keys, say: Say):
    from beep_av.video.select import make_output

    output, name = make_output(settings.output, settings, say, key_plan=keys)
    return output, name


def _open_audio(settings: Settings, get_state, t0: float, say: Say):
    from beep_av.audio.output import open_audio
    from beep_av.audio.synth import BeepSpec

    beep = BeepSpec(
        freq=settings.beep_freq, length_ms=settings.beep_length, repeats=settings.beep_repeats
    )
    return open_audio(
        settings.audio, get_state, t0, beep, seed=settings.seed, say=say, look=settings.look
    )


def run_live(
    settings: Settings,
    keys: str | None = None,
    say: Say = print,
    *,
    make_stage: Callable | None = None,
    make_output: Callable | None = None,
    make_audio: Callable | None = None,
) -> int:
    """`beep-av show` and `beep-av rehearse`. Returns the exit code (DESIGN contract;
    the host guard ends a show with 3, a failing output with 1).

    SIGINT, SIGTERM and SIGHUP only set a flag (beep_av.interrupt); the flag is checked
    between the steps below, inside the long ones (the swapfile, the wait for the hog)
    and between two frames, and ends the show with the teardown and exit 130.

    The factories are the fault-injection seams of the tests, defaulting to the real
    ones: make_stage(settings, plan, t0, say) -> stage, make_output(settings, key_plan,
    say) -> (output, name), make_audio(settings, get_state, t0, say) -> AudioOut."""
    from beep_av.acts.spec import check_act_settings
    from beep_av.interrupt import check
    from beep_av.protect import lock_memory
    from beep_av.teardown import Teardown, open_fds

    fds_start = open_fds()
    make_stage = make_stage or build_stage
    make_output = make_output or _open_outputs
    key_plan = parse_key_plan(keys)
    check_output_paths(settings)
    check_act_settings(settings)
    act = getattr(settings, "act", "story") or "story"
    available, total = machine_memory()
    plan = resolve_plan(settings, available, total)
    if settings.stage == "auto":
        settings = _auto_stage(settings, say)
    if settings.stage != "rehearsal":
        warn_leftovers(say)
    if settings.restarts and not settings.stage.startswith("container"):
        raise BadInput("--restarts goes with --stage container")

    with Teardown(say, fds_start=fds_start) as ladder:
        t0 = clock.now()
        stage = make_stage(settings, plan, t0, say)
        ladder.push("stage", stage.teardown)  # safe before (and after a failed) prepare
        check()
        output, output_name = make_output(settings, key_plan, say)
        ladder.push("output", output.close)
        why = lock_memory()
        if why:
            say(f"note: cannot lock beep-av in memory ({why}); continuing anyway")
        output.open()
        guard = None
        if getattr(stage, "guarded", stage.kind == "cgroup"):  # a memory cgroup stage
            from beep_av.guard import make_guard

            guard = make_guard(settings.host_floor, stage.ram_limit, available, total)
            ladder.push("host guard", guard.close)
            guard.preflight()  # exit 3 before the stage exists
        output.frame(
            ShowState(stage=stage.kind, captions=settings.captions, act=act,
                      message="preparing the stage")
        )  # fmt: skip
        check()
        stage.prepare(say)  # checks the flag itself, and its teardown undoes any step
        check()
        if guard is not None:
            guard.attach(stage.files().usage)
        clock_fields = _calibrate_kernel_clock(stage, say)
        initial = ShowState(
            stage=stage.kind,
            captions=settings.captions,
            act=act,
            snapshot=Snapshot(
                t=clock.now() - t0,
                ram_limit=stage.ram_limit,
                swap_limit=stage.swap_limit,
                cache_bytes=stage.cache_bytes,
            ),
        )
        driver = make_live_driver(stage, initial, settings, guard)
        ladder.push("driver", driver.close)
        ladder.driver = driver

        def recorder(t0: float):
            header = header_for(
                settings,
                stage.kind,
                stage.ram_limit,
                stage.swap_limit,
                stage.cache_bytes,
                stage.rate,
            )
            hog = getattr(stage, "hog", None)
            if getattr(hog, "pid", None) is not None:
                header["hog_pid"] = hog.pid  # so a reader can tell the victim is the hog
            if guard is not None:
                header["host_floor"] = guard.floor
            header.update(clock_fields)
            if stage.kind == "container":
                header.update(stage.header_fields())
            if act != "story":
                header.update(driver.header())  # the act's own fields (act, hogs, ...)
            # the container's restarts: a kill line (and its phases) for every life
            return _recorder(settings, header, say, every_kill=getattr(stage, "restarts", 0) > 0)

        ladder.code = _perform(
            ladder, settings, driver, output, output_name, initial, t0, say,
            make_audio=make_audio, make_recorder=recorder, record_initial=act == "story",
        )  # fmt: skip
        c = ladder.conductor
        if act != "story" and c is not None and c.end_reason == "finale":
            c.end_reason = driver.end_reason  # an act's own ending (throttle: "end")
    code, c = ladder.code, ladder.conductor
    if act != "story" and ladder.driver is not None:
        for line in ladder.driver.summary():
            say(line)
    if code == EXIT_INTERRUPTED:
        say("beep-av: interrupted; the stage is torn down")
    elif c is not None and c.end_reason == "released":
        say("beep-av: released; the hog is gone and the stage torn down")
    elif code == EXIT_USER_KILL and c is not None and c.state.kill is not None:
        say(f"beep-av: {user_kill_line(c.state.kill)}")
    return code


def _perform(
    ladder,
    settings: Settings,
    driver,
    output,
    output_name: str,
    initial: ShowState,
    t0: float,
    say: Say,
    *,
    make_audio: Callable | None = None,
    make_recorder: Callable | None = None,
    record_initial: bool = False,
) -> int:
    """What every performance ends with, once its driver and its opened output exist:
    the audio, the recording (`make_recorder(t0)`, with --record), the conductor, each
    pushed on `ladder` as it is made; then the run. Returns the conductor's exit code."""
    from beep_av.interrupt import check
    from beep_av.show import Conductor, Latest

    latest = Latest(initial)
    # from the audio's opening on, the C libraries' own messages go to the recording
    # (`log` lines), not to the user's terminal (beep_av/quiet.py)
    held = _HeldLines(t0)
    quiet = StderrFilter(held)
    quiet.start()
    ladder.push("stderr filter", quiet.stop)
    audio = (make_audio or _open_audio)(settings, latest.get, t0, say)
    ladder.close_audio(audio)
    check()
    recorder = None
    if settings.record and make_recorder is not None:
        recorder = make_recorder(t0)
        ladder.record(recorder, t0)
        held.attach(recorder)
        if record_initial:
            recorder.write_state(initial)  # the recording opens with the stage's limits
    conductor = Conductor(
        settings, driver, output, output_name,
        latest=latest, t0=t0, audio=audio, recorder=recorder, say=say,
    )  # fmt: skip
    ladder.push("engine", conductor.shutdown)
    ladder.conductor = conductor
    audio.start()
    return conductor.run()


class _HeldLines:
    """The library lines held back from the terminal: kept (a few) until the recording
    exists, then written there as `log` lines as they come."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.lines: list[tuple[float, str]] = []
        self.recorder = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        t = clock.now() - self.t0
        with self._lock:
            if self.recorder is not None:
                self.recorder.log(t, text)
            elif len(self.lines) < 50:
                self.lines.append((t, text))

    def attach(self, recorder) -> None:
        with self._lock:
            self.recorder = recorder
            for t, text in self.lines:
                recorder.log(t, text)
            self.lines = []


def _recorder(settings: Settings, header: dict, say: Say, every_kill: bool = False):
    from beep_av.recording import Recorder

    return Recorder(settings.record, header, every_kill=every_kill, say=say)


def header_for(
    settings: Settings, stage_kind: str, ram: int, swap: int, cache: int, rate: int
) -> dict:
    """The recording header's common fields."""
    import platform
    from datetime import UTC, datetime

    from beep_av import __version__

    return {
        "stage": stage_kind,
        "ram_limit": ram,
        "swap_limit": swap,
        "cache_bytes": cache,
        "rate": rate,
        "kernel": platform.release(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": settings.seed,
        "hz": settings.sample_hz,
        "beep_freq": settings.beep_freq,
        "beep_length_ms": settings.beep_length,
        "version": __version__,
    }


def user_kill_line(kill) -> str:
    """The one line on stderr when user space killed the hog."""
    from beep_av.summary import killer_phrase

    return (
        f"the hog (pid {kill.pid}) was killed by a signal from {killer_phrase(kill)}, "
        "not by the kernel's OOM killer (nothing to show; exit 4)"
    )


def _calibrate_kernel_clock(stage, say: Say) -> dict:
    """Calibrate the printk clock against CLOCK_MONOTONIC for a stage with a real
    kernel (kclock.py); give the stage its clock; the recording header's fields."""
    if stage.kind == "rehearsal":
        return {}
    from beep_av.kclock import calibrate, header_fields

    clock, why = calibrate()
    stage.kernel_clock = clock
    if clock is None:
        say(f"note: no kernel clock calibration ({why}): detection latency unknown")
    return header_fields(clock, why)


def _auto_stage(settings: Settings, say: Say) -> Settings:
    """auto: the cgroup stage where this machine can make one, else a rehearsal."""
    from dataclasses import replace

    from beep_av.stages.cgroup import pick_route

    try:
        pick_route("/sys/fs/cgroup", "/proc")
        ok, why = True, ""
    except CannotStage as e:
        ok, why = False, e.message
    if ok:
        return replace(settings, stage="cgroup")
    say(f"note: {why}; rehearsing instead (nothing is allocated)")
    return replace(settings, stage="rehearsal")


def run_replay(settings: Settings, path: str, keys: str | None = None, say: Say = print) -> int:
    """`beep-av replay FILE`: re-perform a recording through the outputs."""
    from beep_av.recording import load
    from beep_av.stages.replay import ReplayDriver
    from beep_av.teardown import Teardown

    key_plan = parse_key_plan(keys)
    rec = load(path)
    check_output_paths(settings)
    driver = ReplayDriver(rec, speed=settings.speed, name=path)

    def recorder(t0: float):  # the replay, recorded again as it is performed
        header = {k: v for k, v in rec.header.items() if k not in ("type", "format")}
        header.update(replay_of=path, speed=settings.speed)
        return _recorder(settings, header, say, every_kill=driver.every_kill)

    initial = ShowState(stage=driver.stage, captions=settings.captions, replay_of=path)
    with Teardown(say) as ladder:
        ladder.push("replay", driver.close)
        ladder.driver = driver
        output, output_name = _open_outputs(settings, key_plan, say)
        ladder.push("output", output.close)
        output.open()
        ladder.code = _perform(
            ladder, settings, driver, output, output_name, initial, clock.now(), say,
            make_recorder=recorder,
        )  # fmt: skip
    return ladder.code


def _perform_watch(ladder, settings: Settings, driver, what: str, ram: int, swap: int,
                   clock_fields: dict, key_plan, say: Say) -> None:  # fmt: skip
    """A watch's outputs, its every-kill recording and its performance (run_watch and
    run_watch_containers), inside the caller's ladder."""
    initial = ShowState(
        stage="watch",
        captions=settings.captions,
        snapshot=Snapshot(t=0.0, ram_limit=ram, swap_limit=swap),
    )

    def recorder(t0: float):
        header = header_for(settings, "watch", ram, swap, 0, 0)
        header["watch"] = what
        header["t0_monotonic"] = t0  # show time t is clock.now() - t0_monotonic
        header.update(clock_fields)
        return _recorder(settings, header, say, every_kill=True)

    output, output_name = _open_outputs(settings, key_plan, say)
    ladder.push("output", output.close)
    output.open()
    ladder.code = _perform(
        ladder, settings, driver, output, output_name, initial, clock.now(), say,
        make_recorder=recorder,
    )  # fmt: skip


def run_watch(
    settings: Settings, cgroup: str | None, keys: str | None = None, say: Say = print
) -> int:
    """`beep-av watch [--cgroup PATH]`: no hog; follow the host or a cgroup and beep at
    every OOM kill until interrupted (SIGINT, SIGTERM, SIGHUP or q: the normal end, exit
    0), then print one line per kill seen and the total on stdout."""
    from beep_av.kclock import calibrate, header_fields
    from beep_av.teardown import Teardown
    from beep_av.watch import WatchDriver, resolve_target, summary_lines

    key_plan = parse_key_plan(keys)
    check_output_paths(settings)
    target = resolve_target(cgroup)  # BadInput before anything is opened
    clock, clock_why = calibrate()
    driver = WatchDriver(target, hz=settings.sample_hz, kernel_clock=clock)
    with Teardown(say, interrupted_code=0) as ladder:  # a signal is a watch's normal end
        ladder.push("watch", driver.close)
        ladder.driver = driver
        ram, swap = driver.open()
        for note in driver.notes:
            say(f"note: {note}")
        say(f"watching {target.describe()} ({ram // MiB} MiB RAM + {swap // MiB} MiB swap)")
        _perform_watch(ladder, settings, driver, target.describe(), ram, swap,
                       header_fields(clock, clock_why), key_plan, say)  # fmt: skip
    seconds = ladder.stopped_t if ladder.stopped_t is not None else 0.0
    for line in summary_lines(driver.kills(), seconds, target.describe()):
        print(line, flush=True)
    return ladder.code


def run_watch_containers(settings: Settings, keys: str | None = None, say: Say = print) -> int:
    """`beep-av watch --containers`: no hog; follow the container engine's events and
    the kernel log, a card and a beep for every container OOM kill, until interrupted
    (exit 0, then the summary on stdout). No engine: exit 3 with the fix."""
    from beep_av.container_watch import ContainerWatchDriver, summary_lines
    from beep_av.kclock import calibrate, header_fields
    from beep_av.teardown import Teardown

    key_plan = parse_key_plan(keys)
    check_output_paths(settings)
    kind, _, engine = settings.stage.partition(":")
    clock, clock_why = calibrate()
    driver = ContainerWatchDriver(
        hz=min(settings.sample_hz, 20.0), engine=(engine or None) if kind == "container" else None
    )
    driver.kernel_clock = clock
    with Teardown(say, interrupted_code=0) as ladder:  # a signal is a watch's normal end
        ladder.push("watch", driver.close)
        ladder.driver = driver
        ram, swap = driver.open()  # CannotStage (exit 3) with the fix: no engine
        what = driver.describe()
        for note in driver.notes:
            say(f"note: {note}")
        say(f"watching {what} (no hog; Ctrl-C ends the watch)")
        _perform_watch(ladder, settings, driver, what, ram, swap,
                       header_fields(clock, clock_why), key_plan, say)  # fmt: skip
    seconds = ladder.stopped_t if ladder.stopped_t is not None else 0.0
    for line in summary_lines(driver.kills(), seconds, driver.describe()):
        print(line, flush=True)
    return ladder.code


__all__ = [
    "ACTS",
    "STAGES",
    "check_output_paths",
    "build_stage",
    "make_live_driver",
    "run_live",
    "run_replay",
    "run_watch",
    "run_watch_containers",
]
