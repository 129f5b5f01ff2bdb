"""`beep-av explain [FILE|-]`: every OOM event in a kernel log, explained.

Reads any kernel log (a file, or stdin: `journalctl -k | beep-av explain -`, `dmesg`, a
node's log), finds each OOM event with the pure parser (oomreport.py) and prints, for
each, a card: who was killed, why (the kernel's own points for every candidate it
weighed), who asked for the page that tipped it, under which limit, how much memory the
victim held. `--json`: one JSON object per event (JSON Lines). `-o PICTURE.png`: the
candidates' points as bars, the victim marked, in the report's style.

Exit codes: 0 at least one event explained; 1 the text holds none (one line);
2 unreadable input (a missing file, a directory)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator

from beep_av.errors import BadInput
from beep_av.oomreport import OomEvent, asked_text, file_events, ranking_line

Say = Callable[[str], None]
MiB_KIB = 1024
MAX_DRAWN = 6  # events in one picture (the first ones; the count is in its title)
MAX_BARS = 8  # candidates drawn per event (the most points first, the victim always)


def _mib(kib: int | None) -> str:
    if kib is None:
        return "?"
    return f"{kib:,} kB" if kib < MiB_KIB else f"{kib / MiB_KIB:,.0f} MiB"


def _pts(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


# ---------------------------------------------------------------- the card


def why_line(ev: OomEvent) -> str:
    """The kernel's ranking in one line, or what keeps us from knowing it."""
    v = ev.victim
    if ev.no_killable:
        return "nothing was killable: every candidate was protected (oom_score_adj -1000)"
    if v is None:
        return "the log ends before the kernel's kill line: whom it killed is unknown"
    if ev.candidates is None:
        return "the log has no task table for this kill: the kernel's ranking is unknown"
    ev.score()
    chosen = ev.chosen or v
    line = ranking_line([c.fields() for c in ev.candidates], chosen.pid)
    if line is None:
        return f"pid {chosen.pid} has no points in the kernel's table ({len(ev.candidates)} candidates)"
    if chosen.pid != v.pid:  # older kernels: the chosen one's child was killed instead
        line += f"; it sacrificed its child {v.pid} ({v.name})"
    return line


def asked_line(ev: OomEvent) -> str | None:
    """Who asked for the page that tipped it, when it was not the victim."""
    v = ev.victim
    trigger = ev.trigger.fields() if ev.trigger is not None else None
    return asked_text(trigger, v.pid if v else None, v.name if v else None)


def limit_line(ev: OomEvent) -> str:
    if ev.cgroup_oom:
        where = ev.oom_memcg or "a memory cgroup"
        mem = ev.limits.get("memory")
        if mem is None:
            return f"the limit of {where}"
        text = f"the limit of {where}: {_mib(mem[1])} of memory"
        sw = ev.limits.get("memory+swap") or ev.limits.get("swap")
        if sw is not None and sw[1] < 1 << 50:
            text += f", {_mib(sw[1])} {'memory+swap' if 'memory+swap' in ev.limits else 'swap'}"
        return text
    if ev.ram_pages is not None:
        swap = f" + {_mib(ev.swap_kib)} swap" if ev.swap_kib else ", no swap"
        return f"the whole machine: {_mib(ev.ram_pages * 4)} RAM{swap}"
    if ev.constraint and ev.constraint != "CONSTRAINT_NONE":
        return f"constraint {ev.constraint}"
    return "the whole machine (its size is not in the log)"


def card(ev: OomEvent, n: int) -> list[str]:
    """One event's card as lines of text (the terminal)."""
    v = ev.victim
    head = f"OOM event {n}"
    if ev.kernel_t is not None:
        head += f" at {ev.kernel_t:.3f} s"
    head += " (a memory cgroup)" if ev.cgroup_oom else " (the whole machine)"
    lines = [head]
    if v is None:
        lines.append("killed      nobody" if ev.no_killable else "killed      unknown")
    else:
        held = f", anon-rss {_mib(v.anon_rss_kib)}" if v.anon_rss_kib is not None else ""
        lines.append(f"killed      pid {v.pid} ({v.name}){held}")
        more = [x for x in ev.victims if x.killed and x.pid != v.pid]
        if more:
            names = ", ".join(f"{x.pid} ({x.name})" for x in more)
            lines.append(f"also        {names}" + (" (memory.oom.group)" if ev.group else ""))
    lines.append(f"why         {why_line(ev)}")
    asked = asked_line(ev)
    if asked:
        lines.append(f"asked       {asked}")
    lines.append(f"under       {limit_line(ev)}")
    return lines


# ---------------------------------------------------------------- the command


