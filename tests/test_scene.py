"""The pure scene, headless (SDL dummy driver): golden frames, properties of the picture,
the victim card, captions files, the frame saver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beep_av.errors import BadInput
from beep_av.model import KillRecord, MiB, Phase, ShowState, Snapshot
from beep_av.noise import Noise
from beep_av.summary import card_lines
from beep_av.video import captions as captions_mod
from beep_av.video.captions import REQUIRED, Captions, load_captions
from beep_av.video.frames import FrameSaver
from beep_av.video.scene import Scene, fmt_time, grain_for

REFS = Path(__file__).resolve().parent / "references" / "video"
SIZE = (320, 180)
INTENSITY = {
    Phase.CALM: 0.05,
    Phase.FILLING: 0.3,
    Phase.EVICTING: 0.55,
    Phase.SWAPPING: 0.85,
    Phase.OOM: 1.0,
    Phase.FINALE: 1.0,
}

KILL = KillRecord(
    pid=4242,
    name="python",
    exit=137,
    signal=9,
    oom_kill_count=1,
    kmsg="Memory cgroup out of memory: Killed process 4242 (python)",
    anon_rss_kib=511856,
    detected_by=("exit", "oom_kill", "kmsg"),
    latency_ms=1.4,
    t=20.0,
)


def make_state(phase: Phase, **kw) -> ShowState:
    snap = Snapshot(
        t=12.0,
        anon_bytes=300 * MiB,
        cache_bytes=60 * MiB,
        swap_bytes=200 * MiB if phase.index >= Phase.SWAPPING.index else 0,
        ram_limit=512 * MiB,
        swap_limit=1024 * MiB,
    )
    base = dict(
        t=12.3,
        phase=phase,
        intensity=INTENSITY[phase],
        stall=0.4 if phase is Phase.SWAPPING else 0.05,
        fill_rate=64 * MiB,
        snapshot=snap,
        kill=KILL if phase.index >= Phase.OOM.index else None,
        oom_t=20.0 if phase.index >= Phase.OOM.index else None,
    )
    base.update(kw)
    if phase is Phase.OOM and "t" not in kw:
        base["t"] = 20.5  # after the flash: the cut to black
    return ShowState(**base)


@pytest.fixture(scope="module")
def caps() -> Captions:
    return Captions.load()


def pixels(surface: pygame.Surface) -> np.ndarray:
    return pygame.surfarray.array3d(surface).astype(np.int16)


def brightness(surface: pygame.Surface) -> float:
    """Mean brightness of the static area between the captions and the gauges."""
    a = pixels(surface)
    h = a.shape[1]
    return float(a[:, int(h * 0.3) : int(h * 0.6)].mean())


# ---------------------------------------------------------------- golden references


GOLDEN = [(p.value, make_state(p)) for p in Phase] + [
    ("oom-flash", make_state(Phase.OOM, t=20.05)),
    (
        "swapping-paused-fr",
        make_state(Phase.SWAPPING, paused=True, captions="fr", message="released by presenter"),
    ),
    (
        "evicting-noswap",
        make_state(Phase.EVICTING, skipped=((Phase.SWAPPING, "no swap on this stage"),)),
    ),
]


@pytest.mark.parametrize("name,state", GOLDEN, ids=[n for n, _ in GOLDEN])
def test_golden_frame(name: str, state: ShowState, caps: Captions, request) -> None:
    frame = Scene(SIZE, caps).render(state, Noise(seed=7))
    path = REFS / f"{name}.png"
    if request.config.getoption("--update-references"):
        REFS.mkdir(parents=True, exist_ok=True)
        pygame.image.save(frame, str(path))
    assert path.exists(), f"no reference {path.name}: run pytest --update-references"
    ref = pixels(pygame.image.load(str(path)))
    got = pixels(frame)
    assert ref.shape == got.shape
    differ = np.any(ref != got, axis=2).mean()
    assert differ == 0.0, f"{name}: {differ:.2%} of the pixels differ from {path.name}"


def test_golden_card_alone(caps: Captions, request) -> None:
    scene = Scene(SIZE, caps)
    surf = pygame.Surface(SIZE)
    scene.draw_card(make_state(Phase.FINALE), surf)
    path = REFS / "card.png"
    if request.config.getoption("--update-references"):
        REFS.mkdir(parents=True, exist_ok=True)
        pygame.image.save(surf, str(path))
    assert np.array_equal(pixels(pygame.image.load(str(path))), pixels(surf))


# ---------------------------------------------------------------- properties


def test_same_seed_same_frame_other_seed_other_frame(caps: Captions) -> None:
    s = make_state(Phase.EVICTING)
    a = pixels(Scene(SIZE, caps).render(s, Noise(seed=1)))
    b = pixels(Scene(SIZE, caps).render(s, Noise(seed=1)))
    c = pixels(Scene(SIZE, caps).render(s, Noise(seed=2)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_brightness_rises_from_calm_to_swapping() -> None:
    phases = [Phase.CALM, Phase.FILLING, Phase.EVICTING, Phase.SWAPPING]
    means = [brightness(Scene(SIZE, None).render(make_state(p), Noise(seed=3))) for p in phases]
    assert means == sorted(means) and len(set(means)) == 4, means
    assert means[-1] > 3 * means[0]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    phase=st.sampled_from([Phase.CALM, Phase.FILLING, Phase.EVICTING, Phase.SWAPPING]),
    lo=st.floats(0, 1),
    hi=st.floats(0, 1),
)
def test_brightness_follows_intensity(phase: Phase, lo: float, hi: float) -> None:
    lo, hi = sorted((lo, hi))
    if hi - lo < 0.1:
        hi = min(1.0, lo + 0.1)
        lo = hi - 0.1
    a = brightness(Scene(SIZE, None).render(make_state(phase, intensity=lo, stall=0.0), Noise(5)))
    b = brightness(Scene(SIZE, None).render(make_state(phase, intensity=hi, stall=0.0), Noise(5)))
    assert b > a


def test_swapping_tears_bands_more_with_stall() -> None:
    """Torn bands are smeared scanlines: runs of equal neighbouring grains."""

    def runs(stall: float) -> float:
        s = make_state(Phase.SWAPPING, stall=stall)
        a = pixels(Scene(SIZE, None).render(s, Noise(seed=11)))[
            :, int(SIZE[1] * 0.3) : int(SIZE[1] * 0.75)
        ]
        return float(np.all(a[2:] == a[:-2], axis=2).mean())  # grain is 2 px wide here

    calm_like = runs(0.0)
    assert runs(1.0) > calm_like + 0.05


def test_calm_static_moves_between_frames(caps: Captions) -> None:
    scene, noise = Scene(SIZE, caps), Noise(seed=4)
    a = pixels(scene.render(make_state(Phase.CALM), noise))
    b = pixels(scene.render(make_state(Phase.CALM), noise))
    changed = np.any(a != b, axis=2).mean()
    assert 0.02 < changed < 0.5  # slow: a share of the rows is redrawn each frame


def test_finale_differs_from_every_noise_frame(caps: Captions) -> None:
    fin = pixels(Scene(SIZE, caps).render(make_state(Phase.FINALE), Noise(seed=1)))
    for p in (Phase.CALM, Phase.FILLING, Phase.EVICTING, Phase.SWAPPING):
        frame = pixels(Scene(SIZE, caps).render(make_state(p), Noise(seed=1)))
        assert np.any(fin != frame, axis=2).mean() > 0.3, p


def test_oom_flashes_white_then_cuts_to_black() -> None:
    flash = pixels(Scene(SIZE, None).render(make_state(Phase.OOM, t=20.01), Noise(1)))
    black = pixels(Scene(SIZE, None).render(make_state(Phase.OOM, t=21.0), Noise(1)))
    assert flash.min() == 255
    assert black.max() == 0


def test_victim_pid_is_drawn_on_the_card(caps: Captions) -> None:
    state = make_state(Phase.FINALE)
    scene = Scene(SIZE, caps)
    frame = scene.render(state, Noise(1))
    alone = pygame.Surface(SIZE)
    rect = scene.draw_card(state, alone)
    # the finale frame holds exactly the card inside the card's rectangle
    assert np.array_equal(pixels(frame.subsurface(rect)), pixels(alone.subsurface(rect)))
    # and the pid is part of it: another pid draws other pixels there
    other = pygame.Surface(SIZE)
    scene.draw_card(
        make_state(Phase.FINALE, kill=KillRecord(**{**KILL.__dict__, "pid": 9191})), other
    )
    assert not np.array_equal(pixels(other.subsurface(rect)), pixels(alone.subsurface(rect)))
    assert "pid 4242  python" in card_lines(state)


@pytest.mark.parametrize(
    "change",
    [
        dict(paused=True),
        dict(muted=True),
        dict(message="released by presenter"),
        dict(skipped=((Phase.SWAPPING, "no swap on this stage"),)),
        dict(captions="fr"),
        dict(captions="off"),
    ],
    ids=["paused", "muted", "message", "skipped", "fr", "off"],
)
def test_hud_shows_state_changes(change: dict, caps: Captions) -> None:
    a = pixels(Scene(SIZE, caps).render(make_state(Phase.FILLING), Noise(1)))
    b = pixels(Scene(SIZE, caps).render(make_state(Phase.FILLING, **change), Noise(1)))
    assert not np.array_equal(a, b)


def test_gauges_follow_the_snapshot(caps: Captions) -> None:
    def bar(swap: int) -> np.ndarray:
        snap = Snapshot(
            t=1, anon_bytes=100 * MiB, ram_limit=512 * MiB, swap_limit=512 * MiB, swap_bytes=swap
        )
        s = make_state(Phase.SWAPPING, snapshot=snap)
        return pixels(Scene(SIZE, caps).render(s, Noise(1)))[:, int(SIZE[1] * 0.85)]

    assert not np.array_equal(bar(0), bar(400 * MiB))


HOSTILE = [
    dict(intensity=float("nan"), stall=float("inf"), fill_rate=float("-inf")),
    dict(intensity=-5.0, stall=-1.0),
    dict(intensity=7.0, stall=9.0),
    dict(snapshot=Snapshot(t=0)),  # limits unknown
    dict(snapshot=Snapshot(t=1, anon_bytes=-1, cache_bytes=-5, swap_bytes=-3, ram_limit=-1)),
    dict(
        snapshot=Snapshot(t=1, anon_bytes=1 << 60, cache_bytes=1 << 60, ram_limit=1, swap_limit=1)
    ),
    dict(t=float("nan")),
    dict(t=-3.0),
    dict(message="x" * 500),
    dict(kill=KillRecord(0, "a) Z \n\t'\"💥", None, None, 0, None, None, (), float("nan"), 0.0)),
]


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("change", HOSTILE)
def test_hostile_states_draw_without_error(phase: Phase, change: dict, caps: Captions) -> None:
    for size in (SIZE, (1, 1), (7, 3)):
        frame = Scene(size, caps).render(make_state(phase, **change), Noise(1))
        assert frame.get_size() == size


@pytest.mark.parametrize("depth", [8, 16, 24, 32])
def test_draws_into_any_pixel_depth(depth: int) -> None:
    surf = pygame.Surface(SIZE, depth=depth)
    Scene(SIZE, None).draw(make_state(Phase.SWAPPING), Noise(1), surf)
    assert pixels(surf).std() > 20


def test_resize_and_draw_into_other_sizes(caps: Captions) -> None:
    scene = Scene(SIZE, caps)
    surf = pygame.Surface((200, 100))
    scene.draw(make_state(Phase.SWAPPING), Noise(1), surf)
    assert scene.size == (200, 100)
    scene.resize((64, 48))
    assert scene.render(make_state(Phase.CALM), Noise(1)).get_size() == (64, 48)
    with pytest.raises(ValueError):
        scene.resize((0, 10))


@pytest.mark.parametrize(
    "height,intensity,grain",
    [
        (1080, 0.0, 7),
        (1080, 1.0, 3),
        (720, 0.0, 5),
        (720, 1.0, 2),
        (360, 0.5, 2),
        (10, 0.5, 2),
        (1080, float("nan"), 7),
        (1080, -1, 7),
        (1080, 9, 3),
    ],
)
def test_grain_table(height: int, intensity: float, grain: int) -> None:
    assert grain_for(height, intensity) == grain


@pytest.mark.parametrize(
    "t,text",
    [
        (0, "00:00.0"),
        (12.34, "00:12.3"),
        (61.0, "01:01.0"),
        (-1, "00:00.0"),
        (float("nan"), "00:00.0"),
    ],
)
def test_fmt_time(t: float, text: str) -> None:
    assert fmt_time(t) == text


@pytest.mark.parametrize(
    "kill,expect",
    [
        (
            KILL,
            [
                "pid 4242  python",
                "anon-rss 500 MiB",
                "exit 137 (OOMKilled)",
                "confirmed by exit + oom_kill + kmsg",
                "detected in 1.4 ms",
            ],
        ),
        (None, ["the hog is gone", "no kill record"]),
        (
            KillRecord(7, "hog", None, 9, 1, None, None, ("oom_kill",), 35.2, 1.0),
            [
                "pid 7  hog",
                "anon-rss ?",
                "exit 137 (OOMKilled)",
                "confirmed by oom_kill",
                "detected in 35 ms",
            ],
        ),
        (
            KillRecord(7, "hog", 1, None, 0, None, 2048, (), float("inf"), 1.0),
            # no finite latency: unknown, never a 0.0 that measures nothing
            ["pid 7  hog", "anon-rss 2 MiB", "exit 1", "latency unknown"],
        ),
    ],
)
def test_card_lines(kill: KillRecord | None, expect: list[str]) -> None:
    assert card_lines(make_state(Phase.FINALE, kill=kill)) == expect


# ---------------------------------------------------------------- captions files


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_shipped_captions_are_complete(lang: str) -> None:
    texts = load_captions(lang)
    for key in REQUIRED:
        assert texts[key], key
    assert "disk" in texts["evicting"] or "disque" in texts["evicting"]


BAD_FILES = [
    ("not toml", b"calm = \n", "not valid TOML"),
    ("not utf-8", b'calm = "\xff"\n', "not UTF-8"),
    ("number", b"calm = 3\n", "must be a string"),
    ("unknown key", b'clam = "typo"\n', "unknown key 'clam'"),
    ("missing", b'calm = "ok"\n', "missing filling"),
    ("too long", ('calm = "' + "x" * 1000 + '"\n').encode(), "longer than"),
]


@pytest.mark.parametrize("what,content,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_captions_file_names_it(
    tmp_path: Path, what: str, content: bytes, message: str
) -> None:
    (tmp_path / "xx.toml").write_bytes(content)
    with pytest.raises(BadInput) as e:
        load_captions("xx", tmp_path)
    assert message in e.value.message
    assert "xx.toml" in e.value.message
    assert "\n" not in e.value.message  # one line on stderr


@pytest.mark.parametrize("lang", ["../etc/passwd", "", "EN", "e n", "a/b", 3])
def test_bad_language_codes(lang) -> None:
    with pytest.raises(BadInput):
        load_captions(lang)


def test_missing_language_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_captions("de", tmp_path)


def test_captions_load_from_assets_dir() -> None:
    assert captions_mod.CAPTIONS_DIR.joinpath("en.toml").is_file()
    caps = Captions.load()
    assert caps.get("fr", "calm") != caps.get("en", "calm")
    assert caps.get("de", "calm") is None


# ---------------------------------------------------------------- frame saver


def test_frame_saver_numbers_every_nth(tmp_path: Path) -> None:
    saver = FrameSaver(tmp_path / "f", every=2)
    surf = pygame.Surface((8, 4))
    written = []
    for i in range(5):
        surf.fill((i * 40, 0, 0))
        written.append(saver.offer(surf))
    assert [p.name if p else None for p in written] == [
        "frame-00001.png",
        None,
        "frame-00002.png",
        None,
        "frame-00003.png",
    ]
    saver.close()  # the files are written by the saver thread: close waits for them
    back = pygame.image.load(str(tmp_path / "f" / "frame-00002.png"))
    assert back.get_at((0, 0))[:3] == (80, 0, 0)
    assert saver.written == 3 and saver.dropped == 0


def test_frames_are_encoded_on_the_saver_thread_not_the_callers(tmp_path: Path, monkeypatch):
    import threading

    from beep_av.video import frames as frames_mod

    threads: list[str] = []
    real = frames_mod.write_png

    def spy(path, rgb, level=frames_mod.LEVEL):
        threads.append(threading.current_thread().name)
        real(path, rgb, level)

    monkeypatch.setattr(frames_mod, "write_png", spy)
    monkeypatch.setattr(
        pygame.image, "save", lambda *a, **k: pytest.fail("pygame.image.save holds the GIL")
    )
    saver = FrameSaver(tmp_path / "f")
    surf = pygame.Surface((64, 32))
    for i in range(3):
        surf.fill((10 * i, 200, 30))
        saver.offer(surf)
    saver.close()
    assert threads == ["beep-frames"] * 3
    back = pygame.image.load(str(tmp_path / "f" / "frame-00003.png"))  # libpng reads it
    assert back.get_size() == (64, 32) and back.get_at((5, 5))[:3] == (20, 200, 30)


def test_a_busy_saver_drops_frames_and_counts_them(tmp_path: Path, monkeypatch):
    """Every pool surface waits for a stuck disk: offer() returns at once, the frame is
    dropped and counted, and the saved ones keep consecutive numbers."""
    import threading
    import time

    from beep_av.video import frames as frames_mod

    gate = threading.Event()
    real = frames_mod.write_png

    def stuck(path, rgb, level=frames_mod.LEVEL):
        gate.wait(10)
        real(path, rgb, level)

    monkeypatch.setattr(frames_mod, "write_png", stuck)
    saver = FrameSaver(tmp_path / "f", pool=2)
    surf = pygame.Surface((32, 16))
    slowest = 0.0
    got = []
    for _ in range(10):
        t0 = time.perf_counter()
        got.append(saver.offer(surf))
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05
    assert [p.name for p in got if p] == ["frame-00001.png", "frame-00002.png"]
    assert saver.dropped == 8
    gate.set()
    saver.close()
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "frame-00001.png",
        "frame-00002.png",
    ]


def test_an_unwritable_frame_ends_the_show_on_the_ui_thread(tmp_path: Path, monkeypatch):
    from beep_av.video import frames as frames_mod

    def fail(path, rgb, level=frames_mod.LEVEL):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(frames_mod, "write_png", fail)
    saver = FrameSaver(tmp_path / "f")
    saver.offer(pygame.Surface((8, 8)))
    with pytest.raises(BadInput, match="cannot write frame-00001.png"):
        saver.close()


@pytest.mark.parametrize("every", [0, -1, 1.5, "2"])
def test_frame_saver_rejects_bad_every(tmp_path: Path, every) -> None:
    with pytest.raises(BadInput):
        FrameSaver(tmp_path, every)


def test_frame_saver_rejects_a_file_as_folder(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BadInput):
        FrameSaver(f)


# ---------------------------------------------------------------- the throttle act


def _throttle_state(speed: float, **kw) -> ShowState:
    from beep_av.model import ActView

    view = ActView(caption="throttle_slow", speed=speed, word="THROTTLING")
    return make_state(Phase.FILLING, act="throttle", gauge="cpu", act_view=view, stall=0.8, **kw)


def _gauge_fill(surface: pygame.Surface) -> int:
    """Pixels of the work colour along a row through the bottom gauge's bar."""
    from beep_av.video.scene import SEG_ANON

    a = pixels(surface)
    h = a.shape[1]
    row = a[:, h - int(h * 0.2) + max(4, int(h * 0.03)) // 2 + 3]
    return int((row == SEG_ANON).all(axis=1).sum())


def test_the_throttle_gauge_is_the_work_rate_not_memory(caps: Captions) -> None:
    """A CPU act fills no memory: its bottom bar is the work against full speed, and
    the memory figures of a snapshot do not move it."""
    size = (640, 360)
    quarter = _gauge_fill(Scene(size, caps).render(_throttle_state(0.25), Noise(1)))
    three = _gauge_fill(Scene(size, caps).render(_throttle_state(0.75), Noise(1)))
    bar = size[0] - 2 * max(4, int(size[1] * 0.03))
    assert abs(quarter - 0.25 * bar) <= 2 and abs(three - 0.75 * bar) <= 2
    full = Snapshot(t=1, anon_bytes=500 * MiB, ram_limit=512 * MiB, swap_limit=0)
    crowded = Scene(size, caps).render(_throttle_state(0.25, snapshot=full), Noise(1))
    assert _gauge_fill(crowded) == quarter


def test_the_throttle_hud_word_replaces_the_phase_name(caps: Captions) -> None:
    from beep_av.model import ActView

    a = pixels(Scene(SIZE, caps).render(_throttle_state(0.5), Noise(1)))
    view = ActView(caption="throttle_slow", speed=0.5)
    plain = make_state(Phase.FILLING, act="throttle", gauge="cpu", act_view=view, stall=0.8)
    b = pixels(Scene(SIZE, caps).render(plain, Noise(1)))
    top = slice(0, int(SIZE[1] * 0.15))
    assert not np.array_equal(a[:, top], b[:, top])


def test_a_throttled_lane_is_measured_against_its_own_full_speed(caps: Captions) -> None:
    """Two workers at a quarter of their full speed draw quarter bars; without a
    measured full speed the fastest worker fills its bar."""
    from beep_av.model import Lane
    from beep_av.video.palette import LANE_COLOURS

    size = (640, 360)

    def lane_fill(full: float | None) -> int:
        lanes = tuple(
            Lane(f"worker {i + 1}", 500 + i, i, work_rate=250.0, full_rate=full) for i in range(2)
        )
        scene = Scene(size, caps)
        surface = scene.render(_throttle_state(0.25, lanes=lanes), Noise(1))
        area = scene.draw_lanes(_throttle_state(0.25, lanes=lanes), surface)
        row = pixels(surface)[:, area.top + area.height // 4]
        return int((row == LANE_COLOURS[0]).all(axis=1).sum())

    bar = int(size[0] * 0.4)
    assert abs(lane_fill(1000.0) - bar // 4) <= 1
    assert lane_fill(None) == bar
