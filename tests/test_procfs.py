"""procfs parsers, the ones Beep runs: real text captured on this machine
(tests/fixtures/procfs), hand-made v2 text (*.synthetic.txt: this machine has no v2
memory controller), tables of hostile input, and property tests: the sampler's fast
paths agree with a full parse of the same text, and nothing but ParseError ever escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beep_av import procfs
from beep_av.procfs import ParseError

FIX = Path(__file__).resolve().parent / "fixtures" / "procfs"
MAX = (1 << 64) - 1


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def raw(name: str) -> bytes:
    return (FIX / name).read_bytes()


def keyed(text: str) -> dict[str, int]:
    """The reference: a full parse of a `key value` file, every line split."""
    out = {}
    for line in text.splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


# ---------------------------------------------------------------- real fixtures


def test_meminfo_real():
    m = procfs.parse_meminfo(fixture("meminfo.txt"))
    assert m.MemTotal_bytes == 24684096 * 1024
    assert m.MemAvailable_bytes is not None and 0 < m.MemAvailable_bytes <= m.MemTotal_bytes
    assert m.Cached_bytes % 1024 == 0 and m.Cached_bytes > 0
    assert m.SwapTotal_bytes == 0 and m.SwapFree_bytes == 0
    # the sampler's fast path reads the same figures
    assert procfs.meminfo_use(raw("meminfo.txt")) == (
        m.AnonPages_bytes,
        m.Cached_bytes,
        0,
        m.MemTotal_bytes - m.MemAvailable_bytes,
    )
    assert procfs.meminfo_bytes(raw("meminfo.txt"), "SwapFree") == 0
    assert procfs.meminfo_bytes(raw("meminfo.txt"), "MemTotal") == m.MemTotal_bytes
    assert procfs.meminfo_bytes(raw("meminfo.txt"), "Nope") is None


def test_psi_real():
    assert procfs.psi_totals(raw("pressure_memory.txt")) == (1351, 913)
    assert procfs.psi_totals(raw("pressure_cpu.txt")) == (4222913, 0)


def test_v1_memory_stat_real():
    # the hierarchical total_* values win over the local ones
    assert procfs.v1_memory_use(raw("v1_memory_stat.txt")) == (1740800, 21463040, 0)
    after = procfs.v1_memory_use(raw("v1_memory_stat_after_kill.txt"))
    assert after == (0, 16384, 0)  # the killed hog is gone


def test_oom_counts_and_counters_real():
    assert procfs.oom_counts(raw("v1_oom_control.txt")) == (None, 0)
    assert procfs.oom_counts(raw("v1_oom_control_after_kill.txt")) == (None, 1)
    assert procfs.oom_counts(raw("v2_memory_events.synthetic.txt")) == (1, 1)
    assert procfs.oom_counts(raw("vmstat.txt")) == (None, 1)
    for name in ("v1_usage_in_bytes.txt", "v1_memsw_usage_in_bytes.txt"):
        assert procfs.parse_int(raw(name)) == procfs.parse_int(fixture(name)) > 0


def test_v2_memory_stat():
    assert procfs.v2_memory_use(raw("v2_memory_stat.synthetic.txt")) == (104857600, 33554432)


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
    full = keyed(text)
    keys = ("total_rss", "total_cache", "total_swap", "rss", "inactive_file", "nope")
    got = procfs.pick_fields(text, keys)
    assert got == {k: full[k] for k in keys if k in full}
    # "rss " must not match inside "total_rss " when "rss" comes later
    assert procfs.pick_fields("total_rss 5\nrss 7\n", ("rss",)) == {"rss": 7}
    assert procfs.pick_fields("total_rss 5\n", ("rss",)) == {}


# ---------------------------------------------------------------- the sampler's fast paths


@pytest.mark.parametrize(
    "text, want",
    [
        ("cache 1\nrss 2\nswap 3\ntotal_cache 4\ntotal_rss 5\ntotal_swap 6\n", (5, 4, 6)),
        ("cache 1\nrss 2\nswap 3\n", (2, 1, 3)),  # no hierarchy totals: the local values
        ("cache 1\nrss 2\ntotal_cache 4\ntotal_rss 5\n", (5, 4, 0)),  # no swap accounting
        ("rss 2\ncache 1", (2, 1, 0)),  # no final newline; first line is a key too
        ("total_rss 5\nrss 7\ncache 1\n", (5, 1, 0)),
        ("xtotal_rss 9\nrss 7\ncache 1\nrss_huge 3\n", (7, 1, 0)),  # keys start a line
        ("cache 1\nrss " + str(MAX) + "\n", (MAX, 1, 0)),
    ],
)
def test_v1_memory_use_table(text, want):
    assert procfs.v1_memory_use(text.encode()) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cache 1\n",  # no rss at all
        "rss 1\n",  # no cache
        "cache 1\nrss -2\n",
        "cache 1\nrss 2 3\n",
        "cache 1\nrss 0x10\n",
        "cache 1\nrss 1e9\n",
        "cache 1\nrss \n",
        "cache 1\nrss " + "9" * 21 + "\n",
        "cache 1\nrss " + str(MAX + 1) + "\n",
        "cache 1\nrss ９\n",
        "cache 1\ntotal_rss 2\r\n",
    ],
)
def test_v1_memory_use_refuses(text):
    with pytest.raises(ParseError):
        procfs.v1_memory_use(text.encode())


@pytest.mark.parametrize(
    "text, want",
    [
        ("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n", (5, None)),
        ("some avg10=1.00 avg60=0.00 avg300=0.00 total=5", (5, None)),
        ("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull total=7\n", (5, 7)),
        (
            "some total=0\nfull avg10=9.99 avg60=0.00 avg300=0.00 total=18446744073709551615\n",
            (0, MAX),
        ),  # fmt: skip
    ],
)
def test_psi_totals_table(text, want):
    assert procfs.psi_totals(text.encode()) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",  # no some line
        "some avg10=0.00 avg60=0.00 avg300=0.00\nfull total=5\n",  # some without total
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=\n",
        "some total=-1\n",
        "some total=12abc\n",
        "some total=5\nfull total=x\n",
        "some total=5\nfull avg10=0.00\n",
        " some total=5\n",
    ],
)
def test_psi_totals_refuses(text):
    with pytest.raises(ParseError):
        procfs.psi_totals(text.encode())


def test_oom_counts_table():
    assert procfs.oom_counts(b"under_oom 1\noom_kill_disable 0\n") == (None, None)
    assert procfs.oom_counts(b"oom_group_kill 3\noom 2\n") == (2, None)
    assert procfs.oom_counts(b"oom_kill 4") == (None, 4)
    with pytest.raises(ParseError):
        procfs.oom_counts(b"oom 1\noom_kill many\n")


def test_meminfo_use_table():
    base = "MemTotal: 100 kB\nMemFree: 10 kB\nCached: 5 kB\nSwapTotal: 8 kB\nSwapFree: 2 kB\n"
    # no MemAvailable (before 3.14): MemFree stands in; no AnonPages: 0
    assert procfs.meminfo_use(base.encode()) == (0, 5 << 10, 6 << 10, 90 << 10)
    with_avail = base + "MemAvailable:      40 kB\nAnonPages: 7 kB\n"
    assert procfs.meminfo_use(with_avail.encode()) == (7 << 10, 5 << 10, 6 << 10, 60 << 10)
    # SwapCached: is not Cached:
    assert (
        procfs.meminfo_use(base.replace("Cached", "SwapCached").encode() + b"Cached: 1 kB")[1]
        == 1024
    )
    for bad in (base.replace("SwapFree: 2 kB\n", ""), base.replace("5 kB", "5"),
                base.replace("5 kB", "five kB"), base.replace("5 kB", "5 MB")):  # fmt: skip
        with pytest.raises(ParseError):
            procfs.meminfo_use(bad.encode())


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


# ---------------------------------------------------------------- /proc/PID/cgroup, stat; /proc/swaps


@pytest.mark.parametrize(
    "text, want",
    [
        ("4:memory:/a/b\n0::/\n", ("/a/b", "/")),
        ("0::/user.slice/x.scope\n", (None, "/user.slice/x.scope")),
        ("3:cpu,memory:/m\n", ("/m", None)),
        ("9:name=systemd:/\n8:pids:/\n", (None, None)),
        ("", (None, None)),
        ("garbage\n::\n4:memory\n1:memoryless:/x\n", (None, None)),
        ("0::/weird:path:with:colons\n", (None, "/weird:path:with:colons")),
    ],
)
def test_parse_proc_cgroup(text, want):
    assert procfs.parse_proc_cgroup(text) == want


def test_proc_cgroup_real():
    got = procfs.parse_proc_cgroup(fixture("proc_cgroup_v1.txt"))
    assert got.memory == "/process_api/3d82a6bb696556df34d9b51ef3b1351c" and got.unified == "/"
    assert got.memcg == got.memory  # the kernel log names the v1 memory cgroup
    assert procfs.parse_proc_cgroup("0::/a.scope\n").memcg == "/a.scope"


def test_proc_stat_real():
    s = procfs.parse_proc_stat(fixture("proc_stat.txt"))
    assert (s.pid, s.comm, s.state, s.ppid, s.starttime) == (14564, "sh", "R", 14560, 70593)


@pytest.mark.parametrize("comm", ["x", "a b", ") S 1 2 3", "((", "x) (y", "", "ü"])
def test_proc_stat_hostile_comm(comm):
    rest = " ".join(["S", "77"] + ["0"] * 17 + ["123456", "9", "9"])
    s = procfs.parse_proc_stat(f"42 ({comm}) {rest}\n")
    assert (s.pid, s.comm, s.state, s.ppid, s.starttime) == (42, comm, "S", 77, 123456)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "42",
        "42 (x)",
        "42 (x) S 1 2",
        "x (y) S " + "1 " * 30,
        "42 (x) SS " + "1 " * 30,
        "42 (x) S -1 " + "1 " * 30,
        "42 x) S " + "1 " * 30,
    ],  # fmt: skip
)
def test_proc_stat_refuses(text):
    with pytest.raises(ParseError):
        procfs.parse_proc_stat(text)


def test_swaps_real_and_hostile():
    # a real swapfile in a dir with a space: the kernel writes it as \040
    (s,) = procfs.parse_swaps(fixture("swaps.txt"))
    assert s.filename.endswith("/swap file") and s.size_bytes == 16380 * 1024 and s.used_bytes == 0
    text = (
        "Filename\tType\tSize\tUsed\tPriority\n"
        "/var/tmp/a\\040b\\011c\\134d/swapfile file 131068 1024 -2\n"
        "/dev/broken partition notanumber 0 -3\n"
        "/dev/neg partition -5 0 -3\n"
        "short line\n"
    )
    assert procfs.parse_swaps(text) == [("/var/tmp/a b\tc\\d/swapfile", 131068 * 1024, 1024 * 1024)]
    assert procfs.parse_swaps("") == [] and procfs.parse_swaps(fixture("swaps.txt")[:40]) == []


def test_task_memcg():
    line = "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a/b c,task=x,pid=1,uid=0"
    assert procfs.task_memcg(line) == "/a/b c"
    assert procfs.task_memcg("Killed process 1 (x) ,task_memcg=/a,") is None


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
    "1 (x) S",
    "0::/a\n4:memory",
    "Filename\n/x file 1",
]


def _b(parse):
    """A parser of raw bytes, fed the text's UTF-8 (what a pread would hand over)."""

    def run(text):
        return parse(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)

    run.__name__ = parse.__name__
    return run


