"""`beep-av explain` over a 200 MiB kernel log: the whole reports of the shipped corpus
of real OOM reports (tests/fixtures/oom: those that end with the kernel's kill; a
machine's own log holds whole reports, the cut-off pastes are the tests' business),
repeated between ordinary kernel messages, one report every MiB.

- speed: explain (cards built, printed to nowhere) against a bare Python line loop over
  the same file (text mode, UTF-8), in the same run: target >= 0.5x.
- peak memory: the whole `beep-av explain FILE` command in a child process (its own
  high-water mark, VmHWM, interpreter and imports included): target < 100 MiB."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Row

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "oom"
SIZE = 200 << 20
GAP = 1 << 20  # bytes of other messages between two reports (a log heavy with OOMs)

OTHER = [
    "usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    'audit: type=1400 audit(1700000000.123:{n}): apparmor="DENIED" operation="open" '
    'profile="snap.firefox" name="/proc/{n}/environ" pid={n} comm="firefox" '
    'requested_mask="r" denied_mask="r" fsuid=1000 ouid=0',
    "IPv6: ADDRCONF(NETDEV_CHANGE): wlp2s0: link becomes ready",
    "wlp2s0: authenticate with 3c:84:6a:aa:bb:cc (local address=9c:b6:d0:11:22:33)",
    "nvme nvme0: 8/0/0 default/read/poll queues",
    "perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate",
    "systemd-journald[312]: Time spent on flushing to /var/log/journal is 24.113ms",
]


def _whole(text: bytes) -> bool:
    """The report ends with the kernel's kill (or nothing killable)."""
    import io

    from beep_av.oomreport import events, read_lines

    found = list(events(read_lines(io.BytesIO(text))))
    return bool(found) and found[-1].done


def make_log(path: Path, size: int = SIZE) -> int:
    """Write the log; returns the number of reports in it."""
    reports = [p.read_bytes() for p in sorted(CORPUS.glob("*.log")) if _whole(p.read_bytes())]
    n = 0
    t = 1000.0
    with open(path, "wb") as f:
        while f.tell() < size:
            gap = []
            written = 0
            i = 0
            while written < GAP:
                t += 0.013
                line = f"[{t:12.6f}] " + OTHER[i % len(OTHER)].format(n=i) + "\n"
                gap.append(line)
                written += len(line)
                i += 1
            f.write("".join(gap).encode())
            f.write(reports[n % len(reports)].rstrip(b"\n") + b"\n")
            n += 1
    return n


def _bare(path: Path) -> float:
    t = time.perf_counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for _line in f:
            pass
    return time.perf_counter() - t


def _explain(path: Path) -> tuple[float, int]:
    from beep_av.explain import run_explain

    said = [0]

    def say(_s: str) -> None:
        said[0] += 1

    t = time.perf_counter()
    code = run_explain(str(path), say=say)
    assert code == 0
    return time.perf_counter() - t, said[0]


# the command, run as `python -m beep_av explain FILE`, says its own high-water mark at
# exit: VmHWM is the process's own (a fork's ru_maxrss would count this benchmark's
# pages, shared until the exec)
_CHILD = """\
import atexit, runpy, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("VMHWM", line.split()[1], file=sys.stderr)
atexit.register(hwm)
sys.argv = ["beep-av", "explain", sys.argv[1]]
runpy.run_module("beep_av", run_name="__main__")
"""


def _peak_mib(path: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    kib = next(int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("VMHWM "))
    return kib / 1024


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="beep-bench-explain-") as d:
        path = Path(d) / "kern.log"
        reports = make_log(path)
        mib = path.stat().st_size / (1 << 20)
        bare = min(_bare(path) for _ in range(2))
        took = min(_explain(path)[0] for _ in range(2))
        peak = _peak_mib(path)
    ratio = bare / took
    return [
        Row(
            f"explain: {mib:.0f} MiB log, {reports} reports",
            ratio,
            "x",
            ">= 0.5x bare line loop",
            ratio >= 0.5,
            f"bare line loop {bare:.2f} s, explain {took:.2f} s",
        ),
        Row(
            "explain: peak RSS of the command",
            peak,
            "MiB",
            "< 100 MiB",
            peak < 100,
            "VmHWM of `beep-av explain FILE`",
        ),
    ]
