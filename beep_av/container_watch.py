"""`beep-av watch --containers`: no hog. Follow a container engine's event stream and
bring a card (and a beep) for every container the kernel OOM-kills on this machine:
the container's name, image, exit code and restart count from the engine, and the
kernel's kill record matched to it (the `oom-kill:` line's task_memcg names the
container's cgroup, which holds its id). The summary lists them at the end.

ContainerWatchDriver has the drivers' interface (kind, run, command, close, kills)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from beep_av import clock
from beep_av.model import KillRecord, KmsgKill, Phase, ShowState
from beep_av.stages.base import memory_files

KMSG_WAIT = 2.0  # s after the engine's `die` for the kernel's record to be read
CARD_HOLD = 3.0  # s the finale (the card) stays before watching on


def match_kmsg(kills: list[KmsgKill], cid: str) -> KmsgKill | None:
    """The kernel's kill record of the container `cid` (its full id): the latest
    "Killed process" record whose oom-kill: line's task_memcg holds the id (a
    record without task_memcg cannot be matched: None)."""
    scope = None
    for k in kills:
        if k.task_memcg and cid and cid in k.task_memcg:
            scope = k  # the oom-kill: line: which cgroup, which pid
    if scope is None:
        return None
    # its "Killed process" record (same pid, read after it) carries anon-rss
    after = kills[kills.index(scope) + 1 :]
    full = next((k for k in after if k.pid == scope.pid and k.anon_rss_kib is not None), None)
    if full is None:
        return scope
    return replace(full, task_memcg=scope.task_memcg, oom_memcg=scope.oom_memcg,
                   kernel_t=scope.kernel_t if scope.kernel_t is not None else full.kernel_t,
                   seen_t=scope.seen_t if scope.seen_t is not None else full.seen_t)  # fmt: skip


def watch_kill(ev_die: dict, ev_oom: dict | None, attrs: dict, inspect: dict | None,
               kmsg: KmsgKill | None, engine: str, t: float, to_show) -> KillRecord:  # fmt: skip
    """A container's OOM kill as a kill record: the engine's fields and the kernel's."""
    try:
        code = int(ev_die["attrs"].get("exitCode"))
    except (TypeError, ValueError):
        code = None
    st = (inspect or {}).get("State") or {}
    running = bool(st.get("Running")) or st.get("Status") == "restarting"
    fields = {
        "engine": engine,
        "container": str(attrs.get("name") or (inspect or {}).get("Name", "?")).lstrip("/"),
        "image": attrs.get("image") or (inspect or {}).get("Config", {}).get("Image"),
        "exit_code": code,
        "restart_count": (inspect or {}).get("RestartCount"),
        "engine_events": [e for e, x in (("oom", ev_oom), ("die", ev_die)) if x],
        "engine_die_t": round(to_show(ev_die["t"]), 4) if ev_die.get("t") else None,
    }
    if inspect and not running:
        fields["oom_killed"] = bool(st.get("OOMKilled"))
        fields["engine_source"] = "inspect"
    else:
        fields["oom_killed"] = ev_oom is not None
        fields["engine_source"] = "events"
    if ev_oom is not None and ev_oom.get("t"):
        fields["engine_oom_t"] = round(to_show(ev_oom["t"]), 4)
        if kmsg is not None and kmsg.kernel_t is not None:
            fields["engine_latency_ms"] = round((to_show(ev_oom["t"]) - kmsg.kernel_t) * 1000, 3)
    sources = ["exit"] if code == 137 else []
    if kmsg is not None:
        sources.append("kmsg")
    lat = None
    if kmsg is not None and kmsg.kernel_t is not None and kmsg.seen_t is not None:
        lat = (kmsg.seen_t - kmsg.kernel_t) * 1000.0
    return KillRecord(
        pid=kmsg.pid if kmsg else 0,
        name=kmsg.name if kmsg else "?",
        exit=code,
        signal=9 if code == 137 else None,
        oom_kill_count=0,
        kmsg=kmsg.text if kmsg else None,
        anon_rss_kib=kmsg.anon_rss_kib if kmsg else None,
        detected_by=tuple(sources),
        latency_ms=lat,
        t=t,
        engine=fields,
        report=kmsg.report if kmsg else None,
    )


