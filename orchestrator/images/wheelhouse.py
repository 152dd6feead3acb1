"""The wheelhouse of an image build: which wheels a lock asks for on the image's Python (its markers
and pip's target platform), and the folder served over HTTP on 127.0.0.1 while the build runs."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any


def lock_for_python(text: str, python: str) -> str:
    """The lock's entries whose environment markers hold for CPython ``python`` on Linux x86_64.

    pip evaluates requirement-file markers against the interpreter running it, not against
    ``--python-version``, so a lock resolved for several Pythons is filtered here first.
    """
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging comes with matplotlib; pip vendors it anyway
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]

    env = {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
           "platform_machine": "x86_64", "os_name": "posix"}
    kept: list[str] = []
    for entry in text.replace("\\\n", " ").splitlines():
        requirement = entry.split(" #", 1)[0].strip()
        if not requirement or requirement.startswith("#"):
            continue
        if ";" in requirement.split("--hash", 1)[0]:
            head, rest = requirement.split(";", 1)
            marker, _, hashes = rest.partition("--hash")
            if not Marker(marker.strip()).evaluate(env):
                continue
            requirement = f"{head.strip()} --hash{hashes}"
        kept.append(" ".join(requirement.split()))
    return "\n".join(kept) + "\n"


def pip_target_args(python: str) -> list[str]:
    """Download wheels for the image's CPython on manylinux x86_64, whatever Python runs this."""
    abi = "cp" + python.replace(".", "")
    glibc_minor = 36  # Debian 12; older manylinux tags are compatible
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 16, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    args = ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for plat in platforms:
        args += ["--platform", plat]
    return args


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        pass


class WheelServer:
    """Serve a folder over HTTP on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WheelServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
