"""Recordings: JSON Lines, `format: beep-av/1` (DESIGN.md "Recording").

Writer: `Recorder` turns the stream of published ShowStates into `sample` lines, plus
`phase`, `skip` and `kill` lines found by diffing with the previous state, and takes
`beep` and `end` lines from the conductor; its own thread encodes and writes them, the
callers only queue. Line-buffered, no fsync: a crash leaves whole lines and at most one
truncated last line.

Reader: `load(path) -> Recording` with the samples as numpy columns and the events in
order. Anything that is not a recording raises BadInput naming the file."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beep_av import __version__, outfiles
from beep_av.errors import BadInput
from beep_av.model import PHASES, KillRecord, Phase, ShowState

FORMAT = "beep-av/1"
FORMAT_PREFIX = "beep-av/"
EVENT_TYPES = ("phase", "skip", "kill", "beep", "end")
# an act's lines (beep-av/1, compatibly: older readers ignore unknown types): `lanes`
# (the act's processes at a sample: name, pid, colour, rss, swap, oom_score,
# oom_score_adj, alive, work_rate, full_rate, work_unit), `act` (an act's event: `event` and its fields) and
# `view` (what the act shows and plays from then on: VIEW_KEYS, written when it changes;
# a replay performs the act's card, captions, notes and closing tones from them)
ACT_TYPES = ("lanes", "act", "view")
VIEW_KEYS = ("caption", "title", "card", "closing", "speed", "note", "swapins", "word")

# Sample columns in the order the writer puts them; "phase" is stored as Phase.index.
INT_COLUMNS = (
    "ram",
    "cache",
    "swap",
    "usage",
    "ram_limit",
    "swap_limit",
    "psi_some_us",
    "psi_full_us",
    "hog",
)
FLOAT_COLUMNS = ("t", "intensity", "stall")
# what a sample's `intensity` means, said in the header: how hard the stage is pressed,
# [0, 1], in every act (a CPU gauge: the share of work held back). A throttle recording
# made before the header said so kept its work speed there (Recording reads it back).
INTENSITY = "pressure"
SAMPLE_KEYS = ("t", *INT_COLUMNS, "intensity", "stall", "phase")
KILL_KEYS = (
    "pid",
    "name",
    "exit",
    "signal",
    "oom_kill_count",
    "kmsg",
    "anon_rss_kib",
    "detected_by",
    "latency_ms",  # absent when no kernel time was comparable with the show's
    "hog",  # false: the kernel killed another process, not the hog
    "oom",  # false: a SIGKILL from user space, not an OOM kill
    "killer",  # "kernel", "user space", "systemd-oomd", ...
)

# ---------------------------------------------------------------- writer


def check_writable(path: str) -> None:
    """Raise BadInput (one line naming `path`) unless a recording can be written there
    (outfiles' rules: no planted link or file of another user is written). Creates
    nothing: the CLI calls it before the show starts."""
    outfiles.check_file(path, f"--record {path}")


def _r(x: float, nd: int) -> float:
    """Round for the file; non-finite floats are not JSON, they become 0."""
    return round(float(x), nd) if math.isfinite(x) else 0.0


def kill_fields(kill: KillRecord) -> dict[str, Any]:
    """A KillRecord as the `kill` line's fields (without type and t). `latency_ms` is
    left out when unknown: never a 0 that measures nothing."""
    fields: dict[str, Any] = {
        "pid": kill.pid,
        "name": kill.name,
        "exit": kill.exit,
        "signal": kill.signal,
        "oom_kill_count": kill.oom_kill_count,
        "kmsg": kill.kmsg,
        "anon_rss_kib": kill.anon_rss_kib,
        "detected_by": list(kill.detected_by),
    }
    if kill.latency_ms is not None and math.isfinite(kill.latency_ms):
        fields["latency_ms"] = round(float(kill.latency_ms), 3)
    fields.update(hog=kill.hog, oom=kill.oom, killer=kill.killer)
    if kill.engine:  # the container stage: the engine's fields (readers ignore unknown keys)
        fields.update({k: v for k, v in kill.engine.items() if k not in fields})
    if kill.report:  # the kernel's whole report: trigger, constraint, candidates, rank
        fields.update({k: kill.report.get(k) for k in REPORT_KEYS})
    return fields


# the kernel's whole report in a `kill` line (KillRecord.report, oomreport.kill_fields)
REPORT_KEYS = ("trigger", "constraint", "candidates", "victim_rank")


# the container stage's fields of a `kill` line (KillRecord.engine), for a reader
ENGINE_KEYS = (
    "engine", "container", "image", "oom_killed", "exit_code", "restart_count",
    "engine_restart_count", "engine_events", "engine_die_t", "engine_source", "engine_oom_t",
    "engine_latency_ms", "restarts_max", "backoff_s",
)  # fmt: skip


def view_fields(view) -> dict[str, Any]:
    """A model.ActView's shown parts (VIEW_KEYS) as a `view` line's fields."""
    return {
        "caption": view.caption,
        "title": view.title,
        "card": list(view.card),
        "closing": [_r(f, 3) for f in view.closing],
        "speed": _r(view.speed, 4),
        "note": view.note,
        "swapins": None if view.swapins is None else _r(view.swapins, 1),
        "word": view.word,
    }


def lane_fields(lane) -> dict[str, Any]:
    """A model.Lane as a `lanes` line's item (`work_unit` only when it is not the
    default iterations, so older lines read back the same)."""
    unit = {"work_unit": lane.work_unit} if lane.work_unit != "it/s" else {}
    return {
        "name": lane.name,
        "pid": lane.pid,
        "colour": lane.colour,
        "rss": int(lane.rss),
        "swap": int(lane.swap),
        "oom_score": lane.oom_score,
        "oom_score_adj": lane.oom_score_adj,
        "alive": lane.alive,
        "work_rate": lane.work_rate,
        "full_rate": lane.full_rate,
        **unit,
    }


MAX_PENDING = 4096  # states queued for the writer (~80 s at 50 Hz) before samples drop
WRITER_JOIN_S = 10.0  # close() waits this long for the writer to finish the file


class Recorder:
    """Writes one recording. `header` carries stage, ram_limit, swap_limit, cache_bytes,
    rate, kernel, date, seed, hz (free-form: readers keep every key).

    The callers only queue: a writer thread of its own turns the queued states and
    events into lines, in order, and writes them (JSON and write(2) are off the
    sampling thread, which a full memory domain or a slow disk would otherwise stall).
    Any thread may call it; never the audio callback. While the writer is MAX_PENDING
    states behind, states that would only add a `sample` line are dropped and counted
    (`dropped`); phases, skips, kills, beep and end are always kept.

    `every_kill` (watch mode): a `kill` line for each distinct kill reaching finale, and
    a `phase` line for each new (phase, t) in `entered` (a watch's phase may fall back
    and enter a phase again). A show keeps one kill line and one line per phase.

    A write that fails mid-show (disk full) stops the recording, not the show: `say`
    gets one line, `failed` says why, and the file keeps every whole line written.
    Line-buffered, no fsync: a crash leaves whole lines and at most one truncated last
    line; `flush()` waits until what was queued is written."""

    def __init__(
        self,
        path: str,
        header: dict[str, Any],
        every_kill: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.failed: str | None = None
        self.dropped = 0  # sample lines dropped while the writer was behind
        self._say = say
        # buffering=1: line-buffered text, one write(2) per line, no fsync; the file
        # takes its name at once, so a crashed show leaves its whole lines (BadInput)
        self._out = outfiles.open_file(path, f"--record {path}", "w", encoding="utf-8", buffering=1)
        self._f = self._out.f
        # the writer thread's own state: what it wrote so far
        self._prev: ShowState | None = None
        self._kill_written = False
        self._last_kill: KillRecord | None = None
        self.every_kill = every_kill
        self._kills_written: set[tuple[float, int]] = set()  # (t, pid) of kill lines
        # between callers and the writer: a deque (append and popleft are atomic, the
        # callers never wait) and an event that wakes the writer
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = threading.Event()
        self._queued = 0  # items appended (callers)
        self._done = 0  # items handled (writer)
        self._last_queued: ShowState | None = None
        self._closing = False
        self._bystanders_written = 0  # kills of others (hog false) written so far
        self._act_written = 0  # act events written so far
        self._view_written: dict[str, Any] | None = None  # the last `view` line's fields
        head = {"type": "header", "format": FORMAT, "version": __version__,
                "intensity": INTENSITY}  # fmt: skip
        head.update({k: v for k, v in header.items() if k not in ("type", "format")})
        self._put("line", head)
        self._thread = threading.Thread(target=self._run, name="beep-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ callers' side

    def _put(self, kind: str, item: Any) -> None:
        self._queue.append((kind, item))
        self._queued += 1
        self._wake.set()

    def write_state(self, state: ShowState) -> None:
        """Queue one state: its `sample` line, plus `phase`/`skip` lines for what is
        new since the previous state, plus the `kill` line once it reaches finale."""
        if self._closing:
            return
        last = self._last_queued
        if (
            len(self._queue) >= MAX_PENDING
            and last is not None
            and state.phase is last.phase
            and state.kill == last.kill
            and state.entered == last.entered
            and state.skipped == last.skipped
        ):
            self.dropped += 1  # only a sample line: the show must not wait for a disk
            return
        self._last_queued = state
        self._put("state", state)

    def kill(self, kill: KillRecord) -> None:
        """A `kill` line for `kill` unless one was written already (watch mode: kills
        still waiting for the stage when the watch ends)."""
        if not self._closing:
            self._put("kill", kill)

    def beep(self, t: float, **fields: Any) -> None:
        """A `beep` line: pass freq (Hz) and length_ms, and anything else worth keeping."""
        if not self._closing:
            self._put("line", {"type": "beep", "t": _r(t, 4), **fields})

    def pause(self, t: float, seconds: float, reason: str = "suspended") -> None:
        """A `pause` line: the show stood still at `t` for `seconds` (Ctrl-Z, then `fg`)
        that its clock does not count: the next line's `t` goes on from `t`."""
        if not self._closing:
            self._put("line", {"type": "pause", "t": _r(t, 4), "seconds": _r(seconds, 3),
                               "reason": reason})  # fmt: skip

    def log(self, t: float, text: str, source: str = "library") -> None:
        """A `log` line: a message a C library wrote to stderr (PortAudio, ALSA), kept
        here instead of on the user's terminal (quiet.StderrFilter)."""
        if not self._closing:
            self._put("line", {"type": "log", "t": _r(t, 4), "source": source, "text": text[:500]})

    def end(self, t: float, reason: str, **fields: Any) -> None:
        """An `end` line: why the show ended (finale, quit, released, interrupted...)."""
        if not self._closing:
            self._put("line", {"type": "end", "t": _r(t, 4), "reason": reason, **fields})

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (not fsynced); False if the
        writer did not get there within `timeout` s."""
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._done < target and self._thread.is_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return self._done >= target

    def close(self) -> None:
        """Write a kill that was never written (show ended before finale), finish the
        file and stop the writer. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        self._put("close", None)
        self._thread.join(WRITER_JOIN_S)
        if self._thread.is_alive() and self._say is not None:
            self._say(f"recording: {self.path} is still being written; its end may be missing")
        if self.dropped and self._say is not None:
            self._say(
                f"recording: {self.dropped} samples dropped (the disk was slower than the show)"
            )

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(1.0)
            self._wake.clear()  # before draining: a put after this wakes the next round
            while queue:
                kind, item = queue.popleft()
                try:
                    if kind == "close":
                        self._finish()
                        return
                    if self.failed is None:
                        if kind == "state":
                            self._lines_of(item)
                        elif kind == "kill":
                            if (item.t, item.pid) not in self._kills_written:
                                self._write_kill(item)
                        else:
                            self._line(item)
                finally:
                    self._done += 1

    def _line(self, obj: dict[str, Any]) -> None:
        if self._f.closed or self.failed is not None:
            return
        try:
            self._f.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
        except OSError as e:
            self._stop_recording(e)

    def _stop_recording(self, e: OSError) -> None:
        """Disk full (or gone): stop writing, keep the show going, say so once."""
        self.failed = f"{self.path}: {e.strerror or e}"
        try:
            self._f.close()  # flushing the rest fails again on a full disk: drop it
        except OSError:
            pass
        if self._say is not None:
            self._say(f"recording: stopped, cannot write {self.failed}; the show goes on")

    def _lines_of(self, state: ShowState) -> None:
        s = state.snapshot
        prev = self._prev
        seen: set = set(prev.entered) if prev is not None else set()
        if not self.every_kill:
            seen = {p for p, _ in seen}
        for p, t in state.entered:
            if (p if not self.every_kill else (p, t)) not in seen:
                self._line({"type": "phase", "t": _r(t, 4), "phase": p.value})
        seen_skips = set(prev.skipped) if prev is not None else set()
        for p, reason in state.skipped:
            if (p, reason) not in seen_skips:
                self._line(
                    {"type": "skip", "t": _r(state.t, 4), "phase": p.value, "reason": reason}
                )
        # The writer's exact key order is the reader's fast path: keep it in sync
        # with SAMPLE_KEYS.
        self._line(
            {
                "type": "sample",
                "t": _r(state.t, 4),
                "ram": int(s.anon_bytes),
                "cache": int(s.cache_bytes),
                "swap": int(s.swap_bytes),
                "usage": int(s.usage_bytes),
                "ram_limit": int(s.ram_limit),
                "swap_limit": int(s.swap_limit),
                "psi_some_us": int(s.psi_some_us),
                "psi_full_us": int(s.psi_full_us),
                "hog": int(s.hog_bytes),
                "intensity": _r(state.intensity, 4),
                "stall": _r(state.stall, 4),
                "phase": state.phase.value,
            }
        )
        if state.lanes and (prev is None or state.lanes != prev.lanes):
            self._line(
                {
                    "type": "lanes",
                    "t": _r(state.t, 4),
                    "lanes": [lane_fields(x) for x in state.lanes],
                }
            )
        view = state.act_view
        if view is not None and len(view.events) > self._act_written:
            for e in view.events[self._act_written :]:
                self._line({"type": "act", **e})
            self._act_written = len(view.events)
        if view is not None:
            shown = view_fields(view)
            if shown != self._view_written:
                self._line({"type": "view", "t": _r(state.t, 4), **shown})
                self._view_written = shown
        self._write_bystanders(state)
        if state.kill is not None:
            self._last_kill = state.kill
            if state.phase is Phase.FINALE and (
                not self._kill_written
                or (self.every_kill and (state.kill.t, state.kill.pid) not in self._kills_written)
            ):
                self._write_kill(state.kill)
                self._write_bystanders(state)
        self._prev = state

    def _write_bystanders(self, state: ShowState) -> None:
        """The kill lines of other processes (hog false) not written yet, in time order
        with the hog's: one that came after the hog's kill waits for the hog's line (a
        replay publishes the kernel's second kill before the finale writes the first)."""
        hog = state.kill if not self._kill_written and not self.every_kill else None
        for b in state.bystanders[self._bystanders_written :]:
            if hog is not None and b.t > hog.t:
                return
            self._line({"type": "kill", "t": _r(b.t, 4), **kill_fields(b)})
            self._bystanders_written += 1

    def _write_kill(self, kill: KillRecord) -> None:
        self._line({"type": "kill", "t": _r(kill.t, 4), **kill_fields(kill)})
        self._kill_written = True
        self._kills_written.add((kill.t, kill.pid))

    def _finish(self) -> None:
        if self._f.closed:
            return
        last = self._last_kill
        if last is not None and (
            not self._kill_written
            or (self.every_kill and (last.t, last.pid) not in self._kills_written)
        ):
            self._write_kill(last)
        if self._prev is not None:
            self._write_bystanders(self._prev)  # those held back for the hog's line
        try:
            self._f.close()
        except OSError as e:  # the last lines did not fit on the disk
            self._stop_recording(e)


