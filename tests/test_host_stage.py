"""The host stage: domain detection on fake /proc and cgroup trees (v1, v2, none, hostile),
confirmation without a terminal, and the real thing: `beep-av show --stage host` started
INSIDE a 256 MiB + 128 MiB-swap memory cgroup (never on the bare host), five times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beep_av.errors import BadInput, CannotStage
from beep_av.stages.host import Domain, HostStage, domain_files, find_domain, lower_oom_score_adj
from tests.conftest import ROOT, require

MiB = 1 << 20
GiB = 1 << 30
UNLIMITED_V1 = "9223372036854771712"

# ---------------------------------------------------------------- fake trees


def _proc(base: Path, cgroup_text: str, total=24 * GiB, swap=2 * GiB) -> Path:
    proc = base / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_text)
    (proc / "meminfo").write_text(
        f"MemTotal: {total // 1024} kB\nMemFree: {total // 2048} kB\n"
        f"MemAvailable: {total // 2048} kB\nCached: 1000 kB\n"
        f"SwapTotal: {swap // 1024} kB\nSwapFree: {swap // 1024} kB\n"
    )
    return proc


def _v1_tree(base: Path, levels: dict[str, tuple[str, str | None]]) -> Path:
    """levels: hierarchy path -> (limit_in_bytes, memsw.limit_in_bytes or None)."""
    root = base / "cgroup"
    mem = root / "memory"
    mem.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text(UNLIMITED_V1 + "\n")  # the root memcg
    for path, (limit, memsw) in levels.items():
        d = mem / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.limit_in_bytes").write_text(limit + "\n")
        if memsw is not None:
            (d / "memory.memsw.limit_in_bytes").write_text(memsw + "\n")
    return root


def _v2_tree(base: Path, levels: dict[str, tuple[str, str | None]]) -> Path:
    root = base / "cgroup"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    for path, (mx, swap) in levels.items():
        d = root / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(mx + "\n")
        if swap is not None:
            (d / "memory.swap.max").write_text(swap + "\n")
    return root


V1_CASES = [
    # (levels, own path, want (path, ram, swap))
    pytest.param(
        {"/pod": (str(256 * MiB), str(384 * MiB))},
        "/pod",
        ("/pod", 256 * MiB, 128 * MiB),
        id="own-limit-with-memsw",
    ),
    pytest.param(
        {"/a": (str(512 * MiB), None), "/a/b": (UNLIMITED_V1, None)},
        "/a/b",
        ("/a", 512 * MiB, 2 * GiB),
        id="ancestor-limit-no-memsw-host-swap",
    ),
    pytest.param(
        {"/a": (str(300 * MiB), str(400 * MiB)), "/a/b": (str(1 * GiB), str(5 * GiB))},
        "/a/b",
        ("/a", 300 * MiB, 100 * MiB),
        id="tightest-wins",
    ),
    pytest.param(
        {"/a": (str(256 * MiB), str(256 * MiB))},
        "/a",
        ("/a", 256 * MiB, 0),
        id="memsw-equal-no-swap",
    ),
    pytest.param(
        {"/a": (str(256 * MiB), str(100 * GiB))},
        "/a",
        ("/a", 256 * MiB, 2 * GiB),
        id="swap-capped-by-host",
    ),
]


@pytest.mark.parametrize("levels, own, want", V1_CASES)
def test_v1_domain(tmp_path, levels, own, want):
    root = _v1_tree(tmp_path, levels)
    proc = _proc(tmp_path, f"4:memory:{own}\n0::/\n")
    d = find_domain(str(proc), str(root))
    assert (d.version, d.cgroup_path, d.ram_limit, d.swap_limit) == (1, *want)
    assert d.cgroup_dir == str(root / "memory" / want[0].lstrip("/"))
    assert f"cgroup {want[0]} ({want[1] // MiB} MiB" in d.describe()


@pytest.mark.parametrize(
    "levels, own, want",
    [
        pytest.param(
            {"/k": (str(256 * MiB), str(128 * MiB))}, "/k", ("/k", 256 * MiB, 128 * MiB), id="own"
        ),
        pytest.param(
            {"/k": (str(1 * GiB), "max"), "/k/p": ("max", "0")},
            "/k/p",
            ("/k", 1 * GiB, 0),
            id="ancestor-max-swap-0-below",
        ),
        pytest.param(
            {"/k": (str(1 * GiB), None)}, "/k", ("/k", 1 * GiB, 2 * GiB), id="no-swap-file-host"
        ),
    ],
)
def test_v2_domain(tmp_path, levels, own, want):
    root = _v2_tree(tmp_path, levels)
    proc = _proc(tmp_path, f"0::{own}\n")
    d = find_domain(str(proc), str(root))
    assert (d.version, d.cgroup_path, d.ram_limit, d.swap_limit) == (2, *want)
    files = domain_files(d, str(proc))
    assert files.cgroup_version == 2
    assert files.usage == os.path.join(d.cgroup_dir, "memory.current")
    assert files.oom_events.endswith("memory.events")


@pytest.mark.parametrize(
    "cgroup_text, levels",
    [
        pytest.param("4:memory:/a\n", {"/a": (UNLIMITED_V1, UNLIMITED_V1)}, id="v1-unlimited"),
        pytest.param("4:memory:/a\n", {"/a": (str(48 * GiB), None)}, id="above-memtotal"),
        pytest.param("4:memory:/\n", {}, id="root-cgroup"),
        pytest.param("", {}, id="no-cgroup-file"),
        pytest.param("garbage\n4:memory\n::\n", {}, id="garbage"),
        pytest.param("4:memory:/a\n", {"/a": ("many\n", None)}, id="hostile-limit-text"),
        pytest.param("4:memory:/missing/dir\n", {}, id="missing-dir"),
    ],
)
def test_whole_machine_when_no_cgroup_limit(tmp_path, cgroup_text, levels):
    root = _v1_tree(tmp_path, levels)
    proc = _proc(tmp_path, cgroup_text)
    d = find_domain(str(proc), str(root))
    assert d == Domain(0, None, None, 24 * GiB, 2 * GiB)
    assert d.describe() == "the whole machine (24576 MiB + 2048 MiB swap)"
    files = domain_files(d, str(proc))
    assert files.cgroup_version == 0 and files.cgroup_dir is None
    assert files.meminfo == str(proc / "meminfo") and files.vmstat == str(proc / "vmstat")


def test_v1_is_preferred_over_an_unlimited_v2(tmp_path):
    root = _v1_tree(tmp_path, {"/c": (str(200 * MiB), str(300 * MiB))})
    (root / "unified").mkdir()
    (root / "unified" / "cgroup.controllers").write_text("")
    proc = _proc(tmp_path, "4:memory:/c\n0::/\n")
    d = find_domain(str(proc), str(root))
    assert (d.version, d.ram_limit, d.swap_limit) == (1, 200 * MiB, 100 * MiB)
    files = domain_files(d, str(proc))
    assert files.oom_events == os.path.join(d.cgroup_dir, "memory.oom_control")
    assert files.event_control.endswith("cgroup.event_control")


def test_unreadable_meminfo_is_cannot_stage(tmp_path):
    with pytest.raises(CannotStage, match="meminfo"):
        find_domain(str(tmp_path / "nowhere"), str(tmp_path))


def _stage(tmp_path, **kw) -> HostStage:
    root = _v1_tree(tmp_path, {"/pod": (str(256 * MiB), str(384 * MiB))})
    proc = _proc(tmp_path, "4:memory:/pod\n")
    return HostStage(proc_root=str(proc), cgroup_root=str(root), **kw)


def test_stage_auto_cache_and_rate_follow_the_domain(tmp_path):
    s = _stage(tmp_path)
    assert (s.kind, s.ram_limit, s.swap_limit) == ("host", 256 * MiB, 128 * MiB)
    assert s.cache_bytes == 64 * MiB
    assert s.rate == 8 * MiB  # 384 MiB / 50 s is below the 8 MiB/s floor
    assert "cgroup /pod (256 MiB + 128 MiB swap)" in s.statement()


@pytest.mark.parametrize("cache", [-1, 256 * MiB, 10 * GiB])
def test_stage_cache_must_fit_the_domain(tmp_path, cache):
    with pytest.raises(BadInput, match="--cache"):
        _stage(tmp_path, cache=cache)


def test_tiny_domain_is_cannot_stage(tmp_path):
    root = _v1_tree(tmp_path, {"/t": (str(16 * MiB), None)})
    proc = _proc(tmp_path, "4:memory:/t\n")
    with pytest.raises(CannotStage, match="too small"):
        HostStage(proc_root=str(proc), cgroup_root=str(root))


def test_confirm_without_yes_and_without_terminal_is_bad_input(tmp_path):
    s = _stage(tmp_path)
    said: list[str] = []
    with pytest.raises(BadInput, match="--yes"):
        s.confirm(said.append, yes=False, tty=False, protect=lambda: ["cannot lower X"])
    # the gap and the domain are said before the refusal
    assert said[0] == "warning: cannot lower X"
    assert "256 MiB + 128 MiB swap" in said[1]
    assert not s.confirmed
    with pytest.raises(BadInput, match="not confirmed"):
        s.prepare(said.append)  # nothing spawned without confirmation
    assert s.hog is None


@pytest.mark.parametrize("answer, ok", [("yes\n", True), ("Y", True), ("no\n", False), ("", False)])
def test_confirm_asks_on_a_terminal(tmp_path, answer, ok):
    s = _stage(tmp_path)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answer

    if ok:
        s.confirm(lambda _: None, yes=False, tty=True, ask=ask, protect=list)
        assert s.confirmed
    else:
        with pytest.raises(BadInput, match="not confirmed"):
            s.confirm(lambda _: None, yes=False, tty=True, ask=ask, protect=list)
    assert len(asked) == 1


def test_confirm_with_yes_never_asks(tmp_path):
    s = _stage(tmp_path)

    def ask(prompt: str) -> str:
        raise AssertionError("asked despite --yes")

    s.confirm(lambda _: None, yes=True, tty=True, ask=ask, protect=list)
    assert s.confirmed
    s.teardown()  # nothing spawned: still fine, twice
    s.teardown()


def test_lower_oom_score_adj_reports_a_refusal(tmp_path):
    (tmp_path / "self").mkdir()
    assert lower_oom_score_adj(-500, str(tmp_path)) is not None  # no file there
    (tmp_path / "self" / "oom_score_adj").write_text("0\n")
    assert lower_oom_score_adj(-500, str(tmp_path)) is None  # a plain file takes it


def test_lower_oom_score_adj_on_this_machine():
    """FIELD-NOTES: negative values fail with EACCES here; either way the answer is
    consistent with what the kernel now says."""
    before = Path("/proc/self/oom_score_adj").read_text().strip()
    code = (
        "from beep_av.stages.host import lower_oom_score_adj as f;"
        "import pathlib;w=f(-1);print(repr(w));"
        "print(pathlib.Path('/proc/self/oom_score_adj').read_text().strip())"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    why, now = r.stdout.split("\n")[:2]
    if why == "None":
        assert now == "-1"
    else:
        assert now == before and why != "None"


# ---------------------------------------------------------------- the real thing


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_key(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    raise KeyError(key)


@pytest.fixture
def host_container(scratch_cgroup):
    """A 256 MiB + 128 MiB swap memory cgroup to be "the host" of a show, with a
    128 MiB swapfile provisioned for it; both always removed."""
    from beep_av.stages.swap import Swapfile

    require(os.geteuid() == 0, "needs root")
    cg = scratch_cgroup(256 * MiB, 128 * MiB)
    try:
        swap = Swapfile.create(128 * MiB, lambda _: None)
    except CannotStage as e:
        require(False, f"cannot provision a swapfile: {e.message}")
    try:
        yield cg
    finally:
        swap.remove()


def _show_inside(cg: str, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    argv = " ".join([sys.executable, "-m", "beep_av", "show", "--stage", "host", *args])
    # join the cgroup first, then become the show: the show's own domain is the cgroup
    return subprocess.run(
        ["sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec {argv}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


QUIET = ["--output", "headless", "--audio", "off", "--calm", "0.3"]


@pytest.mark.real
@pytest.mark.slow
def test_host_stage_in_a_container_five_runs(host_container, tmp_path):
    cg = host_container
    rel = "/" + os.path.relpath(cg, "/sys/fs/cgroup/memory")
    for run in range(5):
        rec = tmp_path / f"r{run}.jsonl"
        r = _show_inside(
            cg, ["--yes", "--cache", "32M", "--rate", "256M/s", *QUIET, "--record", str(rec)]
        )
        assert r.returncode == 0, f"run {run}: {r.stderr}{r.stdout}"
        # the show named its 256 MiB domain before the hog started
        assert f"cgroup {rel} (256 MiB + 128 MiB swap)" in r.stderr, r.stderr
        records = [json.loads(x) for x in rec.read_text().splitlines()]
        assert records[0]["stage"] == "host"
        assert records[0]["ram_limit"] == 256 * MiB
        phases = [x["phase"] for x in records if x["type"] == "phase"]
        assert phases[-2:] == ["oom", "finale"], phases
        kills = [x for x in records if x["type"] == "kill"]
        assert len(kills) == 1
        kill = kills[0]
        # the hog's own exit status says SIGKILL, and the kernel named that same pid
        assert kill["exit"] == 137 and "exit" in kill["detected_by"], kill
        assert f"Killed process {kill['pid']} " in kill["kmsg"], kill
        # exactly one OOM kill in the domain per run so far: the show was never one
        assert _read_key(f"{cg}/memory.oom_control", "oom_kill") == run + 1
        assert [x["reason"] for x in records if x["type"] == "end"] == ["finale"]
    assert Path(cg, "cgroup.procs").read_text().split() == []  # hog and show gone


@pytest.mark.real
def test_host_stage_without_yes_or_terminal_exits_2_and_allocates_nothing(host_container):
    cg = host_container
    # with a 200 MiB cache, a started hog would push the peak far above the show alone
    r = _show_inside(cg, ["--cache", "200M", *QUIET], timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("beep-av: --stage host needs --yes")
    assert "256 MiB + 128 MiB swap" in r.stderr  # the domain was stated first
    peak = int(Path(cg, "memory.max_usage_in_bytes").read_text())
    assert peak < 150 * MiB, f"peak {peak / MiB:.0f} MiB: something was allocated"
    assert _read_key(f"{cg}/memory.oom_control", "oom_kill") == 0


# ---------------------------------------------------------------- the show's ballast


def test_ballast_source_drops_the_ballast_at_the_first_evidence():
    from beep_av.model import Snapshot
    from beep_av.stages.host import Ballast, BallastSource

    class Inner:
        oom_notified = False

        def __init__(self):
            self.snaps = [Snapshot(t=0.0), Snapshot(t=0.02, oom_kill_count=1)]

        def read(self, t):
            return self.snaps.pop(0)

        def wait(self, timeout):
            pass

        def close(self):
            pass

    ballast = Ballast(1 << 20)
    try:
        src = BallastSource(Inner(), ballast)
        src.read(0.0)
        assert ballast.held
        src.read(0.02)
        assert not ballast.held
    finally:
        ballast.close()
    assert ballast.returncode == -9  # ended by release(), and reaped


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def test_ballast_is_a_named_process_holding_its_memory():
    """The ballast lives in a child process of its own, named for the kernel's OOM
    report, with its memory faulted in (locked, and SCHED_FIFO, where it may)."""
    from beep_av.stages.host import BALLAST_NAME, Ballast

    size = 4 * MiB
    ballast = Ballast(size)
    try:
        assert ballast.problem is None and ballast.held
        pid = ballast.pid
        assert Path(f"/proc/{pid}/comm").read_text().strip() == BALLAST_NAME
        st = _status(pid)
        assert st["PPid"] == str(os.getpid()) and st["Threads"] == "1"
        assert int(st["RssAnon"].split()[0]) * 1024 >= size
        if ballast.locked:
            assert int(st["VmLck"].split()[0]) * 1024 >= size
        if ballast.realtime:
            assert os.sched_getscheduler(pid) == os.SCHED_FIFO
    finally:
        ballast.close()
    assert not ballast.held and not Path(f"/proc/{pid}").exists()


def test_ballast_process_dies_with_the_show():
    """PR_SET_PDEATHSIG: a show killed outright leaves no ballast behind (its domain's
    cgroup.procs must empty)."""
    code = (
        "import os,sys,time;from beep_av.stages.host import Ballast;"
        "b=Ballast(1<<20);print(b.pid,flush=True);time.sleep(60)"
    )
    show = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(show.stdout.readline())
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "beep-ballast"
    finally:
        show.kill()
        show.wait()
        show.stdout.close()

    def gone() -> bool:
        try:  # reaped by whoever inherited it, or at least dead
            return _status(pid)["State"].startswith(("Z", "X"))
        except (OSError, KeyError):
            return True

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone()


@pytest.mark.real
def test_ballast_process_exits_when_the_domain_goes_under_oom(scratch_cgroup):
    """A real v1 OOM in a scratch domain wakes the ballast process through the OOM
    eventfd, and it exits by itself: nothing in this process (no thread, no GIL) is
    needed for its memory to go back."""
    from beep_av.stages.host import Ballast

    cg = scratch_cgroup(limit=48 * MiB)
    ballast = Ballast(1 << 20, cg)
    try:
        assert ballast.held and ballast.watching
        child = subprocess.Popen(
            [sys.executable, "-c", "x = bytearray(200 << 20)"],
            preexec_fn=lambda: open(os.path.join(cg, "cgroup.procs"), "w").write(str(os.getpid())),
        )
        assert child.wait(60) == -9  # the kernel killed it
        deadline = time.monotonic() + 5
        while ballast.held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ballast.held
        assert ballast.returncode == 0  # the eventfd woke it: not released by us
    finally:
        ballast.close()


def test_ram_and_swap_are_said_to_be_ignored_on_the_host_stage():
    from tests.conftest import beep

    r = beep("show", "--stage", "host", "--ram", "128M", "--swap", "64M", "--output", "headless",
             "--audio", "off", stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 2  # no --yes and no terminal: refused, nothing allocated
    assert "note: --ram and --swap ignored on the host stage" in r.stderr
