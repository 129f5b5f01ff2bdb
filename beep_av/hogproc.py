"""The show's handle on the hog: spawns `python -m beep_av.hog` (hog.py, the child, which
imports the standard library only) and is the `HogHandle` the sampler reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from beep_av import interrupt
from beep_av.errors import CannotStage
from beep_av.hog import CACHE_DIR, CHUNK
from beep_av.readings import close_fds

HOG_MODULE = "beep_av.hog"  # `python -m HOG_MODULE`: the DESIGN's contract, and cleanup's


class HogProcess:
    """A spawned hog, as the stage and the sampler see it (the HogHandle protocol).

    Spawn it from a thread that lives as long as the show: PR_SET_PDEATHSIG fires when
    the spawning *thread* exits. `wrapper` prefixes the argv (e.g. systemd-run ...)."""

    def __init__(
        self,
        *,
        rate: int = 0,
        cache: int = 0,
        cgroup_procs: str | None = None,
        cache_dir: str = CACHE_DIR,
        chunk: int = CHUNK,
        wrapper: list[str] | tuple[str, ...] = (),
        populate: bool = True,
        oom_score_adj: int = 1000,
        mode: str = "climb",
        size: int = 0,
        name: str | None = None,
    ) -> None:
        """`mode`: climb (the story's hog), spin (burn CPU, report iterations), idle
        (touch `size` bytes once, then sleep; read them back on `read_back()`) or thrash
        (touch every page of a `size`-byte working set in a loop; `grow(n)`)."""
        r, w = os.pipe()
        argv = [*wrapper, sys.executable, "-m", HOG_MODULE]
        argv += ["--rate", str(int(rate)), "--cache", str(int(cache)), "--cache-dir", cache_dir]
        argv += ["--chunk", str(int(chunk)), "--report-fd", str(w), "--parent", str(os.getpid())]
        if cgroup_procs:
            argv += ["--cgroup-procs", cgroup_procs]
        if not populate:
            argv += ["--populate", "0"]
        if oom_score_adj != 1000:
            argv += ["--oom-score-adj", str(int(oom_score_adj))]
        if mode != "climb":
            argv += ["--mode", mode, "--size", str(int(size))]
        if name:  # the comm the kernel prints (hog.NAME, "beep-hog", without one)
            argv += ["--name", name]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(w,),
                start_new_session=True,  # the terminal's Ctrl-C goes to the show only
                env=env,
            )
        except OSError as e:
            os.close(r)
            os.close(w)
            raise CannotStage(f"cannot start the hog ({argv[0]}: {e.strerror})") from None
        os.close(w)
        os.set_blocking(r, False)
        self.argv = argv
        self.pid: int = self._proc.pid
        self.report_fd: int = r
        try:
            self.pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:
            self.pidfd = None
        self.rate = int(rate)
        self.stderr_text = ""
        self._closed = False

    # ---- HogHandle

    def poll(self) -> int | None:
        """Return code once exited (-9 for SIGKILL), else None. Reaps it."""
        return self._proc.poll()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    # ---- control

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the hog is gone; the sampler sees its exit

    def start(self) -> None:
        self._send("start")

    def set_rate(self, bps: int) -> None:
        """Bytes per second; 0 = flat out."""
        self.rate = max(0, int(bps))
        self._send(f"rate {self.rate}")

    def pause(self) -> None:
        self._send("pause")

    def set_limit(self, nbytes: int) -> None:
        """Stop growing at `nbytes` touched (0: never)."""
        self._send(f"limit {int(nbytes)}")

    def grow(self, nbytes: int) -> None:
        """thrash: make the working set `nbytes`."""
        self._send(f"grow {int(nbytes)}")

    def read_back(self) -> None:
        """An idle hog reads its memory back and reports "read SECONDS"."""
        self._send("read")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        """Ask the hog to exit 0."""
        self._send("stop")

    def kill(self) -> None:
        """SIGKILL our own child (never reaped before, so the pid is still ours)."""
        if self._proc.returncode is None:
            try:
                self._proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` s for the exit; the return code, or None."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the hog's first report (armed, in its cgroup, cache warm).
        Raises CannotStage when it exits or stays silent, Interrupted (at once) on
        SIGINT, SIGTERM or SIGHUP: the caller's teardown kills it."""
        deadline = time.monotonic() + timeout
        while True:
            interrupt.check()
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise CannotStage(f"the hog did not get ready within {timeout:.0f} s")
            ready = interrupt.wait_readable([self.report_fd], min(left, 0.2))
            if ready:
                try:
                    data = os.read(self.report_fd, 4096)
                except BlockingIOError:
                    data = None
                if data and b"\n" in data:
                    return
            if self.poll() is not None:
                err = self._read_stderr().strip().splitlines()
                why = err[-1] if err else f"exit {self._proc.returncode}"
                raise CannotStage(f"the hog failed to start: {why}")

    def _read_stderr(self) -> str:
        if self._proc.stderr is not None and not self._proc.stderr.closed:
            try:
                os.set_blocking(self._proc.stderr.fileno(), False)
                self.stderr_text += (self._proc.stderr.read() or b"").decode("utf-8", "replace")
            except (OSError, ValueError):
                pass
        return self.stderr_text

    def close(self) -> None:
        """Close our ends (report pipe, pidfd, stdin, stderr). Does not kill."""
        if self._closed:
            return
        self._closed = True
        close_fds((self.report_fd, self.pidfd))
        for f in (self._proc.stdin, self._proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