# ---------------------------------------------------------------- reader


@dataclass
class Recording:
    """A loaded recording. `samples` maps each column of SAMPLE_KEYS to a numpy array
    (bytes as int64, t/intensity/stall as float64, phase as int8 Phase.index);
    `events` are the phase/skip/kill/beep/end records in file order (dicts)."""

    path: str
    header: dict[str, Any]
    samples: dict[str, np.ndarray]
    events: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # the last line was cut short (a crashed show)
    lanes: list[dict[str, Any]] = field(default_factory=list)  # an act's `lanes` lines
    act_events: list[dict[str, Any]] = field(default_factory=list)  # its `act` lines
    views: list[dict[str, Any]] = field(default_factory=list)  # its `view` lines

    def __len__(self) -> int:
        return len(self.samples["t"])

    @property
    def gauge(self) -> str:
        """What the show's bottom gauge showed: "memory" or "cpu" (the header's
        `gauge`; a throttle act recorded before the header said so: "cpu")."""
        g = self.header.get("gauge")
        if g in ("memory", "cpu"):
            return g
        return "cpu" if self.header.get("act") == "throttle" else "memory"

    @property
    def duration(self) -> float:
        """Seconds from show start to the last record."""
        last = float(self.samples["t"][-1]) if len(self) else 0.0
        for e in self.events:
            last = max(last, float(e.get("t", 0.0)))
        return last

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def kill(self) -> dict[str, Any] | None:
        """The hog's kill record (the first kill not marked `hog: false`); older
        recordings have one kill line, the hog's."""
        kills = [k for k in self.events_of("kill") if k.get("hog") is not False]
        return kills[0] if kills else None

    @property
    def hog_kills(self) -> list[dict[str, Any]]:
        """Every kill of the hog, in order: one in a show; one per life with
        `--restarts`, one per kill seen in a watch."""
        return [k for k in self.events_of("kill") if k.get("hog") is not False]

    @property
    def bystanders(self) -> list[dict[str, Any]]:
        """Kills of other processes in the stage's domain (`hog: false`), in order."""
        return [k for k in self.events_of("kill") if k.get("hog") is False]

    def phases(self) -> list[tuple[Phase, float]]:
        """Entered phases in order, with their times."""
        return [(Phase(e["phase"]), float(e["t"])) for e in self.events_of("phase")]

    def phase_at(self, i: int) -> Phase:
        return PHASES[int(self.samples["phase"][i])]


