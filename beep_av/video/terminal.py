"""`--output terminal`: the show as TTY art in any terminal (SSH included).

The picture is half-block cells ("▀": foreground = upper pixel, background = lower
pixel, two pixels a cell) in truecolor, 256 colours where COLORTERM does not announce
truecolor, or density glyphs without any colour under NO_COLOR. Gauges, caption and
status are text lines at the bottom; an act's processes (ShowState.lanes) get one
text row each above them, taken out of the picture's rows; the finale shows the victim
card and a big BEEP.

Speed: the escape string of a frame is assembled by numpy at fixed width (zero-padded
numbers from digit tables written into a preallocated byte buffer, then one write).
Per-cell f-strings cost ~40 ms for 200x60 (FIELD-NOTES); this costs ~1 ms.

Layers: `color_mode`, `parse_keys`, `Pacer`, `Picture`, `Encoder`, the text lines
(`gauge_line`, `lane_lines`, ...) and `card_block` are pure; `TerminalOutput` touches the terminal (its stream, stdin's
termios modes and SIGWINCH)."""

from __future__ import annotations

import atexit
import io
import math
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from beep_av import summary
from beep_av.keys import COMMANDS
from beep_av.model import Lane, MiB, Phase, ShowState
from beep_av.noise import Noise
from beep_av.video.palette import RGB, SWAP_MIX, lane_colour, mix

# ---------------------------------------------------------------- escapes

ESC = "\033"
ALT_ON = "\033[?1049h"
ALT_OFF = "\033[?1049l"
CURSOR_HIDE = "\033[?25l"
CURSOR_SHOW = "\033[?25h"
RESET = "\033[0m"
CLEAR = "\033[2J"
HALF = "▀".encode()
GLYPHS = b" .:-=+*#%@"  # density ramp for NO_COLOR, darkest first

DEFAULT_MAX_BPS = 2_000_000  # bytes per second: an SSH link is not flooded
TEXT_LINES = 3  # gauges, caption, status
MAX_LANES = 4  # an act's lane rows over the text lines, at most
MIN_PICTURE = 4  # picture rows kept before a lane row is given room


def color_mode(env: Mapping[str, str]) -> str:
    """ "truecolor", "256" or "none" from the environment (NO_COLOR wins, any non-empty
    value; COLORTERM=truecolor|24bit announces 24-bit colour)."""
    if env.get("NO_COLOR", ""):
        return "none"
    if env.get("COLORTERM", "").strip().lower() in ("truecolor", "24bit"):
        return "truecolor"
    return "256"


# ---------------------------------------------------------------- keys (pure)

# the one key map (beep_av/keys.py), by byte; letters in either case
KEYS: dict[int, str] = {
    ord(c): cmd for ch, cmd in COMMANDS.items() for c in {ch, ch.upper()} if ch != "\x1b"
}


