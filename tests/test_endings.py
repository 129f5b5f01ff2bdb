"""Issue 8: every way a real show can end leaves the same clean machine and exits with
its documented code (README, "How a show ends").

Each test runs a real show on a small cgroup stage in a subprocess and checks, by the
show's pid, that no cgroup, swapfile, hog process, state file or temp file of it is
left. Signals are sent at chosen phases (read from the headless output's phase lines);
faults are injected through run_live's factories by running this module as the show
(`python -m tests.test_endings FAULT SHOW-ARGS...`, see `main` at the bottom); the disk
fills for real on small ext4 loop filesystems mounted here."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.fx_cgroup import beep_cgroups, beep_swaps, hog_pids, own_v1_cgroup

pytestmark = [pytest.mark.real, pytest.mark.slow]
MiB = 1 << 20
STAGE = ["--ram", "160M", "--swap", "96M", "--cache", "32M"]
QUIET = ["--output", "headless", "--audio", "off", "--calm", "0.5"]
SLOW = [*STAGE, "--rate", "24M/s", *QUIET]  # ~10 s to the kill: time to signal it
FAST = [*STAGE, "--rate", "96M/s", *QUIET]


# ---------------------------------------------------------------- machine checks


def _own_memory_cgroup() -> Path | None:
    own = own_v1_cgroup()
    return Path(own) if own and os.path.isdir(own) else None


def can_stage() -> tuple[bool, str]:
    cg = _own_memory_cgroup()
    if os.geteuid() != 0 or cg is None or not os.access(cg, os.W_OK):
        return False, "needs root and a writable cgroup v1 memory controller"
    return True, ""


def _swaps() -> set[str]:
    return set(beep_swaps())


def _temp_entries(dirs: list[Path]) -> set[str]:
    out = set()
    for d in dirs:
        if d.is_dir():
            out |= {str(p) for p in d.iterdir() if p.name.startswith("beep-av-")}
    return out


class Machine:
    """What a show might leave, taken before it starts, compared after it ends."""

    def __init__(self, state_dir: Path, temp_dirs: list[Path]) -> None:
        self.state_dir = state_dir
        self.temp_dirs = [Path("/var/tmp"), *temp_dirs]
        self.swaps = _swaps()
        self.temps = _temp_entries(self.temp_dirs)

    def residue(self, show_pid: int) -> list[str]:
        """Everything of show `show_pid` still on the machine."""
        left = sorted(beep_cgroups(f"beep-av-{show_pid}-*"))
        left += sorted(_swaps() - self.swaps)
        left += sorted(_temp_entries(self.temp_dirs) - self.temps)
        left += [f"hog pid {pid}" for pid in hog_pids(show_pid)]
        if self.state_dir.is_dir():
            left += [str(p) for p in self.state_dir.iterdir()]
        if Path(f"/proc/{show_pid}").exists():
            left.append(f"show pid {show_pid} still running")
        return left


def make_machine(tmp_path: Path, monkeypatch) -> object:
    """The `machine` fixture's body (shared with test_host_guard): needs a real stage;
    gives our shows a private state dir; returns make(*temp_dirs) -> Machine."""
    ok, why = can_stage()
    require(ok, why)
    state = tmp_path / "state"
    monkeypatch.setenv("BEEP_AV_STATE_DIR", str(state))  # our shows' state files only
    return lambda *temp_dirs: Machine(state, list(temp_dirs))


@pytest.fixture
def machine(tmp_path, monkeypatch):
    return make_machine(tmp_path, monkeypatch)


# ---------------------------------------------------------------- running a show


class Show:
    """A show in a subprocess; stdout and stderr lines gathered by reader threads."""

    def __init__(self, args: list[str], fault: str | None = None, **popen) -> None:
        cmd = ["-m", "tests.test_endings", fault] if fault else ["-m", "beep_av", "show"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", SDL_VIDEODRIVER="dummy")
        self.proc = subprocess.Popen(
            [sys.executable, *cmd, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            **popen,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            self._lines.put(line)

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if needle in self._lines.get(timeout=0.2):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
        self.proc.kill()
        raise AssertionError(f"never saw {needle!r}: {self.stdout}{self.stderr}")

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            time.sleep(0.1)  # let the reader threads take the last lines

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def end_of(path: Path) -> dict:
    ends = [r for r in records(path) if r["type"] == "end"]
    assert len(ends) == 1, ends
    return ends[0]


def one_line_error(stderr: str, needle: str) -> None:
    """The error is one `beep-av:` line naming `needle`, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("beep-av: ")]
    assert len(lines) == 1 and needle in lines[0], stderr


