"""The guest test bed as a fixture: one boot of the Debian guest (scripts/vm.sh) per
script, shared by the tests that read its results.

`guest(script, mode)` copies tests/vm/SCRIPT into a fresh VM_OUT, boots the guest with
`bash $OUT/SCRIPT` as root, `--user` or `--console`, and returns a GuestRun. A boot
takes ~30 s under TCG once the image is cached (`/var/cache/beep-av-vm`), ~4 min from
nothing. Prerequisites (root, QEMU, mmdebstrap or a cached image): skip locally, fail
under CI=true."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, require

VM = ROOT / "scripts" / "vm.sh"
SCRIPTS = ROOT / "tests" / "vm"
TIMEOUT = 1500  # s: one boot, its script and an image build from nothing


@dataclass
class GuestRun:
    out: Path  # VM_OUT: what the script wrote under $OUT, serial.log, shots, card.wav
    rc: int
    stdout: str
    stderr: str
    seconds: float  # vm.sh's whole run (image, boot, command, power-off)
    boot_s: float | None  # host-side time from QEMU start to the command's start

    def text(self, rel: str) -> str:
        """A file the script wrote; the serial log's tail in the failure if it is absent."""
        p = self.out / rel
        assert p.exists(), f"the guest did not write {rel}; serial log ends:\n{self.tail()}"
        return p.read_text(errors="replace")

    def rc_of(self, rel: str) -> int:
        return int(self.text(rel).strip())

    def tail(self, n: int = 30) -> str:
        log = self.out / "serial.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join(lines[-n:] + ["--- vm.sh stderr ---", *self.stderr.splitlines()[-n:]])


def guest_prerequisites() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the guest test bed needs root (mmdebstrap, chroot, the image cache)"
    for tool in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4"):
        if not shutil.which(tool):
            return False, f"{tool} not found (scripts/setup.sh installs it)"
    return True, ""


@pytest.fixture(scope="session")
def guest(tmp_path_factory):
    """guest(script, mode="root"|"user"|"console", shots=()) -> GuestRun, one boot per
    (script, mode) per session."""
    runs: dict[tuple[str, str, tuple], GuestRun] = {}

    def run(script: str, mode: str = "root", shots: tuple[float, ...] = ()) -> GuestRun:
        key = (script, mode, tuple(shots))
        if key in runs:
            return runs[key]
        stem = f"guest-{Path(script).stem}-{mode}"
        reuse = os.environ.get("BEEP_GUEST_REUSE")  # a developer's aid: read a kept run
        if reuse and not IN_CI and (Path(reuse) / f"{stem}0" / "done").exists():
            runs[key] = GuestRun(Path(reuse) / f"{stem}0", 0, "", "", 0.0, None)
            return runs[key]
        ok, why = guest_prerequisites()
        require(ok, why)
        out = tmp_path_factory.mktemp(stem)
        shutil.copy(SCRIPTS / script, out / script)
        argv = [str(VM)]
        if mode != "root":
            argv.append(f"--{mode}")
        if shots:
            argv += ["--shots", ",".join(f"{t:g}" for t in shots)]
        argv += ["--", f"bash $OUT/{script}"]
        t = time.monotonic()
        p = subprocess.run(
            argv,
            env={**os.environ, "VM_OUT": str(out)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        m = re.search(r"guest up in (\d+) s", p.stderr)
        runs[key] = GuestRun(
            out, p.returncode, p.stdout, p.stderr, time.monotonic() - t,
            float(m.group(1)) if m else None,
        )  # fmt: skip
        keep = os.environ.get("BEEP_GUEST_KEEP")  # a copy for a human to look at
        if keep:
            shutil.copytree(out, Path(keep) / out.name, dirs_exist_ok=True)
        return runs[key]

    return run
