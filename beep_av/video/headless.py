"""The headless output: one line per phase, a live progress line on a terminal, the
victim card at the end, the bell at the finale."""

from __future__ import annotations

import sys
from typing import TextIO

from beep_av.model import Phase, ShowState
from beep_av.summary import card, phase_line, progress_line


class HeadlessOutput:
    fps = 10.0

    def __init__(self, stream: TextIO | None = None, bell: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.bell = bell
        self._printed: set[Phase] = set()
        self._skips: set[Phase] = set()
        self._cache_peak = 0
        self._progress_shown = False
        self._cards_shown: set[tuple[int, float]] = set()  # (pid, t): watch sees many

    def open(self) -> None:
        pass

    def _line(self, text: str) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def frame(self, state: ShowState) -> list[str]:
        if state.snapshot.ram_limit <= 0 and state.phase is Phase.CALM:
            return []  # the stage is still being prepared: nothing to say yet
        self._cache_peak = max(self._cache_peak, state.snapshot.cache_bytes)
        skipped = dict(state.skipped)
        for phase, t in state.entered:
            for p, reason in state.skipped:
                if p not in self._skips and p.index < phase.index:
                    self._skips.add(p)
                    self._line(f"{'':7}  {p.value:<9} skipped: {reason}")
            if phase not in self._printed:
                self._printed.add(phase)
                self._line(phase_line(state, phase, t, self._cache_peak))
                if phase is Phase.FINALE and self.bell:
                    self.stream.write("\a")
        for p, reason in skipped.items():
            if p not in self._skips:
                self._skips.add(p)
                self._line(f"{'':7}  {p.value:<9} skipped: {reason}")
        for b in state.bystanders:  # kills of other processes: a card each, show goes on
            if (b.pid, b.t) not in self._cards_shown:
                self._cards_shown.add((b.pid, b.t))
                self._line("")
                for line in card(state, b).columns():
                    self._line("  " + line)
                self._line("")
        card_key = (state.kill.pid, state.kill.t) if state.kill else None
        view = state.act_view
        if state.phase is Phase.FINALE and view is not None and view.card:
            # an act's card (beep_av.acts): its lines as they come (a read-back adds one)
            done = getattr(self, "_act_lines", 0)
            if not done:
                self._line("")
            lines = card(state).columns()
            for line in lines[done:]:
                self._line("  " + line)
            self._act_lines = max(done, len(lines))
        elif state.phase is Phase.FINALE and card_key and card_key not in self._cards_shown:
            self._cards_shown.add(card_key)
            self._line("")
            for line in card(state, state.kill).columns():
                self._line("  " + line)
        elif self.tty and state.phase.index < Phase.OOM.index:
            self.stream.write("\r\033[K" + progress_line(state))
            self.stream.flush()
            self._progress_shown = True
        return []

    def close(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False
        self.stream.flush()