# ---------------------------------------------------------------- normal ends and keys


def test_finale_exit_0_nothing_left_and_no_fd_leaked(machine, tmp_path):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*FAST, "--record", str(rec)])
    assert show.wait() == 0, show.stderr
    end = end_of(rec)
    assert end["reason"] == "finale" and end["exit"] == 0
    assert end["fds"] == end["fds_start"], end
    assert m.residue(show.proc.pid) == []


@pytest.mark.parametrize(
    ("key", "reason", "said"),
    [("r", "released", "released; the hog is gone"), ("q", "quit", "")],
)
def test_presenter_keys_exit_0(machine, tmp_path, key, reason, said):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*SLOW, "--keys", f"2.5:{key}", "--record", str(rec)])
    show.wait_for(" filling ")
    assert show.wait() == 0, show.stderr
    end = end_of(rec)
    assert end["reason"] == reason
    assert not [r for r in records(rec) if r["type"] == "kill"]  # no kernel kill staged
    assert said in show.stderr
    assert m.residue(show.proc.pid) == []


# ---------------------------------------------------------------- signals at phases


@pytest.mark.parametrize(
    ("sig", "phase"),
    [
        (signal.SIGINT, " calm "),
        (signal.SIGTERM, " filling "),
        (signal.SIGHUP, " evicting "),
        (signal.SIGTERM, " swapping "),
        (signal.SIGHUP, "swap: "),  # during prepare: swapfile made, hog warming its cache
    ],
    ids=["int-calm", "term-filling", "hup-evicting", "term-swapping", "hup-prepare"],
)
def test_signal_exits_130_and_leaves_nothing(machine, tmp_path, sig, phase):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*SLOW, "--record", str(rec)])
    show.wait_for(phase)
    show.proc.send_signal(sig)
    assert show.wait(60) == 130, show.stderr
    assert "Traceback" not in show.stderr
    assert "interrupted; the stage is torn down" in show.stderr
    if rec.exists():  # a show stopped in prepare has not opened its recording yet
        assert end_of(rec)["reason"] == "interrupted"
    assert m.residue(show.proc.pid) == []


def test_second_signal_during_cleanup_does_not_cut_it_short(machine):
    m = machine()
    show = Show(SLOW)
    show.wait_for(" swapping ")
    show.proc.send_signal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # an impatient user
        time.sleep(0.02)
        if show.proc.poll() is None:
            show.proc.send_signal(sig)
    assert show.wait(60) == 130, show.stderr
    assert m.residue(show.proc.pid) == []


# ---------------------------------------------------------------- faults


def test_renderer_exception_exits_1_after_cleanup(machine, tmp_path):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*SLOW, "--record", str(rec)], fault="renderer")
    assert show.wait() == 1, show.stderr
    one_line_error(show.stderr, "the headless output failed (RuntimeError: renderer fault")
    assert end_of(rec)["reason"] == "error"
    assert m.residue(show.proc.pid) == []


def test_audio_exception_exits_1_after_cleanup(machine, tmp_path):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*SLOW, "--record", str(rec)], fault="audio")
    assert show.wait() == 1, show.stderr
    one_line_error(show.stderr, "the audio output failed (RuntimeError: audio fault")
    assert end_of(rec)["reason"] == "error"
    assert m.residue(show.proc.pid) == []