PARSERS = [
    procfs.parse_meminfo,
    procfs.parse_int,
    procfs.parse_limit,
    procfs.parse_kmsg_record,
    procfs.parse_oom_kill,
    procfs.task_memcg,
    procfs.parse_mountinfo,
    procfs.parse_proc_cgroup,
    procfs.parse_proc_stat,
    procfs.parse_nspid,
    procfs.parse_swaps,
    lambda t: procfs.pick_fields(t, ("cache", "rss")),
    _b(procfs.parse_int),
    _b(procfs.v1_memory_use),
    _b(procfs.v2_memory_use),
    _b(procfs.meminfo_use),
    _b(lambda r: procfs.meminfo_bytes(r, "SwapFree")),
    _b(procfs.psi_totals),
    _b(procfs.oom_counts),
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
        (_b(procfs.v1_memory_use), "cache 1 2\nrss 3\n"),
        (_b(procfs.v1_memory_use), "cache " + "9" * 5000 + "\nrss 3\n"),
        (_b(procfs.v1_memory_use), "rss 3\n"),
        (_b(procfs.psi_totals), "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"),
        (procfs.parse_kmsg_record, "1,2;"),
        (procfs.parse_kmsg_record, "-1,2,3,-;x"),
        (procfs.parse_int, "12abc"),
        (_b(procfs.parse_int), "12abc"),
        (_b(procfs.v2_memory_use), "anon 0\nfile_mapped 0\n"),
        (procfs.parse_proc_stat, "1 (x) S"),
    ],
)
def test_hostile_input_raises_parse_error(parse, text):
    with pytest.raises(ParseError):
        parse(text)


