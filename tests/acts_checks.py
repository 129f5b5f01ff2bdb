"""The checks an act's recording must pass, the same for its real run and its
rehearsal (issue 15): shared by tests/test_acts.py and tests/test_acts_real.py."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from beep_av.audio.synth import BLOCK, RATE
from beep_av.recording import load as load_recording


def records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def acts(recs: list[dict], event: str) -> list[dict]:
    return [r for r in recs if r["type"] == "act" and r["event"] == event]


def check_throttle(path: Path) -> dict:
    """Work rate at the lowest quota < 25% of unthrottled, nr_throttled rises, nobody
    dies, the closing sound is recorded as not the beep; the recording replays and
    reports its lanes. Returns the figures."""
    recs = records(path)
    head = recs[0]
    assert head["act"] == "throttle" and head["format"] == "beep-av/1"
    steps = acts(recs, "step")
    assert [s["quota_pct"] for s in steps] == head["steps"], steps
    base, low = steps[0]["rate"], steps[-1]["rate"]
    assert base > 0 and low / base < 0.25, (base, low)
    throttled = [s["nr_throttled"] for s in steps[1:]]
    assert throttled == sorted(throttled) and throttled[-1] > throttled[0], throttled
    (end,) = acts(recs, "end")
    assert end["alive"] == head["workers"] and end["dead"] == [], end
    assert not [r for r in recs if r["type"] == "kill"], "nobody is killed in throttle"
    (beep,) = [r for r in recs if r["type"] == "beep"]
    assert beep.get("closing") is True and 880.0 not in beep["freq"], beep
    lanes = [r for r in recs if r["type"] == "lanes"]
    assert lanes and all(len(x["lanes"]) == head["workers"] for x in lanes)
    assert all(ln["alive"] for ln in lanes[-1]["lanes"])
    assert [r["phase"] for r in recs if r["type"] == "phase"] == ["calm", "filling", "finale"]
    rec = load_recording(str(path))
    assert rec.lanes and rec.act_events
    return {"ratio": low / base, "nr_throttled": end["nr_throttled"], "pct": end["throttled_pct"]}


def read_wav(wav: Path) -> tuple[np.ndarray, int]:
    """A 16- or 32-bit WAV's first channel as floats in [-1, 1), and its rate."""
    with wave.open(str(wav)) as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    dtype = {2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).reshape(-1, ch)[:, 0].astype(np.float64)
    return x / float(1 << (8 * width - 1)), rate


def closing_is_not_the_beep(wav: Path, beep_hz: float = 880.0) -> tuple[float, float]:
    """FFT of the last second of sound: its peak is far from the beep's frequency, and
    the beep's band holds almost nothing. Returns (peak Hz, beep band / peak)."""
    x, rate = read_wav(wav)
    loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
    assert loud.size, "the wav is silent"
    end = int(loud[-1])
    seg = x[max(0, end - rate) : end]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    f = np.fft.rfftfreq(len(seg), 1 / rate)
    peak = float(f[int(np.argmax(spec))])
    band = float(spec[(f > beep_hz - 30) & (f < beep_hz + 30)].max() / spec.max())
    assert abs(peak - beep_hz) > 100 and band < 0.05, (peak, band)
    return peak, band