_PHASE_INDEX = {p.value: p.index for p in PHASES}
_PHASE_INDEX_B = {p.value.encode(): p.index for p in PHASES}
_SAMPLE_PREFIX = b'{"type":"sample","t":'
# A writer's sample line with its digits and dots deleted is this, then the phase name
# and '"}'. Checking that shape in bulk is what lets the fast path trust the columns.
_SKELETON = (
    _SAMPLE_PREFIX + b"".join(f',"{k}":'.encode() for k in SAMPLE_KEYS[1:-1]) + b',"phase":"'
)
# A writer's sample line with its digits and dots deleted is this, then the phase name
# and '"}'. Checking that shape in bulk is what lets the fast path trust the columns.
_SKELETON = (
    _SAMPLE_PREFIX + b"".join(f',"{k}":'.encode() for k in SAMPLE_KEYS[1:-1]) + b',"phase":"'
)
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _bad(path: str, problem: str) -> BadInput:
    return BadInput(f"{path}: {problem}")


def _parse_header(path: str, first: bytes) -> dict[str, Any]:
    try:
        head = json.loads(first)
    except ValueError:
        raise _bad(path, "not a beep-av recording (first line is not JSON)") from None
    if not isinstance(head, dict) or head.get("type") != "header":
        raise _bad(path, "not a beep-av recording (no header line)")
    fmt = head.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        raise _bad(path, f"not a beep-av recording (format {fmt!r})")
    if fmt != FORMAT:
        raise _bad(path, f"format {fmt!r} is not supported by this version (reads {FORMAT})")
    return head


