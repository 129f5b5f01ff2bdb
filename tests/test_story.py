"""The story: table tests over snapshot sequences, the intensity formula, hostile input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beep_av import story
from beep_av.model import KmsgKill, MiB, Phase, ShowState, Snapshot
from beep_av.story import StoryConfig, advance, intensity

C, F, E, S = Phase.CALM, Phase.FILLING, Phase.EVICTING, Phase.SWAPPING
O, Z = Phase.OOM, Phase.FINALE  # noqa: E741
KMSG = KmsgKill(
    pid=4242, name="a) b (c", anon_rss_kib=65024, cgroup_oom=True, text="Killed process 4242"
)

CFG = StoryConfig(ram_limit=192 * MiB, swap_limit=128 * MiB, cache_bytes=64 * MiB)
SOURCES3 = ("exit", "oom_kill", "kmsg")


def snap(row: tuple) -> Snapshot:
    """Row: (t, hog MiB, anon MiB, cache MiB, swap MiB, psi_some_us, exit, oom_kills, kmsg)
    with optional evidence times as a dict in a 10th column ("kmsg": the kernel's time
    of the record on the show's clock, None for no calibration; "kmsg_seen": when the
    show read it; "exit", "oom_kill")."""
    t, hog, anon, cache, swap, psi, ex, kills, km, *rest = row
    times = rest[0] if rest else {}
    return Snapshot(
        t=t,
        anon_bytes=int(anon * MiB),
        cache_bytes=int(cache * MiB),
        swap_bytes=int(swap * MiB),
        ram_limit=192 * MiB,
        swap_limit=128 * MiB,
        psi_some_us=psi,
        hog_bytes=int(hog * MiB),
        hog_pid=4242,
        hog_running=ex is None,
        hog_exit=ex,
        hog_exit_t=times.get("exit", t) if ex is not None else None,
        oom_kill_count=kills,
        oom_kill_t=times.get("oom_kill", t) if kills else None,
        kmsg_kill=KMSG if km else None,
        kmsg_t=times.get("kmsg", t) if km else None,
        kmsg_seen_t=times.get("kmsg_seen", t) if km else None,
    )


def play(cfg: StoryConfig, rows: list[tuple]) -> list[ShowState]:
    state = ShowState()
    out = []
    for row in rows:
        state = advance(cfg, state, snap(row))
        out.append(state)
    return out


def phases(states: list[ShowState]) -> list[Phase]:
    return [s.phase for s in states]


# fmt: off
#        t     hog  anon cache swap  psi      exit kills kmsg
FULL = [
    (0.0,    0,    0,   64,   0,    0,       None, 0, False),
    (0.1,    0,    0,   64,   0,    0,       None, 0, False),
    (0.2,   20,   20,   64,   0,    0,       None, 0, False),   # hog rising: filling
    (0.4,  100,  100,   64,   0,    0,       None, 0, False),
    (0.6,  150,  140,   50,   0,    10_000,  None, 0, False),   # cache fell 14 MiB: evicting
    (0.8,  190,  170,   10,   0,    60_000,  None, 0, False),
    (1.0,  230,  180,    2,  40,    150_000, None, 0, False),   # swap rising: swapping
    (1.2,  300,  185,    1, 110,    250_000, None, 0, False),
    # the kernel's record of the hog's kill (stamped 0.4 ms before the read) and its
    # counter: oom; waitpid 20 ms later: all three, finale
    (1.4,  320,  185,    1, 128,    400_000, None, 1, True, {"kmsg": 1.3996}),
    (1.42, 320,    0,    0,   0,    400_000, -9,   1, True, {"kmsg": 1.3996, "kmsg_seen": 1.4}),
    (1.6,  320,    0,    0,   0,    400_000, -9,   1, True, {"kmsg": 1.3996, "kmsg_seen": 1.4}),
]
# fmt: on


def test_full_story():
    states = play(CFG, FULL)
    assert phases(states) == [C, C, F, F, E, E, S, S, O, Z, Z]
    last = states[-1]
    assert [p for p, _ in last.entered] == [C, F, E, S, O, Z]
    assert last.skipped == ()
    assert last.entered[-2] == (O, 1.4) and last.oom_t == 1.4
    k = last.kill
    assert (k.pid, k.name, k.exit, k.signal, k.oom_kill_count) == (4242, "a) b (c", 137, 9, 1)
    assert k.detected_by == ("exit", "oom_kill", "kmsg") and k.anon_rss_kib == 65024
    assert math.isclose(k.latency_ms, 0.4, abs_tol=1e-6) and k.t == 1.4
    assert (k.hog, k.oom, k.killer) == (True, True, "kernel")


def test_kill_record_created_at_oom_then_updated():
    states = play(CFG, FULL)
    at_oom = states[8].kill
    assert at_oom.detected_by == ("oom_kill", "kmsg") and at_oom.exit is None
    assert at_oom.pid == 4242 and at_oom.kmsg == "Killed process 4242"
    assert states[9].kill.exit == 137 and states[9].kill.detected_by == ("exit", "oom_kill", "kmsg")


# fmt: off
NO_SWAP_ROWS = [
    (0.0,   0,   0, 64, 0, 0, None, 0, False),
    (0.2,  50,  50, 64, 0, 0, None, 0, False),
    (0.4, 150, 140, 40, 0, 0, None, 0, False),   # evicting; swapping known impossible
    (0.6, 200, 190,  1, 0, 0, None, 1, True),
]
NO_CACHE_ROWS = [
    (0.0,   0,   0, 0,  0, 0, None, 0, False),
    (0.2,  50,  50, 0,  0, 0, None, 0, False),   # filling; evicting known impossible
    (0.4, 190, 190, 0, 20, 0, None, 0, False),   # swapping
    (0.6, 300, 190, 0, 128, 0, None, 1, True),
]
SWAP_FIRST_ROWS = [
    (0.0,   0,   0, 64,  0, 0, None, 0, False),
    (0.2,  50,  50, 64,  0, 0, None, 0, False),
    (0.4, 150, 130, 62, 20, 0, None, 0, False),  # swap before the cache fell
    (0.6, 250, 130, 60, 90, 0, None, 0, True),
]
JUMP_ROWS = [
    (0.0,   0,   0, 64,  0, 0, None, 0, False),
    (0.2,  50,  50, 64,  0, 0, None, 0, False),
    (0.4,  60,  60, 64,  0, 0, -9,   0, True),   # killed while filling
]
CALM_KILL_ROWS = [
    (0.0, 0, 0, 64, 0, 0, None, 0, False),
    (0.3, 0, 0, 64, 0, 0, 137,  0, True),
]
# fmt: on


@pytest.mark.parametrize(
    "cfg, rows, want_phases, want_skipped",
    [
        (
            StoryConfig(192 * MiB, 0, 64 * MiB),
            NO_SWAP_ROWS,
            [C, F, E, O],
            ((S, story.NO_SWAP),),
        ),
        (
            StoryConfig(192 * MiB, 128 * MiB, 0),
            NO_CACHE_ROWS,
            [C, F, S, O],
            ((E, story.NO_CACHE),),
        ),
        (CFG, SWAP_FIRST_ROWS, [C, F, S, O], ((E, story.SWAP_BEFORE_EVICT),)),
        (
            CFG,
            JUMP_ROWS,
            [C, F, O],
            ((E, story.KILL_BEFORE_EVICT), (S, story.KILL_BEFORE_SWAP)),
        ),
        (
            StoryConfig(192 * MiB, 0, 0),
            CALM_KILL_ROWS,
            [C, O],
            ((F, story.KILL_BEFORE_FILL), (E, story.NO_CACHE), (S, story.NO_SWAP)),
        ),
    ],
    ids=["no-swap", "no-cache", "swap-first", "jump-to-oom", "killed-in-calm"],
)
def test_skips(cfg, rows, want_phases, want_skipped):
    states = play(cfg, rows)
    assert phases(states) == want_phases
    assert states[-1].skipped == want_skipped
    entered = [p for p, _ in states[-1].entered]
    assert len(set(entered)) == len(entered)  # never entered twice
    assert not set(entered) & {p for p, _ in states[-1].skipped}


def test_no_swap_skipped_as_soon_as_evicting():
    states = play(StoryConfig(192 * MiB, 0, 64 * MiB), NO_SWAP_ROWS)
    assert states[1].skipped == () and states[2].skipped == ((S, story.NO_SWAP),)


# fmt: off
FILLING_THEN = [(0.0, 0, 0, 64, 0, 0, None, 0, False), (0.2, 50, 50, 64, 0, 0, None, 0, False)]
# fmt: on


NO_KMSG = StoryConfig(192 * MiB, 128 * MiB, 64 * MiB, expected_sources=("exit", "oom_kill"))


def test_the_kernels_record_alone_names_the_hog():
    states = play(CFG, FILLING_THEN + [(0.4, 50, 50, 64, 0, 0, None, 0, True)])
    assert states[-1].phase is O
    assert states[-1].kill.detected_by == ("kmsg",) and states[-1].kill.hog


@pytest.mark.parametrize("cfg", [CFG, NO_KMSG], ids=["kernel-log", "no-kernel-log"])
def test_a_counter_rise_alone_never_names_the_hog(cfg):
    # the hog lives on: the rise is *an* OOM kill in the domain, not the hog's
    rows = FILLING_THEN + [(0.4 + 0.1 * i, 50, 50, 64, 0, 0, None, 1, False) for i in range(8)]
    states = play(cfg, rows)
    assert all(s.phase is F and s.kill is None for s in states[2:])


def test_without_a_kernel_log_a_lasting_counter_rise_is_another_process():
    rows = FILLING_THEN + [(0.4 + 0.1 * i, 50, 50, 64, 0, 0, None, 1, False) for i in range(8)]
    states = play(NO_KMSG, rows)
    (b,) = states[-1].bystanders
    assert (b.hog, b.pid, b.detected_by, b.latency_ms) == (False, 0, ("oom_kill",), None)
    assert b.t == pytest.approx(0.4)
    assert states[-1].phase is F  # the show goes on
    # then the hog's kill: a second rise with its SIGKILL
    more = rows + [(1.3, 60, 60, 64, 0, 0, -9, 2, False)]
    last = play(NO_KMSG, more)[-1]
    assert last.phase is Z and last.kill.detected_by == ("exit", "oom_kill") and last.kill.oom
    assert last.kill.latency_ms is None  # no kernel time to measure from


@pytest.mark.parametrize("code", [-9, 137])
def test_a_sigkill_and_the_counter_name_the_hog_without_a_kernel_log(code):
    states = play(NO_KMSG, FILLING_THEN + [(0.4, 50, 50, 64, 0, 0, code, 1, False)])
    assert states[-1].phase is Z and states[-1].kill.detected_by == ("exit", "oom_kill")


@pytest.mark.parametrize("cfg", [CFG, NO_KMSG], ids=["kernel-log", "no-kernel-log"])
def test_a_sigkill_without_kernel_evidence_is_user_space(cfg):
    rows = FILLING_THEN + [
        (0.40, 50, 50, 64, 0, 0, -9, 0, False, {"exit": 0.40}),
        (0.50, 50, 0, 64, 0, 0, -9, 0, False, {"exit": 0.40}),  # within the grace: wait
        (0.56, 50, 0, 64, 0, 0, -9, 0, False, {"exit": 0.40}),  # 160 ms: user space
    ]
    states = play(cfg, rows)
    assert [s.phase for s in states] == [C, F, F, F, Z]
    k = states[-1].kill
    assert (k.oom, k.hog, k.killer, k.detected_by, k.latency_ms) == (
        False, True, "user space", ("exit",), None)  # fmt: skip
    assert (O, story.USER_SPACE_KILL) in states[-1].skipped  # never an OOM kill
    assert O not in [p for p, _ in states[-1].entered]


def test_a_user_space_killer_running_is_named():
    rows = FILLING_THEN + [(0.6, 50, 50, 64, 0, 0, -9, 0, False, {"exit": 0.40})]
    state = ShowState()
    for row in rows:
        state = advance(CFG, state, replace(snap(row), user_killers=("systemd-oomd",)))
    assert state.kill.killer == "systemd-oomd" and not state.kill.oom


def test_the_kernels_record_after_the_exit_within_the_grace_is_an_oom_kill():
    rows = FILLING_THEN + [
        (0.40, 50, 50, 64, 0, 0, -9, 0, False),
        (0.45, 50, 0, 64, 0, 0, -9, 1, True, {"kmsg": 0.3999, "kmsg_seen": 0.45}),
    ]
    states = play(CFG, rows)
    assert states[-1].phase is Z and states[-1].kill.oom
    assert math.isclose(states[-1].kill.latency_ms, 50.1, abs_tol=1e-6)


def test_a_kill_of_another_process_is_a_bystander_and_the_show_goes_on():
    other = KmsgKill(
        pid=1234, name="python3", anon_rss_kib=120 * 1024, cgroup_oom=True,
        text="Memory cgroup out of memory: Killed process 1234 (python3)",
        oom_memcg="/outer", task_memcg="/outer", seen_t=0.401, kernel_t=0.4007,
    )  # fmt: skip
    state = ShowState()
    rows = FILLING_THEN + [(0.42, 60, 60, 64, 0, 0, None, 0, False)] * 3
    for row in rows:
        state = advance(CFG, state, replace(snap(row), others=(other,)))
    (b,) = state.bystanders
    assert (b.pid, b.name, b.hog, b.oom, b.detected_by) == (1234, "python3", False, True, ("kmsg",))
    assert math.isclose(b.latency_ms, 0.3, abs_tol=1e-6) and b.t == 0.401
    assert state.phase is F and state.kill is None  # the show goes on
    # the hog's own kill later: its counter rise is its own (the outer OOM's was not
    # counted by the stage), all three sources confirm it
    last = advance(CFG, state, replace(snap((1.0, 90, 90, 64, 0, 0, -9, 1, True)), others=(other,)))
    assert last.phase is Z and last.kill.hog and last.kill.detected_by == SOURCES3
    assert last.bystanders == (b,)


def test_a_bystander_the_stage_counter_counts_is_not_the_hogs_rise():
    other = KmsgKill(1234, "python3", 1024, True, "Killed process 1234", seen_t=0.4)
    s = replace(snap((0.42, 60, 60, 64, 0, 0, None, 1, False)), others=(other,), others_counted=1)
    state = advance(CFG, advance(CFG, ShowState(), snap(FILLING_THEN[0])), s)
    assert state.kill is None and len(state.bystanders) == 1
    assert story.evidence(s, accounted=1) == {}


def test_kernel_log_false_confirms_without_it():
    # the sampler says the kernel log cannot name the hog (a PID namespace of its own)
    rows = FILLING_THEN + [(0.4, 50, 50, 64, 0, 0, -9, 1, False)]
    state = ShowState()
    for row in rows:
        state = advance(CFG, state, replace(snap(row), kernel_log=False))
    assert state.phase is Z and state.kill.detected_by == ("exit", "oom_kill")


@pytest.mark.parametrize("code", [0, 1, -15, 143, None])
def test_other_exits_are_not_kill_evidence(code):
    states = play(CFG, FILLING_THEN + [(0.4, 50, 50, 64, 0, 0, code, 0, False)])
    assert states[-1].phase is F and states[-1].kill is None


def test_finale_on_confirmation():
    rows = FILLING_THEN + [
        (0.4, 50, 50, 64, 0, 0, None, 1, True),
        (0.45, 50, 50, 64, 0, 0, -9, 1, True),
    ]
    states = play(CFG, rows)
    assert phases(states) == [C, F, O, Z]
    assert states[-1].entered[-1] == (Z, 0.45)


def test_finale_on_timeout():
    rows = FILLING_THEN + [
        (0.4, 50, 50, 64, 0, 0, None, 0, True),
        (1.0, 50, 50, 64, 0, 0, None, 0, True),
        (1.39, 50, 50, 64, 0, 0, None, 0, True),
        (1.41, 50, 50, 64, 0, 0, None, 0, True),
    ]
    states = play(CFG, rows)
    assert phases(states) == [C, F, O, O, O, Z]
    assert states[-1].kill.detected_by == ("kmsg",)


def test_latency_runs_from_the_kernels_time_to_reading_its_record():
    rows = FILLING_THEN + [
        # the exit was seen at 0.40 (no kernel word yet); the kernel stamped its record
        # at 0.385 on the show's clock and the show read it at 0.40: 15 ms
        (0.40, 50, 50, 64, 0, 0, -9, 0, False),
        (0.42, 50, 50, 64, 0, 0, -9, 1, True, {"kmsg": 0.385, "kmsg_seen": 0.40}),
    ]
    states = play(CFG, rows)
    assert states[2].kill is None  # a SIGKILL alone is not yet anything
    k = states[3].kill
    assert k.detected_by == ("exit", "oom_kill", "kmsg")
    assert math.isclose(k.latency_ms, 15.0, abs_tol=1e-6)
    assert states[3].phase is Z


def test_no_calibrated_kernel_time_means_latency_unknown():
    rows = FILLING_THEN + [(0.42, 50, 50, 64, 0, 0, -9, 1, True, {"kmsg": None})]
    k = play(CFG, rows)[-1].kill
    assert k.latency_ms is None and k.detected_by == ("exit", "oom_kill", "kmsg")


def test_evidence_vanishing_keeps_the_kill():
    rows = FILLING_THEN + [
        (0.4, 50, 50, 64, 0, 0, None, 0, True),
        (0.5, 50, 50, 64, 0, 0, None, 0, False),  # a source that forgets
    ]
    states = play(CFG, rows)
    assert states[-1].phase is O and states[-1].kill.detected_by == ("kmsg",)


def test_never_backwards():
    # after swapping starts, a snapshot that looks like filling does not move back
    rows = FULL[:8] + [(1.3, 301, 185, 64, 0, 0, None, 0, False)]
    states = play(CFG, rows)
    idx = [s.phase.index for s in states]
    assert idx == sorted(idx) and states[-1].phase is S


def test_stall_and_fill_rate():
    states = play(CFG, FULL)
    # 0.6 -> 0.8: 50 ms of "some" stall in 200 ms
    assert math.isclose(states[5].stall, 0.25)
    assert 0 < states[3].fill_rate <= 400 * MiB  # 80 MiB in 0.2 s, smoothed below it
    assert states[2].fill_rate < states[3].fill_rate


# ---------------------------------------------------------------- intensity


def test_intensity_formula_points():
    assert intensity(0.0, 0.0, C) == 0.0
    assert math.isclose(intensity(0.5, 0.0, F), 0.7 * 0.25)
    assert intensity(1.0, 1.0, S) == 1.0
    for p in (O, Z):
        assert intensity(1.0, 1.0, p) == 0.0


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    a=st.floats(-2, 3, allow_nan=False),
    b=st.floats(-2, 3, allow_nan=False),
    stall=st.floats(-1, 2, allow_nan=False),
    phase=st.sampled_from([C, F, E, S]),
)
def test_intensity_monotone_in_fill_and_bounded(a, b, stall, phase):
    lo, hi = sorted((a, b))
    i_lo, i_hi = intensity(lo, stall, phase), intensity(hi, stall, phase)
    assert 0.0 <= i_lo <= i_hi <= 1.0


def test_intensity_nan_and_zero_after_kill():
    assert intensity(math.nan, math.nan, F) == 0.0
    assert math.isclose(intensity(math.inf, 0.0, F), 0.7)  # fill clamps to 1
    states = play(CFG, FULL)
    assert all(s.intensity == 0.0 for s in states if s.phase in (O, Z))
    assert max(s.intensity for s in states) > 0.5


# ---------------------------------------------------------------- hostile snapshots


@pytest.mark.parametrize(
    "cfg",
    [StoryConfig(0, 0, 0), StoryConfig(-5, -5, -5, confirm_timeout=-1.0, fill_rate_tau=0.0)],
)
def test_zero_and_negative_limits(cfg):
    states = play(cfg, FULL)
    assert all(0.0 <= s.intensity <= 1.0 for s in states)
    assert states[-1].phase is Z


_ints = st.integers(-(1 << 62), 1 << 62)
_snaps = st.builds(
    Snapshot,
    t=st.floats(allow_nan=True, allow_infinity=True),
    anon_bytes=_ints,
    cache_bytes=_ints,
    swap_bytes=_ints,
    ram_limit=_ints,
    swap_limit=_ints,
    psi_some_us=_ints,
    hog_bytes=_ints,
    hog_exit=st.one_of(st.none(), st.sampled_from([-9, 137, 0, 1])),
    hog_exit_t=st.one_of(st.none(), st.floats()),
    oom_kill_count=st.integers(-3, 3),
    oom_kill_t=st.one_of(st.none(), st.floats()),
    kmsg_kill=st.one_of(st.none(), st.just(KMSG)),
    kmsg_t=st.one_of(st.none(), st.floats()),
)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(seq=st.lists(_snaps, max_size=12), swap=st.sampled_from([0, 128 * MiB]))
def test_property_hostile_sequences(seq, swap):
    cfg = StoryConfig(192 * MiB, swap, 64 * MiB)
    state = ShowState()
    last_index = 0
    for s in seq:
        state = advance(cfg, state, s)
        assert state.phase.index >= last_index
        last_index = state.phase.index
        assert 0.0 <= state.intensity <= 1.0 and 0.0 <= state.stall <= 1.0
        entered = [p for p, _ in state.entered]
        assert entered == sorted(entered, key=lambda p: p.index)
        assert [p for p, _ in state.skipped] == sorted(
            (p for p, _ in state.skipped), key=lambda p: p.index
        )
        assert not set(entered) & {p for p, _ in state.skipped}
        times = [t for _, t in state.entered]
        assert times == sorted(times)


def test_the_stall_is_counted_from_the_stages_first_reading():
    """PSI totals run since boot: differenced against the first state's 0 they claimed a
    stall of 1.0 in the first calm sample. With the first reading as the baseline, a
    calm stage stalls 0, and a real stall after it is still measured."""
    first = snap((0.02, 0, 0, 64, 0, 9_000_000_000, None, 0, False))
    naive = advance(CFG, ShowState(), first)
    assert naive.stall == 1.0  # what the first sample used to say
    state = story.psi_baseline(ShowState(), first)
    state = advance(CFG, state, first)
    assert state.stall == 0.0 and state.intensity < 0.05
    later = advance(CFG, state, snap((0.12, 0, 0, 64, 0, 9_000_050_000, None, 0, False)))
    assert later.stall == pytest.approx(0.5)  # 50 ms stalled of 100 ms


def test_one_kill_record_from_evidence():
    """story.evidence_record: the acts' kill records (real and rehearsed) come from here."""
    from dataclasses import replace as dc_replace

    k = dc_replace(KMSG, kernel_t=4.0762, seen_t=4.0765)
    rec = story.evidence_record(4242, -9, 2, k, 4.09, nth=2, timed_by_kernel=True)
    assert rec.detected_by == ("exit", "oom_kill", "kmsg") and rec.exit == 137
    assert rec.t == 4.0762 and rec.latency_ms == pytest.approx(0.3)
    assert rec.name == "a) b (c" and rec.oom and rec.killer == "kernel"
    # the second kill's counter not yet risen to 2: the record alone says OOM
    assert story.evidence_record(1, 137, 1, k, 5.0, nth=2).detected_by == ("exit", "kmsg")
    # a SIGKILL with no kernel evidence is user space, never an OOM kill
    rec = story.evidence_record(4242, 137, 0, None, 3.0)
    assert not rec.oom and rec.killer == "user space" and rec.latency_ms is None
    # an exit on its own is no kill of any kind
    rec = story.evidence_record(4242, 1, 0, None, 3.0)
    assert rec.exit == 1 and rec.signal is None and rec.detected_by == ()
    # no calibrated clock: the time the record was read, no latency
    rec = story.evidence_record(7, 137, 1, dc_replace(KMSG, seen_t=2.5), 3.0, timed_by_kernel=True)
    assert rec.t == 2.5 and rec.latency_ms is None
