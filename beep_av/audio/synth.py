"""The sound of a show, as pure code: noise shaped by memory pressure, a hard cut at the
kill, then one clean final beep.

`Synth.render(state, out, noise, now)` fills a (frames, 2) float32 block. It keeps only
its continuity state (filter memory, gain, crush hold, stutter segment, beep progress) and
touches no OS: the live PortAudio callback, the WAV export, `render_offline` and the tests
all call it. Inside a block it allocates no numpy arrays (scratch is preallocated), so it
is fit for the real-time callback."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from beep_av.model import Phase, ShowState
from beep_av.noise import Noise
from beep_av.summary import cpu_figures

RATE = 48000
BLOCK = 512  # frames per block, live and offline (10.7 ms at 48 kHz)
PEAK = 0.9  # nothing louder ever leaves the synth
BEEP_LEVEL = 0.5  # sine amplitude of the final beep
MIN_TAIL_MS = 150.0  # silence after the last beep before the show may end


@dataclass(frozen=True)
class BeepSpec:
    """The final beep: `repeats` tones of `length_ms` at `freq` Hz, `gap_ms` apart, each
    with `fade_ms` raised-cosine edges; `lead_ms` of silence after the cut and `tail_ms`
    (at least 150 ms) of silence after the last tone."""

    freq: float = 880.0
    length_ms: float = 400.0
    repeats: int = 1
    gap_ms: float = 150.0
    fade_ms: float = 5.0
    lead_ms: float = 5.0
    tail_ms: float = 200.0


# ---------------------------------------------------------------- the noise voice


class VoiceParams(NamedTuple):
    """What the noise voice does in one block."""

    gain: float  # linear, applied to unit-RMS-normalised filtered noise in [-1, 1)
    cutoff_hz: float  # one-pole low-pass cutoff: murmur (low) .. hiss (high)
    bits: int  # bit-depth crush; 16 means none
    hold: int  # sample-rate crush: each sample held this many frames
    drop: float  # probability a stutter segment is silent
    stutter: float  # probability a stutter segment is chopped


def _unit(x: float) -> float:
    """Clamp to [0, 1]; NaN and junk count as 0 (a bad reading must not blast noise)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(x):
        return 0.0
    return min(1.0, max(0.0, x))


def voice_params(state: ShowState, muted: bool = False) -> VoiceParams:
    """Map a ShowState to the noise voice's settings. Gains are chosen so the noise RMS
    orders calm < filling < evicting < swapping whatever the intensity and stall."""
    i = _unit(state.intensity)
    stall = _unit(state.stall)
    phase = state.phase
    if phase is Phase.CALM:
        p = VoiceParams(0.03 + 0.01 * i, 250.0 + 400.0 * i, 16, 1, 0.0, 0.0)
    elif phase is Phase.FILLING:
        p = VoiceParams(0.05 + 0.03 * i, 600.0 + 1400.0 * i, 14, 1, 0.0, 0.0)
    elif phase is Phase.EVICTING:
        p = VoiceParams(
            0.10 + 0.05 * i, 2000.0 + 6000.0 * i, 10 - round(2 * i), 1 + round(2 * i), 0.0, 0.0
        )
    elif phase is Phase.SWAPPING:
        drop = 0.05 + 0.25 * stall
        chop = 0.1 + 0.2 * stall
        # dropped and chopped segments take power away: give it back on average, so
        # stalls make the noise broken, not quieter
        kept = 1.0 - drop - 0.5 * chop
        p = VoiceParams(
            (0.26 + 0.08 * i) / math.sqrt(kept),
            min(16000.0, 8000.0 + 8000.0 * i),
            8 - round(4 * stall),
            2 + round(6 * stall),
            drop,
            chop,
        )
    else:  # oom, finale: the noise stops dead
        p = VoiceParams(0.0, 250.0, 16, 1, 0.0, 0.0)
    if state.gauge == "cpu" and phase is not Phase.FINALE:
        # the work against full speed (the gauge's figure): slower work, darker and
        # coarser noise; the throttled share of periods (stall) drops segments out
        speed = cpu_figures(state)[0] if phase is not Phase.CALM else 1.0
        p = VoiceParams(
            0.12 if phase is not Phase.CALM else 0.04,
            300.0 + 9000.0 * speed,
            16 - round(8 * (1 - speed)),
            1 + round(7 * (1 - speed)),
            0.5 * stall,
            0.0,
        )
    if muted or state.muted:
        p = p._replace(gain=0.0)
    return p


