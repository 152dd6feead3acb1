"""Weights downloads through a site's own HTTP mirror, laid out like the official URLs.

A cluster without internet access mirrors the frameworks' download hosts under one base URL: the
file at ``https://HOST/PATH`` is served at ``MIRROR/HOST/PATH``, e.g.
``https://download.pytorch.org/models/resnet18-f37072fd.pth`` at
``http://mirror.example/weights/download.pytorch.org/models/resnet18-f37072fd.pth`` (``wget -x`` of
the official URLs, run in the mirror's root, makes that layout). ``predict fetch`` reads the base from
``$ZOOBENCH_WEIGHTS_MIRROR`` (``zoobench weights fetch --mirror URL`` sets it) and every backend passes
each download URL through :func:`mirrored` (MXNet: its ``MXNET_GLUON_REPO``). The frameworks' own
checks (file names, hashes) apply to whatever the mirror serves.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

MIRROR_ENV = "ZOOBENCH_WEIGHTS_MIRROR"


def check_mirror(base: str) -> str:
    """``base`` without its trailing slash; ValueError (one line) unless it is an http(s) URL with a host."""
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"weights mirror {base!r}: give an http(s) base URL, e.g. http://mirror.example/weights")
    return base.strip().rstrip("/")


def mirrored(url: str, base: str | None = None) -> str:
    """``url`` as the mirror ``base`` (default ``$ZOOBENCH_WEIGHTS_MIRROR``) serves it:
    ``BASE/HOST/PATH[?QUERY]``; ``url`` itself when no mirror is set or it names no host."""
    base = os.environ.get(MIRROR_ENV, "") if base is None else base
    parts = urlsplit(url)
    if not base or not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{check_mirror(base)}/{host}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
