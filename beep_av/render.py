"""`beep-av render`: a recording becomes a video with its sound, offline.

Every frame is drawn by the same `Scene` the window uses, at the frame's show time (the
latest recorded state at or before it, as replay publishes them); the sound is the same
pure synth the live callback runs (`synth.OfflineSound`, block by block). Drawing stays
on the calling thread (pygame's); a second thread converts and encodes the frames and
the sound and muxes them (PyAV: its wheels carry FFmpeg's libraries, so no other
package is installed). The file is written under a temporary name in its folder and
takes its name only when the whole video is there (`outfiles.OutFile`): a failure or
Ctrl-C leaves nothing.

Deterministic: with the same recording, size, fps and seed, the frames and the samples
are the same (the `raw` look takes the kernel's bytes instead: not reproducible)."""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from beep_av.errors import BadInput
from beep_av.model import ShowState

MIN_SIZE = (160, 90)
MAX_SIZE = (3840, 2160)
MAX_FPS = 60
QUEUE_FRAMES = 6  # frames drawn ahead of the encoder (bounded memory)


@dataclass(frozen=True)
class Target:
    """What an extension means: the container, its codecs and their settings."""

    ext: str
    container: str
    video: str
    pix_fmt: str
    audio: str | None  # None: no sound (GIF)
    video_options: tuple[tuple[str, str], ...] = ()
    audio_rate: int = 48000
    audio_bit_rate: int = 160_000
    size: tuple[int, int] = (1280, 720)
    fps: int = 30


TARGETS = {
    # x264 ultrafast: full-frame noise is H.264's worst case; veryfast is slower than
    # real time at 720p here (FIELD-NOTES), ultrafast ~3x
    ".mp4": Target(
        ".mp4",
        "mp4",
        "libx264",
        "yuv420p",
        "aac",
        (("preset", "ultrafast"), ("crf", "23")),
    ),
    ".webm": Target(
        ".webm",
        "webm",
        "libvpx-vp9",
        "yuv420p",
        "libopus",
        (("deadline", "realtime"), ("cpu-used", "8"), ("row-mt", "1"), ("crf", "40"), ("b", "0")),
        audio_bit_rate=128_000,
    ),  # fmt: skip
    # GIF: no sound; delays are whole centiseconds, so 10 fps is exact
    ".gif": Target(".gif", "gif", "gif", "pal8", None, size=(480, 270), fps=10),
}


def target_for(out: str) -> Target:
    """The Target for an output path by its extension. Raises BadInput."""
    ext = os.path.splitext(out)[1].lower()
    t = TARGETS.get(ext)
    if t is None:
        known = "use .mp4, .webm or .gif"
        if not ext:
            raise BadInput(f"-o {out}: the name says the format: {known}")
        raise BadInput(f"-o {out}: {ext} is not a format this writes; {known}")
    return t


def parse_size(text: str) -> tuple[int, int]:
    """`1280x720` -> (1280, 720), checked by check_size later. Raises BadInput."""
    from beep_av.report import parse_wxh

    return parse_wxh(text, "video", "1280x720")


def check_size(size: tuple[int, int], target: Target) -> tuple[int, int]:
    """A video's size: within MIN_SIZE..MAX_SIZE, even sides (4:2:0 chroma). Raises
    BadInput."""
    w, h = size
    if not (MIN_SIZE[0] <= w <= MAX_SIZE[0] and MIN_SIZE[1] <= h <= MAX_SIZE[1]):
        lo, hi = MIN_SIZE, MAX_SIZE
        raise BadInput(f"--size: {w}x{h} is outside {lo[0]}x{lo[1]}..{hi[0]}x{hi[1]}")
    if target.pix_fmt == "yuv420p" and (w % 2 or h % 2):
        raise BadInput(f"--size: {w}x{h}: a {target.ext} video needs even sides")
    return w, h


def check_fps(fps: object) -> int:
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= MAX_FPS:
        raise BadInput(f"--fps: {fps!r} must be a whole number of frames per second, 1..{MAX_FPS}")
    return fps


# ---------------------------------------------------------------- frames and sound


