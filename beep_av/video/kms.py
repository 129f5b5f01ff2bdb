"""`--output kms`: the show on a bare console's DRM card, through kernel mode setting
(a dumb buffer, beep_av/video/drm.py), for a console with DRM and no X or Wayland.

The Scene draws off-screen and the frame is written into the scanned-out buffer, as the
framebuffer output does into /dev/fb0. SDL's kmsdrm was the first route: it needs GBM,
EGL, GLES and a Mesa driver for the card, and on a scanout-only card (bochs-drm under
QEMU, with Mesa's kms_swrast) its frames never reached the screen (measured in the
guest: 40 fps presented, a black scanout). Kernel mode setting needs none of that."""

from __future__ import annotations

import glob
import os
from typing import Any

from beep_av.errors import CannotStage
from beep_av.model import ShowState
from beep_av.noise import Noise

FIX = (
    "run on a text console of a machine with a DRM GPU driver (/dev/dri/card*) and join "
    "the `video` group; or use --output framebuffer, terminal or window"
)


def dri_cards(dri: str = "/dev/dri") -> list[str]:
    """The DRM card nodes under `dri` (e.g. ['/dev/dri/card0'])."""
    return sorted(glob.glob(os.path.join(dri, "card[0-9]*")))


def check_kms(dri: str = "/dev/dri") -> str:
    """The card to use; CannotStage with the fix when there is none or no permission."""
    cards = dri_cards(dri)
    if not cards:
        raise CannotStage(f"kms: no {dri}/card* on this machine (no DRM driver); {FIX}")
    usable = [c for c in cards if os.access(c, os.R_OK | os.W_OK)]
    if not usable:
        raise CannotStage(f"kms: no permission to open {cards[0]}; {FIX}")
    return usable[0]


class KmsOutput:
    """Frames into a DRM dumb buffer on the first connected display, the VT held in
    graphics mode (the kernel's console text never lands on the picture)."""

    def __init__(
        self,
        dri: str = "/dev/dri",
        *,
        noise: Noise | None = None,
        captions: str = "en",
        fps: float = 30.0,
        **_window_args: Any,
    ) -> None:
        self.dri = dri
        self.noise = noise or Noise(None)
        self.lang = captions
        self.fps = fps
        self._buffer: Any = None
        self._graphics: Any = None
        self._surface: Any = None
        self._painter: Any = None
        self._geometry: Any = None

    def check(self) -> None:
        """Raise CannotStage (with the fix) unless a usable DRM card exists."""
        check_kms(self.dri)

    def open(self) -> None:
        from beep_av.video.drm import DumbBuffer
        from beep_av.video.framebuffer import FbGeometry, _default_painter, _xrgb_surface
        from beep_av.video.vt import GraphicsMode

        card = check_kms(self.dri)
        # KD_GRAPHICS first: the kernel's console must not draw over the picture
        self._graphics = GraphicsMode()
        self._graphics.enter()
        try:
            self._buffer = DumbBuffer(card)
            self._buffer.open()
        except BaseException:
            self.close()
            raise
        b = self._buffer
        self._geometry = FbGeometry(b.width, b.height, 32, b.pitch)
        self._surface = _xrgb_surface(b.width, b.height)
        self._painter = _default_painter((b.width, b.height), self.lang)

    def frame(self, state: ShowState) -> list[str]:
        from beep_av.video.framebuffer import surface_pixels, write_pixels

        b = self._buffer
        if b is None or b.map is None:
            return []
        self._painter.draw(state, self.noise, self._surface)
        write_pixels(surface_pixels(self._surface), self._geometry, b.map)
        b.flush()
        return []

    def close(self) -> None:
        buffer, self._buffer = self._buffer, None
        try:
            if buffer is not None:
                buffer.close()  # the console's own mode and picture come back
        finally:
            graphics, self._graphics = self._graphics, None
            if graphics is not None:
                graphics.leave()
