"""Terminal output, pure parts: colour mode, key parsing (hostile bytes), pacing, the
fixed-width encoder (decoded back to pixels), text lines, the finale card and bell, and
open/close against a pipe (not a tty: no keys, no SIGWINCH)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from beep_av.model import KillRecord, MiB, Phase, ShowState, Snapshot
from beep_av.noise import Noise
from beep_av.video.terminal import (
    Encoder,
    Pacer,
    Picture,
    TerminalOutput,
    bar,
    card_block,
    color_mode,
    fit,
    gauge_line,
    parse_keys,
    to_256,
)


@pytest.mark.parametrize(
    "env, mode",
    [
        ({}, "256"),
        ({"COLORTERM": "truecolor"}, "truecolor"),
        ({"COLORTERM": "24bit"}, "truecolor"),
        ({"COLORTERM": "TrueColor "}, "truecolor"),
        ({"COLORTERM": "yes"}, "256"),
        ({"NO_COLOR": "1", "COLORTERM": "truecolor"}, "none"),
        ({"NO_COLOR": "0"}, "none"),  # any non-empty value
        ({"NO_COLOR": ""}, "256"),  # empty: not set
    ],
)
def test_color_mode(env, mode):
    assert color_mode(env) == mode


@pytest.mark.parametrize(
    "data, cmds",
    [
        (b"", []),
        (b"q", ["quit"]),
        (b" ", ["toggle_pause"]),
        (
            b"rm+-=_cC",
            [
                "release",
                "mute",
                "rate_up",
                "rate_down",
                "rate_up",
                "rate_down",
                "captions",
                "captions",
            ],
        ),
        (b"\x1b", ["quit"]),  # a lone Esc
        (b"\x1b[A\x1b[B", []),  # arrows are not Esc
        (b"\x1bOP", []),  # F1
        (b"\x1b[1;5C m", ["toggle_pause", "mute"]),
        (b"\x1b[", []),  # truncated sequence
        (b"\x1bq", ["quit", "quit"]),  # Alt-q: an Esc then q
        (b"\xff\x00\xe2\x96\x80xyz", []),  # garbage and UTF-8
    ],
)
def test_parse_keys(data, cmds):
    assert parse_keys(data) == cmds


def test_pacer_caps_bytes_per_second():
    p = Pacer(max_bps=1000)
    assert p.ready(0.0)
    p.wrote(500, 0.0, 0.001)  # half a second of budget
    assert not p.ready(0.2)
    assert not p.ready(0.49)
    assert p.ready(0.5)
    assert p.skipped == 2 and p.sent == 1


def test_pacer_backs_off_when_writes_block():
    p = Pacer(max_bps=1_000_000)
    p.wrote(1000, 10.0, 10.4)  # 1 ms of budget, but the write blocked 400 ms
    assert p.slow == 1
    assert not p.ready(10.5)
    assert p.ready(10.8)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_pacer_rejects_bad_caps(bad):
    with pytest.raises(ValueError):
        Pacer(bad)


# ---------------------------------------------------------------- encoding

SGR_TRUE = re.compile(rb"\x1b\[38;2;(\d+);(\d+);(\d+);48;2;(\d+);(\d+);(\d+)m\xe2\x96\x80")


def _pixels(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_truecolor_cells_decode_back_to_the_pixels():
    rows, cols = 4, 7
    px = _pixels(2 * rows, cols)
    data = Encoder("truecolor", cols, rows).encode(px)
    cells = SGR_TRUE.findall(data)
    assert len(cells) == rows * cols
    got = np.array([[int(v) for v in c] for c in cells], dtype=np.uint8).reshape(rows, cols, 6)
    assert np.array_equal(got[:, :, :3], px[0::2])
    assert np.array_equal(got[:, :, 3:], px[1::2])
    for r in range(rows):
        assert f"\x1b[{r + 1:03d};1H".encode() in data


def test_encoder_reuses_its_buffer_without_stale_digits():
    enc = Encoder("truecolor", 3, 2)
    enc.encode(_pixels(4, 3, seed=1))
    px = np.zeros((4, 3, 3), np.uint8)
    data = enc.encode(px)
    assert data.count(b"\x1b[38;2;000;000;000;48;2;000;000;000m") == 6


def test_256_cells():
    px = np.array([[[255, 0, 0], [0, 0, 0]], [[0, 0, 255], [128, 128, 128]]], np.uint8)
    data = Encoder("256", 2, 1).encode(px)
    got = [int(v) for pair in re.findall(rb"38;5;(\d+);48;5;(\d+)m", data) for v in pair]
    assert got[:3] == [196, 21, 16]
    # mid grey: the grey ramp or the cube's grey, whichever the 15-bit table found nearer
    assert xterm_rgb(got[3]) in [(128, 128, 128), (135, 135, 135)]


def xterm_rgb(i: int) -> tuple[int, int, int]:
    if i >= 232:
        v = 8 + 10 * (i - 232)
        return (v, v, v)
    levels = [0, 95, 135, 175, 215, 255]
    i -= 16
    return (levels[i // 36], levels[i // 6 % 6], levels[i % 6])


@pytest.mark.parametrize(
    "rgb, idx",
    [
        ((0, 0, 0), 16),
        ((255, 255, 255), 231),
        ((255, 0, 0), 196),
        ((95, 135, 175), 67),
        ((128, 128, 128), 244),
        ((8, 8, 8), 232),
        ((238, 238, 238), 255),
    ],
)
def test_to_256(rgb, idx):
    assert int(to_256(np.array(rgb, np.uint8))) == idx


def test_no_color_cells_are_density_glyphs_only():
    px = np.zeros((2, 4, 3), np.uint8)
    px[:, 1] = 255
    px[:, 2] = 128
    data = Encoder("none", 4, 1).encode(px)
    assert data == b"\x1b[001;1H @+ "


def test_encoder_rejects_bad_sizes():
    for cols, rows in [(0, 5), (5, 0), (5, 1000)]:
        with pytest.raises(ValueError):
            Encoder("truecolor", cols, rows)
    with pytest.raises(ValueError):
        Encoder("16", 5, 5)


# ---------------------------------------------------------------- picture and text


def test_picture_is_black_at_the_finale_and_white_at_the_kill():
    pic = Picture()
    n = Noise(1)
    assert not pic.render(ShowState(t=5, phase=Phase.FINALE, oom_t=4), n, 8, 6).any()
    flash = pic.render(ShowState(t=4.01, phase=Phase.OOM, oom_t=4.0), n, 8, 6)
    assert (flash == 255).all()


def test_picture_brightens_with_intensity_and_is_seeded():
    pic = Picture()
    calm = pic.render(ShowState(phase=Phase.FILLING, intensity=0.0), Noise(2), 60, 40)
    hot = pic.render(ShowState(phase=Phase.FILLING, intensity=1.0), Noise(2), 60, 40)
    assert hot.mean() > calm.mean() * 1.5
    again = Picture().render(ShowState(phase=Phase.FILLING, intensity=1.0), Noise(2), 60, 40)
    assert np.array_equal(hot, again)
    nan = pic.render(
        ShowState(phase=Phase.SWAPPING, intensity=float("nan"), stall=float("nan")), Noise(2), 5, 4
    )
    assert nan.shape == (4, 5, 3)


@pytest.mark.parametrize(
    "parts, total, width, out",
    [
        ([(50, "█"), (25, "▒")], 100, 8, "████▒▒··"),
        ([(500, "█")], 100, 4, "████"),  # over the limit: clipped
        ([(-5, "█")], 100, 4, "····"),
        ([(5, "█")], 0, 3, "···"),  # no limit known
        ([(5, "█")], 10, 0, ""),
    ],
)
def test_bar(parts, total, width, out):
    assert bar(parts, total, width) == out


def test_fit():
    assert fit("hello", 10) == "hello"
    assert fit("hello world", 5) == "hell…"
    assert fit("x", 0) == ""


SNAP = Snapshot(
    t=1,
    anon_bytes=256 * MiB,
    cache_bytes=64 * MiB,
    swap_bytes=32 * MiB,
    ram_limit=512 * MiB,
    swap_limit=128 * MiB,
    hog_bytes=288 * MiB,
)
KILL = KillRecord(
    pid=31337,
    name="python3",
    exit=137,
    signal=9,
    oom_kill_count=1,
    kmsg=None,
    anon_rss_kib=511856,
    detected_by=("exit", "kmsg"),
    latency_ms=2.0,
    t=9.0,
)


def test_gauge_line_figures():
    line = gauge_line(ShowState(snapshot=SNAP), 200)
    assert "320/512 MiB" in line and "swap [" in line and "32/128 MiB" in line
    assert len(gauge_line(ShowState(snapshot=SNAP), 30)) <= 30


def test_card_block_has_the_victim():
    text = "\n".join(card_block(ShowState(phase=Phase.FINALE, kill=KILL), 100, 30))
    for needle in (
        "31337",
        "python3",
        "exit 137 (OOMKilled)",
        "500 MiB",
        "exit + kmsg",
        "detected in 2",
        "█",
    ):
        assert needle in text
    small = card_block(ShowState(phase=Phase.FINALE, kill=KILL), 20, 5)
    assert "B E E P" in small[0] and all(len(x) <= 16 for x in small)


# ---------------------------------------------------------------- the output on a pipe


def _run(states, tmp_path, **kw) -> bytes:
    path = tmp_path / "tty.out"
    with open(path, "wb", buffering=0) as stream:
        out = TerminalOutput(stream=stream, size=(40, 12), keys=False, seed=1, **kw)
        out.open()
        try:
            for s in states:
                assert out.frame(s) == []
        finally:
            out.close()
            out.close()
    return path.read_bytes()


def test_open_close_frame_sequence_and_single_bell(tmp_path):
    states = [ShowState(t=i, phase=Phase.SWAPPING, snapshot=SNAP) for i in range(2)]
    states += [ShowState(t=3 + i, phase=Phase.FINALE, kill=KILL, oom_t=3) for i in range(3)]
    data = _run(states, tmp_path, color="truecolor", max_bps=1e12)
    assert data.startswith(b"\x1b[?1049h\x1b[?25l")
    restored = data.index(b"\x1b[?25h\x1b[?1049l") + len(b"\x1b[?25h\x1b[?1049l")
    assert data.count(b"\a") == 1
    assert b"31337" in data[:restored] and b"\xe2\x96\x80" in data
    # after the restore: the victim card once, as plain lines, as headless prints it
    from beep_av.summary import victim_card

    after = data[restored:].decode()
    assert after == "\n" + "".join(f"  {line}\n" for line in victim_card(KILL))


def test_a_show_that_ends_before_the_finale_leaves_no_card(tmp_path):
    states = [ShowState(t=i, phase=Phase.SWAPPING, snapshot=SNAP) for i in range(2)]
    data = _run(states, tmp_path, color="truecolor", max_bps=1e12)
    assert data.endswith(b"\x1b[?25h\x1b[?1049l")


def test_no_color_output_has_no_sgr_at_all(tmp_path):
    states = [
        ShowState(t=0, phase=Phase.SWAPPING, intensity=1.0, snapshot=SNAP),
        ShowState(t=1, phase=Phase.FINALE, kill=KILL, oom_t=1),
    ]
    data = _run(states, tmp_path, env={"NO_COLOR": "1", "COLORTERM": "truecolor"})
    assert not re.search(rb"\x1b\[[0-9;]*m", data)
    assert b"31337" in data


def test_byte_cap_skips_frames_but_not_phase_changes(tmp_path):
    states = [ShowState(t=i / 100, phase=Phase.SWAPPING) for i in range(20)]
    states.append(ShowState(t=1, phase=Phase.FINALE, kill=KILL, oom_t=1))
    data = _run(states, tmp_path, color="truecolor", max_bps=10_000)  # one 40x12 frame ~ 17 kB
    assert data.count(b"\x1b[001;1H") == 2  # the first frame and the finale
    assert b"31337" in data


def test_writes_to_a_text_stream():
    s = io.StringIO()
    out = TerminalOutput(stream=s, size=(10, 5), keys=False, color="256")
    out.open()
    out.frame(ShowState())
    out.close()
    assert s.getvalue().startswith("\x1b[?1049h") and "38;5;" in s.getvalue()


def test_rejects_bad_colour_option():
    with pytest.raises(ValueError):
        TerminalOutput(color="rainbow")
