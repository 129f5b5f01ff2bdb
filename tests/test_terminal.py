"""Terminal output, pure parts: colour mode, key parsing (hostile bytes), pacing, the
fixed-width encoder (decoded back to pixels), text lines, an act's lane rows (read
back through a small screen model), the finale card and bell, and open/close against a
pipe (not a tty: no keys, no SIGWINCH)."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import replace

import numpy as np
import pytest

from beep_av.model import KillRecord, Lane, MiB, Phase, ShowState, Snapshot
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
    lane_lines,
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


# ---------------------------------------------------------------- an act's lanes

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(data: bytes, cols: int, rows: int) -> list[str]:
    """What a terminal shows after `data`: cursor moves, erase to the end of the line,
    clear; colours (SGR) and modes are ignored. Enough for what build() sends."""
    grid = [[" "] * cols for _ in range(rows)]
    text = data.decode()
    y = x = 0
    i = 0
    while i < len(text):
        m = CSI.match(text, i)
        if m:
            args, cmd = m.groups()
            if cmd == "H":
                r, c = (args.split(";") + ["1", "1"])[:2]
                y, x = int(r or 1) - 1, int(c or 1) - 1
            elif cmd == "K":
                grid[y][x:] = [" "] * (cols - x)
            elif cmd == "J":
                grid = [[" "] * cols for _ in range(rows)]
            i = m.end()
            continue
        ch = text[i]
        i += 1
        if ch in "\a\r\n":
            continue
        assert x < cols, f"row {y + 1} runs past column {cols}"
        grid[y][x] = ch
        x += 1
    return ["".join(r).rstrip() for r in grid]


def plain(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


LANES = (
    Lane("big", 41000, 0, rss=412 * MiB, swap=80 * MiB, oom_score=669, oom_score_adj=0),
    Lane("medium", 41001, 1, rss=246 * MiB, oom_score=402, oom_score_adj=0),
    Lane("small", 41002, 2, alive=False),
)
VICTIM = replace(KILL, pid=41002, anon_rss_kib=1000)
ACT = ShowState(t=3, phase=Phase.SWAPPING, intensity=0.6, snapshot=SNAP, lanes=LANES, kill=VICTIM)


def _frame(state, size, color="truecolor", seed=1) -> bytes:
    return TerminalOutput(size=size, color=color, keys=False, seed=seed).build(state)


def test_lane_rows_sit_between_the_picture_and_the_gauge_line():
    cols, rows = 100, 30
    shown = screen(_frame(ACT, (cols, rows)), cols, rows)
    picture, lanes, gauge = shown[: rows - 6], shown[rows - 6 : rows - 3], shown[rows - 3]
    assert all(line == "▀" * cols for line in picture)  # the lanes took picture rows
    assert gauge.startswith("RAM [")
    big, medium, small = lanes
    assert big.startswith("█ big    pid 41000  [") and "RSS 412M  swap 80M  oom_score 669" in big
    assert medium.startswith("█ medium pid 41001  [") and "oom_score 402" in medium
    assert small == "█ small  pid 41002  DEAD (killed)"
    # the biggest lane's bar is full: RSS solid then swap shaded; the next one in proportion
    bar_big = big[big.index("[") + 1 : big.index("]")]
    bar_med = medium[medium.index("[") + 1 : medium.index("]")]
    assert len(bar_big) == len(bar_med) == 24
    assert "·" not in bar_big and bar_big.count("▓") == round(24 * 80 / 492)
    assert bar_med.count("█") == round(24 * 246 / 492) and bar_med.count("▓") == 0


@pytest.mark.parametrize("cols", [12, 30, 45, 60, 80, 120, 300])
def test_lane_rows_fit_the_width(cols):
    rows = 20
    data = _frame(ACT, (cols, rows))
    shown = screen(data, cols, rows)
    lanes = shown[rows - 6 : rows - 3]
    assert len(lanes) == len(LANES)
    for line in lanes:
        assert 0 < len(line) <= cols - 1, line  # like the text lines: the last column free
        assert line.startswith("█ ")
    for line in lane_lines(ACT, cols - 1, "truecolor"):
        assert len(plain(line)) <= cols - 1
    if cols >= 60:  # room for every figure (the bar goes first when it is narrow)
        assert "oom_score 669" in lanes[0] and "41001" in lanes[1] and "DEAD" in lanes[2]


def test_lane_markers_in_the_lane_colours():
    from beep_av.video.palette import LANE_COLOURS, lane_colour
    from beep_av.video.terminal import to_256

    true = lane_lines(ACT, 99, "truecolor")
    for line, (r, g, b) in zip(true[:2], LANE_COLOURS, strict=False):
        assert line.startswith(f"\x1b[38;2;{r};{g};{b}m█\x1b[39m ")
    dead = lane_colour(2, alive=False)
    assert dead != LANE_COLOURS[2] and true[2].startswith("\x1b[38;2;{};{};{}m█".format(*dead))
    c256 = lane_lines(ACT, 99, "256")
    idx = int(to_256(np.array(LANE_COLOURS[1], dtype=np.uint8)))
    assert c256[1].startswith(f"\x1b[38;5;{idx}m█") and "38;2;" not in "".join(c256)
    none = lane_lines(ACT, 99, "none")
    assert not any("\x1b" in line for line in none)
    assert none == [plain(line) for line in true]  # same text, colours only differ


def test_no_colour_frame_with_lanes_has_no_sgr():
    data = _frame(ACT, (80, 24), color="none")
    assert not re.search(rb"\x1b\[[0-9;]*m", data)
    assert b"pid 41000" in data and b"DEAD (killed)" in data


def test_throttle_lanes_show_the_work_rate_against_the_fastest():
    workers = tuple(
        Lane(f"worker {i + 1}", 500 + i, i, rss=10 * MiB, work_rate=r)
        for i, r in enumerate([2000.0, 1000.0, 0.0])
    )
    lines = [plain(x) for x in lane_lines(ShowState(lanes=workers), 79, "256")]
    bars = [x[x.index("[") + 1 : x.index("]")] for x in lines]
    assert lines[0].startswith("█ worker 1 pid 500  work [") and lines[0].endswith("] 2,000 it/s")
    assert bars[0] == "█" * len(bars[0]) and bars[2] == "·" * len(bars[0])
    assert bars[1].count("█") == len(bars[0]) // 2
    assert "oom_score" not in "".join(lines)


def test_at_most_four_lanes_and_the_rehearsal_says_its_kill_is_modelled():
    many = tuple(Lane(f"h{i}", 100 + i, i, rss=MiB, oom_score=i) for i in range(6))
    assert len(lane_lines(ShowState(lanes=many), 79, "none")) == 4
    cols, rows = 80, 30
    shown = screen(_frame(ShowState(snapshot=SNAP, lanes=many), (cols, rows)), cols, rows)
    assert [line[:5] for line in shown[rows - 7 : rows - 3]] == ["█ h0 ", "█ h1 ", "█ h2 ", "█ h3 "]
    assert shown[rows - 8] == "▀" * cols
    rehearsal = ShowState(lanes=LANES, kill=VICTIM, stage="rehearsal")
    assert plain(lane_lines(rehearsal, 79, "none")[2]).endswith("DEAD (killed in the model)")
    gone = ShowState(lanes=LANES)  # dead, but not the recorded kill (released at the end)
    assert lane_lines(gone, 79, "none")[2].endswith("pid 41002  DEAD")


@pytest.mark.parametrize("size", [(40, 6), (40, 2), (20, 7)])
def test_too_few_rows_drop_the_lanes_first(size):
    """No room for a lane row beside MIN_PICTURE picture rows: the frame is the one
    without lanes, byte for byte."""
    assert _frame(ACT, size) == _frame(replace(ACT, lanes=()), size)


def test_a_few_rows_keep_the_picture_and_some_lanes():
    cols, rows = 60, 9  # 6 picture rows without lanes: 2 lanes, 4 picture rows left
    shown = screen(_frame(ACT, (cols, rows)), cols, rows)
    assert shown[:4] == ["▀" * cols] * 4
    assert shown[4].startswith("█ big") and shown[5].startswith("█ medium")
    assert shown[6].startswith("RAM [")


@pytest.mark.parametrize("size", [(120, 40), (100, 30), (80, 24), (60, 18), (40, 12)])
def test_the_finale_card_stays_whole_above_the_lanes(size):
    """The card is the one the screen would show without lanes; lane rows are kept
    only where it still fits whole over the picture."""
    cols, rows = size
    finale = replace(ACT, phase=Phase.FINALE, kill=KILL, oom_t=3)
    shown = "\n".join(screen(_frame(finale, size), cols, rows))
    for line in card_block(replace(finale, lanes=()), cols, rows - 3):
        assert line.strip() in shown
    if rows >= 24:
        assert "█ big    pid 41000" in shown and "DEAD" in shown
    if size == (40, 12):  # no room for both: the lanes go
        assert "pid 41000" not in shown


# build() of a story state (no lanes), hashed: computed with main's terminal.py at
# 6ffb5be, before the lanes came in; a state without lanes must draw exactly as before
MAIN_STORY_FRAMES = {
    "truecolor": "17c5c115568e8ea38114ca7b3a5b224aac50cffb47bd2e0c8d3cb7d794d311b5",
    "256": "5ac77b572617ac0d312a1830cf5003113b78ba7f49bb4ed9d43aafeb567ecb46",
    "none": "b040715afdd63c43455ce4364da9a352bfc17d9be4b151d9da8a8a2c985d8f18",
}


@pytest.mark.parametrize("mode", sorted(MAIN_STORY_FRAMES))
def test_no_lanes_draws_exactly_as_before(mode):
    out = TerminalOutput(size=(60, 20), color=mode, keys=False, seed=7)
    states = [
        ShowState(t=1.0, phase=Phase.SWAPPING, intensity=0.7, stall=0.3, snapshot=SNAP),
        ShowState(t=9.0, phase=Phase.FINALE, kill=KILL, oom_t=9.0, snapshot=SNAP),
    ]
    data = b"".join(out.build(s) for s in states)
    assert hashlib.sha256(data).hexdigest() == MAIN_STORY_FRAMES[mode]


# ---------------------------------------------------------------- an act's words


def test_the_throttle_card_says_throttled_and_claims_no_kill():
    from beep_av.model import ActView
    from beep_av.video.terminal import card_block

    view = ActView(title="THROTTLED", card=("throttled 97% of the time", "killed: nobody"))
    st = ShowState(t=30.0, phase=Phase.FINALE, stage="cgroup", act="throttle", act_view=view)
    block = "\n".join(card_block(st, 100, 30))
    assert "OOM" not in block and "BEEP" not in block and "killed: nobody" in block
    assert "█████" in block  # THROTTLED in block letters
    narrow = "\n".join(card_block(st, 30, 30))
    assert "T H R O T T L E D" in narrow and "OOM" not in narrow


def test_an_acts_caption_and_note_reach_the_terminal():
    from beep_av.model import ActView
    from beep_av.video.captions import Captions
    from beep_av.video.terminal import caption_line, status_line

    view = ActView(caption="who_dies_guess", note="guess who dies: big, small ... 3")
    st = ShowState(t=1.0, phase=Phase.CALM, act="who-dies", act_view=view, captions="en")
    assert "Which one will the kernel kill?" in caption_line(st, Captions.load(), 400)
    assert "guess who dies: big, small ... 3" in status_line(st, 400, keys=False)


def test_the_throttle_gauge_and_status_say_cpu_not_memory():
    """A CPU act fills no memory: its gauge line is the work against full speed and the
    share of periods throttled; the status line names the act's word and says
    'throttled' (the periods', not PSI's stall)."""
    from beep_av.model import ActView
    from beep_av.video.terminal import status_line

    view = ActView(speed=0.25, word="THROTTLING")
    st = ShowState(t=9.0, phase=Phase.FILLING, act="throttle", gauge="cpu", act_view=view, stall=0.8,
                   snapshot=SNAP)  # fmt: skip
    line = gauge_line(st, 120)
    assert line.startswith("CPU [") and "work 25% of full speed" in line
    assert "throttled in 80% of the periods" in line
    assert "RAM" not in line and "MiB" not in line
    cpu = line[line.index("[") + 1 : line.index("]")]
    assert abs(cpu.count("█") - len(cpu) / 4) <= 0.5
    status = status_line(st, 120, keys=False)
    assert status.startswith("THROTTLING") and "throttled  80%" in status
    assert "stall" not in status and "FILLING" not in status
    story = gauge_line(replace(st, act="story", gauge="memory", act_view=None), 120)
    assert story.startswith("RAM [")


def test_a_throttled_lane_bar_is_against_its_own_full_speed():
    workers = tuple(
        Lane(f"worker {i + 1}", 500 + i, i, work_rate=250.0, full_rate=full)
        for i, full in enumerate([1000.0, None])
    )
    lines = [plain(x) for x in lane_lines(ShowState(lanes=workers), 79, "256")]
    bars = [x[x.index("[") + 1 : x.index("]")] for x in lines]
    assert bars[0].count("█") == round(len(bars[0]) / 4)
    assert bars[1] == "█" * len(bars[1])  # no full speed measured: the fastest fills it