SWAPIN_LOUD = 100_000.0  # pages/s at which the read-back's crackle is at full level


def swapin_params(pages_per_s: float) -> VoiceParams:
    """The bystander's read-back, heard: a sparse, bright crackle (segments drop out and
    chop) after the beep, louder with the swap-in rate (log scale: 100 pages/s is
    faint, 100,000 full). The presenter's mute silences it, as it does the noise."""
    r = max(1.0, float(pages_per_s)) if math.isfinite(pages_per_s) else 1.0
    level = min(1.0, math.log10(r) / math.log10(SWAPIN_LOUD))
    return VoiceParams(0.05 + 0.15 * level, 9000.0, 16, 1, 0.3, 0.4)


STUTTER_SEGMENT = 1024  # frames (21 ms): one play/drop/chop decision each
CHOP = 64  # frames on, frames off inside a chopped segment
MAX_HOLD = 8  # the largest sample-rate crush voice_params asks for


class _Views:
    """Every view of the scratch arrays that a block of `n` frames uses, made once per
    block size: a slice is a new ndarray object, and a block would otherwise make ~40
    of them. (n, 2) everywhere, C-contiguous, so no ufunc needs a broadcast or cast
    buffer (a (n, 1) column operand costs a 5 KiB buffer per call)."""

    __slots__ = (
        "n",
        "x",
        "y",
        "t",
        "o",
        "y0",
        "y_last",
        "t_last",
        "scan",
        "idx",
        "iota",
        "t_head",
        "unit",
        "ramp",
    )

    def __init__(self, s: Synth, n: int) -> None:
        self.n = n
        self.x, self.y, self.t, self.o = s._x[:n], s._y[:n], s._t[:n], s._o[:n]
        self.y0 = self.y[0]
        self.y_last, self.t_last = self.y[n - 1], self.t[n - 1]
        # the low-pass scan's step of size s: y[s:] += b**s * y[:-s], through t
        self.scan = []
        step = 1
        while step < n:
            self.scan.append((self.y[: n - step], self.t[: n - step], self.y[step:n]))
            step *= 2
        self.idx, self.iota = s._idx[:n], s._iota[:n]
        self.t_head = [self.t[:k] for k in range(min(n, MAX_HOLD) + 1)]
        # k/n for the gain ramp, in both channels (computed in float64, as float32)
        self.unit = s._unit[:n]
        self.unit[:, 0] = np.arange(n, dtype=np.float64) * (1.0 / n)
        self.unit[:, 1] = self.unit[:, 0]
        self.ramp = s._ramp[:n]


