"""16-bit PCM WAV files: the show's audio export and the golden references. An adapter:
it touches the file system only."""

from __future__ import annotations

import wave

import numpy as np

FULL_SCALE = 32767.0


def to_pcm16(block: np.ndarray) -> bytes:
    """(frames, channels) float in [-1, 1] -> little-endian int16 bytes (clipped)."""
    scaled = np.clip(np.asarray(block, dtype=np.float32), -1.0, 1.0) * FULL_SCALE
    return np.rint(scaled).astype("<i2").tobytes()


class WavWriter:
    """A WAV file written block by block (the header is completed on close)."""

    def __init__(self, path: str, rate: int, channels: int = 2) -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self.frames = 0
        self._w = wave.open(path, "wb")  # noqa: SIM115 - closed in close()
        self._w.setnchannels(channels)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, block: np.ndarray) -> None:
        """Append (frames, channels) float samples."""
        self._w.writeframesraw(to_pcm16(block))
        self.frames += block.shape[0]

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


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
