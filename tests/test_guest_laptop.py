"""The laptop, for real: a Debian guest with systemd as PID 1, cgroup v2 only, logind,
a normal user with their systemd user manager, zram and systemd-oomd (scripts/vm.sh).

Two boots: tests/vm/laptop-root.sh (root from a login shell in a logind session, as
`sudo` from a terminal) and tests/vm/laptop-user.sh (the normal user, no sudo). Each
test reads what its boot's script wrote to $OUT."""

from __future__ import annotations

import json
import re
import statistics
import wave
from pathlib import Path

import numpy as np
import pytest

from beep_av.recording import load
from tests.acts_checks import (
    check_bystander,
    check_freeze,
    check_freeze_by_oomd,
    check_high,
    check_kernel_report,
    check_throttle,
    check_who_dies,
    closing_is_not_the_beep,
    readback_is_heard,
)

# a boot (and an image build from nothing) runs in the first test's setup
pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.guest, pytest.mark.timeout(1800)]

STORY = ["calm", "filling", "evicting", "swapping", "oom", "finale"]


@pytest.fixture(scope="module")
def root_run(guest):
    run = guest("laptop-root.sh", "root")
    assert run.rc == 0 and (run.out / "done").exists(), run.tail()
    return run


@pytest.fixture(scope="module")
def user_run(guest):
    run = guest("laptop-user.sh", "user")
    assert run.rc == 0 and (run.out / "done").exists(), run.tail()
    return run


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _phases(path: Path) -> list[str]:
    return [r["phase"] for r in _records(path) if r["type"] == "phase"]


def _kill(path: Path) -> dict:
    kills = [r for r in _records(path) if r["type"] == "kill" and r.get("hog", True)]
    assert len(kills) == 1, f"{path.name}: {len(kills)} kill records of the hog"
    return kills[0]


def _check_show(run, rel: str, *, sources=("exit", "oom_kill", "kmsg"), story=STORY) -> dict:
    """A show that reached the finale through the kernel's kill, and left nothing."""
    name = Path(rel)
    rc = run.rc_of(f"{rel}.rc")
    err = run.text(f"{rel}.err")
    assert rc == 0, f"{rel}: exit {rc}: {err}"
    assert _phases(run.out / f"{rel}.jsonl") == list(story), err
    kill = _kill(run.out / f"{rel}.jsonl")
    assert set(sources) <= set(kill["detected_by"]), kill
    if "kmsg" in sources:
        assert "Killed process" in kill["kmsg"] and str(kill["pid"]) in kill["kmsg"]
    assert run.text(f"{rel}.left").strip() == "", f"{name}: left behind:\n{run.text(f'{rel}.left')}"
    load(str(run.out / f"{rel}.jsonl"))  # the recording replays
    return kill


# ---------------------------------------------------------------- root (`sudo`)


def test_throttle_act_on_v2_lowers_cpu_max_and_kills_nobody(root_run):
    """Issue 15: the throttle act in a systemd scope on cgroup v2 (cpu.max)."""
    rc, err = root_run.rc_of("e/throttle.rc"), root_run.text("e/throttle.err")
    assert rc == 0, err
    assert "stage: systemd scope" in err, err
    figures = check_throttle(root_run.out / "e" / "throttle.jsonl")
    peak, band = closing_is_not_the_beep(root_run.out / "e" / "throttle.wav")
    assert root_run.text("e/throttle.left").strip() == "", root_run.text("e/throttle.left")
    print(f"throttle v2 (guest): {figures}, closing peak {peak:.0f} Hz, 880 Hz band {band:.4f}")


@pytest.mark.parametrize("run", ["who1", "who2"])
def test_who_dies_on_v2_names_the_kernels_choice(root_run, run):
    """Issue 15: who-dies in a systemd scope on cgroup v2, the same checks as on v1."""
    rc, err = root_run.rc_of(f"f/{run}.rc"), root_run.text(f"f/{run}.err")
    assert rc == 0, err
    assert "stage: systemd scope" in err, err
    figures = check_who_dies(root_run.out / "f" / f"{run}.jsonl")
    check_kernel_report(root_run.out / "f" / f"{run}.jsonl")  # the kernel's points, on v2
    assert root_run.text(f"f/{run}.left").strip() == "", root_run.text(f"f/{run}.left")
    print(
        f"who-dies v2 (guest) {run}: victim {figures['victim']}, oom_score {figures['scores']},"
        f" stage {figures['stage_scores']}, agrees {figures['agrees']}"
        + (f", then also {figures['also_killed']}" if figures["also_killed"] else "")
    )


