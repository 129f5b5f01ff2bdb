"""`beep-av explain`: any kernel log in, every OOM event explained out (card, JSON
Lines, a picture); the exit codes and bad input of the command-line contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import beep
from tests.test_show_real import real_stage  # noqa: F401 - the fixture

LOCAL = Path(__file__).parent / "fixtures" / "oom-local"
THREE = LOCAL / "three-tasks-6.18-v1.log"


def test_the_card_says_who_why_who_asked_and_the_limit():
    r = beep("explain", str(THREE))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith("OOM event 1 at 1455.481 s (a memory cgroup)")
    assert "killed      pid 12917 (python), anon-rss 125 MiB" in out
    assert (
        "why         most points of 3: python (12917) 98,500 — python (12923) had 99% of that"
        in out
    )
    assert "asked       python (pid 12923) asked for the page that tipped it" in out
    assert any(x.startswith("under       the limit of /process_api/") for x in out)


def test_json_lines_one_object_per_event_from_stdin():
    text = "".join(
        (LOCAL / n).read_text() for n in ("story-6.18-v1.log", "three-tasks-6.18-v1.log")
    )
    r = beep("explain", "-", "--json", input=text)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["victim"]["pid"] for o in objs] == [14066, 12917]
    o = objs[1]
    assert o["victim"] == {"pid": 12917, "name": "python", "anon_rss_kib": 127616}
    assert o["trigger"]["name"] == "python" and o["trigger"]["pid"] == 12923
    assert o["cgroup_oom"] is True and o["constraint"] == "CONSTRAINT_MEMCG"
    assert o["victim_rank"] == 1 and len(o["candidates"]) == 3
    assert {
        "pid",
        "name",
        "rss_pages",
        "swapents",
        "pgtables_bytes",
        "oom_score_adj",
        "points",
    } <= set(o["candidates"][0])


def test_the_picture_marks_the_victim(tmp_path):
    import pygame

    out = tmp_path / "why.png"
    r = beep("explain", str(THREE), "-o", str(out))
    assert r.returncode == 0, r.stderr
    surf = pygame.image.load(str(out))
    from beep_av.report import KILL_COLOUR

    px = pygame.surfarray.array3d(surf).reshape(-1, 3)
    kill = (px == KILL_COLOUR).all(axis=1).sum()
    assert kill > 20 * 200  # the victim's bar, in the kill colour
    assert [p.name for p in tmp_path.iterdir()] == ["why.png"]


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["/nonexistent/kern.log"], 2, "cannot read /nonexistent/kern.log"),
        (["/"], 2, "is a directory"),
        ([str(LOCAL / "missing-dir" / "x")], 2, "cannot read"),
        ([str(THREE), "-o", "/nonexistent-dir/x.png"], 2, "-o /nonexistent-dir/x.png"),
    ],
)
def test_bad_input_is_one_line_and_its_exit_code(args, code, needle):
    r = beep("explain", *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    "data",
    [b"", b"hello\nworld\n", bytes(range(256)) * 4096, b"\x00" * 100000, b"A" * (8 << 20)],
    ids=["empty", "text", "binary", "nuls", "8MiB-one-line"],
)
def test_no_oom_event_is_exit_1_with_one_line(data):
    r = beep("explain", "-", input=data.decode("latin-1"))
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == "beep-av: explain: no OOM event in stdin"


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.usefixtures("real_stage")
def test_explain_of_the_kernel_log_after_a_real_show_names_the_hog(tmp_path):
    """The kernel's own log, read back after a real show (dmesg), explained: the hog the
    show's kill record names, with the same pid and anon-rss, is the victim, with the
    most points of the kernel's candidates."""
    import subprocess

    from tests.test_show_real import QUIET

    rec = tmp_path / "r.jsonl"
    r = beep("show", "--ram", "160M", "--swap", "64M", "--cache", "16M", "--rate", "128M/s",
             *QUIET, "--record", str(rec), timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (kill,) = [x for x in map(json.loads, rec.read_text().splitlines()) if x["type"] == "kill"]
    log = subprocess.run(["dmesg"], capture_output=True, check=True).stdout
    r = beep("explain", "-", "--json", input=log.decode("utf-8", "replace"))
    assert r.returncode == 0, r.stderr
    ours = [
        o
        for o in map(json.loads, r.stdout.splitlines())
        if (o["victim"] or {}).get("pid") == kill["pid"]
    ]
    assert len(ours) == 1, "the show's kill is one event of the kernel's log"
    o = ours[0]
    assert o["victim"]["anon_rss_kib"] == kill["anon_rss_kib"]
    assert o["cgroup_oom"] and o["trigger"] is not None and o["victim_rank"] == 1
    # the same points as the show's own kill record (the same report, read live)
    live = {c["pid"]: c["points"] for c in kill["candidates"]}
    assert {c["pid"]: c["points"] for c in o["candidates"]} == live, (o["candidates"], live)
    assert o["trigger"] == kill["trigger"] and o["victim_rank"] == kill["victim_rank"]
