"""The cgroup stage: the hog confined in a fresh memory cgroup.

Routes, picked in this order:
- systemd (PID 1 is systemd, cgroup v2): a transient scope with MemoryMax and
  MemorySwapMax, placed the way systemd expects, never by a mkdir under a scope systemd
  owns: `systemd-run --scope` through the system manager as root (a `sudo` from a
  terminal lives in the terminal's session scope, which cannot enable +memory for a
  child), `systemd-run --user --scope` through the user's manager otherwise;
- v2: a child of our own cgroup in the unified tree (memory.max, memory.swap.max), where
  no systemd owns the tree (a container, a delegated subtree);
- v1: a child of our own memory cgroup (memory.limit_in_bytes, then
  memory.memsw.limit_in_bytes: the kernel wants memsw >= limit at every step).
Nothing usable: CannotStage with the fix. The cgroup root and /proc are constructor
parameters so tests run on fake trees (earlyoom's procdir_path style)."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from beep_av import interrupt
from beep_av.config import format_mib
from beep_av.errors import BadInput, CannotStage
from beep_av.procfs import parse_proc_cgroup
from beep_av.stages.base import HogStage, Say, StageFiles, memory_files
from beep_av.stages.cleanup import StateFile, hog_value, rmdir_cgroup
from beep_av.stages.swap import SWAP_DIR, Swapfile, choose_swap, free_swap, parse_swap_mode
from beep_av.tunables import MIN_STAGE_RAM as MIN_RAM

MiB = 1 << 20
_counter = itertools.count()
FIX = "run as root, or on a systemd desktop with user delegation"

# ---------------------------------------------------------------- the filesystem adapter


class CgroupFS:
    """The one outside thing this module touches: cgroup directories and files."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def write(self, path: str, text: str) -> None:
        # os.write on an fd: the kernel's refusal (EINVAL, EBUSY) must not be swallowed
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def rmdir(self, path: str) -> bool:
        """True when gone (retries while busy)."""
        return rmdir_cgroup(path)


# ---------------------------------------------------------------- pure helpers


SYSTEMD_ROUTES = ("systemd-system", "systemd-user")
OOMD_PREFERENCE_SINCE = 248  # ManagedOOMPreference= (systemd v248)


def systemd_run_argv(
    unit: str,
    ram: int,
    swap: int,
    command: list[str],
    *,
    user: bool = True,
    systemd_version: int = 0,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The argv that runs `command` in a transient scope limited to `ram` bytes of RAM and
    `swap` bytes of swap (MemoryHigh left unset, as with the other routes); `user`: the
    user's manager (`--user`), else the system manager (root).

    OOMPolicy=continue: the scope's default (stop) would SIGTERM whatever is left in it
    after the kernel's kill. ManagedOOMPreference=omit (systemd >= 248): systemd-oomd does
    not pick the stage, so the kill stays the kernel's (oomd honours it for root-owned
    cgroups, and for a user's cgroups under a policy of that same user's)."""
    props = [f"MemoryMax={int(ram)}", f"MemorySwapMax={int(swap)}", "OOMPolicy=continue"]
    if systemd_version >= OOMD_PREFERENCE_SINCE:
        props.append("ManagedOOMPreference=omit")
    props += extra  # an act's own properties (MemoryHigh=...)
    argv = ["systemd-run"] + (["--user"] if user else [])
    argv += ["--scope", "--quiet", "--collect", f"--unit={unit}"]
    for prop in props:
        argv += ["-p", prop]
    return [*argv, "--", *command]


def parse_systemd_version(text: str) -> int:
    """`systemctl --version` output -> 252 (0 when unreadable)."""
    first = text.split("\n", 1)[0].split()
    if len(first) >= 2 and first[0] == "systemd":
        digits = first[1].split(".")[0]
        if digits.isdigit():
            return int(digits)
    return 0


def _systemd_version() -> int:
    import subprocess

    try:
        out = subprocess.run(
            ["systemctl", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return parse_systemd_version(out)


@dataclass(frozen=True)
class Route:
    """Where the stage goes: "v1" | "v2" | "systemd-system" | "systemd-user", and the
    parent cgroup dir (v1/v2: our own cgroup; None for a systemd scope)."""

    kind: str
    parent: str | None
    unified_root: str | None = None

    @property
    def systemd(self) -> bool:
        return self.kind in SYSTEMD_ROUTES


def _readable(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _unified(root: Path) -> Path:
    """The cgroup v2 mount: the root itself (pure v2), else its `unified` (hybrid)."""
    return root if (root / "cgroup.controllers").exists() else root / "unified"


def user_manager_dir(env: dict | None = None) -> str | None:
    """$XDG_RUNTIME_DIR/systemd when this user's systemd manager answers there."""
    env = os.environ if env is None else env
    run = env.get("XDG_RUNTIME_DIR")
    if run and os.path.exists(os.path.join(run, "systemd", "private")):
        return os.path.join(run, "systemd")
    return None


