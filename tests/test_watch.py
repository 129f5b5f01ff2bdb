"""Watch mode: the pure watch story on tables of snapshots and kmsg records (every kill,
domain filtering, counter-only kills, fallback of the phase), target resolution on fake
trees, the re-beep in the synth, the every-kill recording, and the real thing: a watch on
a scratch cgroup while a hog of ours is OOM-killed there, twice."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from beep_av.audio.synth import BeepSpec, render_offline
from beep_av.errors import BadInput
from beep_av.model import KillRecord, KmsgKill, Phase, ShowState, Snapshot
from beep_av.recording import Recorder, load
from beep_av.watch import (
    WatchConfig,
    WatchStory,
    cgroup_mount_path,
    in_memcg,
    resolve_target,
    summary_lines,
    task_memcg,
)
from tests.conftest import ROOT, require

MiB = 1 << 20
T0 = 1000.0  # time.monotonic() at "show start" in the pure tests


def oomkill_line(pid: int, memcg: str, t: float, name: str = "python3") -> KmsgKill:
    """As the sampler hands it over: the kernel's time `t` on the show's (calibrated)
    clock; read at the step that takes it."""
    text = (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg={memcg},task_memcg={memcg},task={name},pid={pid},uid=0"
    )
    return KmsgKill(pid, name, None, True, int((T0 + t) * 1e6), text, kernel_t=t)


def killed_line(pid: int, t: float, rss_kib: int = 65536, name: str = "python3") -> KmsgKill:
    text = (
        f"Memory cgroup out of memory: Killed process {pid} ({name}) total-vm:100kB, "
        f"anon-rss:{rss_kib}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0"
    )
    return KmsgKill(pid, name, rss_kib, True, int((T0 + t) * 1e6), text, kernel_t=t)


def snap(t: float, count: int = 0, anon: int = 10 * MiB, cache: int = 0, swap: int = 0):
    return Snapshot(
        t=t,
        anon_bytes=anon,
        cache_bytes=cache,
        swap_bytes=swap,
        usage_bytes=anon + cache,
        ram_limit=64 * MiB,
        oom_kill_count=count,
    )


def story(**kw) -> WatchStory:
    base = dict(ram_limit=64 * MiB, swap_limit=0, host=False, memcg="/w")
    base.update(kw)
    return WatchStory(WatchConfig(**base))


def run(st: WatchStory, steps) -> list[ShowState]:
    """steps: [(snapshot, [kmsg kills])] -> states."""
    return [st.step(s, ks, T0) for s, ks in steps]


# ---------------------------------------------------------------- the pure story


def test_a_kill_in_the_domain_goes_oom_finale_then_back_to_watching():
    st = story()
    steps = [(snap(0.02 * i), []) for i in range(5)]
    steps.append((snap(0.1, count=1), [oomkill_line(42, "/w/sub", 0.095)]))
    steps.append((snap(0.12, count=1), [killed_line(42, 0.0951)]))
    steps += [(snap(0.12 + 0.1 * i, count=1), []) for i in range(1, 40)]
    states = run(st, steps)
    phases = [s.phase for s in states]
    assert phases[5] is Phase.OOM and phases[6] is Phase.FINALE
    assert states[5].oom_t == pytest.approx(0.1)
    kill = states[6].kill
    assert (kill.pid, kill.name, kill.anon_rss_kib) == (42, "python3", 65536)
    assert kill.detected_by == ("oom_kill", "kmsg") and kill.signal == 9 and kill.exit == 137
    assert kill.kmsg.startswith("Memory cgroup out of memory: Killed process 42 ")
    assert kill.t == pytest.approx(0.1) and kill.latency_ms == pytest.approx(5.0, abs=0.01)
    assert states[6].intensity == 0.0
    # three seconds of finale, then watching again (the story may fall back)
    assert phases[-1] is Phase.CALM and states[-1].kill is None
    assert states[-1].oom_t == pytest.approx(0.1)  # the synth keys a new beep on a new oom_t
    assert st.all_kills() == [kill]


def test_kills_outside_the_cgroup_are_ignored():
    st = story(memcg="/w")
    states = run(
        st,
        [
            (snap(0.0), []),
            (snap(0.02), [oomkill_line(7, "/wx", 0.01), oomkill_line(8, "/other/w", 0.01)]),
            (snap(0.04), [killed_line(7, 0.011), killed_line(8, 0.011)]),
        ]
        + [(snap(0.04 + 0.1 * i), []) for i in range(1, 10)],
    )
    assert all(s.phase is Phase.CALM for s in states)
    assert st.all_kills() == []


def test_host_watch_counts_every_kill_and_matches_the_vmstat_counter():
    st = story(host=True, memcg=None)
    states = run(
        st,
        [(snap(0.0), []), (snap(0.02, count=1), [oomkill_line(5, "/any/where", 0.019)])]
        + [(snap(0.02 + 0.02 * i, count=1), []) for i in range(1, 40)],
    )
    assert [k.pid for k in st.all_kills()] == [5]
    assert states[1].phase is Phase.OOM
    # no "Killed process" line ever came: confirmed by time, from both sources seen
    assert Phase.FINALE in [s.phase for s in states]
    assert st.all_kills()[0].detected_by == ("oom_kill", "kmsg")


@pytest.mark.parametrize("kmsg, first_oom_at", [(True, 0.5), (False, 0.0)])
def test_a_counter_rise_alone_is_a_kill(kmsg, first_oom_at):
    st = story(kmsg=kmsg)
    states = run(st, [(snap(0.1 * i, count=1), []) for i in range(20)])
    oom = next(s for s in states if s.phase in (Phase.OOM, Phase.FINALE))
    assert oom.t == pytest.approx(first_oom_at)  # kmsg expected: it waits for the record
    assert (Phase.OOM, oom.t) in oom.entered
    kill = st.all_kills()[0]
    assert (kill.pid, kill.name, kill.detected_by, kill.t) == (0, "?", ("oom_kill",), 0.0)


def test_a_killed_line_without_placement_counts_only_with_the_cgroup_counter():
    st = story()
    run(st, [(snap(0.0), [killed_line(9, 0.0)])] + [(snap(0.1 * i), []) for i in range(1, 10)])
    assert st.all_kills() == []  # no counter rise: a kill elsewhere
    st = story()
    run(
        st,
        [(snap(0.0), [killed_line(9, 0.0)]), (snap(0.02, count=1), [])]
        + [(snap(0.1 * i, count=1), []) for i in range(1, 10)],
    )
    assert [(k.pid, k.detected_by) for k in st.all_kills()] == [(9, ("oom_kill", "kmsg"))]


def test_every_kill_of_a_burst_takes_the_stage_in_turn_with_its_own_time():
    st = story()
    steps = [(snap(0.0), [])]
    steps.append(
        (
            snap(0.02, count=3),
            [oomkill_line(p, "/w", 0.015) for p in (11, 12, 13)]
            + [killed_line(p, 0.016) for p in (11, 12, 13)],
        )
    )
    steps += [(snap(0.02 + 0.05 * i, count=3), []) for i in range(1, 160)]
    states = run(st, steps)
    kills = st.all_kills()
    assert [k.pid for k in kills] == [11, 12, 13]
    assert all(k.t == pytest.approx(0.02) for k in kills)
    shown = []
    for s in states:
        if s.phase is Phase.FINALE and (not shown or shown[-1] != s.kill.pid):
            shown.append(s.kill.pid)
    assert shown == [11, 12, 13]
    assert states[-1].phase is Phase.CALM


def test_phase_follows_pressure_and_falls_back_after_the_hold():
    st = story(host=True, memcg=None)
    steps, t, anon, cache = [], 0.0, 100 * MiB, 200 * MiB
    for _ in range(50):  # 1 s of growth with the cache falling: evicting
        t += 0.02
        anon += 1 * MiB
        cache -= 1 * MiB
        steps.append((snap(t, anon=anon, cache=cache), []))
    for _ in range(50):  # 1 s of growth with swap rising: swapping
        t += 0.02
        anon += 1 * MiB
        steps.append((snap(t, anon=anon, cache=cache, swap=int((t - 1.0) * 64 * MiB)), []))
    swap = int((t - 1.0) * 64 * MiB)
    for _ in range(300):  # 6 s of nothing: the rates decay (0.5 s), then the 2 s hold
        t += 0.02
        steps.append((snap(t, anon=anon, cache=cache, swap=swap), []))
    states = run(st, steps)
    phases = [s.phase for s in states]
    assert phases[40] is Phase.EVICTING and phases[99] is Phase.SWAPPING
    assert phases[100 + 50] is Phase.SWAPPING  # held for 2 s after the last rise ...
    assert phases[-1] is Phase.CALM  # ... then back to calm
    assert [p for p, _ in states[-1].entered][-1] is Phase.CALM
    assert 0 < max(s.intensity for s in states) <= 1


def test_hostile_snapshots_never_raise():
    st = story(kmsg=False)  # counter rises are kills at once
    weird = [
        snap(math.nan),
        snap(-5.0, count=-3),
        snap(0.0, anon=-1, cache=-1, swap=-1),
        Snapshot(t=math.inf),
        snap(1.0, count=2),
        snap(0.5, count=1),  # counter going down: a reset, not a kill
    ]
    states = run(st, [(s, []) for s in weird])
    assert all(0.0 <= s.intensity <= 1.0 for s in states)
    assert len(st.all_kills()) == 2


# ---------------------------------------------------------------- small pure parts


@pytest.mark.parametrize(
    "victim, memcg, ok",
    [("/w", "/w", True), ("/w/a", "/w", True), ("/wx", "/w", False), ("/x", "/", True)],
)
def test_in_memcg(victim, memcg, ok):
    assert in_memcg(victim, memcg) is ok


def test_task_memcg():
    assert task_memcg(oomkill_line(1, "/a/b c", 0.0)) == "/a/b c"
    assert task_memcg(killed_line(1, 0.0)) is None


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 /ctr /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage line
"""


