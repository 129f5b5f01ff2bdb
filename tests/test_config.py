"""SIZE and RATE parsing, TOML config files, presets, and flags over files."""

from __future__ import annotations

import pytest

from beep_av.config import (
    Settings,
    load_config,
    load_preset,
    merge,
    parse_rate,
    parse_size,
    validate_values,
)
from beep_av.errors import BadInput
from tests.conftest import ROOT

K, M, G = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    "text, available, expected",
    [
        ("512M", None, 512 * M),
        ("1.5G", None, int(1.5 * G)),
        ("256MiB", None, 256 * M),
        ("256mib", None, 256 * M),
        ("64MB", None, 64 * M),
        ("4096", None, 4096),
        ("0", None, 0),
        ("  12 K ", None, 12 * K),
        (".5G", None, G // 2),
        ("10%", 1000 * M, 100 * M),
        ("100%", 8 * G, 8 * G),
        ("1T", None, 1024 * G),
    ],
)
def test_size(text, available, expected):
    assert parse_size(text, available) == expected


@pytest.mark.parametrize(
    "text, available",
    [
        ("12parsecs", None),
        ("-5M", None),
        ("1e400", None),
        ("", None),
        ("   ", None),
        ("10%", None),  # a percentage needs something to be a percentage of
        ("150%", G),
        ("nan", None),
        ("inf", None),
        ("M", None),
        ("5 M B", None),
        ("1,5G", None),
        ("9" * 400, None),  # a float too large becomes inf
        ("2048T", None),  # above 1 PiB: a typo, not a machine
        ("64M/s", None),
        (None, None),
        (512, None),
        ("５12M", None),  # full-width digit
    ],
)
def test_bad_size(text, available):
    with pytest.raises(BadInput) as e:
        parse_size(text, available, what="--ram")
    assert e.value.message.startswith("--ram") and "\n" not in e.value.message


@pytest.mark.parametrize(
    "text, expected",
    [
        (" 64M/s ", 64 * M),
        ("64M", 64 * M),
        ("1G/s", G),
        ("1.5G/S", int(1.5 * G)),
        ("256MiB/s", 256 * M),
        ("1", 1),
    ],
)
def test_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["0", "0M/s", "-5M/s", "12parsecs", "", "/s", "1e400/s", "10%", "64M/h", None]
)
def test_bad_rate(text):
    with pytest.raises(BadInput) as e:
        parse_rate(text)
    assert "--rate" in e.value.message


# ---------------------------------------------------------------- config files


def _cfg(tmp_path, text: str | bytes) -> str:
    p = tmp_path / "beep.toml"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(p)


def test_config_file_both_spellings(tmp_path):
    path = _cfg(
        tmp_path,
        'ram = "192M"\nbeep-freq = 440\nbeep_length = 250.5\nseed = 7\nyes = true\n'
        'output = "framebuffer:/dev/fb1"\naudio = "wav:out.wav"\n',
    )
    got = load_config(path)
    assert got == {
        "ram": "192M",
        "beep_freq": 440,
        "beep_length": 250.5,
        "seed": 7,
        "yes": True,
        "output": "framebuffer:/dev/fb1",
        "audio": "wav:out.wav",
    }


@pytest.mark.parametrize(
    "text, words",
    [
        ("volume = 11\n", ["unknown key", "volume"]),
        ("ram = 512\n", ["ram", "wrong type"]),
        ('seed = "seven"\n', ["seed", "wrong type"]),
        ("seed = true\n", ["seed", "boolean"]),
        ("yes = 1\n", ["yes", "wrong type"]),
        ('beep-freq = "loud"\n', ["beep-freq", "wrong type"]),
        ('ram = "-5M"\n', ["ram", "negative"]),
        ('cache = "-1"\n', ["cache", "negative"]),
        ('ram = "0"\n', ["ram", "more than 0"]),
        ('ram = "12parsecs"\n', ["ram"]),
        ('rate = "0M/s"\n', ["rate"]),
        ('swap = "lots"\n', ["swap"]),
        ('stage = "moon"\n', ["stage", "moon"]),
        ('captions = "de"\n', ["captions"]),
        ('look = "fancy"\n', ["look"]),
        ('output = "hologram"\n', ["output"]),
        ('output = "window:/dev/fb0"\n', ["output"]),
        ('output = "framebuffer:"\n', ["output"]),
        ('audio = "wav:"\n', ["audio"]),
        ('audio = "speakers"\n', ["audio"]),
        ("beep-freq = 5\n", ["beep_freq", "Hz"]),
        ("beep-freq = nan\n", ["beep_freq"]),
        ("speed = inf\n", ["speed"]),
        ("seed = -1\n", ["seed"]),
        ("calm = -1.0\n", ["calm"]),
        ("frames_every = 0\n", ["frames_every"]),
        ('[show]\nram = "1G"\n', ["show"]),
        ("ram = [1, 2]\n", ["ram", "wrong type"]),
        ('ram = "1G"\nram = "2G"\n', ["not valid TOML"]),
        ("ram = \n", ["not valid TOML"]),
        (b"\xff\xfe r = 1", ["not valid TOML"]),
        (b'ram = "1G"\x00', ["not valid TOML"]),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, text, words):
    path = _cfg(tmp_path, text)
    with pytest.raises(BadInput) as e:
        load_config(path)
    msg = e.value.message
    assert path in msg and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_unreadable_config(tmp_path):
    for path in (str(tmp_path / "missing.toml"), str(tmp_path)):
        with pytest.raises(BadInput) as e:
            load_config(path)
        assert path in e.value.message and "cannot read" in e.value.message


def test_cache_zero_is_allowed():
    validate_values({"cache": "0"}, "flags")  # nothing to evict: the story skips a phase


def test_flags_override_the_file_and_the_preset(tmp_path):
    preset = load_preset("classroom")
    file = load_config(_cfg(tmp_path, 'rate = "8M/s"\ncaptions = "fr"\n'))
    flags = {"captions": "off", "seed": None}  # None: flag not given
    s = merge(Settings(), preset, file, flags)
    assert s.rate == "8M/s"  # file over preset
    assert s.captions == "off"  # flag over file
    assert s.ram == preset["ram"]  # preset where nobody else spoke
    assert s.seed is None and s.beep_freq == Settings().beep_freq


@pytest.mark.parametrize("name", ["talk", "classroom", "tty-art"])
def test_presets_load_and_validate(name):
    values = load_preset(name)
    assert values
    validate_values(values, name)
    merge(Settings(), values)


def test_presets_say_what_they_promise():
    talk, cls, art = (load_preset(n) for n in ("talk", "classroom", "tty-art"))
    assert talk["output"] == "fullscreen" and talk["captions"] == "en"
    assert cls["captions"] != "off" and parse_rate(cls["rate"]) < 64 * M
    assert parse_size(cls["ram"]) <= 512 * M  # safe on a shared machine
    assert art == {"output": "auto", "captions": "off", "look": "raw"}


def test_every_preset_file_is_tested():
    assert {p.stem for p in (ROOT / "assets" / "presets").glob("*.toml")} == {
        "talk",
        "classroom",
        "tty-art",
    }


def test_unknown_preset():
    with pytest.raises(BadInput) as e:
        load_preset("opera")
    assert "opera" in e.value.message and "talk" in e.value.message


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "talk/../talk", "../presets/talk", "", "/tmp/x", "TALK"]
)
def test_preset_names_are_names(name):
    with pytest.raises(BadInput):
        load_preset(name)
