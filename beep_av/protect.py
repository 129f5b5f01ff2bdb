"""Process protection: what the show does to itself so the kernel's pressure on the stage
does not reach it (memory locking, its own oom_score_adj). Adapter: touches this
process's kernel settings only."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) so the sound and picture do not stall
    while the stage swaps. Returns None when locked, else why not (the show goes on).

    Only where locking is unbounded (CAP_IPC_LOCK, or an infinite RLIMIT_MEMLOCK): under
    a finite limit (8 MiB for a normal user on Debian) MCL_FUTURE makes every later
    mapping past the limit fail, and SDL's kmsdrm then cannot even dlopen Mesa."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        return (
            f"RLIMIT_MEMLOCK is {soft >> 20} MiB (`ulimit -l`): with MCL_FUTURE every mapping"
            " past it would fail"
        )
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return "no C library found"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    # MCL_ONFAULT (since Linux 4.4) keeps RSS as it is instead of faulting in every
    # mapping (FIELD-NOTES: 52 -> 176 MiB without it)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return None
    return os.strerror(ctypes.get_errno())
