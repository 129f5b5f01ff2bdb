"""Tunables and limits shared by more than one part of Beep: each has one value, here.
Pure: numbers and the one formula they make (the auto swap size)."""

from __future__ import annotations

MiB = 1 << 20

# A stage smaller than this is all interpreter: the hog's own Python and numpy (and, on
# the host stage, the show itself) would fill it before the story starts.
MIN_STAGE_RAM = 64 * MiB

# `--swap auto` wants half the stage's RAM in swap, at least this much.
MIN_AUTO_SWAP = 64 * MiB

# The default pace: the hog reaches RAM + swap in about this long.
STORY_SECONDS = 50.0


def auto_swap_size(ram: int) -> int:
    """Bytes of swap an `auto` stage wants for `ram` bytes of RAM: half, at least
    MIN_AUTO_SWAP, whole MiB. The one formula for the rehearsal's model and the real
    stage, so the same flags give the same swap in both."""
    return max(MIN_AUTO_SWAP, ram // 2 // MiB * MiB)
