"""``zoobench cache list|clear``: the pixel caches (decoded crops shared by models)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from ..bench import cachestore, pixelcache
from ..errors import BenchError, NotACache
from . import options
from .output import console, out

cache_app = typer.Typer(no_args_is_help=True, help="List and clear the pixel caches (decoded crops shared by models).")


@cache_app.command("list")
def cache_list(
    cache_dir: Optional[Path] = options.CacheDir,
    as_json: bool = typer.Option(False, "--json", help="print the caches as JSON"),
) -> None:
    """Show every pixel cache: key, pixel config, Pillow version, images, size, state (a folder that is
    not a cache zoobench made is listed as foreign: `cache clear` never removes it)."""
    root = cache_dir or pixelcache.cache_root()
    entries = cachestore.list_caches(root)
    if as_json:
        out.print_json(json.dumps([{**{k: v for k, v in vars(e).items() if k != "path"}, "path": str(e.path)}
                                   for e in entries]))
        return
    table = Table(title=f"pixel caches in {root}", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for col in ("key", "resize/crop", "pillow", "images", "size", "created", "state"):
        table.add_column(col, justify="right" if col in ("images", "size") else "left", no_wrap=True)
    colours = {"complete": "green", "partial": "yellow", "broken": "red", "foreign": "dim"}
    for e in entries:
        images = "" if e.n_images is None else str(e.n_images)
        table.add_row(e.key, e.config.replace("resize ", "").replace(" crop ", "/"), e.pillow, images,
                      pixelcache.size_text(e.size), e.created[:10], f"[{colours[e.state]}]{e.state}")
    out.print(table)
    total = sum(e.size for e in entries if e.state != "foreign")
    foreign = [e for e in entries if e.state == "foreign"]
    out.print(f"{len(entries) - len(foreign)} cache folder(s), {pixelcache.size_text(total)}"
              + (f"; {len(foreign)} other folder(s) that zoobench did not make (never removed)" if foreign else ""),
              highlight=False)


@cache_app.command("clear")
def cache_clear(
    keys: Optional[list[str]] = typer.Argument(None, help="keys to remove (`zoobench cache list` shows them)"),
    everything: bool = typer.Option(False, "--all", help="remove every cache zoobench made, complete or partial"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be removed"),
    cache_dir: Optional[Path] = options.CacheDir,
) -> None:
    """Remove pixel caches (complete and partial folders); a bench rebuilds what it needs. Only folders
    zoobench can prove it made are removed (a cache key name, only a build's files, a marker or index
    that gives back the key); anything else is left alone and named."""
    root = cache_dir or pixelcache.cache_root()
    if not keys and not everything:
        raise BenchError("zoobench cache clear: give the KEY(s) to remove or --all (`zoobench cache list` shows them)")
    if keys and everything:
        raise BenchError("zoobench cache clear: give KEY(s) or --all, not both")
    try:
        done = cachestore.clear(root, keys or [], everything, dry_run=dry_run)
    except KeyError as exc:
        raise BenchError(f"no pixel cache {exc.args[0]} in {root}; `zoobench cache list` shows the keys") from None
    except NotACache as exc:
        raise BenchError(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    for e in done.removed:
        console.print(f"{verb} {e.path.name} ({e.state}, {pixelcache.size_text(e.size)})", highlight=False)
    for e in done.left:
        console.print(f"left alone: {e.path} ({e.why}): not a pixel cache zoobench made", highlight=False,
                      soft_wrap=True)
    console.print(f"{verb} {len(done.removed)} cache folder(s), "
                  f"{pixelcache.size_text(sum(e.size for e in done.removed))} {'to free' if dry_run else 'freed'}"
                  + (f"; {len(done.left)} other folder(s) left alone" if done.left else ""), highlight=False)
