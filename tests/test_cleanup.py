"""State files and leftovers: fake /proc trees for the logic, a real crashed show
(SIGKILLed mid-show) for cleanup()."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from beep_av.stages import cleanup as cu
from beep_av.stages.cleanup import StateFile, cleanup, find_leftovers, proc_start_time
from beep_av.stages.swap import swap_active
from tests.conftest import ROOT, beep, require
from tests.fx_cgroup import can_v1


def _fake_proc(base: Path, pid: int, start: int, name: str = "python3", cmdline: str = "") -> None:
    d = base / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    rest = " ".join(["S"] + ["0"] * 18 + [str(start)] + ["0"] * 10)
    (d / "stat").write_text(f"{pid} ({name}) {rest}\n")
    (d / "cmdline").write_text(cmdline.replace(" ", "\0"))


@pytest.mark.parametrize(
    "name",
    [
        "python3",
        "foo) Z (bar",
        "a b c",
        ")",
        "((",
        "x) 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    ],
)
def test_proc_start_time_hostile_names(tmp_path, name):
    _fake_proc(tmp_path, 42, 123456, name)
    assert proc_start_time(42, str(tmp_path)) == 123456


def test_proc_start_time_missing_or_broken(tmp_path):
    assert proc_start_time(7, str(tmp_path)) is None
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "stat").write_text("8 (x) S 1 2")
    assert proc_start_time(8, str(tmp_path)) is None


def test_proc_start_time_real():
    assert proc_start_time(os.getpid()) == proc_start_time(os.getpid()) > 0


def test_state_file_records_forgets_and_vanishes(tmp_path):
    sf = StateFile(tmp_path / "s", show_pid=os.getpid())
    sf.record("cgroup", "/sys/fs/cgroup/memory/x")
    sf.record("hog", "12:34")
    data = json.loads(sf.path.read_text())
    assert data["show_pid"] == os.getpid() and data["show_start"] == proc_start_time(os.getpid())
    assert data["items"] == [
        {"kind": "cgroup", "value": "/sys/fs/cgroup/memory/x"},
        {"kind": "hog", "value": "12:34"},
    ]
    assert not [p for p in sf.dir.iterdir() if p.name.startswith(".")]  # no temp left
    assert find_leftovers(sf.dir) == []  # our show is alive
    sf.forget("hog", "12:34")
    sf.forget("cgroup", "/sys/fs/cgroup/memory/x")
    assert not sf.path.exists()
    with pytest.raises(ValueError):
        sf.record("bogus", "x")


@pytest.mark.parametrize(
    "alive_start, recorded_start, leftover",
    [(None, 100, True), (100, 100, False), (200, 100, True), (100, None, False)],
)
def test_find_leftovers_by_pid_and_start_time(tmp_path, alive_start, recorded_start, leftover):
    proc, d = tmp_path / "proc", tmp_path / "state"
    d.mkdir(mode=0o700)  # a state dir must be private (0700) or it is refused
    if alive_start is not None:
        _fake_proc(proc, 4242, alive_start)
    items = [{"kind": "cgroup", "value": "/nowhere"}]
    (d / "4242.json").write_text(
        json.dumps({"show_pid": 4242, "show_start": recorded_start, "items": items})
    )
    got = find_leftovers(d, str(proc))
    assert [lo.show_pid for lo in got] == ([4242] if leftover else [])
    if leftover:
        assert got[0].items == (("cgroup", "/nowhere"),)


def test_corrupt_state_file_of_a_dead_show_is_removed(tmp_path):
    proc, d = tmp_path / "proc", tmp_path / "state"
    d.mkdir(mode=0o700)
    proc.mkdir()
    (d / "999999.json").write_text("{not json")
    (d / "notapid.json").write_text("[]")
    said = []
    assert cleanup(said.append, d, str(proc)) == 0
    assert not (d / "999999.json").exists()


def _hog_lines(value: str) -> tuple[bool, list[str], list[str]]:
    said, refused = [], []
    c = cu._Cleaner(said.append, refused.append, "/proc")
    return c.hog(value), said, refused


def test_never_kills_a_recycled_or_foreign_pid(tmp_path):
    """A hog record is only acted on when pid, start time and hog command line all match;
    a record without that identity (the old "PID:START") is refused, not trusted."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        p = psutil.Process(sleeper.pid)
        ct, cmd = p.create_time(), p.cmdline()
        hog_cmd = [sys.executable, "-m", "beep_av.hog", "--parent", "1"]
        cases = {
            # right pid, wrong start time: a recycled pid
            "reused": {"pid": sleeper.pid, "create_time": ct - 100, "cmdline": hog_cmd},
            # right pid and start, the record says hog but it is not one
            "not a beep-av hog": {"pid": sleeper.pid, "create_time": ct, "cmdline": hog_cmd},
            # right pid, start and command line, but the record itself is no hog's
            "is not a beep-av hog": {"pid": sleeper.pid, "create_time": ct, "cmdline": cmd},
        }
        for why, rec in cases.items():
            done, said, refused = _hog_lines(json.dumps(rec))
            assert done and said == [] and len(refused) == 1, (why, refused)
            assert refused[0].startswith(f"cleanup: refused hog {sleeper.pid} (sleep 30)")
            assert why in refused[0]
        # an older beep-av's record: pid and start ticks, no command line
        done, said, refused = _hog_lines(f"{sleeper.pid}:{proc_start_time(sleeper.pid)}")
        assert done and said == [] and "no process identity" in refused[0]
        done, said, refused = _hog_lines("garbage")
        assert done and said == [] and "unreadable" in refused[0]
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_gone_hog_is_nothing_to_do():
    true = subprocess.run(["true"])
    assert true.returncode == 0
    gone = {"pid": 2**22 + 12345, "create_time": 1.0, "cmdline": ["python3", "-m", "beep_av.hog"]}
    assert _hog_lines(json.dumps(gone)) == (True, [], [])
    assert _hog_lines(f"{2**22 + 12345}:5") == (True, [], [])


