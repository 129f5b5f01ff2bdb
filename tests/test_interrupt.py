"""Issue 13, item 4: the ending signals only set a flag (beep_av.interrupt), waits wake on
it at once, and a signal at any line of a stage's prepare leaves nothing behind once the
stage is torn down (a real signal sent at each line in turn, on a fake cgroup v2 tree
with a swapfile). Light: no memory is filled, nothing is swapped on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from beep_av import interrupt
from beep_av.interrupt import Interrupted
from beep_av.stages import swap as swap_mod
from beep_av.stages.cgroup import CgroupStage
from beep_av.stages.cleanup import StateFile, run_cleanup
from beep_av.stages.swap import Swapfile

MiB = 1 << 20
PKG = str(Path(interrupt.__file__).resolve().parent)
DEAD_SHOW = 2**22 + 4321  # above pid_max's default: never a live show


@pytest.fixture
def flag():
    """interrupt.install() for the test; the process's handlers and mask as they were
    afterwards."""
    sigs = (*interrupt.ENDING, signal.SIGWINCH)
    old = {s: signal.getsignal(s) for s in sigs}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    interrupt.install()
    yield interrupt
    interrupt.ignore()
    interrupt._pending = None
    for s, h in old.items():
        signal.signal(s, h)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _later(seconds: float, fn) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), fn()), daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------- the flag


@pytest.mark.parametrize("sig", interrupt.ENDING, ids=lambda s: signal.Signals(s).name)
def test_a_signal_only_sets_the_flag(flag, sig):
    os.kill(os.getpid(), sig)
    total = sum(range(1000))  # lines run on after the signal: nothing was raised here
    assert total == 499500
    assert flag.pending() == sig
    with pytest.raises(Interrupted) as e:
        flag.check()
    assert e.value.signum == sig and str(e.value) == signal.Signals(sig).name


def test_the_first_signal_is_the_one_kept(flag):
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGHUP)
    assert flag.pending() == signal.SIGTERM


def test_no_signal_no_interrupt(flag):
    flag.check()
    assert flag.pending() is None
    assert flag.sleep(0.01) is False


def test_install_clears_an_old_flag_and_unblocks_the_three(flag):
    os.kill(os.getpid(), signal.SIGHUP)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    flag.install()
    assert flag.pending() is None
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not set(interrupt.ENDING) & blocked


def test_sleep_wakes_at_once_on_a_signal(flag):
    _later(0.1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    t0 = time.monotonic()
    assert flag.sleep(5.0) is True
    assert time.monotonic() - t0 < 0.5


def test_sleep_wakes_when_the_kernel_hands_the_signal_to_another_thread(flag):
    # the C handler runs in that thread; the wake-up pipe still wakes the main thread's
    # select at once (a flag alone would wait for the select's timeout)
    _later(0.1, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM))
    t0 = time.monotonic()
    assert flag.sleep(5.0) is True
    assert time.monotonic() - t0 < 0.5
    assert flag.pending() == signal.SIGTERM


def test_other_signals_do_not_end_a_wait(flag):
    seen = []
    signal.signal(signal.SIGWINCH, lambda s, f: seen.append(s))  # as the terminal does
    _later(0.05, lambda: os.kill(os.getpid(), signal.SIGWINCH))
    t0 = time.monotonic()
    assert flag.sleep(0.4) is False
    assert time.monotonic() - t0 >= 0.35
    assert seen == [signal.SIGWINCH]


def test_wait_readable_returns_the_ready_fd_or_nothing_on_a_signal(flag):
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert flag.wait_readable([r], 1.0) == [r]
        os.read(r, 1)
        assert flag.wait_readable([r], 0.05) == []
        _later(0.1, lambda: os.kill(os.getpid(), signal.SIGHUP))
        t0 = time.monotonic()
        assert flag.wait_readable([r], 5.0) == []
        assert time.monotonic() - t0 < 0.5 and flag.pending() == signal.SIGHUP
    finally:
        os.close(r)
        os.close(w)


def test_ignore_leaves_the_three_ignored(flag):
    flag.ignore()
    for sig in interrupt.ENDING:
        assert signal.getsignal(sig) == signal.SIG_IGN
        os.kill(os.getpid(), sig)  # the teardown cannot be cut short
    assert flag.pending() is None and flag.wake_fd() is None
    assert flag.sleep(0.01) is False


def test_without_install_the_waits_still_wait():
    assert interrupt.wake_fd() is None
    t0 = time.monotonic()
    assert interrupt.sleep(0.05) is False
    assert time.monotonic() - t0 >= 0.04


# ---------------------------------------------------------------- the long waits


class _SilentHog:
    """A HogProcess whose report pipe stays silent (a hog warming a large cache)."""

    def __init__(self) -> None:
        self.report_fd, self._w = os.pipe()
        self.killed = False

    def poll(self):
        return None

    def kill(self) -> None:
        self.killed = True


def test_waiting_for_the_hog_ends_on_a_signal_within_half_a_second(flag):
    from beep_av.hogproc import HogProcess

    hog = _SilentHog()
    _later(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        HogProcess.wait_ready(hog, timeout=30)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 0.2 + 0.5
    os.close(hog.report_fd)
    os.close(hog._w)


def test_the_terminal_writes_a_frame_whole_through_short_writes(monkeypatch):
    from beep_av.video import terminal

    r, w = os.pipe()
    real = os.write
    calls = []

    def short(fd, data):  # the kernel may take less than asked (a pipe, a slow tty)
        calls.append(len(data))
        return real(fd, bytes(data[:7]))

    monkeypatch.setattr(terminal.os, "write", short)
    try:
        terminal._write_all(w, b"\033[38;2;1;2;3m\xe2\x96\x80" * 20)
    finally:
        monkeypatch.undo()
        os.close(w)
    got = b""
    while chunk := os.read(r, 4096):
        got += chunk
    os.close(r)
    assert got == b"\033[38;2;1;2;3m\xe2\x96\x80" * 20
    assert len(calls) > 1


def test_a_signal_during_a_frame_write_does_not_cut_it(flag):
    """A real signal while os.write blocks on a full pipe: the write resumes (PEP 475)
    and every byte arrives; the flag is set."""
    from beep_av.video import terminal

    r, w = os.pipe()
    data = os.urandom(1 << 20)  # more than a pipe holds: the write blocks until read
    got = bytearray()
    main = threading.get_ident()

    def reader() -> None:
        time.sleep(0.2)
        signal.pthread_kill(main, signal.SIGTERM)  # the main thread is inside os.write
        time.sleep(0.1)
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    terminal._write_all(w, data)
    os.close(w)
    t.join(10)
    os.close(r)
    assert bytes(got) == data
    assert flag.pending() == signal.SIGTERM


# ---------------------------------------------------------------- the swapfile


class _FakeSwapTools:
    """mkswap/swapon/swapoff that succeed, and note what is "active"."""

    def __init__(self, on_call=None) -> None:
        self.active: set[str] = set()
        self.calls: list[str] = []
        self.on_call = on_call

    def __call__(self, argv):
        self.calls.append(argv[0])
        if self.on_call:
            self.on_call(argv[0])
        if argv[0] == "swapon":
            self.active.add(argv[1])
        elif argv[0] == "swapoff":
            self.active.discard(argv[1])
        return subprocess.CompletedProcess(argv, 0, "", "")


class _Ledger:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.made_before_record: list[str] = []

    def record(self, kind: str, value: str) -> None:
        if os.path.exists(value):
            self.made_before_record.append(value)
        self.items.append((kind, value))

    def forget(self, kind: str, value: str) -> None:
        self.items.remove((kind, value))


@pytest.fixture
def tools_ok(monkeypatch):
    monkeypatch.setattr(swap_mod.shutil, "which", lambda name, path=None: f"/sbin/{name}")


@pytest.mark.parametrize("at", ["mkswap", "swapon"])
def test_swapfile_interrupted_during_its_tools_is_removed_and_forgotten(
    flag, tmp_path, tools_ok, at
):
    tools = _FakeSwapTools(on_call=lambda name: name == at and os.kill(os.getpid(), signal.SIGTERM))
    ledger = _Ledger()
    with pytest.raises(Interrupted):
        Swapfile.create(
            4 * MiB, lambda s: None, ledger.record, str(tmp_path), "/nonexistent", tools,
            forget=ledger.forget,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    assert ledger.items == [] and ledger.made_before_record == []
    assert tools.active == set()  # swapon came, swapoff followed
    if at == "swapon":
        assert tools.calls == ["mkswap", "swapon", "swapoff"]


def test_swapfile_is_recorded_before_it_is_made(tmp_path, tools_ok):
    ledger = _Ledger()
    tools = _FakeSwapTools()
    sw = Swapfile.create(
        4 * MiB, lambda s: None, ledger.record, str(tmp_path), "/nonexistent", tools,
        forget=ledger.forget,
    )  # fmt: skip
    assert ledger.made_before_record == []
    assert ledger.items == [("swapdir", sw.dir), ("swapfile", sw.path)]
    assert os.path.basename(sw.dir).startswith("beep-av-swap-")
    assert (os.stat(sw.dir).st_mode & 0o777) == 0o700
    assert (os.stat(sw.path).st_mode & 0o777) == 0o600
    sw.active = True
    sw.remove()
    assert list(tmp_path.iterdir()) == []


def test_zeros_fallback_checks_the_flag_every_mib(flag, tmp_path, tools_ok, monkeypatch):
    def no_fallocate(fd, off, n):
        raise OSError(95, "Operation not supported")

    writes = []
    real_write = swap_mod._write_all

    def counting(fd, data):
        writes.append(len(data))
        if len(writes) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        real_write(fd, data)

    monkeypatch.setattr(swap_mod.os, "posix_fallocate", no_fallocate)
    monkeypatch.setattr(swap_mod, "_write_all", counting)
    ledger = _Ledger()
    with pytest.raises(Interrupted):
        Swapfile.create(
            256 * MiB, lambda s: None, ledger.record, str(tmp_path), "/nonexistent",
            _FakeSwapTools(), forget=ledger.forget,
        )  # fmt: skip
    assert len(writes) == 3  # seen before the 4th MiB, not after 256
    assert list(tmp_path.iterdir()) == [] and ledger.items == []


# ---------------------------------------------------------------- a signal at any line


class _FakeHog:
    pid = 424242

    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True

    def wait(self, timeout=None):
        return -9

    def close(self) -> None:
        pass


def _fake_spawn(self) -> None:
    """The stage's hog spawn without a process: the handle, its record, the wait."""
    self.hog = _FakeHog()
    self._hog_value = "fake-hog"
    self.state.record("hog", self._hog_value)
    interrupt.check()  # as HogProcess.wait_ready does while the hog warms its cache


