"""The kernel's whole OOM report, parsed: pure, streaming, text in (the procfs layer).

One OOM event, as `mm/oom_kill.c` prints it (kernels 3.10 to 6.x, and the variants people
paste): the *trigger* (`<comm> invoked oom-killer: gfp_mask=..., order=N,
oom_score_adj=N`, the task whose allocation failed, often not the victim), the call trace
(`mem_cgroup_out_of_memory` in it: a memory cgroup's OOM), the memory cgroup's
`memory: usage ..., limit ...` lines or the machine's RAM and swap, the *task table*
(`Tasks state (memory values in pages):` then one row per candidate; its columns vary:
`nr_ptes` before 4.19, `pgtables_bytes` since, `rss_anon rss_file rss_shmem` since 6.8),
the constraint line (`oom-kill:constraint=...`, since 4.19), the *victim*
(`Killed process N (comm) total-vm:..., anon-rss:...`; RHEL 6: `Killed process N, UID U,
(comm)`; before 4.?: `Kill process N (x) score S or sacrifice child` then the Killed line
of a child), several victims for `memory.oom.group`, and the reaper's line.

`OomParser.feed(line)` takes one line of any log (a raw `/dev/kmsg` record, dmesg with
or without timestamps, `dmesg -T`, journalctl or syslog prefixes in any locale, lines of
other messages in between) and returns the events it completed; `finish()` the last.
`events(lines)` does both over an iterable. Memory stays bounded by one event.

The kernel's ranking (`oom_badness`, 5.x and later): points = rss + swap entries +
page-table pages + oom_score_adj x (totalpages / 1000), where totalpages is the memory
cgroup's limit (memory + swap) or the machine's RAM + swap; oom_score_adj -1000 is never
killed. Without a task table there is no ranking, and none is guessed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

PAGE = 4096  # bytes; the tables count pages (x86-64, arm64 with 4 KiB pages)
MAX_CANDIDATES = 100_000  # rows kept of one table (a huge machine's dump stays bounded)
MAX_LINES_IN_EVENT = 150_000  # an event is closed after this many lines, whatever they say
# a trigger without its end: the event is closed once this many lines in a row said
# nothing of it (a big machine's Mem-Info and trace run to a few hundred)
QUIET_LINES = 2_000
# after its kill, an event ends once this many lines in a row said nothing of it (its
# reaper line, a group's other kills and a victim printed twice come right after)
QUIET_AFTER_KILL = 20

# ---------------------------------------------------------------- what a line says

# prefixes people's logs carry before the kernel's own text, stripped in this order;
# each with a cheap test of the text it needs, so that most lines try one or two
_PREFIXES = [
    # anything before a printk level and a dmesg time (a hypervisor's log of its guest)
    (re.compile(r"^.+?(?=<\d{1,3}>\[\s*\d+\.\d+\])"), lambda s: ">[" in s),
    (re.compile(r"^<\d{1,3}>"), lambda s: s[:1] == "<"),  # a syslog priority
    # a raw /dev/kmsg record: prio,seq,usec,flags;
    (re.compile(r"^\d+,\d+,\d+,[^;]*;"), lambda s: s[:1].isdigit()),
    # ISO time, a host, "kernel:" (journalctl -o short-iso, rsyslog)
    (
        re.compile(r"^\d{4}-\d\d-\d\d[T ][\d:.,]+(?:Z|[+-]\d\d:?\d\d)?\s+\S+\s+kernel:\s?"),
        lambda s: s[:1].isdigit(),
    ),
    # "Dec 07 03:09:10 host kernel:" in any locale (the month is any word)
    (
        re.compile(r"^\S+\s+\d{1,2}\s+\d\d:\d\d:\d\d(?:\.\d+)?\s+\S+\s+kernel:\s?"),
        lambda s: "kernel:" in s,
    ),
    (re.compile(r"^.{0,80}?\bkernel: ?"), lambda s: "kernel:" in s),  # any other "host kernel:"
    (re.compile(r"^\[\s*\d+\.\d+\]\s?"), lambda s: s[:1] == "["),  # dmesg: [ 1521.849425]
    # dmesg -T: [Mon Dec  7 03:09:10 2026]
    (re.compile(r"^\[[^\]\[]*\d\d:\d\d:\d\d[^\]\[]*\]\s?"), lambda s: s[:1] == "["),
]
_DMESG_T = re.compile(r"\[\s*(\d+)\.(\d+)\]")
_KMSG_T = re.compile(r"^\d+,\d+,(\d+),")

_TRIGGER = re.compile(r"^(?P<comm>.+?) invoked oom-killer:\s*(?P<rest>.*)$")
_CPU_LINE = re.compile(
    r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.{1,16}?) (?:Not tainted|Tainted)"
)
_KILL = re.compile(
    r"(?P<kind>Killed|Kill) process (?P<pid>\d+)(?:, UID (?P<uid>\d+),)? \((?P<comm>.*)\)"
    r"(?P<rest>(?:(?:, UID \d+)?,? total-vm:.*| score -?\d+.*| sacrifice child.*)?)$"
)
_FIELD_KB = re.compile(r"([a-z-]+):(\d+)kB")
_UID_FIELD = re.compile(r"UID[: ](\d+)")  # "UID:0" (5.x), "(comm), UID 0," (some 4.x)
_ADJ_FIELD = re.compile(r"oom_score_adj:(-?\d+)")
_SCORE = re.compile(r" score (-?\d+)")
_CONSTRAINT = re.compile(r"oom-kill:(.*)$")
_TASK_IN = re.compile(r"Task in (\S+) killed as a result of limit of (\S+)")
_LIMIT = re.compile(
    r"^(?P<what>memory|memory\+swap|swap|kmem|kmem\.tcp): usage (?P<usage>\d+)kB, "
    r"limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)"
)
_TABLE_HEAD = re.compile(r"^\[\s*pid\s*\]\s+(?P<cols>.*\bname)\s*$")
_ROW = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")
_REAPED = re.compile(r"oom_reaper: reaped process (\d+) \((.*)\), now anon-rss:(\d+)kB")
_RAM_PAGES = re.compile(r"^(\d+) pages RAM$")
_SWAP_TOTAL = re.compile(r"^Total swap = (\d+)kB$")
_NO_KILLABLE = "Out of memory and no killable processes"
# lines of a report's middle that open an event when its trigger line was cut off
_HEADLESS = re.compile(
    r"^(?:memory: usage \d+kB|Memory cgroup stats for|Task in \S+ killed as a result|"
    r"Tasks state \(memory values|\[\s*pid\s*\]\s+uid|oom-kill:constraint=)"
)
_GROUP = re.compile(r"Tasks in (\S+) are going to be killed due to memory\.oom\.group set")
_UNLIMITED_KB = 1 << 50  # "limit 9007199254740988kB": no limit


def strip_prefix(line: str) -> tuple[str, float | None]:
    """The kernel's own text of a log line, and its kernel time in seconds when the
    prefix gives one (dmesg's [seconds], a kmsg record's microseconds)."""
    t = None
    s = line.rstrip("\r\n").replace("\x00", "")
    for _ in range(4):  # prefixes stack: "Dec 07 host kernel: [123.4] ..."
        s = s.lstrip()  # a mail's or a page's indentation
        before = s
        first = s[:1]
        if first.isdigit():
            m = _KMSG_T.match(s)
            if m:
                t = int(m.group(1)) / 1e6
        elif first == "[":
            m = _DMESG_T.match(s)
            if m:
                t = int(m.group(1)) + float("0." + m.group(2))
        for p, may in _PREFIXES:  # anchored: match, not sub (which tries every position)
            if s and may(s):
                m = p.match(s)
                if m is not None:
                    s = s[m.end() :]
        if s == before:
            break
    return s.strip(), t


# ---------------------------------------------------------------- what an event holds


@dataclass
class Candidate:
    """One row of the kernel's task table (pages, but pgtables in bytes)."""

    pid: int
    name: str
    uid: int | None = None
    total_vm: int = 0
    rss_pages: int = 0
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    pgtables_bytes: int = 0
    swapents: int = 0
    oom_score_adj: int = 0
    points: int | None = None  # the kernel's badness; None: not computable (see ranking)

    def fields(self) -> dict:
        return {
            "pid": self.pid,
            "name": self.name,
            "rss_pages": self.rss_pages,
            "swapents": self.swapents,
            "pgtables_bytes": self.pgtables_bytes,
            "oom_score_adj": self.oom_score_adj,
            "points": self.points,
        }


