#!/usr/bin/env bash
# Set up everything Beep and its tests need on a fresh Debian machine: the Debian
# packages (as root), then a virtualenv in .venv with the project and its dev tools.
# Idempotent: packages already installed are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# `bash scripts/setup.sh`: what the show needs (make demo). `--test`: also what the tests
# and the guest test bed need (make test).
FOR_TESTS=0
[ "${1:-}" = "--test" ] && FOR_TESTS=1

DEB_PACKAGES=(
  libportaudio2                         # sounddevice's PortAudio
  libasound2-plugins                    # ALSA -> PulseAudio/PipeWire route PortAudio uses
  util-linux                            # mkswap, swapon, swapoff: the stage's swapfile
)
TEST_PACKAGES=(
  pulseaudio pulseaudio-utils alsa-utils  # a real sound server (null sink) for tests
  xvfb x11-utils imagemagick            # a real X server and screenshots for tests
  tmux                                  # a real terminal for tests
  stress-ng                             # the hog's benchmark baseline
  e2fsprogs                             # mkfs.ext4: real full-disk tests on a loop filesystem
  gcc libc6-dev                         # the benchmark's C page-toucher
  qemu-system-x86 qemu-utils            # the guest test bed (scripts/vm.sh)
  mmdebstrap                            # the guest's Debian image (scripts/vm-image.sh)
  ffmpeg                                # ffprobe/ffmpeg: rendered videos read by a decoder not ours
  fonts-dejavu-core                     # a monospace font for `render --style terminal`
)
((FOR_TESTS)) && DEB_PACKAGES+=("${TEST_PACKAGES[@]}")

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (install them as root): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ((FOR_TESTS)); then
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch .venv/.setup-test-done
else
  .venv/bin/python -m pip install -q -e .
fi
touch .venv/.setup-done
echo "setup: done (.venv/bin/beep-av)"
