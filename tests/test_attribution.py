"""Who the kernel killed: the pure parts (NSpid and memcg parsers, attribution decisions,
the kernel clock's calibration arithmetic) and the sampler's use of them on fake kernel
records; a calibration and an NSpid lookup against the real kernel."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from beep_av import attribution as at
from beep_av.kclock import KernelClock, calibrate, estimate
from beep_av.model import KmsgKill, Snapshot
from beep_av.procfs import ParseError, in_memcg, parse_nspid, parse_oom_kill, parse_proc_cgroup
from beep_av.sampler import Sampler, procfs_initial, running_killers
from tests.conftest import require
from tests.test_sampler import FakeHog, v1_tree

# ---------------------------------------------------------------- parsers

STATUS = "Name:\tpython3\nTgid:\t9066\nPid:\t9066\nPPid:\t9065\nNSpid:\t9066\t8\t1\nNSpgid:\t1\n"


@pytest.mark.parametrize(
    "text, want",
    [
        (STATUS, (9066, 8, 1)),
        ("Name:\tx\nPid:\t42\n", (42,)),  # before Linux 4.1: no NSpid line
        ("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nPid:\t24959\nNSpid:\t24959\n", (24959,)),
    ],
    ids=["nested", "no-nspid", "pidfd-fdinfo"],
)
def test_parse_nspid(text, want):
    assert parse_nspid(text) == want


@pytest.mark.parametrize("text", ["", "Name:\tx\n", "NSpid:\t\n", "NSpid:\tx 1\n", "Pid:\t-\n"])
def test_parse_nspid_refuses_garbage(text):
    with pytest.raises(ParseError):
        parse_nspid(text)


def test_memcg_as_the_kernel_log_names_it():
    def memcg(text):
        return parse_proc_cgroup(text).memcg

    assert memcg("9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n") == "/process_api/abc"
    assert memcg("0::/user.slice/x.scope\n") == "/user.slice/x.scope"
    assert memcg("3:cpu,memory:/a\n") == "/a"
    assert memcg("garbage\n") is None


def test_oom_kill_line_says_which_oom_and_where_the_victim_lived():
    memcg = parse_oom_kill(
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        "oom_memcg=/outer,task_memcg=/outer/b,c,task=a,b,pid=77,uid=0"
    )
    assert (memcg.pid, memcg.name, memcg.global_oom) == (77, "a,b", False)
    assert (memcg.oom_memcg, memcg.task_memcg) == ("/outer", "/outer/b")
    glob = parse_oom_kill(
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
        "global_oom,task_memcg=/system.slice/x.service,task=chrome,pid=5,uid=1000"
    )
    assert glob.global_oom and glob.oom_memcg is None
    assert glob.task_memcg == "/system.slice/x.service"
    killed = parse_oom_kill("Memory cgroup out of memory: Killed process 5 (x) total-vm:1kB, "
                            "anon-rss:2kB, file-rss:0kB")  # fmt: skip
    assert killed.global_oom is False and killed.oom_memcg is None and killed.task_memcg is None


@pytest.mark.parametrize(
    "path, ancestor, want",
    [("/a/b", "/a", True), ("/a", "/a", True), ("/ab", "/a", False), ("/x", "/", True),
     ("/a", "/a/b", False), ("/a/b/", "/a/b/", True)],
)  # fmt: skip
def test_in_memcg(path, ancestor, want):
    assert in_memcg(path, ancestor) is want


# ---------------------------------------------------------------- attribution


@pytest.mark.parametrize(
    "nspid, initial, pid, want",
    [
        ((4242,), True, 4242, 4242),  # everyone in the initial namespace
        ((9066, 8), True, 9066, 9066),  # the hog in a PID namespace below ours
        ((9066, 8), None, 8, 9066),  # our /proc is an ancestor's: its first pid is its
        ((17,), False, 17, None),  # a container with its own /proc: unknowable
        (None, True, 4242, 4242),  # unreadable: the pid we know
        (None, None, 4242, 4242),
        (None, False, 4242, None),
    ],
)
def test_kernel_pid(nspid, initial, pid, want):
    assert at.kernel_pid(nspid, initial, pid) == want


def _k(oom_memcg=None, task_memcg=None, global_oom=False, pid=1234) -> KmsgKill:
    return KmsgKill(pid, "python3", 1024, True, global_oom=global_oom, oom_memcg=oom_memcg,
                    task_memcg=task_memcg)  # fmt: skip


@pytest.mark.parametrize(
    "kill, memcg, want",
    [
        (_k("/outer", "/outer"), "/outer/beep-av-1-0", True),  # the limit above the hog
        (_k("/outer/beep-av-1-0", "/outer/beep-av-1-0"), "/outer/beep-av-1-0", True),
        (_k("/other", "/other"), "/outer/beep-av-1-0", False),  # someone else's limit
        (_k("/outer/beep-av-1-0/sub", "/outer/beep-av-1-0/sub"), "/outer/beep-av-1-0", False),
        (_k(global_oom=True, task_memcg="/x"), "/outer/beep-av-1-0", True),  # the machine
        (_k(), "/outer/beep-av-1-0", None),  # no oom-kill: line: cannot tell
        (_k("/outer", "/outer"), None, None),
    ],
)
def test_oom_covers(kill, memcg, want):
    assert at.oom_covers(kill, memcg) is want


@pytest.mark.parametrize(
    "kill, counter, hierarchical, want",
    [
        (_k("/o", "/o/stage"), "/o/stage", False, True),
        (_k("/o", "/o"), "/o/stage", False, False),  # v1: the victim's own cgroup only
        (_k("/o", "/o/stage/sub"), "/o/stage", False, False),
        (_k("/o", "/o/stage/sub"), "/o/stage", True, True),  # v2: ancestors count it too
        (_k("/o", "/o"), None, False, True),  # /proc/vmstat counts every kill
        (_k(), "/o/stage", True, False),
    ],
)
def test_counted_by(kill, counter, hierarchical, want):
    assert at.counted_by(kill, counter, hierarchical) is want


def test_killer_name():
    assert at.killer_name([]) == "user space"
    assert at.killer_name(["bash", "systemd-oomd"]) == "systemd-oomd"
    assert at.killer_name(["systemd-oomd", "earlyoom"]) == "earlyoom or systemd-oomd"


def _snap(t=1.0, ex=None, ex_t=None, count=0, kmsg=False) -> Snapshot:
    return Snapshot(t=t, hog_pid=9, hog_exit=ex, hog_exit_t=ex_t, oom_kill_count=count,
                    kmsg_kill=_k(pid=9) if kmsg else None)  # fmt: skip


@pytest.mark.parametrize(
    "snap, kernel_log, accounted, want",
    [
        (_snap(kmsg=True), True, 0, "oom"),  # the kernel named the hog
        (_snap(kmsg=True, ex=0), True, 0, "oom"),
        (_snap(count=1), True, 0, None),  # a counter alone never names the hog
        (_snap(count=1), False, 0, None),
        (_snap(ex=-9, ex_t=1.0, count=1), False, 0, "oom"),  # SIGKILL + an unexplained rise
        (_snap(ex=137, ex_t=1.0, count=1), False, 0, "oom"),
        (_snap(ex=-9, ex_t=1.0, count=1), False, 1, None),  # the rise was a bystander's
        (_snap(t=1.2, ex=-9, ex_t=1.0, count=1), False, 1, "user"),
        (_snap(ex=-9, ex_t=1.0), True, 0, None),  # waiting for the kernel's word
        (_snap(t=1.149, ex=-9, ex_t=1.0), True, 0, None),
        (_snap(t=1.16, ex=-9, ex_t=1.0), True, 0, "user"),  # 150 ms and nothing: user space
        (_snap(t=1.16, ex=-9, ex_t=1.0, count=1), True, 0, "oom"),  # a lost record
        (_snap(t=5.0, ex=1, ex_t=1.0), True, 0, None),  # not a SIGKILL: not ours to judge
        (_snap(t=5.0, ex=-15, ex_t=1.0), False, 0, None),
    ],
)
def test_hog_verdict(snap, kernel_log, accounted, want):
    assert at.hog_verdict(snap, kernel_log, accounted, grace=0.15) == want


# ---------------------------------------------------------------- the kernel clock


def test_estimate_takes_the_shortest_write_and_its_midpoint():
    # monotonic 10_000_000..10_004_000 ns around a write stamped 9_000 µs (printk):
    # offset = 9_000_500 - 10_002_000; the 6 µs write is worse than the 4 µs one
    clock = estimate([(20_000_000, 20_006_000, 19_000, 20_010_000),
                      (10_000_000, 10_004_000, 9_000, 10_007_000)])  # fmt: skip
    assert clock.offset_ns == 9_000_500 - 10_002_000 == -1_001_500
    assert clock.uncertainty_ns == 2_000 + 500
    assert (clock.write_ns, clock.readback_ns, clock.markers) == (4_000, 3_000, 2)
    # the marker's own timestamp maps back onto the write's midpoint
    assert clock.to_monotonic(9_000) == pytest.approx(10_002_000 / 1e9, abs=1e-12)
    assert estimate([]) is None
    assert estimate([(5, 4, 1, 6)]) is None  # a clock going backwards is no sample


def test_a_kill_stamped_by_the_kernel_lands_on_the_show_clock():
    clock = KernelClock(offset_ns=-760_000, uncertainty_ns=2_000)
    # printk says 100.000000 s; CLOCK_MONOTONIC is 0.76 ms ahead: 100.0007605 s
    assert clock.to_monotonic(100_000_000) == pytest.approx(100.0007605, abs=1e-9)
    h = clock.header()
    assert (h["offset_ns"], h["uncertainty_ns"], h["method"]) == (-760_000, 2_000, "kmsg marker")


@pytest.mark.real
def test_calibrate_against_the_real_kernel():
    require(os.geteuid() == 0 and os.access("/dev/kmsg", os.W_OK), "root writes /dev/kmsg")
    clock, why = calibrate()
    assert clock is not None, why
    assert 0 < clock.uncertainty_ns < 1_000_000 and clock.markers >= 1
    # printk's clock (local_clock) and CLOCK_MONOTONIC both count from boot, but drift
    # apart while NTP slews the latter: here +1 ms a quarter hour after boot, -51 ms
    # 7.5 h after (~7 ms an hour); a second would take days: each show calibrates.
    assert abs(clock.offset_ns) < 1_000_000_000
    again, _ = calibrate()
    drift = abs(again.offset_ns - clock.offset_ns)
    assert drift <= clock.uncertainty_ns + again.uncertainty_ns + 20_000, (clock, again)


def test_calibrate_without_kmsg_says_why(tmp_path):
    clock, why = calibrate(str(tmp_path / "nope"))
    assert clock is None and "not readable" in why


# ---------------------------------------------------------------- the sampler's share


def test_running_killers_from_a_fake_proc(tmp_path):
    for pid, comm in ((1, "init"), (50, "earlyoom"), (51, "systemd-oomd"), (52, "bash")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    assert running_killers(str(tmp_path)) == ("earlyoom", "systemd-oomd")
    assert running_killers(str(tmp_path / "absent")) == ()


def test_this_proc_is_the_initial_namespaces():
    require(os.geteuid() == 0, "reading /proc/1/ns/pid needs root")
    ns = os.stat("/proc/self/ns/pid").st_ino
    assert procfs_initial() is (ns == at.PROC_PID_INIT_INO)


OOMKILL = (
    "3,500,{ts},-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    "mems_allowed=0,oom_memcg={oom},task_memcg={task},task=python3,pid={pid},uid=0\n"
)
KILLED = (
    "3,501,{ts},-;Memory cgroup out of memory: Killed process {pid} (python3) "
    "total-vm:1000kB, anon-rss:{rss}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB "
    "oom_score_adj:1000\n"
)


def _sampler_with_records(tmp_path, monkeypatch, records, hog_memcg="/outer/stage"):
    """A sampler over a fake v1 tree whose kernel log yields `records` once."""
    files = v1_tree(tmp_path)
    hog = FakeHog()
    clock = KernelClock(offset_ns=0, uncertainty_ns=1_000)
    s = Sampler(files, hog, t0=0.0, kernel_clock=clock)
    s.kernel_log = True
    s._hog_kpid, s._hog_memcg, s._counter_memcg = hog.pid, hog_memcg, "/outer/stage"
    pending = [r.encode() for r in records]
    monkeypatch.setattr(s, "_kmsg_records", lambda: iter([pending.pop(0)] if pending else []))
    return s, hog


def test_sampler_sorts_kernel_records_into_the_hogs_and_others(tmp_path, monkeypatch):
    now_us = int(time.monotonic() * 1e6)
    records = [
        OOMKILL.format(ts=now_us - 900, oom="/outer", task="/outer", pid=1234),
        KILLED.format(ts=now_us - 880, pid=1234, rss=120 * 1024),
        OOMKILL.format(ts=now_us - 500, oom="/elsewhere", task="/elsewhere", pid=77),
        KILLED.format(ts=now_us - 490, pid=77, rss=1024),
        OOMKILL.format(ts=now_us - 100, oom="/outer/stage", task="/outer/stage", pid=4242),
        KILLED.format(ts=now_us - 90, pid=4242, rss=96 * 1024),
    ]
    s, hog = _sampler_with_records(tmp_path, monkeypatch, records)
    try:
        snaps = [s.read(time.monotonic()) for _ in records]
        last = snaps[-1]
        (other,) = last.others  # pid 77 died in someone else's OOM: not the show's
        assert (other.pid, other.anon_rss_kib, other.oom_memcg) == (1234, 120 * 1024, "/outer")
        assert last.others_counted == 0  # the stage's v1 counter does not count /outer's
        assert 0 < other.seen_t - other.kernel_t < 0.5  # from its oom-kill: line
        assert last.kmsg_kill.pid == 4242 and last.kmsg_kill.anon_rss_kib == 96 * 1024
        assert last.kmsg_t == pytest.approx((now_us - 100 + 0.5) / 1e6, abs=1e-6)
        assert last.kmsg_seen_t > last.kmsg_t
        assert snaps[4].kmsg_kill is not None  # the oom-kill: line stands in at first
        assert len(s.kills) == 6  # watch mode still gets every record
        assert last.kernel_log is True
    finally:
        s.close()
        hog.close()


def test_sampler_without_a_calibration_gives_no_kernel_time(tmp_path, monkeypatch):
    records = [KILLED.format(ts=5_000_000, pid=4242, rss=1024)]
    s, hog = _sampler_with_records(tmp_path, monkeypatch, records)
    s.kernel_clock = None
    try:
        snap = s.read(1.0)
        assert snap.kmsg_kill.pid == 4242 and snap.kmsg_t is None
        assert snap.kmsg_seen_t is not None
    finally:
        s.close()
        hog.close()


def test_a_proc_of_another_pid_namespace_cannot_name_the_hog(tmp_path, monkeypatch):
    monkeypatch.setattr("beep_av.sampler.procfs_initial", lambda proc_root="/proc": False)
    files = v1_tree(tmp_path)
    files = type(files)(**{**files.__dict__, "kmsg": str(tmp_path / "kmsg")})
    (tmp_path / "kmsg").write_text("")
    hog = FakeHog()
    s = Sampler(files, hog, t0=0.0)
    try:
        assert s.kernel_log is False and s.read(0.1).kernel_log is False
        assert any("initial PID namespace" in n for n in s.notes)
    finally:
        s.close()
        hog.close()


@pytest.mark.real
def test_nspid_of_a_process_in_a_pid_namespace_through_its_pidfd():
    """A child in a PID namespace of its own (pid 1 there): its pidfd's fdinfo gives its
    pids from our namespace down, and the first is the one the kernel log prints."""
    require(os.geteuid() == 0, "unshare --pid needs root")
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        inner = None
        while time.monotonic() < deadline and inner is None:
            try:
                kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            except OSError:
                kids = []
            inner = int(kids[0]) if kids else None
            time.sleep(0.01)
        assert inner is not None
        fd = os.pidfd_open(inner)
        try:
            nspid = parse_nspid(open(f"/proc/self/fdinfo/{fd}").read())
        finally:
            os.close(fd)
        assert nspid == (inner, 1)
        assert at.kernel_pid(nspid, procfs_initial(), 1) == inner
    finally:
        p.kill()
        p.wait()


def test_sampler_scans_for_user_space_killers_once_at_a_sigkill(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "beep_av.sampler.running_killers",
        lambda proc_root="/proc": calls.append(1) or ("earlyoom",),
    )
    s = Sampler(v1_tree(tmp_path), FakeHog(), t0=0.0)
    try:
        assert s.read(0.1).user_killers == () and calls == []
        s.hog.code = -9
        assert s.read(0.2).user_killers == ("earlyoom",)
        s.read(0.3)
        assert calls == [1]
    finally:
        s.close()
        s.hog.close()
