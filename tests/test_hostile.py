"""Hostile input (issue 8): every parser that reads something from outside gives a clear
error (BadInput for what the user gave, ParseError for what the kernel gave) or a correct
value, never another exception.

Property tests with hypothesis, derandomized (a fixed seed: CI sees the same examples
every run) and bounded, so the file runs in well under a minute. Each parser gets
arbitrary text, text shaped like the real thing with hostile parts, and valid text whose
value is known."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from beep_av import procfs
from beep_av.app import parse_key_plan
from beep_av.config import load_config, parse_rate, parse_size
from beep_av.errors import BadInput
from beep_av.model import KillRecord, Phase, ShowState, Snapshot
from beep_av.procfs import ParseError, cgroup_mount_path, parse_proc_cgroup, parse_swaps
from beep_av.recording import Recorder, load
from beep_av.video.captions import REQUIRED, load_captions
from beep_av.video.select import KEY_NAMES, ScriptedKeys

FAST = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(FAST, max_examples=80)  # parsers that touch a file per example

# text the kernel never writes, and text it does, mixed
NASTY = st.sampled_from(
    [
        "",
        "\n",
        "\x00",
        "-1",
        "1e9",
        "nan",
        "inf",
        "0x10",
        "²",
        "٣",
        "9" * 30,
        "9" * 5000,
        " total=",
        "max",
        ")",
        "(",
        "Killed process ",
        "\\x41",
        "kB",
        ":",
        ";",
        ",",
        "=",
    ]
)
WORDS = st.sampled_from(
    [
        "MemTotal:",
        "MemFree:",
        "MemAvailable:",
        "Cached:",
        "SwapTotal:",
        "SwapFree:",
        "kB",
        "some",
        "full",
        "avg10=1.00",
        "avg60=0.00",
        "avg300=0.00",
        "total=12",
        "cache",
        "rss",
        "total_cache",
        "total_rss",
        "anon",
        "file",
        "oom_kill",
        "pswpin",
        "pswpout",
        "oom",
        "max",
        "under_oom",
        "123",
        "0",
        "\n",
        " ",
    ]
)
SHAPED = st.lists(st.one_of(WORDS, NASTY, st.text(max_size=8)), max_size=30).map(" ".join)
ANY_TEXT = st.one_of(st.text(max_size=300), SHAPED)


def _bytes(parse):
    """A parser of a pread's raw bytes, fed the text as UTF-8."""

    def run(text: str):
        return parse(text.encode("utf-8", "surrogatepass"))

    run.__name__ = getattr(parse, "__name__", "fast")
    return run


KERNEL_PARSERS = [
    procfs.parse_int,
    procfs.parse_limit,
    procfs.parse_meminfo,
    lambda t: procfs.pick_fields(t, ("cache", "rss", "total_cache", "anon", "file")),
    procfs.parse_kmsg_record,
    procfs.parse_oom_kill,
    procfs.parse_proc_stat,
    procfs.parse_nspid,
    _bytes(procfs.parse_int),
    _bytes(procfs.v1_memory_use),
    _bytes(procfs.v2_memory_use),
    _bytes(procfs.meminfo_use),
    _bytes(procfs.psi_totals),
    _bytes(procfs.oom_counts),
]

# ---------------------------------------------------------------- /proc, cgroup, kmsg


@pytest.mark.parametrize("parse", KERNEL_PARSERS, ids=lambda f: getattr(f, "__name__", "pick"))
@FAST
@given(text=ANY_TEXT)
def test_kernel_parsers_give_a_value_or_parse_error(parse, text):
    try:
        parse(text)  # any value is fine here: the valid-input tests check values
    except ParseError as e:
        assert str(e)  # says what was wrong


@FAST
@given(n=st.integers(0, (1 << 64) - 1), pad=st.sampled_from(["", "\n", " \n", "\t"]))
def test_parse_int_is_correct(n, pad):
    assert procfs.parse_int(f"{n}{pad}") == n == procfs.parse_int(f"{n}{pad}".encode())


@FAST
@given(
    fields=st.dictionaries(
        st.sampled_from(["MemTotal", "MemFree", "MemAvailable", "Cached", "Buffers", "Shmem"]),
        st.integers(0, 1 << 40),
    ),
    swap=st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
)
def test_parse_meminfo_is_correct(fields, swap):
    text = "".join(f"{k}:{' ' * 8}{v} kB\n" for k, v in fields.items())
    text += f"SwapTotal: {swap[0]} kB\nSwapFree: {swap[1]} kB\nHugePages_Total: 0\n"
    if not {"MemTotal", "MemFree", "Cached"} <= set(fields):
        with pytest.raises(ParseError, match="missing"):
            procfs.parse_meminfo(text)
        return
    m = procfs.parse_meminfo(text)
    assert m.MemTotal_bytes == fields["MemTotal"] * 1024
    assert m.MemAvailable_bytes == (
        fields["MemAvailable"] * 1024 if "MemAvailable" in fields else None
    )
    assert (m.SwapTotal_bytes, m.SwapFree_bytes) == (swap[0] * 1024, swap[1] * 1024)


