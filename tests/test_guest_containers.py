"""Containers, for real (#14): the Debian guest's Docker 20.10 (as root) and rootless
Podman 4.3 (as the normal user), no network, cgroup v2 (scripts/vm.sh).

Two boots: tests/vm/containers-root.sh (Docker: two shows, --restarts 2, watch
--containers while an unrelated container is OOM-killed, cleanup after a SIGKILLed
show) and tests/vm/containers-user.sh (rootless Podman: two shows, --restarts 2). Each
test reads what its boot's script wrote to $OUT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beep_av.recording import load

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.guest, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def docker_run(guest):
    run = guest("containers-root.sh", "root")
    assert run.rc == 0 and (run.out / "done").exists(), run.tail()
    print(f"guest: up in {run.boot_s} s (host side); whole run {run.seconds:.0f} s")
    return run


@pytest.fixture(scope="module")
def podman_run(guest):
    run = guest("containers-user.sh", "user")
    assert run.rc == 0 and (run.out / "done").exists(), run.tail()
    print(f"guest: up in {run.boot_s} s (host side); whole run {run.seconds:.0f} s")
    return run


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _kills(path: Path) -> list[dict]:
    return [r for r in _records(path) if r["type"] == "kill" and r.get("hog", True)]


def _check_container_show(run, rel: str, engine: str, lives: int = 1) -> list[dict]:
    """A container show that reached the finale through the kernel's kill, confirmed by
    the kernel and the engine, once per life, and left nothing but the image."""
    rc = run.rc_of(f"{rel}.rc")
    err = run.text(f"{rel}.err")
    out = run.text(f"{rel}.out")
    assert rc == 0, f"{rel}: exit {rc}: {err}"
    recs = _records(run.out / f"{rel}.jsonl")
    header = recs[0]
    assert header["stage"] == "container" and header["engine"] == engine, header
    phases = [r["phase"] for r in recs if r["type"] == "phase"]
    assert phases[-1] == "finale" and phases.count("oom") == lives, phases
    kills = _kills(run.out / f"{rel}.jsonl")
    assert len(kills) == lives, kills
    for i, k in enumerate(kills):
        assert {"exit", "oom_kill"} <= set(k["detected_by"]) and k["oom"] is True, k
        if engine == "docker" or "kmsg" in k["detected_by"]:  # root: /dev/kmsg
            assert "kmsg" in k["detected_by"], k
            assert "Killed process" in k["kmsg"] and str(k["pid"]) in k["kmsg"], k
        else:
            # the rootless user reads the kernel through the journal (journalctl -k -f),
            # which missed a kill's record within the 5 s the show waits in 2 of 3 CI
            # runs of stop 21 (under TCG; an open problem): the kill is still the
            # kernel's (its oom_kill counter), and the card says what confirmed it
            print(f"{rel} life {i}: no kernel record from the journal within the wait")
            assert "confirmed   exit status + oom_kill counter" in out, out
        assert k["engine"] == engine and k["container"].startswith("beep-av-"), k
        assert k["exit_code"] == 137 and isinstance(k["oom_killed"], bool), k
        if engine == "docker":
            assert k["oom_killed"] is True, k
        assert k["restart_count"] == i, k
        assert "die" in k["engine_events"], k
    verdict = "OOMKilled" if engine == "docker" else "not OOMKilled"
    assert f"the engine says {verdict}, exit 137" in out, out
    assert "the kernel killed pid" in out
    assert [r for r in recs if r["type"] == "end"][-1]["reason"] == "finale"
    assert run.text(f"{rel}.left").strip() == "", f"{rel}: left behind:\n{run.text(f'{rel}.left')}"
    load(str(run.out / f"{rel}.jsonl"))  # the recording replays
    for k in kills:
        print(f"{rel} life {k['restart_count']}: pid {k['pid']}, kernel latency"
              f" {k.get('latency_ms')} ms, engine oom event {k.get('engine_latency_ms')} ms"
              f" after the kernel's kill, back-off {k.get('backoff_s')} s,"
              f" engine verdict from {k.get('engine_source')}")  # fmt: skip
    return kills


# ---------------------------------------------------------------- Docker, as root


def test_docker_shows_reach_the_finale_confirmed_by_kernel_and_engine(docker_run):
    assert "OK   container  docker:" in docker_run.text("info/doctor.txt")
    for name in ("show1", "show2"):
        kills = _check_container_show(docker_run, f"a/{name}", "docker")
        assert "oom" in kills[0]["engine_events"], kills  # Docker sends its `oom` event
        assert kills[0].get("engine_latency_ms") is not None, kills
    images = docker_run.text("a/images.txt").split()
    ver = docker_run.text("info/version.txt").strip()
    assert images == [f"beep-av-hog:{ver}"], images  # the one reusable image
    assert "image: importing" in docker_run.text("a/show1.err")
    assert "image: importing" not in docker_run.text("a/show2.err")  # reused
    print(f"docker shows: {docker_run.text('a/show1.seconds').strip()} s (image import)"
          f" and {docker_run.text('a/show2.seconds').strip()} s")  # fmt: skip


def test_docker_restarts_play_three_kills_with_the_back_off(docker_run):
    kills = _check_container_show(docker_run, "c/restarts", "docker", lives=3)
    backoffs = [k.get("backoff_s") for k in kills[1:]]
    assert all(b is not None and b > 0 for b in backoffs), backoffs
    print(f"docker back-off between lives: {backoffs} s")


def test_watch_containers_gives_one_card_naming_the_victim(docker_run):
    assert docker_run.rc_of("d/victim.rc") == 137, docker_run.text("d/victim.err")
    # Docker's own verdict on its container (usually OOMKilled true; false once in this
    # stop's CI under TCG although the kernel killed it): Beep must record the same
    cli_oom, cli_exit = docker_run.text("d/victim.inspect").split()
    assert cli_exit == "137", docker_run.text("d/victim.inspect")
    assert docker_run.rc_of("d/watch.rc") == 0, docker_run.text("d/watch.err")
    out = docker_run.text("d/watch.out")
    kills = _kills(docker_run.out / "d/watch.jsonl")
    assert len(kills) == 1, kills
    k = kills[0]
    assert k["container"] == "victim" and k["exit_code"] == 137, k
    assert k["oom_killed"] is (cli_oom == "true"), (k, cli_oom)
    assert "kmsg" in k["detected_by"] and "Killed process" in k["kmsg"], k
    assert out.count("OOM KILL") == 1, out
    assert "container victim" in out and "watch: 1 container OOM kill seen" in out, out
    print(f"watch: victim pid {k['pid']}, engine oom event {k.get('engine_latency_ms')} ms"
          " after the kernel's kill")  # fmt: skip


def test_cleanup_removes_the_container_of_a_killed_show(docker_run):
    assert docker_run.text("e/before.txt").strip(), "the killed show left no container to clean"
    assert docker_run.rc_of("e/cleanup.rc") == 0, docker_run.text("e/cleanup.out")
    assert "removed container beep-av-" in docker_run.text("e/cleanup.out")
    assert docker_run.text("e/after.left").strip() == "", docker_run.text("e/after.left")


# ---------------------------------------------------------------- rootless Podman, the normal user


def test_podman_rootless_shows_reach_the_finale(podman_run):
    assert "uid=1000(beep)" in podman_run.text("info/id.txt")
    doctor = podman_run.text("info/doctor.txt")
    assert "OK   container  podman: rootless podman" in doctor, doctor
    assert "FIX  container  docker: /var/run/docker.sock is there but refused" in doctor
    for name in ("show1", "show2"):
        kills = _check_container_show(podman_run, f"b/{name}", "podman")
        # Podman 4.3 rootless (conmon 2.1.6, runc): the kernel's kill, exit 137, but
        # State.OOMKilled false and no `oom` event; the card says so (measured, #14)
        print(f"podman {name}: OOMKilled {kills[0]['oom_killed']}, events"
              f" {kills[0]['engine_events']}")  # fmt: skip
    # Beep records what Podman says: its own CLI gives the same verdict on an OOM kill
    rc, cli_oom, cli_exit = podman_run.text("info/oom-cli.txt").split()[1:4]
    assert (rc, cli_exit) == ("137", "137"), podman_run.text("info/oom-cli.txt")
    assert kills[0]["oom_killed"] is (cli_oom == "true"), (kills[0], cli_oom)
    print(f"podman's own CLI: OOMKilled {cli_oom}, exit {cli_exit}")
    images = podman_run.text("b/show2.err")
    assert "image: importing" not in images  # the image of the first show, reused


def test_podman_rootless_restarts(podman_run):
    kills = _check_container_show(podman_run, "c/restarts", "podman", lives=3)
    print(f"podman back-off between lives: {[k.get('backoff_s') for k in kills[1:]]} s")
