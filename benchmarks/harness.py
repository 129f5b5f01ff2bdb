"""The benchmark harness: every figure is measured side by side with its baseline in
the same process and run, and printed as one table row. Each `bench_*.py` module in
this folder defines `run() -> list[Row]`."""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    name: str  # what is measured
    value: float  # the figure
    unit: str  # "ms", "x", "%", "MiB/s" ...
    target: str  # the target in words, e.g. "<= 8 ms" or ">= 4x naive"
    ok: bool
    baseline: str = ""  # what it was compared with, and its figure


def timeit(fn: Callable[[], object], repeat: int = 200, warmup: int = 10) -> list[float]:
    """Seconds per call, `repeat` samples."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def main(argv: list[str]) -> int:
    only = set(argv)
    here = Path(__file__).resolve().parent
    rows: list[Row] = []
    for mod in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if not mod.name.startswith("bench_"):
            continue
        if only and mod.name.removeprefix("bench_") not in only and mod.name not in only:
            continue
        print(f"# {mod.name} ...", file=sys.stderr, flush=True)
        m = importlib.import_module(f"benchmarks.{mod.name}")
        try:
            rows.extend(m.run())
        except Exception as e:  # one broken bench must not hide the others
            rows.append(Row(f"{mod.name}: failed ({e})", float("nan"), "", "runs", False))
    w = max((len(r.name) for r in rows), default=10)
    print(f"{'figure':<{w}}  {'value':>10}  {'unit':<6} {'target':<22} {'ok':<4} baseline")
    for r in rows:
        print(
            f"{r.name:<{w}}  {r.value:>10.3f}  {r.unit:<6} {r.target:<22} {'yes' if r.ok else 'NO':<4} {r.baseline}"
        )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
