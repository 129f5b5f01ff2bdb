"""The container stage: the hog in a Docker or Podman container, through the engine's
API (the Docker SDK; Podman serves the same API on its socket).

The engine applies the limits (--ram: the memory limit; --swap: memory-swap = ram +
swap), the network is none, and the container carries the label beep-av=1 and a name
beep-av-PID-N (recorded in the state file before it is created, removed at every
ending; `beep-av cleanup` removes only containers with both). The hog's image is made
locally (engines.ensure_image) and reused.

Readings: the sampler reads the container's own cgroup, found from the engine's answer
(State.Pid -> /proc/PID/cgroup -> /sys/fs/cgroup/..., up to the cgroup holding the
limit), so the phases are the kernel's. The hog reports its bytes on stdout, which the
engine streams to the show (its logs); its stdin is its own (engines.ENTRY), so the rate
cannot be changed mid-show; pause freezes the container (the engine's pause).

The kill is confirmed by the kernel (the kill record through the sampler: kmsg naming
the hog's host pid, the cgroup's oom_kill, the exit) and by the engine (its `oom` and
`die` events, State.OOMKilled and ExitCode). `--restarts N` sets the restart policy
on-failure:N: the ContainerDriver plays each life of the container, one kill record
each, with the engine's back-off between them."""

from __future__ import annotations

import itertools
import os
import select
import threading
import time
from dataclasses import replace

from beep_av import clock, interrupt
from beep_av.config import format_mib
from beep_av.errors import BadInput, CannotStage
from beep_av.model import KillRecord, Phase, ShowState, Snapshot
from beep_av.readings import close_fds
from beep_av.stages.base import HogStage, Say, StageFiles, memory_files
from beep_av.stages.cleanup import StateFile, container_value
from beep_av.stages.swap import choose_swap, free_swap, parse_swap_mode
from beep_av.tunables import MIN_STAGE_RAM as MIN_RAM

_counter = itertools.count()
READY_TIMEOUT = 180.0  # s: the first report (python's start in the container, the cache)
ENGINE_WAIT = 5.0  # s: how long the engine's verdict may follow the kernel's kill
RESTART_WAIT = 120.0  # s: the engine's back-off before a restart
MAX_RESTARTS = 10
CACHE_DIR = "/var/tmp"  # in the container: an anonymous volume


def limit_cgroup(cgroup_root: str, rel: str, ram: int) -> str:
    """The cgroup directory that holds `ram` as memory.max: the process's own cgroup
    (`rel`, from /proc/PID/cgroup) or the nearest ancestor that does (an engine may put
    the process in a child of the limited one)."""
    d = os.path.join(cgroup_root, rel.lstrip("/"))
    cur = d
    while cur.startswith(cgroup_root) and cur != cgroup_root:
        try:
            with open(os.path.join(cur, "memory.max")) as f:
                if f.read().strip() == str(ram):
                    return cur
        except OSError:
            pass
        cur = os.path.dirname(cur)
    return d


def event_time(ev: dict) -> float | None:
    """An engine event's time, seconds since the epoch (timeNano when given)."""
    if ev.get("timeNano"):
        return int(ev["timeNano"]) / 1e9
    if ev.get("time"):
        return float(ev["time"])
    return None


def event_action(ev: dict) -> str:
    """ "oom", "die", "start"... (Podman's compat API may say "died")."""
    a = str(ev.get("Action") or ev.get("status") or "")
    return "die" if a == "died" else a


# ---------------------------------------------------------------- the engine's events


