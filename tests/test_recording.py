"""The recording format: writer (diffing states into phase/skip/kill lines), reader
(fast path and slow path agree), and hostile files -> BadInput naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from beep_av.errors import BadInput
from beep_av.model import KillRecord, MiB, Phase, ShowState, Snapshot
from beep_av.recording import (
    FORMAT,
    SAMPLE_KEYS,
    Recorder,
    _fast_samples,
    _slow_samples,
    check_writable,
    load,
)

FIXTURES = Path(__file__).parent / "fixtures" / "recordings"
GOOD = FIXTURES / "rehearsal-192M-128M-seed1.jsonl"

KILL = KillRecord(
    pid=4242,
    name="python3",
    exit=137,
    signal=9,
    oom_kill_count=1,
    kmsg="Memory cgroup out of memory: Killed process 4242 (python3) anon-rss:1kB",
    anon_rss_kib=196000,
    detected_by=("exit", "oom_kill", "kmsg"),
    latency_ms=0.7,
    t=5.0,
)


def _state(t, phase, entered, skipped=(), kill=None, ram=0):
    snap = Snapshot(t=t, anon_bytes=ram, cache_bytes=3 * MiB, ram_limit=192 * MiB)
    return ShowState(
        t=t, phase=phase, snapshot=snap, entered=entered, skipped=skipped, kill=kill, intensity=0.5
    )


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_writer_diffs_phases_skips_and_writes_the_kill_once(tmp_path):
    path = tmp_path / "r.jsonl"
    c, f, o, fi = Phase.CALM, Phase.FILLING, Phase.OOM, Phase.FINALE
    e1 = ((c, 0.0),)
    e2 = (*e1, (f, 1.0))
    e3 = (*e2, (o, 5.0))
    e4 = (*e3, (fi, 5.02))
    sk = ((Phase.SWAPPING, "no swap on the stage"),)
    with Recorder(str(path), {"stage": "rehearsal", "hz": 50}) as r:
        r.write_state(_state(0.0, c, e1))
        r.write_state(_state(1.0, f, e2, ram=5 * MiB))
        r.write_state(_state(1.02, f, e2, sk))
        r.write_state(_state(5.0, o, e3, sk, KILL))  # kill known, not final yet
        r.write_state(_state(5.02, fi, e4, sk, KILL))
        r.write_state(_state(5.04, fi, e4, sk, KILL))
        r.beep(5.02, freq=880, length_ms=400)
        r.end(5.5, "finale")
    lines = _lines(path)
    assert lines[0]["type"] == "header" and lines[0]["format"] == FORMAT
    assert lines[0]["stage"] == "rehearsal" and "version" in lines[0]
    kinds = [x["type"] for x in lines[1:]]
    assert kinds.count("sample") == 6
    assert [(x["phase"], x["t"]) for x in lines if x["type"] == "phase"] == [
        ("calm", 0.0),
        ("filling", 1.0),
        ("oom", 5.0),
        ("finale", 5.02),
    ]
    assert [(x["phase"], x["reason"]) for x in lines if x["type"] == "skip"] == [
        ("swapping", "no swap on the stage")
    ]
    kills = [x for x in lines if x["type"] == "kill"]
    assert len(kills) == 1
    assert kills[0]["detected_by"] == ["exit", "oom_kill", "kmsg"] and kills[0]["t"] == 5.0
    assert kinds.index("kill") > kinds.index("phase", kinds.index("sample"))  # after finale
    sample = next(x for x in lines if x["type"] == "sample" and x["t"] == 1.0)
    assert list(sample)[1:] == list(SAMPLE_KEYS)
    assert sample["ram"] == 5 * MiB and isinstance(sample["ram"], int)
    assert lines[-2] == {"type": "beep", "t": 5.02, "freq": 880, "length_ms": 400}
    assert lines[-1] == {"type": "end", "t": 5.5, "reason": "finale"}


def test_close_writes_a_kill_that_never_reached_finale(tmp_path):
    path = tmp_path / "r.jsonl"
    r = Recorder(str(path), {})
    r.write_state(_state(5.0, Phase.OOM, ((Phase.CALM, 0.0), (Phase.OOM, 5.0)), kill=KILL))
    r.close()
    r.close()  # twice is fine
    assert [x["type"] for x in _lines(path)].count("kill") == 1


def test_writer_is_line_buffered(tmp_path):
    path = tmp_path / "r.jsonl"
    r = Recorder(str(path), {"stage": "x"})
    r.write_state(_state(0.0, Phase.CALM, ((Phase.CALM, 0.0),)))
    # not closed: once the writer thread has had its turn, a crash now would still
    # leave complete lines on disk (the callers only queue: see the tests below)
    assert r.flush()
    assert path.read_text().count("\n") == 3
    r.close()


class SlowFile:
    """A recording file whose writes are seen (thread names) and can be held up."""

    def __init__(self, real, gate=None) -> None:
        self.real = real
        self.gate = gate
        self.threads: list[str] = []

    def write(self, text):
        import threading

        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(10)
        return self.real.write(text)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _recorder_on(monkeypatch, path, gate=None):
    import beep_av.recording as rec_mod

    files = []
    real_open = rec_mod.outfiles.open_file

    def fake_open(*a, **kw):
        out = real_open(*a, **kw)
        out.f = SlowFile(out.f, gate)  # the recorder closes it
        files.append(out.f)
        return out

    monkeypatch.setattr(rec_mod.outfiles, "open_file", fake_open)
    return Recorder(str(path), {"stage": "x"}), files


def test_lines_are_written_by_the_recorders_own_thread(tmp_path, monkeypatch):
    import threading

    path = tmp_path / "r.jsonl"
    r, files = _recorder_on(monkeypatch, path)
    e = ((Phase.CALM, 0.0),)
    for i in range(20):
        r.write_state(_state(i * 0.02, Phase.CALM, e))
    r.beep(0.5, freq=880, length_ms=400)
    r.end(0.6, "finale")
    r.close()
    threads = set(files[0].threads)
    assert threads == {"beep-recorder"}, threads
    assert threading.current_thread().name not in threads
    lines = _lines(path)
    assert [x["type"] for x in lines] == ["header", "phase", *["sample"] * 20, "beep", "end"]


def test_a_stalled_disk_never_holds_the_caller_and_keeps_every_event(tmp_path, monkeypatch):
    """The writer is stuck in write(2) (a disk or a memory domain that does not answer):
    write_state returns at once; past MAX_PENDING queued states only sample lines are
    dropped, counted and said; phases, the kill, beep and end all reach the file."""
    import threading
    import time

    import beep_av.recording as rec_mod

    monkeypatch.setattr(rec_mod, "MAX_PENDING", 50)
    gate = threading.Event()
    path = tmp_path / "r.jsonl"
    said: list[str] = []
    r, _ = _recorder_on(monkeypatch, path, gate)
    r._say = said.append
    c, f, o, fi = Phase.CALM, Phase.FILLING, Phase.OOM, Phase.FINALE
    e1 = ((c, 0.0),)
    e2 = (*e1, (f, 2.0))
    e3 = (*e2, (o, 4.0))
    e4 = (*e3, (fi, 4.02))
    slowest = 0.0
    for i in range(300):
        t = i * 0.02
        if t < 2.0:
            st = _state(t, c, e1)
        elif t < 4.0:
            st = _state(t, f, e2)
        elif t < 4.02:
            st = _state(t, o, e3, kill=KILL)
        else:
            st = _state(t, fi, e4, kill=KILL)
        t0 = time.perf_counter()
        r.write_state(st)
        slowest = max(slowest, time.perf_counter() - t0)
    r.beep(4.1, freq=880, length_ms=400)
    r.end(6.0, "finale")
    assert slowest < 0.05, f"write_state waited {slowest * 1000:.0f} ms for the disk"
    assert r.dropped > 0
    gate.set()
    r.close()
    lines = _lines(path)
    kinds = [x["type"] for x in lines]
    assert [(x["phase"], x["t"]) for x in lines if x["type"] == "phase"] == [
        ("calm", 0.0),
        ("filling", 2.0),
        ("oom", 4.0),
        ("finale", 4.02),
    ]
    assert kinds.count("kill") == 1 and kinds[-2:] == ["beep", "end"]
    assert kinds.count("sample") == 300 - r.dropped
    ts = [x["t"] for x in lines if x["type"] == "sample"]
    assert ts == sorted(ts)
    assert said == [f"recording: {r.dropped} samples dropped (the disk was slower than the show)"]


def test_a_full_disk_stops_the_recording_with_one_line(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    said: list[str] = []
    r, files = _recorder_on(monkeypatch, path)
    r._say = said.append
    e = ((Phase.CALM, 0.0),)
    for i in range(5):
        r.write_state(_state(i * 0.02, Phase.CALM, e))
    assert r.flush()

    def full(text):
        raise OSError(28, "No space left on device")

    files[0].write = full
    for i in range(5, 50):
        r.write_state(_state(i * 0.02, Phase.CALM, e))
    r.end(1.0, "finale")
    r.close()
    assert said == [
        f"recording: stopped, cannot write {path}: No space left on device; the show goes on"
    ]
    assert r.failed is not None
    assert [x["type"] for x in _lines(path)] == ["header", "phase", *["sample"] * 5]


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: str(d / "missing" / "r.jsonl"), "does not exist"),
        (lambda d: str(d), "is a directory"),
    ],
)
def test_unwritable_record_paths(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(BadInput, match=problem):
        check_writable(path)
    with pytest.raises(BadInput) as e:
        Recorder(path, {})
    assert path in e.value.message and "\n" not in e.value.message


def test_check_writable_accepts_a_new_file(tmp_path):
    check_writable(str(tmp_path / "new.jsonl"))
    assert not (tmp_path / "new.jsonl").exists()  # creates nothing


# ---------------------------------------------------------------- reader


def test_fixture_loads_with_every_record_kind():
    rec = load(str(GOOD))
    assert len(rec) > 100 and not rec.truncated
    assert [p for p, _ in rec.phases()] == list(Phase)
    assert rec.kill is not None and rec.kill["pid"] > 0
    assert rec.events_of("beep") and rec.events_of("end")
    assert rec.samples["t"].dtype == np.float64 and rec.samples["ram"].dtype == np.int64
    assert (np.diff(rec.samples["t"]) > 0).all()


def test_fast_and_slow_paths_agree():
    body = GOOD.read_bytes().split(b"\n")[1:]
    lines = [x for x in body if x.startswith(b'{"type":"sample"')]
    fast = _fast_samples(lines)
    assert fast is not None
    slow = _slow_samples("x", lines)
    for k in SAMPLE_KEYS:
        assert np.array_equal(fast[k], slow[k]), k


def test_foreign_key_order_and_unknown_keys_and_types_are_read(tmp_path):
    path = tmp_path / "hand.jsonl"
    rows = [
        {"type": "header", "format": FORMAT, "stage": "cgroup", "future": [1, 2]},
        {"type": "comment", "text": "unknown type: ignored"},
        {"type": "phase", "t": 0, "phase": "calm", "extra": True},
        {
            "phase": "calm",
            "t": 0.5,
            "type": "sample",
            "ram": 10,
            "cache": 2,
            "swap": 0,
            "usage": 12,
            "ram_limit": 100,
            "swap_limit": 0,
            "psi_some_us": 1,
            "psi_full_us": 0,
            "hog": 9,
            "intensity": 0.25,
            "stall": 0.0,
            "new": "x",
        },
        {"type": "sample", "t": 1.0, "ram": 11, "phase": "calm"},  # missing keys: 0
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rec = load(str(path))
    assert rec.samples["ram"].tolist() == [10, 11]
    assert rec.samples["intensity"].tolist() == [0.25, 0.0]
    assert rec.header["future"] == [1, 2]
    assert [e["type"] for e in rec.events] == ["phase"]


def test_fast_path_declines_what_it_cannot_trust():
    good = b'{"type":"sample","t":1.5,"ram":1,"cache":2,"swap":3,"usage":4,"ram_limit":5,"swap_limit":6,"psi_some_us":7,"psi_full_us":8,"hog":9,"intensity":0.5,"stall":0.25,"phase":"calm"}'
    assert _fast_samples([good])["hog"].tolist() == [9]
    for bad in (
        good.replace(b'"ram":1', b'"ram":-1'),
        good.replace(b'"ram":1', b'"ram":1.5'),  # a dot in an integer field
        good.replace(b'"t":1.5', b'"t":1e3'),
        good.replace(b'"calm"', b'"nap"'),
        good.replace(b'"cache":2,"swap":3', b'"swap":3,"cache":2'),
        good.replace(b'"t":1.5', b'"t":1..5'),
        good.replace(b'"ram":1', b'"ram":12345678901234567890'),
    ):
        assert _fast_samples([good, bad]) is None, bad


def _write(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


HEADER = b'{"type":"header","format":"beep-av/1"}\n'
SAMPLE = b'{"type":"sample","t":0.0,"ram":1,"cache":2,"swap":3,"usage":4,"ram_limit":5,"swap_limit":6,"psi_some_us":7,"psi_full_us":8,"hog":9,"intensity":0.5,"stall":0.25,"phase":"calm"}\n'


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "empty"),
        (b"\n  \n", "empty"),
        (bytes(range(256)) * 4, "binary"),
        (b"\x89PNG\r\n\x1a\n" + os.urandom(200).replace(b"\0", b"x"), "not"),
        (HEADER, "no samples"),
        (HEADER + b'{"type":"end","t":1,"reason":"quit"}\n', "no samples"),
        (b'{"type":"header","format":"other/1"}\n' + SAMPLE, "not a beep-av recording"),
        (b'{"hello": "world"}\n' + SAMPLE, "no header"),
        (b"[1,2,3]\n" + SAMPLE, "no header"),
        (b"t,ram\n0,1\n", "not JSON"),
        (HEADER.replace(b"/1", b"/2") + SAMPLE, "'beep-av/2' is not supported"),
        (HEADER + SAMPLE + b'{"type":"sam\n' + SAMPLE, "not JSON"),
        (HEADER + SAMPLE.replace(b'"calm"', b'"nap"'), "unknown phase"),
        (HEADER + b'{"type":"phase","t":"soon","phase":"calm"}\n' + SAMPLE, "no valid time"),
        (HEADER + SAMPLE.replace(b'"ram":1', b'"ram":"lots"'), "bad 'ram'"),
    ],
)
def test_not_a_recording(tmp_path, data, problem):
    path = _write(tmp_path, "bad.jsonl", data)
    with pytest.raises(BadInput) as e:
        load(path)
    msg = e.value.message
    assert path in msg and problem in msg and "\n" not in msg


def test_missing_file_and_directory(tmp_path):
    for path in (str(tmp_path / "nope.jsonl"), str(tmp_path)):
        with pytest.raises(BadInput) as e:
            load(path)
        assert path in e.value.message


@pytest.mark.parametrize("cut", [2, 10, 40, len(SAMPLE) - 2])
def test_truncated_last_line_is_tolerated(tmp_path, cut):
    data = HEADER + SAMPLE + SAMPLE.replace(b'"t":0.0', b'"t":0.02')
    path = _write(tmp_path, "cut.jsonl", data[: len(data) - cut])
    rec = load(path)
    assert len(rec) == 1 and rec.truncated


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = _write(tmp_path, "nonl.jsonl", HEADER + SAMPLE + SAMPLE.rstrip(b"\n"))
    rec = load(path)
    assert len(rec) == 2 and not rec.truncated


def test_truncated_utf8_in_the_last_line(tmp_path):
    kmsg = '{"type":"kill","t":0.0,"name":"pythön"}\n'.encode()
    data = HEADER + SAMPLE + kmsg[:-5]
    rec = load(_write(tmp_path, "u.jsonl", data))
    assert len(rec) == 1 and rec.truncated


def test_fixture_copy_survives_a_crash_cut(tmp_path):
    data = GOOD.read_bytes()
    cut = data[: len(data) // 2 + 7]  # mid-line, as a crash leaves it
    rec = load(_write(tmp_path, "half.jsonl", cut))
    full = load(str(GOOD))
    assert 0 < len(rec) < len(full) and rec.truncated
    assert np.array_equal(rec.samples["ram"], full.samples["ram"][: len(rec)])


def test_example_show_in_assets_loads():
    example = Path(__file__).resolve().parent.parent / "assets" / "example-show.jsonl"
    rec = load(str(example))
    assert rec.kill is not None and [p for p, _ in rec.phases()][-1] is Phase.FINALE