@pytest.mark.parametrize(
    "path, want",
    [
        ("/sys/fs/cgroup/memory/a/b", (1, "/ctr/a/b")),
        ("/sys/fs/cgroup/memory", (1, "/ctr")),
        ("/sys/fs/cgroup/unified/x.slice", (2, "/x.slice")),
        ("/sys/fs/cgroup/memoryx", None),
        ("/sys/fs/cgroup/cpu/a", None),
        ("/tmp", None),
    ],
)
def test_cgroup_mount_path(path, want):
    assert cgroup_mount_path(MOUNTINFO, path) == want


def _fake_cg(base: Path, version: int) -> Path:
    d = base / "cg"
    d.mkdir()
    for name in ("memory.stat",) + (
        ("memory.limit_in_bytes",) if version == 1 else ("memory.current",)
    ):
        (d / name).write_text("0\n")
    return d


@pytest.mark.parametrize("version", [1, 2])
def test_resolve_target_on_fake_cgroups(tmp_path, version):
    d = _fake_cg(tmp_path, version)
    t = resolve_target(str(d), cgroup_root=str(tmp_path), proc_root=str(tmp_path / "proc"))
    assert (t.version, t.cgroup_dir, t.memcg) == (version, str(d), None)
    assert t.files.cgroup_version == version
    assert t.files.oom_events.endswith("memory.oom_control" if version == 1 else "memory.events")
    # a hierarchy path is looked up under the mounts too
    (tmp_path / "memory").mkdir()
    d.rename(tmp_path / "memory" / "cg")
    t = resolve_target("/cg", cgroup_root=str(tmp_path), proc_root=str(tmp_path))
    assert t.cgroup_dir == str(tmp_path / "memory" / "cg")


