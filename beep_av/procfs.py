"""Pure parsers for the kernel's memory texts: /proc/meminfo, /proc/vmstat, PSI,
cgroup v1 and v2 memory files, and /dev/kmsg records.

Text in, typed result out. No I/O here: the sampler reads, these functions parse.
Every parser either returns a correct value or raises `ParseError` (a ValueError);
garbage, truncated lines, empty text and absurd numbers never raise anything else.

Field names keep the kernel's names; units are in the name or the docstring:
sizes are bytes, PSI totals are microseconds, kmsg timestamps are microseconds since
boot (the kernel's monotonic clock)."""

from __future__ import annotations

import re
from typing import NamedTuple

from beep_av.model import KmsgKill

# A counter above this is corruption, not a machine: 2**63 is the kernel's own ceiling
# (v1 reports "unlimited" as 9223372036854771712, just below it).
_MAX_VALUE = 1 << 64


class ParseError(ValueError):
    """The text is not what the kernel writes in that file."""


def _int(value: str, what: str) -> int:
    """A non-negative decimal integer, or ParseError naming the field."""
    v = value.strip()
    # isdigit() accepts things like "²" that int() rejects; isascii() rules them out.
    if not v or not v.isascii() or not v.isdigit():
        raise ParseError(f"{what}: {value[:40]!r} is not a non-negative integer")
    if len(v) > 20:  # also keeps int() clear of Python's 4300-digit limit
        raise ParseError(f"{what}: {v[:40]}... is out of range")
    n = int(v)
    if n >= _MAX_VALUE:
        raise ParseError(f"{what}: {v[:40]} is out of range")
    return n