@FAST
@given(
    some=st.tuples(st.floats(0, 100), st.integers(0, 1 << 60)),
    full=st.none() | st.tuples(st.floats(0, 100), st.integers(0, 1 << 60)),
)
def test_psi_totals_is_correct(some, full):
    def line(kind, avg, total):
        return f"{kind} avg10={avg:.2f} avg60=0.00 avg300=0.00 total={total}\n"

    text = line("some", *some) + (line("full", *full) if full else "")
    assert procfs.psi_totals(text.encode()) == (some[1], full[1] if full else None)


# the comm of a process is anything the process chose (prctl PR_SET_NAME), up to 15 bytes
COMM = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"),
    min_size=1,
    max_size=15,
)


@FAST
@given(pid=st.integers(1, 1 << 22), comm=COMM, rss=st.integers(0, 1 << 40))
def test_kmsg_kill_record_names_the_right_pid_whatever_the_comm(pid, comm, rss):
    msg = (
        f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:1212244kB, "
        f"anon-rss:{rss}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1100kB oom_score_adj:1000"
    )
    # /dev/kmsg escapes control bytes and backslashes as \xNN
    escaped = "".join(
        f"\\x{ord(c):02x}" if ord(c) < 0x20 or c == "\\" or ord(c) == 0x7F else c for c in msg
    )
    rec = procfs.parse_kmsg_record(f"3,1234,{pid * 7},-;{escaped}\n SUBSYSTEM=memory\n")
    assert rec is not None and rec.level == 3 and rec.seq == 1234
    kill = procfs.parse_oom_kill(rec.message, rec.timestamp_us)
    assert kill is not None
    assert (kill.pid, kill.name, kill.anon_rss_kib, kill.cgroup_oom) == (pid, comm, rss, True)


@FAST
@given(text=ANY_TEXT)
def test_proc_cgroup_never_raises(text):
    v1, v2 = parse_proc_cgroup(text)
    assert v1 is None or isinstance(v1, str)
    assert v2 is None or isinstance(v2, str)


@FAST
@given(text=ANY_TEXT)
def test_proc_swaps_never_raises(text):
    for name, size, used in parse_swaps("Filename Type Size Used Priority\n" + text):
        assert isinstance(name, str) and size >= 0 and used >= 0


@FAST
@given(text=ANY_TEXT, path=st.text(max_size=40))
def test_mountinfo_never_raises(text, path):
    got = cgroup_mount_path(text, path)
    assert got is None or (got[0] in (1, 2) and got[1].startswith("/"))


@FAST
@given(
    text=st.one_of(
        ANY_TEXT, st.from_regex(r"(\d+ \d+ \d+:\d+ /\S* /\S*( \S+)* - \S+ \S+( \S+)?\n)+")
    )
)
def test_parse_mountinfo_never_raises(text):
    mounts = procfs.parse_mountinfo(text)
    for m in mounts:
        assert m.root.startswith("/") and m.mount_point.startswith("/")
        got = procfs.mount_of(mounts, m.mount_point)
        assert got is not None and len(got.mount_point) >= len(m.mount_point.rstrip("/") or "/")


# ---------------------------------------------------------------- SIZE and RATE

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "gb": 1 << 30}


@FAST
@given(text=st.one_of(st.text(max_size=20), SHAPED, st.from_regex(r"\s*-?[0-9.]+\s*[a-zA-Z%]*")))
def test_sizes_and_rates_give_a_value_or_bad_input(text):
    for parse in (
        lambda t: parse_size(t, available=1 << 34),
        lambda t: parse_size(t),
        parse_rate,
    ):
        try:
            value = parse(text)
        except BadInput as e:
            assert e.message and "\n" not in e.message
        else:
            assert isinstance(value, int) and 0 <= value <= 1 << 50


@FAST
@given(n=st.integers(0, 1 << 20), unit=st.sampled_from(sorted(UNITS)), rate=st.booleans())
def test_sizes_and_rates_are_correct(n, unit, rate):
    if rate:
        assume(n > 0)
        assert parse_rate(f"{n}{unit}/s") == n * UNITS[unit]
    else:
        assert parse_size(f" {n}{unit} ") == n * UNITS[unit]


@FAST
@given(pct=st.integers(0, 100), available=st.integers(0, 1 << 40))
def test_percentages_are_of_available(pct, available):
    assert parse_size(f"{pct}%", available) == int(available * pct / 100)


# ---------------------------------------------------------------- config files