def check_who_dies(path: Path) -> dict:
    """The kill record names the kmsg victim; the recording holds every hog's oom_score
    at the last sample before the kill; the verdict compares them (returned, so the
    caller prints a disagreement); the others were alive until released; it replays."""
    recs = records(path)
    head = recs[0]
    names = [h["name"] for h in head["hogs"]]
    kills = [r for r in recs if r["type"] == "kill" and r.get("hog") is not False]
    assert len(kills) == 1, kills
    kill = kills[0]
    also = [r for r in recs if r["type"] == "kill" and r.get("hog") is False]
    assert "kmsg" in kill["detected_by"] and kill["kmsg"], kill
    assert f"Killed process {kill['pid']} " in kill["kmsg"], kill
    assert kill["exit"] == 137 and kill["oom"] is True
    (scores,) = acts(recs, "scores")
    assert [h["name"] for h in scores["hogs"]] == names
    assert all(isinstance(h["oom_score"], int) for h in scores["hogs"]), scores
    (oom,) = [r for r in recs if r["type"] == "phase" and r["phase"] == "oom"]
    assert scores["at"] <= oom["t"]  # read before the kill was seen
    # every kill on the kernel's clock, in the kernel's order: the victim's first
    assert [kill["t"], *(r["t"] for r in also)] == sorted([kill["t"], *(r["t"] for r in also)])
    assert kill["t"] <= oom["t"], (kill, oom)
    by_pid = {h["pid"]: h["name"] for h in scores["hogs"]}
    (verdict,) = acts(recs, "verdict")
    assert verdict["pid"] == kill["pid"] and by_pid[kill["pid"]] == verdict["victim"]
    (released,) = acts(recs, "released")
    others = [n for n in names if n != verdict["victim"]]
    # the kernel's first choice is the victim; the stage may be at its limit still, and
    # the kernel may kill again before the victim's memory is free (seen under load, a
    # few ms later): that second kill is the kernel's, named on the card and here, and
    # every hog the kernel did not kill was alive until released
    by_kernel = released["killed_by_kernel"]
    assert by_kernel[0] == verdict["victim"] and len(set(by_kernel)) == len(by_kernel), released
    assert sorted(released["alive_before"] + by_kernel[1:]) == sorted(others), released
    # someone lived on, to be released, unless the kernel killed them all (seen once on
    # a loaded machine: big, medium and small within 10 ms; the card names each kill)
    assert released["alive_before"] or len(by_kernel) == len(names), released
    # each later kernel kill has its own kill record, named by the kernel's log
    pid_of = {h["name"]: h["pid"] for h in scores["hogs"]}
    assert [r["pid"] for r in also] == [pid_of[n] for n in by_kernel[1:]], (also, by_kernel)
    for r in also:
        assert "kmsg" in r["detected_by"] and f"Killed process {r['pid']} " in r["kmsg"], r
        assert r["exit"] == 137 and r["oom"] is True, r
    lanes = [r for r in recs if r["type"] == "lanes"]
    assert lanes and all(len(x["lanes"]) == len(names) for x in lanes)
    rec = load_recording(str(path))
    assert rec.kill is not None and rec.kill["pid"] == kill["pid"]
    # the verdict is the kernel's own table when the kill's report has one
    # (a recording made before: its verdict was /proc's, and says no source)
    has_table = bool(kill.get("candidates") or [])
    if "source" in verdict:
        assert verdict["source"] == ("kernel" if has_table else "lanes"), (verdict, kill)
    return {
        "victim": verdict["victim"],
        "scores": {h["name"]: h["oom_score"] for h in scores["hogs"]},
        "agrees": verdict["agrees"],
        "source": verdict.get("source", "proc"),
        "highest": verdict["highest"],
        "agrees_proc": verdict.get("agrees_proc", verdict["agrees"]),
        "stage_scores": verdict["stage_scores"],
        "also_killed": by_kernel[1:],
    }