def test_hog_records():
    me = psutil.Process()
    rec = cu.parse_hog_value(cu.hog_value(os.getpid()))
    assert rec == cu.HogRecord(os.getpid(), me.create_time(), tuple(me.cmdline()))
    assert cu.parse_hog_value("123:456") == cu.HogRecord(123, None, ())
    for bad in (
        "",
        "x",
        "1:2:3",
        "{}",
        '{"pid": true}',
        '{"pid": -1}',
        '{"pid": "7"}',
        '{"pid": 7, "create_time": "now"}',
        '{"pid": 7, "cmdline": [1]}',
        "[]",
        "null",
    ):
        assert cu.parse_hog_value(bad) is None, bad
    vanished = json.loads(cu.hog_value(2**22 + 54321))
    assert vanished == {"pid": 2**22 + 54321, "create_time": None, "cmdline": []}


@pytest.mark.parametrize(
    "cmdline, argv, show",
    [
        (["python3", "-m", "beep_av.hog", "--parent", "42"], None, 42),
        (["systemd-run", "--user", "--", "py", "-m", "beep_av.hog", "--rate", "1"], 3, 0),
        (["python3", "-m", "beep_av.hogwash"], "none", 0),
        (["-m", "beep_av.hog"], "none", 0),  # no interpreter before it
        (["sleep", "600"], "none", 0),
        ([], "none", 0),
    ],
)
def test_hog_argv(cmdline, argv, show):
    got = cu.hog_argv(cmdline)
    if argv == "none":
        assert got is None
        return
    assert got == tuple(cmdline[argv or 0 :])
    assert cu.hog_show_pid(got) == show


# ---------------------------------------------------------------- the state dir


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    "mode, uid, problem",
    [
        (stat.S_IFDIR | 0o700, 1000, None),
        (stat.S_IFDIR | 0o2700, 1000, None),  # setgid inherited from a parent: still private
        (stat.S_IFDIR | 0o755, 1000, "mode 0755, not 0700"),
        (stat.S_IFDIR | 0o770, 1000, "mode 0770, not 0700"),
        (stat.S_IFDIR | 0o500, 1000, "mode 0500, not 0700"),
        (stat.S_IFDIR | 0o700, 65534, "owned by uid 65534, not us (uid 1000)"),
        (stat.S_IFLNK | 0o777, 1000, "a symlink"),
        (stat.S_IFREG | 0o700, 1000, "not a directory"),
    ],
)
def test_private_dir_problem(mode, uid, problem):
    assert cu.private_dir_problem(_stat(mode, uid), 1000) == problem


