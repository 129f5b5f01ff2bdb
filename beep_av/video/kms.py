"""`--output kms`: the window output on SDL's kmsdrm driver, fullscreen, for a bare
console with DRM (no X, no Wayland). pygame-ce bundles SDL with kmsdrm (FIELD-NOTES)."""

from __future__ import annotations

import glob
import os
from typing import Any

from beep_av.errors import CannotStage
from beep_av.model import ShowState

FIX = (
    "run on a text console of a machine with a DRM GPU driver (/dev/dri/card*) and join "
    "the `video` group; or use --output framebuffer, terminal or window"
)


def dri_cards(dri: str = "/dev/dri") -> list[str]:
    """The DRM card nodes under `dri` (e.g. ['/dev/dri/card0'])."""
    return sorted(glob.glob(os.path.join(dri, "card[0-9]*")))


# what SDL's kmsdrm dlopens at run time (SDL_egl.c, SDL_kmsdrmdyn.c): without libGLESv2
# it fails with "EGL not initialized" even where EGL itself works
LIBRARIES = {
    "libgbm.so.1": "libgbm1",
    "libEGL.so.1": "libegl1",
    "libGLESv2.so.2": "libgles2",
    "libdrm.so.2": "libdrm2",
}


def missing_libraries() -> list[str]:
    """The libraries kmsdrm needs that this machine's loader cannot find."""
    import ctypes

    missing = []
    for lib in LIBRARIES:
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(lib)
    return missing


def check_kms(dri: str = "/dev/dri") -> str:
    """The card to use; CannotStage with the fix when there is none or no permission."""
    cards = dri_cards(dri)
    if not cards:
        raise CannotStage(f"kms: no {dri}/card* on this machine (no DRM driver); {FIX}")
    usable = [c for c in cards if os.access(c, os.R_OK | os.W_OK)]
    if not usable:
        raise CannotStage(f"kms: no permission to open {cards[0]}; {FIX}")
    missing = missing_libraries()
    if missing:
        pkgs = " ".join(LIBRARIES[m] for m in missing)
        raise CannotStage(
            f"kms: SDL's kmsdrm needs {', '.join(missing)} (Debian: apt install {pkgs}"
            " libgl1-mesa-dri), or use --output framebuffer"
        )
    return usable[0]


def needs_software_gl(dri: str = "/dev/dri") -> bool:
    """A card with no render node (bochs-drm, simpledrm, cirrus: scanout only) has no Mesa
    driver of its own; Mesa 22 then tries `kmsro` and EGL fails to initialise, unless it
    is told to render in software on the card's dumb buffers (kms_swrast)."""
    return bool(dri_cards(dri)) and not glob.glob(os.path.join(dri, "renderD[0-9]*"))


SOFTWARE_GL = {"MESA_LOADER_DRIVER_OVERRIDE": "kms_swrast"}


class KmsOutput:
    """WindowOutput(fullscreen=True, driver="kmsdrm") behind a DRM check."""

    def __init__(self, dri: str = "/dev/dri", **window_args: Any) -> None:
        self.dri = dri
        self.window_args = window_args
        self.fps = float(window_args.get("fps", 30.0))
        self._window: Any = None
        self._graphics: Any = None

    def check(self) -> None:
        """Raise CannotStage (with the fix) unless a usable DRM card exists."""
        check_kms(self.dri)

    def open(self) -> None:
        self.check()
        from beep_av.video.vt import GraphicsMode
        from beep_av.video.window import WindowOutput

        if needs_software_gl(self.dri):
            for k, v in SOFTWARE_GL.items():
                os.environ.setdefault(k, v)  # a user's own choice wins
        # KD_GRAPHICS first: the kernel's console must not draw over SDL's picture
        self._graphics = GraphicsMode()
        self._graphics.enter()
        try:
            self._window = WindowOutput(fullscreen=True, driver="kmsdrm", **self.window_args)
            self._window.open()
        except BaseException:
            self.close()
            raise
        self.fps = self._window.fps

    def frame(self, state: ShowState) -> list[str]:
        return self._window.frame(state) if self._window is not None else []

    def close(self) -> None:
        window, self._window = self._window, None
        try:
            if window is not None:
                window.close()
        finally:
            graphics, self._graphics = self._graphics, None
            if graphics is not None:
                graphics.leave()
