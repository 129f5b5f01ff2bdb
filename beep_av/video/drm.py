"""Kernel mode setting without Mesa: one dumb buffer on a DRM card, as a framebuffer.

Every KMS driver (bochs-drm, virtio-gpu, simpledrm, i915, amdgpu, ...) gives "dumb"
buffers: plain memory the CPU writes and the display scans out. This module asks the
kernel for the connected connector's preferred mode, one 32 bpp dumb buffer, maps it,
and points the CRTC at it; the output then writes frames into it exactly as the
framebuffer output does into /dev/fb0. SDL's kmsdrm needs GBM, EGL, GLES and a Mesa
driver for the card, and on a scanout-only card (bochs-drm under QEMU) it presents
frames that never reach the screen; the dumb buffer always does.

Adapter: touches one outside thing, the DRM device's mode-setting ioctls (drm.h,
drm_mode.h). `pick_mode` is pure."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from dataclasses import dataclass

from beep_av.errors import CannotStage

# ---------------------------------------------------------------- drm_mode.h


class ModeInfo(ctypes.Structure):
    _fields_ = [
        ("clock", ctypes.c_uint32),
        ("hdisplay", ctypes.c_uint16),
        ("hsync_start", ctypes.c_uint16),
        ("hsync_end", ctypes.c_uint16),
        ("htotal", ctypes.c_uint16),
        ("hskew", ctypes.c_uint16),
        ("vdisplay", ctypes.c_uint16),
        ("vsync_start", ctypes.c_uint16),
        ("vsync_end", ctypes.c_uint16),
        ("vtotal", ctypes.c_uint16),
        ("vscan", ctypes.c_uint16),
        ("vrefresh", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("name", ctypes.c_char * 32),
    ]


class CardRes(ctypes.Structure):
    _fields_ = [
        ("fb_id_ptr", ctypes.c_uint64),
        ("crtc_id_ptr", ctypes.c_uint64),
        ("connector_id_ptr", ctypes.c_uint64),
        ("encoder_id_ptr", ctypes.c_uint64),
        ("count_fbs", ctypes.c_uint32),
        ("count_crtcs", ctypes.c_uint32),
        ("count_connectors", ctypes.c_uint32),
        ("count_encoders", ctypes.c_uint32),
        ("min_width", ctypes.c_uint32),
        ("max_width", ctypes.c_uint32),
        ("min_height", ctypes.c_uint32),
        ("max_height", ctypes.c_uint32),
    ]


class GetConnector(ctypes.Structure):
    _fields_ = [
        ("encoders_ptr", ctypes.c_uint64),
        ("modes_ptr", ctypes.c_uint64),
        ("props_ptr", ctypes.c_uint64),
        ("prop_values_ptr", ctypes.c_uint64),
        ("count_modes", ctypes.c_uint32),
        ("count_props", ctypes.c_uint32),
        ("count_encoders", ctypes.c_uint32),
        ("encoder_id", ctypes.c_uint32),
        ("connector_id", ctypes.c_uint32),
        ("connector_type", ctypes.c_uint32),
        ("connector_type_id", ctypes.c_uint32),
        ("connection", ctypes.c_uint32),
        ("mm_width", ctypes.c_uint32),
        ("mm_height", ctypes.c_uint32),
        ("subpixel", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class GetEncoder(ctypes.Structure):
    _fields_ = [
        ("encoder_id", ctypes.c_uint32),
        ("encoder_type", ctypes.c_uint32),
        ("crtc_id", ctypes.c_uint32),
        ("possible_crtcs", ctypes.c_uint32),
        ("possible_clones", ctypes.c_uint32),
    ]


class Crtc(ctypes.Structure):
    _fields_ = [
        ("set_connectors_ptr", ctypes.c_uint64),
        ("count_connectors", ctypes.c_uint32),
        ("crtc_id", ctypes.c_uint32),
        ("fb_id", ctypes.c_uint32),
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("gamma_size", ctypes.c_uint32),
        ("mode_valid", ctypes.c_uint32),
        ("mode", ModeInfo),
    ]


class FbCmd(ctypes.Structure):
    _fields_ = [
        ("fb_id", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("pitch", ctypes.c_uint32),
        ("bpp", ctypes.c_uint32),
        ("depth", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
    ]


class CreateDumb(ctypes.Structure):
    _fields_ = [
        ("height", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("bpp", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("pitch", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
    ]


class MapDumb(ctypes.Structure):
    _fields_ = [("handle", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("offset", ctypes.c_uint64)]


class DirtyFb(ctypes.Structure):
    _fields_ = [
        ("fb_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("color", ctypes.c_uint32),
        ("num_clips", ctypes.c_uint32),
        ("clips_ptr", ctypes.c_uint64),
    ]


def _iowr(nr: int, struct: type[ctypes.Structure] | int) -> int:
    size = struct if isinstance(struct, int) else ctypes.sizeof(struct)
    return (3 << 30) | (size << 16) | (ord("d") << 8) | nr


SET_MASTER = (ord("d") << 8) | 0x1E
DROP_MASTER = (ord("d") << 8) | 0x1F
GETRESOURCES = _iowr(0xA0, CardRes)
GETCRTC = _iowr(0xA1, Crtc)
SETCRTC = _iowr(0xA2, Crtc)
GETENCODER = _iowr(0xA6, GetEncoder)
GETCONNECTOR = _iowr(0xA7, GetConnector)
ADDFB = _iowr(0xAE, FbCmd)
RMFB = _iowr(0xAF, 4)
DIRTYFB = _iowr(0xB1, DirtyFb)
CREATE_DUMB = _iowr(0xB2, CreateDumb)
MAP_DUMB = _iowr(0xB3, MapDumb)
DESTROY_DUMB = _iowr(0xB4, 4)

CONNECTED = 1
MODE_TYPE_PREFERRED = 1 << 3


def _ptr(arr: ctypes.Array) -> int:
    return ctypes.addressof(arr)


# ---------------------------------------------------------------- pure


@dataclass(frozen=True)
class Mode:
    width: int
    height: int
    vrefresh: int
    preferred: bool
    index: int  # in the connector's list


def pick_mode(modes: list[Mode]) -> Mode:
    """The connector's preferred mode, else its first (the kernel lists best first)."""
    if not modes:
        raise ValueError("no modes")
    return next((m for m in modes if m.preferred), modes[0])