KEYS = ["ram", "swap", "rate", "beep-freq", "beep_length", "calm", "seed", "yes", "output", "x"]
VALUES = st.one_of(
    st.text(max_size=10),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    return json.dumps(v)


@FEW
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4).map(
            lambda d: "\n".join(f"{k} = {_toml_value(v)}" for k, v in d.items()).encode()
        ),
    )
)
def test_config_files_give_settings_or_bad_input(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("cfg") / "show.toml"
    path.write_bytes(body)
    try:
        got = load_config(str(path))
    except BadInput as e:
        assert e.message.startswith(f"{path}") or e.message.startswith("--config")
    else:
        assert isinstance(got, dict) and all("-" not in k for k in got)


# ---------------------------------------------------------------- key plans and captions


@FAST
@given(plan=st.one_of(st.text(max_size=40), st.from_regex(r"([0-9.e+-]*:[a-z+-]*,?){0,4}")))
def test_key_plans_give_a_plan_or_bad_input(plan):
    try:
        got = parse_key_plan(plan)
        if got:
            ScriptedKeys(object(), got)
    except BadInput as e:
        assert e.message.startswith("--keys")
    else:
        assert got is None or all(isinstance(t, float) and isinstance(k, str) for t, k in got)


@FAST
@given(
    items=st.lists(
        st.tuples(st.floats(0, 1000), st.sampled_from(sorted(KEY_NAMES))), min_size=1, max_size=5
    )
)
def test_key_plans_are_correct(items):
    text = ",".join(f"{t!r}:{k}" for t, k in items)
    assert parse_key_plan(text) == [(float(t), k) for t, k in items]


@FEW
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from([*REQUIRED, "calm", "bogus", "skipped_oom"]),
            st.one_of(st.text(max_size=30), st.integers(), st.text(min_size=401, max_size=402)),
        ).map(lambda d: "\n".join(f"{k} = {_toml_value(v)}" for k, v in d.items()).encode()),
    )
)
def test_captions_files_give_captions_or_bad_input(tmp_path_factory, body):
    d = tmp_path_factory.mktemp("cap")
    (d / "xx.toml").write_bytes(body)
    try:
        got = load_captions("xx", d)
    except BadInput as e:
        assert e.message.startswith("captions: ")
    else:
        assert set(REQUIRED) <= set(got) and all(isinstance(v, str) for v in got.values())


# ---------------------------------------------------------------- recordings


def _recording(path: Path, n: int) -> None:
    kill = KillRecord(7, "hog", 137, 9, 1, "Killed process 7 (hog)", 5, ("exit",), 1.0, 0.5)
    with Recorder(str(path), {"stage": "cgroup"}) as r:
        for i in range(n):
            phase = Phase.FINALE if i == n - 1 else Phase.FILLING
            r.write_state(
                ShowState(
                    t=i * 0.02,
                    phase=phase,
                    intensity=0.5,
                    snapshot=Snapshot(t=i * 0.02, anon_bytes=i * 4096, ram_limit=1 << 27),
                    entered=((Phase.CALM, 0.0), (phase, 0.0)),
                    kill=kill if phase is Phase.FINALE else None,
                )
            )
        r.end(n * 0.02, "finale")


@pytest.fixture(scope="module")
def good_recording(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("rec") / "good.jsonl"
    _recording(path, 40)
    return path.read_bytes()


@FEW
@given(cut=st.integers(0, 10_000), junk=st.binary(max_size=30), where=st.integers(0, 10_000))
def test_damaged_recordings_load_or_give_bad_input(
    tmp_path_factory, good_recording, cut, junk, where
):
    data = bytearray(good_recording[: cut % (len(good_recording) + 1)])
    data[where % (len(data) + 1) : where % (len(data) + 1)] = junk
    path = tmp_path_factory.mktemp("bad") / "r.jsonl"
    path.write_bytes(bytes(data))
    try:
        rec = load(str(path))
    except BadInput as e:
        assert e.message.startswith(str(path)) and "\n" not in e.message
    else:
        assert 1 <= len(rec) <= 40
        assert all(k in rec.samples for k in ("t", "ram", "phase"))


@FEW
@given(
    lines=st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["sample", "phase", "kill", "end", "skip", "new"])},
                optional={
                    "t": st.one_of(st.floats(), st.integers(), st.text(max_size=3), st.none()),
                    "phase": st.one_of(
                        st.sampled_from([p.value for p in Phase]), st.text(max_size=5)
                    ),
                    "ram": st.one_of(st.integers(-(1 << 70), 1 << 70), st.floats(), st.booleans()),
                },
            ).map(lambda d: json.dumps(d, allow_nan=True)),
            st.text(string.printable, max_size=20),
        ),
        max_size=8,
    )
)
def test_hand_written_recordings_load_or_give_bad_input(tmp_path_factory, lines):
    head = json.dumps({"type": "header", "format": "beep-av/1"})
    path = tmp_path_factory.mktemp("hand") / "r.jsonl"
    path.write_text("\n".join([head, *lines]) + "\n")
    try:
        rec = load(str(path))
    except BadInput as e:
        assert e.message.startswith(str(path))
    else:
        assert len(rec) >= 1


def test_a_whole_recording_round_trips(tmp_path):
    path = tmp_path / "r.jsonl"
    _recording(path, 40)
    rec = load(str(path))
    assert len(rec) == 40 and not rec.truncated
    assert rec.kill is not None and rec.kill["pid"] == 7
    assert int(rec.samples["ram"][-1]) == 39 * 4096