class EventLog:
    """The engine's event stream in a thread: every event (time, action, attributes,
    container id), kept in order; `wait_for` blocks until one arrives."""

    def __init__(self, client, filters: dict) -> None:
        self._cond = threading.Condition()
        self.events: list[dict] = []
        self.error: str | None = None
        self._stream = client.events(decode=True, filters=filters)
        self._thread = threading.Thread(target=self._run, name="beep-engine-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream:
                rec = {
                    "action": event_action(ev),
                    "t": event_time(ev),
                    "id": ev.get("id") or (ev.get("Actor") or {}).get("ID"),
                    "attrs": dict((ev.get("Actor") or {}).get("Attributes") or {}),
                    "seen": time.time(),
                }
                with self._cond:
                    self.events.append(rec)
                    self._cond.notify_all()
        except Exception as e:  # the stream closed under us (close()), or the engine left
            self.error = f"{type(e).__name__}"
        with self._cond:
            self._cond.notify_all()

    def find(self, action: str, after: float = 0.0, cid: str | None = None) -> dict | None:
        with self._cond:
            for ev in self.events:
                if (
                    ev["action"] == action
                    and (ev["t"] or 0) >= after
                    and (cid is None or (ev["id"] or "").startswith(cid))
                ):
                    return ev
        return None

    def wait_for(self, action: str, after: float, timeout: float, cid: str | None = None,
                 stop: threading.Event | None = None) -> dict | None:  # fmt: skip
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ev = self.find(action, after, cid)
                if ev is not None:
                    return ev
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return None
                if threading.current_thread() is threading.main_thread():
                    interrupt.check()  # Ctrl-C while the stage is prepared: at once
                self._cond.wait(min(left, 0.1))

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass
        self._thread.join(2.0)


# ---------------------------------------------------------------- the hog, as the sampler sees it


class ContainerHog:
    """One life of the container's hog (the HogHandle protocol): its pid on this
    machine (State.Pid), its reports streamed from the engine into a pipe, a pidfd, and
    its exit status from the engine's `die` event."""

    def __init__(self, container, pid: int, events: EventLog, started: float) -> None:
        self.container = container
        self.pid = pid
        self.events = events
        self.started = started  # epoch seconds: this life's start event
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.report_fd: int = r
        self._w = w
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self.pidfd = None
        self._code: int | None = None
        self._stream = None
        self._closed = False
        self._pump = threading.Thread(target=self._run, name="beep-hog-reports", daemon=True)
        self._pump.start()

    def _run(self) -> None:
        try:
            self._stream = self.container.logs(stream=True, follow=True, stdout=True,
                                               stderr=False, tail=0)  # fmt: skip
            for chunk in self._stream:
                if self._closed:
                    break
                os.write(self._w, chunk)
        except Exception:
            pass  # the stream ends with the container's life, or at close
        finally:
            try:
                os.close(self._w)
            except OSError:
                pass

    def exited(self) -> bool:
        if self.pidfd is not None:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        return not os.path.exists(f"/proc/{self.pid}")

    def poll(self) -> int | None:
        """The exit status the engine gives (137 for the kernel's SIGKILL) once this
        life's process is gone and the engine has said `die`; else None."""
        if self._code is None and self.exited():
            ev = self.events.find("die", self.started, self.container.id)
            if ev is not None:
                try:
                    self._code = int(ev["attrs"].get("exitCode", -1))
                except ValueError:
                    self._code = -1
        return self._code

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                self._stream.close()
        except Exception:
            pass
        close_fds((self.report_fd, self.pidfd))


# ---------------------------------------------------------------- the stage


class ContainerStage(HogStage):
    """The hog in a container of `engine` (None: the first that answers) limited to
    `ram` bytes (+ `swap`: "auto", "off" or bytes), restarted up to `restarts` times."""

    kind = "container"
    fixed_rate = True  # the presenter's + and - cannot reach the hog in its container

    def __init__(self, ram: int, swap: str | int = "auto", cache: int = 0, rate: int = 0,
                 engine: str | None = None, restarts: int = 0, *,
                 state_dir: str | None = None, cgroup_root: str = "/sys/fs/cgroup",
                 proc_root: str = "/proc") -> None:  # fmt: skip
        if ram < MIN_RAM:
            raise BadInput(
                f"--ram {format_mib(ram)} is too small to stage (at least {format_mib(MIN_RAM)})"
            )
        if cache < 0 or cache >= ram:
            raise BadInput(f"--cache {format_mib(cache)} must be less than --ram {format_mib(ram)}")
        if not 0 <= restarts <= MAX_RESTARTS:
            raise BadInput(f"--restarts {restarts}: use 0..{MAX_RESTARTS}")
        self.ram_limit = int(ram)
        self.swap_mode = parse_swap_mode(swap)
        self.swap_limit = 0
        self.cache_bytes = int(cache)
        self.rate = max(0, int(rate))
        self.engine_name = engine
        self.restarts = int(restarts)
        self.paused = False
        self.state = StateFile(state_dir)
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.name = f"beep-av-{os.getpid()}-{next(_counter)}"
        self.client = None
        self.sock = None
        self.image = ""
        self.python = ""
        self.container = None
        self.events: EventLog | None = None
        self.hog: ContainerHog | None = None
        self.cgroup_dir: str | None = None
        self._value: str | None = None
        self.notes: list[str] = []

    def describe(self) -> str:
        swap = f" + {format_mib(self.swap_limit)} swap" if self.swap_limit else ", no swap"
        rate = f"{format_mib(self.rate)}/s" if self.rate else "flat out"
        engine = self.sock.describe() if self.sock else (self.engine_name or "an engine")
        again = f", restarts {self.restarts} (on-failure)" if self.restarts else ""
        return (
            f"container {self.name} ({self.image or 'beep-av-hog'}) on {engine}:"
            f" {format_mib(self.ram_limit)} RAM{swap}, {format_mib(self.cache_bytes)} cache,"
            f" hog at {rate}{again}"
        )

    # ---- prepare

    def prepare(self, say: Say) -> None:
        from beep_av import engines

        self.state.ensure()
        self.client, self.sock = engines.connect(self.engine_name)
        interrupt.check()
        choice = choose_swap(self.swap_mode, self.ram_limit, free_swap(self.proc_root), False)
        self.swap_limit = choice.limit
        say(choice.note if not choice.provision else "swap: none free; the container stage"
            " never makes a swapfile, so no swapping act")  # fmt: skip
        self.image, self.python, _ = engines.ensure_image(self.client, say, self.sock.engine)
        interrupt.check()
        self._create()
        for note in self.notes:
            say(f"note: {note}")
        interrupt.check()
        self._start_life(first=True)
        say(f"stage: {self.describe()}")
        say("note: the container's hog climbs at a fixed rate (+ and - cannot reach it);"
            " space pauses the whole container (the engine's pause)")  # fmt: skip

    def _create(self) -> None:
        import docker

        from beep_av import engines

        argv = [self.python, "-S", f"{engines.HOG_DIR}/entry.py", "--rate", str(self.rate),
                "--cache", str(self.cache_bytes), "--cache-dir", CACHE_DIR,
                "--report-fd", "1", "--parent", "0"]  # fmt: skip
        self._value = container_value(self.sock.engine, self.sock.base_url, self.name)
        self.state.record("container", self._value)  # before it exists: see cleanup
        kwargs: dict = {}
        if self._apparmor_without_parser():
            # the engine would refuse to start any container ("the docker-default profile
            # could not be loaded"): run this one without an AppArmor profile, and say so
            kwargs["security_opt"] = ["apparmor=unconfined"]
            self.notes.append(
                "AppArmor is on but apparmor_parser is missing (install apparmor): the"
                " container runs without an AppArmor profile"
            )
        if self.restarts:
            kwargs["restart_policy"] = {"Name": "on-failure", "MaximumRetryCount": self.restarts}
        # the page cache is warmed on disk: an anonymous volume (the container's own root
        # is an overlay, which the hog rightly refuses), removed with the container
        kwargs["mounts"] = [
            docker.types.Mount(CACHE_DIR, None, type="volume", labels={engines.LABEL: "1"})
        ]
        try:
            self.container = self.client.containers.create(
                self.image, argv, name=self.name, entrypoint=[], working_dir=engines.HOG_DIR,
                network_mode="none", mem_limit=self.ram_limit,
                memswap_limit=self.ram_limit + self.swap_limit,
                labels={engines.LABEL: "1", f"{engines.LABEL}.show": str(os.getpid())},
                # the hog's own choice, made by the engine: the kernel picks it first.
                # Also what lets rootless Podman start it: its compat API would ask for
                # oom_score_adj 0, below the user manager's 100, which a user cannot set
                oom_score_adj=1000,
                environment={"PYTHONDONTWRITEBYTECODE": "1"}, detach=True, **kwargs,
            )  # fmt: skip
        except docker.errors.APIError as e:
            raise CannotStage(
                f"the engine refused the container ({_one_line(e)}): {engines.FIX[self.sock.engine]}"
            ) from None
        t0 = time.time()
        self.events = EventLog(self.client, {"container": self.container.id})
        self._created_t = t0
        try:
            self.container.start()
        except docker.errors.APIError as e:
            raise CannotStage(f"the engine cannot start the container ({_one_line(e)})") from None

    def _apparmor_without_parser(self) -> bool:
        import shutil

        if self.sock is None or self.sock.engine != "docker":
            return False
        try:
            opts = self.client.info().get("SecurityOptions") or []
        except Exception:
            return False
        path = os.pathsep.join([os.environ.get("PATH", ""), "/sbin", "/usr/sbin"])
        return any("apparmor" in str(o) for o in opts) and not shutil.which(
            "apparmor_parser", path=path
        )

    def _start_life(self, first: bool = False, after: float = 0.0,
                    stop: threading.Event | None = None) -> dict:  # fmt: skip
        """Wait for a life of the container (its start event, its pid), open its hog
        handle and find its cgroup. Returns the inspect State."""
        assert self.events is not None and self.container is not None
        ev = self.events.wait_for("start", after or self._created_t - 1.0,
                                  READY_TIMEOUT if first else RESTART_WAIT,
                                  self.container.id, stop)  # fmt: skip
        if ev is None:
            raise CannotStage(
                "the engine never started the container again"
                if not first
                else "the engine never started the container"
            )
        state = self._inspect_state()
        deadline = time.monotonic() + 30
        while not state.get("Pid") and time.monotonic() < deadline:
            interrupt.check()
            time.sleep(0.05)
            state = self._inspect_state()
        pid = int(state.get("Pid") or 0)
        if not pid:
            raise CannotStage(f"the container has no process ({state.get('Status')},"
                              f" exit {state.get('ExitCode')}): {self._logs_tail()}")  # fmt: skip
        if self.hog is not None:
            self.hog.close()
        self.hog = ContainerHog(self.container, pid, self.events, ev["t"] or time.time())
        self.life_started = ev["t"] or time.time()
        rel = _v2_path(self._read(f"{self.proc_root}/{pid}/cgroup"))
        if rel is None:
            raise CannotStage("the container's process has no cgroup v2 path: the container"
                              " stage reads the container's own v2 cgroup")  # fmt: skip
        self.cgroup_dir = limit_cgroup(self.cgroup_root, rel, self.ram_limit)
        self._wait_first_report(first)
        return state

    def _wait_first_report(self, first: bool) -> None:
        """The hog is armed and its cache warm at its first report."""
        assert self.hog is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            interrupt.check()
            ready = interrupt.wait_readable([self.hog.report_fd], 0.2)
            if ready:
                try:
                    data = os.read(self.hog.report_fd, 4096)
                except BlockingIOError:
                    data = b"x"
                if data:
                    return
            if self.hog.exited():
                code = self.hog.poll()
                raise CannotStage(f"the hog failed to start in its container (exit {code}):"
                                  f" {self._logs_tail()}")  # fmt: skip
        raise CannotStage(f"the hog did not get ready within {READY_TIMEOUT:.0f} s")

    def _logs_tail(self) -> str:
        try:
            text = (
                self.container.logs(stdout=False, stderr=True, tail=5)
                .decode("utf-8", "replace")
                .strip()
                .splitlines()
            )
            return text[-1] if text else "no output"
        except Exception:
            return "no output"

    def _inspect_state(self) -> dict:
        try:
            self.container.reload()
            return dict(self.container.attrs.get("State") or {})
        except Exception:
            return {}

    def inspect(self) -> dict:
        """The engine's State and RestartCount now."""
        st = self._inspect_state()
        st["RestartCount"] = (self.container.attrs or {}).get("RestartCount")
        return st

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    # ---- readings, controls, driver

    def files(self) -> StageFiles:
        if not self.cgroup_dir:
            raise CannotStage("the stage is not prepared")
        return memory_files(2, self.cgroup_dir, self.proc_root)

    def start(self) -> None:
        pass  # the hog climbs as soon as its container starts

    def pause(self) -> None:
        self.paused = True
        try:
            self.container.pause()
        except Exception:
            pass

    def resume(self) -> None:
        self.paused = False
        try:
            self.container.unpause()
        except Exception:
            pass

    def set_rate(self, rate: int) -> None:
        pass  # fixed: the hog's stdin is its own inside the container

    def release(self) -> None:
        if self.container is not None:
            try:
                self.container.update(restart_policy={"Name": "no"})
            except Exception:
                pass
            try:
                self.container.kill()
            except Exception:
                pass

    def header_fields(self) -> dict:
        """The recording header's container fields."""
        return {
            "engine": self.sock.engine if self.sock else None,
            "engine_socket": self.sock.path if self.sock else None,
            "container": self.name,
            "image": self.image,
            "restarts": self.restarts,
        }

    def teardown(self) -> None:
        """Remove the container (with its writable layer) and wait for its cgroup to go;
        the image stays for the next show. Idempotent."""
        errors = []
        if self.hog is not None:
            self.hog.close()
        if self.container is not None:
            try:
                self.container.remove(force=True, v=True)
            except Exception as e:
                if "404" not in str(e) and "No such" not in str(e):
                    errors.append(f"container {self.name} ({type(e).__name__})")
            self.container = None
        if not errors and self._value:
            self.state.forget("container", self._value)
            self._value = None
        if self.events is not None:
            self.events.close()
            self.events = None
        if self.cgroup_dir:
            deadline = time.monotonic() + 10
            while os.path.exists(self.cgroup_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if os.path.exists(self.cgroup_dir):
                errors.append(f"cgroup {self.cgroup_dir}")
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        if errors:
            raise CannotStage(f"could not remove {', '.join(errors)}; run `beep-av cleanup`")


def _one_line(e) -> str:
    """An engine's error as one line (its explanations may hold newlines)."""
    return " ".join(str(getattr(e, "explanation", None) or e).split())


def _v2_path(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


# ---------------------------------------------------------------- the driver: each life of the container


def engine_fields(stage: ContainerStage, life: int, kill: KillRecord, kernel_kill_t: float | None,
                  to_show, stop: threading.Event) -> dict:  # fmt: skip
    """The engine's verdict on this life's kill: its `oom` and `die` events (waited for
    up to ENGINE_WAIT s), State.OOMKilled and ExitCode (when the container is not
    running again yet), the restart count; times on the show's clock."""
    ev = stage.events
    cid = stage.container.id
    after = stage.life_started  # this life's events come after its start (one daemon clock)
    die = ev.wait_for("die", after, ENGINE_WAIT, cid, stop) if ev else None
    oom = ev.wait_for("oom", after, 1.0 if die else ENGINE_WAIT, cid, stop) if ev else None
    st = stage.inspect()
    out: dict = {
        "engine": stage.sock.engine,
        "container": stage.name,
        "image": stage.image,
        "restart_count": life,
        "engine_restart_count": st.get("RestartCount"),
        "engine_events": [e for e, x in (("oom", oom), ("die", die)) if x is not None],
    }
    if die is not None:
        try:
            out["exit_code"] = int(die["attrs"].get("exitCode"))
        except (TypeError, ValueError):
            out["exit_code"] = None
        out["engine_die_t"] = round(to_show(die["t"]), 4)
    running = bool(st.get("Running")) or st.get("Status") == "restarting"
    if not running and st:
        out["oom_killed"] = bool(st.get("OOMKilled"))
        out["exit_code"] = st.get("ExitCode", out.get("exit_code"))
        out["engine_source"] = "inspect"
    else:
        # restarted (or restarting) already: the engine resets State; its `oom` event
        # is its OOMKilled verdict on this life
        out["oom_killed"] = oom is not None
        out["engine_source"] = "events"
    if oom is not None:
        out["engine_oom_t"] = round(to_show(oom["t"]), 4)
        if kernel_kill_t is not None:
            out["engine_latency_ms"] = round((to_show(oom["t"]) - kernel_kill_t) * 1000, 3)
    return out


class ContainerDriver:
    """Plays the container's lives: for each, the sampler over its cgroup and the
    story up to the finale, then the engine's verdict on the kill; between lives, the
    engine's back-off (from its `die` to its next `start`)."""

    kind = "container"

    def __init__(self, stage: ContainerStage, initial: ShowState, hz: float,
                 story_cfg=None) -> None:  # fmt: skip
        from beep_av.live import story_config

        self.stage = stage
        self.initial = initial
        # the exit comes through the engine (its `die`): Podman's may follow the kernel's
        # kill by more than the story's usual second (seen under emulation)
        self.cfg = story_cfg or replace(story_config(stage), confirm_timeout=ENGINE_WAIT)
        self.hz = hz
        self._kills: list[KillRecord] = []
        self.backoffs: list[float] = []

    @property
    def paused(self) -> bool:
        return bool(self.stage.paused)

    def kills(self) -> list[KillRecord]:
        return list(self._kills)

    def command(self, cmd: str) -> str | None:
        """Space pauses the whole container (the engine's pause); the rate is fixed."""
        if cmd == "toggle_pause":
            if self.stage.paused:
                self.stage.resume()
                return ""
            self.stage.pause()
            return "paused (the engine froze the container)"
        if cmd in ("rate_up", "rate_down"):
            return "the rate is fixed on the container stage (the hog is out of reach)"
        if cmd == "release":
            self.stage.release()
            return "released: the container is killed and removed"
        return None

    def close(self) -> None:
        """Kill the container now (the machine is safe first); the stage's own step of
        the ladder removes it. Safe twice."""
        self.stage.release()

    def run(self, publish, stop: threading.Event, t0: float) -> bool:
        from beep_av.sampler import Sampler
        from beep_av.story import advance

        stage = self.stage
        wall0 = time.time() - (clock.now() - t0)  # show t = epoch - wall0

        def to_show(epoch: float) -> float:
            return epoch - wall0

        tick = 1.0 / self.hz
        state: ShowState | None = None
        for life in range(stage.restarts + 1):
            if life:
                die = stage.events.find("die", stage.life_started, stage.container.id)
                stage._start_life(after=stage.life_started + 0.001, stop=stop)
                if die is not None and die["t"] is not None:
                    self.backoffs.append(round(stage.life_started - die["t"], 4))
                now = clock.now() - t0
                state = ShowState(
                    t=now, stage="container", entered=((Phase.CALM, now),),
                    snapshot=Snapshot(t=now, ram_limit=stage.ram_limit, swap_limit=stage.swap_limit,
                                      cache_bytes=stage.cache_bytes),
                )  # fmt: skip
            src = Sampler(stage.files(), stage.hog, t0=t0, hz=self.hz, ram_limit=stage.ram_limit,
                          swap_limit=stage.swap_limit, kernel_clock=stage.kernel_clock)  # fmt: skip
            state = state or self.initial
            try:
                next_at = time.monotonic()
                while not stop.is_set():
                    snap = src.read(clock.now() - t0)
                    if snap.hog_exit not in (None, -9, 137):
                        raise CannotStage(
                            f"the hog ended on its own (exit {snap.hog_exit}) before the kernel"
                            f" killed it: {stage._logs_tail()}"
                        )
                    new = advance(self.cfg, state, snap)
                    if new.phase is Phase.FINALE:
                        state = new
                        break
                    state = new
                    publish(state)
                    next_at += tick
                    now = time.monotonic()
                    if next_at < now:
                        next_at = now + tick
                    src.wait(max(0.0, next_at - now))
            finally:
                src.close()
            if stop.is_set() or state.kill is None:
                return False
            kernel_t = state.snapshot.kmsg_t
            fields = engine_fields(stage, life, state.kill, kernel_t, to_show, stop)
            fields["restarts_max"] = stage.restarts
            if life:
                fields["backoff_s"] = self.backoffs[-1] if self.backoffs else None
            kill = replace(state.kill, engine=fields)
            state = replace(state, kill=kill)
            self._kills.append(kill)
            publish(state)
        return True