def test_audio_device_vanishing_goes_on_silent_to_the_finale(machine, tmp_path):
    m = machine()
    rec = tmp_path / "r.jsonl"
    show = Show([*FAST, "--record", str(rec)], fault="vanish")
    assert show.wait() == 0, show.stderr
    assert "Traceback" not in show.stderr
    said = [ln for ln in show.err if "vanished mid-show" in ln]
    assert len(said) == 1 and "the show goes on silent" in said[0], show.stderr
    assert " finale " in show.stdout
    end = end_of(rec)
    assert end["reason"] == "finale"
    assert [r for r in records(rec) if r["type"] == "beep"], "the beep still came, silent"
    assert m.residue(show.proc.pid) == []


def test_hog_failing_to_start_exits_3_with_the_reason(machine):
    m = machine()
    show = Show([*FAST], fault="hog")
    assert show.wait() == 3, show.stderr
    one_line_error(show.stderr, "the hog failed to start")
    assert "tmpfs is memory, not disk" in show.stderr  # the hog's own reason
    assert m.residue(show.proc.pid) == []


# ---------------------------------------------------------------- a full disk, for real


class LoopFS:
    """A small ext4 filesystem in an image file, loop-mounted; always unmounted."""

    def __init__(self, base: Path, size: int, inodes: int | None = None) -> None:
        self.image = base / "disk.img"
        self.mount = base / "mnt"
        self.mount.mkdir(parents=True)
        with open(self.image, "wb") as f:
            f.truncate(size)  # sparse: costs the real disk almost nothing
        mkfs = ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal"]
        if inodes:
            mkfs += ["-N", str(inodes)]
        subprocess.run([*mkfs, str(self.image)], check=True, capture_output=True)
        subprocess.run(
            ["mount", "-o", "loop", str(self.image), str(self.mount)],
            check=True,
            capture_output=True,
        )

    def fill_inodes(self) -> None:
        """Use every free inode (the blocks stay free: statvfs still shows the space)."""
        d = self.mount / "filler"
        d.mkdir()
        for i in range(100000):
            try:
                (d / str(i)).touch()
            except OSError:
                return

    def fill_blocks(self, leave: int) -> None:
        """Write a file until only about `leave` bytes stay free."""
        st = os.statvfs(self.mount)
        n = max(0, st.f_bavail * st.f_frsize - leave)
        with open(self.mount / "filler.bin", "wb") as f:
            while n > 0:
                n -= f.write(bytes(min(n, MiB)))

    def close(self) -> None:
        subprocess.run(["umount", str(self.mount)], capture_output=True)
        if not os.path.ismount(self.mount):
            shutil.rmtree(self.mount, ignore_errors=True)
            self.image.unlink(missing_ok=True)


@pytest.fixture
def loopfs(tmp_path):
    require(os.geteuid() == 0, "mounting a loop filesystem needs root")
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 (e2fsprogs) is not installed")
    made: list[LoopFS] = []

    def make(size: int, inodes: int | None = None) -> LoopFS:
        fs = LoopFS(tmp_path / f"loop{len(made)}", size, inodes)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.close()
        assert not os.path.ismount(fs.mount), f"{fs.mount} is still mounted"


def test_disk_full_while_writing_the_swapfile_exits_3_with_the_fix(machine, loopfs):
    fs = loopfs(448 * MiB, inodes=16)  # room for the swapfile, but no inode to make it
    fs.fill_inodes()
    m = machine(fs.mount)
    show = Show([*FAST, "--swap-dir", str(fs.mount)], fault="swapdir")
    assert show.wait() == 3, show.stderr
    one_line_error(show.stderr, "No space left on device")
    assert "--swap off" in show.stderr  # the fix
    assert m.residue(show.proc.pid) == []


def test_small_disk_for_the_swapfile_exits_3_before_writing(machine, loopfs):
    fs = loopfs(64 * MiB)
    m = machine(fs.mount)
    show = Show([*FAST, "--swap-dir", str(fs.mount)], fault="swapdir")
    assert show.wait() == 3, show.stderr
    one_line_error(show.stderr, "free disk space or use a smaller --swap")
    assert m.residue(show.proc.pid) == []


