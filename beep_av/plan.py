"""Resolve a show's sizes against this machine: pure (MemInfo numbers in, Plan out)."""

from __future__ import annotations

from dataclasses import dataclass

from beep_av.config import Settings, parse_rate, parse_size
from beep_av.errors import BadInput
from beep_av.tunables import MIN_STAGE_RAM as MIN_RAM
from beep_av.tunables import STORY_SECONDS, auto_swap_size

MiB = 1024**2

# The stage is never more than this share of MemAvailable (RAM limit plus cache warm-up
# happen inside the limit; swap is on disk).
SAFE_SHARE = 0.5
AUTO_RAM_SHARE = 0.04  # default stage: 4% of MemAvailable ...
AUTO_RAM_MIN = 128 * MiB  # ... but at least this (a smaller stage is all interpreter)
AUTO_RAM_MAX = 768 * MiB  # ... and at most this (the story stays about a minute)


@dataclass(frozen=True)
class Plan:
    ram: int  # stage RAM limit, bytes
    swap: int | None  # stage swap, bytes; 0 = off; None = auto (stage decides)
    swap_auto: bool
    cache: int  # page cache warmed inside the stage, bytes
    rate: int  # hog pace, bytes/s


def resolve_plan(s: Settings, mem_available: int, mem_total: int) -> Plan:
    """Turn the user's SIZE strings into bytes for this machine. Raises BadInput."""
    if s.ram == "auto":
        ram = int(min(AUTO_RAM_MAX, max(AUTO_RAM_MIN, mem_available * AUTO_RAM_SHARE)))
        ram -= ram % MiB
    else:
        ram = parse_size(s.ram, mem_available, "--ram")
        if ram > mem_total:
            raise BadInput(
                f"--ram: {s.ram} is larger than this machine ({mem_total // MiB} MiB of RAM)"
            )
        if ram < MIN_RAM:
            raise BadInput(f"--ram: {s.ram} is too small (at least {MIN_RAM // MiB} MiB)")
    safe = int(mem_available * SAFE_SHARE)
    if ram > safe and s.stage != "rehearsal":
        raise BadInput(
            f"--ram: {ram // MiB} MiB is more than this machine can safely stage "
            f"(at most {safe // MiB} MiB, half of MemAvailable)"
        )
    if s.swap == "off":
        swap: int | None = 0
    elif s.swap == "auto":
        swap = None
    else:
        swap = parse_size(s.swap, mem_available, "--swap")
    if s.cache == "auto":
        cache = ram // 4
        cache -= cache % MiB
    else:
        cache = parse_size(s.cache, mem_available, "--cache")
        if cache > ram:
            raise BadInput(f"--cache: {s.cache} is larger than --ram ({ram // MiB} MiB)")
    if s.rate == "auto":
        total = ram + (swap if swap is not None else auto_swap_size(ram))
        rate = max(8 * MiB, int(total / STORY_SECONDS))
    else:
        rate = parse_rate(s.rate)
        if rate < MiB:
            raise BadInput(f"--rate: {s.rate} is too slow (at least 1M/s)")
    return Plan(ram=ram, swap=swap, swap_auto=swap is None, cache=cache, rate=rate)


__all__ = ["Plan", "resolve_plan", "auto_swap_size", "MIN_RAM", "STORY_SECONDS"]