def pick_route(
    cgroup_root: str,
    proc_root: str,
    *,
    is_root: bool | None = None,
    env: dict | None = None,
) -> Route:
    """Choose the systemd scope, v2, or v1, from what is there. Raises CannotStage."""
    is_root = os.geteuid() == 0 if is_root is None else is_root
    text = _readable(f"{proc_root}/self/cgroup") or ""
    v1_path, v2_path = parse_proc_cgroup(text)
    root = Path(cgroup_root)
    uni = _unified(root)
    root_ctrls = (_readable(str(uni / "cgroup.controllers")) or "").split()
    pid1 = (_readable(f"{proc_root}/1/comm") or "").strip()
    why = []
    # systemd owns a v2 tree with the memory controller: ask it for a scope
    if pid1 == "systemd" and v2_path is not None and "memory" in root_ctrls:
        if not shutil.which("systemd-run"):
            why.append("systemd-run is not installed")
        elif is_root:
            return Route("systemd-system", None, str(uni))
        elif user_manager_dir(env):
            return Route("systemd-user", None, str(uni))
        else:
            why.append(
                "no systemd user manager for this session (XDG_RUNTIME_DIR/systemd/private"
                " is missing; log in through logind, or `loginctl enable-linger`)"
            )
    if v2_path is not None and not why:
        own = uni / v2_path.lstrip("/")
        ctrls = (_readable(str(own / "cgroup.controllers")) or "").split()
        if "memory" in ctrls:
            if os.access(own, os.W_OK):
                return Route("v2", str(own), str(uni))
            why.append(f"{own} is not writable")
        elif (uni / "cgroup.controllers").exists():
            why.append("the unified cgroup tree has no memory controller here")
    if v1_path is not None:
        mem = root / "memory"
        if not mem.is_dir():
            mem = next((d for d in root.iterdir() if "memory" in d.name.split(",")), mem)
        own = mem / v1_path.lstrip("/")
        if own.is_dir() and os.access(own, os.W_OK):
            return Route("v1", str(own))
        why.append(f"{own} is not writable")
    if pid1 != "systemd":
        if shutil.which("systemd-run"):
            why.append(f"systemd-run is installed but PID 1 is {pid1 or 'unknown'}, not systemd")
        else:
            why.append("systemd-run is not installed")
    raise CannotStage(f"no memory cgroup to stage in ({'; '.join(why)}): {FIX}")


def _gone(path: str, timeout: float) -> bool:
    """Wait up to `timeout` s for `path` to disappear."""
    import time

    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------- the stage


