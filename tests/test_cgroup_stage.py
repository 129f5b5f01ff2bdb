"""The cgroup stage: pure parts on tables and fake trees, the real thing on cgroup v1."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from beep_av.errors import BadInput, CannotStage
from beep_av.stages import cgroup as cg
from beep_av.stages.cgroup import CgroupStage, pick_route, systemd_run_argv
from beep_av.stages.swap import choose_swap, free_swap, parse_swap_mode, swap_active
from tests.conftest import require
from tests.fx_cgroup import can_v1

MiB = 1 << 20

# ---------------------------------------------------------------- pure parts


def test_systemd_run_argv():
    argv = systemd_run_argv("beep-av-1-0", 256 * MiB, 64 * MiB, ["python3", "-m", "beep_av.hog"])
    assert argv[:3] == ["systemd-run", "--user", "--scope"]
    assert "--unit=beep-av-1-0" in argv
    i = argv.index("--")
    assert argv[i + 1 :] == ["python3", "-m", "beep_av.hog"]
    props = [argv[j + 1] for j, a in enumerate(argv[:i]) if a == "-p"]
    # no ManagedOOMPreference= for a systemd too old to know it (it would refuse the scope)
    assert props == [f"MemoryMax={256 * MiB}", f"MemorySwapMax={64 * MiB}", "OOMPolicy=continue"]
    assert not any("MemoryHigh" in a for a in argv)


def test_systemd_run_argv_system_manager_keeps_oomd_away():
    argv = systemd_run_argv("u", 1, 2, ["x"], user=False, systemd_version=252)
    assert argv[:2] == ["systemd-run", "--scope"] and "--user" not in argv
    assert "ManagedOOMPreference=omit" in argv


@pytest.mark.parametrize(
    "text, want",
    [
        ("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT\n", 252),
        ("systemd 255.4-1ubuntu8\n", 255),
        ("", 0),
        ("not systemd\n", 0),
    ],
)
def test_parse_systemd_version(text, want):
    assert cg.parse_systemd_version(text) == want


@pytest.mark.parametrize(
    "mode, ram, free, root, limit, provision",
    [
        ("off", 256 * MiB, 10**12, True, 0, 0),
        (0, 256 * MiB, 10**12, True, 0, 0),
        ("auto", 256 * MiB, 1024 * MiB, False, 128 * MiB, 0),  # existing swap is enough
        ("auto", 256 * MiB, 0, True, 128 * MiB, 128 * MiB),  # root: provision
        ("auto", 256 * MiB, 0, False, 0, 0),  # not root: no swap, said
        ("auto", 64 * MiB, 0, True, 64 * MiB, 64 * MiB),  # at least 64 MiB
        (96 * MiB, 256 * MiB, 0, True, 96 * MiB, 96 * MiB),
        (96 * MiB, 256 * MiB, 200 * MiB, False, 96 * MiB, 0),
    ],
)
def test_choose_swap(mode, ram, free, root, limit, provision):
    c = choose_swap(mode, ram, free, root)
    assert (c.limit, c.provision) == (limit, provision)
    assert c.note.startswith("swap:")


def test_choose_swap_explicit_size_without_root_names_the_fix():
    with pytest.raises(CannotStage, match="root"):
        choose_swap(96 * MiB, 256 * MiB, 0, False)


@pytest.mark.parametrize("text", ["bogus", "-5M", "12Q", ""])
def test_parse_swap_mode_rejects(text):
    with pytest.raises(BadInput):
        parse_swap_mode(text)


def test_parse_swap_mode():
    assert parse_swap_mode(" Auto ") == "auto"
    assert parse_swap_mode("off") == "off"
    assert parse_swap_mode("128M") == 128 * MiB


@pytest.mark.parametrize(
    "ram, cache", [(16 * MiB, 0), (128 * MiB, 128 * MiB), (128 * MiB, -1), (128 * MiB, 200 * MiB)]
)
def test_bad_sizes_are_bad_input(ram, cache):
    with pytest.raises(BadInput):
        CgroupStage(ram=ram, swap="off", cache=cache)


# ---------------------------------------------------------------- fake v2 tree


def _v2_stage(tree, state_dir, monkeypatch, **kw):
    monkeypatch.setattr(CgroupStage, "_spawn_hog", lambda self: None)
    return CgroupStage(
        ram=kw.pop("ram", 192 * MiB),
        swap=kw.pop("swap", 64 * MiB),
        cache=32 * MiB,
        cgroup_root=str(tree.root),
        proc_root=str(tree.proc),
        state_dir=str(state_dir),
        fs=tree.fs,
        is_root=kw.pop("is_root", False),
    )


def test_v2_fake_tree_prepare_and_teardown(fake_cgroup_v2, state_dir, monkeypatch):
    tree = fake_cgroup_v2()
    # free swap is there: no swapfile is provisioned on the fake tree
    (tree.proc / "meminfo").write_text("SwapFree: 1048576 kB\n")
    stage = _v2_stage(tree, state_dir, monkeypatch)
    said = []
    stage.prepare(said.append)
    d = Path(stage.cgroup_dir)
    assert d.parent == tree.own and d.name.startswith(f"beep-av-{os.getpid()}-")
    assert d.is_dir()
    assert tree.fs.writes == [
        (str(tree.own / "cgroup.subtree_control"), "+memory\n"),
        (str(d / "memory.max"), f"{192 * MiB}\n"),
        (str(d / "memory.swap.max"), f"{64 * MiB}\n"),
    ]
    assert not (d / "memory.high").exists()
    files = stage.files()
    assert files.cgroup_version == 2
    assert files.usage == str(d / "memory.current")
    assert files.swap_current == str(d / "memory.swap.current")
    assert files.oom_events == str(d / "memory.events")
    assert files.psi == str(d / "memory.pressure")
    assert files.memsw_usage is None and files.event_control is None
    assert stage.swap_limit == 64 * MiB
    assert "cgroup v2" in stage.describe() and "192 MiB RAM + 64 MiB swap" in stage.describe()
    assert any("stage:" in s for s in said)
    assert list(state_dir.glob("*.json"))  # recorded while it exists
    stage.teardown()
    assert not d.exists()
    assert not list(state_dir.glob("*.json"))
    stage.teardown()  # idempotent


def test_v2_memory_already_enabled_is_not_rewritten(fake_cgroup_v2, state_dir, monkeypatch):
    tree = fake_cgroup_v2()
    (tree.own / "cgroup.subtree_control").write_text("cpu memory\n")
    stage = _v2_stage(tree, state_dir, monkeypatch, swap="off")
    stage.prepare(lambda s: None)
    assert [p for p, _ in tree.fs.writes if p.endswith("subtree_control")] == []
    assert (Path(stage.cgroup_dir) / "memory.swap.max").read_text() == "0\n"
    stage.teardown()


def test_v2_no_internal_process_rule_moves_us_to_a_leaf(fake_cgroup_v2, state_dir, monkeypatch):
    tree = fake_cgroup_v2()
    control = str(tree.own / "cgroup.subtree_control")
    tree.fs.busy_once.add(control)  # EBUSY: we live in the cgroup we want to subdivide
    stage = _v2_stage(tree, state_dir, monkeypatch, swap="off")
    said = []
    stage.prepare(said.append)
    leaf = tree.own / f"beep-av-{os.getpid()}-show"
    assert tree.fs.writes[:2] == [
        (str(leaf / "cgroup.procs"), f"{os.getpid()}\n"),
        (control, "+memory\n"),
    ]
    assert any("moving beep-av" in s for s in said)
    stage.teardown()
    assert not leaf.exists() and not Path(stage.cgroup_dir).exists()
    assert (control, "-memory\n") in tree.fs.writes
    assert not list(state_dir.glob("*.json"))


def test_v2_enable_refused_is_cannot_stage(fake_cgroup_v2, state_dir, monkeypatch):
    tree = fake_cgroup_v2()

    class Refusing(type(tree.fs)):
        def write(self, path, text):
            if path.endswith("subtree_control"):
                raise OSError(errno.EACCES, "Permission denied", path)
            super().write(path, text)

    tree.fs = Refusing()
    stage = _v2_stage(tree, state_dir, monkeypatch, swap="off")
    with pytest.raises(CannotStage, match="run as root"):
        stage.prepare(lambda s: None)
    stage.teardown()  # after a failed prepare
    assert not any(p.name.startswith("beep-av") for p in tree.own.iterdir())


def test_route_v2_without_memory_and_no_systemd_is_cannot_stage(fake_cgroup_v2, monkeypatch):
    tree = fake_cgroup_v2(memory=False)
    monkeypatch.setattr(cg.shutil, "which", lambda name: "/usr/bin/systemd-run")
    with pytest.raises(CannotStage) as e:
        pick_route(str(tree.root), str(tree.proc))
    msg = e.value.message
    assert "PID 1 is init, not systemd" in msg and "systemd desktop with user delegation" in msg
    assert "\n" not in msg


def test_route_systemd_scope_when_pid1_is_systemd(fake_cgroup_v2, monkeypatch, tmp_path):
    """On a systemd v2 machine the stage is a scope, even where our own cgroup (a session
    scope, as under sudo) is writable: never a mkdir under a scope systemd owns."""
    tree = fake_cgroup_v2(own_rel="/user.slice/user-0.slice/session-1.scope")
    (tree.proc / "1" / "comm").write_text("systemd\n")
    monkeypatch.setattr(cg.shutil, "which", lambda name: "/usr/bin/systemd-run")
    r = pick_route(str(tree.root), str(tree.proc), is_root=True)
    assert r.kind == "systemd-system" and r.systemd and r.parent is None
    run = tmp_path / "run"
    (run / "systemd").mkdir(parents=True)
    (run / "systemd" / "private").write_text("")
    r = pick_route(str(tree.root), str(tree.proc), is_root=False, env={"XDG_RUNTIME_DIR": str(run)})
    assert r.kind == "systemd-user"
    with pytest.raises(CannotStage, match="no systemd user manager"):
        pick_route(str(tree.root), str(tree.proc), is_root=False, env={})
    monkeypatch.setattr(cg.shutil, "which", lambda name: None)
    with pytest.raises(CannotStage, match="not installed"):
        pick_route(str(tree.root), str(tree.proc), is_root=True)


def test_route_systemd_without_memory_controller_is_cannot_stage(fake_cgroup_v2, monkeypatch):
    tree = fake_cgroup_v2(memory=False)
    (tree.proc / "1" / "comm").write_text("systemd\n")
    monkeypatch.setattr(cg.shutil, "which", lambda name: "/usr/bin/systemd-run")
    with pytest.raises(CannotStage, match="no memory controller"):
        pick_route(str(tree.root), str(tree.proc), is_root=True)


def test_route_v2_picked_when_writable(fake_cgroup_v2):
    tree = fake_cgroup_v2()
    r = pick_route(str(tree.root), str(tree.proc))
    assert (r.kind, r.parent) == ("v2", str(tree.own))


def test_route_v1_on_a_fake_hybrid_tree(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc"
    (root / "memory" / "a" / "b").mkdir(parents=True)
    (root / "unified").mkdir()
    (root / "unified" / "cgroup.controllers").write_text("")
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("4:memory:/a/b\n0::/\n")
    r = pick_route(str(root), str(proc))
    assert (r.kind, r.parent) == ("v1", str(root / "memory" / "a" / "b"))


# ---------------------------------------------------------------- the real thing (v1)


def _stat(path: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in open(path))}


def _oom_kill(path: str) -> int:
    return _stat(path).get("oom_kill", 0)


def _run_to_kill(stage, timeout: float = 60.0) -> tuple[int | None, int]:
    """Start the hog, wait for its end; (returncode, max swap bytes seen)."""
    f = stage.files()
    stage.start()
    max_swap = 0
    t0 = time.monotonic()
    while stage.hog.poll() is None and time.monotonic() - t0 < timeout:
        max_swap = max(max_swap, _stat(f.memory_stat).get("swap", 0))
        time.sleep(0.005)
    return stage.hog.poll(), max_swap


@pytest.mark.real
def test_v1_stage_warms_waits_climbs_and_is_oom_killed(state_dir):
    ok, why = can_v1()
    require(ok, why)
    stage = CgroupStage(ram=128 * MiB, swap="off", cache=32 * MiB, rate=0, state_dir=str(state_dir))
    try:
        stage.prepare(lambda s: None)
        f = stage.files()
        d = stage.cgroup_dir
        assert int(Path(d, "memory.limit_in_bytes").read_text()) == 128 * MiB
        assert int(Path(d, "memory.memsw.limit_in_bytes").read_text()) == 128 * MiB
        assert stage.hog.pid in [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
        assert _stat(f.memory_stat)["cache"] >= 30 * MiB  # the warm-up is charged here
        before = _oom_kill(f.oom_events)
        rss0 = _stat(f.memory_stat)["rss"]
        time.sleep(0.3)  # waiting for start: no climbing
        assert _stat(f.memory_stat)["rss"] < rss0 + 4 * MiB
        rc, _ = _run_to_kill(stage)
        assert rc == -9
        assert _oom_kill(f.oom_events) == before + 1
    finally:
        stage.teardown()
    assert not os.path.exists(d)
    assert not list(state_dir.glob("*.json"))


@pytest.mark.real
def test_v1_stage_with_swapfile_swaps_before_the_kill(state_dir):
    ok, why = can_v1()
    require(ok, why)
    require(os.geteuid() == 0, "a swapfile needs root")
    stage = CgroupStage(
        ram=128 * MiB, swap=96 * MiB, cache=16 * MiB, rate=0, state_dir=str(state_dir)
    )
    swapfile = None
    try:
        stage.prepare(lambda s: None)
        assert stage.swap_limit == 96 * MiB
        memsw = int(Path(stage.cgroup_dir, "memory.memsw.limit_in_bytes").read_text())
        assert memsw == 224 * MiB
        if stage.swapfile:
            swapfile = stage.swapfile.path
            assert swap_active(swapfile)
            assert os.stat(swapfile).st_mode & 0o777 == 0o600
        else:
            assert free_swap() >= 96 * MiB  # existing swap was used instead
        rc, max_swap = _run_to_kill(stage)
        assert rc == -9
        assert max_swap > 32 * MiB, f"swap rose only to {max_swap} bytes before the kill"
    finally:
        stage.teardown()
    if swapfile:
        assert not os.path.exists(swapfile) and not os.path.exists(os.path.dirname(swapfile))
        assert swapfile not in Path("/proc/swaps").read_text()
    assert not list(state_dir.glob("*.json"))


@pytest.mark.real
def test_v1_stage_source_is_a_sampler_over_its_files(state_dir):
    ok, why = can_v1()
    require(ok, why)
    stage = CgroupStage(
        ram=64 * MiB, swap="off", cache=8 * MiB, rate=8 * MiB, state_dir=str(state_dir)
    )
    try:
        stage.prepare(lambda s: None)
        src = stage.source()
        snap = src.read(0.0)
        assert snap.ram_limit == 64 * MiB and snap.hog_pid == stage.hog.pid
        assert snap.cache_bytes >= 7 * MiB
        src.close()
    finally:
        stage.teardown()
