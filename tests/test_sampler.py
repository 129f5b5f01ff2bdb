"""The sampler: against fake stage trees in a temp dir (v1, v2, host; vanished and
garbage files), and against the real kernel: a scratch v1 memory cgroup (64 MiB, no
swap, always removed) with a tiny hog child that the kernel OOM-kills."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from beep_av.kclock import calibrate
from beep_av.model import MiB
from beep_av.sampler import Sampler
from beep_av.stages.base import StageFiles
from tests.conftest import require

FIX = Path(__file__).resolve().parent / "fixtures" / "procfs"


class FakeHog:
    """A HogHandle over a pipe we write ourselves; no process."""

    def __init__(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.pid, self.report_fd, self.pidfd, self.w = 4242, r, None, w
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def report(self, data: bytes) -> None:
        os.write(self.w, data)

    def close(self) -> None:
        for fd in (self.report_fd, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def v1_tree(tmp: Path, oom_kill: int = 0) -> StageFiles:
    d = tmp / "cg"
    d.mkdir(exist_ok=True)
    (d / "memory.stat").write_text((FIX / "v1_memory_stat.txt").read_text())
    (d / "memory.usage_in_bytes").write_text("23334912\n")
    (d / "memory.memsw.usage_in_bytes").write_text("23334912\n")
    (d / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")
    (d / "memory.limit_in_bytes").write_text(f"{192 * MiB}\n")
    (d / "memory.memsw.limit_in_bytes").write_text(f"{320 * MiB}\n")
    (tmp / "psi").write_text((FIX / "pressure_memory.txt").read_text())
    meminfo = (
        (FIX / "meminfo.txt")
        .read_text()
        .replace("SwapTotal:             0 kB", "SwapTotal:       1048576 kB")
    )
    (tmp / "meminfo").write_text(meminfo)
    return StageFiles(
        cgroup_version=1,
        cgroup_dir=str(d),
        memory_stat=str(d / "memory.stat"),
        usage=str(d / "memory.usage_in_bytes"),
        memsw_usage=str(d / "memory.memsw.usage_in_bytes"),
        swap_current=None,
        oom_events=str(d / "memory.oom_control"),
        event_control=None,  # a regular file cannot register an eventfd
        psi=str(tmp / "psi"),
        meminfo=str(tmp / "meminfo"),
        vmstat=str(FIX / "vmstat.txt"),
        kmsg=None,
    )


def rewrite(path: str, text: str) -> None:
    """Replace in place (same inode), as the kernel's file would change under a kept fd."""
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text)


def test_v1_fake_tree(tmp_path):
    files = v1_tree(tmp_path)
    hog = FakeHog()
    s = Sampler(files, hog, t0=100.0)
    try:
        assert (s.ram_limit, s.swap_limit) == (192 * MiB, 128 * MiB)
        hog.report(b"1048576\n2097152\n31457")  # a partial last line is not taken yet
        a = s.read(0.5)
        assert (a.anon_bytes, a.cache_bytes, a.swap_bytes) == (1740800, 21463040, 0)
        assert a.usage_bytes == 23334912 and a.psi_some_us == 1351 and a.psi_full_us == 913
        assert a.hog_bytes == 2097152 and a.hog_pid == 4242 and a.hog_running
        assert a.oom_kill_count == 0 and a.oom_kill_t is None and a.kmsg_kill is None
        hog.report(b"28\n")
        rewrite(files.oom_events, "oom_kill_disable 0\nunder_oom 1\noom_kill 1\n")
        rewrite(files.memory_stat, "total_rss 5\ntotal_cache 6\ntotal_swap 7\n")
        hog.code = -9
        b = s.read(0.52)
        assert b.hog_bytes == 3145728 and (b.anon_bytes, b.cache_bytes, b.swap_bytes) == (5, 6, 7)
        assert (b.oom_kill_count, b.oom_kill_t) == (1, 0.52)
        assert (b.hog_exit, b.hog_exit_t, b.hog_running) == (-9, 0.52, False)
        c = s.read(0.54)  # evidence keeps its first time
        assert (c.oom_kill_t, c.hog_exit_t) == (0.52, 0.52)
    finally:
        s.close()
        hog.close()


