"""The kernel's whole OOM report, parsed (beep_av/oomreport.py): real reports this
machine's kernel printed (tests/fixtures/oom-local, 6.18, cgroup v1 stages), the same text
as people paste it (dmesg -T, journalctl, syslog in another locale, raw kmsg records,
interleaved with other messages), and hostile input (binary junk, NULs, a line of 64 MiB
without a newline, an empty file)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from beep_av import oomreport
from beep_av.oomreport import OomParser, events, parse_kill_line, read_lines, strip_prefix

LOCAL = Path(__file__).parent / "fixtures" / "oom-local"


def local(name: str) -> list[str]:
    return (LOCAL / name).read_text().splitlines()


def one(lines) -> oomreport.OomEvent:
    got = list(events(lines))
    assert len(got) == 1, [e.fields()["victim"] for e in got]
    return got[0]


def test_a_story_kill_on_cgroup_v1():
    e = one(local("story-6.18-v1.log"))
    f = e.fields()
    assert f["victim"] == {"pid": 14066, "name": "python", "anon_rss_kib": 168712}
    assert f["trigger"]["name"] == "python" and f["trigger"]["pid"] == 14066
    assert f["trigger"]["gfp_mask"] == "0xcc0" and f["trigger"]["order"] == 0
    assert e.cgroup_oom and e.constraint == "CONSTRAINT_MEMCG"
    assert e.limits["memory"] == (163840, 163840) and e.limits["memory+swap"][1] == 262144
    assert e.totalpages == 262144 * 1024 // 4096  # memory+swap limit, in pages
    (c,) = e.candidates
    # the kernel's badness: rss + swapents + page-table pages + adj x totalpages/1000
    assert c.points == 47923 + 24544 + 679936 // 4096 + 1000 * (65536 // 1000)
    assert e.victim_rank == 1 and e.runner_up_share() is None  # no one else to weigh


def test_three_candidates_ranked_by_the_kernels_points():
    e = one(local("three-tasks-6.18-v1.log"))
    assert [c.pid for c in e.candidates] == [12917, 12921, 12923]
    assert [c.rss_anon for c in e.candidates] == [31904, 6098, 27126]
    order = [c.pid for c in e.ranked()]
    assert order[0] == e.victim.pid == 12917 and e.victim_rank == 1
    assert e.runner_up_share() == pytest.approx(e.ranked()[1].points / e.ranked()[0].points)
    assert 0.9 < e.runner_up_share() < 1.0  # a near thing, as the kernel saw it


def test_the_bystanders_report_has_two_candidates_and_the_victim_first():
    e = one(local("bystander-6.18-v1.log"))
    assert len(e.candidates) == 2 and e.victim_rank == 1
    assert e.victim.anon_rss_kib and e.trigger is not None


# ---------------------------------------------------------------- as people paste it


def _kernel_text(lines: list[str]) -> list[tuple[float, str]]:
    out = []
    for ln in lines:
        m = re.match(r"^\[\s*(\d+\.\d+)\] ?(.*)$", ln)
        out.append((float(m.group(1)), m.group(2)))
    return out


PASTES = {
    "bare": lambda t, s: s,
    "dmesg -T": lambda t, s: f"[Mon Dec  7 03:{int(t) % 60:02d}:10 2026] {s}",
    "journalctl": lambda t, s: f"Dec 07 03:09:10 stage-box kernel: {s}",
    "syslog de": lambda t, s: f"Dez  7 03:09:10 stage-box kernel: [{t:12.6f}] {s}",
    "iso": lambda t, s: f"2026-12-07T03:09:10.123456+01:00 stage-box kernel: {s}",
    "kmsg": lambda t, s: f"6,{int(t * 10)},{int(t * 1e6)},-;{s}",
    "priority": lambda t, s: f"<4>[{t:12.6f}] {s}",
}


@pytest.mark.parametrize("style", list(PASTES))
def test_the_same_report_read_from_any_log_style(style):
    real = one(local("story-6.18-v1.log")).fields()
    pasted = [PASTES[style](t, s) for t, s in _kernel_text(local("story-6.18-v1.log"))]
    got = one(pasted).fields()
    for key in ("victim", "trigger", "cgroup_oom", "constraint", "candidates", "victim_rank"):
        assert got[key] == real[key], key


def test_other_messages_between_the_lines_do_not_matter():
    lines = local("three-tasks-6.18-v1.log")
    noisy = []
    for i, ln in enumerate(lines):
        noisy.append(ln)
        if i % 3 == 0:
            noisy.append("[ 1455.1] usb 1-1: new high-speed USB device number 3 using xhci_hcd")
            noisy.append("Dec 07 03:09:10 box systemd[1]: Started session-3.scope (Web (Content)).")
    assert one(noisy).fields() == one(lines).fields()


def test_reports_one_after_another_are_separate_events():
    a, b = local("story-6.18-v1.log"), local("three-tasks-6.18-v1.log")
    got = list(events([*a, *b, *a]))
    assert [e.victim.pid for e in got] == [14066, 12917, 14066]


def test_a_rate_limited_kill_without_its_header_is_an_event_of_its_own():
    """The header is rate-limited (about 10 per 5 s); the Killed line is not."""
    lines = local("story-6.18-v1.log")
    kill = next(x for x in lines if "Killed process" in x)
    later = kill.replace("14066", "14099")
    got = list(events([*lines, later, later.replace("14099", "14100")]))
    assert [e.victim.pid for e in got] == [14066, 14099, 14100]
    assert got[1].trigger is None and got[1].candidates is None and got[1].cgroup_oom
    assert got[1].victim_rank is None and got[1].runner_up_share() is None  # never guessed


@pytest.mark.parametrize(
    "line, pid, name, anon, killed",
    [
        ("Out of memory: Killed process 4321 (Web Content) total-vm:2966316kB, anon-rss:"
         "1212580kB, file-rss:0kB, shmem-rss:6640kB, UID:1000 pgtables:5456kB oom_score_adj:167",
         4321, "Web Content", 1212580, True),
        ("Killed process 2592, UID 0, (mysqld) total-vm:2457588kB, anon-rss:1471904kB, "
         "file-rss:0kB", 2592, "mysqld", 1471904, True),
        ("Out of memory: Kill process 3165 (java) score 913 or sacrifice child", 3165, "java",
         None, False),
        ("Memory cgroup out of memory: Killed process 77 (a) b (c) total-vm:1kB, anon-rss:2kB,"
         " file-rss:0kB, shmem-rss:0kB", 77, "a) b (c", 2, True),
        ("Killed process 9 ([kworker/0:1]) total-vm:0kB, anon-rss:0kB, file-rss:0kB", 9,
         "[kworker/0:1]", 0, True),
    ],
)  # fmt: skip
def test_kill_lines_of_every_shape(line, pid, name, anon, killed):
    v = parse_kill_line(line)
    assert (v.pid, v.name, v.anon_rss_kib, v.killed) == (pid, name, anon, killed)


def test_sacrifice_child_names_the_child_that_was_killed():
    lines = [
        "[ 10.0] java invoked oom-killer: gfp_mask=0x201da, order=0, oom_score_adj=0",
        "[ 10.1] Out of memory: Kill process 3165 (java) score 913 or sacrifice child",
        "[ 10.2] Killed process 3170 (java-worker) total-vm:1kB, anon-rss:5000kB, file-rss:0kB",
    ]
    e = one(lines)
    assert e.victim.pid == 3170 and e.victim.anon_rss_kib == 5000
    assert [v.pid for v in e.victims] == [3165, 3170]
    assert not e.cgroup_oom and e.trigger.name == "java"


def test_an_old_table_with_nr_ptes_counts_page_table_pages():
    lines = [
        "[ 1.0] a.out invoked oom-killer: gfp_mask=0x280da, order=0, oom_score_adj=0",
        "[ 1.1] [ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name",
        "[ 1.2] [  500]     0   500    10000     2000      20       3        7             0 a.out",
        "[ 1.3] [  501]  1000   501    10000     1000      10       2        0          -1000 sshd",
        "[ 1.4] Out of memory: Kill process 500 (a.out) score 900 or sacrifice child",
        "[ 1.5] Killed process 500 (a.out) total-vm:40000kB, anon-rss:7000kB, file-rss:1000kB",
    ]
    e = one(lines)
    a, sshd = e.candidates
    assert a.pgtables_bytes == 23 * 4096 and a.points == 2000 + 7 + 23
    assert sshd.points is None  # oom_score_adj -1000: never chosen
    assert e.victim_rank == 1


def test_without_totalpages_an_adjusted_candidate_has_no_points():
    """A global OOM without its Mem-Info lines: adj 0 is exact, adj 500 is not guessed."""
    lines = [
        "x invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[    10]     0    10     1000      300        8192        0           500 y",
        "[    11]     0    11     1000      200        8192        0             0 x",
        "Out of memory: Killed process 11 (x) total-vm:4000kB, anon-rss:800kB, file-rss:0kB",
    ]
    e = one(lines)
    assert [c.points for c in e.candidates] == [None, 202]
    assert e.victim_rank == 1  # of those whose points are known
    e2 = one([*lines[:1], "1000 pages RAM", "Total swap = 0kB", *lines[1:]])
    assert e2.totalpages == 1000 and e2.candidates[0].points == 302 + 500 * 1


def test_a_group_kill_keeps_every_victim_and_no_killable_is_said():
    lines = [
        "a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:10kB, file-rss:0kB",
        "Tasks in /pod are going to be killed due to memory.oom.group set",
        "Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:10kB, file-rss:0kB",
        "Memory cgroup out of memory: Killed process 2 (b) total-vm:1kB, anon-rss:20kB, file-rss:0kB",
        "b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "Out of memory and no killable processes...",
    ]
    first, second = events(lines)
    assert first.fields()["killed"] == [1, 1, 2] and first.group == "/pod"
    assert first.victim.pid == 1
    assert second.no_killable and second.victim is None and second.fields()["victim"] is None


def test_a_v1_task_in_line_makes_it_a_cgroup_oom():
    e = one([
        "p invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0",
        "Task in /docker/abc killed as a result of limit of /docker/abc",
        "Killed process 5 (p) total-vm:1kB, anon-rss:3kB, file-rss:0kB",
    ])  # fmt: skip
    assert e.cgroup_oom and e.oom_memcg == "/docker/abc"


# ---------------------------------------------------------------- hostile input


def test_binary_junk_nuls_and_an_empty_file():
    junk = bytes(range(256)) * 64 + b"\x00\x00Killed process \x00 (x)\n\xff\xfe"
    assert list(events(read_lines(io.BytesIO(junk)))) == []
    assert list(events(read_lines(io.BytesIO(b"")))) == []
    text, _ = strip_prefix("[ 1.0] Killed process 7 (a\x00b) total-vm:1kB, anon-rss:1kB")
    assert "\x00" not in text


def test_a_huge_line_without_a_newline_is_cut_not_held():
    """64 MiB without a newline, then a real report: memory stays bounded by the chunk
    size, the line is cut at max_len and the report after it is still found."""
    import tracemalloc

    report = "\n".join(local("story-6.18-v1.log")).encode()

    class Huge(io.RawIOBase):
        def __init__(self) -> None:
            self.left = 64 << 20

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            if self.left > 0:
                k = min(n, self.left)
                self.left -= k
                return b"A" * k
            if self.left == 0:
                self.left = -1
                return b"\n" + report
            return b""

    tracemalloc.start()
    lines = read_lines(Huge(), max_len=4096, chunk=1 << 20)
    first = next(lines)
    got = list(events(lines))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(first) == 4096 and [e.victim.pid for e in got] == [14066]
    assert peak < 16 << 20, peak

    # explain's reader: the same, past its head and inside it
    for head in (0, oomreport.HEAD_BYTES):
        tracemalloc.start()
        got = list(oomreport.file_events(Huge(), max_len=4096, head=head))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert [e.victim.pid for e in got] == [14066]
        assert peak < 16 << 20, peak


def test_a_trigger_without_its_end_is_closed_and_memory_is_bounded():
    p = OomParser()
    p.feed("x invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0")
    done = []
    for i in range(oomreport.MAX_LINES_IN_EVENT + 5):
        done += p.feed(f"[{i}.0] some other message {i}")
    assert len(done) == 1 and done[0].victim is None and p.finish() == []