@dataclass
class Victim:
    """One `Killed process` (or, alone, `Kill process ... score`) line."""

    pid: int
    name: str
    anon_rss_kib: int | None = None
    file_rss_kib: int | None = None
    shmem_rss_kib: int | None = None
    total_vm_kib: int | None = None
    uid: int | None = None
    oom_score_adj: int | None = None
    score: int | None = None  # "Kill process N (x) score S" (older kernels)
    killed: bool = True  # False: only the "Kill process" line was seen

    def fields(self) -> dict:
        return {"pid": self.pid, "name": self.name, "anon_rss_kib": self.anon_rss_kib}


@dataclass
class Trigger:
    """The task that invoked the OOM killer (its allocation failed)."""

    name: str
    pid: int | None = None
    gfp_mask: str | None = None
    order: int | None = None
    oom_score_adj: int | None = None

    def fields(self) -> dict:
        return {
            "name": self.name,
            "pid": self.pid,
            "gfp_mask": self.gfp_mask,
            "order": self.order,
            "oom_score_adj": self.oom_score_adj,
        }


@dataclass
class OomEvent:
    """One OOM event: what the kernel said about it, in the order it said it."""

    trigger: Trigger | None = None
    constraint: str | None = None  # CONSTRAINT_MEMCG, CONSTRAINT_NONE, ...
    oom_memcg: str | None = None
    task_memcg: str | None = None
    memcg_lines: bool = False  # a memory cgroup's usage/limit lines or trace were seen
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)  # what -> (usage, limit) kB
    ram_pages: int | None = None  # global OOM: "N pages RAM"
    swap_kib: int | None = None  # global OOM: "Total swap = NkB"
    candidates: list[Candidate] | None = None  # None: no task table in the text
    victims: list[Victim] = field(default_factory=list)
    reaped: list[int] = field(default_factory=list)
    group: str | None = None  # memory.oom.group: the cgroup whose tasks all die
    no_killable: bool = False
    kernel_t: float | None = None  # seconds, from the first line's prefix
    cols: tuple[str, ...] = ()  # the task table's columns, as printed
    _table_open: bool = field(default=False, repr=False)
    _chosen_child: bool = field(default=False, repr=False)

    @property
    def victim(self) -> Victim | None:
        """The process of the first `Killed process` line (else the `Kill process`
        line's, anon-rss unknown); None when nothing was killable."""
        killed = [v for v in self.victims if v.killed]
        return killed[0] if killed else (self.victims[0] if self.victims else None)

    @property
    def done(self) -> bool:
        """The kernel acted: a kill line, or nothing was killable."""
        return self.no_killable or any(v.killed for v in self.victims)

    @property
    def chosen(self) -> Victim | None:
        """The process the kernel ranked first: the `Kill process N ... or sacrifice
        child` line's (older kernels then kill a child of it), else the victim."""
        picked = [v for v in self.victims if not v.killed]
        return picked[0] if picked else self.victim

    @property
    def cgroup_oom(self) -> bool:
        """A memory cgroup's OOM: any of its lines says so."""
        return self.constraint == "CONSTRAINT_MEMCG" or self.memcg_lines

    @property
    def totalpages(self) -> int | None:
        """What the kernel weighs points against: the cgroup's limit (memory + swap,
        or memory+swap on v1) or the machine's RAM + swap, in pages; None: unknown."""
        if self.cgroup_oom:
            mem = self.limits.get("memory")
            if mem is None or mem[1] >= _UNLIMITED_KB:
                return None
            memsw = self.limits.get("memory+swap")
            if memsw is not None and memsw[1] < _UNLIMITED_KB:
                return memsw[1] * 1024 // PAGE
            swap = self.limits.get("swap")
            extra = swap[1] if swap is not None and swap[1] < _UNLIMITED_KB else 0
            return (mem[1] + extra) * 1024 // PAGE
        if self.ram_pages is None:
            return None
        return self.ram_pages + (self.swap_kib or 0) * 1024 // PAGE

    def ranked(self) -> list[Candidate]:
        """The candidates by the kernel's points, most first (those with points)."""
        have = [c for c in self.candidates or () if c.points is not None]
        return sorted(have, key=lambda c: c.points, reverse=True)

    @property
    def victim_rank(self) -> int | None:
        """1 when the process the kernel chose (the victim, or the parent that
        sacrificed it) had the most points; None without a table or a victim."""
        v = self.chosen
        if v is None or not self.candidates:
            return None
        order = self.ranked()
        for i, c in enumerate(order):
            if c.pid == v.pid:
                return 1 + sum(1 for d in order[:i] if d.points > c.points)
        return None

    def runner_up_share(self) -> float | None:
        """The points of the best candidate other than the chosen process, as a share
        of its; None when there is no ranking."""
        v = self.chosen
        order = self.ranked()
        mine = next((c for c in order if v is not None and c.pid == v.pid), None)
        others = [c for c in order if mine is None or c.pid != mine.pid]
        if mine is None or not others or not mine.points or mine.points <= 0:
            return None
        return max(0.0, others[0].points / mine.points)

    def fields(self) -> dict:
        """The event as JSON-ready fields (`beep-av explain --json`, kill records)."""
        v = self.victim
        return {
            "victim": v.fields() if v is not None else None,
            "killed": [x.pid for x in self.victims if x.killed],
            "trigger": self.trigger.fields() if self.trigger is not None else None,
            "cgroup_oom": self.cgroup_oom,
            "constraint": self.constraint,
            "oom_memcg": self.oom_memcg,
            "task_memcg": self.task_memcg,
            "limits_kib": {k: {"usage": u, "limit": lim} for k, (u, lim) in self.limits.items()},
            "totalpages": self.totalpages,
            "candidates": (
                [c.fields() for c in self.candidates] if self.candidates is not None else None
            ),
            "victim_rank": self.victim_rank,
            "no_killable": self.no_killable,
            "kernel_t": self.kernel_t,
        }

    def kill_fields(self) -> dict:
        """What a live kill record keeps of this event (recording `kill` line keys)."""
        self.score()
        return {
            "trigger": self.trigger.fields() if self.trigger is not None else None,
            "constraint": self.constraint,
            "candidates": (
                [c.fields() for c in self.candidates] if self.candidates is not None else None
            ),
            "victim_rank": self.victim_rank,
        }

    # ---- building

    def score(self) -> None:
        """Give each candidate its points (idempotent; see the module doc)."""
        total = self.totalpages
        for c in self.candidates or ():
            if c.oom_score_adj == -1000:  # OOM_SCORE_ADJ_MIN: never chosen
                c.points = None
                continue
            base = c.rss_pages + c.swapents + c.pgtables_bytes // PAGE
            if c.oom_score_adj == 0:
                c.points = base
            elif total is not None:
                c.points = base + c.oom_score_adj * (total // 1000)
            else:
                c.points = None  # the adjustment needs totalpages: not guessed


# ---------------------------------------------------------------- one line of why


# The card's why, in English; the show's cards take these from the captions
# (assets/captions/<lang>.toml, the same keys), explain uses them as they are.
WHY_TEXT = {
    "why_first": "most points of {n}: {victim} {points}",
    "why_rank": "rank {rank} of {n}: {victim} {points}",
    "why_only": "the only candidate ({points} points)",
    "why_share": "{other} had {share}% of that",
    "why_asked": "{name} asked for the page that tipped it",
    "why_asked_self": "{name} itself asked for the page that tipped it",
}


def ranking(candidates: list[dict] | None, victim_pid: int | None) -> dict | None:
    """The kernel's ranking, from candidates' fields (pid, name, points): the victim's
    rank of n, its points, and the runner-up with its share of them. None without a
    task table or a victim in it: the ranking is unknown, never guessed."""
    if not candidates or victim_pid is None:
        return None
    order = sorted(
        (c for c in candidates if isinstance(c.get("points"), int)),
        key=lambda c: c["points"],
        reverse=True,
    )
    mine = next((c for c in order if c.get("pid") == victim_pid), None)
    if mine is None:
        return None
    out = {"n": len(candidates), "points": mine["points"], "victim": mine["name"]}
    if len(order) == 1:
        return {**out, "rank": 1, "only": True}
    other = next(c for c in order if c.get("pid") != victim_pid)
    same = other.get("name") == mine.get("name")  # python and python: the pids tell
    out.update(
        rank=1 + sum(1 for c in order if c["points"] > mine["points"]),
        only=False,
        victim=f"{mine['name']} ({mine['pid']})" if same else mine["name"],
        other=f"{other['name']} ({other['pid']})" if same else other["name"],
        share=round(100 * max(0, other["points"]) / mine["points"]) if mine["points"] > 0 else None,
    )
    return out


def ranking_text(r: dict, text: dict[str, str] = WHY_TEXT) -> str:
    """A ranking (ranking()) as the card says it: "most points of 3: big 31,100 —
    medium had 67% of that", in the words of `text` (WHY_TEXT's keys)."""
    pts = f"{r['points']:,}"
    if r["only"]:
        return text["why_only"].format(points=pts)
    key = "why_first" if r["rank"] == 1 else "why_rank"
    line = text[key].format(n=r["n"], rank=r["rank"], victim=r["victim"], points=pts)
    if r.get("share") is not None:
        line += " — " + text["why_share"].format(other=r["other"], share=r["share"])
    return line


def ranking_line(candidates: list[dict] | None, victim_pid: int | None) -> str | None:
    """The kernel's ranking in one English line, or None when it is unknown."""
    r = ranking(candidates, victim_pid)
    return ranking_text(r) if r is not None else None


def asked_text(
    trigger: dict | None,
    victim_pid: int | None,
    victim_name: str | None,
    text: dict[str, str] = WHY_TEXT,
) -> str | None:
    """Who asked for the page that tipped it: "medium asked for the page that tipped
    it"; None without a trigger line."""
    if not trigger:
        return None
    name, pid = trigger.get("name"), trigger.get("pid")
    if pid is not None and pid == victim_pid or (pid is None and name == victim_name):
        return text["why_asked_self"].format(name=name)
    return text["why_asked"].format(name=f"{name}{f' (pid {pid})' if pid is not None else ''}")


# ---------------------------------------------------------------- the parser


def _int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def parse_kill_line(text: str) -> Victim | None:
    """A `Killed process` / `Kill process ... score` line (its kernel text) -> Victim."""
    m = _KILL.search(text)
    if m is None:
        return None
    rest = m.group("rest") or ""
    kb = dict(_FIELD_KB.findall(rest))
    u = _UID_FIELD.search(rest)
    uid = m.group("uid") or (u.group(1) if u else None)
    adj = _ADJ_FIELD.search(rest)
    score = _SCORE.search(rest)

    def k(name: str) -> int | None:
        return int(kb[name]) if name in kb else None

    return Victim(
        pid=int(m.group("pid")),
        name=m.group("comm"),
        anon_rss_kib=k("anon-rss"),
        file_rss_kib=k("file-rss"),
        shmem_rss_kib=k("shmem-rss"),
        total_vm_kib=k("total-vm"),
        uid=int(uid) if uid is not None else None,
        oom_score_adj=int(adj.group(1)) if adj else None,
        score=int(score.group(1)) if score else None,
        killed=m.group("kind") == "Killed",
    )


def _row(cols: tuple[str, ...], rest: str, pid: int) -> Candidate | None:
    """A task table row's columns after [pid], as the header named them."""
    numeric = [c for c in cols if c != "name"]
    parts = rest.split(None, len(numeric))
    if len(parts) < len(numeric):
        return None
    vals = {}
    for c, v in zip(numeric, parts, strict=False):
        n = _int(v)
        if n is None:
            return None
        vals[c] = n
    name = parts[len(numeric)] if len(parts) > len(numeric) else ""
    pgt = vals.get("pgtables_bytes")
    if pgt is None:  # before 4.19: page-table pages (and PMD pages, 4.x)
        pgt = (vals.get("nr_ptes", 0) + vals.get("nr_pmds", 0)) * PAGE
    return Candidate(
        pid=pid,
        name=name,
        uid=vals.get("uid"),
        total_vm=vals.get("total_vm", 0),
        rss_pages=vals.get("rss", 0),
        rss_anon=vals.get("rss_anon"),
        rss_file=vals.get("rss_file"),
        rss_shmem=vals.get("rss_shmem"),
        pgtables_bytes=pgt,
        swapents=vals.get("swapents", 0),
        oom_score_adj=vals.get("oom_score_adj", 0),
    )


class OomParser:
    """Streaming: feed lines, get OOM events as they complete (see the module doc)."""

    def __init__(self) -> None:
        self._ev: OomEvent | None = None
        self._lines = 0  # lines since the event's trigger
        self._quiet = 0  # lines in a row that said nothing of the event
        # a pasted line waits for the next one: a line wrapped by a mail client, a page
        # or a terminal (no log prefix of its own, or "↪") belongs to it
        self._pending: tuple[str, float | None, bool] | None = None

    def feed(self, line: str) -> list[OomEvent]:
        """One log line -> the events it completed (usually none). Lines of a paste
        that lost their prefix to a wrap are joined to the line before them."""
        raw = line.rstrip("\r\n")
        text, t = strip_prefix(raw)
        had_prefix = len(text) < len(raw.strip())
        p = self._pending
        if p is not None and text and self._continues(raw, text, had_prefix, p[2]):
            cont = text[1:].lstrip() if text.startswith("↪") else text
            self._pending = (p[0] + " " + cont, p[1], p[2])
            return []
        self._pending = (text, t, had_prefix)
        return self.feed_text(p[0], p[1]) if p is not None else []

    @staticmethod
    def _continues(raw: str, text: str, had_prefix: bool, prev_prefix: bool) -> bool:
        if text.startswith("↪"):
            return True
        # a line with no prefix after one with a prefix, starting in its first columns
        # (a mail's or page's wrap; an annotation indented by its poster is not one)
        indent = len(raw) - len(raw.lstrip(" "))
        return prev_prefix and not had_prefix and indent <= 2 and raw[:1] != "\t"

    @property
    def idle(self) -> bool:
        """No event open, and no waiting line that could open one: the next lines
        matter only if they hold one of the opening words."""
        p = self._pending
        return self._ev is None and (p is None or not _may_open(p[0].encode()))

    def skip(self) -> None:
        """Lines were skipped while idle: a waiting line has no continuation to come."""
        self._pending = None

    @property
    def current(self) -> OomEvent | None:
        """The event being read (live: complete up to its last line so far)."""
        return self._ev

    def feed_text(self, text: str, t: float | None = None) -> list[OomEvent]:
        """The kernel's own text of one record (a /dev/kmsg message, no prefix)."""
        if not text:
            return []
        out: list[OomEvent] = []
        ev = self._ev
        if ev is not None:
            self._lines += 1
            if self._lines > MAX_LINES_IN_EVENT:
                out += self._close()
                ev = None
        m = _TRIGGER.match(text) if "invoked oom-killer" in text else None
        if m is not None:
            out += self._close()
            ev = self._open(t)
            ev.trigger = self._trigger(m.group("comm"), m.group("rest"))
            return out
        if ev is None:
            if " process " in text and "ill" in text:  # a kill line with no header
                v = parse_kill_line(text)
                if v is not None:
                    ev = self._open(t)
                    ev.memcg_lines = "Memory cgroup out of memory" in text
                    ev.victims.append(v)
            elif _NO_KILLABLE in text:
                ev = self._open(t)
                ev.no_killable = True
            elif _HEADLESS.match(text):  # a report whose beginning was cut off
                ev = self._open(t)
                out += self._line(ev, text, t)
            return out
        self._quiet += 1  # _line resets it when the line is the event's
        out += self._line(ev, text, t)
        if self._ev is ev and self._quiet > (QUIET_AFTER_KILL if ev.done else QUIET_LINES):
            out += self._close()
        return out

    def close(self) -> list[OomEvent]:
        """End the event being read now (live: its Killed line came), so that the
        records after it are not read as part of it."""
        return self._close()

    def finish(self) -> list[OomEvent]:
        """The event still open at the end of the text."""
        p, self._pending = self._pending, None
        out = self.feed_text(p[0], p[1]) if p is not None else []
        return out + self._close()

    # ---- inside an event

    def _open(self, t: float | None) -> OomEvent:
        self._ev = OomEvent(kernel_t=t)
        self._lines = 0
        self._quiet = 0
        return self._ev

    def _close(self) -> list[OomEvent]:
        ev, self._ev = self._ev, None
        if ev is None:
            return []
        if ev.trigger is None and not ev.victims and not ev.no_killable:
            return []  # a cut-off report's middle with no kill in it: no event
        ev.score()
        return [ev]

    @staticmethod
    def _trigger(comm: str, rest: str) -> Trigger:
        def num(key: str) -> int | None:
            m = re.search(key + r"=(-?\d+)", rest)
            return int(m.group(1)) if m else None

        gfp = re.search(r"gfp_mask=(0x[0-9a-fA-F]+)", rest)
        return Trigger(
            name=comm,
            gfp_mask=gfp.group(1) if gfp else None,
            order=num("order"),
            oom_score_adj=num("oom_score_adj"),
        )

    def _line(self, ev: OomEvent, text: str, t: float | None) -> list[OomEvent]:
        out = self._read(ev, text, t)
        if out is None:  # the line said nothing of the event
            return []
        self._quiet = 0
        return out

    def _read(self, ev: OomEvent, text: str, t: float | None) -> list[OomEvent] | None:
        """What one line of an event says: the events it completed; None when it said
        nothing of this one."""
        if ev._table_open:  # rows until the event ends (other messages may come between)
            m = _ROW.match(text)
            if m is not None and ev.candidates is not None:
                if len(ev.candidates) < MAX_CANDIDATES:
                    c = _row(ev.cols, m.group("rest"), int(m.group("pid")))
                    if c is not None:
                        ev.candidates.append(c)
                return []
        if text.startswith("Tasks state"):
            return []
        m = _TABLE_HEAD.match(text)
        if m is not None:
            ev.cols = tuple(m.group("cols").split())
            ev.candidates = []
            ev._table_open = True
            return []
        if ev.trigger is not None and ev.trigger.pid is None:
            m = _CPU_LINE.match(text)
            if m is not None:
                ev.trigger.pid = int(m.group("pid"))
                return []
        if "mem_cgroup_out_of_memory" in text or text.startswith("Memory cgroup stats for"):
            ev.memcg_lines = True
            return []
        m = _LIMIT.match(text)
        if m is not None:
            ev.limits[m.group("what")] = (int(m.group("usage")), int(m.group("limit")))
            ev.memcg_lines = True
            return []
        m = _TASK_IN.search(text)
        if m is not None:
            ev.memcg_lines = True
            ev.task_memcg, ev.oom_memcg = m.group(1), m.group(2)
            return []
        m = _CONSTRAINT.search(text)
        if m is not None and "constraint=" in m.group(1):
            kv = dict(re.findall(r"(\w+)=([^,]*)", m.group(1)))
            ev.constraint = kv.get("constraint")
            ev.oom_memcg = kv.get("oom_memcg", ev.oom_memcg)
            ev.task_memcg = kv.get("task_memcg", ev.task_memcg)
            return []
        m = _RAM_PAGES.match(text)
        if m is not None:
            ev.ram_pages = int(m.group(1))
            return []
        m = _SWAP_TOTAL.match(text)
        if m is not None:
            ev.swap_kib = int(m.group(1))
            return []
        m = _GROUP.search(text)
        if m is not None:
            ev.group = m.group(1)
            return []
        if _NO_KILLABLE in text:
            ev.no_killable = True
            return []
        if " process " in text:
            m = _REAPED.search(text)
            if m is not None:
                ev.reaped.append(int(m.group(1)))
                return []
            v = parse_kill_line(text)
            if v is not None:
                return self._kill(ev, v, text, t)
        return None

    def _kill(self, ev: OomEvent, v: Victim, text: str, t: float | None) -> list[OomEvent]:
        """A kill line inside an event: its victim, another of a group kill, the child
        of a `sacrifice child`, the victim printed again, or a new rate-limited event."""
        memcg = "Memory cgroup out of memory" in text
        killed = [x for x in ev.victims if x.killed]
        if not v.killed and not killed:  # "Kill process N (x) score S or sacrifice child"
            ev.victims.append(v)
            ev._chosen_child = True
            ev.memcg_lines = ev.memcg_lines or memcg
            return []
        if not v.killed:  # another choice after this event's kill: a rate-limited event
            out = self._close()
            new = self._open(t)
            new.memcg_lines = memcg
            new.victims.append(v)
            new._chosen_child = True
            return out
        if not killed or ev.group is not None or ev._chosen_child:
            ev.victims.append(v)
            ev._chosen_child = False
            ev.memcg_lines = ev.memcg_lines or memcg
            return []
        if any(x.pid == v.pid for x in killed):  # printed twice (group kill, 5.x)
            ev.victims.append(v)
            return []
        # another kill after this event's victim, with no header of its own: the
        # kernel's header was rate-limited; it is an event of its own
        out = self._close()
        new = self._open(t)
        new.memcg_lines = "Memory cgroup out of memory" in text
        new.victims.append(v)
        return out


def events(lines: Iterable[str]) -> Iterator[OomEvent]:
    """Every OOM event in `lines`, in order."""
    p = OomParser()
    for line in lines:
        yield from p.feed(line)
    yield from p.finish()


# Every whole OOM report opens with its trigger line ("... invoked oom-killer: ...",
# every kernel since 2.6), and every kill line holds "Kill" ("Killed process", "Kill
# process ... or sacrifice child"): a rate-limited report keeps only that. So past the
# head of a big log, file_events reads only from two lines before either (a wrapped
# paste) to the end of the event it opens, and skips the rest as bytes, unsplit and
# undecoded: most of a machine's log. Two fast scans: "oom-killer", and a memchr for
# "K". Only a report's middle with neither line (a paste cut off above its trigger),
# or one whose trigger was wrapped inside "oom-killer", needs the whole text read, and
# it is, in the head.
_TRIGGER_WORD = b"oom-killer"
HEAD_BYTES = 64 * 1024  # always read whole: a paste, or a rotated log's cut-off start


def _next_opening(data: bytes, pos: int, end: int) -> int:
    """Where the next trigger or kill line's word is in data[pos:end], or -1."""
    first = data.find(_TRIGGER_WORD, pos, end)
    stop = end if first < 0 else first
    k = data.find(b"K", pos, stop)
    while k >= 0:
        if data.startswith(b"Kill", k):
            return k
        k = data.find(b"K", k + 1, stop)
    return first


def _may_open(text: bytes) -> bool:
    return _next_opening(text, 0, len(text)) >= 0


def _line_start(data: bytes, lo: int, k: int, back: int) -> int:
    """Where the line `back` lines before the one holding data[k] starts (not
    before lo)."""
    start = k
    for _ in range(back + 1):
        nl = data.rfind(b"\n", lo, start)
        if nl < 0:
            return lo
        start = nl if _ < back else nl + 1
    return start


def file_events(
    f, max_len: int = 64 * 1024, block: int = 64 * 1024, head: int = HEAD_BYTES
) -> Iterator[OomEvent]:
    """Every OOM event in a binary file, in order: what `events(read_lines(f))` finds,
    with the text past `head` bytes read only near trigger and kill lines (see
    _next_opening): several times faster on a real log, where OOM reports are a sliver
    of the text."""
    p = OomParser()
    seen = 0  # bytes of the file before `data`
    carry = b""  # the last two unread lines of the block before (a wrapped trigger)
    for block_data in read_blocks(f, max_len, block):
        data = carry + block_data if carry else block_data
        seen -= len(carry)
        pos, end = 0, len(data)
        whole = max(0, min(end, head - seen))  # the head's part of data
        carry = b""
        while pos < end:
            if pos >= whole and p.idle:
                k = _next_opening(data, pos, end)
                if k < 0:
                    cs = _line_start(data, pos, end - 1, 1)
                    if cs > pos:
                        p.skip()
                    carry = data[cs:]
                    break
                start = _line_start(data, pos, k, 2)
                if start > pos:
                    p.skip()
                    pos = start
            nl = data.find(b"\n", pos)
            if nl < 0:
                nl = end
            yield from p.feed(data[pos:nl].decode("utf-8", "replace")[:max_len])
            pos = nl + 1
        seen += end
    yield from p.finish()


def read_blocks(f, max_len: int = 64 * 1024, block: int = 64 * 1024) -> Iterator[bytes]:
    """A binary file as blocks of about `block` bytes that end at a newline (the last
    may not). A line longer than `max_len` bytes is cut to `max_len` and the rest of it
    dropped: a 1 GiB line without a newline costs a block of memory, not 1 GiB."""
    tail = b""
    skipping = False  # inside an overlong line: drop until its newline
    while True:
        data = f.read(block)
        if not data:
            break
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                continue
            data, skipping = data[nl + 1 :], False
        data = tail + data if tail else data
        nl = data.rfind(b"\n")
        if nl < 0:
            tail = data
        else:
            tail = data[nl + 1 :]
            yield data[: nl + 1]
        if len(tail) > max_len:  # a line longer than max_len: keep its start
            yield tail[:max_len] + b"\n"
            tail, skipping = b"", True
    if tail and not skipping:
        yield tail


def read_lines(f, max_len: int = 64 * 1024, chunk: int = 1 << 20) -> Iterator[str]:
    """Lines of a binary file as text (UTF-8, bad bytes replaced), each cut at
    `max_len`: a 1 GiB line without a newline costs `chunk` bytes of memory, not 1 GiB
    (read_blocks)."""
    for data in read_blocks(f, max_len, chunk):
        lines = data.decode("utf-8", "replace").split("\n")
        if lines[-1] == "":
            lines.pop()  # the block's last newline
        for line in lines:
            yield line[:max_len]


__all__ = [
    "Candidate",
    "OomEvent",
    "OomParser",
    "Trigger",
    "Victim",
    "WHY_TEXT",
    "asked_text",
    "ranking",
    "ranking_line",
    "ranking_text",
    "events",
    "file_events",
    "parse_kill_line",
    "read_blocks",
    "read_lines",
    "strip_prefix",
]
