"""The command-line contract: bad input exits 2 with one line and creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beep_av.cli import build_parser, main, settings_from_args
from beep_av.config import Settings
from beep_av.errors import BadInput
from tests.conftest import beep


def _own_memory_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrl, path = line.split(":", 2)
            if "memory" in ctrl.split(","):
                p = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                return p if p.is_dir() else None
    except OSError:
        return None
    return None


def _children(p: Path | None) -> set[str]:
    if p is None:
        return set()
    return {c.name for c in p.iterdir() if c.is_dir()}


BAD = [
    (["--ram", "12parsecs"], "parsecs"),
    (["--ram", "-5M"], "negative"),
    (["--rate", "0"], "--rate"),
    (["--ram", "100T"], "larger than this machine"),
    (["--ram", "128M", "--cache", "256M"], "--cache"),
    (["--stage", "moon"], "moon"),
    (["--config", "/nonexistent/beep.toml"], "cannot read"),
    (["--record", "/nonexistent-dir/r.jsonl"], "does not exist"),
    (["--beep-freq", "0"], "20..20000"),
    (["--beep-freq", "30000"], "20..20000"),
    (["--beep-length", "-1"], "10..10000"),
    (["--captions", "de"], "captions"),
    (["--no-such-flag"], "unrecognized"),
    (["report", "x.jsonl"], "-o"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    cg = _own_memory_cgroup()
    before = _children(cg)
    r = (
        beep(*args, "--output", "headless", "--audio", "off")
        if args[0] != "report"
        else beep(*args)
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("beep-av: ")
    assert needle in lines[0]
    assert "Traceback" not in r.stderr
    assert _children(cg) == before  # nothing created


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "beep.toml"
    cfg.write_text('ram = "256M"\nrate = "32M/s"\ncaptions = "fr"\n')
    args = build_parser().parse_args(["show", "--config", str(cfg), "--rate", "64M/s"])
    s = settings_from_args(args)
    assert (s.ram, s.rate, s.captions) == ("256M", "64M/s", "fr")
    assert s.cache == Settings().cache


@pytest.mark.parametrize(
    "text,needle",
    [
        ('colour = "red"\n', "unknown key 'colour'"),
        ('beep_freq = "loud"\n', "wrong type"),
        ('ram = "-5M"\n', "negative"),
        ("ram = \n", "not valid TOML"),
    ],
)
def test_bad_config_names_key_and_file(text, needle, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    args = build_parser().parse_args(["show", "--config", str(cfg)])
    with pytest.raises(BadInput) as e:
        settings_from_args(args)
    assert needle in e.value.message
    assert str(cfg) in e.value.message


def test_no_subcommand_means_show(capsys):
    assert main(["--ram", "nonsense"]) == 2
    assert "--ram" in capsys.readouterr().err


def test_help_has_examples():
    r = beep("--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and "beep-av rehearse" in r.stdout


def test_version():
    r = beep("--version")
    assert r.returncode == 0 and r.stdout.startswith("beep-av ")


def test_unreadable_config_as_root_is_still_reported(tmp_path):
    cfg = tmp_path / "dir.toml"
    cfg.mkdir()  # a directory cannot be read as a file, even by root
    r = beep("--config", str(cfg), "--output", "headless", "--audio", "off")
    assert r.returncode == 2 and "cannot read" in r.stderr
    assert os.path.isdir(cfg)


def test_every_example_in_the_help_is_a_valid_command():
    """The examples a user copies from --help parse, and their settings (an act's
    included) pass the same checks a show makes before it stages anything."""
    import shlex

    from beep_av.acts.spec import check_act_settings
    from beep_av.cli import EPILOG_SHOW, build_parser, settings_from_args

    lines = [ln.strip() for ln in EPILOG_SHOW.splitlines() if ln.startswith("  beep-av")]
    examples = [ln.split("  ")[0] for ln in lines]
    examples = [shlex.split(ln)[1:] for ln in examples]
    assert len(examples) >= 10 and any("--act" in e for e in examples)
    for argv in examples:
        args = build_parser().parse_args(argv or ["show"])
        if args.command in ("show", "rehearse"):
            check_act_settings(settings_from_args(args))