# ---------------------------------------------------------------- the device


class DumbBuffer:
    """One dumb buffer scanned out on the first connected connector of `card`.

    `open()` sets the mode (the previous CRTC setup is kept and restored by `close()`),
    `map` is the mapping to write XRGB8888 pixels into (`pitch` bytes a row), `flush()`
    tells drivers that need it (virtio-gpu) which frame to show."""

    def __init__(self, card: str) -> None:
        self.card = card
        self.fd: int | None = None
        self.map: mmap.mmap | None = None
        self.width = self.height = self.pitch = 0
        self._fb = self._handle = self._crtc = self._conn = 0
        self._saved: Crtc | None = None
        self._master = False
        self._dirty = True

    def _ioctl(self, request: int, arg: ctypes.Structure | ctypes.c_uint32, what: str) -> None:
        assert self.fd is not None
        try:
            fcntl.ioctl(self.fd, request, arg, True)
        except OSError as e:
            raise CannotStage(f"kms: {what} on {self.card} failed ({e.strerror})") from None

    def open(self) -> None:
        try:
            self.fd = os.open(self.card, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise CannotStage(f"kms: cannot open {self.card} ({e.strerror})") from None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        assert self.fd is not None
        try:
            fcntl.ioctl(self.fd, SET_MASTER)
            self._master = True
        except OSError:
            # the first opener is master already; anyone else (a desktop) holds the display
            pass
        res = CardRes()
        self._ioctl(GETRESOURCES, res, "reading its resources")
        crtcs = (ctypes.c_uint32 * max(1, res.count_crtcs))()
        conns = (ctypes.c_uint32 * max(1, res.count_connectors))()
        res2 = CardRes(
            crtc_id_ptr=_ptr(crtcs),
            connector_id_ptr=_ptr(conns),
            count_crtcs=res.count_crtcs,
            count_connectors=res.count_connectors,
        )
        self._ioctl(GETRESOURCES, res2, "reading its resources")
        conn, modes, mode_infos = None, [], None
        for cid in conns[: res2.count_connectors]:
            c = GetConnector(connector_id=cid)
            self._ioctl(GETCONNECTOR, c, "reading a connector")
            if c.connection != CONNECTED or c.count_modes == 0:
                continue
            infos = (ModeInfo * c.count_modes)()
            encs = (ctypes.c_uint32 * max(1, c.count_encoders))()
            c2 = GetConnector(
                connector_id=cid,
                modes_ptr=_ptr(infos),
                count_modes=c.count_modes,
                encoders_ptr=_ptr(encs),
                count_encoders=c.count_encoders,
            )
            self._ioctl(GETCONNECTOR, c2, "reading a connector")
            conn, mode_infos = c2, infos
            modes = [
                Mode(m.hdisplay, m.vdisplay, m.vrefresh, bool(m.type & MODE_TYPE_PREFERRED), i)
                for i, m in enumerate(infos[: c2.count_modes])
            ]
            break
        if conn is None or not modes or mode_infos is None:
            raise CannotStage(f"kms: no connected display on {self.card}")
        mode = pick_mode(modes)
        info = mode_infos[mode.index]
        self._conn = conn.connector_id
        self._crtc = self._crtc_for(conn, crtcs[: res2.count_crtcs])
        saved = Crtc(crtc_id=self._crtc)
        self._ioctl(GETCRTC, saved, "reading the CRTC")
        self._saved = saved
        dumb = CreateDumb(width=mode.width, height=mode.height, bpp=32)
        self._ioctl(CREATE_DUMB, dumb, "creating a dumb buffer")
        self._handle = dumb.handle
        fb = FbCmd(
            width=mode.width, height=mode.height, pitch=dumb.pitch, bpp=32, depth=24,
            handle=dumb.handle,
        )  # fmt: skip
        self._ioctl(ADDFB, fb, "adding a framebuffer")
        self._fb = fb.fb_id
        mp = MapDumb(handle=dumb.handle)
        self._ioctl(MAP_DUMB, mp, "mapping the dumb buffer")
        assert self.fd is not None
        self.map = mmap.mmap(
            self.fd, dumb.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=mp.offset
        )
        self.width, self.height, self.pitch = mode.width, mode.height, dumb.pitch
        conn_ids = (ctypes.c_uint32 * 1)(self._conn)
        setc = Crtc(
            set_connectors_ptr=_ptr(conn_ids), count_connectors=1, crtc_id=self._crtc,
            fb_id=self._fb, mode_valid=1, mode=info,
        )  # fmt: skip
        self._ioctl(SETCRTC, setc, "setting the mode (is another program showing a picture?)")

    def _crtc_for(self, conn: GetConnector, crtcs) -> int:
        encs = ctypes.cast(conn.encoders_ptr, ctypes.POINTER(ctypes.c_uint32))
        ids = [conn.encoder_id] + [encs[i] for i in range(conn.count_encoders)]
        for eid in ids:
            if not eid:
                continue
            enc = GetEncoder(encoder_id=eid)
            self._ioctl(GETENCODER, enc, "reading an encoder")
            if enc.crtc_id:
                return enc.crtc_id
            for i, cid in enumerate(crtcs):
                if enc.possible_crtcs & (1 << i):
                    return cid
        raise CannotStage(f"kms: no CRTC can drive the display on {self.card}")

    def flush(self) -> None:
        """Mark the whole frame dirty (virtio-gpu and other drivers that copy on demand;
        scanout drivers refuse it, and then it is not asked again)."""
        if not self._dirty or self.fd is None:
            return
        try:
            fcntl.ioctl(self.fd, DIRTYFB, DirtyFb(fb_id=self._fb), True)
        except OSError:
            self._dirty = False

    def close(self) -> None:
        """Restore the CRTC as it was (the console's own picture), free the buffer.
        Safe twice, and after a failed open."""
        if self.fd is None:
            return
        fd = self.fd
        if self.map is not None:
            self.map.close()
            self.map = None
        saved, self._saved = self._saved, None
        if saved is not None and saved.fb_id:
            conn_ids = (ctypes.c_uint32 * 1)(self._conn)
            saved.set_connectors_ptr = _ptr(conn_ids)
            saved.count_connectors = 1
            try:
                fcntl.ioctl(fd, SETCRTC, saved, True)
            except OSError:
                pass  # the console's helper restores its own mode when we close
        for request, value in ((RMFB, self._fb), (DESTROY_DUMB, self._handle)):
            if value:
                try:
                    fcntl.ioctl(fd, request, ctypes.c_uint32(value), True)
                except OSError:
                    pass
        self._fb = self._handle = 0
        if self._master:
            try:
                fcntl.ioctl(fd, DROP_MASTER)
            except OSError:
                pass
            self._master = False
        os.close(fd)
        self.fd = None
