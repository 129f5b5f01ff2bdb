"""The live driver: the story on a live stage (`show`, `rehearse`).

    hog -> stage -> sampler (the stage's Source) -> story.advance -> publish (conductor)

`LiveDriver.run` samples the prepared stage at `hz`, starts the hog when the calm is
over, advances the story and publishes each state until the finale. Beside the sampler,
ten times a second, it asks the host guard (cgroup stage) whether the host still has its
floor, and it ends the show when the hog ended on its own. Presenter commands: pause and
resume, rate up and down, release."""

from __future__ import annotations

import threading

from beep_av import clock
from beep_av.errors import CannotStage
from beep_av.model import KillRecord, Phase, ShowState
from beep_av.story import StoryConfig

RATE_STEP = 1.5  # + and - multiply or divide the hog's rate by this
RATE_MIN, RATE_MAX = 1 << 20, 4 << 30  # bytes/s, the presenter's range


def expected_sources(stage) -> tuple[str, ...]:
    """The evidence the story waits for before the finale on this stage."""
    srcs = ["exit", "oom_kill"]
    if stage.kind == "rehearsal":
        srcs.append("kmsg")
    else:
        from beep_av.kernlog import kernel_log_route

        if kernel_log_route():
            srcs.append("kmsg")
    return tuple(srcs)


def story_config(stage) -> StoryConfig:
    """The story's view of a prepared stage."""
    return StoryConfig(
        ram_limit=stage.ram_limit,
        swap_limit=stage.swap_limit,
        cache_bytes=stage.cache_bytes,
        expected_sources=expected_sources(stage),
    )


class LiveDriver:
    """Performs the story on `stage` (prepared). `initial`: the first state (the stage's
    limits); `calm`: seconds before the hog starts; `hz`: samples per second; `guard`:
    the host guard of a cgroup stage (attached), or None."""

    kind = "story"

    def __init__(
        self,
        stage,
        initial: ShowState,
        *,
        calm: float,
        hz: float,
        guard=None,
        story_cfg: StoryConfig | None = None,
    ) -> None:
        self.stage = stage
        self.story_cfg = story_cfg or story_config(stage)
        self.state = initial
        self.calm = calm
        self.hz = hz
        self.guard = guard
        self.started = False
        self.released = False
        self._source = None

    @property
    def paused(self) -> bool:
        return bool(self.stage.paused)

    def run(self, publish, stop: threading.Event, t0: float) -> bool:
        from beep_av.guard import CHECK_EVERY, HostGuardTripped
        from beep_av.story import advance, psi_baseline

        src = self._source = self.stage.source()
        first = True
        try:
            tick = 1.0 / self.hz
            state = self.state
            next_at = clock.now()
            next_guard = 0.0
            while not stop.is_set():
                t = clock.now() - t0
                if not self.started and t >= self.calm and not self.paused:
                    self.stage.start()
                    self.started = True
                snap = src.read(t)
                if self.released:  # the presenter's kill is not the kernel's: no story
                    return False
                if self.guard is not None and t >= next_guard:
                    # 10 Hz on kept fds, beside the sampler rather than inside it
                    next_guard = t + CHECK_EVERY
                    why = self.guard.problem()
                    if why is not None:
                        self.released = True
                        self.stage.release()
                        raise HostGuardTripped(why)
                if snap.hog_exit not in (None, -9, 137) and not self.released:
                    raise CannotStage(
                        f"the hog ended on its own (exit {snap.hog_exit}) before the kernel "
                        "killed it; run `beep-av doctor`"
                    )
                if first:  # the stall is counted from the stage's first reading
                    state, first = psi_baseline(state, snap), False
                state = self.state = advance(self.story_cfg, state, snap)
                publish(state)
                if state.phase is Phase.FINALE:
                    return True
                next_at += tick
                now = clock.now()
                if next_at < now:  # fell behind (a slow read): do not burst to catch up
                    next_at = now + tick
                src.wait(max(0.0, next_at - now))
            return False
        finally:
            src.close()

    def command(self, cmd: str) -> str | None:
        stage = self.stage
        if cmd == "toggle_pause":
            if not self.started:
                self.calm = 0.0  # space in calm: start now
                return None
            if stage.paused:
                stage.resume()
                return ""
            stage.pause()
            return "paused"
        if cmd in ("rate_up", "rate_down"):
            rate = stage.rate * (RATE_STEP if cmd == "rate_up" else 1 / RATE_STEP)
            rate = int(min(RATE_MAX, max(RATE_MIN, rate)))
            stage.set_rate(rate)
            return f"rate {rate / 2**20:.0f} MiB/s"
        if cmd == "release":
            self.released = True
            stage.release()
            return "released: the hog is gone, the stage torn down"
        return None

    def kills(self) -> list[KillRecord]:
        s = self.state
        return [*s.bystanders, *([s.kill] if s.kill is not None else [])]

    def close(self) -> None:
        """Stop sampling and kill the hog (the machine is safe first; the stage itself is
        torn down by its own step of the ladder). Safe twice."""
        if self._source is not None:
            self._source.close()
        self.stage.release()


__all__ = ["LiveDriver", "RATE_STEP", "expected_sources", "story_config"]
