"""The hog: control lines (in-process), pacing, page contents, arming and death with
its parent (real processes, in a scratch v1 cgroup)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beep_av.hog import PAGE, Hog, HogProcess
from beep_av.stages.swap import disk_fs_problem
from tests.conftest import ROOT

MiB = 1 << 20

# ---------------------------------------------------------------- pure-ish: control lines


@pytest.fixture
def hog():
    return Hog(rate=8 * MiB, report_fd=None)


@pytest.mark.parametrize(
    "lines, started, paused, rate, alive",
    [
        (["start"], True, False, 8 * MiB, True),
        (["pause"], False, True, 8 * MiB, True),
        (["pause", "resume"], False, False, 8 * MiB, True),
        (["rate 1048576"], False, False, MiB, True),
        (["rate -5"], False, False, 0, True),  # negative: flat out, never a crash
        (["rate abc"], False, False, 8 * MiB, True),
        (["rate"], False, False, 8 * MiB, True),
        (["", "   ", "bogus command", "\x00\xff"], False, False, 8 * MiB, True),
        (["stop"], False, False, 8 * MiB, False),
    ],
)
def test_control_lines(hog, lines, started, paused, rate, alive):
    results = [hog._control(x) for x in lines]
    assert (hog.started, hog.paused, hog.rate, all(results)) == (started, paused, rate, alive)


def test_touch_writes_distinct_random_pages(hog):
    hog.chunk = 4 * MiB
    n = 0
    while n < 3 * MiB:
        n += hog.touch(512 * 1024)
    pages = hog.view[: n // PAGE]
    heads = {bytes(p[:8]) for p in pages}
    assert len(heads) == n // PAGE  # first 64 bytes distinct on every page
    assert all(p.any() for p in pages)  # no zero page anywhere
    assert hog.touched == n


@pytest.mark.parametrize(
    "rate, step", [(0, MiB), (8 * MiB, 80 * 1024), (1, 64 * 1024), (10**12, MiB)]
)
def test_step_bytes(hog, rate, step):
    hog.rate = rate
    assert hog.step_bytes() == step and hog.step_bytes() % PAGE == 0


def test_cache_dir_must_be_a_disk():
    assert disk_fs_problem("/var/tmp") is None or "memory" in disk_fs_problem("/var/tmp")
    if os.path.ismount("/dev/shm"):
        assert "tmpfs" in (disk_fs_problem("/dev/shm") or "")
    assert "cannot check" in disk_fs_problem("/nonexistent/dir")


# ---------------------------------------------------------------- real processes


def _reports(h: HogProcess, seconds: float) -> list[tuple[float, int]]:
    out, buf = [], b""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and h.poll() is None:
        select.select([h.report_fd], [], [], 0.05)
        try:
            buf += os.read(h.report_fd, 65536)
        except BlockingIOError:
            continue
        *lines, buf = buf.split(b"\n")
        now = time.monotonic()
        out += [(now, int(x)) for x in lines]
    return out


@pytest.fixture
def spawn(scratch_cgroup):
    made = []

    def make(limit=512 * MiB, **kw):
        cg = scratch_cgroup(limit)
        h = HogProcess(cgroup_procs=os.path.join(cg, "cgroup.procs"), **kw)
        made.append(h)
        h.wait_ready()
        return h, cg

    yield make
    for h in made:
        h.kill()
        h.wait(10)
        h.close()


@pytest.mark.real
@pytest.mark.parametrize("rate", [16 * MiB, 64 * MiB])
def test_pacing_within_ten_percent(spawn, rate):
    h, _ = spawn(rate=rate)
    h.start()
    got = [r for r in _reports(h, 2.3) if r[1] > 0]
    assert h.poll() is None
    (t0, b0), (t1, b1) = got[0], got[-1]
    measured = (b1 - b0) / (t1 - t0)
    assert abs(measured / rate - 1) <= 0.10, f"{measured / MiB:.1f} MiB/s for {rate / MiB} MiB/s"
    gaps = [b - a for (a, _), (b, _) in zip(got, got[1:], strict=False)]
    assert max(gaps) < 0.2  # ~50 Hz reports


@pytest.mark.real
def test_armed_in_its_cgroup_waits_pauses_and_stops(spawn):
    h, cg = spawn(rate=32 * MiB, cache=8 * MiB)
    assert Path(f"/proc/{h.pid}/oom_score_adj").read_text().strip() == "1000"
    assert str(h.pid) in Path(cg, "cgroup.procs").read_text().split()
    assert "beep_av.hog" in Path(f"/proc/{h.pid}/cmdline").read_text()
    assert all(b == 0 for _, b in _reports(h, 0.3))  # no climbing before "start"
    h.start()
    assert _reports(h, 0.5)[-1][1] > 0
    h.pause()
    time.sleep(0.1)
    paused = _reports(h, 0.4)
    assert paused[0][1] == paused[-1][1] > 0
    h.resume()
    assert _reports(h, 0.3)[-1][1] > paused[-1][1]
    # the pages really are random: sample the hog's anonymous chunks via /proc/PID/mem
    heads = []
    with open(f"/proc/{h.pid}/maps") as maps, open(f"/proc/{h.pid}/mem", "rb") as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\s*$", line)
            size = int(m[2], 16) - int(m[1], 16) if m else 0
            # chunks are 16 MiB; the kernel may merge neighbours into one mapping
            if size and size % (16 * MiB) == 0:
                mem.seek(int(m[1], 16))
                heads += [mem.read(PAGE)[:64] for _ in range(min(size // PAGE, 8192))]
    touched = [x for x in heads if any(x)]  # untouched pages read as zeros
    assert len(touched) >= 1024
    assert len(set(touched)) == len(touched)
    h.stop()
    assert h.wait(10) == 0


@pytest.mark.real
def test_eof_on_stdin_ends_the_hog(spawn):
    h, _ = spawn(rate=8 * MiB)
    h._proc.stdin.close()
    assert h.wait(10) == 0


@pytest.mark.real
def test_sigterm_ends_the_hog_promptly(spawn):
    h, _ = spawn(rate=64 * MiB)  # flat out it would meet the limit (and the OOM killer) first
    h.start()
    time.sleep(0.2)
    h._proc.terminate()
    assert h.wait(5) == -15


@pytest.mark.real
def test_hog_dies_with_its_parent(scratch_cgroup):
    cg = scratch_cgroup(256 * MiB)
    code = (
        "import sys, time\n"
        "from beep_av.hog import HogProcess\n"
        f"h = HogProcess(rate=8 << 20, cgroup_procs={os.path.join(cg, 'cgroup.procs')!r})\n"
        "h.wait_ready(); h.start()\n"
        "print(h.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    mid = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        hog_pid = int(mid.stdout.readline())
        pidfd = os.pidfd_open(hog_pid)
        mid.kill()
        mid.wait(10)
        ready, _, _ = select.select([pidfd], [], [], 10)
        os.close(pidfd)
        assert ready, "the hog outlived its parent"
    finally:
        mid.kill()
        mid.wait(10)
