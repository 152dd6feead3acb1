"""The two consoles of the CLI: ``console`` (stderr: progress, notes, errors) and ``out`` (stdout: results)."""
from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
out = Console()
