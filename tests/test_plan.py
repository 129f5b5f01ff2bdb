"""Resolving sizes against the machine: table tests."""

from __future__ import annotations

import pytest

from beep_av.config import Settings
from beep_av.errors import BadInput
from beep_av.plan import AUTO_RAM_MAX, AUTO_RAM_MIN, SAFE_SHARE, STORY_SECONDS, resolve_plan

MiB = 1024**2
GiB = 1024**3


@pytest.mark.parametrize(
    "avail,expect",
    [
        (24 * GiB, AUTO_RAM_MAX),
        (1 * GiB, AUTO_RAM_MIN),
        (8 * GiB, int(8 * GiB * 0.04) // MiB * MiB),
    ],
)
def test_auto_ram_is_a_safe_share(avail, expect):
    p = resolve_plan(Settings(), avail, avail + GiB)
    assert p.ram == expect
    assert p.ram <= avail * SAFE_SHARE
    assert p.cache == p.ram // 4 // MiB * MiB
    assert p.swap is None and p.swap_auto


def test_auto_rate_tells_the_story_in_about_a_minute():
    p = resolve_plan(Settings(), 24 * GiB, 25 * GiB)
    seconds = (p.ram + p.ram // 2) / p.rate
    assert 0.9 * STORY_SECONDS <= seconds <= 1.1 * STORY_SECONDS
    # calm + fill + swap + kill stays within the 45..90 s the issue asks for
    assert 45 <= 3 + seconds <= 90


@pytest.mark.parametrize(
    "kw,expect",
    [
        (
            dict(ram="192M", swap="128M", cache="48M", rate="96M/s"),
            (192 * MiB, 128 * MiB, 48 * MiB, 96 * MiB),
        ),
        (dict(ram="1G", swap="off", cache="0", rate="8M"), (GiB, 0, 0, 8 * MiB)),
        (dict(ram="10%", swap="auto", cache="10M", rate="1G/s"), (GiB, None, 10 * MiB, GiB)),
    ],
)
def test_explicit_sizes(kw, expect):
    p = resolve_plan(Settings(**kw), 10 * GiB, 12 * GiB)
    assert (p.ram, p.swap, p.cache, p.rate) == expect


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(ram="100G"), "larger than this machine"),
        (dict(ram="6G"), "safely"),
        (dict(ram="16M"), "too small"),
        (dict(ram="128M", cache="256M"), "--cache"),
        (dict(rate="100K/s"), "too slow"),
        (dict(ram="12parsecs"), "parsecs"),
    ],
)
def test_refusals(kw, needle):
    with pytest.raises(BadInput) as e:
        resolve_plan(Settings(**kw), 10 * GiB, 12 * GiB)
    assert needle in e.value.message


def test_rehearsal_may_model_a_stage_larger_than_the_safe_share():
    p = resolve_plan(Settings(stage="rehearsal", ram="6G"), 10 * GiB, 12 * GiB)
    assert p.ram == 6 * GiB