def test_counter_relative_to_start(tmp_path):
    files = v1_tree(tmp_path, oom_kill=3)  # kills before the show are not ours
    s = Sampler(files, None, t0=0.0)
    try:
        assert s.read(0.1).oom_kill_count == 0
        rewrite(files.oom_events, "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
        assert s.read(0.2).oom_kill_count == 1
    finally:
        s.close()


def test_garbage_and_vanished_files_keep_last_values(tmp_path):
    files = v1_tree(tmp_path)
    s = Sampler(files, None, t0=0.0)
    try:
        a = s.read(0.1)
        rewrite(files.memory_stat, "total_rss lots\n")
        rewrite(files.psi, "nonsense")
        b = s.read(0.2)
        assert (b.anon_bytes, b.cache_bytes, b.psi_some_us) == (a.anon_bytes, a.cache_bytes, 1351)
        assert s.errors >= 2
    finally:
        s.close()


def test_missing_sources_are_noted(tmp_path):
    files = StageFiles(1, str(tmp_path), str(tmp_path / "nope"), None, None, None, None, None, None,
                       meminfo=str(tmp_path / "nope2"), kmsg=str(tmp_path / "nokmsg"))  # fmt: skip
    s = Sampler(files, None, t0=0.0, ram_limit=MiB, swap_limit=0)
    try:
        snap = s.read(0.0)
        assert snap.anon_bytes == 0 and snap.ram_limit == MiB
        assert any("memory.stat" in n for n in s.notes) and any("kmsg" in n for n in s.notes)
    finally:
        s.close()


def test_v2_and_host_trees(tmp_path):
    d = tmp_path / "v2"
    d.mkdir()
    (d / "memory.stat").write_text((FIX / "v2_memory_stat.synthetic.txt").read_text())
    (d / "memory.current").write_text("140000000\n")
    (d / "memory.swap.current").write_text("4096\n")
    (d / "memory.events").write_text((FIX / "v2_memory_events.synthetic.txt").read_text())
    (d / "memory.max").write_text(f"{192 * MiB}\n")
    (d / "memory.swap.max").write_text("max\n")
    v2 = StageFiles(2, str(d), str(d / "memory.stat"), str(d / "memory.current"), None,
                    str(d / "memory.swap.current"), str(d / "memory.events"), None,
                    str(FIX / "pressure_memory.txt"), meminfo=str(FIX / "meminfo.txt"), kmsg=None)  # fmt: skip
    s = Sampler(v2, None, t0=0.0)
    try:
        snap = s.read(1.0)
        assert (snap.anon_bytes, snap.cache_bytes, snap.swap_bytes) == (104857600, 33554432, 4096)
        assert snap.usage_bytes == 140000000 and snap.oom_kill_count == 0  # 1 at start
        assert (snap.ram_limit, snap.swap_limit) == (192 * MiB, 0)  # host has no swap
    finally:
        s.close()
    host = StageFiles(0, None, None, None, None, None, None, None, str(FIX / "pressure_memory.txt"),
                      meminfo=str(FIX / "meminfo.txt"), vmstat=str(FIX / "vmstat.txt"), kmsg=None)  # fmt: skip
    s = Sampler(host, None, t0=0.0)
    try:
        snap = s.read(1.0)
        assert snap.anon_bytes == 17656 * 1024 and snap.cache_bytes == 241376 * 1024
        assert snap.ram_limit == 24684096 * 1024 and snap.swap_limit == 0
    finally:
        s.close()


def test_close_closes_every_fd(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    s = Sampler(v1_tree(tmp_path), None, t0=0.0)
    s.read(0.0)
    assert len(set(os.listdir("/proc/self/fd")) - before) >= 4
    s.close()
    s.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_t0_from_first_read(tmp_path):
    s = Sampler(v1_tree(tmp_path), None)
    try:
        s.read(2.0)
        assert abs(s.t0 - (time.monotonic() - 2.0)) < 1.0
    finally:
        s.close()


# ---------------------------------------------------------------- the real kernel


def _own_memcg() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrl, rel = line.split(":", 2)
            if "memory" in ctrl.split(","):
                return "/sys/fs/cgroup/memory" + rel
    except OSError:
        return None
    return None


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@pytest.fixture
def scratch_cgroup():
    """A v1 memory cgroup of 64 MiB, no swap, under our own; removed afterwards."""
    parent = _own_memcg()
    require(
        parent is not None and os.access(os.path.join(parent, "cgroup.event_control"), os.W_OK),
        "a writable cgroup v1 memory controller (root)",
    )
    require(os.access("/dev/kmsg", os.R_OK), "/dev/kmsg readable")
    d = os.path.join(parent, f"beep-test-sampler-{os.getpid()}")
    os.mkdir(d)
    procs: list[subprocess.Popen] = []
    try:
        _write(os.path.join(d, "memory.limit_in_bytes"), str(64 * MiB))
        _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(64 * MiB))
        yield d, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.1)
        assert not os.path.exists(d), f"scratch cgroup left behind: {d}"


