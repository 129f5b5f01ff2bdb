"""Colours shared by the outputs that draw an act's lanes (the pygame scene and the
terminal), kept free of pygame so the terminal can import them without it."""

from __future__ import annotations

RGB = tuple[int, int, int]

# an act's lanes, one colour per process (model.Lane.colour indexes it, modulo its length)
LANE_COLOURS: tuple[RGB, ...] = ((235, 95, 55), (90, 200, 120), (70, 160, 220), (240, 200, 60))
# a dead lane's colour is mixed this far towards DEAD_GREY (scene.draw_lanes)
DEAD_GREY: RGB = (60, 60, 60)
DEAD_MIX = 0.7
# a lane's swap is its colour mixed this far towards white
SWAP_MIX = 0.6


def mix(a: RGB, b: RGB, k: float) -> RGB:
    """`a` moved a fraction `k` of the way to `b`."""
    return (
        int(a[0] + (b[0] - a[0]) * k),
        int(a[1] + (b[1] - a[1]) * k),
        int(a[2] + (b[2] - a[2]) * k),
    )


def lane_colour(index: int, alive: bool = True) -> RGB:
    """The colour of lane `index` (greyed when its process is dead)."""
    colour = LANE_COLOURS[index % len(LANE_COLOURS)]
    return colour if alive else mix(colour, DEAD_GREY, DEAD_MIX)