def test_state_dir_is_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        d = tmp_path / "new" / "state"
        sf = StateFile(d, show_pid=os.getpid())
        sf.record("cgroup", "/sys/fs/cgroup/memory/beep-av-1-0")
    finally:
        os.umask(old)
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(sf.path).st_mode) == 0o600
    assert cu.open_state_dir(d) is True
    assert cu.open_state_dir(tmp_path / "absent") is False
    assert not (tmp_path / "absent").exists()  # looking never creates it


def _refused_everywhere(d: Path, why: str) -> None:
    """A state dir that is not ours: nothing is written into it, read from it, or
    cleaned through it, and the line says why and the fix."""
    before = sorted(p.name for p in d.iterdir()) if d.is_dir() and not d.is_symlink() else None
    for act in (
        lambda: StateFile(d).record("cgroup", "/x"),
        lambda: StateFile(d).ensure(),
        lambda: find_leftovers(d),
        lambda: cleanup(lambda line: None, d),
    ):
        with pytest.raises(cu.UnsafeStateDir) as e:
            act()
        msg = e.value.message
        assert msg.startswith(f"refused state dir {d}: {why}") and "\n" not in msg
        assert "BEEP_AV_STATE_DIR" in msg and e.value.code == 3
    if before is not None:
        assert sorted(p.name for p in d.iterdir()) == before


def test_state_dir_with_a_wide_mode_is_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    d.chmod(0o755)
    _refused_everywhere(d, "mode 0755, not 0700")
    assert stat.S_IMODE(d.stat().st_mode) == 0o755  # never "repaired": it was there first


def test_state_dir_symlink_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    planted = {"show_pid": 2**22 + 1, "show_start": 1, "items": [{"kind": "cgroup", "value": "/x"}]}
    (target / f"{2**22 + 1}.json").write_text(json.dumps(planted))
    d = tmp_path / "state"
    d.symlink_to(target)
    _refused_everywhere(d, "a symlink")
    assert sorted(p.name for p in target.iterdir()) == [f"{2**22 + 1}.json"]


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    d = tmp_path / "state"
    d.write_text("not a dir")
    _refused_everywhere(d, "not a directory")
    assert d.read_text() == "not a dir"


def test_state_dir_precreated_by_another_user_is_refused(tmp_path):
    require(os.geteuid() == 0, "chown to another uid needs root")
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)  # nobody got there first (as in /tmp/beep-av-UID)
    _refused_everywhere(d, f"owned by uid 65534, not us (uid {os.geteuid()})")
    assert os.lstat(d).st_uid == 65534


def test_cli_cleanup_with_an_unsafe_state_dir_exits_3_one_line(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(d)})
    assert r.returncode == 3, r
    assert r.stderr.count("\n") == 1 and "refused state dir" in r.stderr
    assert "mode 0777, not 0700" in r.stderr


def test_cli_cleanup_nothing_to_remove_exits_0(tmp_path):
    r = beep("cleanup", env={"BEEP_AV_STATE_DIR": str(tmp_path / "state")})
    assert (r.returncode, r.stdout, r.stderr) == (0, "cleanup: nothing to remove\n", "")


def test_state_files_that_are_not_ours_are_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"show_pid": 2**22 + 7, "items": []}))
    (d / f"{2**22 + 7}.json").symlink_to(outside)
    said = []
    r = cu.run_cleanup(said.append, d, "/proc")
    assert r.refused == [
        f"refused state file {d / f'{2**22 + 7}.json'}: Too many levels of symbolic links"
    ]
    assert said == ["cleanup: " + r.refused[0]]
    assert outside.exists() and (d / f"{2**22 + 7}.json").is_symlink()
    assert find_leftovers(d) == []


# ---------------------------------------------------------------- cgroup and swap checks

MOUNTINFO = (Path(__file__).parent / "fixtures" / "procfs" / "mountinfo.txt").read_text()


