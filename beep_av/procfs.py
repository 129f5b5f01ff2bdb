"""Pure parsers for the kernel's texts: /proc/meminfo, PSI, cgroup v1 and v2 memory files,
/dev/kmsg records, mountinfo, /proc/PID/{cgroup,stat,status} and /proc/swaps.

Text in, typed result out. No I/O here: the sampler and the stages read, these functions
parse. Every parser either returns a correct value or raises `ParseError` (a ValueError);
garbage, truncated lines, empty text and absurd numbers never raise anything else. The
few that vouch for a list (mountinfo, /proc/swaps, /proc/PID/cgroup) skip a line they
cannot read instead: a line nobody can read vouches for nothing.

The sampler's parsers (`v1_memory_use`, `v2_memory_use`, `meminfo_use`, `psi_totals`,
`oom_counts`, `parse_int`) take the raw bytes of a `pread` and return plain tuples: they
run 50 times a second on a cache-cold thread, where every Python step costs several
times its hot-loop price, so they look up only the fields the story needs, by search,
without decoding or splitting the file.

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


def _int(value: str | bytes, what: str) -> int:
    """A non-negative decimal integer, or ParseError naming the field."""
    v = value.strip()
    # str.isdigit() accepts things like "²" that int() rejects; isascii() rules them out.
    if not v or not v.isascii() or not v.isdigit():
        raise ParseError(f"{what}: {value[:40]!r} is not a non-negative integer")
    if len(v) > 20:  # also keeps int() clear of Python's 4300-digit limit
        raise ParseError(f"{what}: {v[:40]!r}... is out of range")
    n = int(v)
    if n >= _MAX_VALUE:
        raise ParseError(f"{what}: {v[:40]!r} is out of range")
    return n


def _str(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ParseError(f"{what}: expected text, got {type(text).__name__}")
    return text


def _raw(raw: object, what: str) -> bytes:
    if not isinstance(raw, bytes):
        raise ParseError(f"{what}: expected bytes, got {type(raw).__name__}")
    return raw


def _need(value: int | None, key: str, what: str) -> int:
    if value is None:
        raise ParseError(f"{what}: missing {key}")
    return value


def parse_int(text: str | bytes, what: str = "counter file") -> int:
    """A file holding one integer (memory.usage_in_bytes, memory.current ...), as text or
    as the bytes of a read -> int."""
    if not isinstance(text, (str, bytes)):
        raise ParseError(f"{what}: expected text, got {type(text).__name__}")
    return _int(text, what)


def parse_limit(text: str, what: str = "limit file") -> int | None:
    """A limit file (v2 `memory.max` "max" or a number; v1 `memory.limit_in_bytes`)
    -> bytes, or None for unlimited (v2 "max", or v1's 'unlimited' value >= 2**62)."""
    v = _str(text, what).strip()
    if v == "max":
        return None
    n = _int(v, what)
    # v1 says "unlimited" with PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712).
    return None if n >= 1 << 62 else n


# ---------------------------------------------------------------- the sampler's fast paths


def _field(raw: bytes, key: bytes, what: str) -> int | None:
    """The value of `key` in a `name value` file ("\\nname ") or in meminfo ("\\nName:",
    whose values are padded and end in " kB", dropped here: the caller scales them),
    found by search. The key must start a line, so "\\nrss " never matches inside
    "total_rss ". None when absent; ParseError for a value that is not a count."""
    i = raw.find(key)
    if i >= 0:
        i += len(key)
    elif raw.startswith(key[1:]):  # the first line has no newline before it
        i = len(key) - 1
    else:
        return None
    j = raw.find(b"\n", i)
    v = raw[i:j] if j >= 0 else raw[i:]
    if key[-1] == 0x3A:  # b":": meminfo
        v = v[:-3].lstrip(b" ") if v.endswith(b" kB") else b""
    # bytes.isdigit() is ASCII-only; 20 digits keep int() short of absurd lengths
    if v.isdigit() and len(v) <= 20:
        n = int(v)
        if n < _MAX_VALUE:
            return n
    name = key.strip(b"\n :").decode("ascii", "replace")
    raise ParseError(f"{what} {name}: {raw[i : i + 40]!r} is not a count")


def v1_memory_use(raw: bytes) -> tuple[int, int, int]:
    """cgroup v1 memory.stat -> (anon, cache, swap) in bytes: the hierarchical total_rss,
    total_cache and total_swap when present (a stage cgroup may hold children), else rss,
    cache and swap. rss already counts THP (rss_huge is a part of it); swap is 0 without
    swap accounting (no memsw files, no swap lines). Raises ParseError."""
    w = "memory.stat (v1)"
    _raw(raw, w)
    anon = _field(raw, b"\ntotal_rss ", w)
    if anon is None:
        anon = _need(_field(raw, b"\nrss ", w), "rss", w)
    cache = _field(raw, b"\ntotal_cache ", w)
    if cache is None:
        cache = _need(_field(raw, b"\ncache ", w), "cache", w)
    swap = _field(raw, b"\ntotal_swap ", w)
    if swap is None:
        swap = _field(raw, b"\nswap ", w) or 0
    return anon, cache, swap


def v2_memory_use(raw: bytes) -> tuple[int, int]:
    """cgroup v2 memory.stat -> (anon, file) in bytes: anonymous memory in RAM, and the
    page cache (shmem included). Swap is memory.swap.current's. Raises ParseError."""
    w = "memory.stat (v2)"
    _raw(raw, w)
    return (
        _need(_field(raw, b"\nanon ", w), "anon", w),
        _need(_field(raw, b"\nfile ", w), "file", w),
    )


def meminfo_use(raw: bytes) -> tuple[int, int, int, int]:
    """/proc/meminfo -> (AnonPages, Cached, swap in use, RAM in use) in bytes: swap in use
    is SwapTotal - SwapFree, RAM in use MemTotal - MemAvailable (MemFree before 3.14).
    Raises ParseError."""
    w = "meminfo"
    _raw(raw, w)
    total = _need(_field(raw, b"\nMemTotal:", w), "MemTotal", w)
    avail = _field(raw, b"\nMemAvailable:", w)  # since kernel 3.14
    if avail is None:
        avail = _need(_field(raw, b"\nMemFree:", w), "MemFree", w)
    swap_total = _need(_field(raw, b"\nSwapTotal:", w), "SwapTotal", w)
    swap_free = _need(_field(raw, b"\nSwapFree:", w), "SwapFree", w)
    return (
        (_field(raw, b"\nAnonPages:", w) or 0) << 10,
        _need(_field(raw, b"\nCached:", w), "Cached", w) << 10,
        max(0, swap_total - swap_free) << 10,
        max(0, total - avail) << 10,
    )


def meminfo_bytes(raw: bytes, name: str) -> int | None:
    """One /proc/meminfo size ("SwapFree") in bytes; None when the file has no such line.
    Raises ParseError."""
    _raw(raw, "meminfo")
    kib = _field(raw, b"\n" + name.encode("ascii") + b":", "meminfo")
    return None if kib is None else kib << 10


def psi_totals(raw: bytes) -> tuple[int, int | None]:
    """A PSI file (/proc/pressure/memory, <cgroup>/memory.pressure) -> (some, full) stall
    totals in µs; full is None without a `full` line (system-wide cpu before 5.13). The
    `avg10` figures are left alone: they move every 2 s, too slow for a live sound.
    Raises ParseError."""
    _raw(raw, "psi")
    end = raw.find(b"\n")
    if end < 0:
        end = len(raw)
    i = raw.rfind(b" total=", 0, end)
    if not raw.startswith(b"some ") or i < 0:
        raise ParseError(f"psi: no 'some ... total=' line in {raw[:60]!r}")
    some = raw[i + 7 : end]
    if not (some.isdigit() and len(some) <= 20):
        raise ParseError(f"psi some total: {some[:40]!r} is not a count")
    full = None
    if raw.startswith(b"full ", end + 1):
        nxt = raw.find(b"\n", end + 1)
        if nxt < 0:
            nxt = len(raw)
        k = raw.rfind(b" total=", end, nxt)
        f = raw[k + 7 : nxt] if k >= 0 else b""
        if not (f.isdigit() and len(f) <= 20):
            raise ParseError(f"psi full total: {f[:40]!r} is not a count")
        full = int(f)
    return int(some), full


def oom_counts(raw: bytes) -> tuple[int | None, int | None]:
    """(oom, oom_kill) event counts from v2 memory.events, v1 memory.oom_control or
    /proc/vmstat; None where the file has no such line (`oom` is v2's only; `oom_kill`
    came in 4.13). Raises ParseError."""
    w = "oom counters"
    _raw(raw, w)
    return _field(raw, b"\noom ", w), _field(raw, b"\noom_kill ", w)


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
    """/proc/meminfo text -> MemInfo (bytes). Every line is checked. Raises ParseError."""
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
        MemTotal_bytes=_need(kib.get("MemTotal"), "MemTotal", w),
        MemFree_bytes=_need(kib.get("MemFree"), "MemFree", w),
        MemAvailable_bytes=kib.get("MemAvailable"),
        Buffers_bytes=kib.get("Buffers", 0),
        Cached_bytes=_need(kib.get("Cached"), "Cached", w),
        AnonPages_bytes=kib.get("AnonPages", 0),
        Shmem_bytes=kib.get("Shmem", 0),
        SwapTotal_bytes=_need(kib.get("SwapTotal"), "SwapTotal", w),
        SwapFree_bytes=_need(kib.get("SwapFree"), "SwapFree", w),
    )