def _events(path: str) -> Iterator[OomEvent]:
    if path == "-":
        yield from file_events(sys.stdin.buffer)
        return
    if os.path.isdir(path):
        raise BadInput(f"explain: {path} is a directory, not a kernel log")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BadInput(f"explain: cannot read {path} ({e.strerror or e})") from None
    with f:
        try:
            yield from file_events(f)
        except OSError as e:
            raise BadInput(f"explain: cannot read {path} ({e.strerror or e})") from None


def run_explain(
    path: str, *, as_json: bool = False, out: str | None = None, say: Say = print
) -> int:
    """The command: cards (or JSON Lines) on stdout as events are found; the picture
    at the end. Returns the exit code."""
    if out is not None:
        from beep_av import outfiles

        outfiles.check_file(out, f"-o {out}")  # before reading: nothing lost
    n = 0
    drawn: list[OomEvent] = []
    for ev in _events(path):
        n += 1
        if as_json:
            say(json.dumps({"event": n, **ev.fields()}, separators=(",", ":")))
        else:
            if n > 1:
                say("")
            for line in card(ev, n):
                say(line)
        if out is not None and len(drawn) < MAX_DRAWN:
            drawn.append(ev)
    if n == 0:
        print(
            f"beep-av: explain: no OOM event in {'stdin' if path == '-' else path}",
            file=sys.stderr,
        )
        return 1
    if out is not None:
        draw_events(drawn, n, out)
        if not as_json:
            say(f"explain: wrote {out}")
    return 0


# ---------------------------------------------------------------- the picture


def draw_events(evs: list[OomEvent], total: int, out: str, size=(1200, 0)) -> None:
    """The candidates' points as horizontal bars, one panel per event, the victim in
    the kill colour (report.KILL_COLOUR); written through outfiles (BadInput)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    from beep_av import outfiles
    from beep_av.report import BACKGROUND, KILL_COLOUR, TOTAL_LIMIT_COLOUR

    if not pygame.font.get_init():
        pygame.font.init()
    font = pygame.font.Font(None, 24)
    small = pygame.font.Font(None, 20)
    w = size[0]
    bar_h, gap, pad = 22, 6, 24
    heights = []
    for ev in evs:
        rows = min(MAX_BARS, len(ev.ranked())) if ev.candidates else 1
        heights.append(40 + rows * (bar_h + gap) + 20)
    h = 60 + sum(heights)
    surf = pygame.Surface((w, h))
    surf.fill(BACKGROUND)
    title = f"beep-av explain  |  {total} OOM event{'s' if total != 1 else ''}"
    if total > len(evs):
        title += f" (the first {len(evs)} drawn)"
    surf.blit(font.render(title, True, (235, 235, 235)), (pad, 18))
    y = 60
    for i, (ev, hh) in enumerate(zip(evs, heights, strict=True)):
        v = ev.victim
        head = card(ev, i + 1)
        surf.blit(font.render(f"{head[0]}  —  {why_line(ev)}", True, (220, 220, 220)), (pad, y))
        order = ev.ranked()[:MAX_BARS]
        if v is not None and order and all(c.pid != v.pid for c in order):
            mine = [c for c in ev.ranked() if c.pid == v.pid]
            order = order[: MAX_BARS - 1] + mine
        top = max((c.points or 0 for c in order), default=0) or 1
        by = y + 34
        if not order:
            surf.blit(small.render("no task table in the log", True, TOTAL_LIMIT_COLOUR), (pad, by))
        label_w = 260
        for c in order:
            is_v = v is not None and c.pid == v.pid
            colour = KILL_COLOUR if is_v else TOTAL_LIMIT_COLOUR
            bw = max(2, int((w - label_w - 2 * pad - 120) * max(0, c.points or 0) / top))
            name = f"{c.name} ({c.pid})" + ("  KILLED" if is_v else "")
            surf.blit(small.render(name[:40], True, colour), (pad, by + 3))
            pygame.draw.rect(surf, colour, (pad + label_w, by, bw, bar_h))
            surf.blit(
                small.render(_pts(c.points), True, (235, 235, 235)),
                (pad + label_w + bw + 8, by + 3),
            )
            by += bar_h + gap
        y += hh
    label = f"-o {out}"
    try:
        with outfiles.open_file(out, label, "wb", at_close=True) as f:
            pygame.image.save(surf, f.f, "explain.png")
    except (OSError, pygame.error) as e:
        raise BadInput(f"{label}: cannot write ({getattr(e, 'strerror', None) or e})") from None


__all__ = ["asked_line", "card", "draw_events", "limit_line", "run_explain", "why_line"]
