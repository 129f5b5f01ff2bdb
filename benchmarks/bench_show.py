"""Whole real shows: detection latency (earliest kill evidence to the story's `oom`) over
5 real shows on a small cgroup stage, and the audio underflows of each show where an
audio device is present."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row

ROOT = Path(__file__).resolve().parent.parent
SHOWS = int(os.environ.get("BEEP_BENCH_SHOWS", "5"))
ARGS = [
    "--ram",
    "160M",
    "--swap",
    "96M",
    "--cache",
    "32M",
    "--rate",
    "128M/s",
    "--calm",
    "0.5",
    "--output",
    "headless",
]


def _audio_spec() -> str:
    try:
        import sounddevice as sd

        return "device" if any(d["max_output_channels"] > 0 for d in sd.query_devices()) else "off"
    except Exception:
        return "off"


def run_shows(n: int, audio: str) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            rec = Path(d) / f"show{i}.jsonl"
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "beep_av",
                    "show",
                    *ARGS,
                    "--audio",
                    audio,
                    "--record",
                    str(rec),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            records = (
                [json.loads(x) for x in rec.read_text().splitlines() if x.strip()]
                if rec.exists()
                else []
            )
            kill = next((x for x in records if x["type"] == "kill"), {})
            end = next((x for x in records if x["type"] == "end"), {})
            out.append(
                {
                    "rc": r.returncode,
                    "latency_ms": kill.get("latency_ms"),
                    "detected_by": kill.get("detected_by"),
                    "underflows": end.get("underflows"),
                }
            )
    return out


def run() -> list[Row]:
    audio = _audio_spec()
    shows = run_shows(SHOWS, audio)
    lat = [s["latency_ms"] for s in shows if s["latency_ms"] is not None]
    rows = [
        Row(
            f"detection latency, median of {len(lat)}/{SHOWS} real shows",
            statistics.median(lat) if lat else float("nan"),
            "ms",
            "< 20 ms",
            bool(lat) and len(lat) == SHOWS and statistics.median(lat) < 20,
            "per show: " + ", ".join(f"{x:.1f}" for x in lat),
        )
    ]
    if audio == "device":
        und = [s["underflows"] for s in shows]
        rows.append(
            Row(
                f"audio underflows over {SHOWS} real shows",
                float(sum(u or 0 for u in und)),
                "count",
                "0 every show",
                all(u == 0 for u in und),
                "per show: " + ", ".join(str(u) for u in und),
            )
        )
    return rows