def _stage(tree, state_dir: Path, swap_dir: Path, tools) -> CgroupStage:
    (tree.proc / "meminfo").write_text("SwapFree: 0 kB\n")  # a swapfile is made
    stage = CgroupStage(
        ram=128 * MiB,
        swap=4 * MiB,
        cache=8 * MiB,
        cgroup_root=str(tree.root),
        proc_root=str(tree.proc),
        state_dir=str(state_dir),
        swap_dir=str(swap_dir),
        fs=tree.fs,
        is_root=True,
    )
    return stage


def _leftovers(tree, state_dir: Path, swap_dir: Path, tools) -> list[str]:
    left = [str(p) for p in tree.own.iterdir() if p.name.startswith("beep-av-")]
    left += [str(p) for p in swap_dir.iterdir()]
    left += [str(p) for p in state_dir.glob("*.json")] if state_dir.is_dir() else []
    left += [f"active {p}" for p in tools.active]
    return left


def test_a_signal_at_any_line_of_prepare_leaves_nothing_after_teardown(
    flag, fake_cgroup_v2, tmp_path, monkeypatch, tools_ok
):
    """A real SIGTERM is sent at the k-th line that beep_av runs in prepare(), for every
    k: prepare ends with Interrupted at its next safe point (or completes when the
    signal came after the last one), the teardown runs, and the fake tree, the swap dir
    and the state file are as before."""
    monkeypatch.setattr(CgroupStage, "_spawn_hog", _fake_spawn)
    orig_create = Swapfile.create.__func__
    tools_box: list[_FakeSwapTools] = []

    def create(cls, *a, **kw):
        return orig_create(cls, *a, run=tools_box[-1], **kw)

    monkeypatch.setattr(Swapfile, "create", classmethod(create))

    def run_once(k: int | None) -> tuple[str, int, list[str]]:
        tree = fake_cgroup_v2()
        base = tmp_path / f"run{k}"
        state_dir, swap_dir = base / "state", base / "swap"
        swap_dir.mkdir(parents=True)
        tools = _FakeSwapTools()
        tools_box.append(tools)
        flag.install()  # a fresh flag for each show
        stage = _stage(tree, state_dir, swap_dir, tools)
        lines = [0]

        def local(frame, event, arg):
            if event == "line":
                lines[0] += 1
                if lines[0] == k:
                    os.kill(os.getpid(), signal.SIGTERM)
            return local

        def tracer(frame, event, arg):
            return local if frame.f_code.co_filename.startswith(PKG) else None

        sys.settrace(tracer)
        try:
            stage.prepare(lambda s: None)
            outcome = "completed"
        except Interrupted:
            outcome = "interrupted"
        finally:
            sys.settrace(None)
        if k is not None and k <= lines[0]:
            assert flag.pending() == signal.SIGTERM
        stage.teardown()
        return outcome, lines[0], _leftovers(tree, state_dir, swap_dir, tools)

    outcome, total, left = run_once(None)
    assert outcome == "completed" and left == [] and total > 50
    outcomes = {"completed": 0, "interrupted": 0}
    for k in range(1, total + 1):
        outcome, _, left = run_once(k)
        assert left == [], f"signal at line {k} of {total}: left {left}"
        outcomes[outcome] += 1
    # the signal is noticed: only one sent after the last safe point lets prepare finish
    assert outcomes["interrupted"] >= total * 0.9, outcomes


