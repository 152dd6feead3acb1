"""Ground truth of each prediction path: one class from its synset folder (or, for a set of layout
``integer`` such as ImageNet-V2, its folder ``0``..``999`` = class index), or a labels CSV (rows matched
by relative path, or by file name where that is unambiguous), or the set of classes of the ReaL labels
(``--labels real``); :class:`Truth` (:mod:`.truth`) scores top-k predictions. Every bad label is one
:class:`LabelError` line naming the file or row."""
from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath
from typing import Sequence, Union

import numpy as np

from ..errors import LabelError
from .truth import Truth

FIX = "put images in synset folders (e.g. n01440764/x.JPEG) or pass --labels CSV (columns filename,wnid)"


def _wnid_index() -> dict[str, int]:
    from zoobench_contract.imagenet import wnid_to_index

    return wnid_to_index()


INTEGER = "integer"  # the layout whose class folders are numbers 0..999 (class index k = folder k)


def _folder_label(folder: str, index: dict[str, int], integer: bool) -> int:
    """The deepest wnid component of ``folder``, else (``integer``) its deepest number 0..999, else -1."""
    parts = folder.split("/")
    label = next((index[p] for p in reversed(parts) if p in index), -1)
    if label < 0 and integer:
        label = next((int(p) for p in reversed(parts) if p.isdecimal() and int(p) < len(index)), -1)
    return label


def labels_from_folders(paths: Sequence[str], layout: str = "wnid") -> np.ndarray:
    """Class index per path: the deepest folder component of the path that is an ImageNet wnid (for
    layout ``integer``, else its deepest folder named by a class index 0..999, by numeric value)."""
    index = _wnid_index()
    integer = layout == INTEGER
    by_folder: dict[str, int] = {}
    out = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        folder, _, _ = str(path).replace("\\", "/").rpartition("/")
        label = by_folder.get(folder)
        if label is None:
            label = by_folder[folder] = _folder_label(folder, index, integer)
        if label < 0:
            what = "an ImageNet wnid or a class number 0..999" if integer else "an ImageNet wnid"
            raise LabelError(f"no label for {path!r}: none of its folders is {what}; {FIX}")
        out[i] = label
    return out


def _norm(name: str) -> str:
    """A path as the CSV and the predictions write it: POSIX slashes, no ``./``."""
    return PurePosixPath(str(name).strip().replace("\\", "/")).as_posix()


def _not_utf8(csv_path: Path) -> LabelError:
    try:
        data = csv_path.read_bytes()
        data.decode("utf-8")
        where = ""
    except OSError:
        where = ""
    except UnicodeDecodeError as exc:
        where = f" (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    return LabelError(f"labels CSV {csv_path}: not UTF-8 text{where}; save it as UTF-8 CSV with columns filename,wnid")


