"""Framebuffer output: geometry parsing (table, hostile input), pixel packing, and the
real write path into a regular file standing in for /dev/fb0 plus a fake sysfs tree."""

from __future__ import annotations

import io
import os

import numpy as np
import pygame
import pytest

from beep_av.errors import CannotStage
from beep_av.model import Phase, ShowState
from beep_av.video.framebuffer import (
    FbGeometry,
    FramebufferOutput,
    blank_sequence,
    pack_rgb565,
    parse_geometry,
    read_pixels,
    surface_pixels,
    unpack_rgb565,
    write_pixels,
)

# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "vsize, bpp, stride, expected",
    [
        ("1920,1080\n", "32\n", "7680\n", FbGeometry(1920, 1080, 32, 7680)),
        ("1024,768", "16", "2048", FbGeometry(1024, 768, 16, 2048)),
        ("800,600", "24", "2432", FbGeometry(800, 600, 24, 2432)),  # padded rows
        ("640,480", "32", None, FbGeometry(640, 480, 32, 2560)),  # no stride file
        ("640,480", "32", "", FbGeometry(640, 480, 32, 2560)),
    ],
)
def test_parse_geometry(vsize, bpp, stride, expected):
    assert parse_geometry(vsize, bpp, stride) == expected


@pytest.mark.parametrize(
    "vsize, bpp, stride",
    [
        ("", "32", "7680"),
        ("1920x1080", "32", "7680"),
        ("1920,1080,3", "32", "7680"),
        ("-1,1080", "32", "7680"),
        ("0,0", "32", "0"),
        ("99999,1080", "32", "7680"),
        ("1920,1080", "8", "1920"),  # palette modes are not supported
        ("1920,1080", "thirty-two", "7680"),
        ("1920,1080", "32", "100"),  # stride shorter than a row
        ("1920,1080", "32", "\x00\xff"),
    ],
)
def test_parse_geometry_rejects(vsize, bpp, stride):
    with pytest.raises(CannotStage):
        parse_geometry(vsize, bpp, stride)


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize(
    "rgb, packed",
    [
        ((0, 0, 0), 0x0000),
        ((255, 255, 255), 0xFFFF),
        ((255, 0, 0), 0xF800),
        ((0, 255, 0), 0x07E0),
        ((0, 0, 255), 0x001F),
        ((0x12, 0x34, 0x56), (0x12 >> 3) << 11 | (0x34 >> 2) << 5 | (0x56 >> 3)),
    ],
)
def test_rgb565(rgb, packed):
    r, g, b = rgb
    px = np.array([r << 16 | g << 8 | b], dtype=np.uint32)
    assert int(pack_rgb565(px)[0]) == packed
    back = unpack_rgb565(pack_rgb565(px))[0]
    assert tuple(int(v) for v in back) == (r & 0xF8, g & 0xFC, b & 0xF8)


def _pattern(w: int, h: int) -> np.ndarray:
    """Deterministic XRGB pixels, every channel value present."""
    rng = np.random.default_rng(7)
    return (rng.integers(0, 1 << 24, size=(h, w), dtype=np.uint32)).astype(np.uint32)


def _expected_rgb(xrgb: np.ndarray, bpp: int) -> np.ndarray:
    rgb = np.stack([(xrgb >> 16) & 255, (xrgb >> 8) & 255, xrgb & 255], axis=-1).astype(np.uint8)
    if bpp == 16:
        rgb &= np.array([0xF8, 0xFC, 0xF8], dtype=np.uint8)
    return rgb


