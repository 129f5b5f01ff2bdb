"""`beep-av doctor`: what this machine can stage, and the fix for each gap. Each check
is one line, OK or the fix; the exit code is 0 when a real show can run, else 3."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Callable

from beep_av.procfs import parse_swaps

Say = Callable[[str], None]


def _line(say: Say, ok: bool | None, what: str, detail: str) -> None:
    mark = {True: "OK  ", False: "FIX ", None: "--  "}[ok]
    say(f"{mark} {what:<10} {detail}")


ROUTE_WORDS = {
    "systemd-system": "a transient systemd scope (systemd-run --scope, as root)",
    "systemd-user": "a transient systemd user scope (systemd-run --user --scope, no root)",
    "v1": "a cgroup v1 memory cgroup",
    "v2": "a cgroup v2 child cgroup",
}


def check_cgroup() -> tuple[bool, str]:
    from beep_av.errors import CannotStage
    from beep_av.stages.cgroup import pick_route

    try:
        route = pick_route("/sys/fs/cgroup", "/proc")
    except CannotStage as e:
        return False, e.message
    what = ROUTE_WORDS.get(route.kind, route.kind)
    if route.kind == "systemd-user":
        ok, why = user_memory_delegated()
        if not ok:
            return False, why
        return True, f"the stage will be {what}; {why}: the real show can be staged"
    where = f" under {route.parent}" if route.parent else ""
    return True, f"the stage will be {what}{where}: the real show can be staged"


def user_memory_delegated(cgroup_root: str = "/sys/fs/cgroup") -> tuple[bool, str]:
    """Whether this user's systemd manager was handed the memory controller (without it
    a user scope's MemoryMax= is accepted and enforced by nobody)."""
    uid = os.getuid()
    path = f"{cgroup_root}/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    try:
        with open(path) as f:
            ctrls = f.read().split()
    except OSError:
        return True, "memory delegation not checked (no user@.service cgroup found)"
    if "memory" in ctrls:
        return True, "memory is delegated to user@.service"
    return False, (
        f"the user manager has no memory controller ({path} lists {' '.join(ctrls) or 'none'}):"
        " add `Delegate=cpu memory pids` to user@.service, or run as root"
    )


def check_killers() -> tuple[bool | None, str]:
    from beep_av.sampler import running_killers  # the card's own scan of /proc

    names = list(running_killers())
    if not names:
        return True, "no userspace OOM killer running (systemd-oomd, earlyoom): the kernel acts"
    fixes = []
    if "systemd-oomd" in names:
        fixes.append(
            "the stage's scope asks systemd-oomd to leave it alone (ManagedOOMPreference=omit),"
            " but its swap policy can still pick the stage: `sudo systemctl stop systemd-oomd`"
            " for the show"
        )
    if "earlyoom" in names or "nohang" in names or "oomd" in names:
        fixes.append(
            "earlyoom-style killers watch the whole machine and may kill the hog first:"
            " `sudo systemctl stop earlyoom` for the show"
        )
    return None, (
        f"{', '.join(names)} running and could act before the kernel (the card will say so):"
        f" {'; '.join(fixes)}"
    )


def check_swap() -> tuple[bool | None, str]:
    try:
        with open("/proc/swaps") as f:
            areas = parse_swaps(f.read())
    except OSError:
        areas = []
    if areas:
        return True, f"{len(areas)} swap area(s) present"
    if os.geteuid() == 0:
        return True, "no swap; a temporary swapfile will be provisioned (root)"
    return (
        None,
        "no swap and not root: the swapping phase will be skipped (run as root to add a swapfile)",
    )


def check_psi() -> tuple[bool | None, str]:
    if os.path.exists("/proc/pressure/memory"):
        return True, "PSI at /proc/pressure/memory"
    return None, "no PSI: intensity follows fill only (boot with psi=1 for stall sounds)"


def check_slow_acts() -> list[tuple[str, bool | None, str]]:
    """The acts that slow instead of kill: --act freeze (a PSI trigger on the stage's
    pressure, or the machine's on v1; swap on the stage) and --act high (cgroup v2's
    memory.high)."""
    from beep_av.errors import CannotStage
    from beep_av.stages.cgroup import _readable, pick_route

    try:
        kind = pick_route("/sys/fs/cgroup", "/proc").kind
    except CannotStage:
        return [("freeze", False, "no memory cgroup (see cgroup)"),
                ("high", False, "no memory cgroup (see cgroup)")]  # fmt: skip
    v2 = kind != "v1"
    psi = "the stage's memory.pressure" if v2 else "the machine's /proc/pressure/memory"
    if not os.path.exists("/proc/pressure/memory"):
        freeze = (False, "no PSI here (boot with psi=1): the freeze's killer needs a PSI trigger")
    elif os.geteuid() != 0 and not parse_swaps(_readable("/proc/swaps") or ""):
        freeze = (False, "no swap and not root: the freeze needs swap on the stage")
    else:
        from beep_av.acts.freeze import oomd_missing

        oomd = (
            ""
            if v2 and oomd_missing() is None
            else " (--killer systemd-oomd: no, it needs a running systemd-oomd on cgroup v2)"
        )
        freeze = (True, f"--act freeze: a PSI trigger on {psi}{oomd}")
    high = (
        (True, "--act high: memory.high on the stage's cgroup v2")
        if v2
        else (None, "--act high needs cgroup v2 (this machine stages on v1)")
    )
    return [("freeze", *freeze), ("high", *high)]