class Synth:
    """Renders blocks of a show's sound. `muted` silences the noise only: the beep
    always sounds (it is the point of the show). Not thread-safe: one owner."""

    def __init__(
        self, rate: int = RATE, beep: BeepSpec | None = None, max_block: int = 4096
    ) -> None:
        if rate <= 0 or max_block <= 0:
            raise ValueError("rate and max_block must be positive")
        self.rate = int(rate)
        self.beep = beep or BeepSpec()
        self.max_block = int(max_block)
        self.muted = False
        # continuity state
        self._z = np.zeros(2, dtype=np.float32)  # low-pass memory per channel
        self._gain = 0.0  # noise gain at the end of the last block
        self._cutoff = 250.0
        self._frame = 0  # frames of noise voice rendered (crush hold grid)
        self._held = np.zeros(2, dtype=np.float32)
        self._seg_pos = 0
        self._seg_mode = 0  # 0 play, 1 drop, 2 chop
        self._beep_pos = -1  # frames since the cut; -1 before the kill
        self._beep_oom_t: float | None = None  # the kill (state.oom_t) last beeped for
        self.cut_t: float | None = None  # show time of the first silent (kill) frame
        self.beep_t: float | None = None  # show time the first beep sample was rendered
        self.finished = False  # beep(s) and the tail silence are rendered
        self.finished_t: float | None = None
        # beep timeline, in frames
        b = self.beep
        ms = self.rate / 1000.0
        self._lead = max(0, round(b.lead_ms * ms))
        self._tone = max(1, round(b.length_ms * ms))
        self._gap = max(0, round(b.gap_ms * ms))
        self._fade = max(1, min(round(b.fade_ms * ms), self._tone // 2))
        self._tail = round(max(MIN_TAIL_MS, b.tail_ms) * ms)
        self._w = 2.0 * math.pi * float(b.freq) / self.rate
        self._plan(())
        # scratch: everything a block needs, allocated once
        n = self.max_block
        self._x = np.empty((n, 2), dtype=np.float32)
        self._y = np.empty((n, 2), dtype=np.float32)
        self._t = np.empty((n, 2), dtype=np.float32)
        self._o = np.empty((n, 2), dtype=np.float32)  # the block before the final clip
        self._iota = np.arange(n, dtype=np.int64)
        self._idx = np.empty(n, dtype=np.int64)
        self._ramp = np.empty((n, 2), dtype=np.float32)
        self._unit = np.empty((n, 2), dtype=np.float32)
        self._f64 = np.empty(n, dtype=np.float64)
        self._e64 = np.empty(n, dtype=np.float64)
        self._iota64 = np.arange(n, dtype=np.float64)
        self._u = np.empty(2, dtype=np.float32)
        self._zb = np.empty(2, dtype=np.float32)
        self._views: _Views | None = None  # for the last block size

    def _plan(self, closing: tuple[float, ...]) -> None:
        """The tones after the cut: the beep `repeats` times, or an act's closing tones
        (Hz, one each, in turn: the throttle act ends on another sound than the beep)."""
        reps = len(closing) if closing else max(1, int(self.beep.repeats))
        self._starts = [self._lead + r * (self._tone + self._gap) for r in range(reps)]
        self._ws = [2.0 * math.pi * float(f) / self.rate for f in closing] or [self._w] * reps
        self._total = self._starts[-1] + self._tone + self._tail

    @property
    def beep_frames(self) -> int:
        """Frames from the cut to the end of the tail silence."""
        return self._total

    # ------------------------------------------------------------ one block

    def render(self, state: ShowState, out: np.ndarray, noise: Noise, now: float) -> None:
        """Fill `out` ((frames, 2) float32) with the sound of `state`; `now` is the show
        time (s) of the block's first frame. Always writes every sample."""
        if out.ndim != 2 or out.shape[1] != 2 or out.dtype != np.float32:
            raise ValueError("out must be a (frames, 2) float32 array")
        frames = out.shape[0]
        if frames <= self.max_block:  # the live case: no slice of `out` to make
            if frames:
                self._render_block(state, out, noise, now)
            return
        done = 0
        while done < frames:  # blocks longer than the scratch go in pieces
            n = min(self.max_block, frames - done)
            self._render_block(state, out[done : done + n], noise, now + done / self.rate)
            done += n

    def _render_block(self, state: ShowState, out: np.ndarray, noise: Noise, now: float) -> None:
        n = out.shape[0]
        v = self._views
        if v is None or v.n != n:
            v = self._views = _Views(self, n)  # once per block size, not per block
        killed = state.phase is Phase.OOM or state.phase is Phase.FINALE
        if not killed and self.finished:
            self._beep_pos = -1  # watch mode: back to watching after a kill's beep
        # a new oom_t is a new kill (watch mode beeps at every one; a show has one)
        again = state.oom_t is not None and state.oom_t != self._beep_oom_t
        if killed and (self._beep_pos < 0 or again):
            self._beep_pos = 0
            self._beep_oom_t = state.oom_t
            self.beep_t = None
            self.finished = False
            self.cut_t = now
            self._gain = 0.0  # a hard cut, no fade: the noise stops dead
            view = state.act_view
            self._plan(tuple(view.closing) if view is not None else ())
        o = v.o
        view = state.act_view
        if self._beep_pos < 0:
            if self._noise(state, v, noise, out):
                return  # bounded below PEAK: written straight into `out`, no clip
        elif self.finished and view is not None and view.swapins is not None:
            # after the beep and its tail: the bystander's swap-ins while it reads back
            p = swapin_params(view.swapins)
            if self.muted or state.muted:
                p = p._replace(gain=0.0)
            if self._noise(state, v, noise, out, p):
                return
        else:
            if self.finished:
                self._gain = 0.0  # a read-back's crackle is over: it stops dead, too
            o.fill(0.0)
            self._beep(o, n, now)
        # the clip writes the block out
        np.minimum(o, PEAK, out=o)
        np.maximum(o, -PEAK, out=out)

    def _noise(
        self,
        state: ShowState,
        v: _Views,
        noise: Noise,
        dest: np.ndarray,
        p: VoiceParams | None = None,
    ) -> bool:
        """The noise voice of one block (`p`: its settings, else the state's): into
        `dest` when it cannot exceed PEAK (True), else into v.o for the caller to clip
        (False)."""
        if p is None:
            p = voice_params(state, self.muted)
        n = v.n
        x, y, t = v.x, v.y, v.t
        noise.fill_uniform(x)
        # brightness: a one-pole low-pass y[k] = a x[k] + b y[k-1]; the cutoff glides
        # between blocks so a phase change does not click
        self._cutoff += 0.5 * (p.cutoff_hz - self._cutoff)
        a = 1.0 - math.exp(-2.0 * math.pi * self._cutoff / self.rate)
        b = 1.0 - a
        # Python floats, not np.float32(...): a float32 array with a Python scalar
        # computes in float32 all the same (NEP 50), and makes no numpy scalar object
        np.multiply(x, a, out=y)
        np.multiply(self._z, b, out=self._zb)
        np.add(v.y0, self._zb, out=v.y0)
        # log-step scan: after the step of size s, y[k] sums the last 2s inputs; once
        # b**s is below float32 resolution the older inputs no longer count (bright
        # cutoffs need 4-5 steps, not 9)
        bs = b
        for head, tmp, tail in v.scan:
            if bs <= 1e-8:
                break
            # through a second buffer: an in-place overlapping add would copy
            np.multiply(head, bs, out=tmp)
            np.add(tail, tmp, out=tail)
            bs *= bs
        np.copyto(self._z, v.y_last)
        # keep loudness independent of brightness: white noise through this filter
        # keeps a/(2-a) of its power
        norm = math.sqrt((2.0 - a) / a) if a > 0 else 1.0
        # grain, sample-rate crush: hold every sample `hold` frames on a global grid
        h = max(1, min(MAX_HOLD, int(p.hold)))
        y_last = v.y_last
        if h > 1:
            idx = v.idx
            np.add(v.iota, self._frame, out=idx)
            np.floor_divide(idx, h, out=idx)
            np.multiply(idx, h, out=idx)
            np.subtract(idx, self._frame, out=idx)
            np.maximum(idx, 0, out=idx)
            # mode="clip": the indices are in range anyway, and the default "raise"
            # buffers `out` (a copy per call)
            np.take(y, idx, axis=0, out=t, mode="clip")
            k = (h - self._frame % h) % h  # frames still holding the last block's value
            if k:
                v.t_head[min(k, n, MAX_HOLD)][:] = self._held
            y, y_last = t, v.t_last  # the held signal is in t now: swap roles, no copy
        np.copyto(self._held, y_last)
        self._frame += n
        # grain, bit-depth crush; the final scale folds into the gain ramp below
        if p.bits < 16:
            q = float(2 ** (max(2, p.bits) - 1))
            np.multiply(y, norm * q, out=y)
            np.rint(y, out=y)
            scale = 1.0 / q
            reach = norm + 0.5 / q  # rint adds at most half a step
        else:
            scale = norm
            reach = norm
        # |y| <= 1 (a one-pole low-pass with a + b = 1 of inputs in [-1, 1)), so the
        # block stays within max gain x reach: most blocks need no clip at all
        g0, g1 = self._gain, p.gain
        direct = max(g0, g1) * reach <= PEAK
        out = dest if direct else v.o
        # loudness: a linear ramp from the last block's gain to this one's
        if g1 == g0:
            np.multiply(y, scale * g0, out=out)
        else:
            ramp = v.ramp
            np.multiply(v.unit, scale * (g1 - g0), out=ramp)
            np.add(ramp, scale * g0, out=ramp)
            np.multiply(y, ramp, out=out)
        self._gain = g1
        # stutter: 21 ms segments that play, drop out, or chop, as often as PSI stalls
        pos = 0
        while pos < n:
            if self._seg_pos == 0:
                noise.fill_uniform(self._u)
                u = 0.5 * (float(self._u[0]) + 1.0)
                if u < p.drop:
                    self._seg_mode = 1
                elif u < p.drop + p.stutter:
                    self._seg_mode = 2
                else:
                    self._seg_mode = 0
            run = min(n - pos, STUTTER_SEGMENT - self._seg_pos)
            if self._seg_mode == 1:
                out[pos : pos + run] = 0.0
            elif self._seg_mode == 2:
                c = 0
                while c < run:
                    sp = self._seg_pos + c
                    piece = min(run - c, CHOP - sp % CHOP)
                    if (sp // CHOP) % 2 == 1:
                        out[pos + c : pos + c + piece] = 0.0
                    c += piece
            pos += run
            self._seg_pos = (self._seg_pos + run) % STUTTER_SEGMENT
        return direct

    def _beep(self, out: np.ndarray, n: int, now: float) -> None:
        pos = self._beep_pos
        if self.beep_t is None and pos <= self._lead < pos + n:
            self.beep_t = now + (self._lead - pos) / self.rate
        for start, w in zip(self._starts, self._ws, strict=True):
            lo = max(pos, start)
            hi = min(pos + n, start + self._tone)
            if lo >= hi:
                continue
            m = hi - lo
            local = self._f64[:m]
            np.add(self._iota64[:m], float(lo - start), out=local)
            # raised-cosine edges: 0 at the first and last sample of the tone
            env = self._e64[:m]
            np.subtract(float(self._tone - 1), local, out=env)
            np.minimum(env, local, out=env)
            np.multiply(env, 1.0 / self._fade, out=env)
            np.minimum(env, 1.0, out=env)
            np.maximum(env, 0.0, out=env)
            np.multiply(env, math.pi, out=env)
            np.cos(env, out=env)
            np.multiply(env, -0.5 * BEEP_LEVEL, out=env)
            np.add(env, 0.5 * BEEP_LEVEL, out=env)
            # phase from the tone's own frame count: no accumulated drift, same offline
            np.multiply(local, w, out=local)
            np.sin(local, out=local)
            np.multiply(local, env, out=local)
            a = lo - pos
            out[a : a + m, 0] = local
            out[a : a + m, 1] = local
        self._beep_pos = pos + n
        if not self.finished and self._beep_pos >= self._total:
            self.finished = True
            self.finished_t = now + (self._total - pos) / self.rate


# ---------------------------------------------------------------- offline


def state_at(timeline: Sequence[tuple[float, ShowState]], t: float) -> ShowState:
    """The latest state published at or before show time `t` (s); the first one before
    anything was published. `timeline` is sorted by time."""
    current = timeline[0][1] if timeline else ShowState()
    for ts, st in timeline:
        if ts <= t:
            current = st
        else:
            break
    return current


def render_offline(
    timeline: Sequence[tuple[float, ShowState]],
    duration: float,
    *,
    rate: int = RATE,
    beep: BeepSpec | None = None,
    seed: int = 0,
    raw: bool = False,
    blocksize: int = BLOCK,
    muted: bool = False,
) -> np.ndarray:
    """Render `duration` s of a show whose states are `timeline` ([(show time s, state)])
    into a (frames, 2) float32 array, block by block exactly as the live callback does:
    each block sounds the state published at its first frame's time."""
    if not (duration >= 0) or not math.isfinite(duration):
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration!r}")
    sound = OfflineSound(
        timeline, rate=rate, beep=beep, seed=seed, raw=raw, blocksize=blocksize, muted=muted
    )
    return sound.take(round(duration * rate))


class OfflineSound:
    """A show's sound rendered in order, as much as asked each time (`take`): block by
    block exactly as the live callback does (each block sounds the state published at
    its first frame's time), so taking it in pieces gives the same samples as taking it
    whole. `beep-av render` takes one video frame's worth at a time."""

    def __init__(
        self,
        timeline: Iterable[tuple[float, ShowState]],
        *,
        rate: int = RATE,
        beep: BeepSpec | None = None,
        seed: int | None = 0,
        raw: bool = False,
        blocksize: int = BLOCK,
        muted: bool = False,
    ) -> None:
        if blocksize <= 0:
            raise ValueError("blocksize must be positive")
        self.rate = int(rate)
        self.blocksize = int(blocksize)
        self.synth = Synth(rate, beep, max_block=blocksize)
        self.synth.muted = muted
        self.noise = Noise(seed=seed, raw=raw)
        # a sequence is sorted here; an iterator is read as time goes, in its own order
        # (a recording's states: an hour of them is never held whole)
        if isinstance(timeline, Sequence):
            timeline = sorted(timeline, key=lambda e: e[0])
        self._it = iter(timeline)
        first = next(self._it, None)
        self._current = first[1] if first is not None else ShowState()
        self._pending = next(self._it, None) if first is not None else None
        self._k = 0  # frames rendered into blocks so far
        self._block = np.zeros((self.blocksize, 2), dtype=np.float32)
        self._pos = self.blocksize  # frames of the current block already handed out

    def take(self, frames: int) -> np.ndarray:
        """The next `frames` frames, (frames, 2) float32."""
        out = np.empty((max(0, int(frames)), 2), dtype=np.float32)
        done = 0
        while done < out.shape[0]:
            if self._pos >= self.blocksize:
                self._next_block()
            m = min(out.shape[0] - done, self.blocksize - self._pos)
            out[done : done + m] = self._block[self._pos : self._pos + m]
            self._pos += m
            done += m
        return out

    def _next_block(self) -> None:
        now = self._k / self.rate
        while self._pending is not None and self._pending[0] <= now:
            self._current = self._pending[1]
            self._pending = next(self._it, None)
        self.synth.render(self._current, self._block, self.noise, now)
        self._k += self.blocksize
        self._pos = 0


def scripted_timeline(
    calm: float = 1.0, evicting: float = 1.0, swapping: float = 1.0, stall: float = 0.6
) -> list[tuple[float, ShowState]]:
    """A show in brief for tests and benchmarks: calm, evicting, swapping (with `stall`),
    then oom; durations in s. The oom state's time is the last entry's."""
    t1 = calm
    t2 = t1 + evicting
    t3 = t2 + swapping
    entered = [(Phase.CALM, 0.0)]
    out = [(0.0, ShowState(t=0.0, phase=Phase.CALM, intensity=0.05, entered=tuple(entered)))]
    entered.append((Phase.EVICTING, t1))
    out.append((t1, ShowState(t=t1, phase=Phase.EVICTING, intensity=0.5, entered=tuple(entered))))
    entered.append((Phase.SWAPPING, t2))
    out.append(
        (
            t2,
            ShowState(
                t=t2, phase=Phase.SWAPPING, intensity=0.85, stall=stall, entered=tuple(entered)
            ),
        )
    )
    entered.append((Phase.OOM, t3))
    out.append(
        (t3, ShowState(t=t3, phase=Phase.OOM, intensity=1.0, entered=tuple(entered), oom_t=t3))
    )
    return out