def parse_keys(data: bytes) -> list[str]:
    """Bytes read from a cbreak terminal -> presenter commands, in order.

    A lone Esc quits; escape sequences (arrows, function keys, mouse) are skipped."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            if i + 1 < n and data[i + 1] in (0x5B, 0x4F):  # CSI "[" or SS3 "O"
                j = i + 2
                while j < n and not (0x40 <= data[j] <= 0x7E):
                    j += 1
                i = j + 1
                continue
            out.append("quit")
            i += 1
            continue
        cmd = KEYS.get(b)
        if cmd is not None:
            out.append(cmd)
        i += 1
    return out


# ---------------------------------------------------------------- pacing (pure)


class Pacer:
    """Caps the bytes per second sent to the terminal and backs off when writes block.

    After a frame of n bytes written from t0 to t1 (monotonic seconds), the next frame
    may start at t0 + n / max_bps; when the write itself took longer than that (the
    terminal or the link is slower than the cap), the link is left idle as long again."""

    def __init__(self, max_bps: float = DEFAULT_MAX_BPS) -> None:
        if not (max_bps > 0 and math.isfinite(max_bps)):
            raise ValueError(f"max_bps must be a positive number, got {max_bps!r}")
        self.max_bps = float(max_bps)
        self.next_ok = 0.0
        self.sent = 0
        self.skipped = 0
        self.slow = 0

    def ready(self, now: float) -> bool:
        """True when a frame may be written at `now`; counts a skipped frame otherwise."""
        if now >= self.next_ok:
            return True
        self.skipped += 1
        return False

    def wrote(self, nbytes: int, t0: float, t1: float) -> None:
        budget = nbytes / self.max_bps
        took = max(0.0, t1 - t0)
        self.sent += 1
        if took > budget and took > 0.05:
            self.slow += 1
            self.next_ok = t1 + took
        else:
            self.next_ok = t0 + budget


# ---------------------------------------------------------------- picture (pure)


class Picture:
    """The scene's static at cell resolution: (h, w, 3) uint8 RGB for a ShowState.

    Same palette and rules as beep_av.video.scene (phase looks, density LUT, the white
    flash at the kill, black at the finale); one random byte per pixel."""

    def __init__(self) -> None:
        self._luts: dict[tuple[Phase, int], np.ndarray] = {}

    def lut(self, phase: Phase, intensity: float) -> np.ndarray:
        """(256, 3) uint8: colour of each random byte value in this phase."""
        from beep_av.video.scene import LOOKS, LUT_STEPS, lut_levels

        x = intensity if math.isfinite(intensity) else 0.0
        q = int(round(min(1.0, max(0.0, x)) * LUT_STEPS))
        key = (phase, q)
        got = self._luts.get(key)
        if got is None:
            look = LOOKS[phase]
            levels = lut_levels(q / LUT_STEPS, look.gain)[:, None]
            dark = np.array(look.dark, dtype=np.float32)
            bright = np.array(look.bright, dtype=np.float32)
            got = (dark + (bright - dark) * levels).astype(np.uint8)
            self._luts[key] = got
        return got

    def render(self, state: ShowState, noise: Noise, w: int, h: int) -> np.ndarray:
        """Pixels of `state` at w x h (h = 2 x picture rows)."""
        from beep_av.video.scene import FLASH_S

        if state.phase in (Phase.OOM, Phase.FINALE):
            since = state.t - (state.oom_t if state.oom_t is not None else state.t)
            level = 255 if state.phase is Phase.OOM and 0 <= since < FLASH_S else 0
            return np.full((h, w, 3), level, dtype=np.uint8)
        idx = noise.u8(w * h).reshape(h, w)
        if state.phase is Phase.SWAPPING:
            tear(idx, state.stall, noise)
        return np.take(self.lut(state.phase, state.intensity), idx, axis=0)


def tear(idx: np.ndarray, stall: float, noise: Noise) -> None:
    """Displace horizontal bands in place, more and further as the stall grows."""
    s = min(1.0, max(0.0, stall if math.isfinite(stall) else 0.0))
    h, w = idx.shape
    bands = 1 + int(4 * s)
    r = noise.u32(2 * bands)
    amp = max(1, int(w * (0.04 + 0.3 * s)))
    for i in range(bands):
        y0 = int(r[i] % h)
        hgt = 1 + int(r[bands + i] % max(1, h // 8))
        dx = int(r[i] >> 8) % (2 * amp + 1) - amp
        if dx:
            idx[y0 : y0 + hgt] = np.roll(idx[y0 : y0 + hgt], dx, axis=1)


# ---------------------------------------------------------------- encoding (pure)

DIGITS3 = np.array([list(f"{v:03d}".encode()) for v in range(256)], dtype=np.uint8)
# "DDD;" as little-endian uint32 words: a gather writes digits and separator at once
DIGITS4 = (
    np.concatenate([DIGITS3, np.full((256, 1), ord(";"), np.uint8)], axis=1).copy().view("<u4")
).reshape(256)
CUBE_LEVELS = np.array([0, 95, 135, 175, 215, 255], dtype=np.int32)
# nearest cube level for each channel value
_CUBE_IDX = np.abs(np.arange(256)[:, None] - CUBE_LEVELS[None, :]).argmin(axis=1).astype(np.int32)


def to_256(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> xterm-256 colour indices (colour cube or grey ramp, the
    nearer of the two)."""
    c = rgb.astype(np.int32)
    ci = _CUBE_IDX[c]
    cube = 16 + 36 * ci[..., 0] + 6 * ci[..., 1] + ci[..., 2]
    cube_err = ((c - CUBE_LEVELS[ci]) ** 2).sum(axis=-1)
    mean = c.sum(axis=-1) // 3
    gi = np.clip((mean - 3) // 10, 0, 23)
    grey_err = ((c - (8 + 10 * gi)[..., None]) ** 2).sum(axis=-1)
    return np.where(grey_err < cube_err, 232 + gi, cube).astype(np.uint8)


def rgb15(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) 15-bit keys: the top 5 bits of each channel."""
    c = rgb.astype(np.uint16)
    return ((c[..., 0] >> 3) << 10) | ((c[..., 1] >> 3) << 5) | (c[..., 2] >> 3)


_LUT_256: list[np.ndarray] = []


def lut_256_words() -> np.ndarray:
    """32768 uint32 "NNN;" words: the xterm-256 index of each 15-bit colour (built once)."""
    if not _LUT_256:
        k = np.arange(1 << 15, dtype=np.uint32)
        # the centre of each 8-wide bucket represents it
        rgb = np.stack([(k >> 10) & 31, (k >> 5) & 31, k & 31], axis=-1) * 8 + 4
        _LUT_256.append(DIGITS4[to_256(rgb.astype(np.uint8))])
    return _LUT_256[0]


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint8 approximate luminance (Rec. 601 in eighths)."""
    c = rgb.astype(np.uint16)
    return ((2 * c[..., 0] + 5 * c[..., 1] + c[..., 2]) >> 3).astype(np.uint8)


_GLYPH_LUT = np.frombuffer(GLYPHS, dtype=np.uint8)[
    (np.arange(256) * len(GLYPHS) // 256).clip(0, len(GLYPHS) - 1)
]

ROW_PREFIX = 8  # "\033[RRR;1H": cursor to the row's first column, fixed width


class Encoder:
    """Turns (2*rows, cols, 3) pixels into the bytes of the picture, at fixed width.

    The constant parts of every cell (escape introducers, separators, the half block)
    are written once into a preallocated buffer; a frame only overwrites the digits."""

    CELL = {"truecolor": 39, "256": 23, "none": 1}

    def __init__(self, mode: str, cols: int, rows: int) -> None:
        if mode not in self.CELL:
            raise ValueError(f"unknown colour mode {mode!r}")
        if cols < 1 or rows < 1 or rows > 999:
            raise ValueError(f"bad picture size {cols}x{rows}")
        self.mode, self.cols, self.rows = mode, cols, rows
        cell = self.CELL[mode]
        if mode == "truecolor":
            tmpl = b"\033[38;2;000;000;000;48;2;000;000;000m" + HALF
        elif mode == "256":
            tmpl = b"\033[38;5;000;48;5;000m" + HALF
        else:
            tmpl = b" "
        assert len(tmpl) == cell
        self.buf = np.empty((rows, ROW_PREFIX + cols * cell), dtype=np.uint8)
        self.buf[:, ROW_PREFIX:] = np.tile(np.frombuffer(tmpl, dtype=np.uint8), cols)
        for r in range(rows):
            self.buf[r, :ROW_PREFIX] = np.frombuffer(f"\033[{r + 1:03d};1H".encode(), np.uint8)
        self.cells = self.buf[:, ROW_PREFIX:].reshape(rows, cols, cell)
        self._tmp = np.empty((rows, cols, 3), dtype=np.uint32)
        self._tmp1 = np.empty((rows, cols), dtype=np.uint32)

    def encode(self, pixels: np.ndarray) -> bytes:
        """(2*rows, cols, 3) uint8 -> the picture's bytes (one CUP per row, no reset)."""
        top = pixels[0::2]
        bot = pixels[1::2]
        c = self.cells
        if self.mode == "truecolor":
            # one gather of "DDD;" words per half, copied as 12 (11) contiguous bytes:
            # ~6x faster than six 3-byte fancy-index assignments
            tmp = self._tmp
            np.take(DIGITS4, top, out=tmp)
            c[:, :, 7:19] = tmp.view(np.uint8).reshape(self.rows, self.cols, 12)
            np.take(DIGITS4, bot, out=tmp)
            # the last ";" would overwrite the "m" that ends the sequence: 11 bytes
            c[:, :, 24:35] = tmp.view(np.uint8).reshape(self.rows, self.cols, 12)[:, :, :11]
        elif self.mode == "256":
            # colours quantised to 15 bits, then one gather from a 32768-entry table
            # of "NNN;" words (to_256 per pixel would cost ~1 ms more)
            lut = lut_256_words()
            tmp = self._tmp1
            np.take(lut, rgb15(top), out=tmp)
            c[:, :, 7:11] = tmp.view(np.uint8).reshape(self.rows, self.cols, 4)
            np.take(lut, rgb15(bot), out=tmp)
            c[:, :, 16:19] = tmp.view(np.uint8).reshape(self.rows, self.cols, 4)[:, :, :3]
        else:
            y = (luma(top).astype(np.uint16) + luma(bot)) >> 1
            c[:, :, 0] = _GLYPH_LUT[y]
        return self.buf.tobytes()


# ---------------------------------------------------------------- text (pure)


def fit(text: str, width: int) -> str:
    """Cut `text` to `width` characters (an ellipsis marks the cut)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def bar(parts: list[tuple[int, str]], total: int, width: int) -> str:
    """A text gauge of `width` cells: each (bytes, glyph) part in proportion to `total`,
    the rest "·"."""
    if width <= 0:
        return ""
    out = []
    used = 0
    for nbytes, glyph in parts:
        n = 0 if total <= 0 else int(round(width * max(0, nbytes) / total))
        n = min(n, width - used)
        out.append(glyph * n)
        used += n
    return "".join(out) + "·" * (width - used)


def gauge_line(state: ShowState, width: int) -> str:
    """RAM bar (anon █, cache ▒), swap bar (▓) and the figures in MiB; the throttle act's:
    the work rate against full speed, and the share of periods throttled."""
    s = state.snapshot
    bw = max(4, min(32, width // 4))
    if state.gauge == "cpu":
        work, throttled = summary.cpu_figures(state)
        cpu = bar([(int(1000 * work), "█")], 1000, bw)
        text = f"CPU [{cpu}] work {100 * work:.0f}% of full speed"
        return fit(
            f"{text}  throttled in {100 * throttled:.0f}% of the periods  no memory limit", width
        )
    ram = bar([(s.anon_bytes, "█"), (s.cache_bytes, "▒")], s.ram_limit, bw)
    text = f"RAM [{ram}] {(s.anon_bytes + s.cache_bytes) / MiB:.0f}/{s.ram_limit / MiB:.0f} MiB"
    text += f"  cache {s.cache_bytes / MiB:.0f} MiB"
    if s.swap_limit > 0:
        sw = bar([(s.swap_bytes, "▓")], s.swap_limit, max(2, bw // 2))
        text += f"  swap [{sw}] {s.swap_bytes / MiB:.0f}/{s.swap_limit / MiB:.0f} MiB"
    else:
        text += "  no swap"
    text += f"  hog {s.hog_bytes / MiB:.0f} MiB"
    return fit(text, width)


def status_line(state: ShowState, width: int, keys: bool) -> str:
    """Phase, stall, intensity, elapsed time, badges, notices and the key help."""
    from beep_av.video.scene import fmt_time

    stall = "throttled" if state.gauge == "cpu" else "stall"  # not PSI: the periods'
    parts = [
        f"{summary.hud_word(state):<9}",
        f"{stall} {state.stall * 100:3.0f}%" if math.isfinite(state.stall) else f"{stall}  ?%",
        f"intensity {state.intensity:4.2f}" if math.isfinite(state.intensity) else "",
        fmt_time(state.t),
    ]
    if state.paused:
        parts.append("PAUSED")
    if state.muted:
        parts.append("MUTED")
    if state.message:
        parts.append(state.message)
    if state.act_view is not None and state.act_view.note:
        parts.append(state.act_view.note)  # the countdown, the read-back's figures
    if keys:
        parts.append("[q quit, space pause, r release, m mute, +/- rate, c captions]")
    return fit("  ".join(p for p in parts if p), width)


def caption_line(state: ShowState, captions: Any, width: int) -> str:
    """The caption of the phase in the state's language ("" when off), and skip notes."""
    notes = []
    key = state.phase.value
    if state.act_view is not None and state.act_view.caption:
        key = state.act_view.caption  # an act's own caption, as the window shows it
    if captions is not None and state.captions != "off":
        text = captions.get(state.captions, key) or captions.get("en", key)
        if text:
            notes.append(text)
    for phase, reason in state.skipped:
        notes.append(f"({phase.value} skipped: {reason})")
    return fit("  ".join(notes), width)


# ---------------------------------------------------------------- lanes (pure)

Segment = tuple[str, RGB | None]  # text and its foreground colour (None: the default)


def fg(rgb: RGB, mode: str) -> str:
    """The escape that sets the foreground to `rgb` in `mode` ("" in "none")."""
    if mode == "truecolor":
        return f"\033[38;2;{rgb[0]};{rgb[1]};{rgb[2]}m"
    if mode == "256":
        return f"\033[38;5;{int(to_256(np.array(rgb, dtype=np.uint8)))}m"
    return ""


def paint(segments: list[Segment], width: int, mode: str) -> str:
    """Segments joined and cut to `width` visible characters (as `fit` cuts), each
    coloured segment wrapped in its foreground escape; no escape at all in "none"."""
    text = fit("".join(t for t, _ in segments), width)
    out, pos = [], 0
    for t, rgb in segments:
        part = text[pos : pos + len(t)]
        pos += len(t)
        if not part:
            continue
        on = fg(rgb, mode) if rgb is not None else ""
        out.append(f"{on}{part}\033[39m" if on else part)
    return "".join(out)


def lane_state(lane: Lane, state: ShowState) -> str:
    """ "DEAD (killed)" for the kill's victim ("... in the model" in a rehearsal), "DEAD"
    for another process that is gone (released at the end, or killed unrecorded)."""
    k = state.kill
    if k is not None and lane.pid is not None and k.pid == lane.pid:
        return "DEAD (killed in the model)" if state.stage == "rehearsal" else "DEAD (killed)"
    return "DEAD"


def lane_figures(lane: Lane) -> str:
    """The figures after a live lane's bar: RSS, swap and oom_score (its adj when set),
    or the work rate (throttle)."""
    if lane.work_rate is not None:
        rate = lane.work_rate if math.isfinite(lane.work_rate) else 0.0
        return f"{rate:,.0f} {lane.work_unit}"
    score = "?" if lane.oom_score is None else str(lane.oom_score)
    adj = f" (adj {lane.oom_score_adj})" if lane.oom_score_adj else ""
    return f"RSS {lane.rss / MiB:.0f}M  swap {lane.swap / MiB:.0f}M  oom_score {score}{adj}"


def lane_segments(
    lane: Lane, state: ShowState, bw: int, name_w: int, pid_w: int, biggest: int, fastest: float
) -> list[Segment]:
    """One lane as coloured segments: its marker, name, pid, a bar of `bw` cells against
    the biggest lane (RSS solid, swap shaded as in the gauge line; throttle: the work
    rate against the fastest; none when `bw` is 0) and its figures, or DEAD."""
    colour = lane_colour(lane.colour, lane.alive)
    pid = "?" if lane.pid is None else str(lane.pid)
    head: list[Segment] = [
        ("█", colour),
        (f" {fit(lane.name, name_w):<{name_w}} pid {pid:<{pid_w}}  ", None),
    ]
    if not lane.alive:
        return [*head, (lane_state(lane, state), None)]
    if bw <= 0:
        return [*head, (lane_figures(lane), None)]
    if lane.work_rate is not None:
        rate = lane.work_rate if math.isfinite(lane.work_rate) else 0.0
        ref = lane.full_rate or fastest  # its own full speed once measured
        n = min(bw, int(round(bw * min(1.0, max(0.0, rate) / ref))))
        parts = [("work [", None), ("█" * n, colour), ("·" * (bw - n), None)]
    else:
        r = min(bw, int(round(bw * max(0, lane.rss) / biggest)))
        w = min(bw - r, int(round(bw * max(0, lane.swap) / biggest)))
        swap_colour = mix(colour, (255, 255, 255), SWAP_MIX)
        parts = [("[", None), ("█" * r, colour), ("▓" * w, swap_colour), ("·" * (bw - r - w), None)]
    return [*head, *parts, ("] " + lane_figures(lane), None)]


def lane_lines(state: ShowState, width: int, mode: str, count: int = MAX_LANES) -> list[str]:
    """The first `count` (at most MAX_LANES) lanes of `state`, one line each of at most
    `width` visible characters, coloured in `mode`. The bars are one width for all
    lanes: what the widest line's text leaves of `width`, up to 24 cells; none when
    that is under 4 (the figures matter more)."""
    lanes = state.lanes[: max(0, min(count, MAX_LANES))]
    if not lanes:
        return []
    name_w = min(10, max(len(ln.name) for ln in lanes))
    pid_w = max(len("?" if ln.pid is None else str(ln.pid)) for ln in lanes)
    live = [ln for ln in lanes if ln.alive]
    biggest = max([ln.rss + ln.swap for ln in live] + [1])
    rates = [ln.work_rate for ln in live if ln.work_rate and math.isfinite(ln.work_rate)]
    fastest = max([*rates, 1.0])
    # marker, name, pid, the bar's brackets (and label), its figures
    text = max(
        [
            2 + name_w + 5 + pid_w + 2 + (8 if ln.work_rate is not None else 3)
            + len(lane_figures(ln))
            for ln in live
        ]
        + [0]
    )  # fmt: skip
    room = width - text
    bw = min(24, room) if room >= 4 else 0  # too narrow for a bar: the figures first
    return [
        paint(lane_segments(ln, state, bw, name_w, pid_w, biggest, fastest), width, mode)
        for ln in lanes
    ]


BIG = {
    "B": ["████ ", "█   █", "████ ", "█   █", "████ "],
    "E": ["█████", "█    ", "████ ", "█    ", "█████"],
    "P": ["████ ", "█   █", "████ ", "█    ", "█    "],
    "T": ["█████", "  █  ", "  █  ", "  █  ", "  █  "],
    "H": ["█   █", "█   █", "█████", "█   █", "█   █"],
    "R": ["████ ", "█   █", "████ ", "█  █ ", "█   █"],
    "O": [" ███ ", "█   █", "█   █", "█   █", " ███ "],
    "L": ["█    ", "█    ", "█    ", "█    ", "█████"],
    "D": ["████ ", "█   █", "█   █", "█   █", "████ "],
}


def big(word: str) -> list[str]:
    """`word` (letters of BIG) as 5 lines of block letters."""
    return [" ".join(BIG[ch][i] for ch in word) for i in range(5)]


def bystander_block(state: ShowState, width: int) -> list[str] | None:
    """A fresh kill of another process, as lines for a box over the running show."""
    from beep_av.video.scene import bystander_card

    lines = bystander_card(state)
    if not lines:
        return None
    inner = min(max(len(x) for x in lines), max(1, width - 4))
    return [fit(x, inner).center(inner) for x in lines]


def card_block(state: ShowState, width: int, height: int) -> list[str]:
    """The finale's victim card as lines (big BEEP when there is room)."""
    the_card = summary.card(state)
    lines, word, title = the_card.lines(), the_card.word, the_card.title
    fits = all(ch in BIG for ch in word) and width >= 6 * len(word) + 3
    head = big(word) if height >= len(lines) + 8 and fits else [" ".join(word)]
    body = [*head, "", *([title] if title else []), *lines]
    inner = min(max(len(x) for x in body), max(1, width - 4))
    return [fit(x, inner).center(inner) for x in body]


# ---------------------------------------------------------------- the output (adapter)


class TerminalOutput:
    """Draws the show in the terminal on `stream`.

    `size`: (cols, rows) or None to follow the terminal (and SIGWINCH).
    `color`: "auto" (from COLORTERM/NO_COLOR), "truecolor", "256" or "none".
    `max_bps`: bytes per second cap; frames are skipped to stay under it.
    `keys`: read presenter keys from stdin when it is a terminal."""

    def __init__(
        self,
        stream: IO[Any] | None = None,
        size: tuple[int, int] | None = None,
        color: str = "auto",
        max_bps: float = DEFAULT_MAX_BPS,
        *,
        fps: float = 30.0,
        seed: int | None = None,
        keys: bool = True,
        captions: Any = None,
        env: Mapping[str, str] | None = None,
        stdin: IO[Any] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.fixed_size = size
        env = os.environ if env is None else env
        self.mode = color_mode(env) if color == "auto" else color
        if self.mode not in Encoder.CELL:
            raise ValueError(f"color must be auto, truecolor, 256 or none, not {color!r}")
        self.pacer = Pacer(max_bps)
        self.fps = fps
        self.noise = Noise(seed)
        self.want_keys = keys
        self.captions = captions
        self.stdin = stdin if stdin is not None else sys.stdin
        self.picture = Picture()
        self.size = size or (80, 24)
        self._encoder: Encoder | None = None
        self._open = False
        self._resized = False
        self._clear = True
        self._old_winch: Any = None
        self._winch_installed = False
        self._key_fd: int | None = None
        self._key_attrs: list[Any] | None = None
        self._bell_rung = False
        self._last_phase: Phase | None = None
        self.bytes_written = 0
        # the victim cards shown, as text for the main screen after close (as headless
        # prints them): one per kill, keyed (pid, t) like headless (a watch sees many)
        self.cards: list[list[str]] = []
        self._card_keys: set[tuple[int, float]] = set()

    # -- Output protocol

    def open(self) -> None:
        """Alternate screen, hidden cursor, cbreak keys, SIGWINCH handler."""
        if self._open:
            return
        if self.captions is None:
            from beep_av.video.captions import Captions

            self.captions = Captions.load()
        self.size = self._query_size()
        self._open = True
        atexit.register(self.close)
        self._install_winch()
        self._start_keys()
        self._write((ALT_ON + CURSOR_HIDE + CLEAR).encode())

    def frame(self, state: ShowState) -> list[str]:
        """Draw `state` unless the byte budget says skip; return the keys pressed."""
        cmds = self._read_keys()
        if not self._open:
            return cmds
        if self._resized:
            self._resized = False
            self.size = self._query_size()
            self._clear = True
        changed = state.phase is not self._last_phase
        self._last_phase = state.phase
        now = time.monotonic()
        # phase changes (the kill, the card) are never skipped; ordinary frames may be
        if not (changed or self._clear) and not self.pacer.ready(now):
            return cmds
        data = self.build(state)
        t0 = time.monotonic()
        self._write(data)
        self.pacer.wrote(len(data), t0, time.monotonic())
        return cmds

    def close(self) -> None:
        """Main screen, visible cursor, terminal modes and SIGWINCH restored; then the
        victim card(s) shown, as plain lines on the main screen. Safe twice."""
        self._stop_keys()
        self._remove_winch()
        if not self._open:
            return
        self._open = False
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001 - never fail a restore
            pass
        reset = RESET if self.mode != "none" else ""
        # the card stays on the main screen: the alternate one goes with the show
        after = "".join(f"{line}\n" for card in self.cards for line in ["", *card])
        try:
            self._write((reset + CURSOR_SHOW + ALT_OFF + after).encode())
        except OSError:
            pass  # the terminal went away: nothing left to restore

    def suspend(self) -> None:
        """Ctrl-Z: give the terminal back as it was (main screen, cursor, line mode)
        before the process stops."""
        if not self._open:
            return
        self._stop_keys()
        reset = RESET if self.mode != "none" else ""
        try:
            self._write((reset + CURSOR_SHOW + ALT_OFF).encode())
        except OSError:
            pass

    def resume(self) -> None:
        """`fg`: the alternate screen, raw keys and a whole frame again."""
        if not self._open:
            return
        self._start_keys()
        self._clear = True
        self._resized = True  # the terminal may have changed size meanwhile
        try:
            self._write((ALT_ON + CURSOR_HIDE + CLEAR).encode())
        except OSError:
            pass

    # -- building a frame (pure given the noise)

    def layout(self) -> tuple[int, int, int]:
        """(cols, picture rows, text lines) for the current size."""
        cols, rows = self.size
        text = min(TEXT_LINES, max(0, rows - 1))
        return cols, max(1, rows - text), text

    def lane_rows(self, state: ShowState, cols: int, prows: int) -> int:
        """How many of the state's lanes get a row, out of `prows` picture rows: at most
        MAX_LANES, and only while the picture keeps MIN_PICTURE rows and whatever box is
        drawn over it (the finale's card, a bystander's) still fits whole: lane rows go
        before the card is cut."""
        n = min(MAX_LANES, len(state.lanes))
        if n == 0:
            return 0
        need = MIN_PICTURE
        if state.phase is Phase.FINALE:
            need = max(need, len(card_block(state, cols, prows)) + 2)
        else:
            box = bystander_block(state, cols)
            if box:
                need = max(need, len(box) + 2)
        return max(0, min(n, prows - need))

    def build(self, state: ShowState) -> bytes:
        """The bytes of one whole frame of `state`."""
        head, pixels, tail = self.compose(state)
        enc = self._encoder
        rows = pixels.shape[0] // 2
        if enc is None or (enc.cols, enc.rows) != (pixels.shape[1], rows):
            enc = self._encoder = Encoder(self.mode, pixels.shape[1], rows)
        return head.encode() + enc.encode(pixels) + tail.encode()

    def compose(self, state: ShowState) -> tuple[str, np.ndarray, str]:
        """One frame of `state` in three parts: the escapes before the picture, the
        picture's pixels ((2 x picture rows, cols, 3) RGB, two a cell, from the top
        left) and the escapes after it (text lines, boxes, the cursor's rest)."""
        cols, full, text = self.layout()
        nlanes = self.lane_rows(state, cols, full)
        prows = full - nlanes
        colour = self.mode != "none"
        head = ""
        if self._clear:
            self._clear = False
            head = (RESET if colour else "") + CLEAR
        pixels = self.picture.render(state, self.noise, cols, 2 * prows)
        tail = [RESET] if colour else []
        keys = self._key_fd is not None
        lines = lane_lines(state, cols - 1, self.mode, nlanes) if nlanes else []
        lines += [
            gauge_line(state, cols - 1),
            caption_line(state, self.captions, cols - 1),
            status_line(state, cols - 1, keys),
        ][:text]
        for i, line in enumerate(lines):
            tail.append(f"\033[{prows + 1 + i};1H{line}\033[K")
        box = bystander_block(state, cols) if state.phase is not Phase.FINALE else None
        if box:
            tail.append(self._box(box, cols, prows, colour, "\033[1;30;43m"))
        if state.phase is Phase.FINALE:
            # the card as it would be without lanes (lane_rows left it room to fit whole)
            tail.append(self._box(card_block(state, cols, full), cols, prows, colour))
            self._keep_card(state)
            if not self._bell_rung:
                self._bell_rung = True
                tail.append("\a")
        tail.append(f"\033[{prows + nlanes + text};{cols}H")
        return head, pixels, "".join(tail)

    def _keep_card(self, state: ShowState) -> None:
        """Remember the victim card's text for the main screen (the lines headless
        prints), once per kill."""
        kill = state.kill
        if kill is None or (kill.pid, kill.t) in self._card_keys:
            return
        self._card_keys.add((kill.pid, kill.t))
        self.cards.append(["  " + line for line in summary.card(state, kill).columns()])

    @staticmethod
    def _box(
        lines: list[str], cols: int, prows: int, colour: bool, style: str = "\033[1;97;41m"
    ) -> str:
        width = len(lines[0]) + 4
        top = max(1, (prows - len(lines) - 2) // 2 + 1)
        left = max(1, (cols - width) // 2 + 1)
        on = style if colour else ""
        off = RESET if colour else ""
        out = []
        for i, line in enumerate(["", *lines, ""]):
            if top + i > prows:
                break
            out.append(f"\033[{top + i};{left}H{on}  {line.ljust(width - 4)}  {off}")
        return "".join(out)

    # -- the terminal

    def _query_size(self) -> tuple[int, int]:
        if self.fixed_size is not None:
            return self.fixed_size
        try:
            ts = os.get_terminal_size(self.stream.fileno())
            cols, rows = ts.columns, ts.lines
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return self.size
        return (max(2, min(cols, 999)), max(2, min(rows, 999)))

    def _write(self, data: bytes) -> None:
        stream = self.stream
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            fd = None
        if fd is None:
            target = getattr(stream, "buffer", None)
            if target is not None:
                target.write(data)
            elif isinstance(stream, io.TextIOBase):
                stream.write(data.decode())
            else:
                stream.write(data)
            stream.flush()
        else:
            stream.flush()  # anything print()ed before must come first
            # a frame goes out whole: cut in mid-write, it would leave the terminal inside
            # an escape or UTF-8 sequence and swallow the restore that close() sends.
            # The show's signal handlers only set a flag (beep_av.interrupt), so a signal
            # here is an EINTR that os.write retries (PEP 475) from any thread, and a
            # short write is continued until every byte is out
            _write_all(fd, data)
        self.bytes_written += len(data)

    def _install_winch(self) -> None:
        if self.fixed_size is not None or threading.current_thread() is not threading.main_thread():
            return

        def on_winch(signum: int, frame: Any) -> None:
            self._resized = True  # only a flag: the frame loop re-reads the size

        self._old_winch = signal.signal(signal.SIGWINCH, on_winch)
        self._winch_installed = True

    def _remove_winch(self) -> None:
        if self._winch_installed:
            self._winch_installed = False
            signal.signal(signal.SIGWINCH, self._old_winch or signal.SIG_DFL)

    def _start_keys(self) -> None:
        if not self.want_keys:
            return
        try:
            fd = self.stdin.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            return
        if not os.isatty(fd):
            return
        self._key_attrs = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # no echo, no line buffering; Ctrl-C still raises SIGINT
        self._key_fd = fd

    def _stop_keys(self) -> None:
        fd, attrs = self._key_fd, self._key_attrs
        self._key_fd = self._key_attrs = None
        if fd is not None and attrs is not None:
            try:
                termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
            except termios.error:
                pass

    def _read_keys(self) -> list[str]:
        fd = self._key_fd
        if fd is None:
            return []
        data = b""
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            data += chunk
            if len(data) > 4096:
                break
        return parse_keys(data)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`: a short write is continued (an EINTR is
    retried by os.write itself, PEP 475, when the handler raises nothing)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