@pytest.mark.parametrize(
    "path, problem",
    [
        ("/sys/fs/cgroup/memory/a/beep-av-123-0", None),
        ("/sys/fs/cgroup/memory/beep-av-123-show", None),
        ("/sys/fs/cgroup/unified/user.slice/beep-av-9-1", None),
        ("/sys/fs/cgroup/memory/a/other", "not named beep-av-*"),
        ("/sys/fs/cgroup/memory/beep-av-1/..", "not an absolute, normalized path"),
        ("sys/fs/cgroup/memory/beep-av-1", "not an absolute, normalized path"),
        ("/sys/fs/cgroup/memory//beep-av-1", "not an absolute, normalized path"),
        ("/sys/fs/cgroup/beep-av-1", "not under a cgroup mount (tmpfs at /sys/fs/cgroup)"),
        ("/tmp/beep-av-1", "not under a cgroup mount (ext4 at /)"),
        ("/var/tmp/beep-av-swap-x", "not under a cgroup mount (ext4 at /)"),
    ],
)
def test_cgroup_problem(path, problem):
    assert cu.cgroup_problem(path, MOUNTINFO) == problem


def test_cgroup_problem_mount_root_and_no_mount():
    mi = "35 31 0:32 / /sys/fs/cgroup/beep-av-x rw - cgroup cgroup rw,memory\n"
    assert cu.cgroup_problem("/sys/fs/cgroup/beep-av-x", mi) == "it is a cgroup mount's root"
    assert cu.cgroup_problem("/sys/fs/cgroup/beep-av-y", mi) == "no mount holds it"
    assert cu.cgroup_problem("/sys/fs/cgroup/beep-av-x/beep-av-1", mi) is None


def test_check_cgroup_on_disk_is_refused(tmp_path):
    d = tmp_path / "beep-av-1-0"
    d.mkdir()
    (d / "cgroup.procs").write_text(f"{os.getpid()}\n")
    real, problem = cu.check_cgroup(str(d))
    assert problem is not None and problem.startswith("not under a cgroup mount")
    # a symlink into a cgroup mount is judged where it points
    link = tmp_path / "beep-av-link"
    link.symlink_to("/sys/fs/cgroup/memory")
    real, problem = cu.check_cgroup(str(link))
    assert real == "/sys/fs/cgroup/memory" and problem == "not named beep-av-*"


@pytest.mark.parametrize(
    "path, kind, problem",
    [
        ("/var/tmp/beep-av-swap-abc123/swapfile", "swapfile", None),
        ("/var/tmp/beep-av-swap-abc123", "swapdir", None),
        (
            "/var/tmp/beep-av-swap-abc123/other",
            "swapfile",
            "not a beep-av swapfile (beep-av-swap-*/swapfile)",
        ),
        ("/home/me/thesis.tex", "swapfile", "not a beep-av swapfile (beep-av-swap-*/swapfile)"),
        ("/var/tmp/x/swapfile", "swapfile", "not a beep-av swapfile (beep-av-swap-*/swapfile)"),
        (
            "/var/tmp/beep-av-swap-a/../../etc/swapfile",
            "swapfile",
            "not an absolute, normalized path",
        ),
        ("swapfile", "swapfile", "not an absolute, normalized path"),
        ("/home/me", "swapdir", "not a beep-av swap dir (beep-av-swap-*)"),
        ("/", "swapdir", "not a beep-av swap dir (beep-av-swap-*)"),
    ],
)
def test_swap_path_problem(path, kind, problem):
    assert cu.swap_path_problem(path, kind) == problem


def test_swapfile_checks_on_disk(tmp_path):
    """Only a regular file of ours in a 0700 beep-av-swap-* dir of ours is deleted."""
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    good = tmp_path / "beep-av-swap-good"
    good.mkdir(mode=0o700)
    (good / "swapfile").write_bytes(b"\0" * 4096)
    link = tmp_path / "beep-av-swap-link"
    link.mkdir(mode=0o700)
    (link / "swapfile").symlink_to(precious)
    wide = tmp_path / "beep-av-swap-wide"
    wide.mkdir(mode=0o700)
    wide.chmod(0o755)
    (wide / "swapfile").write_bytes(b"\0")
    dev = tmp_path / "beep-av-swap-dev"
    dev.mkdir(mode=0o700)
    os.symlink("/dev/null", dev / "x")  # (a device node cannot be made here; see file_problem)
    said, refused = [], []
    c = cu._Cleaner(said.append, refused.append, "/proc")
    assert c.swapfile(str(good / "swapfile")) and not (good / "swapfile").exists()
    assert c.swapdir(str(good)) and not good.exists()
    assert c.swapfile(str(link / "swapfile")) and c.swapdir(str(link)) is False
    assert c.swapfile(str(wide / "swapfile")) and c.swapdir(str(wide))
    assert c.swapfile(str(precious)) and c.swapdir(str(tmp_path))
    assert precious.read_text() == "keep me" and (link / "swapfile").is_symlink()
    assert (wide / "swapfile").exists()
    assert said == [f"cleanup: removed swapfile {good / 'swapfile'}"]
    assert refused == [
        f"cleanup: refused swapfile {link / 'swapfile'}: a symlink, not a file beep-av made",
        f"cleanup: could not remove swap dir {link}: Directory not empty",
        f"cleanup: refused swapfile {wide / 'swapfile'}: its dir is mode 0755, not 0700",
        f"cleanup: refused swap dir {wide}: mode 0755, not 0700",
        f"cleanup: refused swapfile {precious}: not a beep-av swapfile (beep-av-swap-*/swapfile)",
        f"cleanup: refused swap dir {tmp_path}: not a beep-av swap dir (beep-av-swap-*)",
    ]
    assert (c.result.removed, len(c.result.refused), len(c.result.kept)) == (2, 5, 1)