def check_bystander(path: Path) -> dict:
    """Before the hog's kill the bystander's VmSwap is > 50% of its size; the kernel
    killed the hog, not the bystander, which is alive after it; the read-back swapped
    pages in (pswpin rose) and took a measured time; it replays."""
    recs = records(path)
    (ready,) = acts(recs, "bystander_ready")
    (before,) = acts(recs, "before_kill")
    assert before["bystander_swap"] > 0.5 * ready["bytes"], before
    kills = [r for r in recs if r["type"] == "kill"]
    assert len(kills) == 1 and kills[0]["pid"] != ready["pid"], kills
    assert "kmsg" in kills[0]["detected_by"], kills[0]
    (after,) = acts(recs, "after_kill")
    assert after["bystander_alive"] is True and after["bystander_swap"] > 0, after
    # the stage's own swap holds the bystander's pages between the kill and the read-back
    (start,) = acts(recs, "readback_start")
    between = [
        r["swap"] for r in recs if r["type"] == "sample" and after["t"] < r["t"] <= start["t"]
    ]
    assert between and max(between) >= 0.5 * after["bystander_swap"], (max(between or [0]), after)
    (back,) = acts(recs, "readback")
    assert back["pswpin"] > 0 and back["seconds"] > 0 and back["bystander_alive"], back
    assert back["swap_after"] < back["swap_before"], back
    assert load_recording(str(path)).lanes
    return {
        "swap_pct": 100.0 * before["bystander_swap"] / ready["bytes"],
        "readback_s": back["seconds"],
        "pswpin": back["pswpin"],
    }


def _freeze_ended_from_user_space(recs: list[dict], killer: str) -> tuple[dict, dict, list]:
    """What every freeze shares: the set fitted, then grew past RAM; the work fell at
    least 10x; one kill, by `killer` from user space (exit 137, no kernel OOM evidence,
    oom_kill 0), which the card says. Returns (the `grow` event, the `end` event, the
    card's lines)."""
    (fits,) = acts(recs, "fits")
    (grow,) = acts(recs, "grow")
    assert fits["ws"] < grow["ram"] < grow["ws"], (fits, grow)
    (end,) = acts(recs, "end")
    assert end["base_rate"] >= 10 * end["low_rate"] > 0, end
    assert end["oom"] is False and end["killer"] == killer and end["oom_kill"] == 0, end
    kills = [r for r in recs if r["type"] == "kill"]
    assert len(kills) == 1 and kills[0]["oom"] is False and kills[0]["exit"] == 137, kills
    assert kills[0]["killer"] == killer and kills[0]["oom_kill_count"] == 0, kills
    assert "kmsg" not in kills[0]["detected_by"], kills
    card = [r for r in recs if r["type"] == "view" and r.get("card")][-1]["card"]
    assert any("never acted (oom_kill 0)" in x for x in card), card
    return grow, end, card


def check_freeze_by_oomd(path: Path, rehearsal: bool = False) -> dict:
    """The freeze ended by systemd-oomd (--killer systemd-oomd): the set fitted, then
    grew past RAM; the work fell at least 10x; Beep never killed (no `fired` event) and
    the hog died by SIGKILL after oomd's duration with no kernel OOM evidence;
    the kill record names systemd-oomd and the card quotes its journal line (the
    model's words in a rehearsal); the stage's oom_kill counter stayed 0."""
    recs = records(path)
    _, end, card = _freeze_ended_from_user_space(recs, "systemd-oomd")
    assert acts(recs, "fired") == [], "Beep killed: systemd-oomd was to"
    assert end["frozen_s"] >= 15, end  # oomd waits out its duration (20 s in the guest)
    line = end["killer_line"]
    if rehearsal:
        assert line.startswith("the model's systemd-oomd"), line
    else:
        assert line.startswith("Killed ") and "due to memory pressure" in line, line
    assert any(line[:60] in x for x in card), card
    last = [r for r in recs if r["type"] == "end"][-1]
    assert last["exit"] == 0, last  # the kill the act stages is no surprise: exit 0
    return {"fall": round(end["base_rate"] / end["low_rate"]), "frozen_s": end["frozen_s"],
            "line": line}  # fmt: skip


