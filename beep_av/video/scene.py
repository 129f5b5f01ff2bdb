"""The picture of a show, pure: (ShowState, Noise) -> pixels on a pygame Surface.

No display, no files, no clock: the scene draws into any 32-bit or other surface it is
given (a window, an off-screen framebuffer copy, a PNG for golden references). A seeded
Noise gives the same frame every time.

How a frame is made (speed matters: 1080p must stay well under 8 ms on one core):
  1. static at a lower resolution (the grain): one random byte per low-res pixel, looked
     up in a 256-entry uint32 table that already holds density, brightness and the phase
     palette (one `np.take`, no float maths, no boolean masks);
  2. swapping tears the low-res picture in displaced horizontal bands;
  3. `pygame.transform.scale` (nearest) blows the low-res surface up into the target;
  4. the HUD: gauges, captions, badges, text cached and re-rendered only when it changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pygame

from beep_av import summary
from beep_av.model import MiB, Phase, ShowState
from beep_av.noise import Noise
from beep_av.video.captions import Captions
from beep_av.video.palette import DEAD_GREY, DEAD_MIX, LANE_COLOURS, SWAP_MIX, mix

# ---------------------------------------------------------------- look of each phase

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """Palette and motion of the static in one phase."""

    dark: RGB  # colour of an unlit grain
    bright: RGB  # colour of a fully lit grain
    gain: float  # brightness multiplier on top of intensity
    refresh: int  # 1: every low-res row is redrawn each frame; 4: one row in four (slow)
    text: RGB  # colour of the phase name


LOOKS: dict[Phase, Look] = {
    Phase.CALM: Look((2, 4, 12), (60, 85, 140), 0.55, 4, (140, 170, 255)),
    Phase.FILLING: Look((4, 6, 16), (120, 155, 210), 0.75, 2, (160, 215, 255)),
    Phase.EVICTING: Look((16, 6, 2), (255, 185, 105), 0.9, 1, (255, 175, 80)),
    Phase.SWAPPING: Look((28, 8, 4), (255, 235, 205), 1.0, 1, (255, 95, 60)),
    Phase.OOM: Look((0, 0, 0), (255, 255, 255), 1.0, 1, (255, 255, 255)),
    Phase.FINALE: Look((0, 0, 0), (255, 255, 255), 1.0, 1, (255, 255, 255)),
}

FLASH_S = 0.12  # white flash at the kill, then black
ROWS_CALM = 150  # low-res rows of static at intensity 0 (coarse grain) ...
ROWS_MAX = 400  # ... and at intensity 1 (fine grain)
MIN_GRAIN = 2  # never generate at full resolution: np.take costs ~2.3 ns a pixel
LUT_STEPS = 64  # intensity is quantised to cache the lookup tables
BYSTANDER_S = 5.0  # a kill that was not the hog's stays on screen this long

WHITE: RGB = (255, 255, 255)
GREY: RGB = (170, 170, 170)
PANEL: RGB = (0, 0, 0)
SEG_ANON: RGB = (235, 95, 55)
SEG_CACHE: RGB = (70, 160, 220)
SEG_SWAP: RGB = (170, 90, 220)
SEG_FREE: RGB = (40, 40, 48)
SEG_SWAP_FREE: RGB = (32, 26, 44)


def grain_for(height: int, intensity: float, least: int = MIN_GRAIN) -> int:
    """Size of one static grain in output pixels: coarse when calm, fine under pressure;
    never under `least`."""
    x = min(1.0, max(0.0, intensity)) if math.isfinite(intensity) else 0.0
    rows = ROWS_CALM + (ROWS_MAX - ROWS_CALM) * x
    return max(least, round(height / rows))


def lut_levels(intensity: float, gain: float) -> np.ndarray:
    """Brightness level in [0, 1] for each random byte value (256 float32).

    A byte lights its grain when it falls under the density (more grains lit as the
    pressure grows); lit grains spread over a ramp up to the peak brightness."""
    x = min(1.0, max(0.0, intensity))
    density = 0.12 + 0.8 * x
    peak = gain * (0.35 + 0.65 * x)
    u = (np.arange(256, dtype=np.float32) + 0.5) / 256.0
    lit = u < density
    ramp = 1.0 - u / density
    return np.where(lit, peak * (0.3 + 0.7 * np.sqrt(np.clip(ramp, 0, 1))), 0.0).astype(np.float32)


def fmt_time(t: float) -> str:
    """Show time as mm:ss.s."""
    t = max(0.0, t) if math.isfinite(t) else 0.0
    m, s = divmod(t, 60.0)
    return f"{int(m):02d}:{s:04.1f}"


def fmt_mib(n: float) -> str:
    return f"{n / MiB:.0f}"


def bystander_card(state: ShowState) -> list[str] | None:
    """The card of the latest kill that was not the hog's, while it is fresh (it stays
    BYSTANDER_S on screen over the running show), else None."""
    if not state.bystanders or state.phase in (Phase.OOM, Phase.FINALE):
        return None
    b = state.bystanders[-1]
    if not (0.0 <= state.t - b.t < BYSTANDER_S):
        return None
    return summary.bystander_lines(b)


# ---------------------------------------------------------------- the scene


class Scene:
    """Draws ShowStates. Holds caches (lookup tables, low-res buffers, rendered text)
    but no clock: a fresh Scene with a seeded Noise draws the same frame every time."""

    def __init__(
        self,
        size: tuple[int, int],
        captions: Captions | None = None,
        lang: str = "en",
        min_grain: int = MIN_GRAIN,
    ) -> None:
        self.captions = captions
        self.min_grain = max(MIN_GRAIN, int(min_grain))  # a GIF's: coarser, a smaller file
        self.lang = lang  # words of the HUD (badges, skip notes) when captions are off
        self.size = (1, 1)
        self.resize(size)
        self._luts: dict[tuple[Phase, int], np.ndarray] = {}
        self._frame = 0
        self._psi_last: tuple[float, int] | None = None
        self._psi_full = 0.0

    # ------------------------------------------------------------ public

    def resize(self, size: tuple[int, int]) -> None:
        """Follow a new output size in pixels; drops size-bound caches."""
        w, h = int(size[0]), int(size[1])
        if w < 1 or h < 1:
            raise ValueError(f"scene size must be positive, got {size!r}")
        self.size = (w, h)
        self._low: dict[int, tuple[np.ndarray, pygame.Surface]] = {}
        self._fresh: set[int] = set()
        self._fonts: dict[int, pygame.font.Font] = {}
        self._texts: dict[tuple[str, int, RGB], pygame.Surface] = {}
        self._wraps: dict[tuple[str, int, int], list[str]] = {}
        self._wide: pygame.Surface | None = None  # full-size 32-bit staging for other depths

    def render(self, state: ShowState, noise: Noise) -> pygame.Surface:
        """A new off-screen surface of `size` holding the frame of `state`."""
        surface = pygame.Surface(self.size)
        self.draw(state, noise, surface)
        return surface

    def draw(self, state: ShowState, noise: Noise, surface: pygame.Surface) -> None:
        """Draw the whole frame of `state` into `surface` (which should be `size`)."""
        if surface.get_size() != self.size:
            self.resize(surface.get_size())
        self._track_psi(state)
        phase = state.phase
        if phase is Phase.OOM:
            since = state.t - (state.oom_t if state.oom_t is not None else state.t)
            if 0 <= since < FLASH_S:
                surface.fill(WHITE)
                self._frame += 1
                return
            surface.fill((0, 0, 0))
            self._draw_caption(state, surface)
            self._draw_message(state, surface)
        elif phase is Phase.FINALE:
            surface.fill((0, 0, 0))
            self.draw_card(state, surface)
            self._draw_caption(state, surface)
            self._draw_message(state, surface)
        else:
            self._draw_static(state, noise, surface)
            self._draw_hud(state, surface)
        self._frame += 1

    def draw_card(self, state: ShowState, surface: pygame.Surface) -> pygame.Rect:
        """The finale's big BEEP and victim card, centred; returns the rectangle drawn."""
        w, h = self.size
        the_card = summary.card(state)
        title = the_card.word
        beep = self._text(title, int(h * 0.26 if len(title) <= 5 else h * 0.16), WHITE)
        # one size for every line, small enough that the widest fits the width
        px = int(h * 0.06)
        widest = max((self._text(s, px, GREY).get_width() for s in the_card.lines()), default=1)
        px = max(8, int(px * min(1.0, 0.96 * w / max(1, widest))))
        lines = [self._text(s, px, GREY) for s in the_card.lines()]
        gap = int(h * 0.012)
        total = beep.get_height() + sum(s.get_height() + gap for s in lines)
        y = max(0, int(h * 0.45) - total // 2)
        area = pygame.Rect(0, y, 0, 0)
        r = surface.blit(beep, ((w - beep.get_width()) // 2, y))
        area = r.copy()
        y += beep.get_height()
        for s in lines:
            y += gap
            area.union_ip(surface.blit(s, ((w - s.get_width()) // 2, y)))
            y += s.get_height()
        return area

    # ------------------------------------------------------------ static

    def _lut(self, phase: Phase, intensity: float) -> np.ndarray:
        """256 packed BGRA pixels, one per random byte value, for this phase and level."""
        q = int(round(min(1.0, max(0.0, intensity)) * LUT_STEPS))
        lut = self._luts.get((phase, q))
        if lut is None:
            look = LOOKS[phase]
            k = lut_levels(q / LUT_STEPS, look.gain)[:, None]
            dark = np.array(look.dark, dtype=np.float32)
            bright = np.array(look.bright, dtype=np.float32)
            rgb = np.clip(dark + (bright - dark) * k, 0, 255).astype(np.uint32)
            # frombuffer(..., "BGRA") on little-endian: A<<24 | R<<16 | G<<8 | B
            lut = 0xFF000000 | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
            lut = lut.astype(np.uint32)
            self._luts[(phase, q)] = lut  # at most 6 phases x 65 levels
        return lut

    def _buffer(self, grain: int) -> tuple[np.ndarray, pygame.Surface]:
        got = self._low.get(grain)
        if got is None:
            w, h = self.size
            lw, lh = -(-w // grain), -(-h // grain)
            arr = np.zeros((lh, lw), dtype=np.uint32)
            # frombuffer shares the array's memory: writing the array is the upload
            surf = pygame.image.frombuffer(arr, (lw, lh), "BGRA")
            got = (arr, surf)
            self._low[grain] = got
            self._fresh.add(grain)
        return got

    def _draw_static(self, state: ShowState, noise: Noise, surface: pygame.Surface) -> None:
        look = LOOKS[state.phase]
        intensity = state.intensity if math.isfinite(state.intensity) else 0.0
        grain = grain_for(self.size[1], intensity, self.min_grain)
        arr, low = self._buffer(grain)
        lut = self._lut(state.phase, intensity)
        lh, lw = arr.shape
        refresh = look.refresh
        view = state.act_view
        if view is not None and view.speed < 1.0:  # a throttled act: the picture slows
            refresh = max(refresh, min(30, round(1.0 / max(0.034, view.speed))))
        if grain in self._fresh or refresh <= 1:
            self._fresh.discard(grain)
            rows = arr
        else:
            # slow phases redraw an interlaced share of the rows: the static shimmers
            rows = arr[self._frame % refresh :: refresh]
        n = rows.shape[0] * lw
        if rows is arr:
            np.take(lut, noise.u8(n).reshape(lh, lw), out=arr)
        else:
            rows[...] = np.take(lut, noise.u8(n).reshape(rows.shape[0], lw))
        if state.phase is Phase.SWAPPING:
            self._tear(state, noise, arr)
        if surface.get_bytesize() == 4:
            pygame.transform.scale(low, self.size, surface)
        else:
            # scale only writes into a 32-bit target; other depths (16-bit consoles,
            # 24-bit windows) take one extra converting blit
            if self._wide is None or self._wide.get_size() != self.size:
                self._wide = pygame.Surface(self.size, depth=32)
            pygame.transform.scale(low, self.size, self._wide)
            surface.blit(self._wide, (0, 0))

    def _tear(self, state: ShowState, noise: Noise, arr: np.ndarray) -> None:
        """Tear horizontal bands: each is one scanline smeared sideways and displaced,
        leaving a black gap where its pages went out. More bands, further displaced, as
        the stall grows (pages moving out make the machine stutter; the picture too)."""
        stall = min(1.0, max(0.0, state.stall if math.isfinite(state.stall) else 0.0))
        lh, lw = arr.shape
        bands = 2 + int(10 * stall)
        r = noise.u32(3 * bands)
        amp = max(1, int(lw * (0.03 + 0.25 * stall)))
        black = np.uint32(0xFF000000)
        for i in range(bands):
            y0 = int(r[i] % lh)
            y1 = min(lh, y0 + 1 + int(r[bands + i] % max(1, lh // 12)))
            smear = 2 + int(r[2 * bands + i] % 14)
            line = np.repeat(arr[y0, ::smear], smear)[:lw]
            dx = int(r[i] >> 8) % (2 * amp + 1) - amp
            band = arr[y0:y1]
            if dx > 0:
                band[:, dx:] = line[: lw - dx]
                band[:, :dx] = black
            elif dx < 0:
                band[:, :dx] = line[-dx:]
                band[:, dx:] = black
            else:
                band[:] = line

    # ------------------------------------------------------------ text

    def _font(self, px: int) -> pygame.font.Font:
        px = max(8, px)
        f = self._fonts.get(px)
        if f is None:
            if not pygame.font.get_init():
                pygame.font.init()
            f = pygame.font.Font(None, px)  # pygame's default font, same everywhere
            self._fonts[px] = f
        return f

    def _text(self, s: str, px: int, color: RGB) -> pygame.Surface:
        key = (s, max(8, px), color)
        surf = self._texts.get(key)
        if surf is None:
            if len(self._texts) > 400:  # elapsed time etc. change: do not grow forever
                self._texts.clear()
            surf = self._font(px).render(s, True, color)
            self._texts[key] = surf
        return surf

    def _wrap(self, s: str, px: int, width: int, max_lines: int = 4) -> list[str]:
        key = (s, px, width)
        got = self._wraps.get(key)
        if got is not None:
            return got
        font = self._font(px)
        lines: list[str] = []
        for para in s.splitlines() or [""]:
            line = ""
            for word in para.split():
                cand = f"{line} {word}" if line else word
                if line and font.size(cand)[0] > width:
                    lines.append(line)
                    line = word
                else:
                    line = cand
            lines.append(line)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] += " …"
        if len(self._wraps) > 64:
            self._wraps.clear()
        self._wraps[key] = lines
        return lines

    def _word(self, state: ShowState, key: str) -> str | None:
        if self.captions is None:
            return None
        lang = state.captions if state.captions != "off" else self.lang
        return self.captions.get(lang, key) or self.captions.get("en", key)

    def _blit_panel(self, surface: pygame.Surface, text: pygame.Surface, x: int, y: int) -> int:
        """Blit text on a solid dark panel (readable over bright static); returns bottom."""
        pad = max(2, text.get_height() // 8)
        surface.fill(
            PANEL, (x - pad, y - pad, text.get_width() + 2 * pad, text.get_height() + 2 * pad)
        )
        surface.blit(text, (x, y))
        return y + text.get_height() + 2 * pad

    # ------------------------------------------------------------ HUD

    def _track_psi(self, state: ShowState) -> None:
        """PSI full stall fraction from the cumulative counter between snapshots."""
        snap = state.snapshot
        last = self._psi_last
        if last is not None and snap.t > last[0]:
            d = (snap.psi_full_us - last[1]) / 1e6 / (snap.t - last[0])
            self._psi_full = min(1.0, max(0.0, d))
        if last is None or snap.t != last[0]:
            self._psi_last = (snap.t, snap.psi_full_us)

    def _draw_hud(self, state: ShowState, surface: pygame.Surface) -> None:
        w, h = self.size
        m = max(4, int(h * 0.03))
        look = LOOKS[state.phase]
        # top left: the phase name (or the act's own word), big
        name = self._text(summary.hud_word(state), int(h * 0.11), look.text)
        y = self._blit_panel(surface, name, m, m)
        # top right: elapsed time and badges
        tt = self._text(fmt_time(state.t), int(h * 0.07), WHITE)
        ty = self._blit_panel(surface, tt, w - m - tt.get_width(), m)
        for flag, key, default in (
            (state.paused, "paused", "PAUSED"),
            (state.muted, "muted", "MUTED"),
        ):
            if flag:
                badge = self._text(
                    (self._word(state, key) or default).upper(), int(h * 0.055), (20, 20, 20)
                )
                bx = w - m - badge.get_width()
                pad = badge.get_height() // 6
                surface.fill(
                    (255, 210, 60),
                    (bx - pad, ty + pad, badge.get_width() + 2 * pad, badge.get_height() + 2 * pad),
                )
                surface.blit(badge, (bx, ty + 2 * pad))
                ty += badge.get_height() + 4 * pad
        self._draw_caption(state, surface, top=y + m // 2)
        self._draw_gauges(state, surface)
        self._draw_message(state, surface)
        self.draw_bystander(state, surface)
        if state.lanes:
            self.draw_lanes(state, surface)

    def draw_lanes(self, state: ShowState, surface: pygame.Surface) -> pygame.Rect:
        """An act's processes, one lane each in its colour: a bar of its RSS (and swap,
        paler) against the largest, and its figures (oom_score, or the work rate);
        returns the rectangle drawn."""
        w, h = self.size
        m = max(4, int(h * 0.03))
        lanes = state.lanes
        px = int(h * 0.04)
        lane_h = max(px + 4, int(h * 0.055))
        top = int(h * 0.8) - lane_h * len(lanes) - m
        area = pygame.Rect(0, top, w, lane_h * len(lanes))
        surface.fill(PANEL, area)
        biggest = max([ln.rss + ln.swap for ln in lanes] + [1])
        fastest = max([ln.work_rate or 0.0 for ln in lanes] + [1.0])
        bar_w = int(w * 0.4)
        for k, ln in enumerate(lanes):
            y = top + k * lane_h
            colour = LANE_COLOURS[ln.colour % len(LANE_COLOURS)]
            if not ln.alive:
                colour = mix(colour, DEAD_GREY, DEAD_MIX)
            if ln.work_rate is not None:
                # against its own full speed once measured: the bar shrinks with the quota
                ref = ln.full_rate or fastest
                fill = int(bar_w * min(1.0, max(0.0, ln.work_rate / ref)))
                surface.fill(mix(colour, PANEL, 0.7), (m, y + 2, bar_w, lane_h - 4))
                surface.fill(colour, (m, y + 2, fill, lane_h - 4))
                text = f"{ln.name}  pid {ln.pid}  {ln.work_rate:,.0f} {ln.work_unit}"
                if ln.full_rate:
                    text += f"  ({summary.share_text(ln.work_rate / ln.full_rate)} of full speed)"
            else:
                rw = int(bar_w * ln.rss / biggest)
                sw = int(bar_w * ln.swap / biggest)
                surface.fill(colour, (m, y + 2, rw, lane_h - 4))
                surface.fill(mix(colour, WHITE, SWAP_MIX), (m + rw, y + 2, sw, lane_h - 4))
                score = "?" if ln.oom_score is None else str(ln.oom_score)
                adj = "" if ln.oom_score_adj is None else f" (adj {ln.oom_score_adj})"
                text = (
                    f"{ln.name}  pid {ln.pid}  RSS {fmt_mib(ln.rss)}  swap {fmt_mib(ln.swap)} MiB"
                    f"  oom_score {score}{adj}"
                )
            if not ln.alive:
                text += "  KILLED"
            surface.blit(self._text(text, px, WHITE), (m + bar_w + m, y + (lane_h - px) // 2))
        return area

    def draw_bystander(self, state: ShowState, surface: pygame.Surface) -> pygame.Rect | None:
        """A fresh kill of another process: its card on a panel mid-screen (the show
        goes on around it); returns the rectangle drawn, None when there is none."""
        lines = bystander_card(state)
        if not lines:
            return None
        w, h = self.size
        texts = [self._text(s, int(h * 0.05), (255, 230, 140)) for s in lines]
        gap = int(h * 0.01)
        height = sum(t.get_height() + gap for t in texts)
        width = max(t.get_width() for t in texts)
        pad = max(4, int(h * 0.02))
        y = int(h * 0.36) - height // 2
        box = pygame.Rect((w - width) // 2 - pad, y - pad, width + 2 * pad, height + 2 * pad)
        surface.fill((40, 0, 0), box)
        for t in texts:
            surface.blit(t, ((w - t.get_width()) // 2, y))
            y += t.get_height() + gap
        return box

    def _draw_caption(
        self, state: ShowState, surface: pygame.Surface, top: int | None = None
    ) -> None:
        if state.captions == "off" or self.captions is None:
            return
        key = state.phase.value
        if state.act_view is not None and state.act_view.caption:
            key = state.act_view.caption
        text = self.captions.get(state.captions, key)
        if not text:
            return
        w, h = self.size
        m = max(4, int(h * 0.03))
        px = int(h * 0.045)
        y = top if top is not None else int(h * 0.78)
        for line in self._wrap(text, px, int(w * 0.62) if top is not None else w - 2 * m):
            s = self._text(line, px, WHITE)
            x = m if top is not None else (w - s.get_width()) // 2
            y = self._blit_panel(surface, s, x, y)

    def _draw_cpu_gauge(self, state: ShowState, surface: pygame.Surface) -> None:
        w, h = self.size
        m = max(4, int(h * 0.03))
        work, throttled = summary.cpu_figures(state)
        panel_h = int(h * 0.2)
        top = h - panel_h
        surface.fill(PANEL, (0, top, w, panel_h))
        bar = pygame.Rect(m, top + m // 2, w - 2 * m, max(4, int(h * 0.06)))
        surface.fill(SEG_FREE, bar)
        surface.fill(SEG_ANON, (bar.x, bar.y, int(bar.width * work), bar.height))
        px = int(h * 0.045)
        y = bar.bottom + m // 2
        a = self._text(f"work {100 * work:.0f}% of full speed", px, WHITE)
        surface.blit(a, (m, y))
        b = self._text("CPU quota, no memory limit", px, GREY)
        surface.blit(b, (w - m - b.get_width(), y))
        y += a.get_height() + m // 4
        c = self._text(f"throttled in {100 * throttled:.0f}% of the periods so far", px, GREY)
        surface.blit(c, (m, y))

    def _draw_message(self, state: ShowState, surface: pygame.Surface) -> None:
        w, h = self.size
        notes = []
        for phase, reason in state.skipped:
            note = self._word(state, f"skipped_{phase.value}")
            notes.append(note or f"{reason}: {phase.value} skipped")
        if state.message:
            notes.append(state.message)
        if state.act_view is not None and state.act_view.note:
            notes.append(state.act_view.note)
        y = int(h * 0.62) if state.phase not in (Phase.OOM, Phase.FINALE) else int(h * 0.9)
        for note in notes:
            s = self._text(note, int(h * 0.045), (255, 230, 140))
            y = self._blit_panel(surface, s, (w - s.get_width()) // 2, y)

    def _draw_gauges(self, state: ShowState, surface: pygame.Surface) -> None:
        """One stacked bar: [anon | cache | free RAM] [swap used | free swap], figures under.
        A CPU gauge (state.gauge) has no memory to show: its bar is the work rate against
        full speed, and the share of periods throttled under it."""
        if state.gauge == "cpu":
            self._draw_cpu_gauge(state, surface)
            return
        w, h = self.size
        m = max(4, int(h * 0.03))
        snap = state.snapshot
        anon, cache, swap = (
            max(0, snap.anon_bytes),
            max(0, snap.cache_bytes),
            max(0, snap.swap_bytes),
        )
        ram_lim = max(snap.ram_limit, anon + cache, 1)
        swap_lim = max(snap.swap_limit, swap)
        panel_h = int(h * 0.2)
        top = h - panel_h
        surface.fill(PANEL, (0, top, w, panel_h))
        bar = pygame.Rect(m, top + m // 2, w - 2 * m, max(4, int(h * 0.06)))
        total = ram_lim + swap_lim
        ram_w = bar.width * ram_lim // total
        x = bar.x

        def seg(nbytes: int, color: RGB, limit_w: int, limit: int) -> None:
            nonlocal x
            sw = min(limit_w, limit_w * nbytes // max(1, limit))
            if sw > 0:
                surface.fill(color, (x, bar.y, sw, bar.height))
            x += sw

        surface.fill(SEG_FREE, (bar.x, bar.y, ram_w, bar.height))
        seg(anon, SEG_ANON, ram_w, ram_lim)
        seg(cache, SEG_CACHE, max(0, bar.x + ram_w - x), max(1, ram_lim - anon))
        if swap_lim > 0:
            sx = bar.x + ram_w
            surface.fill(SEG_SWAP_FREE, (sx, bar.y, bar.width - ram_w, bar.height))
            x = sx
            seg(swap, SEG_SWAP, bar.width - ram_w, swap_lim)
            surface.fill(WHITE, (sx - 1, bar.y - m // 4, max(2, h // 360), bar.height + m // 2))
        px = int(h * 0.045)
        # with lanes, the anonymous memory is several processes', not one hog's
        owner = "anon" if state.lanes else "hog"
        ram_txt = f"RAM {fmt_mib(anon)} {owner} + {fmt_mib(cache)} cache / {fmt_mib(ram_lim)} MiB"
        swap_txt = f"swap {fmt_mib(swap)} / {fmt_mib(swap_lim)} MiB" if swap_lim > 0 else "no swap"
        y = bar.bottom + m // 2
        a = self._text(ram_txt, px, WHITE)
        surface.blit(a, (m, y))
        b = self._text(swap_txt, px, (215, 170, 255))
        surface.blit(b, (w - m - b.get_width(), y))
        y += a.get_height() + m // 4
        rate = state.fill_rate if math.isfinite(state.fill_rate) else 0.0
        stall = state.stall if math.isfinite(state.stall) else 0.0
        line = (
            f"fill {rate / MiB:.0f} MiB/s    PSI some {100 * min(1.0, max(0.0, stall)):.0f}%"
            f"  full {100 * self._psi_full:.0f}%"
        )
        c = self._text(line, px, GREY)
        surface.blit(c, (m, y))
