"""The container stage's host-side contract (no engine here): bad input exits 2 and
creates nothing, no engine exits 3 with the fix, the Pod manifest, the hog's image
context, doctor's engine lines, the card and the kill record's engine fields, and
cleanup's refusal of containers that are not ours. The engines themselves run in the
guest (tests/test_guest_containers.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from beep_av import engines
from beep_av.container_watch import match_kmsg, summary_lines, watch_kill
from beep_av.model import KillRecord, KmsgKill, Phase, ShowState
from beep_av.recording import kill_fields
from beep_av.stages.cleanup import parse_container_value
from beep_av.stages.container import limit_cgroup
from beep_av.summary import card_lines, engine_verdict, victim_card
from tests.conftest import beep

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "XDG_RUNTIME_DIR": "/nonexistent"}


def _no_engine_here() -> bool:
    return not any(os.path.exists(s.path) for s in engines.candidate_sockets(env=NO_ENGINE))


BAD = [
    (["--stage", "container:nope"], "unknown engine 'nope'"),
    (["--stage", "container", "--restarts", "-1"], "--restarts"),
    (["--stage", "container", "--swap", "-1M"], "negative"),
    (["--stage", "container:docker", "--restarts", "11"], "0..10"),
    (["--stage", "cgroup", "--restarts", "2"], "--restarts goes with --stage container"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_container_input_exits_2_with_one_line_and_creates_nothing(args, needle, tmp_path):
    state = tmp_path / "state"  # a state dir of its own: nothing may appear in it
    env = {**NO_ENGINE, "BEEP_AV_STATE_DIR": str(state)}
    r = beep(*args, "--ram", "128M", "--output", "headless", "--audio", "off", env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beep-av: ") and needle in lines[0], r.stderr
    assert not state.exists() or not list(state.iterdir())


def test_show_on_a_machine_without_an_engine_exits_3_with_the_fix():
    if not _no_engine_here():
        pytest.skip("an engine socket exists on this machine")
    r = beep("show", "--stage", "container", "--ram", "128M", "--output", "headless",
             "--audio", "off", env=NO_ENGINE)  # fmt: skip
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "no container engine answers" in line and "systemctl start docker" in line
    assert "podman.socket" in line


def test_watch_containers_without_an_engine_exits_3_with_the_fix():
    if not _no_engine_here():
        pytest.skip("an engine socket exists on this machine")
    r = beep("watch", "--containers", "--output", "headless", "--audio", "off", env=NO_ENGINE)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no container engine answers" in lines[0], r.stderr
    assert "systemctl" in lines[0]


def test_watch_containers_and_cgroup_exclude_each_other():
    r = beep("watch", "--containers", "--cgroup", "/", "--output", "headless", "--audio", "off")
    assert r.returncode == 2 and "do not go together" in r.stderr


def test_doctor_names_both_engines_and_their_sockets():
    r = beep("doctor", env=NO_ENGINE)
    lines = [x for x in r.stdout.splitlines() if " container " in x]
    assert len(lines) == 2, r.stdout
    assert "docker:" in lines[0] and "/var/run/docker.sock" in lines[0]
    assert "podman:" in lines[1] and "podman.sock" in lines[1]
    if _no_engine_here():
        assert all(x.startswith("--") and "no socket" in x for x in lines), lines


def test_doctor_says_a_socket_it_may_not_use_is_refused(tmp_path, monkeypatch):
    import socket

    path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        assert engines.socket_access(str(path)) == (True, "")
        os.chmod(path, 0)
        if os.geteuid() != 0:
            ok, why = engines.socket_access(str(path))
            assert ok is False and "permission denied" in why
        assert engines.socket_access(str(tmp_path / "none.sock"))[0] is None
    finally:
        s.close()


def test_candidate_sockets_put_the_users_own_first():
    socks = engines.candidate_sockets(env={"XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000)
    paths = [s.path for s in socks]
    assert paths.index("/run/user/1000/podman/podman.sock") < paths.index("/run/podman/podman.sock")
    assert [s.path for s in engines.candidate_sockets("podman", env={}, uid=0)] == [
        "/run/podman/podman.sock"
    ]


def test_manifest_is_a_pod_with_a_memory_limit_and_a_restart_policy():
    r = beep("manifest", "--ram", "192M", "--restarts", "3")
    assert r.returncode == 0, r.stderr
    y = r.stdout
    for needle in ("apiVersion: v1", "kind: Pod", "restartPolicy: OnFailure", "limits:",
                   "memory: 192Mi", f"image: {engines.image_tag()}", '"--report-fd", "1"',
                   "/hog/entry.py"):  # fmt: skip
        assert needle in y, y
    assert y.index("limits:") < y.index("memory: 192Mi", y.index("limits:"))
    # no YAML parser among the dependencies: the structure, by its indentation
    body = [x for x in y.splitlines() if x and not x.startswith("#")]
    assert body[0] == "apiVersion: v1"
    assert all((len(x) - len(x.lstrip())) % 2 == 0 for x in body), body
    assert "      resources:" in body and "        limits:" in body
    never = beep("manifest").stdout
    assert "restartPolicy: Never" in never and "memory: 256Mi" in never
    assert beep("manifest", "--ram", "-1M").returncode == 2


# ---------------------------------------------------------------- the hog's image


@pytest.fixture(scope="module")
def context_tar() -> bytes:
    return engines.build_context()


def test_image_context_holds_python_its_libraries_and_the_hog(context_tar):
    with tarfile.open(fileobj=io.BytesIO(context_tar)) as tar:
        names = set(tar.getnames())
        entry = tar.extractfile("hog/entry.py").read().decode()
    exe = os.path.realpath(__import__("sys").executable).lstrip("/")
    assert exe in names
    assert "hog/beep_av/hog.py" in names and "hog/beep_av/__init__.py" in names
    # hog.py stands alone: no other module of beep_av goes into the image
    assert {n for n in names if n.startswith("hog/beep_av/")} == {
        "hog/beep_av/hog.py",
        "hog/beep_av/__init__.py",
    }
    assert any(n.endswith("/libc.so.6") for n in names)
    assert any("ld-linux" in n for n in names)
    assert any(n.endswith("/os.py") for n in names)  # how python finds its prefix
    assert {"tmp", "var/tmp", "proc"} <= names
    assert "beep_av.hog" in entry and "start" in entry
    # nothing of the show itself: no pygame, no sounddevice, no Docker SDK
    assert not any(n.startswith(("hog/pygame", "hog/sounddevice", "hog/docker")) for n in names)
    assert not any("/tests/" in n for n in names)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_the_image_root_runs_the_hog_in_a_chroot(context_tar, tmp_path):
    """Without an engine: the image's files alone run the hog (chroot, own /proc)."""
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(context_tar)) as tar:
        tar.extractall(root)
    py = os.path.realpath(__import__("sys").executable)
    script = (
        f"mount -t proc proc {root}/proc && exec timeout 3 chroot {root} {py} -S /hog/entry.py"
        " --rate 4194304 --cache 1048576 --cache-dir /var/tmp --report-fd 1 --parent 0"
    )
    p = subprocess.run(["unshare", "--mount", "--pid", "--fork", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    reports = [int(x) for x in p.stdout.split() if x.isdigit()]
    assert reports and max(reports) > 1 << 20, (p.returncode, p.stdout[-200:], p.stderr[-800:])


# ---------------------------------------------------------------- records and cards


def _kill(**engine) -> KillRecord:
    e = {"engine": "docker", "container": "beep-av-1-0", "image": "beep-av-hog:0.1.0",
         "oom_killed": True, "exit_code": 137, "restart_count": 0, "engine_latency_ms": 12.5,
         "engine_events": ["oom", "die"], "restarts_max": 0}  # fmt: skip
    e.update(engine)
    return KillRecord(pid=4242, name="python3", exit=137, signal=9, oom_kill_count=1,
                      kmsg="Memory cgroup out of memory: Killed process 4242 (python3)",
                      anon_rss_kib=131072, detected_by=("exit", "oom_kill", "kmsg"),
                      latency_ms=1.0, t=5.0, engine=e)  # fmt: skip


def test_card_says_what_the_kernel_did_and_what_the_engine_says():
    k = _kill()
    assert engine_verdict(k) == (
        "the kernel killed pid 4242 (python3); the engine says OOMKilled, exit 137"
    )
    state = ShowState(phase=Phase.FINALE, kill=k, stage="container")
    lines = card_lines(state)
    assert lines[0] == engine_verdict(k)
    assert any("12.5 ms after the kernel's kill" in x for x in lines)
    assert any(x.startswith("Kubernetes: OOMKilled") for x in lines)
    assert "OOM KILL" in victim_card(k, "container")


def test_card_of_a_restart_names_the_count_and_the_back_off_in_french():
    k = _kill(restart_count=2, restarts_max=2, backoff_s=0.41)
    lines = card_lines(ShowState(phase=Phase.FINALE, kill=k, stage="container", captions="fr"))
    k8s = next(x for x in lines if x.startswith("Kubernetes:"))
    assert "RESTARTS 2" in k8s and "CrashLoopBackOff" in k8s and "redémarr" in k8s
    assert any("restarted 0.41 s after its death" in x for x in lines)


def test_card_of_an_engine_that_did_not_say_oomkilled():
    k = _kill(oom_killed=False, engine_events=["die"], engine_latency_ms=None)
    lines = card_lines(ShowState(phase=Phase.FINALE, kill=k, stage="container"))
    assert "the engine says not OOMKilled, exit 137" in lines[0]
    k8s = next(x for x in lines if x.startswith("Kubernetes:"))
    assert "OOMKilled" not in k8s.replace("did not say OOMKilled", "") and "Error" in k8s
    assert "status      exit 137 (SIGKILL)" in victim_card(k, "container")


def test_card_never_guesses_the_engine_latency():
    k = _kill(engine_latency_ms=None, engine_events=["die"], oom_killed=None, exit_code=None)
    lines = card_lines(ShowState(phase=Phase.FINALE, kill=k, stage="container"))
    assert "the engine says nothing about an OOM kill, exit unknown" in lines[0]
    assert "the engine sent no oom event" in lines


def test_kill_line_carries_the_engine_fields_and_stays_readable():
    fields = kill_fields(_kill(backoff_s=0.2))
    assert fields["oom_killed"] is True and fields["engine"] == "docker"
    assert fields["exit_code"] == 137 and fields["backoff_s"] == 0.2
    assert fields["detected_by"] == ["exit", "oom_kill", "kmsg"]  # the kernel's own fields kept
    json.dumps(fields)


def test_watch_matches_the_kernel_record_by_the_containers_cgroup():
    cid = "ab" * 32
    other = KmsgKill(pid=1, name="x", anon_rss_kib=1, cgroup_oom=True,
                     task_memcg="/system.slice/docker-" + "cd" * 32 + ".scope")  # fmt: skip
    mine = KmsgKill(pid=77, name="python3", anon_rss_kib=65536, cgroup_oom=True,
                    task_memcg=f"/system.slice/docker-{cid}.scope", kernel_t=1.0, seen_t=1.002,
                    text="Memory cgroup out of memory: Killed process 77 (python3)")  # fmt: skip
    assert match_kmsg([other, mine], cid) is mine
    assert match_kmsg([other], cid) is None
    # the oom-kill: line names the cgroup; the Killed process record after it, anon-rss
    scope = replace(mine, anon_rss_kib=None, text="oom-kill:constraint=CONSTRAINT_MEMCG")
    full = replace(mine, task_memcg=None, kernel_t=None)
    got = match_kmsg([scope, other, full], cid)
    assert got.anon_rss_kib == 65536 and got.task_memcg == mine.task_memcg and got.kernel_t == 1.0
    die = {"attrs": {"exitCode": "137", "name": "victim", "image": "img"}, "t": 100.0}
    oom = {"t": 100.001}
    k = watch_kill(die, oom, die["attrs"], None, mine, "docker", 3.0, lambda e: e - 99.0)
    assert (k.pid, k.exit, k.engine["container"], k.engine["oom_killed"]) == (
        77,
        137,
        "victim",
        True,
    )
    assert k.engine["engine_latency_ms"] == pytest.approx(1.0)
    lines = summary_lines([k], 10.0, "docker")
    assert "container victim" in lines[0] and "exit 137" in lines[0] and "OOMKilled" in lines[0]
    assert lines[-1].startswith("watch: 1 container OOM kill seen")


def test_limit_cgroup_walks_up_to_the_limited_cgroup(tmp_path):
    scope = tmp_path / "user.slice" / "libpod-x.scope"
    (scope / "container").mkdir(parents=True)
    (scope / "memory.max").write_text("134217728\n")
    (scope / "container" / "memory.max").write_text("max\n")
    got = limit_cgroup(str(tmp_path), "/user.slice/libpod-x.scope/container", 134217728)
    assert got == str(scope)


def test_cleanup_refuses_container_records_that_are_not_ours(tmp_path):
    from beep_av.stages.cleanup import StateFile, run_cleanup

    assert parse_container_value("docker|unix:///x.sock|beep-av-1-0") == (
        "docker", "unix:///x.sock", "beep-av-1-0")  # fmt: skip
    assert parse_container_value("docker|unix:///x.sock|victim") is None
    d = tmp_path / "state"
    sf = StateFile(d, show_pid=2**22 + 12345)  # a pid that is not running
    sf.ensure()
    os.chmod(d, 0o700)
    sf.record("container", "docker|unix:///x.sock|victim")
    sf.record("container", "docker|tcp://10.0.0.1:2375|beep-av-1-0")
    sf.record("container", "docker|unix:///nonexistent/d.sock|beep-av-1-1")
    out: list[str] = []
    r = run_cleanup(out.append, directory=d)
    assert len(r.refused) == 2 and any("unreadable" in x for x in r.refused)
    assert any("not a local socket" in x for x in r.refused)
    # an engine that does not answer: kept for a retry, never forgotten
    assert len(r.kept) == 1 and "beep-av-1-1" in r.kept[0], (r.kept, out)


def test_captions_have_the_kubernetes_words_in_both_languages():
    from beep_av.video.captions import CONTAINER_KEYS, load_captions

    for lang in ("en", "fr"):
        caps = load_captions(lang)
        assert all(caps.get(k) for k in CONTAINER_KEYS), lang
        assert "OOMKilled" in caps["container_oomkilled"]
        assert "{n}" in caps["container_restarts"]
        assert "CrashLoopBackOff" in caps["container_crashloop"]
    assert Path(engines.__file__).exists()


def test_container_driver_commands_say_what_they_do():
    from beep_av.stages.container import ContainerDriver

    class FakeStage:
        kind, ram_limit, swap_limit, cache_bytes, paused = "container", 128 << 20, 0, 0, False
        calls: list[str] = []

        def pause(self):
            self.paused = True
            self.calls.append("pause")

        def resume(self):
            self.paused = False
            self.calls.append("resume")

        def release(self):
            self.calls.append("release")

    stage = FakeStage()
    d = ContainerDriver(stage, ShowState(stage="container"), hz=50, story_cfg=object())
    assert d.command("toggle_pause").startswith("paused") and d.paused
    assert d.command("toggle_pause") == "" and not d.paused
    assert "fixed" in d.command("rate_up") and "fixed" in d.command("rate_down")
    assert "removed" in d.command("release")
    assert d.command("nonsense") is None
    d.close()
    assert stage.calls == ["pause", "resume", "release", "release"]
    assert d.kills() == []


def test_a_container_recording_replays_with_the_engines_verdict():
    from beep_av.stages.replay import kill_record

    line = {"type": "kill", "t": 5.0, **kill_fields(_kill(restart_count=1, backoff_s=0.5))}
    k = kill_record(line)
    assert k.engine["oom_killed"] is True and k.engine["backoff_s"] == 0.5
    assert k.engine["container"] == "beep-av-1-0"
    assert kill_record({"type": "kill", "t": 1.0, "pid": 3}).engine is None  # not a container's
