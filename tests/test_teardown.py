"""The shape of a performance (issue 13, build 1): one teardown ladder that undoes what
exists in reverse order, once, whatever failed, and cannot be cut short by a second
signal; one conductor fed by any driver (driver.py), built complete, routing the
presenter's commands it does not handle itself to its driver."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from beep_av import interrupt
from beep_av.driver import Driver
from beep_av.errors import CannotStage
from beep_av.model import KillRecord, Phase, ShowState
from beep_av.show import Conductor, Latest
from beep_av.teardown import Teardown


@pytest.fixture(autouse=True)
def _signals():
    """The process's handlers and mask as they were, after each test."""
    sigs = (*interrupt.ENDING, signal.SIGWINCH)
    old = {s: signal.getsignal(s) for s in sigs}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    interrupt.ignore()
    interrupt._pending = None
    for s, h in old.items():
        signal.signal(s, h)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _parts(log: list[str], ladder: Teardown, names: str) -> None:
    for n in names:
        ladder.push(n, lambda n=n: log.append(n))


def test_the_ladder_undoes_in_reverse_order_once():
    log: list[str] = []
    with Teardown(log.append) as ladder:
        _parts(log, ladder, "abc")
        ladder.code = 0
    assert log == ["c", "b", "a"] and ladder.code == 0


def test_a_failure_half_way_undoes_what_exists_and_goes_on():
    log: list[str] = []
    said: list[str] = []
    with pytest.raises(CannotStage), Teardown(said.append) as ladder:
        _parts(log, ladder, "ab")
        ladder.push("stage", lambda: 1 / 0)  # a failing step does not stop the others
        raise CannotStage("no room")
    assert log == ["b", "a"]
    assert ladder.code == 3 and ladder.end_reason == "error"
    assert said == ["warning: cleanup stage: division by zero"]


@pytest.mark.parametrize("code", [130, 0])
def test_an_interrupt_is_an_exit_code_not_an_exception(code):
    log: list[str] = []
    with Teardown(log.append, interrupted_code=code) as ladder:
        _parts(log, ladder, "a")
        os.kill(os.getpid(), signal.SIGTERM)
        interrupt.check()
        raise AssertionError("check() did not raise")
    assert log == ["a"] and ladder.code == code and ladder.end_reason == "interrupted"


def test_a_second_signal_during_teardown_cannot_cut_it_short():
    log: list[str] = []

    def second_signal() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # ignored by now: nothing is raised here
        log.append("signalled")

    with Teardown(log.append) as ladder:
        ladder.push("last", lambda: log.append("last"))
        ladder.push("first", second_signal)
        os.kill(os.getpid(), signal.SIGTERM)
        interrupt.check()
    assert log == ["signalled", "last"] and ladder.code == 130
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


class FakeRecorder:
    every_kill = True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def kill(self, k) -> None:
        self.log.append(f"kill {k.pid}")

    def end(self, t, reason, **fields) -> None:
        self.log.append(f"end {reason} exit={fields['exit']}")

    def close(self) -> None:
        self.log.append("close")


KILL = KillRecord(
    pid=7, name="x", exit=137, signal=9, oom_kill_count=1, kmsg=None, anon_rss_kib=None,
    detected_by=("exit",), latency_ms=None, t=0.1,
)  # fmt: skip


class FakeDriver:
    """A driver that publishes a few states and ends on a finale."""

    kind = "fake"

    def __init__(self, finale: bool = True) -> None:
        self.commands: list[str] = []
        self.finale = finale
        self.paused = False
        self.closed = 0

    def run(self, publish, stop: threading.Event, t0: float) -> bool:
        publish(ShowState(phase=Phase.FILLING))
        if self.finale:
            publish(ShowState(phase=Phase.FINALE, kill=KILL))
        return True

    def command(self, cmd: str) -> str | None:
        self.commands.append(cmd)
        if cmd == "toggle_pause":
            self.paused = not self.paused
            return "paused" if self.paused else ""
        return None

    def close(self) -> None:
        self.closed += 1

    def kills(self) -> list[KillRecord]:
        return [KILL]


class FakeOutput:
    fps = 200.0
    paces_itself = False

    def __init__(self, keys: list[list[str]]) -> None:
        self.keys = keys
        self.frames: list[ShowState] = []

    def frame(self, state: ShowState):
        self.frames.append(state)
        return self.keys.pop(0) if self.keys else []


def _settings():
    from beep_av.config import Settings

    return Settings(calm=0.0)


def test_any_driver_feeds_the_conductor_and_the_recording_gets_its_kills():
    assert isinstance(FakeDriver(), Driver)
    log: list[str] = []
    driver = FakeDriver()
    output = FakeOutput([["toggle_pause"], ["captions"]])
    with Teardown(log.append) as ladder:
        ladder.push("driver", driver.close)
        ladder.driver = driver
        latest = Latest(ShowState())
        rec = FakeRecorder(log)
        ladder.record(rec, 0.0)
        c = Conductor(_settings(), driver, output, "headless", latest=latest, t0=0.0)
        ladder.push("engine", c.shutdown)
        ladder.conductor = c
        ladder.code = c.run()
    assert ladder.code == 0 and c.end_reason == "finale"
    assert driver.commands == ["toggle_pause"]  # captions stayed in the conductor
    assert any(s.paused and s.message == "paused" for s in output.frames)
    assert driver.closed == 1
    assert log == ["kill 7", "end finale exit=0", "close"]  # the recording last


def test_release_ends_the_show_whatever_the_driver_does_with_it():
    driver = FakeDriver(finale=False)
    output = FakeOutput([["release"]])
    c = Conductor(_settings(), driver, output, "headless", latest=Latest(ShowState()), t0=0.0)
    try:
        assert c.run() == 0
    finally:
        c.shutdown()
    assert driver.commands == ["release"] and c.end_reason == "released"
