"""The terminal output's frame as pixels (`beep-av render --style terminal`).

`TerminalOutput.compose` gives a frame in three parts: the escapes before the
picture, the picture's pixels (two a cell, under "▀" half blocks) and the escapes
after it (the text lines, the boxes). `Cells` is a grid of characters with foreground
and background colours that takes the picture and reads the escapes Beep writes
(cursor position, erase, SGR colours: 16, 256 and truecolor); `CellPainter` draws
the grid in a monospace font. No terminal, no clock: the same frame gives the same
pixels."""

from __future__ import annotations

import re

import numpy as np
import pygame

DEFAULT_FG = (204, 204, 204)
DEFAULT_BG = (0, 0, 0)
# xterm's 16 colours
ANSI16 = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0),
    (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0),
    (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip
BLOCKS = {"█": (0.0, 1.0), "▀": (0.0, 0.5), "▄": (0.5, 1.0)}  # drawn as rectangles
MONO_FONTS = "dejavusansmono,notosansmono,liberationmono,freemono,monospace"

_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|([\x00-\x1f])|([^\x00-\x1f\x1b]+)")


def xterm256(n: int) -> tuple[int, int, int]:
    """The colour of xterm's 256-colour index `n`."""
    if n < 16:
        return ANSI16[n]
    if n < 232:
        n -= 16
        steps = (0, 95, 135, 175, 215, 255)
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


class Cells:
    """A terminal's screen: `ch` (rows, cols) characters, `fg` and `bg` (rows, cols, 3)."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.ch = np.full((rows, cols), " ", dtype="<U1")
        self.fg = np.empty((rows, cols, 3), dtype=np.uint8)
        self.bg = np.empty((rows, cols, 3), dtype=np.uint8)
        self.clear()
        self._reset_pen()
        self.y = self.x = 0

    def _reset_pen(self) -> None:
        self.pen_fg: tuple[int, int, int] = DEFAULT_FG
        self.pen_bg: tuple[int, int, int] = DEFAULT_BG
        self.bold = False

    def clear(self) -> None:
        self.ch[:] = " "
        self.fg[:] = DEFAULT_FG
        self.bg[:] = DEFAULT_BG

    def picture(self, pixels: np.ndarray) -> None:
        """Half blocks from the top left: (2 x rows, cols, 3) RGB, two pixels a cell."""
        rows = min(self.rows, pixels.shape[0] // 2)
        cols = min(self.cols, pixels.shape[1])
        self.ch[:rows, :cols] = "▀"
        self.fg[:rows, :cols] = pixels[0 : 2 * rows : 2, :cols]
        self.bg[:rows, :cols] = pixels[1 : 2 * rows : 2, :cols]

    def feed(self, text: str) -> None:
        """Carry out the escapes and characters of `text` (the subset Beep writes)."""
        for m in _TOKEN.finditer(text):
            params, final, ctrl, chars = m.groups()
            if chars is not None:
                self._put(chars)
            elif final is not None:
                self._escape(params, final)
            elif ctrl == "\n":
                self.y, self.x = min(self.rows - 1, self.y + 1), 0
            elif ctrl == "\r":
                self.x = 0

    def _put(self, chars: str) -> None:
        for c in chars:
            if self.x >= self.cols:  # no wrap: Beep never writes past the last column
                return
            if 0 <= self.y < self.rows:
                self.ch[self.y, self.x] = c
                self.fg[self.y, self.x] = self._shown_fg()
                self.bg[self.y, self.x] = self.pen_bg
            self.x += 1

    def _shown_fg(self) -> tuple[int, int, int]:
        if self.bold and self.pen_fg in ANSI16[:8]:
            return ANSI16[ANSI16.index(self.pen_fg) + 8]  # bold brightens the 8 colours
        return self.pen_fg

    def _escape(self, params: str, final: str) -> None:
        nums = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
        if final == "H":
            row = (nums[0] if nums else 1) or 1
            col = (nums[1] if len(nums) > 1 else 1) or 1
            self.y, self.x = row - 1, col - 1
        elif final == "K" and 0 <= self.y < self.rows:
            self.ch[self.y, self.x :] = " "
            self.fg[self.y, self.x :] = DEFAULT_FG
            self.bg[self.y, self.x :] = self.pen_bg
        elif final == "J" and (nums[:1] == [2]):
            self.clear()
        elif final == "m":
            self._sgr(nums or [0])

    def _sgr(self, nums: list[int]) -> None:
        i = 0
        while i < len(nums):
            n = nums[i]
            if n == 0:
                self._reset_pen()
            elif n == 1:
                self.bold = True
            elif n == 22:
                self.bold = False
            elif 30 <= n <= 37:
                self.pen_fg = ANSI16[n - 30]
            elif 90 <= n <= 97:
                self.pen_fg = ANSI16[n - 90 + 8]
            elif 40 <= n <= 47:
                self.pen_bg = ANSI16[n - 40]
            elif 100 <= n <= 107:
                self.pen_bg = ANSI16[n - 100 + 8]
            elif n == 39:
                self.pen_fg = DEFAULT_FG
            elif n == 49:
                self.pen_bg = DEFAULT_BG
            elif n in (38, 48) and i + 1 < len(nums):
                if nums[i + 1] == 2 and i + 4 < len(nums):
                    colour = (nums[i + 2] & 255, nums[i + 3] & 255, nums[i + 4] & 255)
                    i += 4
                elif nums[i + 1] == 5 and i + 2 < len(nums):
                    colour = xterm256(nums[i + 2] & 255)
                    i += 2
                else:
                    break
                if n == 38:
                    self.pen_fg = colour
                else:
                    self.pen_bg = colour
            i += 1


class CellPainter:
    """Draws `Cells` into a surface of `size` pixels: cells of a monospace font's
    shape, the grid centred, block characters as exact rectangles."""

    def __init__(self, size: tuple[int, int], cols: int, rows: int) -> None:
        if not pygame.font.get_init():
            pygame.font.init()
        self.size = size
        self.cols, self.rows = cols, rows
        self.cw = max(1, size[0] // cols)
        self.chh = max(2, size[1] // rows)
        self.ox = (size[0] - self.cw * cols) // 2
        self.oy = (size[1] - self.chh * rows) // 2
        path = pygame.font.match_font(MONO_FONTS)
        self.font = pygame.font.Font(path, max(6, int(self.chh * 0.8)))
        self._glyphs: dict[tuple[str, tuple, tuple], pygame.Surface] = {}

    def draw(self, cells: Cells, surface: pygame.Surface) -> None:
        cw, chh = self.cw, self.chh
        top = np.where((cells.ch == "▀")[..., None], cells.fg, cells.bg)
        bottom = cells.bg
        half = chh // 2
        img = np.zeros((self.size[1], self.size[0], 3), dtype=np.uint8)
        grid = img[self.oy : self.oy + chh * self.rows, self.ox : self.ox + cw * self.cols]
        g = grid.reshape(self.rows, chh, self.cols, cw, 3)
        g[:, :half] = top[:, None, :, None, :]
        g[:, half:] = bottom[:, None, :, None, :]
        pygame.surfarray.blit_array(surface, img.swapaxes(0, 1))
        # the characters other than blank and "▀" (already drawn by the colours)
        ys, xs = np.nonzero((cells.ch != " ") & (cells.ch != "▀"))
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            c = str(cells.ch[y, x])
            fg = tuple(int(v) for v in cells.fg[y, x])
            px, py = self.ox + x * cw, self.oy + y * chh
            span = BLOCKS.get(c)
            if span is not None:
                y0, y1 = int(span[0] * chh), int(span[1] * chh)
                surface.fill(fg, pygame.Rect(px, py + y0, cw, y1 - y0))
                continue
            bg = tuple(int(v) for v in cells.bg[y, x])
            glyph = self._glyph(c, fg, bg)
            surface.blit(glyph, (px + (cw - glyph.get_width()) // 2, py))

    def _glyph(self, c: str, fg: tuple, bg: tuple) -> pygame.Surface:
        key = (c, fg, bg)
        got = self._glyphs.get(key)
        if got is None:
            got = self.font.render(c, True, fg, bg)
            if got.get_width() > self.cw or got.get_height() > self.chh:
                w, h = min(got.get_width(), self.cw), min(got.get_height(), self.chh)
                got = got.subsurface(pygame.Rect(0, 0, w, h)).copy()
            if len(self._glyphs) > 4096:
                self._glyphs.clear()
            self._glyphs[key] = got
        return got