def test_wrong_type_is_a_parse_error():
    for parse in PARSERS:
        with pytest.raises(ParseError):
            parse(None)  # type: ignore[arg-type]
    # text where the sampler hands over bytes, and the other way round
    for parse in (procfs.v1_memory_use, procfs.psi_totals, procfs.oom_counts, procfs.meminfo_use):
        with pytest.raises(ParseError):
            parse("rss 1\ncache 2\n")
    with pytest.raises(ParseError):
        procfs.parse_meminfo(b"MemTotal: 1 kB\n")  # type: ignore[arg-type]


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
        "full ",
        "oom-kill:constraint=",
        "cache ",
        "rss ",
        "total_rss ",
        "oom_kill ",
        "MemTotal:",
        " kB\n",
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


_V1_KEYS = ["cache", "rss", "rss_huge", "swap", "mapped_file", "shmem"]
_counts = st.integers(0, MAX)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(_V1_KEYS + ["total_" + k for k in _V1_KEYS] + ["xrss", "anon"]), _counts
    ),
    data=st.data(),
)
def test_property_v1_memory_use_agrees_with_a_full_parse(fields, data):
    order = data.draw(st.permutations(list(fields)))
    text = "".join(f"{k} {fields[k]}\n" for k in order)
    d = keyed(text)
    anon = d.get("total_rss", d.get("rss"))
    cache = d.get("total_cache", d.get("cache"))
    if anon is None or cache is None:
        with pytest.raises(ParseError, match="missing"):
            procfs.v1_memory_use(text.encode())
        return
    swap = d.get("total_swap", d.get("swap", 0))
    assert procfs.v1_memory_use(text.encode()) == (anon, cache, swap)
    assert procfs.v1_memory_use(text.rstrip("\n").encode()) == (anon, cache, swap)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["anon", "file", "anon_thp", "file_mapped", "kernel", "xanon", "shmem"]),
        _counts,
    ),
    data=st.data(),
)
def test_property_v2_memory_use_and_oom_counts_agree_with_a_full_parse(fields, data):
    order = data.draw(st.permutations(list(fields)))
    text = "".join(f"{k} {fields[k]}\n" for k in order)
    if "anon" in fields and "file" in fields:
        assert procfs.v2_memory_use(text.encode()) == (fields["anon"], fields["file"])
    else:
        with pytest.raises(ParseError):
            procfs.v2_memory_use(text.encode())
    events = text.replace("anon", "oom").replace("file", "oom_kill")
    d = keyed(events)
    assert procfs.oom_counts(events.encode()) == (d.get("oom"), d.get("oom_kill"))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    some=st.tuples(st.floats(0, 100), _counts),
    full=st.none() | st.tuples(st.floats(0, 100), _counts),
)
def test_property_psi_totals(some, full):
    def line(kind, avg, total):
        return f"{kind} avg10={avg:.2f} avg60={avg:.2f} avg300=0.00 total={total}\n"

    text = line("some", *some) + (line("full", *full) if full else "")
    assert procfs.psi_totals(text.encode()) == (some[1], full[1] if full else None)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["MemFree", "MemAvailable", "Cached", "SwapCached", "AnonPages", "Buffers", "Shmem"]
        ),
        st.integers(0, 1 << 40),
    ),
    swap=st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
    pad=st.integers(1, 12),
)
def test_property_meminfo_use_agrees_with_parse_meminfo(fields, swap, pad):
    total = sum(fields.values()) + 1
    text = f"MemTotal:{' ' * pad}{total} kB\n"
    text += "".join(f"{k}:{' ' * pad}{v} kB\n" for k, v in fields.items())
    text += f"SwapTotal: {swap[0]} kB\nSwapFree: {swap[1]} kB\nHugePages_Total: 0\n"
    avail = fields.get("MemAvailable", fields.get("MemFree"))
    if "Cached" not in fields or avail is None:
        with pytest.raises(ParseError, match="missing"):
            procfs.meminfo_use(text.encode())
        return
    want = (
        fields.get("AnonPages", 0) << 10,
        fields["Cached"] << 10,
        max(0, swap[0] - swap[1]) << 10,
        (total - avail) << 10,
    )
    assert procfs.meminfo_use(text.encode()) == want
    if "MemFree" in fields:  # the full parser needs it; then both read the same figures
        m = procfs.parse_meminfo(text)
        avail = m.MemAvailable_bytes if m.MemAvailable_bytes is not None else m.MemFree_bytes
        assert want == (
            m.AnonPages_bytes,
            m.Cached_bytes,
            max(0, m.SwapTotal_bytes - m.SwapFree_bytes),
            m.MemTotal_bytes - avail,
        )
    assert procfs.meminfo_bytes(text.encode(), "SwapFree") == swap[1] << 10


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


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    pid=st.integers(1, 4194304),
    comm=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"), max_size=15
    ),  # fmt: skip
    ppid=st.integers(0, 4194304),
    start=st.integers(0, MAX),
)
def test_property_proc_stat_roundtrip(pid, comm, ppid, start):
    rest = " ".join(["S", str(ppid)] + ["0"] * 17 + [str(start), "1", "2"])
    s = procfs.parse_proc_stat(f"{pid} ({comm}) {rest}\n")
    assert (s.pid, s.comm, s.ppid, s.starttime) == (pid, comm, ppid, start)
