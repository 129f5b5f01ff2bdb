"""The acts without a real stage: their rehearsals pass the same recording checks as
the real runs, bad input exits 2 with one line and creates nothing, and the pure parts
(--hogs, /proc/PID/status, the closing tones)."""

from __future__ import annotations

import pytest

from beep_av.acts import parse_hogs
from beep_av.acts.common import parse_status_vm
from beep_av.errors import BadInput
from beep_av.model import Phase
from tests.acts_checks import (
    check_bystander,
    check_freeze,
    check_freeze_by_oomd,
    check_high,
    check_throttle,
    check_who_dies,
    closing_is_not_the_beep,
    readback_is_heard,
    records,
    replay_performs_the_act,
)
from tests.conftest import beep

QUIET = ["--output", "headless"]
ACT_ARGS = {
    "throttle": [],
    "who-dies": ["--ram", "192M", "--swap", "96M", "--rate", "128M/s", "--calm", "0.3"],
    "bystander": ["--ram", "192M", "--swap", "96M", "--rate", "128M/s", "--calm", "0.3"],
    "freeze": ["--ram", "128M", "--calm", "0.3"],
    "high": ["--ram", "256M", "--rate", "64M/s", "--calm", "0.3"],
}


def rehearse(act: str, rec, *extra: str, audio: str = "off"):
    """`beep-av rehearse --act ACT` on ACT_ARGS, headless, recorded into `rec`."""
    r = beep("rehearse", "--act", act, *ACT_ARGS[act], *extra, *QUIET, "--audio", audio,
             "--record", str(rec))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


def test_throttle_rehearsal_passes_the_real_checks(tmp_path):
    rec, wav = tmp_path / "t.jsonl", tmp_path / "t.wav"
    rehearse("throttle", rec, "--seed", "3", audio=f"wav:{wav}")
    figures = check_throttle(rec)
    assert figures["ratio"] == pytest.approx(0.04, abs=0.01)
    closing_is_not_the_beep(wav)
    report = tmp_path / "t.png"
    r = beep("report", str(rec), "-o", str(report))
    assert r.returncode == 0 and report.stat().st_size > 0, r.stderr