HOG = textwrap.dedent(
    """
    import mmap, os, sys
    fd = int(sys.argv[1])
    m = mmap.mmap(-1, 1 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block = os.urandom(4096)
    for i in range(0, 1 << 30, 4096):
        m[i : i + 4096] = block
        if i % (1 << 20) == 0:
            os.write(fd, b"%d\\n" % (i + 4096))
    """
)


class RealHog:
    """A tiny hog child in the scratch cgroup: the HogHandle protocol."""

    def __init__(self, cgroup: str, procs: list) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        procs_file = os.path.join(cgroup, "cgroup.procs")
        self._p = subprocess.Popen(
            [sys.executable, "-c", HOG, str(w)],
            pass_fds=(w,),
            preexec_fn=lambda: _write(procs_file, str(os.getpid())),
        )
        procs.append(self._p)
        os.close(w)
        self.pid, self.report_fd = self._p.pid, r
        self.pidfd: int | None = os.pidfd_open(self.pid)

    def poll(self) -> int | None:
        return self._p.poll()

    def close(self) -> None:
        os.close(self.report_fd)
        if self.pidfd is not None:
            os.close(self.pidfd)


def v1_files(d: str) -> StageFiles:
    j = os.path.join
    return StageFiles(1, d, j(d, "memory.stat"), j(d, "memory.usage_in_bytes"),
                      j(d, "memory.memsw.usage_in_bytes"), None, j(d, "memory.oom_control"),
                      j(d, "cgroup.event_control"), "/proc/pressure/memory")  # fmt: skip


@pytest.mark.real
def test_real_oom_kill_all_three_sources(scratch_cgroup):
    d, procs = scratch_cgroup
    t0 = time.monotonic()
    now = lambda: time.monotonic() - t0  # noqa: E731
    hog = RealHog(d, procs)  # the hog needs ~0.1 s to reach 64 MiB: kmsg opens in time
    clock, why = calibrate()
    assert clock is not None, why
    s = Sampler(v1_files(d), hog, t0, kernel_clock=clock)
    try:
        assert s.notes == [] and s._efd is not None
        assert (s.ram_limit, s.swap_limit) == (64 * MiB, 0)
        snaps = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = s.read(now())
            snaps.append(snap)
            if snap.hog_exit is not None and snap.oom_kill_count and snap.kmsg_kill:
                break
            s.wait(0.02)
        last = snaps[-1]
        assert last.hog_exit == -9 and last.oom_kill_count == 1
        k = last.kmsg_kill
        assert k is not None and k.pid == hog.pid and k.cgroup_oom
        assert k.anon_rss_kib is not None and k.anon_rss_kib > 32 * 1024
        assert any(x.pid == hog.pid for x in s.kills)
        # the kernel's whole report, read live: the hog among the candidates it weighed,
        # with the most points, and the task that asked for the page
        r = k.report
        assert r is not None and r["trigger"]["name"] and r["victim_rank"] == 1, r
        mine = [c for c in r["candidates"] if c["pid"] == hog.pid]
        assert mine and mine[0]["points"] > 0 and mine[0]["rss_pages"] > 0, r
        # the hog grew and was sampled growing before the kill
        assert max(x.hog_bytes for x in snaps) > 16 * MiB
        assert max(x.anon_bytes for x in snaps) > 16 * MiB
        # the kernel's kmsg stamp, on the show's calibrated clock, lies after the show
        # start and before the show read the record, a few ms at most
        assert 0 < last.kmsg_t < last.kmsg_seen_t < last.kmsg_t + 0.05
        assert last.kernel_log and last.others == ()
    finally:
        s.close()
        hog.close()


@pytest.mark.real
def test_real_oom_eventfd_wakes_wait(scratch_cgroup):
    """With no hog handle and no kmsg, only the v1 OOM eventfd can end wait() early."""
    d, procs = scratch_cgroup
    files = v1_files(d)
    files = StageFiles(**{**files.__dict__, "kmsg": None})
    s = Sampler(files, None, time.monotonic())
    try:
        assert s._efd is not None
        s.read(0.0)
        r, w = os.pipe()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", HOG, str(w)],
                pass_fds=(w,),
                stdout=subprocess.DEVNULL,
                preexec_fn=lambda: _write(os.path.join(d, "cgroup.procs"), str(os.getpid())),
            )
        )
        os.close(w)
        t = time.monotonic()
        s.wait(60.0)
        woke_after = time.monotonic() - t
        snap = s.read(1.0)
        # the eventfd fires as the cgroup goes under OOM; the kill is counted just after
        for i in range(100):
            if snap.oom_kill_count:
                break
            s.wait(1.0)
            snap = s.read(1.0 + i)
        os.close(r)
        assert woke_after < 59.0, "wait() slept through the OOM"
        assert snap.oom_kill_count == 1
    finally:
        s.close()
