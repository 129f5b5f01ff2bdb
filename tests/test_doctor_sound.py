"""`beep-av doctor` names the sound server (issue 25): PipeWire, PulseAudio, plain ALSA."""

from __future__ import annotations

import pytest

from beep_av.doctor import name_sound_server


@pytest.mark.parametrize(
    "sockets, procs, word",
    [
        (
            {"pipewire", "pulse"},
            {"pipewire", "wireplumber", "pipewire-pulse"},
            "PipeWire (pipewire-pulse",
        ),
        ({"pipewire", "pulse"}, set(), "PipeWire (pipewire-pulse"),  # socket-activated, idle
        ({"pipewire"}, {"pipewire"}, "PipeWire (without pipewire-pulse"),
        ({"pulse"}, {"pulseaudio"}, "PulseAudio"),
        (set(), {"pulseaudio"}, "PulseAudio"),
        (set(), {"bash"}, "plain ALSA"),
    ],
)
def test_the_sound_server_is_named_from_its_sockets_and_processes(sockets, procs, word):
    assert name_sound_server(sockets, procs).startswith(word)
