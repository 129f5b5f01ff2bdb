"""Real OOM reports other people posted (tests/fixtures/oom, index.json says where each
came from and what it holds), read by the parser as they were pasted: kernels 3.7 to
6.12, dmesg, dmesg -T in Japanese and French, journalctl (a Russian month), syslog, a
hypervisor's log, mails wrapped by their clients, terminal wraps, rate-limited kills,
memory.oom.group, no killable processes, sacrifice child."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beep_av.oomreport import events

CORPUS = Path(__file__).parent / "fixtures" / "oom"
INDEX = json.loads((CORPUS / "index.json").read_text())


def test_the_corpus_is_real_and_says_where_each_report_came_from():
    assert len(INDEX) >= 30
    for e in INDEX:
        assert e["source"].startswith("http") and e["where"], e["file"]
        assert (CORPUS / e["file"]).is_file() and e["events"], e["file"]


def _seen(ev) -> dict:
    v = ev.victim
    return {
        "victim_pid": v.pid if v else None,
        "victim_comm": v.name if v else None,
        "anon_rss_kib": v.anon_rss_kib if v else None,
        "trigger_comm": ev.trigger.name if ev.trigger else None,
        "cgroup_oom": ev.cgroup_oom,
        "candidates": len(ev.candidates) if ev.candidates is not None else None,
        "killed_pids": [x.pid for x in ev.victims if x.killed],
    }


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_each_posted_report_is_read_right(entry):
    text = (CORPUS / entry["file"]).read_text(encoding="utf-8", errors="replace")
    got = [_seen(ev) for ev in events(text.splitlines())]
    assert got == entry["events"]


def test_the_ranking_of_a_posted_table_is_the_kernels():
    """Where a posted event has its task table and its victim, the kernel's points
    (computed here as oom_badness does) rank the victim first, or say why not."""
    ranked = 0
    for e in INDEX:
        text = (CORPUS / e["file"]).read_text(encoding="utf-8", errors="replace")
        for ev in events(text.splitlines()):
            if not ev.candidates or ev.chosen is None:
                continue
            if any(c.pid == ev.chosen.pid for c in ev.candidates):
                if ev.victim_rank is not None:
                    ranked += 1
                    assert ev.victim_rank == 1, (e["file"], ev.fields()["candidates"])
    assert ranked >= 5
