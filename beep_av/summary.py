"""Plain-text pieces every output shares: the phase line and the victim card. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from beep_av.model import OWN_KILLER, KillRecord, Phase, ShowState

MiB = 1024**2


def mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"


def confirmed_by(kill: KillRecord) -> str:
    names = {"exit": "exit status", "oom_kill": "oom_kill counter", "kmsg": "kernel log"}
    return " + ".join(names.get(s, s) for s in kill.detected_by) or "nothing"


REHEARSAL = "rehearsal: nothing was killed"


def is_rehearsal(stage: str) -> bool:
    return stage == "rehearsal"


def latency_text(kill: KillRecord) -> str:
    """ "detected in 0.4 ms" from the kernel's own time of the kill; "latency unknown"
    without a comparable kernel time (never a 0.0 that measures nothing)."""
    lat = kill.latency_ms
    if lat is None or not math.isfinite(lat):
        return "latency unknown"
    if lat < 0.05:
        return "detected in < 0.1 ms"
    return f"detected in {lat:.1f} ms" if lat < 10 else f"detected in {lat:.0f} ms"


def killer_phrase(kill: KillRecord) -> str:
    """ "user space", or "user space (systemd-oomd is running)"."""
    if kill.killer in ("user space", "kernel", ""):
        return "user space"
    if kill.killer == OWN_KILLER:
        return "user space (beep-av's own killer, on a PSI trigger)"
    verb = "are" if " or " in kill.killer else "is"
    return f"user space ({kill.killer} {verb} running)"


def bystander_title(kill: KillRecord) -> str:
    """ "the kernel killed 1234 (python3), not the hog"."""
    if not kill.pid:
        return "the kernel killed a process in the stage's domain, not the hog"
    return f"the kernel killed {kill.pid} ({kill.name}), not the hog"


def _mib(kib: int | None) -> str:
    return f"{kib / 1024:.0f} MiB" if kib is not None else "?"


def engine_verdict(kill: KillRecord) -> str:
    """ "the kernel killed pid N (python3); the engine says OOMKilled, exit 137"."""
    e = kill.engine or {}
    if e.get("oom_killed") is True:
        says = "OOMKilled"
    elif e.get("oom_killed") is False:
        says = "not OOMKilled"
    else:
        says = "nothing about an OOM kill"
    code = e.get("exit_code")
    says += f", exit {code}" if code is not None else ", exit unknown"
    who = f"pid {kill.pid} ({kill.name})" if kill.pid else "a process (no kernel record)"
    return f"the kernel killed {who}; the engine says {says}"


def engine_lines(kill: KillRecord, lang: str = "en") -> list[str]:
    """The container's lines of a card: the verdicts, the engine's times, and what a
    Kubernetes user would see (captions: container_oomkilled, _restarts, _crashloop)."""
    e = kill.engine or {}
    lines = [engine_verdict(kill)]
    name = e.get("container") or "?"
    lines.append(f"container {name}  image {e.get('image') or '?'}  ({e.get('engine') or '?'})")
    lat = e.get("engine_latency_ms")
    if lat is not None:
        lines.append(f"engine's oom event {lat:.1f} ms after the kernel's kill")
    elif "oom" not in (e.get("engine_events") or []):
        lines.append("the engine sent no oom event")
    else:
        lines.append("engine's oom event: time from the kernel's kill unknown")
    n, most = e.get("restart_count"), e.get("restarts_max")
    if e.get("backoff_s") is not None:
        lines.append(f"restarted {e['backoff_s']:.2f} s after its death (back-off and start)")
    if e.get("oom_killed"):
        k8s = [_caption(lang, "container_oomkilled", "OOMKilled")]
    else:  # the runtime's word is the reason a pod shows; without it, exit 137 is Error
        k8s = [f"Error (exit {e.get('exit_code')}): the engine did not say OOMKilled"]
    if n:
        k8s.append(_caption(lang, "container_restarts", "RESTARTS {n}").format(n=n))
    if most and n is not None and n >= 1:
        k8s.append(_caption(lang, "container_crashloop", "CrashLoopBackOff"))
    lines.append("Kubernetes: " + " · ".join(k8s))
    return lines


_CAPTIONS: dict[str, dict[str, str]] = {}


def _caption(lang: str, key: str, default: str) -> str:
    lang = lang if lang in ("en", "fr") else "en"
    if lang not in _CAPTIONS:
        try:
            from beep_av.video.captions import load_captions

            _CAPTIONS[lang] = load_captions(lang)
        except Exception:  # captions are words; a card without them still says it all
            _CAPTIONS[lang] = {}
    return _CAPTIONS[lang].get(key) or default


def share_text(x: float) -> str:
    """A share as a percentage a person reads: "37%", and "0.033%" below 1%."""
    pct = 100 * x if math.isfinite(x) else 0.0
    return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def hud_word(state: ShowState) -> str:
    """The HUD's big word, in every output: the act's own (throttle's FULL SPEED,
    THROTTLING), else the phase's name."""
    view = state.act_view
    return view.word if view is not None and view.word else state.phase.value.upper()