class ContainerWatchDriver:
    """Follows the engine's events and the kernel log; publishes the host's readings,
    and a kill (oom, then finale with the card) for every container OOM kill."""

    kind = "watch-containers"

    def __init__(self, hz: float = 20.0, engine: str | None = None) -> None:
        self.hz = hz
        self.engine_name = engine
        self.kernel_clock = None
        self.client = self.sock = self.events = self.sampler = None
        self._kills: list[KillRecord] = []
        self.notes: list[str] = []

    def open(self) -> tuple[int, int]:
        """Connect to the engine (CannotStage with the fix when none answers), follow
        its events, open the host's readings. (ram, swap) of the host in bytes."""
        from beep_av import engines
        from beep_av.sampler import Sampler
        from beep_av.stages.container import EventLog

        if self.client is None:
            self.client, self.sock = engines.connect(self.engine_name)
            self.events = EventLog(self.client, {"type": "container"})
            self.sampler = Sampler(memory_files(0, None), None, hz=self.hz,
                                   kernel_clock=self.kernel_clock)  # fmt: skip
            self.notes = list(self.sampler.notes)
        return self.sampler.ram_limit, self.sampler.swap_limit

    def describe(self) -> str:
        return f"the containers of {self.sock.describe()}" if self.sock else "containers"

    def kills(self) -> list[KillRecord]:
        return list(self._kills)

    def command(self, cmd: str) -> str | None:
        return None

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None

    def _inspect(self, cid: str) -> dict | None:
        try:
            return self.client.api.inspect_container(cid)
        except Exception:  # removed already (--rm): the events' attributes must do
            return None

    def run(self, publish: Callable[[ShowState], None], stop: threading.Event, t0: float) -> bool:
        self.open()
        src, ev = self.sampler, self.events
        src.t0 = t0
        wall0 = time.time() - (clock.now() - t0)

        def to_show(epoch: float) -> float:
            return epoch - wall0

        kmsgs: list[KmsgKill] = []
        done = 0  # events handled
        pending: list[tuple[dict, float]] = []  # (die event, show time seen)
        card_until: float | None = None
        state = ShowState(stage="watch")
        tick = 1.0 / self.hz
        while not stop.is_set():
            t = clock.now() - t0
            snap = src.read(t)
            kmsgs += src.kills
            src.kills.clear()
            with ev._cond:
                new = ev.events[done:]
                done = len(ev.events)
            for e in new:
                if e["action"] == "die":
                    pending.append((e, t))
            for item in list(pending):
                die, seen = item
                cid = die["id"] or ""
                code = str(die["attrs"].get("exitCode", ""))
                oom = ev.find("oom", (die["t"] or 0) - 10.0, cid)
                if code != "137" and oom is None:
                    pending.remove(item)  # an ordinary exit: not an OOM kill
                    continue
                kmsg = match_kmsg(kmsgs, cid)
                if kmsg is None and t - seen < KMSG_WAIT:
                    continue  # the kernel's record may still be on its way
                pending.remove(item)
                if oom is None and kmsg is None:
                    continue  # exit 137 with no OOM evidence: a kill from user space
                kill = watch_kill(die, oom, die["attrs"], self._inspect(cid), kmsg,
                                  self.sock.engine, t, to_show)  # fmt: skip
                self._kills.append(kill)
                state = replace(state, phase=Phase.OOM, oom_t=t, kill=kill, t=t, snapshot=snap,
                                entered=state.entered + ((Phase.OOM, t),))  # fmt: skip
                publish(state)
                state = replace(state, phase=Phase.FINALE,
                                entered=state.entered + ((Phase.FINALE, t),))  # fmt: skip
                card_until = t + CARD_HOLD
            if card_until is not None and t >= card_until:
                card_until = None
                state = replace(state, phase=Phase.CALM, entered=state.entered + ((Phase.CALM, t),))
            state = replace(state, t=t, snapshot=replace(snap, ram_limit=snap.ram_limit or 0))
            publish(state)
            src.wait(tick)
        return False


def summary_lines(kills: list[KillRecord], seconds: float, what: str) -> list[str]:
    """One line per container OOM kill, then the total."""
    out = []
    for i, k in enumerate(kills, 1):
        e = k.engine or {}
        who = f"pid {k.pid} ({k.name})" if k.pid else "no kernel record matched"
        verdict = "OOMKilled" if e.get("oom_killed") else "not OOMKilled"
        out.append(
            f"kill {i}: {k.t:8.2f}s  container {e.get('container')}  image {e.get('image')}"
            f"  exit {e.get('exit_code')}  {verdict}  restarts {e.get('restart_count')}"
            f"  kernel: {who}"
        )
    n = len(kills)
    out.append(f"watch: {n} container OOM kill{'s' if n != 1 else ''} seen in {what}"
               f" over {seconds:.1f} s")  # fmt: skip
    return out
