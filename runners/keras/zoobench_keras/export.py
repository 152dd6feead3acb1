"""``predict export`` for keras models. STUB: the exporters helper fills it."""
from __future__ import annotations
