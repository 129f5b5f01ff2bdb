"""`--output framebuffer[:DEV]`: frames written straight into a Linux framebuffer device,
as `cat /dev/random > /dev/fb0` did, with the Scene's gauges and captions.

The Scene draws onto an off-screen XRGB8888 pygame surface; numpy converts it to the
device's pixel format (16 bpp RGB565, 24 bpp BGR in memory, 32 bpp XRGB8888) and writes
it into a MAP_SHARED mapping of the device file. Geometry comes from sysfs
(/sys/class/graphics/fbN/{virtual_size,bits_per_pixel,stride}).

Layers: `parse_geometry` and the `pack_*` converters are pure; `FramebufferOutput`
touches the device (and the console it sits on, for the cursor and blanking)."""

from __future__ import annotations

import mmap
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from beep_av.errors import CannotStage
from beep_av.model import ShowState
from beep_av.noise import Noise

FIX = "run from a text console; join the `video` group (or run as root)"

# ---------------------------------------------------------------- geometry (pure)


@dataclass(frozen=True)
class FbGeometry:
    """A framebuffer's memory layout: pixels, bits per pixel, bytes per row."""

    width: int  # pixels
    height: int  # pixels
    bpp: int  # bits per pixel: 16, 24 or 32
    stride: int  # bytes per row (>= width * bpp / 8)

    @property
    def nbytes(self) -> int:
        """Bytes of the mapping: stride * height."""
        return self.stride * self.height


SUPPORTED_BPP = (16, 24, 32)
MAX_SIDE = 16384  # a larger side is a broken sysfs, not a screen


def parse_geometry(virtual_size: str, bits_per_pixel: str, stride: str | None) -> FbGeometry:
    """Parse the sysfs texts ("1920,1080", "32", "7680") into a FbGeometry.

    `stride` may be None (old kernels lack the file): then width * bpp / 8.
    Raises CannotStage on malformed or unsupported values."""
    try:
        w_text, h_text = virtual_size.strip().split(",")
        width, height = int(w_text), int(h_text)
        bpp = int(bits_per_pixel.strip())
        row = int(stride.strip()) if stride is not None and stride.strip() else 0
    except ValueError:
        raise CannotStage(
            f"framebuffer: cannot read its geometry (virtual_size={virtual_size.strip()!r}, "
            f"bits_per_pixel={bits_per_pixel.strip()!r}); {FIX}"
        ) from None
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise CannotStage(f"framebuffer: implausible size {width}x{height}")
    if bpp not in SUPPORTED_BPP:
        raise CannotStage(
            f"framebuffer: {bpp} bits per pixel is not supported (16, 24 or 32); "
            "set a console mode with `fbset -depth 32`"
        )
    minimum = width * bpp // 8
    if row == 0:
        row = minimum
    if row < minimum:
        raise CannotStage(f"framebuffer: stride {row} is shorter than a row ({minimum} bytes)")
    return FbGeometry(width, height, bpp, row)


# ---------------------------------------------------------------- pixel packing (pure)


def pack_rgb565(xrgb: np.ndarray) -> np.ndarray:
    """uint32 0x00RRGGBB pixels -> uint16 RGB565 (top 5/6/5 bits of each channel)."""
    p = xrgb.astype(np.uint32, copy=False)
    out = ((p >> 8) & 0xF800) | ((p >> 5) & 0x07E0) | ((p >> 3) & 0x001F)
    return out.astype(np.uint16)


def unpack_rgb565(p: np.ndarray) -> np.ndarray:
    """uint16 RGB565 -> (..., 3) uint8 RGB with the low bits zero (for tests and readers)."""
    p = p.astype(np.uint32)
    r = (p >> 11) & 0x1F
    g = (p >> 5) & 0x3F
    b = p & 0x1F
    return np.stack([r << 3, g << 2, b << 3], axis=-1).astype(np.uint8)