def load(path: str) -> Recording:
    """Read a recording. Unknown keys and record types are ignored; a truncated last
    line is dropped. Raises BadInput (one line naming the file) for anything else."""
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise _bad(path, "is a directory, not a recording") from None
    except OSError as e:
        raise _bad(path, f"cannot read ({e.strerror or e})") from None
    if not raw or raw.isspace():
        raise _bad(path, "empty file, not a recording")
    if b"\0" in raw[:4096]:
        raise _bad(path, "binary file, not a recording")
    lines = raw.split(b"\n")
    header = _parse_header(path, lines[0])
    truncated = False
    if len(lines) > 1 and lines[-1].strip():
        # no newline at the end: a crash may have cut the last line; keep it if whole
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()
            truncated = True
    body = lines[1:]
    sample_lines: list[bytes] = []
    other: list[bytes] = []
    after: list[int] = []  # per other line: how many sample lines came before it
    for ln in body:
        if ln.startswith(_SAMPLE_PREFIX):
            sample_lines.append(ln)
        elif ln.strip():
            other.append(ln)
            after.append(len(sample_lines))
    events, foreign = _events(path, other, after)
    cols = _fast_samples(sample_lines) if sample_lines and not foreign else None
    if cols is None:
        cols = _slow_samples(path, sample_lines + foreign)
    if len(cols["t"]) == 0:
        raise _bad(path, "no samples (header only), nothing to replay")
    if not np.isfinite(cols["t"]).all():
        raise _bad(path, "a sample has a non-finite time")
    lanes = [e for e in events if e["type"] == "lanes"]
    acts = [e for e in events if e["type"] == "act"]
    views = [e for e in events if e["type"] == "view"]
    events = [e for e in events if e["type"] not in ACT_TYPES]
    _pressure_from_speed(header, cols)
    return Recording(
        path=path,
        header=header,
        samples=cols,
        events=events,
        truncated=truncated,
        lanes=lanes,
        act_events=acts,
        views=views,
    )


