"""What a live driver (live.py) needs from a stage. A stage creates the confinement,
starts the hog, exposes readings as a `Source`, takes presenter controls, and tears
down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from beep_av.model import Snapshot
from beep_av.readings import HogHandle, StageFiles, memory_files  # noqa: F401 (re-exported)

Say = Callable[[str], None]  # one line of progress for the user


class Source(Protocol):
    """Readings of a stage, one Snapshot at a time."""

    def read(self, t: float) -> Snapshot:
        """Read everything now; `t` is the show time (seconds since show start)."""
        ...

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s; return early when an event arrives (hog death,
        kmsg record, OOM eventfd)."""
        ...

    def close(self) -> None: ...


class Stage(Protocol):
    kind: str  # "cgroup" | "host" | "rehearsal"
    ram_limit: int  # bytes
    swap_limit: int  # bytes; 0 when the stage has no swap
    cache_bytes: int  # page cache warmed inside the stage
    rate: int  # hog bytes per second
    paused: bool

    def describe(self) -> str:
        """One line: what the stage is, e.g. 'cgroup v1 beep-av-1234: 192 MiB RAM + 128 MiB swap'."""
        ...

    def prepare(self, say: Say) -> None:
        """Create the confinement, provision swap, warm the page cache. Raises CannotStage."""
        ...

    def start(self) -> None:
        """Start the hog climbing (the show's calm ends)."""
        ...

    def source(self) -> Source: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_rate(self, rate: int) -> None: ...

    def release(self) -> None:
        """Kill the hog now (presenter's `r`, host guard). Safe to call twice."""
        ...

    def teardown(self) -> None:
        """Remove everything the stage created. Safe to call twice, and after a failed
        prepare."""
        ...


class HogStage:
    """The presenter controls and the sampler of a stage whose hog is a HogProcess
    (cgroup and host stages). Subclasses set `hog`, `rate`, `paused`, the limits, and
    define `files()`."""

    hog = None  # HogProcess once prepared
    kernel_clock = None  # kclock.KernelClock, set by the show before it runs
    reads_reports = True  # the sampler reads the kernel's whole OOM report (oomreport)
    rate = 0
    paused = False
    ram_limit = 0
    swap_limit = 0

    def files(self) -> StageFiles:
        raise NotImplementedError

    def source(self) -> Source:
        """The sampler over this stage's files and hog."""
        from beep_av.sampler import Sampler

        return Sampler(
            self.files(),
            self.hog,
            ram_limit=self.ram_limit,
            swap_limit=self.swap_limit,
            kernel_clock=self.kernel_clock,
            reports=self.reads_reports,
        )

    def start(self) -> None:
        if self.hog:
            self.hog.start()

    def pause(self) -> None:
        self.paused = True
        if self.hog:
            self.hog.pause()

    def resume(self) -> None:
        self.paused = False
        if self.hog:
            self.hog.resume()

    def set_rate(self, rate: int) -> None:
        """Bytes per second; 0 = flat out."""
        self.rate = max(0, int(rate))
        if self.hog:
            self.hog.set_rate(self.rate)

    def release(self) -> None:
        """Kill the hog now. Safe twice."""
        if self.hog:
            self.hog.kill()