def write_pixels(xrgb: np.ndarray, geometry: FbGeometry, dest: Any) -> None:
    """Write (H, W) uint32 0x00RRGGBB pixels into `dest` (a writable buffer of
    geometry.nbytes bytes laid out as the framebuffer), converting to its bpp.

    The picture is clipped to the framebuffer; rows are `stride` bytes apart."""
    g = geometry
    h = min(g.height, xrgb.shape[0])
    w = min(g.width, xrgb.shape[1])
    src = xrgb[:h, :w]
    rows = np.frombuffer(dest, dtype=np.uint8, count=g.nbytes).reshape(g.height, g.stride)
    if g.bpp == 32:
        # one strided copy: the surface is already XRGB8888 little-endian
        rows[:h, : w * 4].view(np.uint32)[:, :w] = src
    elif g.bpp == 16:
        rows[:h, : w * 2].view(np.uint16)[:, :w] = pack_rgb565(src)
    else:  # 24: bytes B, G, R in memory, which are the low three bytes of 0x00RRGGBB LE
        rows[:h, : w * 3].reshape(h, w, 3)[:] = src.view(np.uint8).reshape(h, w, 4)[:, :, :3]


def read_pixels(geometry: FbGeometry, data: Any) -> np.ndarray:
    """The inverse of write_pixels for tests: (H, W, 3) uint8 RGB read from `data`."""
    g = geometry
    rows = np.frombuffer(data, dtype=np.uint8, count=g.nbytes).reshape(g.height, g.stride)
    if g.bpp == 32:
        px = rows[:, : g.width * 4].copy().view(np.uint32)
        return np.stack([(px >> 16) & 255, (px >> 8) & 255, px & 255], axis=-1).astype(np.uint8)
    if g.bpp == 16:
        return unpack_rgb565(rows[:, : g.width * 2].copy().view(np.uint16))
    bgr = rows[:, : g.width * 3].reshape(g.height, g.width, 3)
    return bgr[:, :, ::-1].copy()


# ---------------------------------------------------------------- the output (adapter)


class Painter(Protocol):
    """What draws a frame: the Scene (beep_av.video.scene) or a test stand-in."""

    def draw(self, state: ShowState, noise: Noise, surface: Any) -> None: ...


HIDE_CURSOR = "\033[?25l"
SHOW_CURSOR = "\033[?25h"


def blank_sequence(minutes: int) -> str:
    """The console escape that sets screen blanking to `minutes` (0: never), as setterm."""
    return f"\033[9;{max(0, int(minutes))}]"