def _pressure_from_speed(header: dict[str, Any], cols: dict[str, np.ndarray]) -> None:
    """A throttle recording made before `intensity` meant pressure everywhere kept the
    work speed there while the quotas ran (0 in the calm and after): read it as the
    share held back, 1 - speed, so it draws and plays as it did."""
    if header.get("intensity") == INTENSITY or header.get("act") != "throttle":
        return
    x = cols["intensity"]
    running = (cols["phase"] != Phase.CALM.index) & (cols["phase"] < Phase.OOM.index)
    cols["intensity"] = np.where(running, np.round(np.clip(1.0 - x, 0.0, 1.0), 4), x)


def _events(
    path: str, lines: list[bytes], after: list[int] | None = None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The event records in time order, and the sample lines written in a foreign form
    (other key order, spaces) that the caller must read the slow way. An act's lines
    (ACT_TYPES) get `_sample`: the index of the sample line they were written after
    (`after[i]` - 1), so a replay gives each of several states at one time its own;
    left out when foreign sample lines make the file's order of samples unknown."""
    events: list[dict[str, Any]] = []
    foreign: list[bytes] = []
    acts: list[tuple[dict[str, Any], int]] = []
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            raise _bad(path, "a line in the middle is not JSON (corrupt recording)") from None
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if kind == "sample":
            foreign.append(line)
            continue
        if kind not in EVENT_TYPES and kind not in ACT_TYPES:
            continue  # unknown record types (and a second header) are ignored
        t = obj.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise _bad(path, f"a {kind} record has no valid time")
        if kind in ("phase", "skip") and obj.get("phase") not in _PHASE_INDEX:
            raise _bad(path, f"a {kind} record names an unknown phase {obj.get('phase')!r}")
        if kind == "kill":
            obj.setdefault("detected_by", [])
        if kind in ACT_TYPES and after is not None:
            acts.append((obj, after[i] - 1))
        events.append(obj)
    if not foreign:
        for obj, at in acts:
            obj["_sample"] = at
    events.sort(key=lambda e: float(e["t"]))  # stable: same-t records keep file order
    return events, foreign


def _slow_samples(path: str, lines: list[bytes]) -> dict[str, np.ndarray]:
    """Samples written in another key order, with extra keys, or by hand: json.loads
    and a check per field."""
    rows = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise _bad(path, "a line in the middle is not JSON (corrupt recording)") from None
        if isinstance(obj, dict) and obj.get("type") == "sample":
            rows.append(_sample_row(path, obj))
    cols: dict[str, np.ndarray] = {}
    for j, key in enumerate(SAMPLE_KEYS):
        cols[key] = np.array([r[j] for r in rows], dtype=_dtype(key))
    if len(rows) > 1 and (np.diff(cols["t"]) < 0).any():
        order = np.argsort(cols["t"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return cols


def _dtype(key: str) -> Any:
    if key == "phase":
        return np.int8
    return np.float64 if key in FLOAT_COLUMNS else np.int64


def _sample_row(path: str, obj: dict[str, Any]) -> tuple:
    row: list[Any] = []
    for key in SAMPLE_KEYS:
        v = obj.get(key, 0 if key != "phase" else None)
        if key == "phase":
            if v not in _PHASE_INDEX:
                raise _bad(path, f"a sample names an unknown phase {v!r}")
            row.append(_PHASE_INDEX[v])
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise _bad(path, f"a sample has a bad {key!r} value {v!r}")
        elif key in FLOAT_COLUMNS:
            row.append(float(v))
        else:
            if not math.isfinite(v):
                raise _bad(path, f"a sample has a bad {key!r} value {v!r}")
            row.append(int(v))
    return tuple(row)


def _fast_samples(lines: list[bytes]) -> dict[str, np.ndarray] | None:
    """Parse sample lines in the writer's exact template with numpy, in bulk (a
    json.loads per line costs ~5-7 µs here: ~1 s for an hour of samples). Every byte
    that is not a digit or a dot is checked against the template; returns None when
    any line does not fit it, and the caller takes the slow path."""
    n = len(lines)
    joined = b"\n".join(lines) + b"\n"
    phase = _skeleton_phases(joined.translate(None, b"0123456789."), n)
    if phase is None:
        return None
    buf = np.frombuffer(joined, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    commas = np.flatnonzero(buf == ord(","))
    if commas.size != 13 * n or ends.size != n:
        return None
    commas = commas.reshape(n, 13)
    # every line holds its own 13 commas: comma j of each line is the one before key j
    if (commas[:, 12] > ends).any() or (commas[1:, 0] < ends[:-1]).any():
        return None
    cols: dict[str, np.ndarray] = {}
    for j, key in enumerate(SAMPLE_KEYS[:-1]):
        # the value starts right after its key: `,"key":` follows comma j
        start = commas[:, j] + len(f',"{key}":')
        value = _digits(buf, start, commas[:, j + 1], key in FLOAT_COLUMNS)
        if value is None:
            return None
        cols[key] = value
    cols["phase"] = phase
    return cols


def _skeleton_phases(stripped: bytes, n: int) -> np.ndarray | None:
    """Check that each of the n lines of `stripped` (sample lines with their digits
    and dots deleted) is exactly _SKELETON + a phase name + '"}', and return the phase
    indexes. Phases only move forward, so lines come in a few runs of equal length:
    each run is checked as one 2-D view, with no copy and no index arrays."""
    sb = np.frombuffer(stripped, dtype=np.uint8)
    nl = np.flatnonzero(sb == ord("\n"))
    if nl.size != n:
        return None
    starts = np.concatenate(([0], nl[:-1] + 1))
    lens = nl - starts + 1
    bounds = [0, *(np.flatnonzero(np.diff(lens)) + 1).tolist(), n]
    if len(bounds) > 64:  # not a forward-moving show: let the slow path judge it
        return None
    skel = np.frombuffer(_SKELETON, dtype=np.uint8)
    tail = np.frombuffer(b'"}\n', dtype=np.uint8)
    phase = np.full(n, -1, dtype=np.int8)
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        width = int(lens[a])
        name_len = width - skel.size - tail.size
        if name_len < 1:
            return None
        block = sb[starts[a] : starts[a] + (b - a) * width].reshape(b - a, width)
        if not (block[:, : skel.size] == skel).all() or not (block[:, -3:] == tail).all():
            return None
        names = block[:, skel.size : skel.size + name_len]
        for name, index in _PHASE_INDEX_B.items():
            if len(name) == name_len:
                hit = (names == np.frombuffer(name, dtype=np.uint8)).all(axis=1)
                phase[a:b][hit] = index
    return None if (phase < 0).any() else phase


_POW10F = 10.0 ** np.arange(16)


def _digits(buf: np.ndarray, start: np.ndarray, end: np.ndarray, real: bool) -> np.ndarray | None:
    """The numbers in buf[start:end] (digits and, when `real`, at most one dot each)
    as int64 or float64; None if any is something else. A fixed-width, right-aligned
    gather per column keeps the temporaries small; the place values come from one
    float matrix product, exact for up to 15 digits (< 2**53)."""
    length = end - start
    if length.size == 0:
        return np.zeros(0, np.float64 if real else np.int64)
    width = int(length.max())
    if int(length.min()) < 1 or width > 15:
        return None
    pos = np.arange(width, dtype=np.int64)
    ch = buf[end[:, None] - width + pos].astype(np.int16) - ord("0")
    inside = pos >= (width - length)[:, None]
    is_digit = (ch >= 0) & (ch <= 9)
    is_dot = inside & (ch == ord(".") - ord("0"))
    if not (is_digit | is_dot | ~inside).all():
        return None
    # left padding (the previous field's bytes) and the dot count as zero digits
    digit = np.where(inside & is_digit, ch, 0).astype(np.float64)
    raw = digit @ _POW10F[width - 1 :: -1]
    if not real:
        if is_dot.any():
            return None
        return raw.astype(np.int64)
    ndots = is_dot.sum(axis=1)
    if (ndots > 1).any():
        return None
    frac = np.where(ndots > 0, width - 1 - is_dot.argmax(axis=1), 0)  # digits after the dot
    scale = _POW10F[frac]
    # drop the dot's zero: digits left of it moved one place too far
    mantissa = np.where(ndots > 0, np.floor(raw / (scale * 10)) * scale + np.mod(raw, scale), raw)
    return mantissa / scale
