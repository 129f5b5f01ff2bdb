"""Hog fill rate flat out vs `stress-ng --vm 1 --vm-keep` and vs a tiny C page-toucher.

All three run in the same limited scratch v1 cgroup (512 MiB, no swap), one after the
other, interleaved over a few rounds; each is measured by the cgroup's usage slope
(memory.usage_in_bytes) between 64 and 320 MiB of fill. The best round of each counts:
first touches of guest memory in a VM vary several-fold between runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Row

MiB = 1 << 20
LIMIT = 512 * MiB  # house rule: memory experiments within 512 MiB
FILL = 400 * MiB
LO, HI = 64 * MiB, 320 * MiB
ROUNDS = 3

C_TOUCHER = r"""
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t n = strtoull(argv[1], 0, 10), page = sysconf(_SC_PAGESIZE);
    char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (size_t i = 0; i < n; i += page) p[i] = (char)(i >> 12) | 1;
    pause();
    return 0;
}
"""


def _own_v1() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            return "/sys/fs/cgroup/memory" + path
    raise RuntimeError("no cgroup v1 memory controller")


def _write(path: str, value: int | str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _slope(usage: str, proc_alive, timeout: float = 30.0) -> float:
    """Bytes/s of usage growth between LO and HI above the starting usage."""
    base = int(Path(usage).read_text())
    fd = os.open(usage, os.O_RDONLY)
    t_lo = t_hi = None
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and proc_alive():
            u = int(os.pread(fd, 64, 0)) - base
            now = time.monotonic()
            if t_lo is None and u >= LO:
                t_lo = now
            if u >= HI:
                t_hi = now
                break
    finally:
        os.close(fd)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return float("nan")
    return (HI - LO) / (t_hi - t_lo)


def _in_cgroup(cg: str, argv: list[str]) -> subprocess.Popen:
    # the shell joins the cgroup, then execs the filler: no page is touched outside
    script = f'echo $$ > {cg}/cgroup.procs && exec "$@"'
    return subprocess.Popen(
        ["sh", "-c", script, "sh", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _measure_external(cg: str, argv: list[str]) -> float:
    p = _in_cgroup(cg, argv)
    try:
        return _slope(f"{cg}/memory.usage_in_bytes", lambda: p.poll() is None)
    finally:
        p.kill()
        p.wait()


def _measure_hog(cg: str) -> float:
    from beep_av.hogproc import HogProcess

    h = HogProcess(rate=0, cache=0, cgroup_procs=f"{cg}/cgroup.procs")
    try:
        h.wait_ready()
        h.start()
        return _slope(f"{cg}/memory.usage_in_bytes", lambda: h.poll() is None)
    finally:
        h.kill()
        h.wait(10)
        h.close()


def run() -> list[Row]:
    """Rows: hog fill rate, ratio vs stress-ng (>= 1.0), ratio vs C (>= 0.85)."""
    if not shutil.which("stress-ng") or not shutil.which("cc"):
        raise RuntimeError("stress-ng and cc are needed")
    tmp = tempfile.mkdtemp(prefix="beep-av-bench-")
    cg = os.path.join(_own_v1(), f"beep-av-bench-{os.getpid()}")
    os.mkdir(cg)
    try:
        _write(f"{cg}/memory.limit_in_bytes", LIMIT)
        _write(f"{cg}/memory.memsw.limit_in_bytes", LIMIT)
        src, exe = os.path.join(tmp, "touch.c"), os.path.join(tmp, "touch")
        Path(src).write_text(C_TOUCHER)
        subprocess.run(["cc", "-O2", "-o", exe, src], check=True, capture_output=True)
        stress = ["stress-ng", "--vm", "1", "--vm-bytes", str(FILL), "--vm-keep", "-t", "60"]
        best = {"hog": 0.0, "stress": 0.0, "c": 0.0}
        for _ in range(ROUNDS):
            for name, fn in (
                ("hog", lambda: _measure_hog(cg)),
                ("stress", lambda: _measure_external(cg, stress)),
                ("c", lambda: _measure_external(cg, [exe, str(FILL)])),
            ):
                v = fn()
                if v == v:  # not NaN
                    best[name] = max(best[name], v)
                time.sleep(0.2)  # the exiting filler's pages are uncharged
    finally:
        for _ in range(100):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.05)
        shutil.rmtree(tmp, ignore_errors=True)
    hog, stress_r, c = best["hog"], best["stress"], best["c"]
    vs_s = hog / stress_r if stress_r else float("nan")
    vs_c = hog / c if c else float("nan")
    return [
        Row("hog fill rate, flat out", hog / MiB, "MiB/s", "fast", hog > 0),
        Row(
            "hog vs stress-ng --vm-keep",
            vs_s,
            "x",
            ">= 1.0x stress-ng",
            vs_s >= 1.0,
            f"stress-ng {stress_r / MiB:.0f} MiB/s",
        ),
        Row(
            "hog vs C page-toucher", vs_c, "x", ">= 0.85x C", vs_c >= 0.85, f"C {c / MiB:.0f} MiB/s"
        ),
    ]