class FramebufferOutput:
    """Frames into a framebuffer device through a MAP_SHARED mapping.

    `device`: the device file (a regular file of the right size in tests).
    `sysfs`: the directory holding fbN/ (N from the device name, e.g. fb0).
    `painter`: draws each frame; default: the Scene at the framebuffer's size.
    `tty`: where the cursor/blanking escapes go; default sys.stdout, only if a tty."""

    def __init__(
        self,
        device: str = "/dev/fb0",
        sysfs: str = "/sys/class/graphics",
        *,
        fps: float = 30.0,
        lang: str = "en",
        seed: int | None = None,
        painter: Painter | None = None,
        tty: TextIO | None = None,
        clear_on_close: bool = True,
    ) -> None:
        self.device = device
        self.sysfs = sysfs
        self.fps = fps
        self.lang = lang
        self.noise = Noise(seed)
        self.painter = painter
        self.tty = tty
        self.clear_on_close = clear_on_close
        self.geometry: FbGeometry | None = None
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._surface: Any = None
        self._console = False
        self._blank_minutes = 0
        self._graphics: Any = None  # vt.GraphicsMode while we own a real device's VT

    # -- checks and geometry (read-only; usable before open by --output preflight)

    def sysfs_dir(self) -> Path:
        return Path(self.sysfs) / Path(self.device).name

    def read_geometry(self) -> FbGeometry:
        """Geometry from sysfs. CannotStage when the device or its sysfs entry is missing."""
        self.check()
        d = self.sysfs_dir()

        def text(name: str, optional: bool = False) -> str | None:
            try:
                return (d / name).read_text()
            except FileNotFoundError:
                if optional:
                    return None
                raise CannotStage(
                    f"framebuffer {self.device}: no {d / name} (is it a framebuffer?); {FIX}"
                ) from None
            except OSError as e:
                raise CannotStage(f"framebuffer: cannot read {d / name} ({e.strerror})") from None

        return parse_geometry(
            text("virtual_size") or "", text("bits_per_pixel") or "", text("stride", True)
        )

    def check(self) -> None:
        """Raise CannotStage (with the fix) unless the device exists and is writable."""
        if not os.path.exists(self.device):
            raise CannotStage(
                f"framebuffer: no {self.device} on this machine (a kernel without fbdev, or "
                f"not a local console); {FIX}, or use --output terminal"
            )
        if not os.access(self.device, os.R_OK | os.W_OK):
            raise CannotStage(f"framebuffer: no permission to write {self.device}; {FIX}")

    # -- Output protocol

    def open(self) -> None:
        """Map the device, hide the console cursor and stop blanking. Raises CannotStage."""
        g = self.read_geometry()
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise CannotStage(f"framebuffer: no permission to open {self.device}; {FIX}") from None
        except OSError as e:
            raise CannotStage(
                f"framebuffer: cannot open {self.device} ({e.strerror}); {FIX}"
            ) from None
        try:
            st = os.fstat(fd)
            # a regular file stands in for the device in tests: it must already be big
            # enough, because we never change its size
            if stat.S_ISREG(st.st_mode) and st.st_size < g.nbytes:
                raise CannotStage(
                    f"framebuffer: {self.device} holds {st.st_size} bytes, "
                    f"its geometry needs {g.nbytes}"
                )
            try:
                self._map = mmap.mmap(
                    fd, g.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
            except (OSError, ValueError) as e:
                raise CannotStage(f"framebuffer: cannot map {self.device} ({e}); {FIX}") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.geometry = g
        self._surface = _xrgb_surface(g.width, g.height)
        if self.painter is None:
            self.painter = _default_painter((g.width, g.height), self.lang)
        if stat.S_ISCHR(st.st_mode):
            # the real device: keep fbcon (the kernel's OOM report, the cursor) off it
            from beep_av.video.vt import GraphicsMode

            self._graphics = GraphicsMode()
            self._graphics.enter()
        self._console_enter()

    def frame(self, state: ShowState) -> list[str]:
        """Draw `state` and write it into the framebuffer. No keys are read here."""
        if self._map is None or self.geometry is None:
            return []
        assert self.painter is not None
        self.painter.draw(state, self.noise, self._surface)
        write_pixels(surface_pixels(self._surface), self.geometry, self._map)
        return []

    def close(self) -> None:
        """Unmap, clear the screen to black (optional), restore cursor and blanking. Safe twice."""
        if self._map is not None:
            try:
                if self.clear_on_close:
                    self._map[:] = bytes(len(self._map))
                self._map.close()
            finally:
                self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._surface = None
        graphics, self._graphics = self._graphics, None
        if graphics is not None:
            graphics.leave()  # KD_TEXT: fbcon redraws the console as it was
        self._console_leave()

    # -- the console under the framebuffer

    def _tty_stream(self) -> TextIO | None:
        stream = self.tty if self.tty is not None else sys.stdout
        try:
            return stream if stream.isatty() else None
        except (AttributeError, ValueError):
            return None

    def _console_enter(self) -> None:
        stream = self._tty_stream()
        if stream is None:
            return
        try:
            seconds = int(Path("/sys/module/kernel/parameters/consoleblank").read_text())
            self._blank_minutes = (seconds + 59) // 60
        except (OSError, ValueError):
            self._blank_minutes = 0
        stream.write(HIDE_CURSOR + blank_sequence(0))
        stream.flush()
        self._console = True

    def _console_leave(self) -> None:
        if not self._console:
            return
        self._console = False
        stream = self._tty_stream()
        if stream is None:
            return
        try:
            stream.write(blank_sequence(self._blank_minutes) + SHOW_CURSOR)
            stream.flush()
        except (OSError, ValueError):
            pass  # the terminal went away: nothing left to restore


def _xrgb_surface(width: int, height: int) -> Any:
    import pygame

    return pygame.Surface((width, height), 0, 32, (0xFF0000, 0x00FF00, 0x0000FF, 0))


def surface_pixels(surface: Any) -> np.ndarray:
    """(H, W) uint32 view of a 32-bit surface's pixels (no copy; rows may be padded)."""
    w, h = surface.get_size()
    pitch = surface.get_pitch()
    # get_view("2") would be column-major; the raw buffer is row-major like the fb
    buf = np.frombuffer(surface.get_view("1"), dtype=np.uint8)
    return buf[: pitch * h].reshape(h, pitch)[:, : w * 4].view(np.uint32)


def _default_painter(size: tuple[int, int], lang: str) -> Painter:
    from beep_av.video.captions import Captions
    from beep_av.video.scene import Scene

    # every language is loaded: the presenter cycles captions en -> fr -> off live
    return Scene(size, Captions.load(), lang if lang != "off" else "en")