def _csv_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """(line, filename, wnid) per row; :class:`LabelError` for a file that is unreadable, not
    UTF-8, not CSV, or whose header lacks ``filename`` and ``wnid``."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                fields = [f.strip() for f in reader.fieldnames or []]
                if "filename" not in fields or "wnid" not in fields:
                    raise LabelError(f"labels CSV {csv_path}: header must name columns filename,wnid "
                                     f"(found {','.join(fields) or 'nothing'})")
                reader.fieldnames = fields
                return [(reader.line_num, (row.get("filename") or "").strip(), (row.get("wnid") or "").strip())
                        for row in reader]
            except csv.Error as exc:
                raise LabelError(f"labels CSV {csv_path} line {reader.line_num}: not CSV text ({exc}); "
                                 "save it as UTF-8 CSV with columns filename,wnid") from None
    except UnicodeDecodeError:
        raise _not_utf8(csv_path) from None
    except OSError as exc:
        raise LabelError(f"labels CSV {csv_path}: cannot read ({exc.strerror or exc}); pass an existing file") from None


def read_label_csv(csv_path: Path) -> dict[str, int]:
    """CSV ``filename`` (a path relative to the data folder, or a bare file name) -> class index,
    from a CSV with a header holding ``filename`` and ``wnid`` (extra columns such as ``index``
    and ``label`` are ignored)."""
    index = _wnid_index()
    csv_path = Path(csv_path)
    table: dict[str, int] = {}
    for line, filename, wnid in _csv_rows(csv_path):
        if not filename:
            raise LabelError(f"labels CSV {csv_path} line {line}: empty filename; fill it in or delete the line")
        if wnid not in index:
            raise LabelError(f"labels CSV {csv_path} line {line}: {wnid!r} is not an ImageNet-1k wnid; fix the row")
        name, label = _norm(filename), index[wnid]
        if table.setdefault(name, label) != label:
            raise LabelError(f"labels CSV {csv_path} line {line}: {name!r} appears twice with different "
                             "wnids; keep one row per file")
    if not table:
        raise LabelError(f"labels CSV {csv_path}: no rows; give one filename,wnid row per image")
    return table


def labels_from_csv(paths: Sequence[str], csv_path: Path) -> np.ndarray:
    """Class index per path: the CSV row naming its relative path, else the one row with its file
    name; :class:`LabelError` when that file name is ambiguous (several rows, or several files)."""
    table = read_label_csv(csv_path)
    wanted = [_norm(p) for p in paths]
    left: dict[str, list[str]] = {}  # file name -> rows no path names exactly
    for row in table.keys() - set(wanted):
        left.setdefault(PurePosixPath(row).name, []).append(row)
    unmatched: dict[str, list[str]] = {}  # file name -> paths no row names exactly
    for path in wanted:
        if path not in table:
            unmatched.setdefault(PurePosixPath(path).name, []).append(path)
    out = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(wanted):
        row = path if path in table else _row_by_name(path, left, unmatched, csv_path)
        out[i] = table[row]
    return out


def _row_by_name(path: str, rows: dict[str, list[str]], paths: dict[str, list[str]], csv_path: Path) -> str:
    """The one CSV row whose file name is that of ``path``, or a one-line :class:`LabelError`."""
    name = PurePosixPath(path).name
    found, sharing = sorted(rows.get(name, [])), paths[name]
    if not found:
        raise LabelError(f"no label for {path!r} in {csv_path}: add a row for {path!r} (filename,wnid)")
    if len(found) > 1:
        raise LabelError(f"labels CSV {csv_path}: rows {found[0]!r} and {found[1]!r} could both label {path!r}; "
                         "write each filename as its path relative to the data folder")
    if len(sharing) > 1:
        raise LabelError(f"labels CSV {csv_path}: row {found[0]!r} matches both {sharing[0]!r} and "
                         f"{sharing[1]!r}; write the path relative to the data folder in the filename "
                         f"column (e.g. {sharing[0]!r})")
    return found[0]


def labels_for(paths: Sequence[str], labels_csv: Path | None = None, layout: str = "wnid") -> np.ndarray:
    """Class indices for ``paths``: from ``labels_csv`` when given, else from their class folders."""
    return labels_from_csv(paths, labels_csv) if labels_csv is not None else labels_from_folders(paths, layout)


REAL = "real"  # the --labels word for the ReaL labels (orchestrator/results/real.py)
Labels = Union[Path, str, None]  # a labels CSV, "real", or None (synset folders)


def parse_labels(text: str | Path | None) -> Labels:
    """A ``--labels`` value: the word ``real`` (any case), else a CSV path (a file named real: ./real)."""
    if text is None:
        return None
    if isinstance(text, str) and text.strip().lower() == REAL:
        return REAL
    return Path(text)


def truth_for(paths: Sequence[str], labels: Labels = None, layout: str = "wnid") -> Truth:
    """The :class:`Truth` of ``paths``: ReaL for ``"real"``, else one label each (:func:`labels_for`;
    ``layout`` is the set's, from manifests/datasets.yaml)."""
    if isinstance(labels, str) and labels == REAL:
        from .real import real_truth

        return real_truth(paths)
    return Truth.single(labels_for(paths, None if labels is None else Path(labels), layout))
