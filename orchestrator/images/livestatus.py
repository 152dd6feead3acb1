"""A live status for long steps (image builds): the current step, the elapsed time, the last log line.

    with LiveStatus(console, "pytorch (cpu)") as status:
        status.step("docker build step 5/12", log_path)   # log_path: where the full log goes
        status.log("Collecting torch==2.5.1")

On a terminal it is a transient two-line rich display (spinner, title, elapsed, step; then the last
log line cut to the terminal width), refreshed a few times a second. Anywhere else (CI logs, a pipe,
TERM=dumb) it prints one plain line per step change and, while one step runs long, a heartbeat line
at most every ``heartbeat_s`` seconds: never a spinner, never control codes. On an exception it says
which step failed after how long, the last few log lines and the full log's path.
"""
from __future__ import annotations

import io
import re
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterator

from rich.console import Console, ConsoleOptions, RenderResult
from rich.errors import LiveError
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
FAILURE_LINES = 5


def elapsed_text(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def clean_line(line: str) -> str:
    """One printable line: the text after the last carriage return, without ANSI codes or control characters."""
    line = line.rstrip("\r\n").rsplit("\r", 1)[-1]
    line = ANSI_RE.sub("", line).replace("\t", "    ")
    return CONTROL_RE.sub("", line).strip()


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


class LiveStatus:
    """Context manager showing the current step, elapsed time and last log line of a long task."""

    def __init__(self, console: Console, title: str, *, heartbeat_s: float = 60.0, refresh_per_second: float = 4,
                 clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.title = title
        self.heartbeat_s = heartbeat_s
        self.refresh_per_second = refresh_per_second
        self.clock = clock
        self.interactive = console.is_terminal and not console.is_dumb_terminal
        self.current = "starting"
        self.last_line = ""
        self.recent: deque[str] = deque(maxlen=FAILURE_LINES)
        self.log_path: Path | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._printed_at = 0.0
        self._live: Live | None = None
        self._spinner = Spinner("dots")
        self._lock = threading.Lock()  # log lines arrive from the threads that pump a subprocess

    # ------------------------------------------------------------ state

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished if self.finished is not None else self.clock()) - self.started

    def step(self, name: str, log_path: Path | str | None = None) -> None:
        """Enter step ``name``; ``log_path`` is the file the step's full log goes to (kept until another is named)."""
        with self._lock:
            if log_path is not None:
                self.log_path = Path(log_path)
            if name == self.current:
                return
            self.current = name
            if not self.interactive:
                self._print_line(self._head())
            self._refresh()

    def log(self, line: str) -> None:
        """A log line of the current step (blank lines are ignored)."""
        text = clean_line(line)
        if not text:
            return
        with self._lock:
            self.last_line = text
            self.recent.append(text)
            if not self.interactive and self.started is not None and \
                    self.clock() - self._printed_at >= self.heartbeat_s:
                self._print_line(self._head(), Text(" | " + text, style="dim"))

    # ------------------------------------------------------------ output

    def _head(self) -> Text:
        head = Text()
        head.append(self.title, style="bold")
        head.append(f" [{elapsed_text(self.elapsed)}] ", style="cyan")
        head.append(self.current)
        return head

    def _print_line(self, *parts: Text) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        for part in parts:
            line.append_text(part)
        line.truncate(self.console.width, overflow="ellipsis")
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        self._printed_at = self.clock()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        frame = self._spinner.render(self.clock())
        first = Text(no_wrap=True, overflow="ellipsis")
        first.append_text(frame if isinstance(frame, Text) else Text(str(frame)))
        first.append(" ")
        first.append_text(self._head())
        first.truncate(width, overflow="ellipsis")
        yield first
        last = Text("  " + (self.last_line or "..."), style="dim", no_wrap=True, overflow="ellipsis")
        last.truncate(width, overflow="ellipsis")
        yield last

    def lines(self) -> Iterator[str]:
        """The live display as plain text lines (what the terminal shows now)."""
        plain = Console(file=io.StringIO(), width=self.console.width, color_system=None, force_terminal=False)
        plain.print(self, highlight=False)
        yield from plain.file.getvalue().splitlines()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ context

    def __enter__(self) -> "LiveStatus":
        self.started = self.clock()
        self._printed_at = self.started
        if self.interactive:
            live = Live(self, console=self.console, refresh_per_second=self.refresh_per_second, transient=True,
                        redirect_stdout=False, redirect_stderr=False)
            try:
                live.start()
                self._live = live
            except LiveError:  # rich < 14 and another live display (a progress bar) owns the console
                self.interactive = False
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finished = self.clock()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if exc is None:
            return
        message = str(exc)
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        head = Text()
        head.append(self.title, style="bold")
        head.append(f" [{elapsed_text(self.elapsed)}] ", style="cyan")
        head.append(f"{what} at {self.current}", style="red")
        self.console.print(head, highlight=False, markup=False, soft_wrap=True)
        if self.recent:
            self.console.print(Text("  last output:", style="dim"), highlight=False, markup=False)
            for line in self.recent:
                text = Text("    " + line, style="dim", no_wrap=True, overflow="ellipsis")
                text.truncate(self.console.width, overflow="ellipsis")
                self.console.print(text, highlight=False, markup=False, soft_wrap=True)
        if self.log_path is not None:
            path = shown_path(self.log_path)
            if path not in message:  # the error line printed next already names it
                self.console.print(Text(f"  full log: {path}"), highlight=False, markup=False, soft_wrap=True)