def test_throttle_rehearsal_is_deterministic(tmp_path):
    outs = []
    for k in range(2):
        rec = tmp_path / f"{k}.jsonl"
        rehearse("throttle", rec, "--seed", "5")
        outs.append([ln for ln in rec.read_text().splitlines() if '"type":"act"' in ln])
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--act", "nope"], "unknown act 'nope'"),
        (["--act", "who-dies", "--hogs", "a:1,b:0"], "size 0 of b must be more than 0"),
        (["--act", "who-dies", "--hogs", "a:1,b:1,c:1,d:1,e:1"], "5 hog(s); who-dies takes 2 to 4"),
        (["--act", "who-dies", "--hogs", "a:1"], "1 hog(s)"),
        (["--act", "throttle", "--swap", "64M"], "--swap does not apply to throttle"),
        (["--act", "story", "--hogs", "a:1,b:1"], "--hogs applies to --act who-dies only"),
        (["--act", "freeze", "--swap", "0"], "--act freeze needs swap on the stage"),
        (["--act", "freeze", "--ram", "128M", "--swap", "64M"], "too small for the freeze"),
        (["--act", "story", "--killer", "systemd-oomd"], "--killer applies to --act freeze only"),
        (["--act", "freeze", "--killer", "earlyoom"], "unknown killer 'earlyoom'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_creates_nothing(args, words, tmp_path):
    from tests.test_acts_real import cpu_residue
    from tests.test_show_real import residue

    before = set(residue()) | set(cpu_residue())
    rec = tmp_path / "r.jsonl"
    r = beep("show", *args, *QUIET, "--audio", "off", "--record", str(rec))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not rec.exists()
    assert set(residue()) | set(cpu_residue()) == before


def test_parse_hogs():
    hogs = parse_hogs("big:1.0,small:0.4:500")
    assert [(h.name, h.size, h.adj) for h in hogs] == [("big", 1.0, 0), ("small", 0.4, 500)]
    for bad in ("a:1,a:1", "a:1,b:x", "a:1,b:1:2000", "a:1.5,b:1", "a,b:1", "A B:1,c:1"):
        with pytest.raises(BadInput):
            parse_hogs(bad)


def test_parse_status_vm():
    raw = (
        b"Name:\tpython3\nVmPeak:\t 9 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 5 kB\nVmSwap:\t  2048 kB\n"
    )
    assert parse_status_vm(raw) == (1024 * 1024, 2048 * 1024)
    assert parse_status_vm(b"Name:\tkthreadd\n") == (0, 0)


def test_who_dies_rehearsal_passes_the_real_checks(tmp_path):
    rec = tmp_path / "w.jsonl"
    rehearse("who-dies", rec, "--seed", "1")
    figures = check_who_dies(rec)
    assert figures["victim"] == "big" and figures["agrees"]
    rehearse("who-dies", rec, "--hogs", "a:1.0,b:0.5:600")
    assert check_who_dies(rec)["victim"] == "b"  # its adj outweighs its size


def test_who_dies_rehearsal_frees_only_the_victims_memory(tmp_path):
    """At the model's kill the stage loses the victim's memory and nothing else: the
    evicted cache does not come back, and the survivors' pages stay in swap (the stage's
    swap is theirs, as their lanes say) until the act ends (it came back to full cache
    and no swap at the kill)."""
    rec = tmp_path / "w.jsonl"
    rehearse("who-dies", rec, "--seed", "1")
    recs = records(rec)
    (kill,) = [r for r in recs if r["type"] == "kill"]
    samples = [r for r in recs if r["type"] == "sample"]
    before = [r for r in samples if r["t"] < kill["t"]][-1]
    after = [r for r in samples if r["t"] >= kill["t"]]
    assert before["swap"] > 0 and before["cache"] == 0
    lanes = [r for r in recs if r["type"] == "lanes" and r["t"] >= kill["t"]][0]["lanes"]
    survivors = [x for x in lanes if x["alive"]]
    assert len(survivors) == 2 and all(x["swap"] > 0 for x in survivors)
    held = sum(x["swap"] for x in survivors)
    for r in after:
        assert r["cache"] == 0 and abs(r["swap"] - held) <= 1 << 20, r
    assert after[0]["ram"] + after[0]["swap"] < before["ram"] + before["swap"]


def test_who_dies_verdict_comes_from_the_kernels_table():
    """With the kernel's task table (its oom_badness points), the verdict is the
    kernel's, whatever /proc's oom_score (scaled to the whole machine) said: kept in
    the record only; without the table, the last lanes scaled to the stage, said so;
    a tie is a tie; a score never read is unknown, never "the highest"."""
    from beep_av.acts.who_dies import stage_scores, verdict

    lanes = [
        {"name": "big", "rss": 150 << 20, "swap": 0, "oom_score": 670, "oom_score_adj": 0},
        {"name": "small", "rss": 40 << 20, "swap": 0, "oom_score": 734, "oom_score_adj": 100},
    ]
    st = stage_scores(lanes, 192 << 20, 96 << 20)
    report = {"candidates": [{"pid": 1, "name": "big", "points": 38400},
                             {"pid": 2, "name": "small", "points": 17600}]}  # fmt: skip
    lines, rec = verdict("big", lanes, st, report)
    assert lines == []  # the card's why line says the ranking
    assert rec["source"] == "kernel" and rec["agrees"] and rec["highest"] == "big"
    assert not rec["agrees_proc"] and rec["highest_proc"] == "small"  # /proc disagreed
    lines, rec = verdict("small", lanes, st, report)
    assert not rec["agrees"] and rec["highest"] == "big"
    tie = {"candidates": [dict(c, points=500) for c in report["candidates"]]}
    _, rec = verdict("small", lanes, st, tie)
    assert rec["agrees"] and rec["tied"] == ["big"]
    # no table (rate-limited, or a rehearsal): the stage-scaled lanes, said as such
    for no_table in (None, {"candidates": None, "trigger": {"name": "big"}}):
        lines, rec = verdict("big", lanes, st, no_table)
        assert rec["source"] == "lanes" and rec["agrees"] == rec["agrees_stage"]
        assert lines[0].startswith("the kernel's table is missing; the last lanes scaled")
    unread = {k: v for k, v in st.items() if k != "big"}
    lines, rec = verdict("big", lanes, unread)
    assert not rec["agrees"] and "score was not read" in lines[0]
    lines, _ = verdict("big", lanes, st, None, modelled=True)  # a rehearsal has no kernel
    assert lines[0].startswith("the model's lanes scaled as the kernel does: ")


def test_bystander_rehearsal_passes_the_real_checks(tmp_path):
    rec, wav = tmp_path / "b.jsonl", tmp_path / "b.wav"
    rehearse("bystander", rec, "--seed", "1", audio=f"wav:{wav}")
    figures = check_bystander(rec)
    assert figures["swap_pct"] > 50
    heard = readback_is_heard(wav, rec)
    print(f"bystander rehearsal: {figures}; {heard}")


def test_freeze_rehearsal_passes_the_real_checks(tmp_path):
    rec, wav = tmp_path / "f.jsonl", tmp_path / "f.wav"
    r = rehearse("freeze", rec, "--seed", "1", audio=f"wav:{wav}")
    figures = check_freeze(rec)
    assert figures["fall"] >= 100 and figures["firings"] >= 2, figures
    assert "rehearsal: nothing was killed" in r.stdout + r.stderr


def test_freeze_rehearsal_ended_by_the_models_systemd_oomd(tmp_path):
    rec = tmp_path / "fo.jsonl"
    rehearse("freeze", rec, "--seed", "1", "--killer", "systemd-oomd")
    figures = check_freeze_by_oomd(rec, rehearsal=True)
    assert figures["fall"] >= 100 and figures["frozen_s"] >= 15, figures


def test_high_rehearsal_passes_the_real_checks(tmp_path):
    rec, wav = tmp_path / "h.jsonl", tmp_path / "h.wav"
    rehearse("high", rec, "--seed", "1", audio=f"wav:{wav}")
    figures = check_high(rec)
    assert figures["held_count"] > 0 and figures["fall"] >= 3, figures
    closing_is_not_the_beep(wav)


@pytest.mark.parametrize("act", ["throttle", "who-dies", "bystander", "freeze", "high"])
def test_an_acts_replay_performs_the_act(act, tmp_path):
    """The replay of an act's recording is the act again: the same lanes, events, card,
    captions, notes and samples (its own recording says so line for line), the same
    checks pass on it, and it sounds the act's end (throttle's closing tones, not the
    beep; the bystander's read-back after the beep)."""
    rec, again, wav = tmp_path / "a.jsonl", tmp_path / "again.jsonl", tmp_path / "again.wav"
    rehearse(act, rec, "--seed", "1")
    speed = "1" if act == "bystander" else "4"  # the read-back is heard at its own pace
    r = beep("replay", str(rec), "--speed", speed, *QUIET, "--audio", f"wav:{wav}",
             "--record", str(again))  # fmt: skip
    assert r.returncode == 0, r.stderr
    counts = replay_performs_the_act(rec, again)
    check = {"throttle": check_throttle, "who-dies": check_who_dies, "bystander": check_bystander,
             "freeze": check_freeze, "high": check_high}  # fmt: skip
    assert check[act](again) == check[act](rec)
    if act in ("throttle", "high"):
        closing_is_not_the_beep(wav)
    if act == "bystander":
        readback_is_heard(wav, again)
    report = tmp_path / "again.png"
    r = beep("report", str(again), "-o", str(report))
    assert r.returncode == 0 and report.stat().st_size > 0, r.stderr
    print(f"{act} replay: {counts}")


def test_act_captions_in_en_and_fr():
    from beep_av.video.captions import ACT_KEYS, load_captions

    for lang in ("en", "fr"):
        texts = load_captions(lang)
        assert all(texts.get(k) for k in ACT_KEYS), lang


def test_an_act_from_a_config_file(tmp_path):
    """`act` and `hogs` in a config file (or a preset: the same keys) choose the act;
    a bad one exits 2 with one line naming the file."""
    cfg, rec = tmp_path / "who.toml", tmp_path / "c.jsonl"
    cfg.write_text('act = "who-dies"\nhogs = "a:1.0,b:0.5:600"\n')
    r = beep("rehearse", "--config", str(cfg), *ACT_ARGS["who-dies"], *QUIET, "--audio", "off",
             "--record", str(rec))  # fmt: skip
    assert r.returncode == 0, r.stderr
    head = records(rec)[0]
    assert head["act"] == "who-dies" and [h["name"] for h in head["hogs"]] == ["a", "b"]
    assert check_who_dies(rec)["victim"] == "b"
    cfg.write_text('act = "nope"\n')
    r = beep("rehearse", "--config", str(cfg), *QUIET, "--audio", "off")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{cfg}: act: unknown act 'nope'" in r.stderr


def test_an_acts_states_carry_the_fill_rate_of_its_hogs():
    """The HUD's "fill N MiB/s" and the phase lines' rate in an act are the story's
    smoothed rate of the hogs' bytes (every act said 0 MiB/s while its hogs grew)."""
    from beep_av.acts.common import ActDriver
    from beep_av.config import Settings
    from beep_av.model import MiB, Snapshot

    class Act(ActDriver):
        act = "who-dies"

    d = Act(Settings(stage="rehearsal"))
    rates = []
    for k in range(100):  # 64 MiB/s for 2 s, sampled at 50 Hz
        snap = Snapshot(t=k * 0.02, hog_bytes=int(k * 0.02 * 64 * MiB))
        rates.append(d.state(snap.t, snap, ()).fill_rate)
    assert rates[0] == 0.0 and rates == sorted(rates)
    assert 62 * MiB < rates[-1] <= 64 * MiB  # 1 - exp(-2 s / 0.5 s) of the way
    same = d.state(2.5, Snapshot(t=99 * 0.02, hog_bytes=0), ()).fill_rate
    assert same == rates[-1]  # not a newer snapshot: the rate holds
    later = d.state(3.0, Snapshot(t=3.0, hog_bytes=0), ()).fill_rate
    assert 0 <= later < rates[-1]  # memory given back is no growth


def test_throttle_step_is_pure_and_follows_its_readings():
    """The throttle act's step alone, fed readings it did not make: workers that do
    1000 iterations/s each at full speed and the quota's share of it after; the step
    asks for the quotas in order, measures each step's rate from the readings, and
    ends with the kernel's counts on the card. Same readings, same frames."""
    from beep_av.acts.throttle import CpuReading, ThrottlePlan, ThrottleState, throttle_step

    plan = ThrottlePlan(2, steps=(None, 0.5, 0.1), step_s=1.0, calm_s=0.5, where="cgroup v1")

    def play():
        st, t, counts, share, periods, throttled = ThrottleState(), 0.0, [0.0, 0.0], None, 0, 0
        frames = []
        while True:
            r = CpuReading(t, tuple(int(c) for c in counts),
                           {"nr_periods": periods, "nr_throttled": throttled, "throttled_us": 0},
                           (True, True), ((0, 0), (0, 0)))  # fmt: skip
            st, frame = throttle_step(plan, st, r)
            frames.append(frame)
            if frame.done:
                return st, frames
            for a in frame.actions:
                if a[0] == "set_quota":
                    share = a[1]
            dt = frame.wait
            t = round(t + dt, 6)
            f = 1.0 if share is None else share
            counts = [c + 1000 * f * dt for c in counts]
            if share is not None:
                periods += round(dt * 100)
                throttled += round(dt * 100)

    st, frames = play()
    assert [a for f in frames for a in f.actions] == [
        ("start",),
        ("set_quota", None),
        ("set_quota", 0.5),
        ("set_quota", 0.1),
    ]
    steps = [e for f in frames for e in f.events if e[0] == "step"]
    assert [s["quota_pct"] for _, s in steps] == [None, 50.0, 10.0]
    rates = [s["rate"] for _, s in steps]
    assert abs(rates[0] - 2000) < 50 and abs(rates[1] / rates[0] - 0.5) < 0.05
    assert abs(rates[2] / rates[0] - 0.1) < 0.02
    speeds = [f.view["speed"] for f in frames if f.view and "speed" in f.view and not f.done]
    assert max(speeds) == 1.0 and min(speeds) < 0.15
    # intensity is pressure, as in every act: the share of the work held back
    running = [f.view for f in frames if f.view and "speed" in f.view and not f.done]
    assert all(v["intensity"] == pytest.approx(1.0 - v["speed"]) for v in running)
    assert (
        min(v["intensity"] for v in running) == 0.0 and max(v["intensity"] for v in running) > 0.85
    )
    end = frames[-1]
    assert end.enter is Phase.FINALE and end.view["closing"] and end.view["title"] == "THROTTLED"
    assert end.view["card"][0] == "throttled 100% of the time, killed: nobody"
    assert end.view["card"][-1] == "2 workers, cgroup v1"
    assert play()[1] == frames  # pure: the same readings give the same frames


def test_bystander_step_is_pure_and_never_takes_an_exit_for_a_kill():
    """The bystander act's step alone, on readings it did not make: it starts the
    bystander, waits for its touch, starts the hog, names the kill from the kernel's
    evidence (exit, counter, record) at the moment it was seen, waits before the
    read-back (or reads back at once when asked) and ends on the read-back's own time.
    A hog that ends on its own (exit 1) is never taken for a kill."""
    from beep_av.acts.bystander import ByPlan, ByReading, ByState, bystander_step
    from beep_av.errors import CannotStage
    from beep_av.model import Lane, Snapshot
    from beep_av.procfs import parse_oom_kill

    plan = ByPlan(size=64 << 20, calm_s=0.5)
    kmsg = parse_oom_kill("Memory cgroup out of memory: Killed process 11 (beep-hog) "
                          "total-vm:1kB, anon-rss:9000kB, file-rss:0kB, shmem-rss:0kB")  # fmt: skip

    def reading(t, touched=0, exit_code=None, swap=0, read_s=None, swapins=0, record=None):
        snap = Snapshot(t=t, hog_exit=exit_code, oom_kill_count=int(exit_code == 137),
                        kmsg_kill=record)  # fmt: skip
        lanes = (Lane("bystander", 10, 1, rss=(64 << 20) - swap, swap=swap),
                 Lane("hog", 11, 2, alive=exit_code is None))  # fmt: skip
        return ByReading(t, snap, lanes, touched, read_s, swapins)

    def play(asked: bool):
        st, frames = ByState(), []
        script = [reading(0.0), reading(0.05, touched=32 << 20), reading(0.1, touched=64 << 20),
                  reading(0.6, touched=64 << 20), reading(0.62, swap=40 << 20),
                  reading(0.64, swap=48 << 20, exit_code=137),
                  reading(0.66, swap=48 << 20, exit_code=137, record=kmsg),
                  reading(0.96, swap=48 << 20, exit_code=137, record=kmsg),
                  reading(4.0, swap=48 << 20, exit_code=137, record=kmsg),
                  reading(4.3, swap=1 << 20, exit_code=137, read_s=0.25, swapins=12000)]  # fmt: skip
        for r in script:
            st, f = bystander_step(plan, st, r, asked=asked and r.t > 0.9)
            frames.append(f)
        return st, frames

    st, frames = play(asked=False)
    acts = [a for f in frames for a in f.actions]
    assert acts == [("start_idle",), ("start_hog",), ("read_back",)]
    events = [name for f in frames for name, _ in f.events]
    assert events == ["bystander_ready", "before_kill", "after_kill", "readback_start", "readback"]
    (kill,) = [k for f in frames for k in f.kills]
    assert kill.pid == 11 and kill.oom and kill.t == 0.64 and kill.exit == 137
    assert frames[5].pressure is False and frames[4].pressure and frames[4].wake
    assert frames[-1].done and frames[-1].ok and st.card[-1].startswith("read back in 250 ms")
    # before the read-back the card waits; asked, it reads back at once
    assert ("read_back",) not in frames[7].actions
    _, asked = play(asked=True)
    assert ("read_back",) in asked[7].actions
    assert play(asked=False)[1] == frames  # the same readings, the same frames
    st, _ = bystander_step(plan, ByState("climb", 0.6), reading(0.62))
    with pytest.raises(CannotStage, match="ended on its own"):
        bystander_step(plan, st, reading(0.7, exit_code=1))


def test_who_dies_step_is_pure_and_names_each_kill_in_the_kernels_order():
    """The who-dies act's step alone, on readings it did not make: the countdown, the
    start, the growth caps raised once reached (0.25 s after), the victim from the kernel's record
    (the others paused), its kill when both the record and its exit are in, timed by
    the kernel; a second kernel kill gets its own record (hog: false) and a card line;
    the others are released, and the last state shows them ended."""
    from dataclasses import replace as dc_replace

    from beep_av.acts.who_dies import WhoPlan, WhoReading, WhoState, who_dies_step
    from beep_av.model import Snapshot
    from beep_av.procfs import parse_oom_kill

    plan = WhoPlan(("big", "small"), 192 << 20, 0, countdown_s=0.3)
    big = dc_replace(parse_oom_kill(
        "Memory cgroup out of memory: Killed process 101 (big) total-vm:1kB, "
        "anon-rss:150000kB, file-rss:0kB, shmem-rss:0kB"), kernel_t=1.205, seen_t=1.21)  # fmt: skip
    small = dc_replace(parse_oom_kill(
        "Memory cgroup out of memory: Killed process 102 (small) total-vm:1kB, "
        "anon-rss:30000kB, file-rss:0kB, shmem-rss:0kB"), kernel_t=1.212, seen_t=1.25)  # fmt: skip

    def reading(t, alive=(True, True), records=(), exits=(None, None), caps=None, count=0):
        hogs = tuple({"name": n, "pid": 101 + i, "rss": 1 << 20, "swap": 0, "pte": 0,
                      "oom_score": 600 - 100 * i, "oom_score_adj": 0, "alive": a}
                     for i, (n, a) in enumerate(zip(("big", "small"), alive, strict=True)))  # fmt: skip
        return WhoReading(t, Snapshot(t=t, oom_kill_count=count), hogs, records, exits, caps)

    script = [reading(0.0), reading(0.1), reading(0.3), reading(0.32, caps=0.5),
              reading(0.9, caps=0.5), reading(1.0, caps=0.5), reading(1.16, caps=0.5),
              reading(1.21, alive=(False, True), records=((0, big),), caps=0.5, count=1),
              reading(1.23, alive=(False, True), records=((0, big),), exits=(137, None), count=1),
              reading(1.53, alive=(False, True), records=((0, big),), exits=(137, None), count=1),
              reading(4.6, alive=(False, False), records=((0, big), (1, small)),
                      exits=(137, 137), count=2),
              reading(4.62, alive=(False, False), records=((0, big), (1, small)),
                      exits=(137, -9), count=2)]  # fmt: skip
    st, frames = WhoState(), []
    for r in script:
        st, f = who_dies_step(plan, st, r)
        frames.append(f)
    acts = [a for f in frames for a in f.actions]
    assert acts == [("start",), ("raise_caps",), ("pause_others",), ("release",)]
    events = [n for f in frames for n, _ in f.events]
    assert events == ["start", "scores", "verdict", "released"]
    kills = [k for f in frames for k in f.kills]
    assert len(kills) == 1 and kills[0].pid == 101 and kills[0].t == 1.205  # the kernel's time
    assert kills[0].detected_by == ("exit", "oom_kill", "kmsg")
    (released,) = [e for f in frames for n, e in f.events if n == "released"]
    assert released == {"alive_before": [], "killed_by_kernel": ["big", "small"]}
    last = frames[-1]
    assert last.done and last.view["caption"] == "who_dies_release"
    (also,) = last.view["bystanders"]
    assert also.pid == 102 and also.hog is False and also.t == 1.212 > kills[0].t
    assert last.view["card"][0] == "the kernel killed big (pid 101)"
    assert last.view["card"][-1] == "then the kernel killed small too"
    # before the record and the exit are both in, the kill waits (the grace)
    assert not frames[7].kills and frames[7].wake and frames[8].kills


def _freeze_readings(fire_at, stall=0.3, exit_at=None, kmsg_at=None):
    """Readings of a freeze that fits for 3 s at 1e8 pages/s, then grows and thrashes at
    4e4 pages/s with `stall` of the time stalled; the kernel fires at `fire_at`."""
    from beep_av.acts.freeze import FreezeReading
    from beep_av.model import Lane, Snapshot

    def reading(t, touched, ws, full_us, fired, exit_code=None, kmsg=None):
        snap = Snapshot(t=t, hog_bytes=ws, psi_full_us=int(full_us), psi_some_us=int(full_us),
                        ram_limit=128 << 20, swap_limit=256 << 20, hog_exit=exit_code,
                        kmsg_kill=kmsg, oom_kill_count=1 if kmsg else 0)  # fmt: skip
        lane = Lane("hog", 77, 1, alive=exit_code is None)
        return FreezeReading(t, snap, (lane,), int(touched), ws, int(touched), fired, "the test's")

    return reading


def _play_freeze(plan, fire_times, stall=0.3, kernel_kill_at=None, exit_on_own_at=None):
    from beep_av.acts.freeze import FreezeState, freeze_step
    from beep_av.procfs import parse_oom_kill

    reading = _freeze_readings(fire_times)
    st, t, touched, ws, full, killed = FreezeState(), 0.0, 0.0, 0, 0.0, None
    frames, grown_t = [], None
    fires = sorted(fire_times)
    for _ in range(5000):
        fired = bool(fires) and grown_t is not None and t - grown_t >= fires[0]
        if fired:
            fires.pop(0)
        exit_code = kmsg = None
        if killed is not None and t >= killed:
            exit_code = 137
        if kernel_kill_at is not None and grown_t is not None and t - grown_t >= kernel_kill_at:
            exit_code = 137
            kmsg = parse_oom_kill("Memory cgroup out of memory: Killed process 77 (beep-hog) "
                                  "total-vm:1kB, anon-rss:131072kB, file-rss:0kB, "
                                  "shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:1000")  # fmt: skip
        if exit_on_own_at is not None and grown_t is not None and t - grown_t >= exit_on_own_at:
            exit_code = 1
        st, frame = freeze_step(plan, st, reading(t, touched, ws, full, fired, exit_code, kmsg))
        frames.append((t, frame))
        if frame.done:
            return st, frames
        for name, *args in frame.actions:
            if name == "start":
                ws = plan.fit
            elif name == "grow":
                ws, grown_t = args[0], t
            elif name == "kill_hog":
                killed = t + 0.02
        dt = frame.wait
        t = round(t + dt, 6)
        frozen = grown_t is not None and ws > plan.ram
        touched += (4e4 if frozen else 1e8) * dt
        full += (stall * 1e6 * dt) if frozen else 0.0
    raise AssertionError("the freeze never ended")


def test_freeze_step_is_pure_and_kills_only_when_the_pressure_lasted():
    """The freeze act's step alone, fed readings it did not make: it grows the set after
    the fit, arms the trigger, ignores a firing its own reading of the stall does not
    bear out (the one at once on /proc's file), kills at the first firing after the
    hold, and says on the card the kernel never acted. Same readings, same frames."""
    from beep_av.acts.freeze import FreezePlan

    plan = FreezePlan(128 << 20, 64 << 20, 240 << 20, calm_s=0.5)
    fires = [0.05, 2.1, 4.1, 6.1, 8.1, 10.1, 12.1]
    st, frames = _play_freeze(plan, fires)
    actions = [a[0] for _, f in frames for a in f.actions]
    assert actions == ["start", "grow", "arm", "kill_hog"]
    events = {e[0]: e[1] for _, f in frames for e in f.events}
    assert events["fired"]["by"] == "the kernel's PSI trigger" and events["fired"]["ignored"] == 1
    grown = next(t for t, f in frames if any(a[0] == "grow" for a in f.actions))
    killed = next(t for t, f in frames if any(a[0] == "kill_hog" for a in f.actions))
    # the first agreeing firing at 2.1 s saw stall from 0.1 s: 8 s of it by the one at 8.1 s
    assert killed - grown == pytest.approx(8.1, abs=0.05)
    assert st.base_rate == pytest.approx(1e8, rel=0.01) and st.low_rate == pytest.approx(
        4e4, rel=0.05
    )
    end = frames[-1][1]
    assert end.enter is Phase.FINALE and end.view["kill"].killer == "beep-av"
    assert not end.view["kill"].oom and "never acted (oom_kill 0)" in end.view["card"][-1]
    assert _play_freeze(plan, fires)[1] == frames  # pure


def test_freeze_step_says_when_the_kernel_killed_first_and_never_takes_an_exit_for_a_kill():
    from beep_av.acts.freeze import FreezePlan
    from beep_av.errors import CannotStage

    plan = FreezePlan(128 << 20, 64 << 20, 240 << 20, calm_s=0.5)
    _, frames = _play_freeze(plan, [], kernel_kill_at=3.0)
    kill = frames[-1][1].view["kill"]
    assert kill.oom and kill.killer == "kernel"
    assert any("the kernel's OOM killer acted first" in x for x in frames[-1][1].view["card"])
    with pytest.raises(CannotStage, match="ended on its own"):
        _play_freeze(plan, [], exit_on_own_at=3.0)
    # too little stall: every firing is ignored, and the freeze ends at its limit
    short = FreezePlan(128 << 20, 64 << 20, 240 << 20, calm_s=0.5, freeze_max_s=12.0)
    st, frames = _play_freeze(short, [2.1, 4.1, 6.1], stall=0.01)
    assert st.fired_by.startswith("no lasting firing") and st.ignored == 3


def test_high_step_is_pure_holds_at_memory_high_and_never_names_a_kill_it_did_not_see():
    """The high act's step alone, on readings it did not make: a hog that climbs at
    100 MiB/s to memory.high, then crawls at 1 MiB/s while the kernel counts `high`
    events; held for held_s, the act ends on its closing tones, nobody killed. A hog
    the kernel kills after all is said as that kill, never as the act's end."""
    from beep_av.acts.high import HighPlan, HighReading, HighState, high_step
    from beep_av.model import Lane, Snapshot
    from beep_av.procfs import parse_oom_kill

    mib = 1 << 20
    plan = HighPlan(256 * mib, 128 * mib, 204 * mib, 0, calm_s=0.5)

    def play(kill_at=None):
        st, t, hog, high, frames, started = HighState(), 0.0, 0.0, 0, [], False
        for _ in range(5000):
            kmsg = None
            if kill_at is not None and t >= kill_at:
                kmsg = parse_oom_kill("Memory cgroup out of memory: Killed process 9 (beep-hog) "
                                      "total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, "
                                      "UID:0 pgtables:1kB oom_score_adj:1000")  # fmt: skip
            snap = Snapshot(t=t, hog_bytes=int(hog), ram_limit=plan.ram, kmsg_kill=kmsg,
                            hog_exit=137 if kmsg else None, oom_kill_count=1 if kmsg else 0)  # fmt: skip
            st, frame = high_step(plan, st, HighReading(t, snap, (Lane("hog", 9, 1),), high))
            frames.append(frame)
            if frame.done:
                return st, frames
            started = started or any(a[0] == "start" for a in frame.actions)
            t = round(t + frame.wait, 6)
            if started:
                over = hog >= plan.high
                hog = min(plan.target, hog + (1 if over else 100) * mib * frame.wait)
                high += 1 if over else 0
        raise AssertionError("the act never ended")

    st, frames = play()
    assert [a for f in frames for a in f.actions] == [("start",)]
    events = {e[0]: e[1] for f in frames for e in f.events}
    assert events["held"]["held_count"] > 0 and events["end"]["alive"] is True
    assert st.base_rate == pytest.approx(100 * mib, rel=0.05)
    assert st.low_rate == pytest.approx(1 * mib, rel=0.1)
    end = frames[-1]
    assert end.enter is Phase.FINALE and end.view["closing"] and end.ok
    assert end.view["card"][0].startswith("held at memory.high") and "nobody" in end.view["card"][0]
    assert "charged at memory.high 128 MiB" in end.view["card"][2]
    assert not any(f.kills for f in frames)
    assert play()[1] == frames  # pure
    st, frames = play(kill_at=3.0)
    assert frames[-1].kills and frames[-1].kills[0].oom and not frames[-1].ok
