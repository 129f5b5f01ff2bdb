"""procfs parsers: real text captured on this machine (tests/fixtures/procfs), hand-made
v2 text (*.synthetic.txt: this machine has no v2 memory controller), hostile input, and
property tests that nothing but ParseError ever escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beep_av import procfs
from beep_av.procfs import ParseError

FIX = Path(__file__).resolve().parent / "fixtures" / "procfs"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# ---------------------------------------------------------------- real fixtures


def test_meminfo_real():
    m = procfs.parse_meminfo(fixture("meminfo.txt"))
    assert m.MemTotal_bytes == 24684096 * 1024
    assert m.MemAvailable_bytes is not None and 0 < m.MemAvailable_bytes <= m.MemTotal_bytes
    assert m.Cached_bytes % 1024 == 0 and m.Cached_bytes > 0
    assert m.SwapTotal_bytes == 0 and m.SwapFree_bytes == 0


def test_vmstat_real():
    v = procfs.parse_vmstat(fixture("vmstat.txt"))
    assert v.oom_kill == 1
    assert v.pswpin == 0 and v.pswpout == 0
    assert v.workingset_refault_file == 48440
    assert set(procfs.PGSCAN_KINDS) <= set(v.pgscan)
    assert v.pgscan["pgscan_file"] == 21
    assert v.pgscan_total == sum(v.pgscan[k] for k in procfs.PGSCAN_KINDS)


def test_psi_real():
    assert procfs.parse_psi(fixture("pressure_memory.txt")) == procfs.Psi(0.0, 1351, 0.0, 913)
    cpu = procfs.parse_psi(fixture("pressure_cpu.txt"))
    assert cpu.some_avg10 == 1.09 and cpu.some_total_us == 4222913 and cpu.full_total_us == 0
    assert procfs.psi_some_total(fixture("pressure_memory.txt")) == 1351


def test_v1_memory_stat_real():
    s = procfs.parse_v1_memory_stat(fixture("v1_memory_stat.txt"))
    # the hierarchical total_* values win over the local ones
    assert s.cache == 21463040 and s.rss == 1740800 and s.swap == 0
    after = procfs.parse_v1_memory_stat(fixture("v1_memory_stat_after_kill.txt"))
    assert (after.rss, after.cache, after.shmem) == (0, 16384, 0)  # the killed hog is gone


def test_v1_oom_control_and_counters_real():
    assert procfs.parse_v1_oom_control(fixture("v1_oom_control.txt")) == (0, 0, 0)
    assert procfs.parse_v1_oom_control(fixture("v1_oom_control_after_kill.txt")).oom_kill == 1
    assert procfs.parse_int(fixture("v1_usage_in_bytes.txt")) > 0
    assert procfs.parse_int(fixture("v1_memsw_usage_in_bytes.txt")) > 0


def test_v2_files():
    s = procfs.parse_v2_memory_stat(fixture("v2_memory_stat.synthetic.txt"))
    assert (s.anon, s.file, s.file_mapped) == (104857600, 33554432, 4194304)
    e = procfs.parse_v2_memory_events(fixture("v2_memory_events.synthetic.txt"))
    assert (e.max, e.oom, e.oom_kill, e.oom_group_kill) == (312, 1, 1, 0)
    # oom_group_kill arrived in 5.17
    assert procfs.parse_v2_memory_events("low 0\nhigh 0\nmax 0\noom 0\noom_kill 2\n").oom_kill == 2


def test_cgroup_mem_common():
    v1 = procfs.parse_v1_memory_stat(fixture("v1_memory_stat.txt"))
    assert procfs.cgroup_mem_v1(v1, 99) == procfs.CgroupMem(1740800, 21463040, 0, 99)
    v2 = procfs.parse_v2_memory_stat(fixture("v2_memory_stat.synthetic.txt"))
    assert procfs.cgroup_mem_v2(v2, 7, 5) == procfs.CgroupMem(104857600, 33554432, 5, 7)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max\n", None),
        ("9223372036854771712\n", None),  # v1 unlimited
        ("268435456\n", 268435456),
        ("0", 0),
    ],
)
def test_parse_limit(text, expected):
    assert procfs.parse_limit(text) == expected


def test_pick_fields_matches_full_parse():
    text = fixture("v1_memory_stat.txt")
    full = procfs.parse_keyed(text)
    keys = ("total_rss", "total_cache", "total_swap", "rss", "cache", "swap", "nope")
    got = procfs.pick_fields(text, keys)
    assert got == {k: full[k] for k in keys if k in full}
    # "rss " must not match inside "total_rss " when "rss" comes later
    assert procfs.pick_fields("total_rss 5\nrss 7\n", ("rss",)) == {"rss": 7}
    assert procfs.pick_fields("total_rss 5\n", ("rss",)) == {}


# ---------------------------------------------------------------- mountinfo


def test_mountinfo_real():
    mounts = procfs.parse_mountinfo(fixture("mountinfo.txt"))
    assert len(mounts) == 19
    mem = procfs.mount_of(mounts, "/sys/fs/cgroup/memory/a/beep-av-1-0")
    assert mem and (mem.fstype, mem.mount_point, mem.super_options) == (
        "cgroup",
        "/sys/fs/cgroup/memory",
        ("rw", "memory"),
    )
    assert procfs.mount_of(mounts, "/sys/fs/cgroup/unified/x").fstype == "cgroup2"
    # the tmpfs that holds the cgroup mount points, not a cgroup itself
    assert procfs.mount_of(mounts, "/sys/fs/cgroup/beep-av-x").fstype == "tmpfs"
    assert procfs.mount_of(mounts, "/sys/fs/cgroup/memoryx").fstype == "tmpfs"
    assert procfs.mount_of(mounts, "/tmp/x").mount_point == "/"
    assert procfs.mount_of(mounts, "/").fstype == "ext4"


def test_mountinfo_escapes_optional_fields_and_stacking():
    text = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:5 / /mnt/a\\040b rw shared:1 master:2 - tmpfs my\\040src rw,size=1k\n"
        "3 1 0:6 /sub /mnt/a\\040b rw - cgroup2 cgroup2 rw,nsdelegate\n"
        "4 1 0:7 / /short rw\n"  # no separator: skipped
        "x 1 0:7 / /bad rw - tmpfs t rw\n"  # bad id: skipped
    )
    mounts = procfs.parse_mountinfo(text)
    assert [m.mount_id for m in mounts] == [1, 2, 3]
    assert mounts[1].mount_point == "/mnt/a b" and mounts[1].source == "my src"
    assert mounts[2].root == "/sub" and mounts[2].super_options == ("rw", "nsdelegate")
    # the later mount on the same point is on top
    assert procfs.mount_of(mounts, "/mnt/a b/c").mount_id == 3
    assert procfs.mount_of(mounts, "/mnt/a bc").mount_id == 1
    assert procfs.parse_mountinfo("") == []
    with pytest.raises(ParseError):
        procfs.parse_mountinfo(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- kmsg


def kills_in(name: str):
    out = []
    for line in fixture(name).splitlines():
        rec = procfs.parse_kmsg_record(line)
        if rec is None:
            continue
        k = procfs.parse_oom_kill(rec.message, rec.timestamp_us)
        if k:
            out.append(k)
    return out


@pytest.mark.parametrize(
    "name, pid, comm, anon_kib, cgroup_oom",
    [
        ("kmsg_cgroup_oom.txt", 6972, "python3", 6784, True),
        ("kmsg_cgroup_oom_hostile_comm.txt", 7155, "a) b (c", 65024, True),
        ("kmsg_global_oom.synthetic.txt", 4242, "beep-hog", 3911856, False),
    ],
)
def test_kmsg_oom_records(name, pid, comm, anon_kib, cgroup_oom):
    early, killed = kills_in(name)  # the oom-kill: line comes first, then Killed process
    assert early.text.startswith("oom-kill:") and early.anon_rss_kib is None
    assert (early.pid, early.name, early.cgroup_oom) == (pid, comm, cgroup_oom)
    assert (killed.pid, killed.name, killed.anon_rss_kib, killed.cgroup_oom) == (
        pid,
        comm,
        anon_kib,
        cgroup_oom,
    )
    assert early.timestamp_us <= killed.timestamp_us


def test_kmsg_record_fields():
    r = procfs.parse_kmsg_record("3,430,359392920,-;hello\\x20world\\x5c")
    assert r == procfs.KmsgRecord(3, 0, 430, 359392920, "-", "hello world\\", ())
    r = procfs.parse_kmsg_record(
        "14,5,7,-,caller=T1;msg\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n"
    )
    assert (r.level, r.facility, r.message) == (6, 1, "msg")
    assert r.dict == (("SUBSYSTEM", "pci"), ("DEVICE", "+pci:0000:00:01.0"))


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "Memory cgroup out of memory: Killed process 12 (x) total-vm:1kB, anon-rss:2kB, file-rss:0kB",
            (12, "x", 2, True),
        ),
        (
            "Out of memory: Killed process 12 (a) total-vm:3kB) total-vm:1kB, anon-rss:9kB, x",
            (12, "a) total-vm:3kB", 9, False),
        ),
        (
            "Memory cgroup out of memory: Killed process 12 ((()) total-vm:1kB, anon-rss:2kB,",
            (12, "(()", 2, True),
        ),
        ("Killed process 99 (old kernel)", (99, "old kernel", None, False)),  # truncated / pre-4.x
        (
            "Out of memory (oom_kill_allocating_task): Killed process 5 (a b) total-vm:1kB, anon-rss:0kB,",
            (5, "a b", 0, False),
        ),
        (
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),task=a,b,pid=3,uid=0",
            (3, "a,b", None, True),
        ),
        ("oom-kill:constraint=CONSTRAINT_NONE,task=x,pid=,uid=0", None),
        ("Killed process abc (x)", None),
        ("Killed process 12 x", None),
        ("random line", None),
        ("", None),
        ("Memory cgroup stats for /x:", None),
    ],
)
def test_parse_oom_kill_table(message, expected):
    k = procfs.parse_oom_kill(message)
    if expected is None:
        assert k is None
        return
    assert (k.pid, k.name, k.anon_rss_kib, k.cgroup_oom) == expected


# ---------------------------------------------------------------- hostile input


HOSTILE = [
    "",
    "\n\n",
    "garbage",
    "MemTotal: lots kB",
    "MemTotal: 12 kB\nMemFree: 1",  # truncated: required fields missing
    "cache -5\nrss 3\n",
    "cache 1e9\nrss 3\n",
    "cache ９\nrss 3\n",  # a full-width digit: isdigit() says yes, we say no
    "cache 1 2\nrss 3\n",
    "cache " + "9" * 5000 + "\nrss 3\n",  # beyond Python's int-from-str limit
    "cache 99999999999999999999999\nrss 3\n",
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=",
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",  # no some line
    "oom_kill_disable 0\n",
    "low 0\nhigh 0\n",
    "1,2;",
    "a,b,c,d;msg",
    "1,2,3;msg",
    "-1,2,3,-;x",
    "3,4,5,-",
]

PARSERS = [
    procfs.parse_meminfo,
    procfs.parse_vmstat,
    procfs.parse_psi,
    procfs.psi_some_total,
    procfs.parse_v1_memory_stat,
    procfs.parse_v1_oom_control,
    procfs.parse_v2_memory_stat,
    procfs.parse_v2_memory_events,
    procfs.parse_int,
    procfs.parse_limit,
    procfs.parse_keyed,
    procfs.parse_kmsg_record,
    procfs.parse_oom_kill,
    lambda t: procfs.pick_fields(t, ("cache", "rss")),
]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("parse", PARSERS)
def test_hostile_input_parse_error_or_value(parse, text):
    try:
        parse(text)
    except ParseError as e:
        assert str(e)  # a clear message


@pytest.mark.parametrize(
    "parse, text",
    [
        (procfs.parse_meminfo, "MemTotal: 12 kB\nMemFree: 1"),
        (procfs.parse_meminfo, ""),
        (procfs.parse_v1_memory_stat, "cache 1 2\nrss 3\n"),
        (procfs.parse_v1_memory_stat, "cache " + "9" * 5000 + "\nrss 3\n"),
        (procfs.parse_v1_memory_stat, "rss 3\n"),
        (procfs.parse_psi, "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"),
        (procfs.parse_kmsg_record, "1,2;"),
        (procfs.parse_kmsg_record, "-1,2,3,-;x"),
        (procfs.parse_int, "12abc"),
        (procfs.parse_v2_memory_events, "low 0\nhigh 0\n"),
    ],
)
def test_hostile_input_raises_parse_error(parse, text):
    with pytest.raises(ParseError):
        parse(text)


def test_non_text_is_a_parse_error():
    for parse in PARSERS:
        with pytest.raises(ParseError):
            parse(None)  # type: ignore[arg-type]


def test_kmsg_non_records_are_none():
    assert procfs.parse_kmsg_record("") is None
    assert procfs.parse_kmsg_record(" SUBSYSTEM=pci") is None


# ---------------------------------------------------------------- properties

# Text made of the characters these files are made of, so the search reaches the
# interesting paths (digits, separators, keywords) rather than only random unicode.
_alphabet = st.sampled_from(
    list("0123456789 ,;:=()-\n\\xkBatolsmecr_")
    + [
        "total=",
        "kB",
        "Killed process ",
        ") total-vm:",
        "anon-rss:",
        "some avg10=",
        "oom-kill:constraint=",
        "cache ",
        "rss ",
    ]
)
_texts = st.one_of(st.text(max_size=200), st.lists(_alphabet, max_size=60).map("".join))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(text=_texts, which=st.integers(0, len(PARSERS) - 1))
def test_property_only_parse_error(text, which):
    try:
        PARSERS[which](text)
    except ParseError:
        pass


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    pid=st.integers(1, 4194304),
    comm=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=15
    ),
    anon=st.integers(0, 1 << 40),
)
def test_property_killed_process_roundtrip(pid, comm, anon):
    msg = f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:{anon + 5}kB, anon-rss:{anon}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0"
    k = procfs.parse_oom_kill(msg)
    assert (k.pid, k.name, k.anon_rss_kib) == (pid, comm, anon)
