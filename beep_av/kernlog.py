"""The kernel's log for a user who cannot open /dev/kmsg.

Debian and Ubuntu set kernel.dmesg_restrict=1: /dev/kmsg needs CAP_SYSLOG. journald
keeps the same records with the kernel's own timestamps (`_SOURCE_MONOTONIC_TIMESTAMP`,
the printk clock), readable by the `adm` and `systemd-journal` groups (Ubuntu puts the
first user in `adm`). This adapter follows them through `journalctl -k -f` and hands out
(timestamp_us, message) pairs, the same as a /dev/kmsg record. Not in the 50 Hz path:
the sampler drains its pipe only when poll says it is readable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

JOURNAL_READ = 65536
PROBE_TIMEOUT = 10.0  # s: journalctl can be slow on a cold journal


def parse_journal_line(line: bytes) -> tuple[int, str] | None:
    """One `journalctl -o json` line -> (printk timestamp in µs, MESSAGE); None for
    anything else (no message, a binary message, no timestamp, not JSON)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    msg = obj.get("MESSAGE")
    ts = obj.get("_SOURCE_MONOTONIC_TIMESTAMP", obj.get("__MONOTONIC_TIMESTAMP"))
    if not isinstance(msg, str) or not isinstance(ts, str) or not ts.isdigit():
        return None
    return int(ts), msg


def journal_readable() -> bool:
    """True when this user sees the kernel's records in the journal (a user outside
    adm/systemd-journal sees only their own journal: no kernel records at all)."""
    if not shutil.which("journalctl"):
        return False
    try:
        p = subprocess.run(
            ["journalctl", "-k", "-b", "-n", "1", "-q", "-o", "json", "--no-pager"],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0 and any(parse_journal_line(x) for x in p.stdout.splitlines())


def kmsg_readable(path: str = "/dev/kmsg") -> bool:
    """os.access says yes to a 0644 /dev/kmsg that dmesg_restrict refuses: open it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def kernel_log_route() -> str | None:
    """ "kmsg", "journal" or None: where this user can read the kernel's kill records."""
    if kmsg_readable():
        return "kmsg"
    if journal_readable():
        return "journal"
    return None


class JournalKernelLog:
    """`journalctl -k -f -n 0 -o json`: kernel records from now on, as a pipe to poll."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["journalctl", "-k", "-f", "-n", "0", "-q", "-o", "json", "--no-pager"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._tail = b""

    def drain(self, max_records: int) -> list[tuple[int, str]]:
        """The records that have arrived, at most `max_records` (the rest next time)."""
        data = b""
        while len(data) < JOURNAL_READ * 16:
            try:
                chunk = os.read(self.fd, JOURNAL_READ)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        if not data:
            return []
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()[-JOURNAL_READ:]
        out = []
        for line in lines[:max_records]:
            rec = parse_journal_line(line)
            if rec is not None:
                out.append(rec)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
