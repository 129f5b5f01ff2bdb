"""Soak: N consecutive real shows on a small cgroup stage (`make soak N=10`).

    python3 -m benchmarks.soak --count 10 --ram 160M [--audio auto|device|off]

Per show: exit code, phases reached, the victim (pid, name, and whether it is the hog:
the recording's header names the hog's pid and the kernel's record must name it too),
detection latency, audio underflows and frame rate (from the `end` record), and the
show's own open fds at the end against the start. After all of them, the residue:
cgroups, swapfiles, hog processes, state files and temp files left by any of the shows.
Exit 1 on any failure (a show without its finale, another victim, an underflow where a
device is present, a leaked fd, any residue)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORY = ["calm", "filling", "evicting", "swapping", "oom", "finale"]


def _audio(spec: str) -> str:
    if spec != "auto":
        return spec
    try:
        import sounddevice as sd

        return "device" if any(d["max_output_channels"] > 0 for d in sd.query_devices()) else "off"
    except Exception:
        return "off"


def _own_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        if "memory" in ctrl.split(","):
            p = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return p if p.is_dir() else None
    return None


def residue(pids: list[int], state_dir: Path, swaps_before: set[str], tmp_before: set[str]):
    """What the shows `pids` left: cgroups, swapfiles, hogs, state and temp files."""
    left: list[str] = []
    cg = _own_memory_cgroup()
    if cg is not None:
        for pid in pids:
            left += [str(p) for p in cg.rglob(f"beep-av-{pid}-*") if p.is_dir()]
    swaps = {ln.split()[0] for ln in Path("/proc/swaps").read_text().splitlines()[1:]}
    left += sorted(s for s in swaps - swaps_before if "beep-av" in s)
    left += sorted(_temps() - tmp_before)
    wanted = {str(p).encode() for p in pids}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"beep_av.hog" in cmd and b"--parent" in cmd:
                if cmd[cmd.index(b"--parent") + 1] in wanted:
                    left.append(f"hog pid {entry}")
    if state_dir.is_dir():
        left += [str(p) for p in state_dir.iterdir()]
    return left


def _temps() -> set[str]:
    out = set()
    for d in (Path("/var/tmp"), Path(tempfile.gettempdir())):
        if d.is_dir():
            out |= {str(p) for p in d.iterdir() if p.name.startswith("beep-av-swap-")}
    return out


def one_show(i: int, args: argparse.Namespace, audio: str, work: Path, env: dict) -> dict:
    rec = work / f"show{i}.jsonl"
    argv = [sys.executable, "-m", "beep_av", "show", "--ram", args.ram, "--swap", args.swap]
    argv += ["--cache", args.cache, "--rate", args.rate, "--calm", "0.5"]
    argv += ["--output", "headless", "--audio", audio, "--record", str(rec)]
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    recs = []
    if rec.exists():
        for line in rec.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    header = next((r for r in recs if r.get("type") == "header"), {})
    kill = next((r for r in recs if r.get("type") == "kill"), {})
    end = next((r for r in recs if r.get("type") == "end"), {})
    hog = header.get("hog_pid")
    is_hog = (
        hog is not None
        and kill.get("pid") == hog
        and f"Killed process {hog} " in (kill.get("kmsg") or "")
    )
    return {
        "i": i,
        "pid": p.pid,
        "rc": p.returncode,
        "phases": [r["phase"] for r in recs if r.get("type") == "phase"],
        "victim": f"{kill.get('pid')} ({kill.get('name')})" if kill else "none",
        "is_hog": is_hog,
        "latency_ms": kill.get("latency_ms"),
        "detected_by": kill.get("detected_by"),
        "underflows": end.get("underflows"),
        "fps": end.get("fps"),
        "fds": (end.get("fds_start"), end.get("fds")),
        "reason": end.get("reason"),
        "stderr": err.decode("utf-8", "replace").strip().splitlines()[-1:] if p.returncode else [],
    }


def problems(s: dict, audio: str) -> list[str]:
    bad = []
    if s["rc"] != 0 or s["reason"] != "finale":
        bad.append(f"exit {s['rc']} ({s['reason']}) {' '.join(s['stderr'])}")
    if s["phases"][-2:] != ["oom", "finale"]:
        bad.append(f"phases {s['phases']}")
    if not s["is_hog"]:
        bad.append(f"victim {s['victim']} is not the hog")
    if audio == "device" and s["underflows"] != 0:
        bad.append(f"{s['underflows']} underflows")
    start, end = s["fds"]
    if start is None or end is None or end > start:
        bad.append(f"fds {start} -> {end}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10, help="shows in a row (default 10)")
    ap.add_argument("--ram", default="160M", help="stage RAM (default 160M)")
    ap.add_argument("--swap", default="96M", help="stage swap (default 96M)")
    ap.add_argument("--cache", default="32M", help="stage page cache (default 32M)")
    ap.add_argument("--rate", default="128M/s", help="hog pace (default 128M/s)")
    ap.add_argument("--audio", default="auto", help="auto (a device if present) | device | off")
    args = ap.parse_args(argv)
    audio = _audio(args.audio)
    failures = 0
    shows = []
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        work = Path(d)
        state = work / "state"
        env = dict(os.environ, BEEP_AV_STATE_DIR=str(state), SDL_VIDEODRIVER="dummy")
        swaps = {ln.split()[0] for ln in Path("/proc/swaps").read_text().splitlines()[1:]}
        temps = _temps()
        print(
            f"soak: {args.count} shows, --ram {args.ram} --swap {args.swap} --cache {args.cache}"
            f" --rate {args.rate}, audio {audio}"
        )
        print(
            f"{'#':>3} {'exit':>4}  {'phases':<40} {'victim':<18} {'hog':<4}"
            f" {'latency':>8} {'underfl':>7} {'fps':>5} {'fds':>7}"
        )
        for i in range(1, args.count + 1):
            s = one_show(i, args, audio, work, env)
            shows.append(s)
            bad = problems(s, audio)
            failures += bool(bad)
            phases = ",".join(p[:4] for p in s["phases"])
            lat = f"{s['latency_ms']:.1f}ms" if s["latency_ms"] is not None else "-"
            print(
                f"{i:>3} {s['rc']:>4}  {phases:<40} {s['victim']:<18}"
                f" {'yes' if s['is_hog'] else 'NO':<4} {lat:>8} {str(s['underflows']):>7}"
                f" {str(s['fps']):>5} {str(s['fds'][0]) + '->' + str(s['fds'][1]):>7}"
                + (f"  FAIL: {'; '.join(bad)}" if bad else ""),
                flush=True,
            )
        left = residue([s["pid"] for s in shows], state, swaps, temps)
    lats = sorted(s["latency_ms"] for s in shows if s["latency_ms"] is not None)
    finales = sum(s["reason"] == "finale" for s in shows)
    print(
        f"soak: {finales}/{args.count} finales, the hog the victim {sum(s['is_hog'] for s in shows)}"
        f"/{args.count}, latency median {lats[len(lats) // 2] if lats else float('nan'):.1f} ms"
        f" max {lats[-1] if lats else float('nan'):.1f} ms,"
        f" underflows {sum(s['underflows'] or 0 for s in shows)}"
    )
    print(f"soak: residue: {', '.join(left) if left else 'none'}")
    return 1 if failures or left else 0


if __name__ == "__main__":
    raise SystemExit(main())