def _unrecorded(tree, state_dir: Path, swap_dir: Path, tools) -> list[str]:
    """What exists of a stage and is not in its state file (on disk, as a crashed
    show's cleanup would read it)."""
    import json

    try:
        files = list(state_dir.glob("*.json"))
        items = {(i["kind"], i["value"]) for f in files for i in json.loads(f.read_text())["items"]}
    except (OSError, ValueError):
        items = set()
    out = []
    for p in tree.own.iterdir():
        if p.name.startswith("beep-av-") and ("cgroup", str(p)) not in items:
            out.append(f"cgroup {p}")
    for d in swap_dir.iterdir():
        if ("swapdir", str(d)) not in items:
            out.append(f"swapdir {d}")
        for f in d.iterdir() if d.is_dir() else ():
            if ("swapfile", str(f)) not in items:
                out.append(f"swapfile {f}")
    out += [f"swapon {p}" for p in tools.active if ("swapfile", p) not in items]
    return out


def test_at_every_line_of_prepare_what_exists_is_already_recorded(
    fake_cgroup_v2, tmp_path, monkeypatch, tools_ok
):
    """State first: a show SIGKILLed at any line of prepare (no teardown at all) leaves
    nothing that its state file does not list for `beep-av cleanup`. Checked before
    every line beep_av runs in prepare() and in the teardown after it."""
    monkeypatch.setattr(CgroupStage, "_spawn_hog", _fake_spawn)
    tools = _FakeSwapTools()
    orig_create = Swapfile.create.__func__
    monkeypatch.setattr(
        Swapfile, "create", classmethod(lambda cls, *a, **kw: orig_create(cls, *a, run=tools, **kw))
    )
    tree = fake_cgroup_v2()
    state_dir, swap_dir = tmp_path / "state", tmp_path / "swap"
    swap_dir.mkdir()
    stage = _stage(tree, state_dir, swap_dir, tools)
    lines = [0]
    bad: list[tuple[int, list[str]]] = []

    def local(frame, event, arg):
        if event == "line":
            lines[0] += 1
            left = _unrecorded(tree, state_dir, swap_dir, tools)
            if left:
                bad.append((lines[0], left))
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(PKG) else None

    sys.settrace(tracer)
    try:
        stage.prepare(lambda s: None)
        assert stage.cgroup_dir and stage.swapfile is not None  # it was all made
        stage.teardown()
    finally:
        sys.settrace(None)
    assert lines[0] > 50
    assert bad == [], bad[:3]
    assert _leftovers(tree, state_dir, swap_dir, tools) == []


# ---------------------------------------------------------------- cleanup


def _a_cgroup_mount() -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ")[0] in ("cgroup", "cgroup2"):
            return left.split(" ")[4]
    return None


def test_cleanup_takes_recorded_but_absent_items_as_done(tmp_path):
    """State first, then mkdir: a crash between the two leaves a record of nothing."""
    mount = _a_cgroup_mount()
    if mount is None:
        pytest.skip("no cgroup mount on this machine")
    sf = StateFile(tmp_path / "state", show_pid=DEAD_SHOW)
    sf.ensure()
    sf.record("cgroup", os.path.join(mount, f"beep-av-{DEAD_SHOW}-0"))
    sf.record("swapdir", "/var/tmp/beep-av-swap-0a1b2c3d")
    sf.record("swapfile", "/var/tmp/beep-av-swap-0a1b2c3d/swapfile")
    said: list[str] = []
    result = run_cleanup(said.append, tmp_path / "state")
    assert result.clean, said
    assert result.removed == 0 and said == []
    assert not sf.path.exists()