class Timeline:
    """The recorded states in order, read as time goes (an hour's recording is never
    held whole); `at(t)` is the one on screen at show time t (the latest at or before
    t; the first before anything). Times only move forward."""

    def __init__(self, states: Iterable[ShowState]) -> None:
        self._it = iter(states)
        self._now = next(self._it, ShowState())
        self._next = next(self._it, None)

    def at(self, t: float) -> ShowState:
        while self._next is not None and self._next.t <= t + 1e-9:
            self._now, self._next = self._next, next(self._it, None)
        return self._now


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs, checked."""

    rec: Any  # the loaded Recording
    name: str  # how the card names it
    duration: float  # s of show: the recording's
    out: str
    target: Target
    size: tuple[int, int]
    fps: int
    seed: int | None
    raw: bool
    captions: str  # en | fr | off
    beep: Any  # synth.BeepSpec
    style: str = "window"  # window | terminal

    def states(self) -> Iterator[ShowState]:
        """The recording's states as replay publishes them, in the render's captions."""
        from beep_av.stages.replay import ReplayDriver

        for s in ReplayDriver(self.rec, name=self.name).states():
            yield replace(s, captions=self.captions)

    @property
    def frames(self) -> int:
        return max(1, round(self.duration * self.fps))


@dataclass
class RenderResult:
    path: str
    frames: int
    seconds: float  # of video
    wall: float  # s taken
    bytes: int


def job_for(
    rec: Any,
    out: str,
    *,
    name: str,
    size: tuple[int, int] | None = None,
    fps: int | None = None,
    seed: int | None = 0,
    look: str = "static",
    captions: str = "en",
    style: str = "window",
) -> RenderJob:
    """Check a render's input and gather what it needs from `rec` (a loaded Recording).
    Raises BadInput before anything is written."""
    from beep_av.audio.synth import BeepSpec

    target = target_for(out)
    size = check_size(size or target.size, target)
    fps = check_fps(target.fps if fps is None else fps)
    if look not in ("static", "raw"):
        raise BadInput(f"--look: {look!r} is not one of static, raw")
    if captions not in ("en", "fr", "off"):
        raise BadInput(f"--captions: {captions!r} is not one of en, fr, off")
    if style not in ("window", "terminal"):
        raise BadInput(f"--style: {style!r} is not one of window, terminal")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise BadInput(f"--seed: {seed!r} must be a whole number >= 0")
    head = rec.header
    beeps = rec.events_of("beep")
    first = beeps[0] if beeps else {}

    def num(v: object, default: float) -> float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        return float(v) if ok else default

    beep = BeepSpec(
        freq=num(first.get("freq", head.get("beep_freq")), 880.0),
        length_ms=num(first.get("length_ms", head.get("beep_length_ms")), 400.0),
        repeats=int(num(first.get("repeats", head.get("beep_repeats")), 1)),
    )
    return RenderJob(
        rec=rec,
        name=name,
        duration=max(rec.duration, 1.0 / fps),
        out=out,
        target=target,
        size=size,
        fps=fps,
        seed=None if look == "raw" else seed,
        raw=look == "raw",
        captions=captions,
        beep=beep,
        style=style,
    )


class Painter:
    """Draws the job's frames in order (pixels as (h, w, 4) BGRA uint8 arrays): the
    window's Scene, or with style `terminal` the terminal output's cells as pixels."""

    def __init__(self, job: RenderJob) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # surfaces only, no window
        import pygame

        from beep_av.noise import Noise
        from beep_av.video.captions import Captions

        if not pygame.font.get_init():
            pygame.font.init()
        caps = Captions.load()
        self.surface = pygame.Surface(job.size, depth=32)
        self.noise = Noise(seed=job.seed, raw=job.raw)
        self.timeline = Timeline(job.states())
        self.fps = job.fps
        self._tobytes = pygame.image.tobytes
        if job.style == "terminal":
            self._draw = self._terminal(job, caps)
        else:
            from beep_av.video.scene import MIN_GRAIN, Scene

            lang = job.captions if job.captions != "off" else "en"
            least = GIF_GRAIN if job.target.pix_fmt == "pal8" else MIN_GRAIN
            scene = Scene(job.size, caps if job.captions != "off" else None, lang, least)
            self._draw = lambda state: scene.draw(state, self.noise, self.surface)

    def _terminal(self, job: RenderJob, caps: Any) -> Callable[[ShowState], None]:
        import io

        from beep_av.video.cells import CellPainter, Cells
        from beep_av.video.terminal import TerminalOutput

        cols, rows = max(20, job.size[0] // CELL[0]), max(8, job.size[1] // CELL[1])
        term = TerminalOutput(
            io.StringIO(), size=(cols, rows), color="truecolor", keys=False, captions=caps
        )
        term.noise = self.noise
        cells = Cells(cols, rows)
        painter = CellPainter(job.size, cols, rows)

        def draw(state: ShowState) -> None:
            head, pixels, tail = term.compose(state)
            cells.feed(head)
            cells.picture(pixels)
            cells.feed(tail)
            painter.draw(cells, self.surface)

        return draw

    def frame(self, i: int) -> np.ndarray:
        self._draw(self.timeline.at(i / self.fps))
        w, h = self.surface.get_size()
        return np.frombuffer(self._tobytes(self.surface, "BGRA"), dtype=np.uint8).reshape(h, w, 4)


CELL = (8, 16)  # pixels of a terminal cell in a --style terminal video


# ---------------------------------------------------------------- GIF palette


def gif_palette(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One palette for the whole GIF, from frames of the show itself (BGRA): the 256
    most common colours at 4 bits a channel (each the mean of its bin), so the phases'
    noise keeps its tints and the card's white and grey stay clean; and the lookup from
    15-bit colour (5 bits a channel) to the nearest entry. Few colours, one palette:
    a small file."""
    counts = np.zeros(4096, dtype=np.float64)
    sums = np.zeros((4096, 3), dtype=np.float64)
    for f in frames:
        rgb = f[..., 2::-1].reshape(-1, 3).astype(np.int64)
        key = (rgb[:, 0] >> 4) << 8 | (rgb[:, 1] >> 4) << 4 | (rgb[:, 2] >> 4)
        counts += np.bincount(key, minlength=4096)
        for c in range(3):
            sums[:, c] += np.bincount(key, weights=rgb[:, c], minlength=4096)
    order = np.argsort(-counts, kind="stable")
    top = order[counts[order] > 0][: GIF_COLOURS - 2]
    colours = sums[top] / counts[top, None]
    rgb = np.concatenate([[[0, 0, 0], [255, 255, 255]], colours]).round().astype(np.int64)
    rgb = np.concatenate([rgb, np.zeros((256 - len(rgb), 3), dtype=np.int64)])  # unused
    used = len(top) + 2
    levels = (np.arange(32) * 8 + 4).astype(np.int64)
    q = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lookup = np.empty(q.shape[0], dtype=np.uint8)
    for lo in range(0, q.shape[0], 2048):  # in slices: 32k x 256 distances at once is big
        d = ((q[lo : lo + 2048, None, :] - rgb[None, :used, :]) ** 2).sum(axis=2)
        lookup[lo : lo + 2048] = d.argmin(axis=1)
    argb = np.zeros((256, 4), dtype=np.uint8)
    argb[:, 0] = 255
    argb[:, 1:] = rgb
    return argb, lookup