def test_bystander_on_v2_pages_go_to_swap_and_come_back(root_run):
    """Issue 15: the bystander in a systemd scope on cgroup v2, the same checks as on v1,
    and its read-back heard in the wav."""
    rc, err = root_run.rc_of("f/bystander.rc"), root_run.text("f/bystander.err")
    assert rc == 0, err
    assert "stage: systemd scope" in err, err
    rec = root_run.out / "f" / "bystander.jsonl"
    figures = check_bystander(rec)
    heard = readback_is_heard(root_run.out / "f" / "bystander.wav", rec)
    assert root_run.text("f/bystander.left").strip() == "", root_run.text("f/bystander.left")
    print(f"bystander v2 (guest): {figures}; {heard}")


def _check_freeze(run, who: str) -> dict:
    rc, err = run.rc_of("g/freeze.rc"), run.text("g/freeze.err")
    assert rc == 0, err
    assert "stage: systemd" in err, err
    rec = run.out / "g" / "freeze.jsonl"
    figures = check_freeze(rec)
    fired = next(r for r in _records(rec) if r.get("event") == "fired")
    assert fired["psi"] == "the stage's", fired  # the scope's own memory.pressure
    assert run.text("g/freeze.left").strip() == "", run.text("g/freeze.left")
    print(f"freeze v2 ({who}, guest): {figures}")
    return figures


def test_freeze_on_v2_is_ended_by_a_psi_trigger_on_the_scopes_pressure(root_run):
    """Issue 23: the freeze in a system scope: the trigger on the scope's own
    memory.pressure fires, Beep kills the hog, the kernel's OOM killer never acts."""
    _check_freeze(root_run, "root")


def test_freeze_ended_by_systemd_oomd_quotes_its_line_on_the_card(root_run):
    """Issue 23: --killer systemd-oomd with the guest's systemd-oomd running: the scope
    is watched (ManagedOOMMemoryPressure=kill, 20%); oomd kills the hog's leaf cgroup
    after its 30 s, Beep never does, and the card quotes oomd's journal line."""
    rc, err = root_run.rc_of("d/freeze-oomd.rc"), root_run.text("d/freeze-oomd.err")
    assert rc == 0, err
    figures = check_freeze_by_oomd(root_run.out / "d" / "freeze-oomd.jsonl")
    assert figures["line"] in root_run.text("d/journal-freeze.txt"), figures
    assert root_run.text("d/freeze-oomd.left").strip() == "", root_run.text("d/freeze-oomd.left")
    print(f"freeze ended by systemd-oomd (guest): {figures}")


def test_high_on_v2_holds_the_hog_and_kills_nobody(root_run):
    """Issue 23: memory.high (MemoryHigh= of the scope) holds the climbing hog: `high`
    events, the climb falls, nobody dies, exit 0, the closing tones, nothing left."""
    rc, err = root_run.rc_of("g/high.rc"), root_run.text("g/high.err")
    assert rc == 0, err
    assert "stage: systemd scope" in err, err
    figures = check_high(root_run.out / "g" / "high.jsonl")
    closing_is_not_the_beep(root_run.out / "g" / "high.wav")
    assert root_run.text("g/high.left").strip() == "", root_run.text("g/high.left")
    print(f"high v2 (guest): {figures}")


def test_guest_is_a_systemd_v2_laptop(root_run):
    cg = root_run.text("info/cgroup.txt").strip()
    assert cg.startswith("0::/user.slice/user-0.slice/session-"), cg  # a logind session
    doctor = root_run.text("info/doctor.txt")
    assert "OK   cgroup     the stage will be a transient systemd scope" in doctor, doctor
    print(f"guest: up in {root_run.boot_s} s (host side); whole run {root_run.seconds:.0f} s")