def cpu_figures(state: ShowState) -> tuple[float, float]:
    """The throttle act's gauge, in every output: (work against full speed, share of
    the periods throttled so far), each clamped to [0, 1]; a figure not known reads
    as full speed and no throttling."""
    view = state.act_view
    work = view.speed if view is not None and math.isfinite(view.speed) else 1.0
    throttled = state.stall if math.isfinite(state.stall) else 0.0
    return min(1.0, max(0.0, work)), min(1.0, max(0.0, throttled))


WHY_UNKNOWN = "the kernel's table was not printed (rate-limited): its ranking is unknown"
_SAMPLE = {"n": 3, "rank": 1, "victim": "a", "points": "1", "other": "b", "share": 1, "name": "c"}


def _template(lang: str, key: str, default: str) -> str:
    """A caption that is a template: an edited one that does not format (a name not
    known, a stray brace) is replaced by the English default, not a crash at the kill."""
    text = _caption(lang, key, default)
    try:
        text.format(**_SAMPLE)
    except (KeyError, IndexError, ValueError, AttributeError):
        return default
    return text


_WHY_WORDS: dict[str, tuple[dict, dict[str, str]]] = {}  # lang -> (its captions, words)


def _why_words(lang: str) -> dict[str, str]:
    """The why line's templates for `lang`, checked once per loaded captions (the card
    is drawn every frame)."""
    from beep_av.oomreport import WHY_TEXT

    _caption(lang, "why_label", "why")  # loads the language's captions
    loaded = _CAPTIONS.get(lang if lang in ("en", "fr") else "en")
    got = _WHY_WORDS.get(lang)
    if got is None or got[0] is not loaded:
        got = (loaded, {k: _template(lang, k, v) for k, v in WHY_TEXT.items()})
        _WHY_WORDS[lang] = got
    return got[1]


def why_fields(kill: KillRecord, lang: str = "en") -> list[tuple[str, str]]:
    """The kernel's why, from its whole report (KillRecord.report), as (label, text):
    ("why", its ranking of the candidates it weighed) and ("asked", who asked for the
    page) when that was not the victim. Says so when the report had no task table;
    nothing when no report was read. In the captions' words for `lang` (keys why_*,
    English by default: oomreport.WHY_TEXT); each card lays the pairs out its own way."""
    from beep_av.oomreport import asked_text, ranking, ranking_text

    r = kill.report
    if not r:
        return []
    words = _why_words(lang)
    out = []
    cands = r.get("candidates")
    rank = ranking(cands, kill.pid)
    if rank is not None:
        out.append(("why", ranking_text(rank, words)))
    elif cands is None:
        out.append(("why", _caption(lang, "why_unknown", WHY_UNKNOWN)))
    trigger = r.get("trigger")
    asked = asked_text(trigger, kill.pid, kill.name, words) if trigger else None
    if asked and trigger.get("pid") not in (None, kill.pid):
        out.append(("asked", asked))
    return out


def why_lines(kill: KillRecord, lang: str = "en") -> list[str]:
    """why_fields as card lines: "why: ..." (the captions' why_label) and the asked
    line as it is."""
    label = _caption(lang, "why_label", "why")
    return [f"{label}: {text}" if key == "why" else text for key, text in why_fields(kill, lang)]


