"""The PNG report: the requested size, phase bands starting where the recording's phase
times say (pixel checks on the band colours), the kill marker drawn, bad sizes and
paths refused with one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pygame
import pytest

from beep_av.errors import BadInput
from beep_av.model import Phase
from beep_av.recording import load
from beep_av.report import (
    ANON_COLOUR,
    CACHE_COLOUR,
    KILL_COLOUR,
    PHASE_COLOURS,
    SWAP_COLOUR,
    layout,
    parse_size_arg,
    render_report,
)
from tests.conftest import beep

FIXTURE = Path(__file__).parent / "fixtures" / "recordings" / "rehearsal-192M-128M-seed1.jsonl"


@pytest.fixture(scope="module")
def rec():
    return load(str(FIXTURE))


def _pixels(path) -> np.ndarray:
    return pygame.surfarray.array3d(pygame.image.load(str(path)))  # (w, h, 3)


@pytest.mark.parametrize("size", [(1600, 900), (800, 600), (1920, 1080), (320, 240)])
def test_png_of_the_requested_size(tmp_path, rec, size):
    out = tmp_path / "r.png"
    render_report(rec, str(out), size=size)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pygame.image.load(str(out)).get_size() == size


def test_png_even_when_named_otherwise(tmp_path, rec):
    out = tmp_path / "report.jpg"
    render_report(rec, str(out), size=(640, 360))
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("size", [(1600, 900), (900, 500)])
def test_phase_bands_begin_at_the_phase_times(tmp_path, rec, size):
    out = tmp_path / "r.png"
    render_report(rec, str(out), size=size)
    px = _pixels(out)
    lay = layout(rec, size)
    y = lay.band_top + 1  # above the band's label text
    phases = rec.phases()
    checked = 0
    for k, (phase, t) in enumerate(phases):
        x = math.ceil(lay.x_of(t))
        colour = tuple(px[x, y])
        assert colour == PHASE_COLOURS[phase], (phase, x, colour)
        if k:
            prev = phases[k - 1][0]
            if lay.x_of(t) - lay.x_of(phases[k - 1][1]) >= 3:
                assert tuple(px[x - 2, y]) == PHASE_COLOURS[prev], (prev, x - 2)
                checked += 1
    assert checked >= 3
    # every band colour appears, in phase order from left to right
    row = [tuple(c) for c in px[lay.left : lay.right, y]]
    firsts = [row.index(PHASE_COLOURS[p]) for p, _ in phases]
    assert firsts == sorted(firsts)


def test_kill_marker_and_areas_are_drawn(tmp_path, rec):
    out = tmp_path / "r.png"
    render_report(rec, str(out))
    px = _pixels(out)
    lay = layout(rec, (1600, 900))
    x = round(lay.x_of(rec.kill["t"]))
    column = [tuple(c) for c in px[x, lay.top : lay.bottom]]
    assert column.count(KILL_COLOUR) > 0.5 * (lay.bottom - lay.top)
    # elsewhere the kill colour is only in the label and the legend
    assert tuple(px[lay.left + 5, (lay.top + lay.bottom) // 2]) != KILL_COLOUR
    # the areas: just above the bottom, the hog while filling; cache in calm; swap late
    t_fill = dict(rec.phases())[Phase.EVICTING] - 0.1
    assert tuple(px[round(lay.x_of(t_fill)), lay.bottom - 3]) == ANON_COLOUR
    i = int(np.searchsorted(rec.samples["t"], 0.5))
    mid_cache = rec.samples["ram"][i] + rec.samples["cache"][i] / 2
    assert tuple(px[round(lay.x_of(0.5)), round(lay.y_of(mid_cache))]) == CACHE_COLOUR
    t_swap = rec.kill["t"] - 0.2
    i = int(np.searchsorted(rec.samples["t"], t_swap))
    top = rec.samples["ram"][i] + rec.samples["swap"][i]
    assert tuple(px[round(lay.x_of(t_swap)), round(lay.y_of(top)) + 3]) == SWAP_COLOUR


def test_a_recording_without_phase_lines_still_gets_bands(tmp_path):
    lines = [x for x in FIXTURE.read_text().splitlines() if '"type":"phase"' not in x]
    src = tmp_path / "nophase.jsonl"
    src.write_text("\n".join(lines) + "\n")
    rec = load(str(src))
    out = tmp_path / "r.png"
    render_report(rec, str(out), size=(800, 450))
    px = _pixels(out)
    lay = layout(rec, (800, 450))
    row = {tuple(c) for c in px[lay.left : lay.right, lay.band_top + 1]}
    assert {PHASE_COLOURS[Phase.CALM], PHASE_COLOURS[Phase.SWAPPING]} <= row


@pytest.mark.parametrize(
    "text, size",
    [("1600x900", (1600, 900)), (" 800X600 ", (800, 600)), ("320x240", (320, 240))],
)
def test_size_arg(text, size):
    assert parse_size_arg(text) == size


@pytest.mark.parametrize(
    "text",
    [
        "0x0",
        "-5x3",
        "abc",
        "",
        "1600",
        "1600x",
        "x900",
        "1e3x900",
        "99999x99999",
        "1600x900x3",
        "16OOx900",
        "100x100",
    ],
)
def test_bad_size_arg(text):
    with pytest.raises(BadInput) as e:
        parse_size_arg(text)
    assert "--size" in e.value.message


@pytest.mark.parametrize("size", [(0, 0), (-5, 3), ("a", 3), None, (10**6, 900)])
def test_bad_size_to_render(tmp_path, rec, size):
    with pytest.raises(BadInput):
        render_report(rec, str(tmp_path / "r.png"), size=size)
    assert not (tmp_path / "r.png").exists()


def test_bad_output_paths(tmp_path, rec):
    for out in (str(tmp_path / "no" / "r.png"), str(tmp_path)):
        with pytest.raises(BadInput) as e:
            render_report(rec, out)
        assert out in e.value.message


def test_report_through_the_command_line(tmp_path):
    out = tmp_path / "cli.png"
    r = beep("report", str(FIXTURE), "-o", str(out), "--size", "1200x700", timeout=120)
    assert r.returncode == 0, r.stderr
    assert pygame.image.load(str(out)).get_size() == (1200, 700)
    r = beep("report", str(FIXTURE), "-o", str(out), "--size", "0x0", timeout=60)
    assert r.returncode == 2 and "--size" in r.stderr and "Traceback" not in r.stderr


def test_stall_share_of_a_counter_read_once_a_second():
    """A show that read PSI once a second (`psi_every`): each rise is the stall of the
    second before it, not a one-sample burst the 50 Hz rule would throw away."""
    from beep_av.report import _stall_share

    t = np.arange(0, 5, 0.02)
    psi = (np.floor(t) * 300_000).astype(np.int64)  # 30% stall, read on each whole second
    psi[t < 1] = 0
    share = _stall_share(t, psi, every=1.0)
    assert share[t < 1.0].max() == 0.0  # before the first rise: the baseline
    assert np.allclose(share[(t > 2.0) & (t < 4.9)], 0.3)
    assert _stall_share(t, psi).max() == 0.0  # as 50 Hz bursts: thrown away


def test_stall_share_from_counter_deltas():
    from beep_av.report import _stall_share

    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.5])
    psi = np.array([0, 5_000_000, 5_050_000, 5_050_000, 4_000_000, 4_000_000, 4_100_000])
    share = _stall_share(t, psi)
    # first read of a running counter, 50%, nothing, a reset, no time, 100%
    assert share.tolist() == pytest.approx([0, 0, 0.5, 0, 0, 0, 1.0])


def _act_report(tmp_path, act: str, *args: str):
    """An act's rehearsal (seed 1), recorded, loaded and drawn at 1600x900: the
    recording, the picture's pixels and its layout."""
    path = tmp_path / f"{act}.jsonl"
    r = beep("rehearse", "--act", act, *args, "--output", "headless", "--audio", "off",
             "--record", str(path), "--seed", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = load(str(path))
    out, size = tmp_path / f"{act}.png", (1600, 900)
    render_report(rec, str(out), size=size)
    return rec, _pixels(out), layout(rec, size)


def test_an_acts_lanes_are_traced_until_each_process_ends(tmp_path):
    """who-dies: the victim's trace ends at its kill, the survivors' go on to the end of
    the recording (a lane is recorded only when it changes: the last value holds)."""
    from beep_av.report import LANE_COLOURS

    w, px, lay = _act_report(
        tmp_path, "who-dies", "--ram", "192M", "--swap", "96M", "--rate", "128M/s", "--calm", "0.3"
    )
    kill_t = w.kill["t"]
    later = round(lay.x_of(kill_t + 0.6 * (w.duration - kill_t)))  # well after the kill
    (released,) = [e for e in w.act_events if e["event"] == "released"]
    assert lay.x_of(released["t"]) > later + 10  # the survivors are alive at `later`
    last = {x["name"]: x for row in w.lanes for x in row["lanes"] if x["alive"]}
    assert len(last) == 3
    for name, x in last.items():
        colour = np.array(LANE_COLOURS[x["colour"] % len(LANE_COLOURS)])
        column = (px[later, lay.top : lay.bottom] == colour).all(axis=1)
        if x["pid"] != w.kill["pid"]:
            y = round(lay.y_of(x["rss"] + x["swap"])) - lay.top
            assert column[max(0, y - 2) : y + 3].any(), f"{name}'s trace stops before the end"
        else:
            assert not column.any(), f"{name}'s trace goes on after its kill"


def test_the_throttle_report_is_work_and_throttling_not_memory(tmp_path):
    """A CPU act's report: each worker's trace is its work against its own full speed on
    a percent axis (about 4% at the lowest quota), the share of periods throttled is the
    yellow trace, the quota steps are marked; no memory legend."""
    from beep_av.report import LANE_COLOURS, QUOTA_COLOUR, STALL_COLOUR

    t, px, lay = _act_report(tmp_path, "throttle")
    (last_quota,) = [e for e in t.act_events if e["event"] == "quota" and e["quota_pct"] == 4.0]
    (end,) = [e for e in t.act_events if e["event"] == "end"]
    x = round(lay.x_of(last_quota["t"] + 0.8 * (end["t"] - last_quota["t"])))
    column = px[x, lay.top : lay.bottom]
    for k in range(2):
        rows = np.flatnonzero((column == np.array(LANE_COLOURS[k])).all(axis=1))
        share = (lay.bottom - lay.top - rows.mean()) / (lay.bottom - lay.top) if rows.size else -1
        assert 0.0 < share < 0.1 or k == 0 and rows.size == 0, (k, share)  # 0: under 1
    yellow = np.flatnonzero((column == np.array(STALL_COLOUR)).all(axis=1))
    assert yellow.size and yellow.min() <= 3  # throttled in (nearly) every period
    quota_x = round(lay.x_of(last_quota["t"]))
    assert (px[quota_x, lay.top : lay.bottom] == np.array(QUOTA_COLOUR)).all(axis=1).sum() > 100
    legend = px[:, lay.height - 30 :]
    for memory in (ANON_COLOUR, CACHE_COLOUR, SWAP_COLOUR):
        assert not (legend == np.array(memory)).all(axis=2).any()


def test_an_acts_counters_are_drawn_refaults_as_a_rate_high_as_a_count(tmp_path):
    """Issue 23: the freeze's `count` events (the refault counter) become refaults per
    second; the high act's `held` events its memory.high count; both drawn in their
    colours, scaled to their own peak, named in the legend."""
    import json

    import pygame

    from beep_av.report import COUNTERS, counter_series, draw

    head = {"type": "header", "format": "beep-av/1", "stage": "cgroup", "act": "freeze"}
    lines = [head]
    for i in range(50):
        t = i * 0.1
        lines.append({"type": "sample", "t": t, "ram": 1 << 20, "cache": 0, "swap": 0,
                      "usage": 1 << 20, "ram_limit": 64 << 20, "swap_limit": 64 << 20,
                      "psi_some_us": 0, "psi_full_us": 0, "hog": 1 << 20, "intensity": 0.2,
                      "stall": 0.0, "phase": "swapping"})  # fmt: skip
    for k, t in enumerate((1.0, 2.0, 3.0, 4.0)):
        lines.append({"type": "act", "t": t, "event": "count", "refaults": 1000 * k * k})
        lines.append({"type": "act", "t": t + 0.5, "event": "held", "held_count": 10 * k})
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rec = load(str(path))
    t, v = counter_series(rec, "refaults", rate=True)
    assert t.tolist() == [2.0, 3.0, 4.0] and v.tolist() == [1000.0, 3000.0, 5000.0]
    t, v = counter_series(rec, "held_count", rate=False)
    assert v.tolist() == [0.0, 10.0, 20.0, 30.0]
    img = pygame.surfarray.array3d(draw(rec, (800, 450)))
    for key in ("refaults", "held_count"):
        colour = np.array(COUNTERS[key][1])
        assert (np.abs(img - colour).sum(axis=2) == 0).sum() > 50, key
