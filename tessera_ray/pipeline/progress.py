"""Progress of an embed job (or ``encode-tiles``) on stderr: a rich bar on a terminal, plain lines otherwise.

Counts units (or tiles: ``noun``; done, failed) and pixels; px/s is over the job's wall time so far,
the ETA extrapolates the time per finished unit to the units left.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from tessera_ray.redact import redact

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Units of one year's work: ``start(total)``, ``unit_done(px)``/``unit_failed()``, ``close()``."""

    def __init__(self, stream: TextIO | None = None, rich: bool | None = None, noun: str = "unit") -> None:
        self.stream = stream or sys.stderr
        self.noun = noun
        """What is counted, singular: "unit" (embed) or "tile" (encode-tiles)."""
        self.rich = self.stream.isatty() if rich is None else rich
        self._bar: RichProgress | None = None
        self.total = self.done = self.failed = self.pixels = 0
        self.started = time.monotonic()
        self.label = ""

    def start(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.done = self.failed = self.pixels = 0
        self.started = time.monotonic()
        if self.rich and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(f"{self.noun}s"),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="")
        elif total:
            self._line(f"{label}: {total} {self.noun}(s) to embed")

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.pixels / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        finished = self.done + self.failed
        if not finished:
            return None
        return (time.monotonic() - self.started) / finished * (self.total - finished)

    def unit_done(self, unit_id: str, pixels: int) -> None:
        self.done += 1
        self.pixels += pixels
        self._advance(f"{unit_id} done")

    def unit_skipped(self, unit_id: str) -> None:
        """A unit that will not be done after all (another job published it): one less to do."""
        self.total -= 1
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def note(self, text: str) -> None:
        """A line about the year's work that is not a unit (e.g. a publish), above the bar on a terminal."""
        if self._bar is not None:
            self._bar.console.print(redact(f"{self.label}: {text}"))
        else:
            self._line(f"{self.label}: {text}")

    def unit_failed(self, unit_id: str, reason: str) -> None:
        self.failed += 1
        self._advance(f"{unit_id} FAILED: {reason}", always=True)

    def _advance(self, what: str, always: bool = False) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{self.rate:,.0f} px/s")
            if always:
                self._bar.console.print(redact(what))
            return
        eta = self.eta()
        self._line(
            f"{self.label}: [{self.done + self.failed}/{self.total}] {what}, {self.rate:,.0f} px/s"
            + (f", ETA {_duration(eta)}" if eta is not None else "")
        )

    def _line(self, text: str) -> None:
        print(redact(text), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
