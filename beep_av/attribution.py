"""Who the kernel killed, and who did not: the pure decisions behind an honest card.

- The victim is whoever the kernel's record names. Its pid is a pid of the initial PID
  namespace; the show knows the hog by the pid of its own namespace. `kernel_pid` maps
  one to the other through the hog's NSpid line (its pids from the namespace of /proc
  down to its own).
- A kernel kill of another process counts for the show when the hog was a candidate in
  that OOM (`oom_covers`): a machine-wide OOM, or the limit of a memory cgroup that holds
  the hog. Such a kill gets its own record, marked not the hog.
- A domain-wide counter (the host's /proc/vmstat, a cgroup holding other processes)
  says that *a* kill happened, never whose; `counted_by` says which kills a counter
  counts, so that a rise left over after them can stand for the hog's.
- A SIGKILL without kernel OOM evidence is a signal from user space (`hog_verdict`),
  named after the user-space killer running at the time when there is one
  (`killer_name`).

No I/O here: the sampler reads, these decide, the story tells."""

from __future__ import annotations

from collections.abc import Iterable

from beep_av.model import KmsgKill, Snapshot
from beep_av.procfs import in_memcg

PROC_PID_INIT_INO = 0xEFFFFFFC  # inode of the initial PID namespace (include/linux/proc_ns.h)
SIGKILLED = (-9, 137)  # a returncode or a shell status for death by SIGKILL

# comm of the user-space OOM killers we can name (comm is at most 15 characters)
USER_SPACE_KILLERS = ("systemd-oomd", "earlyoom", "oomd", "nohang")
USER_SPACE = "user space"


def kernel_pid(nspid: tuple[int, ...] | None, procfs_initial: bool | None, pid: int) -> int | None:
    """The pid the kernel log prints for the process the show knows as `pid`.

    `nspid`: its NSpid as our /proc shows it (None: unreadable); `procfs_initial`: whether
    that /proc belongs to the initial PID namespace (None: cannot tell). The first NSpid
    entry is the pid in /proc's namespace: the kernel's when that is the initial one.
    Inside a PID namespace with its own /proc the kernel's pid cannot be known: None."""
    if not nspid:
        return pid if procfs_initial is not False else None
    if procfs_initial is False:
        return None
    return nspid[0]


def oom_covers(kill: KmsgKill, memcg: str | None) -> bool | None:
    """Was the process in memory cgroup `memcg` a candidate in the OOM that killed
    `kill`? True for a machine-wide OOM or a limit at or above `memcg`; None when the
    record does not say which OOM it was (no `oom-kill:` line) or `memcg` is unknown."""
    if kill.global_oom:
        return True
    if kill.oom_memcg is None or memcg is None:
        return None
    return in_memcg(memcg, kill.oom_memcg)


def counted_by(kill: KmsgKill, counter_memcg: str | None, hierarchical: bool) -> bool:
    """Does the oom_kill counter of memory cgroup `counter_memcg` count this kill? The
    kernel counts a kill in the victim's own cgroup: v2's memory.events also in every
    ancestor (`hierarchical`), v1's memory.oom_control only there. None stands for the
    machine's /proc/vmstat, which counts every kill."""
    if counter_memcg is None:
        return True
    if kill.task_memcg is None:
        return False
    if hierarchical:
        return in_memcg(kill.task_memcg, counter_memcg)
    return kill.task_memcg.rstrip("/") == counter_memcg.rstrip("/")


def killer_name(running: Iterable[str]) -> str:
    """Who to name for a SIGKILL from user space: the user-space OOM killers that were
    running ("earlyoom", "earlyoom or systemd-oomd"), else "user space"."""
    names = sorted({r for r in running if r in USER_SPACE_KILLERS})
    return " or ".join(names) if names else USER_SPACE


def sigkilled(snap: Snapshot) -> bool:
    return snap.hog_exit in SIGKILLED


def hog_verdict(snap: Snapshot, kernel_log: bool, accounted: int, grace: float) -> str | None:
    """What ended the hog, as far as `snap` shows: "oom" (the kernel killed it), "user"
    (a SIGKILL from user space) or None (alive, or not known yet).

    - A kernel record naming the hog: "oom", whatever else is known.
    - A SIGKILL and a rise of the oom_kill counter that no other kill explains
      (`accounted`: the kills of others it counts): "oom" at once without a kernel log;
      with one, only once `grace` seconds have passed without the hog's record (a
      record lost to a flood) — the kernel's record comes ~20 ms before waitpid.
    - A SIGKILL and nothing from the kernel within `grace` seconds of it: "user"."""
    if snap.kmsg_kill is not None:
        return "oom"
    if not sigkilled(snap):
        return None
    unexplained = snap.oom_kill_count > accounted
    if unexplained and not kernel_log:
        return "oom"
    exit_t = snap.hog_exit_t if snap.hog_exit_t is not None else snap.t
    if snap.t - exit_t < grace:
        return None
    return "oom" if unexplained else "user"