def check_kmsg() -> tuple[bool | None, str]:
    from beep_av.kernlog import kernel_log_route

    route = kernel_log_route()
    if route == "kmsg":
        return True, "kernel log readable: kills are confirmed by the kmsg record"
    if route == "journal":
        return True, "kernel records readable in the journal (journalctl -k): kills are confirmed"
    return None, (
        "the kernel's records are not readable (/dev/kmsg needs root under dmesg_restrict):"
        " run as root, or join the adm or systemd-journal group to read them in the journal"
    )


def check_mlock() -> tuple[bool | None, str]:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        return None, (
            f"memory locking limited to {soft >> 10} KiB (`ulimit -l`): the show is not locked"
            " and may stall while the stage swaps (run as root, or raise memlock in"
            " /etc/security/limits.conf)"
        )
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    # probe with a tiny lock rather than mlockall, which would stay in force
    buf = ctypes.create_string_buffer(4096)
    if libc.mlock(buf, 4096) == 0:
        libc.munlock(buf, 4096)
        return True, "memory locking allowed: sound and picture will not stall while swapping"
    err = os.strerror(ctypes.get_errno())
    return None, f"cannot lock memory ({err}): raise `ulimit -l` or run as root"


def check_audio() -> tuple[bool | None, str]:
    try:
        import sounddevice as sd
    except OSError:
        return None, "PortAudio library not found: install libportaudio2 (the show will be silent)"
    except ImportError:
        return None, "sounddevice not installed: pip install sounddevice"
    try:
        devs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
        default = sd.default.device[1]
    except Exception as e:  # PortAudio errors come in many types
        return None, f"no audio devices ({e})"
    if not devs:
        return None, "no output device: the show will be silent (start PulseAudio or PipeWire)"
    name = next((d["name"] for d in devs if d["index"] == default), devs[0]["name"])
    return True, f"{len(devs)} output device(s); default: {name}"


def name_sound_server(sockets: set[str], processes: set[str]) -> str:
    """The sound server from what is there: `sockets` among "pipewire", "pulse" (a
    PulseAudio-protocol socket), `processes` the names of this user's processes."""
    if "pipewire" in sockets or "pipewire" in processes:
        if "pulse" in sockets or "pipewire-pulse" in processes:
            return "PipeWire (pipewire-pulse serves PulseAudio clients: `--audio device:pulse`)"
        return "PipeWire (without pipewire-pulse: ALSA's `default` must lead to it)"
    if "pulse" in sockets or "pulseaudio" in processes:
        return "PulseAudio"
    return "plain ALSA (no sound server): the sound goes straight to the card"


def check_sound_server() -> tuple[bool | None, str]:
    """Which sound server this session has: PipeWire, PulseAudio or plain ALSA."""
    import psutil

    run = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    sockets = set()
    if os.path.exists(os.path.join(run, "pipewire-0")):
        sockets.add("pipewire")
    server = os.environ.get("PULSE_SERVER", "")
    pulse = server[5:] if server.startswith("unix:") else os.path.join(run, "pulse", "native")
    if os.path.exists(pulse):
        sockets.add("pulse")
    names = set()
    for p in psutil.process_iter(["name", "uids"]):
        uids = p.info.get("uids")
        if uids is not None and uids.real == os.getuid():
            names.add(p.info.get("name") or "")
    return True, name_sound_server(sockets, names)


def check_video() -> tuple[bool | None, str]:
    try:
        from beep_av.video.select import describe_choice

        return True, describe_choice()
    except ImportError:
        return None, "output selection unavailable"


def find_tool(name: str) -> str | None:
    """A system tool, also where a normal user's PATH does not look (/usr/sbin, /sbin)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def check_tools() -> tuple[bool | None, str]:
    have = [t for t in ("mkswap", "swapon", "swapoff") if find_tool(t)]
    if len(have) == 3:
        return True, "mkswap, swapon, swapoff found"
    if os.geteuid() != 0:
        return True, "no temporary swapfile without root: the swap tools are not needed"
    return None, "util-linux tools missing (mkswap/swapon/swapoff): install util-linux"


def run_doctor(say: Say = print) -> int:
    """Print one line per check. Returns 0 when a real (cgroup) show can run, else 3."""
    ok_cg, why_cg = check_cgroup()
    _line(say, ok_cg, "cgroup", why_cg)
    for name, fn in (
        ("swap", check_swap),
        ("psi", check_psi),
        ("kmsg", check_kmsg),
        ("mlock", check_mlock),
        ("tools", check_tools),
        ("killers", check_killers),
        ("sound", check_sound_server),
        ("audio", check_audio),
        ("video", check_video),
    ):
        try:
            ok, detail = fn()
        except Exception as e:  # a broken probe is a finding, not a crash
            ok, detail = False, f"check failed: {e}"
        _line(say, ok, name, detail)
    try:
        for name, ok, detail in check_slow_acts():
            _line(say, ok, name, detail)
    except Exception as e:  # a broken probe is a finding, not a crash
        _line(say, False, "acts", f"check failed: {e}")
    try:
        from beep_av.engines import doctor_lines

        for ok, detail in doctor_lines():
            _line(say, ok, "container", detail)
    except Exception as e:  # a broken probe is a finding, not a crash
        _line(say, False, "container", f"check failed: {e}")
    if ok_cg:
        say("ready: `beep-av` runs the real show here")
        return 0
    say("not ready for a real show: `beep-av rehearse` runs anywhere")
    return 3