def test_sudo_shows_on_v2_reach_the_finale_in_a_system_scope(root_run):
    latencies = []
    for i in range(1, 6):
        kill = _check_show(root_run, f"a/show{i}")
        out = root_run.text(f"a/show{i}.out")
        assert "stage: systemd scope beep-av-" in out + root_run.text(f"a/show{i}.err"), out
        assert "Memory cgroup out of memory" in kill["kmsg"]
        # the kernel's whole report, read live on v2: the hog a candidate, the trigger
        assert kill["trigger"]["name"] and kill["victim_rank"] == 1, kill
        assert kill["pid"] in [c["pid"] for c in kill["candidates"]], kill
        phases = {r["phase"]: r["t"] for r in _records(root_run.out / f"a/show{i}.jsonl")
                  if r["type"] == "phase"}  # fmt: skip
        print(f"show{i}: " + ", ".join(f"{p} {t:.2f}s" for p, t in phases.items())
              + f"; latency {kill.get('latency_ms')} ms")  # fmt: skip
        if kill.get("latency_ms") is not None:
            latencies.append(kill["latency_ms"])
    assert len(latencies) == 5, "every v2 show measured its detection latency"
    assert all(0 < x < 200 for x in latencies), latencies
    print(f"v2 detection latency: median {statistics.median(latencies):.1f} ms of {latencies}")


def test_sudo_show_provisions_and_removes_a_temporary_swapfile(root_run):
    _check_show(root_run, "a/swapfile")
    out = root_run.text("a/swapfile.out") + root_run.text("a/swapfile.err")
    assert "swapfile" in out, out