def pick_fields(text: str, keys: tuple[str, ...], what: str = "memory.stat") -> dict[str, int]:
    """A `key value` file (memory.stat, vmstat ...) -> {key: value} for `keys` only,
    found by search, not by splitting every line. Keys absent from the text are absent
    from the result. Raises ParseError on a malformed value."""
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


def task_memcg(message: str) -> str | None:
    """The victim's memory cgroup from an `oom-kill:` message (since 4.19), else None."""
    _str(message, "kmsg message")
    m = _TASK_MEMCG_RE.search(message) if message.startswith("oom-kill:") else None
    return m.group(1) if m else None


def parse_oom_kill(message: str, timestamp_us: int | None = None) -> KmsgKill | None:
    """A kmsg message -> KmsgKill if it reports an OOM kill, else None.

    Understands "Memory cgroup out of memory: Killed process N (name) total-vm:...",
    the global "Out of memory: Killed process N (name) ...", and the earlier
    "oom-kill:constraint=...,task=NAME,pid=N,uid=..." line (anon_rss_kib None)."""
    _str(message, "kmsg message")
    m = _OOMKILL_RE.match(message)
    if m:
        oom_memcg = _OOM_MEMCG_RE.search(message)
        return KmsgKill(
            pid=_int(m.group(3), "oom-kill pid"),
            name=m.group(2),
            anon_rss_kib=None,
            cgroup_oom=m.group(1) == "CONSTRAINT_MEMCG",
            timestamp_us=timestamp_us,
            text=message,
            global_oom=",global_oom," in message,
            oom_memcg=oom_memcg.group(1) if oom_memcg else None,
            task_memcg=task_memcg(message),
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
    # seq_file escapes space, tab, newline and backslash in paths as \NNN (octal)
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


def in_memcg(path: str, ancestor: str) -> bool:
    """Is the cgroup hierarchy path `path` the cgroup `ancestor` or below it?"""
    _str(path, "cgroup path")
    _str(ancestor, "cgroup path")
    a = ancestor.rstrip("/")
    return a == "" or path == a or path.startswith(a + "/")


# ---------------------------------------------------------------- /proc/PID/*


class ProcCgroup(NamedTuple):
    """/proc/PID/cgroup: the process's cgroups, as hierarchy paths."""

    memory: str | None  # the v1 `memory` controller's cgroup; None without one
    unified: str | None  # the v2 (`0::`) cgroup; None without a v2 hierarchy

    @property
    def memcg(self) -> str | None:
        """The memory cgroup as the kernel log names it: v1's when there is one."""
        return self.memory if self.memory is not None else self.unified


def parse_proc_cgroup(text: str) -> ProcCgroup:
    """/proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines) -> ProcCgroup; lines of another
    shape are skipped. Raises ParseError only for what is not text."""
    _str(text, "cgroup")
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        elif v1 is None and "memory" in ctrls.split(","):
            v1 = path
    return ProcCgroup(v1, v2)


class ProcStat(NamedTuple):
    """The /proc/PID/stat fields Beep uses (proc(5))."""

    pid: int
    comm: str  # field 2 without its parentheses: anything the process chose (15 bytes)
    state: str  # "R", "S", "Z" ...
    ppid: int
    starttime: int  # field 22: clock ticks since boot


def parse_proc_stat(text: str) -> ProcStat:
    """/proc/PID/stat text -> ProcStat. The comm may hold spaces and parentheses, so it
    ends at the last ')'. Raises ParseError."""
    _str(text, "stat")
    open_, close = text.find(" ("), text.rfind(")")
    if open_ < 0 or close < open_:
        raise ParseError(f"stat: no '(comm)' in {text[:60]!r}")
    rest = text[close + 1 :].split()
    if len(rest) < 20:
        raise ParseError(f"stat: {len(rest) + 2} fields, not the 22 needed")
    state = rest[0]
    if len(state) != 1 or not state.isalpha():
        raise ParseError(f"stat: state {state[:10]!r}")
    return ProcStat(
        pid=_int(text[:open_], "stat pid"),
        comm=text[open_ + 2 : close],
        state=state,
        ppid=_int(rest[1], "stat ppid"),
        starttime=_int(rest[19], "stat starttime"),  # field 22 is the 20th after comm
    )


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


# ---------------------------------------------------------------- /proc/swaps


class Swap(NamedTuple):
    """One active swap area of /proc/swaps."""

    filename: str  # the path (escapes undone) or device
    size_bytes: int
    used_bytes: int


def parse_swaps(text: str) -> list[Swap]:
    """/proc/swaps text (a header, then "Filename Type Size Used Priority" lines in KiB)
    -> [Swap]; lines of another shape are skipped. Raises ParseError only for what is not
    text."""
    _str(text, "swaps")
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            size, used = _int(parts[2], "swap size"), _int(parts[3], "swap used")
        except ParseError:
            continue
        out.append(Swap(_unoctal(parts[0]), size * 1024, used * 1024))
    return out
