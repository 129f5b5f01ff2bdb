"""A recording as one PNG timeline, drawn with pygame (no display needed).

Stacked areas over time (hog anon in RAM, page cache, swap) against the stage limits,
the PSI stall share on a second axis, phase bands with their names, the kill marked
with the victim and the detection latency, a title with stage, kernel and date.
Many samples are reduced to one value per pixel column (max of each stacked layer,
min/max of the stall) so an hour at 50 Hz draws as fast as ten seconds."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from beep_av.errors import BadInput
from beep_av.model import MiB, Phase
from beep_av.recording import Recording

# Phase band colours (RGB). Tests find band edges by these exact pixels.
PHASE_COLOURS: dict[Phase, tuple[int, int, int]] = {
    Phase.CALM: (86, 150, 96),
    Phase.FILLING: (70, 120, 190),
    Phase.EVICTING: (226, 178, 52),
    Phase.SWAPPING: (222, 110, 44),
    Phase.OOM: (205, 38, 38),
    Phase.FINALE: (128, 70, 170),
}
BACKGROUND = (18, 18, 22)
PLOT_BG = (28, 29, 34)
GRID = (52, 54, 62)
TEXT = (225, 225, 230)
BAND_TEXT = (16, 16, 20)
ANON_COLOUR = (214, 64, 64)  # hog anonymous memory in RAM
CACHE_COLOUR = (64, 140, 210)  # page cache
SWAP_COLOUR = (160, 100, 210)  # anonymous memory in swap
RAM_LIMIT_COLOUR = (240, 240, 240)
TOTAL_LIMIT_COLOUR = (150, 150, 160)
STALL_COLOUR = (250, 220, 60)
FULL_COLOUR = (255, 140, 40)  # PSI full: every task stalled at once
KILL_COLOUR = (255, 40, 200)  # the kill marker: a colour no area or band uses
BYSTANDER_COLOUR = (255, 200, 90)  # a kill of another process (not the hog)
QUOTA_COLOUR = (170, 170, 180)  # the throttle act's quota steps

MIN_SIZE = (320, 240)
MAX_SIZE = (8192, 8192)
_SIZE_RE = re.compile(r"^\s*([0-9]{1,6})\s*[xX]\s*([0-9]{1,6})\s*$")


def parse_wxh(text: str, what: str = "picture", example: str = "1600x900") -> tuple[int, int]:
    """`1600x900` -> (1600, 900), unchecked; `what` and `example` word the error
    (render's videos have limits of their own). Raises BadInput."""
    m = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise BadInput(f"--size: {text!r} is not a {what} size (use e.g. {example})")
    return int(m.group(1)), int(m.group(2))


def parse_size_arg(text: str) -> tuple[int, int]:
    """`1600x900` -> (1600, 900) pixels. Raises BadInput for anything else."""
    return _check_size(parse_wxh(text))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BadInput(f"--size: {size!r} is not a picture size (use e.g. 1600x900)") from None
    if not (MIN_SIZE[0] <= w <= MAX_SIZE[0] and MIN_SIZE[1] <= h <= MAX_SIZE[1]):
        raise BadInput(
            f"--size: {w}x{h} is outside {MIN_SIZE[0]}x{MIN_SIZE[1]}..{MAX_SIZE[0]}x{MAX_SIZE[1]}"
        )
    return w, h


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where things go on the picture (pixels) and the time/byte scales."""

    width: int
    height: int
    left: int  # plot area
    right: int
    top: int
    bottom: int
    band_top: int  # phase band strip, just above the plot
    band_bottom: int
    t_min: float  # seconds at the left edge
    t_max: float  # seconds at the right edge
    y_max: float  # bytes at the top of the plot

    def x_of(self, t: float) -> float:
        """Picture x (pixels, fractional) of show time `t` (s)."""
        return self.left + (t - self.t_min) / (self.t_max - self.t_min) * (self.right - self.left)

    def y_of(self, nbytes: float) -> float:
        """Picture y of a byte count on the left axis."""
        return self.bottom - nbytes / self.y_max * (self.bottom - self.top)

    def y_of_share(self, share: float) -> float:
        """Picture y of a share in [0, 1] on the right (stall) axis."""
        return self.bottom - share * (self.bottom - self.top)


def layout(rec: Recording, size: tuple[int, int] = (1600, 900)) -> Layout:
    """The layout `render_report` uses for `rec` at `size` (for tests and tools)."""
    w, h = _check_size(size)
    s = rec.samples
    scale = max(h / 900, 0.5)
    t_max = max(rec.duration, float(s["t"].max()))
    t_min = min(0.0, float(s["t"].min()))
    if t_max - t_min < 1e-6:
        t_max = t_min + 1.0
    limits = s["ram_limit"] + s["swap_limit"]
    stacked = s["ram"] + s["cache"] + s["swap"]
    y_max = float(max(int(limits.max()), int(stacked.max()), int(s["usage"].max()), MiB)) * 1.08
    band_top = int(56 * scale)
    band_h = max(14, int(26 * scale))
    return Layout(
        width=w,
        height=h,
        left=int(max(64, 90 * scale)),
        right=w - int(max(56, 80 * scale)),
        top=band_top + band_h + 4,
        bottom=h - int(max(44, 70 * scale)),
        band_top=band_top,
        band_bottom=band_top + band_h,
        t_min=t_min,
        t_max=t_max,
        y_max=y_max,
    )


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


# ---------------------------------------------------------------- reduction


def _columns(lay: Layout, t: np.ndarray, values: list[np.ndarray]) -> tuple:
    """Per pixel column of the plot: max of each array in `values` (samples falling in
    the column, or interpolated where a column has none), and the column's x."""
    n_cols = lay.right - lay.left
    xs = np.arange(n_cols)
    col_t = lay.t_min + (xs + 0.5) / n_cols * (lay.t_max - lay.t_min)
    col = ((t - lay.t_min) / (lay.t_max - lay.t_min) * n_cols).astype(np.int64)
    col = np.clip(col, 0, n_cols - 1)
    order_ok = t.size < 2 or bool((np.diff(t) >= 0).all())
    if not order_ok:
        idx = np.argsort(t, kind="stable")
        t, col = t[idx], col[idx]
        values = [v[idx] for v in values]
    starts = np.flatnonzero(np.diff(col, prepend=-1))
    present = col[starts]
    out = []
    for v in values:
        v = v.astype(np.float64)
        # between samples the stage holds its last value (step), not a ramp
        at = np.searchsorted(t, col_t, side="right") - 1
        y = np.where(at >= 0, v[np.clip(at, 0, None)], 0.0)
        y[col_t > t[-1]] = np.nan  # after the last sample: nothing drawn
        y[present] = np.maximum.reduceat(v, starts)
        out.append(y)
    return out


def _stall_share(t: np.ndarray, psi_us: np.ndarray, every: float = 0.0) -> np.ndarray:
    """PSI "some" stall share of each sample interval, from the total counter's deltas.
    `every` > 0: the show read the counter only that often (the header's `psi_every`),
    so each rise is spread over the samples since the counter last moved."""
    if every > 0 and t.size > 1:
        moved = np.flatnonzero(np.diff(psi_us) != 0) + 1
        share = np.zeros(t.size)
        last, held = 0, 0.0
        for i in moved:
            dt = t[i] - t[last]
            if last > 0 and dt > 0:  # from the first reading on: its value is the baseline
                held = min(1.0, max(0.0, (psi_us[i] - psi_us[last]) / 1e6 / dt))
                share[last + 1 : i + 1] = held
            last = i
        if last > 0 and t[-1] - t[last] < 1.5 * every:  # not read again yet: held
            share[last + 1 :] = held
        return share
    share = np.zeros(t.size)
    if t.size > 1:
        dt = np.diff(t)
        d = np.diff(psi_us.astype(np.float64)) / 1e6
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(dt > 0, d / dt, 0.0)
        s = np.nan_to_num(s)
        # a share above 1 is impossible (stall time <= wall time): the counter was first
        # read then (it starts at 0 in the first sample), or it was reset; so is one below 0
        s[(s > 1.5) | (s < 0)] = 0.0
        share[1:] = np.clip(s, 0.0, 1.0)
    return share


# ---------------------------------------------------------------- drawing


def render_report(rec: Recording, out: str, size: tuple[int, int] = (1600, 900)) -> None:
    """Draw `rec` as a PNG picture of `size` pixels at path `out`. Raises BadInput for a
    bad size or a path Beep may not write (outfiles' rules), before drawing. The picture
    takes its name only once whole: a failed write leaves nothing, an old one intact."""
    from beep_av import outfiles

    w, h = _check_size(size)
    label = f"-o {out}"
    outfiles.check_file(out, label)
    surf = draw(rec, (w, h))
    import pygame

    try:
        with outfiles.open_file(out, label, "wb", at_close=True) as f:
            pygame.image.save(surf, f.f, "report.png")  # the namehint forces PNG
    except (OSError, pygame.error) as e:
        raise BadInput(f"{label}: cannot write ({getattr(e, 'strerror', None) or e})") from None


def draw(rec: Recording, size: tuple[int, int] = (1600, 900)):
    """The report as a pygame.Surface (see render_report)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout
    import pygame

    if not pygame.font.get_init():
        pygame.font.init()
    lay = layout(rec, size)
    scale = max(lay.height / 900, 0.5)
    font = pygame.font.Font(None, max(12, int(22 * scale)))
    small = pygame.font.Font(None, max(11, int(18 * scale)))
    big = pygame.font.Font(None, max(14, int(32 * scale)))

    surf = pygame.Surface((lay.width, lay.height))
    surf.fill(BACKGROUND)
    pw, ph = lay.right - lay.left, lay.bottom - lay.top
    s = rec.samples
    t = s["t"]
    ram = s["ram"].astype(np.float64)
    cache_top = ram + s["cache"]
    total = cache_top + s["swap"]
    # a CPU act fills no memory: its left axis is the work against full speed, its right
    # one the share of periods throttled so far (the samples' stall), not PSI
    cpu = rec.gauge == "cpu"
    every = rec.header.get("psi_every")
    every = float(every) if isinstance(every, int | float) and every > 0 else 0.0
    stall = s["stall"].astype(np.float64) if cpu else _stall_share(t, s["psi_some_us"], every)
    stall = np.clip(np.nan_to_num(stall), 0.0, 1.0)
    c_ram, c_cache, c_total, c_stall, c_ramlim, c_totlim = _columns(
        lay, t, [ram, cache_top, total, stall, s["ram_limit"], s["ram_limit"] + s["swap_limit"]]
    )
    c_stall_min = -_columns(lay, t, [-stall])[0]
    full = None if cpu else _stall_share(t, s["psi_full_us"], every)
    c_full = _columns(lay, t, [np.clip(full, 0.0, 1.0)])[0] if full is not None else None

    # Stacked areas, column by column in one numpy pass: y grows downwards, an area
    # covers the rows below its top.
    rows = np.arange(ph)[None, :]

    def top_row(v: np.ndarray) -> np.ndarray:
        y = (lay.bottom - np.nan_to_num(v, nan=0.0) / lay.y_max * ph) - lay.top
        return np.where(np.isnan(v), ph, np.clip(np.round(y), 0, ph))[:, None]

    img = np.empty((pw, ph, 3), np.uint8)
    img[:] = PLOT_BG
    for v, colour in ((c_total, SWAP_COLOUR), (c_cache, CACHE_COLOUR), (c_ram, ANON_COLOUR)):
        img[rows >= top_row(v)] = colour
    # grid lines under nothing: drawn into the background rows only
    plot = pygame.surfarray.make_surface(img)
    surf.blit(plot, (lay.left, lay.top))

    # axes and grid
    step_mib = _nice_step(lay.y_max / MiB, 8)
    v = 0.0
    while not cpu and v * MiB <= lay.y_max:
        y = round(lay.y_of(v * MiB))
        pygame.draw.line(surf, GRID, (lay.left - 5, y), (lay.left - 1, y))
        lab = small.render(f"{v:g}", True, TEXT)
        surf.blit(lab, (lay.left - 8 - lab.get_width(), y - lab.get_height() // 2))
        v += step_mib
    for pct in (0, 25, 50, 75, 100) if cpu else ():
        y = round(lay.y_of_share(pct / 100))
        pygame.draw.line(surf, GRID, (lay.left - 5, y), (lay.left - 1, y))
        lab = small.render(f"{pct}%", True, TEXT)
        surf.blit(lab, (lay.left - 8 - lab.get_width(), y - lab.get_height() // 2))
    step_t = _nice_step(lay.t_max - lay.t_min, 12)
    v = math.ceil(lay.t_min / step_t) * step_t
    while v <= lay.t_max + 1e-9:
        x = round(lay.x_of(v))
        pygame.draw.line(surf, GRID, (x, lay.bottom + 1), (x, lay.bottom + 5))
        lab = small.render(f"{v:g}", True, TEXT)
        surf.blit(lab, (x - lab.get_width() // 2, lay.bottom + 7))
        v += step_t
    for pct in (0, 25, 50, 75, 100):
        y = round(lay.y_of_share(pct / 100))
        pygame.draw.line(surf, STALL_COLOUR, (lay.right + 1, y), (lay.right + 5, y))
        lab = small.render(f"{pct}%", True, STALL_COLOUR)
        surf.blit(lab, (lay.right + 8, y - lab.get_height() // 2))
    pygame.draw.rect(surf, GRID, (lay.left - 1, lay.top - 1, pw + 2, ph + 2), 1)
    ax = small.render("work" if cpu else "MiB", True, TEXT)
    surf.blit(ax, (lay.left - 8 - ax.get_width(), lay.top - ax.get_height() - 2))
    ax = small.render("time (s)", True, TEXT)
    surf.blit(ax, (lay.right - ax.get_width(), lay.bottom + 7 + ax.get_height()))
    ax = small.render("throttled" if cpu else "PSI stall", True, STALL_COLOUR)
    ax_x = min(lay.right + 8, lay.width - ax.get_width() - 4)
    surf.blit(ax, (ax_x, lay.top - ax.get_height() - 2))

    # the stage limits (they may change if the presenter re-staged: drawn per column)
    for lim, colour in ((c_totlim, TOTAL_LIMIT_COLOUR), (c_ramlim, RAM_LIMIT_COLOUR)):
        _polyline(surf, lay, lim, lambda b: lay.y_of(b), colour, dashed=True)

    # stall share: min..max per column, joined to the neighbour so bursts read as a trace
    prev_hi = prev_lo = math.nan
    for x in range(pw):
        hi, lo = c_stall[x], c_stall_min[x]
        if math.isnan(hi):
            prev_hi = prev_lo = math.nan
            continue
        top, low = hi, lo
        if not math.isnan(prev_hi):
            top, low = max(hi, prev_lo), min(lo, prev_hi)
        y0, y1 = round(lay.y_of_share(top)) - 1, round(lay.y_of_share(low))  # 2 px at least
        pygame.draw.line(surf, STALL_COLOUR, (lay.left + x, y0), (lay.left + x, y1))
        prev_hi, prev_lo = hi, lo

    if c_full is not None and np.nanmax(np.nan_to_num(c_full)) > 0:
        _polyline(surf, lay, c_full, lay.y_of_share, FULL_COLOUR)
    _draw_bands(surf, lay, rec, small, {Phase.FILLING: "throttling"} if cpu else {})
    _draw_marks(surf, lay, rec, small)
    counted = _draw_counters(surf, lay, rec, small)
    _draw_kill(surf, lay, rec, font)
    if cpu:
        _draw_quotas(surf, lay, rec, small)
    if rec.lanes:
        _draw_lanes(surf, lay, rec, small)

    # title and legend
    hdr = rec.header
    title = f"beep-av  |  {hdr.get('stage', '?')} stage"
    if cpu:
        steps = [q for q in hdr.get("steps") or () if isinstance(q, int | float)]
        lims = f"{hdr.get('workers', '?')} workers, CPU quota"
        lims += f" 100% to {min(steps):g}%" if steps else " lowered"
        lims = f"{lims}, no memory limit"
    else:
        lims = f"{int(s['ram_limit'].max()) // MiB} MiB RAM"
        lims += (
            f" + {int(s['swap_limit'].max()) // MiB} MiB swap"
            if s["swap_limit"].max()
            else ", no swap"
        )
    title += f"  |  {lims}  |  kernel {hdr.get('kernel', '?')}  |  {hdr.get('date', '?')}"
    head = big.render(title, True, TEXT)
    room = lay.width - lay.left - int(12 * scale)
    if head.get_width() > room:  # a long title (an act's) is drawn smaller, not cut
        head = pygame.transform.smoothscale(
            head, (room, max(1, head.get_height() * room // head.get_width()))
        )
    surf.blit(head, (lay.left, int(14 * scale)))
    x = lay.left
    y = lay.height - font.get_height() - int(6 * scale)
    legend = (
        (
            ("worker: work against its full speed", LANE_COLOURS[0]),
            ("periods throttled so far", STALL_COLOUR),
            ("quota step", QUOTA_COLOUR),
        )
        if cpu
        else (
            ("hog anon in RAM", ANON_COLOUR),
            ("page cache", CACHE_COLOUR),
            ("swap", SWAP_COLOUR),
            ("RAM limit", RAM_LIMIT_COLOUR),
            ("RAM + swap limit", TOTAL_LIMIT_COLOUR),
            ("PSI some stall", STALL_COLOUR),
            ("PSI full", FULL_COLOUR),
            ("kill", KILL_COLOUR),
        )
    )
    for name, colour in (*legend, *counted):
        pygame.draw.rect(surf, colour, (x, y + 3, 14, font.get_height() - 8))
        lab = font.render(name, True, TEXT)
        surf.blit(lab, (x + 20, y))
        x += 20 + lab.get_width() + 24
    return surf


LANE_COLOURS = ((255, 140, 90), (110, 220, 140), (110, 180, 255), (250, 215, 80))


def _draw_lanes(surf, lay: Layout, rec: Recording, font) -> None:
    """An act's processes (`lanes` lines), one trace each in its colour: RSS + swap on
    the MiB axis, or (throttle) the work rate as a share of its own full speed (of the
    fastest before that is measured) on the share axis; each named at its last point."""
    import pygame

    names: dict[str, int] = {}
    series: dict[str, list[tuple[float, float]]] = {}
    rate = any(x.get("work_rate") is not None for row in rec.lanes for x in row["lanes"])
    top = max([x.get("work_rate") or 0.0 for row in rec.lanes for x in row["lanes"]] + [1.0])
    dead: set[str] = set()
    for row in rec.lanes:
        t = float(row["t"])
        for x in row["lanes"]:
            name = str(x.get("name"))
            names.setdefault(name, int(x.get("colour") or 0))
            full = x.get("full_rate") or top
            v = (x.get("work_rate") or 0.0) / full if rate else (x.get("rss", 0) + x.get("swap", 0))
            v = min(1.0, max(0.0, v)) if rate else v
            pts = series.setdefault(name, [])
            if x.get("alive", True):
                pts.append((t, float(v)))
            elif name not in dead:  # its trace ends where it died (or was released)
                dead.add(name)
                pts.append((t, pts[-1][1] if pts else float(v)))
    # a lane is written when it changes: one still alive at the end holds its last value
    end = float(rec.samples["t"][-1]) if len(rec) else 0.0
    for name, pts in series.items():
        if name not in dead and pts and pts[-1][0] < end:
            pts.append((end, pts[-1][1]))
    placed: list = []  # the names drawn so far: a name that would cover one goes below
    for name, pts in series.items():
        colour = LANE_COLOURS[names[name] % len(LANE_COLOURS)]
        y_of = lay.y_of_share if rate else lay.y_of
        xy = [(lay.x_of(t), y_of(v)) for t, v in pts]
        if len(xy) > 1:
            pygame.draw.lines(surf, colour, False, xy, 2)
        lab = font.render(name, True, colour)
        x, y = xy[-1]
        box = lab.get_rect(topleft=(min(x + 4, lay.right - lab.get_width()), y - lab.get_height()))
        while box.collidelist(placed) >= 0:
            box.move_ip(0, lab.get_height())
        placed.append(box)
        surf.blit(lab, box)


def _polyline(surf, lay: Layout, v: np.ndarray, y_of, colour, dashed: bool = False) -> None:
    import pygame

    for x in range(len(v)):
        if math.isnan(v[x]) or v[x] <= 0 or (dashed and (x // 6) % 2):
            continue
        y = round(y_of(v[x]))
        if lay.top <= y <= lay.bottom:
            pygame.draw.line(surf, colour, (lay.left + x, y), (lay.left + x + 1, y))


def _draw_quotas(surf, lay: Layout, rec: Recording, font) -> None:
    """The throttle act's quota steps (`act` lines `quota`): a thin line and its quota."""
    import pygame

    for e in rec.act_events:
        if e.get("event") != "quota" or not isinstance(e.get("t"), int | float):
            continue
        x = round(lay.x_of(float(e["t"])))
        pygame.draw.line(surf, QUOTA_COLOUR, (x, lay.top), (x, lay.bottom), 1)
        q = e.get("quota_pct")
        text = "no quota" if q is None else f"quota {q:g}%"
        surf.blit(font.render(text, True, QUOTA_COLOUR), (x + 4, lay.top + 4))


# an act's counters, from its events' fields: (label, colour, drawn as a rate per second)
COUNTERS = {
    "refaults": ("refaults/s", (120, 230, 230), True),
    "held_count": ("times held at the soft limit (memory.events)", (230, 120, 230), False),
}


def counter_series(rec: Recording, key: str, rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(t, value) of an act's counter `key` from the events that carry it: the count,
    or with `rate` its rise per second between two events."""
    pts = sorted(
        (float(e["t"]), float(e[key]))
        for e in rec.act_events
        if isinstance(e.get(key), int | float) and not isinstance(e.get(key), bool)
        and isinstance(e.get("t"), int | float)
    )  # fmt: skip
    t = np.array([p[0] for p in pts], dtype=np.float64)
    v = np.array([p[1] for p in pts], dtype=np.float64)
    if not rate:
        return t, v
    if t.size < 2:
        return t[:0], v[:0]
    dt = np.diff(t)
    ok = dt > 0
    return t[1:][ok], np.clip(np.diff(v)[ok] / dt[ok], 0.0, None)


def _draw_counters(surf, lay: Layout, rec: Recording, font) -> list[tuple[str, tuple]]:
    """An act's counters (refaults per second, memory.high events) as lines on the
    share axis, each scaled to its own peak, which its label names. Returns their
    legend entries."""
    import pygame

    legend = []
    for key, (label, colour, rate) in COUNTERS.items():
        t, v = counter_series(rec, key, rate)
        if t.size < 2 or not np.nanmax(v) > 0:
            continue
        peak = float(np.nanmax(v))
        xs = [round(lay.x_of(x)) for x in t]
        ys = [round(lay.y_of_share(y / peak)) for y in v]
        pygame.draw.lines(surf, colour, False, list(zip(xs, ys, strict=True)), 2)
        text = f"{label}: peak {peak:,.0f}" if rate else f"{label}: {peak:,.0f}"
        lab = font.render(text, True, colour)
        x = min(xs[-1] + 4, lay.right - lab.get_width() - 4)
        surf.blit(lab, (max(lay.left + 4, x), max(lay.top + 2, ys[-1] - lab.get_height() - 2)))
        legend.append((text, colour))
    return legend


def _draw_marks(surf, lay: Layout, rec: Recording, font) -> None:
    """An act's events that carry a `mark` (its words for the timeline: a working set
    grown past RAM, a trigger fired, a hog held at memory.high): a thin line and the
    words, stacked down from the top so neighbours do not overlap."""
    import pygame

    row = 0
    for e in rec.act_events:
        mark, t = e.get("mark"), e.get("t")
        if not isinstance(mark, str) or not isinstance(t, int | float):
            continue
        x = round(lay.x_of(float(t)))
        pygame.draw.line(surf, QUOTA_COLOUR, (x, lay.top), (x, lay.bottom), 1)
        label = font.render(mark[:80], True, QUOTA_COLOUR)
        x = min(x + 4, lay.right - label.get_width() - 4)
        surf.blit(label, (x, lay.top + 28 + row * (label.get_height() + 4)))
        row = (row + 1) % 4


def _draw_bands(surf, lay: Layout, rec: Recording, font, names: dict | None = None) -> None:
    """One coloured band per entered phase, from its start to the next phase's; `names`
    renames a phase's band (throttle's filling is its throttling)."""
    import pygame

    phases = rec.phases()
    if not phases:  # a recording without phase lines: derive them from the samples
        seen: dict[Phase, float] = {}
        for i, tt in enumerate(rec.samples["t"].tolist()):
            seen.setdefault(rec.phase_at(i), tt)
        phases = sorted(seen.items(), key=lambda pt: pt[1])
    h = lay.band_bottom - lay.band_top
    for k, (phase, t0) in enumerate(phases):
        t1 = phases[k + 1][1] if k + 1 < len(phases) else lay.t_max
        x0 = math.ceil(lay.x_of(t0)) if k else lay.left
        x1 = math.ceil(lay.x_of(t1))
        if x1 <= x0:
            x1 = x0 + 1  # a phase shorter than a pixel still shows
        x1 = min(x1, lay.right)
        pygame.draw.rect(surf, PHASE_COLOURS[phase], (x0, lay.band_top, x1 - x0, h))
        lab = font.render((names or {}).get(phase, phase.value), True, BAND_TEXT)
        if lab.get_width() + 8 <= x1 - x0:
            surf.blit(lab, (x0 + 4, lay.band_top + (h - lab.get_height()) // 2 + 1))


def _draw_kill(surf, lay: Layout, rec: Recording, font) -> None:
    import pygame

    for i, b in enumerate(rec.bystanders[:3]):  # kills of other processes: thin, labelled
        x = round(lay.x_of(float(b["t"])))
        pygame.draw.line(surf, BYSTANDER_COLOUR, (x, lay.top), (x, lay.bottom), 1)
        who = f"{b.get('pid')} ({b.get('name', '?')})" if b.get("pid") else "a process"
        lab = font.render(f"the kernel killed {who}, not the hog", True, BYSTANDER_COLOUR)
        bx = x - lab.get_width() - 8 if x + 8 + lab.get_width() > lay.right else x + 8
        y = lay.top + 30 + 22 * i
        pygame.draw.rect(
            surf, BACKGROUND, (bx - 4, y - 3, lab.get_width() + 8, lab.get_height() + 6)
        )
        surf.blit(lab, (bx, y))
    kill = rec.kill
    if kill is None:
        return
    x = round(lay.x_of(float(kill["t"])))
    pygame.draw.line(surf, KILL_COLOUR, (x, lay.top), (x, lay.bottom), 3)
    by = kill.get("detected_by") or []
    lat = kill.get("latency_ms")
    calibrated = isinstance(rec.header.get("kernel_clock"), dict)
    who = f"pid {kill.get('pid', '?')} ({kill.get('name', '?')})"
    if rec.header.get("stage") == "rehearsal":
        text = "rehearsal: nothing was killed"
    elif kill.get("oom") is False:
        text = f"{who} killed by a signal from user space: not an OOM kill"
    else:
        text = f"killed: {who}"
        if isinstance(lat, int | float) and not isinstance(lat, bool) and calibrated:
            text += f", detected in {lat:.1f} ms"
        else:
            text += ", latency unknown"
        if by:
            text += f" by {' + '.join(str(b) for b in by)}"
    lab = font.render(text, True, KILL_COLOUR)
    bx = x - lab.get_width() - 8 if x + 8 + lab.get_width() > lay.right else x + 8
    box = pygame.Rect(bx - 4, lay.top + 6, lab.get_width() + 8, lab.get_height() + 6)
    pygame.draw.rect(surf, BACKGROUND, box)
    surf.blit(lab, (bx, lay.top + 9))