def test_zram_swap_takes_the_hogs_pages_without_compressing_them(root_run):
    swaps = root_run.text("info/zram-swaps.txt")
    assert "/dev/zram0" in swaps and "/swapfile" not in swaps, swaps
    _check_show(root_run, "c/zram")
    # mm_stat: orig_data_size compr_data_size mem_used_total ... (bytes), every 20 ms
    rows = sorted({tuple(map(int, line.split()[:2])) for line in root_run.text("c/mm_stat.txt").splitlines()
                   if len(line.split()) >= 2 and line.split()[0].isdigit()})  # fmt: skip
    orig, compr = max(rows)
    assert orig > 64 << 20, f"only {orig} bytes went to zram"
    ratio = compr / orig
    # the first pages out are the hog interpreter's own cold ones, which do compress; the
    # pages that follow are the hog's random ones
    half = next((o, c) for o, c in rows if o >= orig // 2)
    marginal = (compr - half[1]) / (orig - half[0])
    print(f"zram: {orig >> 20} MiB stored as {compr >> 20} MiB: compressed/original = {ratio:.3f};"
          f" the second half alone {marginal:.3f}")  # fmt: skip
    assert ratio >= 0.9
    assert marginal >= 0.95


def test_systemd_oomd_active_is_reported_truthfully(root_run):
    assert root_run.text("d/active.txt").strip() == "active"
    doctor = root_run.text("d/doctor.txt")
    assert "systemd-oomd running" in doctor and "systemctl stop systemd-oomd" in doctor, doctor
    journal = root_run.text("d/journal.txt")
    for name in ("oomd", "oomd-swapfull"):
        recs = _records(root_run.out / f"d/{name}.jsonl")
        scope = next((r for r in recs if r["type"] == "header"), {}).get("cgroup", "beep-av-")
        oomd_killed = any("Killed" in line and "beep-av-" in line for line in journal.splitlines())
        rc = root_run.rc_of(f"d/{name}.rc")
        if oomd_killed and rc != 0:
            kill = next(r for r in recs if r["type"] == "kill")
            assert "kmsg" not in kill["detected_by"] and "oom_kill" not in kill["detected_by"]
            assert "systemd-oomd" in root_run.text(f"d/{name}.err")
            print(f"{name}: systemd-oomd killed the stage ({scope}), reported as such")
        else:
            _check_show(root_run, f"d/{name}")
            print(f"{name}: the kernel killed the hog; systemd-oomd stayed out of the stage")
    assert not any("Killed" in line and "beep-av-" in line for line in journal.splitlines()), (
        "systemd-oomd picked the stage despite ManagedOOMPreference=omit:\n" + journal
    )


# ---------------------------------------------------------------- the normal user


def test_freeze_as_the_normal_user_is_ended_by_an_unprivileged_trigger(user_run):
    """Issue 23: the freeze as the normal user: an unprivileged trigger (2 s windows) on
    the user scope's memory.pressure, read once a second."""
    _check_freeze(user_run, "user")


def test_user_doctor_says_ok_for_the_user_scope(user_run):
    doctor = user_run.text("b/doctor.txt")
    assert "OK   cgroup     the stage will be a transient systemd user scope" in doctor, doctor
    assert "memory is delegated to user@.service" in doctor
    assert user_run.rc_of("b/doctor.rc") == 0


def test_user_show_without_sudo_reaches_the_finale_in_a_user_scope(user_run):
    assert "uid=1000(beep)" in user_run.text("info/id.txt")
    for i in (1, 2):
        kill = _check_show(user_run, f"b/show{i}")
        out = user_run.text(f"b/show{i}.out")
        assert "stage: systemd user scope beep-av-" in out + user_run.text(f"b/show{i}.err"), out
        print(f"user show{i}: detected by {kill['detected_by']}, latency {kill.get('latency_ms')}")


def test_the_wheel_in_a_fresh_venv_as_the_user(user_run):
    assert user_run.rc_of("e/install.rc") == 0, user_run.text("e/venv.log")
    fr = "mémoire"  # the French captions speak of memory in every phase
    headless = user_run.text("e/headless.out")
    assert user_run.rc_of("e/headless.rc") == 0, user_run.text("e/headless.err")
    assert "finale" in headless, headless
    assert user_run.rc_of("e/window.rc") == 0, user_run.text("e/window.err")
    assert list((user_run.out / "e" / "frames").glob("*.png")), "the window drew no frames"
    assert user_run.rc_of("e/terminal.rc") == 0, user_run.text("e/terminal.err")
    assert fr in user_run.text("e/terminal.pane").lower()


def test_a_users_show_plays_through_pipewire_to_the_sound_card(user_run):
    """Issue 25: PipeWire, WirePlumber and pipewire-pulse started by the user manager as
    a desktop session does; doctor names PipeWire; a real show through `device:pulse`
    (pipewire-pulse) reaches the finale, and the sound card's output has its 1500 Hz
    beep (the only show of this boot that plays sound)."""
    active = user_run.text("p/active.txt").split()
    assert active == ["active"] * 3, user_run.text("p/start.log") + " ".join(active)
    assert "OK   sound      PipeWire (pipewire-pulse" in user_run.text("p/doctor.txt")
    _check_show(user_run, "p/show")
    err = user_run.text("p/show.err")
    assert "audio:" not in err, err  # it played: no line about the sound
    assert not re.search(r"Expression '|ALSA lib|pa_linux_alsa", err), err
    with wave.open(str(user_run.out / "card.wav")) as w:
        rate, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, ch)
    x = x.astype(np.float64).mean(axis=1) / 32768
    win = rate // 10
    n = len(x) // win
    k = np.arange(win)
    level = np.abs(x[: n * win].reshape(n, win) @ np.exp(-2j * np.pi * 1500 * k / rate)) / win
    assert level.max() > 0.05, f"no 1500 Hz tone on the card (max level {level.max():.4f})"
    i = int(np.argmax(level))
    tone = x[max(0, i - 1) * win : (i + 2) * win]
    spec = np.abs(np.fft.rfft(tone * np.hanning(len(tone)), n=len(tone) * 8))
    peak = np.argmax(spec) * rate / (len(tone) * 8)
    # QEMU's emulated card drifts by a few tenths of a percent under TCG (console test)
    assert abs(peak - 1500) <= 15, f"the beep peaks at {peak:.1f} Hz"