def check_freeze(path: Path) -> dict:
    """The freeze: the working set fitted, then grew past RAM inside RAM + swap; the
    work rate fell at least 10x from its start while the stage swapped and the full
    stall rose; the kernel's PSI trigger fired (Beep's reading of the stall agreeing)
    and Beep killed the hog from user space: exit 137, no kernel OOM evidence, the
    stage's oom_kill counter 0; the card says so. Returns the figures."""
    recs = records(path)
    grow, end, card = _freeze_ended_from_user_space(recs, "beep-av")
    (fired,) = acts(recs, "fired")
    assert fired["by"] == "the kernel's PSI trigger" and fired["firings"] >= 2, fired
    assert fired["full_us_in_window"] >= 200_000 * 0.9, fired
    samples = [r for r in recs if r["type"] == "sample"]
    during = [r for r in samples if grow["t"] < r["t"] <= fired["t"]]
    before = [r for r in samples if r["t"] <= grow["t"]]
    assert max(r["swap"] for r in during) > 0 and max(r["swap"] for r in before) == 0
    stalls = sorted(r["stall"] for r in during[len(during) // 4 :])
    assert stalls[len(stalls) // 2] > 0.05, stalls[len(stalls) // 2]  # the state's stall rose
    full = during[-1]["psi_full_us"] - during[0]["psi_full_us"]
    assert full > 0.1 * (during[-1]["t"] - during[0]["t"]) * 1e6, full  # >10% of the time
    assert any("PSI trigger full 0.2 s in 2 s" in x for x in card), card
    lanes = [r for r in recs if r["type"] == "lanes"]
    rates = [x["work_rate"] for r in lanes for x in r["lanes"] if x["work_rate"]]
    assert max(rates) >= 10 * min(rates), (max(rates), min(rates))
    return {
        "fall": round(end["base_rate"] / end["low_rate"]),
        "frozen_s": end["frozen_s"],
        "firings": fired["firings"],
        "ignored": fired["ignored"],
        "stall_pct": round(100 * fired["full_us_in_window"] / 1e6 / fired["window_s"]),
    }


def check_high(path: Path) -> dict:
    """memory.high held the hog: the kernel counted `high` events, the climb's rate fell
    at least 3x once held, nobody died (no kill line, the hog alive, oom_kill 0), the
    card says so, and the act ended on its closing tones. Returns the figures."""
    recs = records(path)
    (held,) = acts(recs, "held")
    (end,) = acts(recs, "end")
    head = recs[0]
    assert held["held_count"] > 0 and end["held_count"] >= held["held_count"], (held, end)
    assert end["base_rate"] >= 3 * end["low_rate"] and end["base_rate"] > 0, end
    assert end["alive"] is True and end["oom_kill"] == 0, end
    # memory.high holds the cgroup's charge (the hog and its interpreter), not the hog
    assert end["usage"] >= 0.95 * head["memory_high"], (end, head)
    assert not [r for r in recs if r["type"] == "kill"]
    view = [r for r in recs if r["type"] == "view" and r.get("card")][-1]
    assert (
        view["card"][-3].startswith("held at memory.high") and "killed: nobody" in view["card"][-3]
    )
    assert view["closing"] and view["title"] == "THROTTLED", view
    return {
        "held_count": end["held_count"],
        "fall": round(end["base_rate"] / max(end["low_rate"], 1.0), 1),
    }


def readback_is_heard(wav: Path, path: Path, beep_hz: float = 880.0) -> dict:
    """The bystander's read-back is heard: after the beep (a clean tone, then silence)
    comes a crackle, broadband (no tone), that lasts as long as the recorded read-back
    (within 0.15 s: the sound follows 10 ms readings and a 20 ms stutter grid; shorter by
    at most the blocks the device underflowed, which the WAV lacks), then
    silence. Returns the figures."""
    (back,) = acts(records(path), "readback")
    x, rate = read_wav(wav)
    win = rate // 100  # 10 ms
    n = len(x) // win
    blocks = x[: n * win].reshape(n, win)
    rms = np.sqrt((blocks**2).mean(axis=1))
    spec = np.abs(np.fft.rfft(blocks * np.hanning(win), axis=1))
    f = np.fft.rfftfreq(win, 1 / rate)
    tonal = spec.max(axis=1) / (spec.sum(axis=1) + 1e-12)
    beep = np.flatnonzero(
        (rms > 0.1) & (tonal > 0.2) & (np.abs(f[spec.argmax(axis=1)] - beep_hz) < 150)
    )
    assert beep.size, "no beep in the sound"
    end = int(beep[-1])
    while end + 1 < n and rms[end + 1] > 0.01:  # the beep's fade-out, to silence
        end += 1
    after = np.flatnonzero(rms[end + 1 :] > 0.01) + end + 1
    assert after.size, "nothing is heard after the beep: the read-back is silent"
    first, last = int(after[0]), int(after[-1])
    assert first - end >= 15, "the read-back's sound starts in the beep's tail"
    heard = (last - first + 1) / 100
    whole = x[first * win : (last + 1) * win]
    s = np.abs(np.fft.rfft(whole * np.hanning(len(whole))))
    flat = float(s.max() / (s.sum() + 1e-12))
    assert flat < 0.01, f"the read-back's sound is a tone ({flat:.3f}), not a crackle"
    # the WAV is the show's own audio timeline: a block the device underflowed (the end
    # line counts them; a guest under TCG on a busy machine has dozens) is missing from
    # it, so the crackle may be heard shorter by at most that much, never longer
    (last_line,) = [r for r in records(path) if r["type"] == "end"] or [{}]
    lost = int(last_line.get("underflows") or 0) * BLOCK / RATE
    low, high = back["seconds"] - 0.15 - lost, back["seconds"] + 0.15
    assert low <= heard <= high, (heard, back["seconds"], f"{lost:.2f} s underflowed")
    return {"heard_s": heard, "readback_s": back["seconds"], "gap_s": (first - end) / 100,
            "underflowed_s": round(lost, 3)}  # fmt: skip


ACT_LINES = ("lanes", "act", "view", "kill", "phase", "skip")


def replay_performs_the_act(original: Path, again: Path) -> dict:
    """`again` is the recording a replay of `original` made as it performed it: the
    act's lines (its lanes, events, views: the card, captions, notes, closing tones;
    its kills, phases and skips) and every sample come out as they went in. Returns
    the counts compared."""
    o, a = records(original), records(again)
    assert a[0]["replay_of"] == str(original) and a[0].get("act") == o[0].get("act")
    counts = {}
    for kind in ACT_LINES:
        x = [r for r in o if r["type"] == kind]
        y = [r for r in a if r["type"] == kind]
        bad = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), None)
        assert len(x) == len(y) and bad is None, (kind, len(x), len(y), bad and (x[bad], y[bad]))
        counts[kind] = len(x)
    if o[0].get("act") not in (None, "story"):
        assert counts["view"] and counts["lanes"], "an act's recording without its view"
    first, second = load_recording(str(original)), load_recording(str(again))
    for col, values in first.samples.items():
        assert np.array_equal(values, second.samples[col]), col
    counts["samples"] = len(first)
    return counts


def check_kernel_report(path: Path) -> dict:
    """A real memory act's kill record keeps the kernel's whole report: the trigger and
    the constraint named, every process of the act (its lanes) among the candidates the
    kernel weighed, with points, and the victim with the most. Returns the kill line."""
    recs = records(path)
    kill = next(r for r in recs if r["type"] == "kill" and r.get("hog") is not False)
    assert kill["trigger"]["name"] and kill["constraint"] == "CONSTRAINT_MEMCG", kill
    points = {c["pid"]: c["points"] for c in kill["candidates"]}
    assert kill["victim_rank"] == 1 and points[kill["pid"]] == max(points.values()), kill
    lanes = next(r for r in recs if r["type"] == "lanes")
    assert {x["pid"] for x in lanes["lanes"]} <= set(points), (lanes, points)
    return kill