@pytest.mark.parametrize("path", ["", "  ", "/no/such/dir", "relative/nothing"])
def test_resolve_target_missing_is_bad_input(tmp_path, path):
    with pytest.raises(BadInput, match="--cgroup"):
        resolve_target(path, cgroup_root=str(tmp_path))


def test_resolve_target_not_a_memory_cgroup_is_bad_input(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not a memory cgroup"):
        resolve_target(str(tmp_path / "plain"), cgroup_root=str(tmp_path))
    assert resolve_target(None).version == 0


def test_summary_lines():
    k = KillRecord(42, "python3", None, 9, 1, "x", 2048, ("oom_kill", "kmsg"), 3.0, 1.5)
    k0 = KillRecord(0, "?", None, 9, 2, None, None, ("oom_kill",), 0.0, 2.0)
    lines = summary_lines([k, k0], 10.0, "cgroup v1 /w")
    assert lines[0].startswith("kill 1:") and "pid 42 (python3)" in lines[0] and "2 MiB" in lines[0]
    assert "an unnamed process" in lines[1] and "unknown" in lines[1]
    assert lines[-1] == "watch: 2 OOM kills seen in cgroup v1 /w over 10.0 s"
    assert summary_lines([], 1.0, "the host") == ["watch: 0 OOM kills seen in the host over 1.0 s"]


# ---------------------------------------------------------------- sound and recording


def _watch_timeline() -> list[tuple[float, ShowState]]:
    """calm, kill A at 0.5 s (finale), calm again at 1.5 s, kill B at 2.0 s, calm at 3 s."""
    tl = []
    for t, phase, oom_t in [
        (0.0, Phase.CALM, None),
        (0.5, Phase.OOM, 0.5),
        (0.52, Phase.FINALE, 0.5),
        (1.5, Phase.CALM, 0.5),
        (2.0, Phase.OOM, 2.0),
        (2.02, Phase.FINALE, 2.0),
        (3.0, Phase.CALM, 2.0),
    ]:
        tl.append((t, ShowState(t=t, phase=phase, intensity=0.8, oom_t=oom_t)))
    return tl


def _tone_level(x: np.ndarray, rate: int, freq: float) -> float:
    n = np.arange(len(x))
    return float(abs(np.dot(x, np.exp(-2j * np.pi * freq * n / rate))) / max(1, len(x)))


def test_synth_beeps_at_every_new_kill_and_the_noise_comes_back():
    rate = 48000
    out = render_offline(
        _watch_timeline(), 3.6, rate=rate, beep=BeepSpec(freq=1000.0, length_ms=300), seed=1
    )
    left = out[:, 0]

    def seg(a, b):
        return left[int(a * rate) : int(b * rate)]

    beep_a, beep_b, quiet = seg(0.55, 0.75), seg(2.05, 2.25), seg(1.2, 1.45)
    assert _tone_level(beep_a, rate, 1000.0) > 0.1
    assert _tone_level(beep_b, rate, 1000.0) > 0.1  # the second kill beeps too
    assert _tone_level(seg(1.6, 1.9), rate, 1000.0) < 0.02  # not a beep: noise
    assert np.sqrt(np.mean(quiet**2)) < 1e-6  # the tail silence after beep A
    assert np.sqrt(np.mean(seg(1.6, 1.9) ** 2)) > 0.01  # watching again: noise is back
    assert np.sqrt(np.mean(seg(3.2, 3.5) ** 2)) > 0.01


def test_recorder_every_kill_writes_a_kill_line_per_kill(tmp_path):
    path = tmp_path / "w.jsonl"
    ka = KillRecord(7, "a", None, 9, 1, "k7", 100, ("oom_kill", "kmsg"), 1.0, 0.5)
    kb = KillRecord(8, "b", None, 9, 2, "k8", 200, ("oom_kill", "kmsg"), 1.0, 2.0)
    kc = KillRecord(9, "c", None, 9, 3, None, None, ("oom_kill",), 0.0, 2.5)
    rec = Recorder(str(path), {"stage": "watch"}, every_kill=True)
    entered = ((Phase.CALM, 0.0),)
    for t, phase, kill in [
        (0.0, Phase.CALM, None),
        (0.5, Phase.OOM, ka),
        (0.6, Phase.FINALE, ka),
        (0.7, Phase.FINALE, ka),
        (1.5, Phase.CALM, None),
        (2.0, Phase.OOM, kb),
        (2.1, Phase.FINALE, kb),
    ]:
        if phase is not entered[-1][0]:
            entered = (*entered, (phase, t))
        rec.write_state(ShowState(t=t, phase=phase, kill=kill, entered=entered))
    rec.kill(kb)  # already written: nothing new
    rec.kill(kc)  # never staged: written at the end
    rec.close()
    r = load(str(path))
    assert [k["pid"] for k in r.events_of("kill")] == [7, 8, 9]
    assert [p.value for p, _ in r.phases()] == [
        "calm",
        "oom",
        "finale",
        "calm",
        "oom",
        "finale",
    ]


# ---------------------------------------------------------------- the real thing

HOG = (
    "import sys, time\n"
    "chunks = []\n"
    "time.sleep(0.3)\n"
    "while True:\n"
    "    chunks.append(b'\\x01' * (1 << 20))  # C memset: every page written\n"
    "    time.sleep(0.002)\n"
)


def _kmsg_open() -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def _kmsg_killed_ts(fd: int, pid: int) -> float | None:
    """Kernel timestamp (s, CLOCK_MONOTONIC) of "Killed process PID", read so far."""
    found = None
    while True:
        try:
            raw = os.read(fd, 8192)
        except BlockingIOError:
            return found
        except OSError:
            continue
        head, _, msg = raw.decode("utf-8", "replace").partition(";")
        if f"Killed process {pid} " in msg:
            found = int(head.split(",")[2]) / 1e6


def _wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.real
@pytest.mark.slow
def test_watch_a_cgroup_while_our_hog_is_oom_killed_twice(scratch_cgroup, tmp_path):
    require(os.access("/dev/kmsg", os.R_OK), "needs /dev/kmsg")
    cg = scratch_cgroup(64 * MiB, 0)
    rec = tmp_path / "w.jsonl"
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONUNBUFFERED="1")
    watch = subprocess.Popen(
        [sys.executable, "-m", "beep_av", "watch", "--cgroup", cg, "--output", "headless"]
        + ["--audio", "off", "--record", str(rec)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    kmsg = _kmsg_open()
    hogs: list[tuple[int, float]] = []
    try:
        assert _wait_for(lambda: rec.exists() and rec.stat().st_size > 0, 30), "watch not up"
        assert _wait_for(lambda: '"type":"sample"' in rec.read_text(), 30)
        for _ in range(2):
            hog = subprocess.Popen(
                ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec {sys.executable} -c "$0"', HOG]
            )
            assert hog.wait(60) == -signal.SIGKILL  # the kernel killed it
            pid = hog.pid
            assert _wait_for(lambda: _kmsg_killed_ts_cached(kmsg, pid, hogs), 5)  # noqa: B023
            time.sleep(1.5)  # past the finale: the watch goes on watching
            assert watch.poll() is None, watch.stderr.read()
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    finally:
        os.close(kmsg)
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    records = [json.loads(x) for x in rec.read_text().splitlines()]
    t0 = records[0]["t0_monotonic"]
    kills = {k["pid"]: k for k in records if k["type"] == "kill"}
    for pid, ts in hogs:
        assert pid in kills, (pid, kills, err)
        k = kills[pid]
        assert "kmsg" in k["detected_by"] and "oom_kill" in k["detected_by"]
        assert f"Killed process {pid} " in k["kmsg"] and k["anon_rss_kib"] > 0
        # seen within 100 ms of the kernel's own timestamp, put on CLOCK_MONOTONIC by
        # the recording's calibration (printk's clock drifts from it: ~100 ms after 12 h
        # of uptime on these machines)
        mono = ts - records[0]["kernel_clock"]["offset_ns"] / 1e9
        assert abs(k["t"] - (mono - t0)) <= 0.1, (k["t"], mono - t0)
        # and measured from it on the calibrated clock
        assert records[0]["kernel_clock"]["uncertainty_ns"] > 0
        assert 0 < k["latency_ms"] < 50, k
    lines = out.strip().splitlines()
    assert lines[-1].startswith("watch: 2 OOM kills seen in cgroup v1 "), out
    for pid, _ in hogs:
        assert any(line.startswith("kill ") and f"pid {pid} " in line for line in lines), out
    assert [r["reason"] for r in records if r["type"] == "end"] == ["interrupted"]
    # the recording replays both kills: each beeps, and the replay records each
    _replay_beeps_each_kill(rec, [pid for pid, _ in hogs], tmp_path)


def _replay_beeps_each_kill(rec: Path, pids: list[int], tmp_path: Path) -> None:
    from tests.acts_checks import read_wav
    from tests.conftest import beep

    again, wav = tmp_path / "again.jsonl", tmp_path / "again.wav"
    r = beep("replay", str(rec), "--speed", "2", "--output", "headless", "--audio",
             f"wav:{wav}", "--record", str(again), timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [k["pid"] for k in load(str(again)).hog_kills] == pids
    x, rate = read_wav(wav)
    win = rate // 20  # 50 ms
    n = len(x) // win
    beeping = [_tone_level(x[i * win : (i + 1) * win], rate, 880.0) > 0.05 for i in range(n)]
    starts = [i for i in range(n) if beeping[i] and (i == 0 or not beeping[i - 1])]
    assert len(starts) == len(pids), f"{len(starts)} beeps heard for {len(pids)} kills"


def _kmsg_killed_ts_cached(fd: int, pid: int, hogs: list[tuple[int, float]]) -> bool:
    ts = _kmsg_killed_ts(fd, pid)
    if ts is not None:
        hogs.append((pid, ts))
    return ts is not None


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("path", ["/no/such/cgroup", "/tmp"])
def test_cli_bad_cgroup_exits_2_in_one_line(path):
    from tests.conftest import beep

    r = beep("watch", "--cgroup", path, "--output", "headless", "--audio", "off", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("beep-av: --cgroup ")
    assert r.stdout == ""  # nothing started, no summary


def test_cli_help_says_an_interrupt_is_the_normal_end():
    from tests.conftest import beep

    r = beep("watch", "--help", timeout=60)
    assert r.returncode == 0
    assert "normal end" in r.stdout and "--cgroup PATH" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_watch_the_host_ends_0_with_a_summary_on_a_signal(sig, tmp_path):
    rec = tmp_path / "h.jsonl"
    watch = subprocess.Popen(
        [sys.executable, "-m", "beep_av", "watch", "--output", "headless", "--audio", "off"]
        + ["--record", str(rec)],
        cwd=ROOT,
        env=dict(os.environ, SDL_VIDEODRIVER="dummy"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: rec.exists() and '"type":"sample"' in rec.read_text(), 30)
        watch.send_signal(sig)
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert "watching the host" in err and "Traceback" not in err
    assert out.strip().splitlines()[-1].startswith("watch: ")
    assert " OOM kill" in out.strip().splitlines()[-1] and "in the host over " in out
    records = [json.loads(x) for x in rec.read_text().splitlines()]
    assert records[0]["stage"] == "watch" and records[0]["ram_limit"] > 0
    assert records[-1]["type"] == "end" and records[-1]["exit"] == 0
