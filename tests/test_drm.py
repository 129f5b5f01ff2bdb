"""The DRM dumb-buffer output's pure parts: ioctl numbers and struct sizes as libdrm's
headers have them (x86_64), and the mode choice. The device itself is tested in the
guest (tests/test_guest_console.py): this machine has no /dev/dri."""

from __future__ import annotations

import ctypes

import pytest

from beep_av.video import drm


@pytest.mark.parametrize(
    "value, want",
    [
        (drm.GETRESOURCES, 0xC04064A0),
        (drm.GETCRTC, 0xC06864A1),
        (drm.SETCRTC, 0xC06864A2),
        (drm.GETENCODER, 0xC01464A6),
        (drm.GETCONNECTOR, 0xC05064A7),
        (drm.ADDFB, 0xC01C64AE),
        (drm.RMFB, 0xC00464AF),
        (drm.DIRTYFB, 0xC01864B1),
        (drm.CREATE_DUMB, 0xC02064B2),
        (drm.MAP_DUMB, 0xC01064B3),
        (drm.DESTROY_DUMB, 0xC00464B4),
        (drm.SET_MASTER, 0x641E),
        (drm.DROP_MASTER, 0x641F),
    ],
)
def test_ioctl_numbers_match_libdrm(value, want):
    assert value == want


def test_mode_info_is_the_kernels_68_bytes():
    assert ctypes.sizeof(drm.ModeInfo) == 68


def test_pick_mode_prefers_the_preferred_else_the_first():
    a = drm.Mode(1920, 1080, 60, False, 0)
    b = drm.Mode(1280, 800, 60, True, 1)
    assert drm.pick_mode([a, b]) is b
    assert drm.pick_mode([a]) is a
    with pytest.raises(ValueError):
        drm.pick_mode([])