class CgroupStage(HogStage):
    """The hog in a memory cgroup of `ram` bytes (+ `swap`: "auto", "off" or bytes),
    `cache` bytes of page cache warmed inside, climbing at `rate` bytes/s (0 = flat out)."""

    kind = "cgroup"
    scope_props: tuple[str, ...] = ()  # more systemd-run -p properties (an act's)

    def __init__(
        self,
        ram: int,
        swap: str | int = "auto",
        cache: int = 0,
        rate: int = 0,
        seed: int | None = None,
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        proc_root: str = "/proc",
        state_dir: str | None = None,
        swap_dir: str = SWAP_DIR,
        cache_dir: str = SWAP_DIR,
        fs: CgroupFS | None = None,
        is_root: bool | None = None,
    ) -> None:
        if ram < MIN_RAM:
            raise BadInput(
                f"--ram {format_mib(ram)} is too small to stage (at least {format_mib(MIN_RAM)})"
            )
        if cache < 0 or cache >= ram:
            raise BadInput(f"--cache {format_mib(cache)} must be less than --ram {format_mib(ram)}")
        self.ram_limit = int(ram)
        self.swap_mode = parse_swap_mode(swap)
        self.swap_limit = 0
        self.cache_bytes = int(cache)
        self.rate = max(0, int(rate))
        self.seed = seed  # the stage is real: nothing to seed; kept for a uniform signature
        self.paused = False
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.swap_dir = swap_dir
        self.cache_dir = cache_dir
        self.fs = fs or CgroupFS()
        self.is_root = os.geteuid() == 0 if is_root is None else is_root
        self.state = StateFile(state_dir)
        self.route: Route | None = None
        self.cgroup_dir: str | None = None
        self.name = f"beep-av-{os.getpid()}-{next(_counter)}"
        self.hog = None  # HogProcess once spawned
        self.swapfile: Swapfile | None = None
        self._hog_value: str | None = None
        self._more_hogs: list = []  # (HogProcess, state value) of an act's other hogs
        self._v2_leaf: str | None = None  # where we moved ourselves (v2 internal-process rule)
        self._v2_enabled: str | None = None  # the subtree_control we wrote +memory into

    # ---- description

    def describe(self) -> str:
        """One line: route, name, limits, cache and rate."""
        route = {
            "v1": "cgroup v1",
            "v2": "cgroup v2",
            "systemd-system": "systemd scope",
            "systemd-user": "systemd user scope",
        }.get(self.route.kind if self.route else "", "cgroup")
        swap = f" + {format_mib(self.swap_limit)} swap" if self.swap_limit else ", no swap"
        rate = f"{format_mib(self.rate)}/s" if self.rate else "flat out"
        return (
            f"{route} {self.name}: {format_mib(self.ram_limit)} RAM{swap},"
            f" {format_mib(self.cache_bytes)} cache, hog at {rate}"
        )

    # ---- prepare

    def prepare(self, say: Say) -> None:
        """Create the cgroup, provision swap, spawn the hog and let it warm the cache."""
        self.state.ensure()  # a state dir that is not ours: refused before anything exists
        self.route = pick_route(self.cgroup_root, self.proc_root, is_root=self.is_root)
        choice = choose_swap(
            self.swap_mode, self.ram_limit, free_swap(self.proc_root), self.is_root
        )
        # SIGINT, SIGTERM and SIGHUP only set a flag: it is checked between these steps
        # and inside the long ones (interrupt.Interrupted; the caller's teardown undoes
        # whatever exists), and each thing is in the state file before it is made
        interrupt.check()
        if choice.provision:
            self.swapfile = Swapfile.create(
                choice.provision,
                say,
                self.state.record,
                self.swap_dir,
                self.proc_root,
                forget=self.state.forget,
            )
        else:
            say(choice.note)
        self.swap_limit = choice.limit
        interrupt.check()
        if self.route.kind == "v1":
            self._make_v1()
        elif self.route.kind == "v2":
            self._make_v2(say)
        interrupt.check()
        self._spawn_hog()
        say(f"stage: {self.describe()}")

    def _write(self, name: str, value: int | str) -> None:
        assert self.cgroup_dir
        path = os.path.join(self.cgroup_dir, name)
        try:
            self.fs.write(path, f"{value}\n")
        except OSError as e:
            raise CannotStage(f"cannot write {value} to {path} ({e.strerror}): {FIX}") from None

    def _mkdir(self, parent: str) -> None:
        path = os.path.join(parent, self.name)
        # recorded first: a crash right after the mkdir leaves it listed for cleanup,
        # and teardown and cleanup take a listed cgroup that was never made as done
        self.state.record("cgroup", path)
        self.cgroup_dir = path
        try:
            self.fs.mkdir(path)
        except OSError as e:
            self.cgroup_dir = None
            self.state.forget("cgroup", path)
            raise CannotStage(f"cannot create cgroup {path} ({e.strerror}): {FIX}") from None

    def _make_v1(self) -> None:
        assert self.route and self.route.parent
        self._mkdir(self.route.parent)
        # in this order: memsw must never be below limit_in_bytes
        self._write("memory.limit_in_bytes", self.ram_limit)
        self._write("memory.memsw.limit_in_bytes", self.ram_limit + self.swap_limit)
        self._write("memory.swappiness", 60)

    def _make_v2(self, say: Say) -> None:
        assert self.route and self.route.parent
        own = self.route.parent
        control = os.path.join(own, "cgroup.subtree_control")
        try:
            enabled = self.fs.read(control).split()
        except OSError:
            enabled = []
        if "memory" not in enabled:
            try:
                self.fs.write(control, "+memory\n")
                self._v2_enabled = control
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise CannotStage(
                        f"cannot enable +memory in {control} ({e.strerror}): {FIX}"
                    ) from None
                self._leave_own_cgroup(own, control, say)
        self._mkdir(own)
        self._write("memory.max", self.ram_limit)
        self._write("memory.swap.max", self.swap_limit)

    def _leave_own_cgroup(self, own: str, control: str, say: Say) -> None:
        """v2's no-internal-process rule: a cgroup with processes cannot hand controllers
        to children. Move ourselves to a leaf, then enable +memory."""
        leaf = os.path.join(own, f"beep-av-{os.getpid()}-show")
        say(f"cgroup v2: moving beep-av (pid {os.getpid()}) to {leaf} so {own} can enable memory")
        self.state.record("cgroup", leaf)  # first: see _mkdir
        try:
            try:
                self.fs.mkdir(leaf)
            except OSError:
                self.state.forget("cgroup", leaf)
                raise
            self._v2_leaf = leaf
            self.fs.write(os.path.join(leaf, "cgroup.procs"), f"{os.getpid()}\n")
            self.fs.write(control, "+memory\n")
            self._v2_enabled = control
        except OSError as e:
            raise CannotStage(
                f"cannot enable +memory in {control} ({e.strerror}): other processes share"
                f" our cgroup; start beep-av in a cgroup of its own, or {FIX}"
            ) from None

    def _spawn_hog(self) -> None:
        self._spawn_one(rate=self.rate, cache=self.cache_bytes)

    def _spawn_one(self, **hog_args):
        """Spawn one hog (HogProcess keyword arguments) into the stage, recorded in the
        state file, and wait until it is ready and in the stage's cgroup. The first of a
        systemd route makes the scope; later ones join it (an act with several hogs)."""
        from beep_av.hogproc import HogProcess

        wrapper: list[str] = []
        procs = None
        if self.route and self.route.systemd and not self.cgroup_dir:
            wrapper = systemd_run_argv(
                self.name,
                self.ram_limit,
                self.swap_limit,
                [],
                user=self.route.kind == "systemd-user",
                systemd_version=_systemd_version(),
                extra=self.scope_props,
            )
        else:
            assert self.cgroup_dir
            procs = os.path.join(self.cgroup_dir, "cgroup.procs")
        # no signal is blocked around the spawn (the hog would inherit the mask): the
        # handlers only set a flag, so nothing can come between the spawn and the record
        # (the hog's pid is known only once it runs; PR_SET_PDEATHSIG ends it with a
        # crashed show, and cleanup kills a hog of ours found in a listed cgroup)
        hog = HogProcess(cgroup_procs=procs, cache_dir=self.cache_dir, wrapper=wrapper, **hog_args)
        value = hog_value(hog.pid, self.proc_root)
        if self.hog is None:  # the first: the stage's own (teardown kills it)
            self.hog, self._hog_value = hog, value
        else:
            self._more_hogs.append((hog, value))
        self.state.record("hog", value)
        try:
            hog.wait_ready()
        except CannotStage as e:
            if self.route and self.route.systemd:
                how = "systemd-run --user" if self.route.kind == "systemd-user" else "systemd-run"
                raise CannotStage(f"{e.message}; {how} failed: {FIX}") from None
            raise
        self._check_membership(hog)
        return hog

    def _check_membership(self, hog=None) -> None:
        """The hog moved itself; make sure it is where the limits are."""
        hog = hog or self.hog
        assert hog and self.route
        text = _readable(f"{self.proc_root}/{hog.pid}/cgroup") or ""
        v1, v2 = parse_proc_cgroup(text)
        if self.route.systemd:
            if not v2 or not self.route_unified():
                raise CannotStage(f"cannot find the hog's scope cgroup: {FIX}")
            self.cgroup_dir = os.path.join(self.route_unified(), v2.lstrip("/"))
            self._check_scope_limits()
            return
        assert self.cgroup_dir and self.route.parent
        want = "/" + os.path.relpath(self.cgroup_dir, self._mount_root())
        got = v1 if self.route.kind == "v1" else v2
        if got is None or os.path.normpath(got) != os.path.normpath(want):
            raise CannotStage(f"the hog is in cgroup {got}, not {want}: {FIX}")

    def _check_scope_limits(self) -> None:
        """systemd accepts MemoryMax= on a scope whose slice has no memory controller
        (a user manager without memory delegation) and then enforces nothing: read the
        limits back from the scope's own cgroup."""
        assert self.cgroup_dir and self.route
        want = {"memory.max": self.ram_limit, "memory.swap.max": self.swap_limit}
        for name, value in want.items():
            got = (_readable(os.path.join(self.cgroup_dir, name)) or "").strip()
            if got != str(value):
                fix = (
                    "delegate the memory controller to the user manager"
                    " (Delegate=cpu memory pids in user@.service), or run as root"
                    if self.route.kind == "systemd-user"
                    else FIX
                )
                raise CannotStage(
                    f"the stage's scope {self.cgroup_dir} has {name} {got or 'missing'},"
                    f" not {value}: {fix}"
                )

    def route_unified(self) -> str | None:
        uni = _unified(Path(self.cgroup_root))
        return str(uni) if uni.is_dir() else None

    def _mount_root(self) -> str:
        """The cgroup mount our route lives in (relative paths in /proc/<pid>/cgroup)."""
        assert self.route and self.route.parent
        own_rel = self._own_rel()
        parent = self.route.parent
        return parent[: len(parent) - len(own_rel)] if own_rel else parent

    def _own_rel(self) -> str:
        v1, v2 = parse_proc_cgroup(_readable(f"{self.proc_root}/self/cgroup") or "")
        rel = (v1 if self.route and self.route.kind == "v1" else v2) or "/"
        return rel.rstrip("/") if rel != "/" else ""

    # ---- readings and controls

    def files(self) -> StageFiles:
        """Where the sampler reads this stage."""
        if not self.cgroup_dir or not self.route:
            raise CannotStage("the stage is not prepared")
        version = 1 if self.route.kind == "v1" else 2
        return memory_files(version, self.cgroup_dir, self.proc_root)

    def teardown(self) -> None:
        """Kill the hog, rmdir the cgroup, swapoff and delete the swapfile, forget them in
        the state file. Idempotent; fine after a failed prepare."""
        errors = []
        for hog, value in self._more_hogs:
            hog.kill()
            hog.wait(10)
            hog.close()
            self.state.forget("hog", value)
        self._more_hogs = []
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait(10)
            self.hog.close()
            if self._hog_value:
                self.state.forget("hog", self._hog_value)
        if self.cgroup_dir and self.route and self.route.systemd:
            # systemd removes an empty scope (--collect); wait for it, so nothing is left
            # in the tree when the show says it is torn down
            if not _gone(self.cgroup_dir, 5.0):
                errors.append(f"scope {self.cgroup_dir}")
        elif self.cgroup_dir and self.route:
            if self.fs.rmdir(self.cgroup_dir):
                self.state.forget("cgroup", self.cgroup_dir)
            else:
                errors.append(f"cgroup {self.cgroup_dir}")
        if self._v2_leaf:
            self._undo_leaf()
        if self.swapfile is not None:
            try:
                self.swapfile.remove()
                self.state.forget("swapfile", self.swapfile.path)
                self.state.forget("swapdir", self.swapfile.dir)
            except OSError:
                errors.append(f"swapfile {self.swapfile.path}")
        if errors:
            # the state file keeps them: `beep-av cleanup` retries
            raise CannotStage(f"could not remove {', '.join(errors)}; run `beep-av cleanup`")

    def _undo_leaf(self) -> None:
        assert self._v2_leaf and self.route and self.route.parent
        try:
            if self._v2_enabled:
                self.fs.write(self._v2_enabled, "-memory\n")
                self._v2_enabled = None
            self.fs.write(os.path.join(self.route.parent, "cgroup.procs"), f"{os.getpid()}\n")
        except OSError:
            return  # the leaf stays recorded; cleanup removes it once we are gone
        if self.fs.rmdir(self._v2_leaf):
            self.state.forget("cgroup", self._v2_leaf)
            self._v2_leaf = None