def test_disk_full_while_recording_stops_the_recording_not_the_show(machine, loopfs):
    from beep_av.recording import load

    fs = loopfs(8 * MiB)
    fs.fill_blocks(leave=12 * 1024)  # a second or two of samples, then ENOSPC mid-show
    m = machine(fs.mount)
    rec = fs.mount / "r.jsonl"
    show = Show([*FAST, "--record", str(rec)])
    assert show.wait() == 0, show.stderr
    said = [ln for ln in show.err if ln.startswith("recording: stopped")]
    assert len(said) == 1 and "No space left on device" in said[0], show.stderr
    assert " finale " in show.stdout
    kept = load(str(rec))  # whole lines up to the full disk: still a recording
    assert len(kept) > 10
    assert m.residue(show.proc.pid) == []


# ---------------------------------------------------------------- the faulty show (main)


def _fault_factories(fault: str, swap_dir: str | None) -> dict:
    """run_live's factories, with the fault `fault` built into one of them."""
    from beep_av import app
    from beep_av.model import Phase

    kw: dict = {}
    if fault == "renderer":

        def make_output(settings, key_plan, say):
            output, name = app._open_outputs(settings, key_plan, say)
            inner = output.frame

            def frame(state):
                if state.phase is Phase.EVICTING:
                    raise RuntimeError("renderer fault at evicting")
                return inner(state)

            output.frame = frame
            return output, name

        kw["make_output"] = make_output
    elif fault in ("audio", "vanish"):
        from beep_av.audio.output import AudioOut
        from beep_av.audio.synth import RATE, BeepSpec, Synth
        from beep_av.noise import Noise

        class FaultySynth(Synth):
            def render(self, state, out, noise, now):
                if state.phase is Phase.EVICTING:
                    raise RuntimeError("audio fault at evicting")
                return super().render(state, out, noise, now)

        def make_audio(settings, get_state, t0, say):
            beep = BeepSpec(
                freq=settings.beep_freq,
                length_ms=settings.beep_length,
                repeats=settings.beep_repeats,
            )
            synth_cls = FaultySynth if fault == "audio" else Synth
            return AudioOut(
                synth_cls(RATE, beep, max_block=4096),
                Noise(seed=1),
                get_state,
                t0,
                device="fake device",
                stream_factory=lambda cb: VanishingStream(cb, get_state),
                say=say,
            )

        kw["make_audio"] = make_audio
    elif fault in ("hog", "swapdir"):
        from beep_av.stages.cgroup import CgroupStage

        def make_stage(settings, plan, t0, say):
            extra = {"cache_dir": "/dev/shm"} if fault == "hog" else {"swap_dir": swap_dir}
            return CgroupStage(
                ram=plan.ram, swap=plan.swap if plan.swap is not None else "auto",
                cache=plan.cache, rate=plan.rate, **extra,
            )  # fmt: skip

        kw["make_stage"] = make_stage
    return kw


class VanishingStream:
    """A PortAudio-like stream whose device disappears once the story swaps: its
    callbacks stop and `active` turns False, as when the sound server is killed."""

    latency = 0.01

    def __init__(self, callback, get_state) -> None:
        import numpy as np

        self.callback = callback
        self.get_state = get_state
        self.active = False
        self._buf = np.zeros((512, 2), dtype=np.float32)
        self._stop = threading.Event()

    def _run(self) -> None:
        from beep_av.model import Phase

        while not self._stop.wait(512 / 48000):
            if self.get_state().phase.index >= Phase.SWAPPING.index:
                self.active = False
                return
            self.callback(self._buf, 512, None, None)

    def start(self) -> None:
        self.active = True
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


def main(argv: list[str]) -> int:
    """`python -m tests.test_endings FAULT [--swap-dir DIR] SHOW-ARGS...`: a real show
    (as `beep-av show`) with FAULT built in through run_live's factories."""
    from beep_av import app, cli

    fault, rest = argv[0], argv[1:]
    swap_dir = None
    if "--swap-dir" in rest:
        i = rest.index("--swap-dir")
        swap_dir = rest[i + 1]
        del rest[i : i + 2]

    def go() -> int:
        settings = cli.settings_from_args(cli.build_parser().parse_args(["show", *rest]))
        kw = _fault_factories(fault, swap_dir)
        return app.run_live(settings, say=cli._say, **kw)

    return cli.run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