def _str(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ParseError(f"{what}: expected text, got {type(text).__name__}")
    return text


def parse_keyed(text: str, what: str = "keyed file") -> dict[str, int]:
    """Lines of `key value` (memory.stat, vmstat, memory.events, oom_control) -> dict.

    Blank lines are ignored; any other malformed line raises ParseError."""
    _str(text, what)
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ParseError(f"{what}: malformed line {line[:60]!r}")
        out[parts[0]] = _int(parts[1], f"{what} {parts[0][:40]}")
    return out


def _need(d: dict[str, int], key: str, what: str) -> int:
    try:
        return d[key]
    except KeyError:
        raise ParseError(f"{what}: missing {key}") from None


def parse_int(text: str, what: str = "counter file") -> int:
    """A file holding one integer (memory.usage_in_bytes, memory.current ...) -> int."""
    return _int(_str(text, what), what)


def parse_limit(text: str, what: str = "limit file") -> int | None:
    """A limit file (v2 `memory.max` "max" or a number; v1 `memory.limit_in_bytes`)
    -> bytes, or None for unlimited (v2 "max", or v1's 'unlimited' value >= 2**62)."""
    v = _str(text, what).strip()
    if v == "max":
        return None
    n = _int(v, what)
    # v1 says "unlimited" with PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712).
    return None if n >= 1 << 62 else n


# ---------------------------------------------------------------- /proc/meminfo


class MemInfo(NamedTuple):
    """/proc/meminfo in bytes (the kernel writes kB, meaning KiB)."""

    MemTotal_bytes: int
    MemFree_bytes: int
    MemAvailable_bytes: int | None  # since kernel 3.14; None before
    Buffers_bytes: int
    Cached_bytes: int
    AnonPages_bytes: int
    Shmem_bytes: int
    SwapTotal_bytes: int
    SwapFree_bytes: int


def parse_meminfo(text: str) -> MemInfo:
    """/proc/meminfo text -> MemInfo (bytes). Raises ParseError."""
    _str(text, "meminfo")
    kib: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise ParseError(f"meminfo: malformed line {line[:60]!r}")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            kib[key] = _int(parts[0], f"meminfo {key[:40]}") * 1024
        elif len(parts) == 1:  # HugePages_Total etc. are counts, not sizes
            kib[key] = _int(parts[0], f"meminfo {key[:40]}")
        else:
            raise ParseError(f"meminfo: malformed line {line[:60]!r}")
    w = "meminfo"
    return MemInfo(
        MemTotal_bytes=_need(kib, "MemTotal", w),
        MemFree_bytes=_need(kib, "MemFree", w),
        MemAvailable_bytes=kib.get("MemAvailable"),
        Buffers_bytes=kib.get("Buffers", 0),
        Cached_bytes=_need(kib, "Cached", w),
        AnonPages_bytes=kib.get("AnonPages", 0),
        Shmem_bytes=kib.get("Shmem", 0),
        SwapTotal_bytes=_need(kib, "SwapTotal", w),
        SwapFree_bytes=_need(kib, "SwapFree", w),
    )


# ---------------------------------------------------------------- /proc/vmstat

# The reclaim scanners; pgscan_anon/pgscan_file split the same pages by type and
# pgscan_direct_throttle counts throttling events, so neither is added to the total.
PGSCAN_KINDS = ("pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged", "pgscan_proactive")


class VmStat(NamedTuple):
    """The /proc/vmstat counters the story uses (event counts, pages)."""

    oom_kill: int | None  # since kernel 4.13; None before
    pgscan_total: int  # pages scanned by all reclaimers (sum of PGSCAN_KINDS present)
    pgscan: dict[str, int]  # every pgscan_* counter by name
    workingset_refault_anon: int  # since 5.9; older kernels: workingset_refault in _file
    workingset_refault_file: int
    pswpin: int  # pages swapped in
    pswpout: int  # pages swapped out


def parse_vmstat(text: str) -> VmStat:
    """/proc/vmstat text -> VmStat. Raises ParseError."""
    d = parse_keyed(text, "vmstat")
    pgscan = {k: v for k, v in d.items() if k.startswith("pgscan_")}
    return VmStat(
        oom_kill=d.get("oom_kill"),
        pgscan_total=sum(pgscan.get(k, 0) for k in PGSCAN_KINDS),
        pgscan=pgscan,
        workingset_refault_anon=d.get("workingset_refault_anon", 0),
        # before 5.9 there was one counter, for file pages
        workingset_refault_file=d.get("workingset_refault_file", d.get("workingset_refault", 0)),
        pswpin=_need(d, "pswpin", "vmstat"),
        pswpout=_need(d, "pswpout", "vmstat"),
    )


# ---------------------------------------------------------------- PSI


class Psi(NamedTuple):
    """/proc/pressure/* or <cgroup>/*.pressure. avg10 in percent, totals in µs.

    `full` is None when the file has no `full` line (system-wide cpu before 5.13)."""

    some_avg10: float
    some_total_us: int
    full_avg10: float | None
    full_total_us: int | None


_PSI_RE = re.compile(
    r"^(some|full) avg10=([0-9]+\.[0-9]+) avg60=[0-9]+\.[0-9]+ avg300=[0-9]+\.[0-9]+ total=([0-9]+)$"
)


def parse_psi(text: str) -> Psi:
    """PSI text -> Psi. A `some` line is required. Raises ParseError."""
    _str(text, "psi")
    got: dict[str, tuple[float, int]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _PSI_RE.match(line.strip())
        if not m:
            raise ParseError(f"psi: malformed line {line[:60]!r}")
        got[m.group(1)] = (float(m.group(2)), _int(m.group(3), f"psi {m.group(1)} total"))
    if "some" not in got:
        raise ParseError("psi: missing the 'some' line")
    full = got.get("full")
    return Psi(got["some"][0], got["some"][1], full[0] if full else None, full[1] if full else None)


def psi_some_total(text: str) -> int:
    """Fast path for the sampler: the `some total=` µs only. Raises ParseError."""
    _str(text, "psi")
    i = text.find("total=")
    if not text.startswith("some ") or i < 0:
        raise ParseError(f"psi: no 'some ... total=' in {text[:60]!r}")
    j = i + 6
    k = j
    while k < len(text) and text[k].isdigit():
        k += 1
    return _int(text[j:k], "psi some total")


# ---------------------------------------------------------------- cgroup v1 / v2


class V1MemoryStat(NamedTuple):
    """cgroup v1 memory.stat, bytes. The total_* (hierarchical) values are used when
    present, since a stage cgroup may hold children."""

    cache: int  # page cache, including shmem
    rss: int  # anonymous pages, THP included (rss_huge is a subset of rss)
    rss_huge: int
    shmem: int
    mapped_file: int
    swap: int  # 0 without swap accounting (no memsw files)


def parse_v1_memory_stat(text: str) -> V1MemoryStat:
    """cgroup v1 memory.stat -> V1MemoryStat (bytes). Raises ParseError."""
    d = parse_keyed(text, "memory.stat")

    def pick(key: str, required: bool = False) -> int:
        if "total_" + key in d:
            return d["total_" + key]
        if required:
            return _need(d, key, "memory.stat (v1)")
        return d.get(key, 0)

    return V1MemoryStat(
        cache=pick("cache", True),
        rss=pick("rss", True),
        rss_huge=pick("rss_huge"),
        shmem=pick("shmem"),
        mapped_file=pick("mapped_file"),
        swap=pick("swap"),
    )


class V1OomControl(NamedTuple):
    oom_kill_disable: int
    under_oom: int
    oom_kill: int | None  # since kernel 4.13; None before


def parse_v1_oom_control(text: str) -> V1OomControl:
    """cgroup v1 memory.oom_control -> V1OomControl. Raises ParseError."""
    d = parse_keyed(text, "memory.oom_control")
    w = "memory.oom_control"
    return V1OomControl(
        _need(d, "oom_kill_disable", w), _need(d, "under_oom", w), d.get("oom_kill")
    )


class V2MemoryStat(NamedTuple):
    """cgroup v2 memory.stat, bytes."""

    anon: int
    file: int  # page cache, shmem included
    shmem: int
    file_mapped: int
    anon_thp: int


def parse_v2_memory_stat(text: str) -> V2MemoryStat:
    """cgroup v2 memory.stat -> V2MemoryStat (bytes). Raises ParseError."""
    d = parse_keyed(text, "memory.stat")
    w = "memory.stat (v2)"
    return V2MemoryStat(
        anon=_need(d, "anon", w),
        file=_need(d, "file", w),
        shmem=d.get("shmem", 0),
        file_mapped=d.get("file_mapped", 0),
        anon_thp=d.get("anon_thp", 0),
    )


class V2MemoryEvents(NamedTuple):
    """cgroup v2 memory.events, event counts."""

    low: int
    high: int
    max: int
    oom: int
    oom_kill: int
    oom_group_kill: int  # since kernel 5.17; 0 before


def parse_v2_memory_events(text: str) -> V2MemoryEvents:
    """cgroup v2 memory.events -> V2MemoryEvents. Raises ParseError."""
    d = parse_keyed(text, "memory.events")
    w = "memory.events"
    return V2MemoryEvents(
        low=_need(d, "low", w),
        high=_need(d, "high", w),
        max=_need(d, "max", w),
        oom=_need(d, "oom", w),
        oom_kill=_need(d, "oom_kill", w),
        oom_group_kill=d.get("oom_group_kill", 0),
    )


class CgroupMem(NamedTuple):
    """A stage's memory, whichever cgroup version: bytes."""

    anon_bytes: int  # anonymous memory resident in RAM
    cache_bytes: int  # page cache (shmem included)
    swap_bytes: int  # anonymous memory in swap
    usage_bytes: int  # RAM charged to the cgroup


def cgroup_mem_v1(stat: V1MemoryStat, usage_bytes: int) -> CgroupMem:
    """v1: anon = rss (THP already inside it), cache = cache, swap = memory.stat swap."""
    return CgroupMem(stat.rss, stat.cache, stat.swap, usage_bytes)


def cgroup_mem_v2(stat: V2MemoryStat, current: int, swap_current: int) -> CgroupMem:
    """v2: anon = anon, cache = file, swap = memory.swap.current."""
    return CgroupMem(stat.anon, stat.file, swap_current, current)


def pick_fields(text: str, keys: tuple[str, ...], what: str = "memory.stat") -> dict[str, int]:
    """Fast path for a `key value` file: only `keys`, found by search, not by splitting
    every line. Keys absent from the text are absent from the result. Raises ParseError
    on a malformed value."""
    _str(text, what)
    out: dict[str, int] = {}
    for key in keys:
        pat = key + " "
        i = text.find(pat)
        # the key must start a line, else "rss " would match inside "total_rss "
        while i > 0 and text[i - 1] != "\n":
            i = text.find(pat, i + 1)
        if i < 0:
            continue
        j = i + len(pat)
        k = text.find("\n", j)
        out[key] = _int(text[j : k if k >= 0 else len(text)], f"{what} {key}")
    return out


# ---------------------------------------------------------------- /dev/kmsg


class KmsgRecord(NamedTuple):
    """One /dev/kmsg record: "pri,seq,ts_us,flags[,...];message" + " KEY=VALUE" lines."""

    level: int  # syslog level, 0 (emerg) .. 7 (debug)
    facility: int
    seq: int
    timestamp_us: int  # µs since boot, the kernel's local clock (monotonic-like)
    flags: str  # "-" (a record) or "c" (continued, before 4.x)
    message: str  # \xNN escapes undone
    dict: tuple[tuple[str, str], ...]  # continuation KEY=VALUE pairs (SUBSYSTEM=, DEVICE=)


_ESC_RE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _unescape(s: str) -> str:
    # /dev/kmsg writes bytes < 0x20, >= 0x7f and '\\' as \xNN (kernel/printk msg_add_ext_text)
    if "\\x" not in s:
        return s
    raw = _ESC_RE.sub(lambda m: chr(int(m.group(1), 16)), s)
    # the escaped bytes were UTF-8 (or anything); decode them back if they form text
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def parse_kmsg_record(text: str) -> KmsgRecord | None:
    """One record as read() from /dev/kmsg -> KmsgRecord.

    Returns None for text that holds no record (empty, or only continuation lines);
    raises ParseError for a malformed header."""
    _str(text, "kmsg")
    lines = text.split("\n")
    head = lines[0]
    if not head.strip() or head.startswith(" "):
        return None
    prefix, sep, message = head.partition(";")
    if not sep:
        raise ParseError(f"kmsg: no ';' in {head[:60]!r}")
    fields = prefix.split(",")
    if len(fields) < 4:
        raise ParseError(f"kmsg: short prefix {prefix[:60]!r}")
    pri = _int(fields[0], "kmsg priority")
    seq = _int(fields[1], "kmsg sequence")
    ts = _int(fields[2], "kmsg timestamp")
    pairs = []
    for cont in lines[1:]:
        if cont.startswith(" ") and "=" in cont:
            k, _, v = cont[1:].partition("=")
            pairs.append((k, _unescape(v)))
    return KmsgRecord(pri & 7, pri >> 3, seq, ts, fields[3], _unescape(message), tuple(pairs))


# "Memory cgroup out of memory: Killed process 7155 (a) b (c) total-vm:1065360kB, anon-rss:65024kB, ..."
# The comm may hold ") " itself; greedy `.*` takes the name up to the LAST ") total-vm:".
_KILLED_RE = re.compile(r"Killed process (\d+) \((.*)\) total-vm:\d+kB, anon-rss:(\d+)kB")
# Kernels before 4.x, or a truncated record: no sizes; the name ends at the last ")".
_KILLED_SHORT_RE = re.compile(r"Killed process (\d+) \((.*)\)")
# "oom-kill:constraint=CONSTRAINT_MEMCG,...,task=a) b (c,pid=7155,uid=0" (since 4.19)
_OOMKILL_RE = re.compile(r"^oom-kill:constraint=([A-Z_]+),.*,task=(.*),pid=(\d+),uid=\d+")
# ",oom_memcg=/a/b,task_memcg=/a/b/c,task=..." (memcg OOM) or ",global_oom,task_memcg=..."
_OOM_MEMCG_RE = re.compile(r",oom_memcg=([^,]*),")
_TASK_MEMCG_RE = re.compile(r",task_memcg=([^,]*),")


def parse_oom_kill(message: str, timestamp_us: int | None = None) -> KmsgKill | None:
    """A kmsg message -> KmsgKill if it reports an OOM kill, else None.

    Understands "Memory cgroup out of memory: Killed process N (name) total-vm:...",
    the global "Out of memory: Killed process N (name) ...", and the earlier
    "oom-kill:constraint=...,task=NAME,pid=N,uid=..." line (anon_rss_kib None)."""
    _str(message, "kmsg message")
    m = _OOMKILL_RE.match(message)
    if m:
        oom_memcg = _OOM_MEMCG_RE.search(message)
        task_memcg = _TASK_MEMCG_RE.search(message)
        return KmsgKill(
            pid=_int(m.group(3), "oom-kill pid"),
            name=m.group(2),
            anon_rss_kib=None,
            cgroup_oom=m.group(1) == "CONSTRAINT_MEMCG",
            timestamp_us=timestamp_us,
            text=message,
            global_oom=",global_oom," in message,
            oom_memcg=oom_memcg.group(1) if oom_memcg else None,
            task_memcg=task_memcg.group(1) if task_memcg else None,
        )
    if "Killed process " not in message:
        return None
    m = _KILLED_RE.search(message)
    if m:
        anon: int | None = _int(m.group(3), "anon-rss")
    else:
        m = _KILLED_SHORT_RE.search(message)
        if not m:
            return None
        anon = None
    return KmsgKill(
        pid=_int(m.group(1), "killed pid"),
        name=m.group(2),
        anon_rss_kib=anon,
        cgroup_oom=message.startswith("Memory cgroup out of memory"),
        timestamp_us=timestamp_us,
        text=message,
    )


# ---------------------------------------------------------------- /proc/self/mountinfo


class Mount(NamedTuple):
    """One /proc/<pid>/mountinfo line (proc(5)); paths with their \\NNN escapes undone."""

    mount_id: int
    parent_id: int
    root: str  # the directory of the filesystem mounted here (a cgroup's hierarchy path)
    mount_point: str
    fstype: str  # "cgroup", "cgroup2", "tmpfs", ...
    source: str
    super_options: tuple[str, ...]  # for a v1 cgroup mount: its controllers, "memory" ...


_OCTAL_ESC = re.compile(r"\\([0-7]{3})")


def _unoctal(s: str) -> str:
    return _OCTAL_ESC.sub(lambda m: chr(int(m.group(1), 8)), s) if "\\" in s else s


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/<pid>/mountinfo text -> [Mount] in the kernel's order (later mounts on the
    same point hide earlier ones). Lines that are not a mount are skipped: this text is
    only ever used to vouch for a path, and a line nobody can read vouches for none."""
    _str(text, "mountinfo")
    out = []
    for line in text.splitlines():
        f = line.split()
        try:
            sep = f.index("-", 6)  # after the 6 fixed fields and the optional ones
        except ValueError:
            continue
        if len(f) < sep + 3:
            continue
        try:
            mid, pid = _int(f[0], "mount id"), _int(f[1], "parent id")
        except ParseError:
            continue
        root, mp = _unoctal(f[3]), _unoctal(f[4])
        if not root.startswith("/") or not mp.startswith("/"):
            continue
        opts = tuple(f[sep + 3].split(",")) if len(f) > sep + 3 else ()
        out.append(Mount(mid, pid, root, mp, f[sep + 1], _unoctal(f[sep + 2]), opts))
    return out


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount that holds the absolute, normalized `path`: the longest mount point that
    is `path` or one of its parents; on a tie the later mount (it is on top). Pure."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if path != mp and not path.startswith(mp.rstrip("/") + "/"):
            continue
        if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
            best = m
    return best


def in_memcg(path: str, ancestor: str) -> bool:
    """Is the cgroup hierarchy path `path` the cgroup `ancestor` or below it?"""
    _str(path, "cgroup path")
    _str(ancestor, "cgroup path")
    a = ancestor.rstrip("/")
    return a == "" or path == a or path.startswith(a + "/")


def parse_nspid(status: str) -> tuple[int, ...]:
    """/proc/PID/status (or a pidfd's fdinfo) -> the process's pids, one per PID
    namespace, from the namespace of that /proc down to its own (the NSpid line, since
    Linux 4.1); kernels without it give the Pid line alone. ParseError without either."""
    _str(status, "status")
    pid_line = None
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "NSpid":
            pids = tuple(_int(x, "NSpid") for x in value.split())
            if not pids:
                raise ParseError("status: empty NSpid line")
            return pids
        if key == "Pid":
            pid_line = value
    if pid_line is None:
        raise ParseError("status: no NSpid or Pid line")
    return (_int(pid_line.strip(), "Pid"),)


def parse_memcg_path(proc_cgroup: str) -> str | None:
    """/proc/PID/cgroup -> the process's memory cgroup as the kernel log names it: the
    v1 `memory` controller's line when there is one, else the v2 `0::` line."""
    _str(proc_cgroup, "cgroup")
    v2 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if "memory" in ctrls.split(","):
            return path
        if hid == "0" and ctrls == "":
            v2 = path
    return v2


def cgroup_mount_path(mountinfo: str, path: str) -> tuple[int, str] | None:
    """(cgroup version, hierarchy path) of the directory `path` from /proc/self/mountinfo
    text: the longest v1 `memory` or v2 mount holding it, joined to that mount's root.
    None when no cgroup mount holds it. Pure."""
    best: tuple[int, int, str] | None = None  # (mount point length, version, rel)
    for m in parse_mountinfo(mountinfo):
        if m.fstype == "cgroup2":
            version = 2
        elif m.fstype == "cgroup" and "memory" in m.super_options:
            version = 1
        else:
            continue
        mp = m.mount_point.rstrip("/") or "/"
        if path == mp:
            rest = ""
        elif path.startswith(mp.rstrip("/") + "/"):
            rest = path[len(mp.rstrip("/")) :]
        else:
            continue
        rel = "/" + "/".join(p for p in (m.root + rest).split("/") if p)
        if best is None or len(mp) > best[0]:
            best = (len(mp), version, rel)
    return (best[1], best[2]) if best else None