@pytest.mark.parametrize("bpp", [16, 24, 32])
def test_write_pixels_padded_stride_leaves_padding(bpp):
    w, h = 13, 5
    stride = w * bpp // 8 + 7  # odd padding after each row
    g = FbGeometry(w, h, bpp, stride)
    buf = bytearray(b"\xaa" * g.nbytes)
    px = _pattern(w, h)
    write_pixels(px, g, buf)
    assert np.array_equal(read_pixels(g, buf), _expected_rgb(px, bpp))
    rows = np.frombuffer(bytes(buf), np.uint8).reshape(h, stride)
    assert (rows[:, w * bpp // 8 :] == 0xAA).all()


def test_write_pixels_clips_a_larger_picture():
    g = FbGeometry(4, 3, 32, 16)
    buf = bytearray(g.nbytes)
    px = _pattern(10, 10)
    write_pixels(px, g, buf)
    assert np.array_equal(read_pixels(g, buf), _expected_rgb(px[:3, :4], 32))


# ---------------------------------------------------------------- the device stand-in


class Checker:
    """A deterministic painter: a checkerboard with a gradient, as the Scene would draw."""

    def __init__(self) -> None:
        self.calls = 0

    def draw(self, state, noise, surface) -> None:
        w, h = surface.get_size()
        surface.fill((0, 0, 0))
        for y in range(0, h, 3):
            for x in range(0, w, 3):
                c = ((x * 7 + self.calls) % 256, (y * 11) % 256, ((x ^ y) * 5) % 256)
                surface.fill(c, pygame.Rect(x, y, 3, 3))
        self.calls += 1


def make_fb(tmp_path, w, h, bpp, stride=None, fill=b"\x5a"):
    stride = stride or w * bpp // 8
    dev = tmp_path / "fb0"
    dev.write_bytes(fill * (stride * h))
    sysfs = tmp_path / "sys"
    d = sysfs / "fb0"
    d.mkdir(parents=True)
    (d / "virtual_size").write_text(f"{w},{h}\n")
    (d / "bits_per_pixel").write_text(f"{bpp}\n")
    (d / "stride").write_text(f"{stride}\n")
    return dev, sysfs, stride


@pytest.mark.parametrize("bpp", [16, 24, 32])
def test_frames_land_in_the_device_file(tmp_path, bpp):
    w, h = 64, 40
    dev, sysfs, stride = make_fb(tmp_path, w, h, bpp, stride=w * bpp // 8 + 12)
    size_before = dev.stat().st_size
    painter = Checker()
    tty = io.StringIO()  # not a tty: no console escapes
    out = FramebufferOutput(str(dev), str(sysfs), painter=painter, tty=tty, clear_on_close=False)
    out.open()
    try:
        for i in range(3):
            assert out.frame(ShowState(t=i / 30, phase=Phase.FILLING, intensity=0.5)) == []
            # what the painter drew, read back from the surface
            drawn = surface_pixels(out._surface).copy()
            on_disk = read_pixels(out.geometry, dev.read_bytes())  # through the file, not the map
            assert np.array_equal(on_disk, _expected_rgb(drawn, bpp)), f"frame {i}"
    finally:
        out.close()
    assert dev.stat().st_size == size_before
    assert tty.getvalue() == ""
    rows = np.frombuffer(dev.read_bytes(), np.uint8).reshape(h, stride)
    assert (rows[:, w * bpp // 8 :] == 0x5A).all()  # row padding untouched


def test_close_clears_to_black_and_is_safe_twice(tmp_path):
    dev, sysfs, _ = make_fb(tmp_path, 16, 8, 32)
    out = FramebufferOutput(str(dev), str(sysfs), painter=Checker(), tty=io.StringIO())
    out.open()
    out.frame(ShowState())
    assert any(dev.read_bytes())
    out.close()
    out.close()
    assert not any(dev.read_bytes())
    assert dev.stat().st_size == 16 * 8 * 4


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_cursor_and_blanking_restored(tmp_path):
    dev, sysfs, _ = make_fb(tmp_path, 8, 8, 16)
    tty = FakeTty()
    out = FramebufferOutput(str(dev), str(sysfs), painter=Checker(), tty=tty)
    out.open()
    assert tty.getvalue().startswith("\033[?25l" + blank_sequence(0))
    out.close()
    out.close()
    text = tty.getvalue()
    assert text.endswith("\033[?25h")
    assert text.count("\033[?25h") == 1


def test_missing_device(tmp_path):
    out = FramebufferOutput(str(tmp_path / "fb7"), str(tmp_path))
    with pytest.raises(CannotStage, match="video"):
        out.open()


def test_missing_sysfs_entry(tmp_path):
    dev, sysfs, _ = make_fb(tmp_path, 8, 8, 32)
    (sysfs / "fb0" / "virtual_size").unlink()
    with pytest.raises(CannotStage, match="virtual_size"):
        FramebufferOutput(str(dev), str(sysfs), painter=Checker()).open()


def test_device_smaller_than_geometry_is_refused_not_grown(tmp_path):
    dev, sysfs, _ = make_fb(tmp_path, 8, 8, 32)
    (sysfs / "fb0" / "virtual_size").write_text("64,64\n")
    (sysfs / "fb0" / "stride").write_text("256\n")
    with pytest.raises(CannotStage, match="bytes"):
        FramebufferOutput(str(dev), str(sysfs), painter=Checker()).open()
    assert dev.stat().st_size == 8 * 8 * 4


def test_no_permission(tmp_path, monkeypatch):
    dev, sysfs, _ = make_fb(tmp_path, 8, 8, 32)
    os.chmod(dev, 0o444)
    if os.geteuid() == 0:
        # root passes access(2); make the check answer as it would for a user
        import beep_av.video.framebuffer as fbmod

        real = os.access
        monkeypatch.setattr(
            fbmod.os, "access", lambda p, m: False if str(p) == str(dev) else real(p, m)
        )
    with pytest.raises(CannotStage, match="permission.*video"):
        FramebufferOutput(str(dev), str(sysfs), painter=Checker()).open()
    assert dev.stat().st_size == 8 * 8 * 4


def test_real_dev_fb0_on_this_machine():
    if os.path.exists("/dev/fb0"):
        pytest.skip("this machine has /dev/fb0")
    with pytest.raises(CannotStage, match="no /dev/fb0.*video"):
        FramebufferOutput().open()