@dataclass(frozen=True)
class Card:
    """The card of an ending, composed once (`card`) for every output: `word` the big
    word (BEEP; an act's own, such as THROTTLED), `title` what happened, said plainly
    ("" when nobody was killed), and its rows, each in both layouts: `lines()` under
    the big word (window, terminal), `columns()` with a label column (headless, and
    the terminal's main screen after the show)."""

    word: str
    title: str
    rows: tuple[tuple[str | None, str | None], ...]  # (line, column); None: not in it

    def lines(self) -> list[str]:
        return [line for line, _ in self.rows if line is not None]

    def columns(self) -> list[str]:
        return [col for _, col in self.rows if col is not None]


def _col(label: str, text: str) -> str:
    return f"{label:<12}{text}"


def card(state: ShowState, kill: KillRecord | None = None) -> Card:
    """The card of `state`'s ending, or of `kill` (another process's kill: the card of
    a bystander, the show going on): the hog's OOM kill, a signal from user space, a
    rehearsal (nothing was killed), an act's own card (its view), a replay (names its
    file). The one place a card's facts are chosen; outputs only lay its rows out."""
    view = state.act_view
    word = view.title if view is not None and view.title else "BEEP"
    head = [(f"replay of {state.replay_of}",) * 2] if state.replay_of else []
    k = state.kill if kill is None else kill
    if kill is None and view is not None and view.card:  # an act composes its own lines
        title = "REHEARSAL" if is_rehearsal(state.stage) else _title(k)
        return Card(word, title, (*head, *((x, x) for x in view.card)))
    lang = state.captions
    if is_rehearsal(state.stage):
        rows = [(None, "REHEARSAL"), (REHEARSAL, REHEARSAL)]
        if k is not None and k.anon_rss_kib is not None:
            rss = _mib(k.anon_rss_kib)
            rows.append(
                (f"the model's hog reached {rss}", _col("model", f"the hog reached {rss} anon-rss"))
            )
        return Card(word, "REHEARSAL", (*head, *rows))
    if k is None:
        return Card(word, "", (*head, ("the hog is gone", None), ("no kill record", None)))
    rss = _mib(k.anon_rss_kib) if k.anon_rss_kib is not None else "unknown"
    confirmed = [(None, _col("confirmed", confirmed_by(k)))]
    if k.detected_by:
        confirmed = [("confirmed by " + " + ".join(k.detected_by), confirmed[0][1])]
    if not k.hog:  # a kernel kill of another process: the show goes on
        rows = [
            (None, "OOM KILL (not the hog)"),
            (bystander_title(k), _col("victim", bystander_title(k))),
        ]
        if k.anon_rss_kib is not None:
            rows.append((f"anon-rss {rss}", None))
        rows += [(None, _col("anon-rss", rss)), *confirmed, (latency_text(k),) * 2]
        rows.append(("the show goes on", None))
        return Card(word, _title(k), (*head, *rows))
    if not k.oom:
        return Card(word, _title(k), (
            *head,
            (None, "NOT AN OOM KILL"),
            (f"pid {k.pid}  {k.name}", _col("victim", f"pid {k.pid} ({k.name})")),
            (f"killed by a signal from {killer_phrase(k)}",
             _col("killed by", f"a signal from {killer_phrase(k)}")),
            ("not an OOM kill: the kernel said nothing", None),
            ("exit 137 (SIGKILL)", _col("status", "exit 137 (SIGKILL), no kernel OOM evidence")),
        ))  # fmt: skip
    rows = []
    status = f"exit {k.exit} (OOMKilled)" if k.exit == 137 else f"exit {k.exit}"
    if k.engine is not None:  # the kernel's part of a container's card: the engine's
        # verdict is its own line; its words follow the captions under the big word
        status = f"exit {k.exit} (SIGKILL)" if k.exit == 137 else f"exit {k.exit}"
        rows += [(x, None) for x in engine_lines(k, lang)]
        rows += [(None, _col("engine", x)) for x in engine_lines(k)]
    rows.append((None, "OOM KILL"))
    rows.append((f"pid {k.pid}  {k.name}", _col("victim", f"pid {k.pid} ({k.name})")))
    rows.append((f"anon-rss {_mib(k.anon_rss_kib)}", _col("anon-rss", rss)))
    rows += [(x, None) for x in why_lines(k, lang)]
    rows += [(None, _col(label, text)) for label, text in why_fields(k)]
    if k.exit == 137 or k.signal == 9:
        rows.append(("exit 137 (OOMKilled)", None))
    elif k.exit is not None:
        rows.append((f"exit {k.exit}", None))
    rows.append((None, _col("status", status)))
    rows += [*confirmed, (latency_text(k),) * 2]
    rows += [(f"before: {bystander_title(b)}", None) for b in state.bystanders[-2:]]
    return Card(word, _title(k), (*head, *rows))


