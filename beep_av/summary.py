"""Plain-text pieces every output shares: the phase line and the victim card. Pure."""

from __future__ import annotations

from beep_av.model import KillRecord, Phase, ShowState

MiB = 1024**2


def mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"


def confirmed_by(kill: KillRecord) -> str:
    names = {"exit": "exit status", "oom_kill": "oom_kill counter", "kmsg": "kernel log"}
    return " + ".join(names.get(s, s) for s in kill.detected_by) or "nothing"


def victim_card(kill: KillRecord) -> list[str]:
    """The victim card as lines of text."""
    exit_text = f"exit {kill.exit} (OOMKilled)" if kill.exit == 137 else f"exit {kill.exit}"
    rss = f"{kill.anon_rss_kib / 1024:.0f} MiB" if kill.anon_rss_kib is not None else "unknown"
    return [
        "OOM KILL",
        f"victim      pid {kill.pid} ({kill.name})",
        f"anon-rss    {rss}",
        f"status      {exit_text}",
        f"confirmed   {confirmed_by(kill)}",
        f"detected in {kill.latency_ms:.1f} ms",
    ]


def phase_line(state: ShowState, phase: Phase, t: float, cache_peak: int) -> str:
    """One line for a phase entered: the time and the numbers that explain it."""
    s = state.snapshot
    hog = f"hog {mib(s.hog_bytes)}"
    if phase is Phase.CALM:
        why = f"stage ready: {mib(s.ram_limit)} RAM + {mib(s.swap_limit)} swap, cache {mib(s.cache_bytes)}"
    elif phase is Phase.FILLING:
        why = f"{hog}, cache {mib(s.cache_bytes)}, rate {mib(state.fill_rate)}/s"
    elif phase is Phase.EVICTING:
        why = f"cache {cache_peak // MiB} -> {mib(s.cache_bytes)}, {hog}"
    elif phase is Phase.SWAPPING:
        why = f"swap {mib(s.swap_bytes)}, cache {mib(s.cache_bytes)}, {hog}, stall {state.stall * 100:.0f}%"
    elif phase is Phase.OOM:
        k = state.kill
        who = f"pid {k.pid} ({k.name})" if k else "the hog"
        why = f"the kernel killed {who}, {hog}, swap {mib(s.swap_bytes)}"
    else:
        k = state.kill
        why = f"confirmed by {confirmed_by(k)} in {k.latency_ms:.1f} ms" if k else "noise cut, beep"
    return f"{t:6.1f}s  {phase.value:<9} {why}"


def progress_line(state: ShowState) -> str:
    s = state.snapshot
    return (
        f"{state.t:6.1f}s  {state.phase.value:<9} hog {mib(s.hog_bytes):>8}  "
        f"cache {mib(s.cache_bytes):>8}  swap {mib(s.swap_bytes):>8}  "
        f"stall {state.stall * 100:3.0f}%  intensity {state.intensity:4.2f}"
    )