GIF_SAMPLES = 48  # frames drawn ahead to choose a GIF's palette
GIF_COLOURS = 256  # entries of its palette used
GIF_GRAIN = 4  # a GIF's static is at least 3 px a grain: LZW cannot pack finer noise


def sample_frames(job: RenderJob) -> list[np.ndarray]:
    """Frames spread over the show, drawn by a painter of their own (the render's
    painter and its noise are untouched)."""
    painter = Painter(job)
    step = max(1, job.frames // GIF_SAMPLES)
    return [painter.frame(i).copy() for i in range(0, job.frames, step)]


def to_pal8(bgra: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """(h, w, 4) BGRA -> (h, w) palette indices."""
    b = bgra[..., 0] >> 3
    g = bgra[..., 1] >> 3
    r = bgra[..., 2] >> 3
    key = (r.astype(np.uint16) << 10) | (g.astype(np.uint16) << 5) | b
    return lookup[key]


# ---------------------------------------------------------------- the encoder


class Encoder:
    """Owns the output container (one thread: the muxer is not thread-safe). `put`
    hands it a video frame (BGRA or palette indices) or a block of sound; `finish`
    flushes and closes it."""

    def __init__(self, f: Any, job: RenderJob) -> None:
        import av

        t = job.target
        self.av = av
        self.job = job
        self.container = av.open(f, mode="w", format=t.container)
        v = self.container.add_stream(t.video, rate=job.fps, options=dict(t.video_options))
        v.width, v.height = job.size
        v.pix_fmt = t.pix_fmt
        self.video = v
        self.audio = None
        if t.audio is not None:
            a = self.container.add_stream(t.audio, rate=t.audio_rate, layout="stereo")
            a.bit_rate = t.audio_bit_rate
            self.audio = a
        self.palette: np.ndarray | None = None
        self._samples = 0

    def put_video(self, i: int, pixels: np.ndarray) -> None:
        VideoFrame = self.av.VideoFrame
        if self.job.target.pix_fmt == "pal8":
            frame = VideoFrame.from_ndarray((pixels, self.palette), format="pal8")
        else:
            frame = VideoFrame.from_ndarray(pixels, format="bgra")
            frame = frame.reformat(format=self.job.target.pix_fmt)
        frame.pts = i
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def put_audio(self, block: np.ndarray) -> None:
        if self.audio is None or not block.shape[0]:
            return
        frame = self.av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block).reshape(1, -1), format="flt", layout="stereo"
        )
        frame.sample_rate = self.job.target.audio_rate
        frame.pts = self._samples
        self._samples += block.shape[0]
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def finish(self) -> None:
        for stream in (self.video, self.audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        self.container.close()

    def abandon(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass  # the file is removed anyway


Progress = Callable[[int, int, float], None]  # frames done, frames in all, seconds taken


def render(job: RenderJob, progress: Progress | None = None) -> RenderResult:
    """Draw, synthesise, encode and write `job.out`. Raises BadInput (one line) when it
    cannot be written; KeyboardInterrupt goes through, and either leaves no file."""
    from beep_av import outfiles
    from beep_av.audio.synth import OfflineSound

    label = f"-o {job.out}"
    painter = Painter(job)
    sound = OfflineSound(
        ((s.t, s) for s in job.states()),
        rate=job.target.audio_rate,
        beep=job.beep,
        seed=None if job.seed is None else job.seed + 1,
        raw=job.raw,
    )
    lookup = None
    work: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
    failed: list[BaseException] = []
    t0 = time.monotonic()
    with outfiles.open_file(job.out, label, "wb", at_close=True) as out:
        try:
            enc = Encoder(out.f, job)
        except Exception as e:  # PyAV's own errors (a codec missing from this build)
            raise BadInput(f"{label}: cannot start the encoder ({e})") from None
        if job.target.pix_fmt == "pal8":
            enc.palette, lookup = gif_palette(sample_frames(job))

        def encode() -> None:
            try:
                while True:
                    item = work.get()
                    if item is None:
                        break
                    kind, i, data = item
                    if kind == "v":
                        enc.put_video(i, data)
                    else:
                        enc.put_audio(data)
                enc.finish()
            except BaseException as e:  # handed to the drawing thread
                failed.append(e)
                while True:  # unblock the producer, then stop
                    try:
                        if work.get_nowait() is None:
                            break
                    except queue.Empty:
                        time.sleep(0.01)
                        if not worker.is_alive():
                            break

        worker = threading.Thread(target=encode, name="beep-render-encode", daemon=True)
        worker.start()

        def send(item: object) -> None:
            while True:
                if failed:
                    raise failed[0]
                try:
                    work.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        total = job.frames
        rate = job.target.audio_rate
        given = 0  # sound frames handed over
        try:
            for i in range(total):
                pixels = painter.frame(i)
                if lookup is not None:
                    pixels = to_pal8(pixels, lookup)
                send(("v", i, pixels))
                want = round((i + 1) * rate / job.fps)
                if job.target.audio is not None:
                    send(("a", i, sound.take(want - given)))
                given = want
                if progress is not None:
                    progress(i + 1, total, time.monotonic() - t0)
            send(None)
            worker.join()
            if failed:
                raise failed[0]
        except BaseException:
            if worker.is_alive():
                failed.append(KeyboardInterrupt())  # the worker stops at its next item
                try:
                    work.put_nowait(None)
                except queue.Full:
                    pass
                worker.join(timeout=5)
            enc.abandon()
            raise
        out.f.flush()
        size = os.fstat(out.f.fileno()).st_size
    return RenderResult(job.out, total, total / job.fps, time.monotonic() - t0, size)


# ---------------------------------------------------------------- progress line


class ProgressLine:
    """`render: 120/900 frames, 2.4x real time, 0:12 left` on stderr: rewritten in place
    on a terminal (4 a second at most), a line every 5 s otherwise."""

    def __init__(self, stream: Any = None, fps: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.fps = fps
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -math.inf
        self._shown = False

    def __call__(self, done: int, total: int, took: float) -> None:
        now = time.monotonic()
        if done < total and now - self._last < (0.25 if self.tty else 5.0):
            return
        self._last = now
        speed = (done / self.fps) / took if took > 0 else 0.0
        left = (total - done) / self.fps / speed if speed > 0 else 0.0
        text = (
            f"render: {done}/{total} frames, {speed:.1f}x real time, "
            f"{int(left) // 60}:{int(left) % 60:02d} left"
        )
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_render(
    path: str,
    out: str,
    *,
    name: str,
    size: tuple[int, int] | None,
    fps: int | None,
    seed: int | None,
    look: str,
    captions: str,
    style: str = "window",
    say: Callable[[str], None],
) -> int:
    """`beep-av render`: exit 0 with one line naming the file, or BadInput (exit 2)."""
    from beep_av.recording import load

    rec = load(path)
    job = job_for(
        rec, out, name=name, size=size, fps=fps, seed=seed, look=look, captions=captions,
        style=style,
    )  # fmt: skip
    line = ProgressLine(fps=job.fps)
    try:
        result = render(job, progress=line)
    finally:
        line.end()
    mib = result.bytes / (1 << 20)
    speed = result.seconds / result.wall if result.wall > 0 else 0.0
    w, h = job.size
    say(
        f"render: wrote {out} ({w}x{h}, {job.fps} fps, {result.seconds:.1f} s, {mib:.1f} MiB)"
        f" in {result.wall:.1f} s ({speed:.1f}x real time)"
    )
    return 0
