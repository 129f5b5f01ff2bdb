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

from beep_av.hog import PAGE, Hog, disk_fs_problem
from beep_av.hogproc import HogProcess
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


@pytest.mark.parametrize("use_numpy", [True, False], ids=["numpy", "stdlib"])
def test_touch_writes_distinct_random_pages(use_numpy):
    hog = Hog(rate=8 * MiB, report_fd=None, use_numpy=use_numpy)
    assert (hog.np is not None) == use_numpy
    hog.chunk = 4 * MiB
    n = 0
    while n < 3 * MiB:
        n += hog.touch(512 * 1024)
    pages = [bytes(hog.view[i : i + PAGE]) for i in range(0, n, PAGE)]
    heads = {p[:64] for p in pages}
    assert len(heads) == n // PAGE  # first 64 bytes distinct on every page
    assert len(set(pages)) == n // PAGE  # no two pages alike (KSM)
    assert not any(p.count(0) > PAGE // 16 for p in pages)  # random, no zero runs
    assert hog.touched == n
    # incompressible: what zram or zswap would do to it
    import zlib

    assert len(zlib.compress(b"".join(pages[:64]), 1)) > 0.99 * 64 * PAGE


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


# ---------------------------------------------------------------- the child stands alone

HOG_PY = ROOT / "beep_av" / "hog.py"
HEAVY = ("numpy", "pygame", "sounddevice", "psutil", "_cffi_backend")


def test_hog_py_imports_the_standard_library_only():
    """Every import of hog.py is the standard library's, but numpy, which is optional:
    imported inside a `try ... except ImportError` (after arming, for the climb)."""
    import ast

    tree = ast.parse(HOG_PY.read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
        ):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):  # function-level imports too
        if isinstance(node, ast.Import):
            found = {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: hog.py must stand alone"
            found = {(node.module or "").partition(".")[0]}
        else:
            continue
        if found == {"numpy"}:
            assert id(node) in guarded, "numpy must stay optional in hog.py"
            continue
        names |= found
    assert names and names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_child_entry_imports_no_other_beep_av_module_and_nothing_heavy():
    """What `python -m beep_av.hog` imports, from its own interpreter (-X importtime)."""
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "beep_av.hog", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0 and "usage:" in p.stdout, p.stderr[-500:]
    names = {
        line.split("|")[2].strip()
        for line in p.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "signal" in names and "mmap" in names  # the parse found the child's own imports
    # runpy runs hog.py as __main__: the package's __init__ is the only other one
    assert {n for n in names if n.split(".")[0] == "beep_av"} == {"beep_av"}
    assert not {n for n in names if n.split(".")[0] in HEAVY}


def test_beep_av_package_imports_nothing_heavy():
    code = "import sys, beep_av; print(sorted(m for m in sys.modules if m.startswith('beep_av')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "['beep_av']", out.stderr[-500:]


def _lone_hog(tmp_path, *args: str) -> tuple[subprocess.Popen, int]:
    """hog.py copied alone into an empty dir and run as a script in isolated mode with no
    site-packages (-I -S): what a container with python3 and nothing else would run."""
    lone = tmp_path / "image" / "hog.py"
    lone.parent.mkdir()
    lone.write_bytes(HOG_PY.read_bytes())
    r, w = os.pipe()
    argv = [sys.executable, "-I", "-S", str(lone), "--report-fd", str(w), *args]
    p = subprocess.Popen(
        argv, cwd=lone.parent, stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,)
    )
    os.close(w)
    return p, r


def _first_report(p: subprocess.Popen, r: int, timeout: float = 20.0) -> bytes:
    ready, _, _ = select.select([r], [], [], timeout)
    assert ready, "the hog never reported"
    data = os.read(r, 4096)
    assert data, f"the hog exited {p.wait(5)}: {p.stderr.read().decode()[-500:]}"
    return data


def test_hog_runs_alone_as_a_script_on_the_standard_library(tmp_path):
    p, r = _lone_hog(tmp_path, "--parent", str(os.getpid()), "--rate", "0")
    try:
        assert _first_report(p, r).split(b"\n")[0] == b"0"  # armed, not climbing yet
        maps = Path(f"/proc/{p.pid}/maps").read_text()
        assert not [x for x in HEAVY if x in maps], "a heavy library is mapped in the hog"
        status = Path(f"/proc/{p.pid}/status").read_text()
        assert re.search(r"^SigBlk:\s+0+$", status, re.M), status
        assert Path(f"/proc/{p.pid}/oom_score_adj").read_text().strip() == "1000"
        p.stdin.write(b"stop\n")
        p.stdin.flush()
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait(10)
        os.close(r)


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
    # its name for the kernel's OOM report (PR_SET_NAME), not python3's
    assert Path(f"/proc/{h.pid}/comm").read_text().strip() == "beep-hog"
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
def test_a_hog_named_by_its_act_keeps_the_first_15_bytes(spawn):
    h, _ = spawn(rate=16 * MiB, name="a-very-long-hog-name")
    assert Path(f"/proc/{h.pid}/comm").read_text().strip() == "a-very-long-hog"


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
        "from beep_av.hogproc import HogProcess\n"
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


@pytest.mark.real
def test_lone_script_hog_climbs_until_the_kernel_kills_it(scratch_cgroup, tmp_path):
    cg = scratch_cgroup(64 * MiB)
    p, r = _lone_hog(tmp_path, "--cgroup-procs", os.path.join(cg, "cgroup.procs"))
    try:
        _first_report(p, r)
        assert str(p.pid) in Path(cg, "cgroup.procs").read_text().split()
        p.stdin.write(b"start\n")
        p.stdin.flush()
        assert p.wait(30) == -9  # SIGKILL: the kernel's OOM kill at the cgroup's limit
        reports = b""
        while chunk := os.read(r, 65536):
            reports += chunk
        assert int(reports.split()[-1]) > 32 * MiB
        assert "Killed" not in p.stderr.read().decode()  # no traceback, nothing said
    finally:
        p.kill()
        p.wait(10)
        os.close(r)
