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


# filler a machine's kernel log carries between reports (none of it opens an event)
OTHER = [
    "[ 5.1] usb 1-1: new high-speed USB device number 5 using xhci_hcd",
    "[ 5.2] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    '[ 5.3] audit: type=1400 audit(1700000000.123:45): apparmor="DENIED" operation="open"'
    ' profile="snap.x" name="/proc/1/environ" pid=1234 comm="x" requested_mask="r"',
    "[ 5.4] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "Dec 07 03:09:10 host kernel: wlp2s0: associated",
]


def test_the_fast_reader_reads_each_posted_report_as_the_line_reader_does():
    import io

    from beep_av.oomreport import file_events, read_lines

    for e in INDEX:
        data = (CORPUS / e["file"]).read_bytes()
        want = [ev.fields() for ev in events(read_lines(io.BytesIO(data)))]
        assert [ev.fields() for ev in file_events(io.BytesIO(data))] == want, e["file"]


@pytest.mark.parametrize("block", [61, 4096, 64 * 1024])
def test_the_fast_reader_finds_every_kill_in_a_big_log(block):
    """Past its head, file_events reads only near trigger and kill lines (see
    oomreport._next_opening). The whole corpus between other messages, cut into blocks of any
    size, with no head at all: every kill the line reader finds is found, and every
    report that has its trigger line is read whole, the same."""
    import io

    from beep_av.oomreport import file_events, read_lines

    parts = []
    for i, e in enumerate(INDEX):
        parts += OTHER * (1 + i % 7)
        # a blank line around each paste: its unprefixed lines are not joined to ours
        parts += ["", (CORPUS / e["file"]).read_text(encoding="utf-8", errors="replace"), ""]
    data = "\n".join(parts).encode()
    want = [ev.fields() for ev in events(read_lines(io.BytesIO(data)))]
    got = [ev.fields() for ev in file_events(io.BytesIO(data), block=block, head=0)]
    assert [x["killed"] for x in got] == [x["killed"] for x in want]
    assert [x["victim"] for x in got] == [x["victim"] for x in want]
    whole = [(w, g) for w, g in zip(want, got, strict=True) if w["trigger"] is not None]
    assert len(whole) >= 20
    for w, g in whole:
        assert g == w