@pytest.mark.parametrize(
    "mode, uid, problem",
    [
        (stat.S_IFREG | 0o600, 0, None),
        (stat.S_IFLNK | 0o777, 0, "a symlink, not a file beep-av made"),
        (stat.S_IFBLK | 0o660, 0, "a device, not a file beep-av made"),
        (stat.S_IFCHR | 0o666, 0, "a device, not a file beep-av made"),
        (stat.S_IFDIR | 0o700, 0, "not a regular file"),
        (stat.S_IFREG | 0o600, 1000, "owned by uid 1000, not us (uid 0)"),
    ],
)
def test_file_problem(mode, uid, problem):
    assert cu.file_problem(_stat(mode, uid), 0) == problem


def test_printed_names_stay_on_one_line(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    evil = "/tmp/x\n\x1b[2Jcleanup: removed everything"
    items = [{"kind": k, "value": evil} for k in ("swapfile", "cgroup", "swapdir", "hog")]
    items.append({"kind": "bogus", "value": "v"})
    (d / f"{2**22 + 3}.json").write_text(json.dumps({"show_pid": 2**22 + 3, "items": items}))
    lines = []
    r = cu.run_cleanup(lines.append, d, "/proc")
    assert len(r.refused) == 5 and not r.kept and r.removed == 0
    assert all("\n" not in line and "\x1b" not in line for line in lines)
    assert "refused bogus record v: unknown kind" in lines[0]
    assert not list(d.iterdir())  # refused items are dropped: no later cleanup acts on them


CRASHING_SHOW = """
import os, sys, time
from beep_av.stages.cgroup import CgroupStage
st = CgroupStage(ram=96 << 20, swap=64 << 20, cache=8 << 20, rate=8 << 20)
st.prepare(lambda s: None)
st.start()
print(st.cgroup_dir, st.swapfile.path if st.swapfile else "", st.hog.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.real
def test_cleanup_after_a_crashed_show(state_dir):
    ok, why = can_v1()
    require(ok, why)
    show = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SHOW], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = show.stdout.readline().split()
        assert len(line) in (2, 3), "the show did not come up"
        cgroup_dir, hog_pid = line[0], int(line[-1])
        swapfile = line[1] if len(line) == 3 else None
        show.kill()
        show.wait(10)
    finally:
        show.kill()
        show.wait(10)
    los = find_leftovers(state_dir)
    assert [lo.show_pid for lo in los] == [show.pid]
    kinds = {k for k, _ in los[0].items}
    assert {"cgroup", "hog"} <= kinds
    said = []
    n = cleanup(said.append, state_dir)
    # the cgroup (and the swapfile and its dir); the hog died with its show, so its
    # record is dropped without counting as removed
    assert n >= 1, said
    assert not os.path.exists(cgroup_dir), said
    if swapfile:
        assert "swapfile" in kinds and "swapdir" in kinds
        assert not os.path.exists(swapfile) and not swap_active(swapfile)
        assert not os.path.exists(os.path.dirname(swapfile))
    assert (
        proc_start_time(hog_pid) is None
        or "beep_av.hog" not in Path(f"/proc/{hog_pid}/cmdline").read_text()
    )
    assert find_leftovers(state_dir) == [] and not list(state_dir.glob("*.json"))
    assert cleanup(said.append, state_dir) == 0
