"""16-bit PCM WAV files: the show's audio export and the golden references. An adapter:
it touches the file system only."""

from __future__ import annotations

import wave

import numpy as np

from beep_av import outfiles

FULL_SCALE = 32767.0


def to_pcm16(block: np.ndarray) -> bytes:
    """(frames, channels) float in [-1, 1] -> little-endian int16 bytes (clipped)."""
    scaled = np.clip(np.asarray(block, dtype=np.float32), -1.0, 1.0) * FULL_SCALE
    return np.rint(scaled).astype("<i2").tobytes()


class WavWriter:
    """A WAV file written block by block (the header is completed on close). Opened
    under outfiles' rules; raises BadInput (one line starting with `label`)."""

    def __init__(self, path: str, rate: int, channels: int = 2, label: str = "") -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self.frames = 0
        self._out = outfiles.open_file(path, label or f"wav {path}", "wb")
        self._w = wave.open(self._out.f, "wb")  # noqa: SIM115 - closed in close()
        self._w.setnchannels(channels)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, block: np.ndarray) -> None:
        """Append (frames, channels) float samples."""
        self._w.writeframesraw(to_pcm16(block))
        self.frames += block.shape[0]

    def close(self) -> None:
        if self._w is not None:
            try:
                self._w.close()  # completes the header; a file object given stays open
            finally:
                self._w = None
                self._out.f.close()


def write_wav(path: str, data: np.ndarray, rate: int) -> None:
    """Write a whole (frames, channels) float array as 16-bit PCM."""
    w = WavWriter(path, rate, data.shape[1])
    try:
        w.write(data)
    finally:
        w.close()


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV -> ((frames, channels) float32 in [-1, 1], rate in Hz)."""
    with wave.open(path, "rb") as r:
        if r.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is supported")
        ch, rate, n = r.getnchannels(), r.getframerate(), r.getnframes()
        raw = r.readframes(n)
    data = np.frombuffer(raw, dtype="<i2").reshape(-1, ch).astype(np.float32) / FULL_SCALE
    return data, rate