def _title(k: KillRecord | None) -> str:
    if k is None:
        return ""
    return "OOM KILLED" if k.oom else "NOT AN OOM KILL"


def card_lines(state: ShowState) -> list[str]:
    """The finale's card as lines under the big word (the window, the terminal)."""
    return card(state).lines()


def bystander_lines(kill: KillRecord) -> list[str]:
    """The card of a kernel kill that was not the hog's (the show goes on)."""
    return card(ShowState(), kill).lines()


def victim_card(kill: KillRecord, stage: str = "", replay_of: str | None = None) -> list[str]:
    """The card of `kill` in columns (headless, the terminal's main screen)."""
    return card(ShowState(stage=stage, replay_of=replay_of), kill).columns()


def phase_line(state: ShowState, phase: Phase, t: float, cache_peak: int) -> str:
    """One line for a phase entered: the time and the numbers that explain it."""
    s = state.snapshot
    hog = f"hog {mib(s.hog_bytes)}"
    if phase is Phase.CALM:
        why = f"stage ready: {mib(s.ram_limit)} RAM + {mib(s.swap_limit)} swap, cache {mib(s.cache_bytes)}"
    elif phase is Phase.FILLING:
        why = f"{hog}, cache {mib(s.cache_bytes)}, rate {mib(state.fill_rate)}/s"
    elif phase is Phase.EVICTING:
        why = f"cache {cache_peak // MiB} -> {mib(s.cache_bytes)}, {hog}"
    elif phase is Phase.SWAPPING:
        why = f"swap {mib(s.swap_bytes)}, cache {mib(s.cache_bytes)}, {hog}, stall {state.stall * 100:.0f}%"
    elif phase is Phase.OOM:
        k = state.kill
        who = f"pid {k.pid} ({k.name})" if k else "the hog"
        why = f"the kernel killed {who}, {hog}, swap {mib(s.swap_bytes)}"
        if k is not None and not k.oom:
            why = (
                f"{who} killed by a signal from {killer_phrase(k)}, {hog}, swap {mib(s.swap_bytes)}"
            )
        if is_rehearsal(state.stage):
            how = (
                "the model's killer ended it"
                if k is not None and not k.oom
                else "the model's hog met the limit"
            )
            why = f"{REHEARSAL} ({how}), {hog}, swap {mib(s.swap_bytes)}"
    else:
        k = state.kill
        if state.act_view is not None and state.act_view.card:
            why = state.act_view.card[0]  # an act's verdict comes first on its card
        elif is_rehearsal(state.stage):
            why = f"{REHEARSAL}; noise cut, beep"
        elif k is not None and not k.oom:
            why = f"killed by a signal from {killer_phrase(k)}: not an OOM kill"
        elif k is not None:
            why = f"confirmed by {confirmed_by(k)}, {latency_text(k)}"
        else:
            why = "noise cut, beep"
    return f"{t:6.1f}s  {phase.value:<9} {why}"


def progress_line(state: ShowState) -> str:
    s = state.snapshot
    return (
        f"{state.t:6.1f}s  {state.phase.value:<9} hog {mib(s.hog_bytes):>8}  "
        f"cache {mib(s.cache_bytes):>8}  swap {mib(s.swap_bytes):>8}  "
        f"stall {state.stall * 100:3.0f}%  intensity {state.intensity:4.2f}"
    )
