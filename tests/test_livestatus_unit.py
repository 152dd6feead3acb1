"""Live build status: step, elapsed time, last log line; plain lines off a terminal; failures name the log.

Driven by a fake clock, a fake Docker client replaying a recorded legacy-builder JSON stream, a fake
base recipe and recorded pip output: nothing is built.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from orchestrator.cli import images as cli
from orchestrator.images import build as images
from orchestrator.images import manifest as image_manifest
from orchestrator.images.livestatus import LiveStatus, clean_line, elapsed_text

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def console(terminal: bool, width: int = 80) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=terminal, color_system="standard" if terminal else None,
                   legacy_windows=False, _environ={}), buf


def test_elapsed_and_clean_line():
    assert [elapsed_text(s) for s in (0, 9.9, 65, 3600 + 125)] == ["0s", "9s", "1m05s", "1h02m"]
    assert clean_line("\x1b[1;32mCollecting six\x1b[0m\n") == "Collecting six"
    assert clean_line("  10% |###\r  55% |#####   \r\n") == "55% |#####"
    assert clean_line("a\tb\x07") == "a    b"


def test_off_a_terminal_one_plain_line_per_step_change_and_no_control_codes(tmp_path):
    con, buf = console(terminal=False)
    clock = Clock()
    with LiveStatus(con, "pytorch (cpu)", clock=clock) as status:
        status.step("base image", tmp_path / "build-base.log")
        for i in range(200):  # a chatty step: no line per log line, no spinner frames
            clock.now += 0.1
            status.log(f"Get:{i} http://deb.debian.org/debian bookworm/main amd64 pkg{i}")
        status.step("base image")  # the same step again: nothing new to say
        clock.now += 40
        status.step("wheelhouse: downloading 57 wheels")
        clock.now += 65
        status.step("docker build step 5/12: RUN /opt/venv/bin/pip install --no-index --find-links "
                    "http://127.0.0.1:4711/ --require-hashes -r /tmp/requirements.lock")
    out = buf.getvalue()
    assert "\x1b" not in out and "\r" not in out
    assert out.splitlines() == [
        "pytorch (cpu) [0s] base image",
        "pytorch (cpu) [1m00s] wheelhouse: downloading 57 wheels",
        "pytorch (cpu) [2m05s] docker build step 5/12: RUN /opt/venv/bin/pip install --n…",
    ]
    assert status.elapsed == pytest.approx(125)


def test_off_a_terminal_a_long_step_prints_a_heartbeat_with_the_last_line():
    con, buf = console(terminal=False, width=100)
    clock = Clock()
    with LiveStatus(con, "keras (cpu)", clock=clock, heartbeat_s=60) as status:
        status.step("docker build step 3/9: RUN pip install")
        clock.now += 30
        status.log("Collecting keras==3.6.0")  # too soon for a heartbeat
        clock.now += 31
        status.log("Collecting tensorflow==2.18.0")
        clock.now += 10
        status.log("Collecting numpy==2.0.2")  # heartbeat just printed
    lines = buf.getvalue().splitlines()
    assert lines == ["keras (cpu) [0s] docker build step 3/9: RUN pip install",
                     "keras (cpu) [1m01s] docker build step 3/9: RUN pip install | Collecting tensorflow==2.18.0"]


def test_on_a_terminal_the_display_shows_step_elapsed_and_the_last_line_cut_to_the_width():
    con, buf = console(terminal=True, width=80)
    clock = Clock()
    with LiveStatus(con, "mxnet (cpu)", clock=clock, refresh_per_second=1) as status:
        assert status.interactive
        status.step("docker build step 5/12: RUN /opt/venv/bin/pip install")
        clock.now += 65
        status.log("Collecting mxnet==1.9.1 (from -r /tmp/requirements.lock (line 3)) " + "x" * 80)
        first, second = list(status.lines())
        assert first.endswith("mxnet (cpu) [1m05s] docker build step 5/12: RUN /opt/venv/bin/pip install")
        assert second.startswith("  Collecting mxnet==1.9.1 (from -r") and second.endswith("…")
        assert len(first) <= 80 and len(second) == 80
        status.step("docker build step 6/12: COPY runners /src/runners")  # a step change redraws at once
        clock.now += 5
    raw = buf.getvalue()
    drawn = ANSI.sub("", raw)
    assert "\x1b[" in raw  # a live display, not plain lines
    assert "mxnet (cpu) [1m05s] docker build step 6/12: COPY runners /src/runners" in drawn
    assert "  Collecting mxnet==1.9.1" in drawn
    assert status.elapsed == pytest.approx(70)


def test_a_failure_names_the_step_the_elapsed_time_the_last_output_and_the_full_log(tmp_path):
    log = tmp_path / "logs" / "build-pytorch-cpu.log"
    for terminal in (False, True):
        con, buf = console(terminal=terminal, width=80)
        clock = Clock()
        with pytest.raises(RuntimeError, match="connection reset"):
            with LiveStatus(con, "pytorch (cpu)", clock=clock) as status:
                status.step("docker build step 7/12: RUN pip install", log)
                for line in ("Collecting torch==2.5.1", "  Downloading torch-2.5.1 (906 MB)"):
                    status.log(line)
                clock.now += 133
                raise RuntimeError("connection reset by peer")
        out = ANSI.sub("", buf.getvalue())
        tail = out[out.index("pytorch (cpu) [2m13s] failed"):].splitlines()
        assert tail == ["pytorch (cpu) [2m13s] failed at docker build step 7/12: RUN pip install",
                        "  last output:",
                        "    Collecting torch==2.5.1",
                        "    Downloading torch-2.5.1 (906 MB)",
                        f"  full log: {log.resolve()}"], (terminal, out)


def test_the_log_path_is_not_repeated_when_the_error_already_names_it(tmp_path):
    log = tmp_path / "build-x.log"
    con, buf = console(terminal=False)
    with pytest.raises(images.ImageBuildError):
        with LiveStatus(con, "x (cpu)") as status:
            status.step("docker build", log)
            raise images.ImageBuildError(f"image x (cpu) failed to build: boom; full log: {log.resolve()}")
    out = buf.getvalue()
    assert "failed at docker build" in out and "full log" not in out


def test_an_interrupt_says_interrupted():
    con, buf = console(terminal=False)
    with pytest.raises(KeyboardInterrupt):
        with LiveStatus(con, "x (cpu)") as status:
            status.step("wheelhouse: downloading 3 wheels")
            raise KeyboardInterrupt
    assert "x (cpu) [0s] interrupted at wheelhouse: downloading 3 wheels" in buf.getvalue()


def test_inside_another_live_display_the_status_is_still_drawn():
    from rich.progress import Progress

    con, buf = console(terminal=True)
    with Progress(console=con, transient=True) as progress:
        progress.add_task("scanning data", total=3)
        with LiveStatus(con, "x (cpu)") as status:
            status.step("base image")  # nested in the progress (rich >= 14) or plain lines (older rich)
    assert "x (cpu) [0s] base image" in ANSI.sub("", buf.getvalue())


# ---------------------------------------------------------------- images.build and the CLI, fed recorded output

FAKE_BASE = """\
#!/usr/bin/env bash
# stands in for images/base/build.sh: prints what the real recipe prints, builds nothing
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
hash="$(cat "$here/build.sh" | sha256sum | cut -c1-12)"
echo "base: debootstrap bookworm (minbase) from http://deb.debian.org/debian into /tmp/x/rootfs" >&2
echo "base: importing as zoobench/base:bookworm-$hash" >&2
echo "zoobench/base:bookworm-$hash"
"""

DOCKERFILE = """\
ARG BASE_IMAGE=unset
FROM ${BASE_IMAGE}
ARG WHEELS_URL=
ARG LOCK=
COPY ${LOCK} /tmp/requirements.lock
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --find-links "$WHEELS_URL" -r /tmp/requirements.lock
"""

PIP_OUTPUT = ["Collecting six==1.16.0 (from -r .cache/wheelhouse/tiny-cpu/.requirements.lock (line 1))",
              "  Downloading six-1.16.0-py2.py3-none-any.whl (11 kB)",
              "Saved ./.cache/wheelhouse/tiny-cpu/six-1.16.0-py2.py3-none-any.whl",
              "Successfully downloaded six"]


def recorded_stream(tag: str, fail: bool) -> list[dict]:
    """What docker's legacy builder sends for DOCKERFILE (decode=True), as recorded from a real build."""
    chunks = [{"stream": "Step 1/5 : ARG BASE_IMAGE=unset"}, {"stream": "\n"},
              {"stream": "Step 2/5 : FROM ${BASE_IMAGE}"}, {"stream": "\n"}, {"stream": " ---> 5d1b2f8a3c11\n"},
              {"stream": "Step 3/5 : ARG WHEELS_URL="}, {"stream": "\n"}, {"stream": " ---> Running in 0a1b2c3d\n"},
              {"stream": " ---> Removed intermediate container 0a1b2c3d\n"}, {"stream": " ---> 77aa88bb99cc\n"},
              {"stream": "Step 4/5 : COPY ${LOCK} /tmp/requirements.lock"}, {"stream": "\n"},
              {"stream": " ---> 1234567890ab\n"},
              {"stream": "Step 5/5 : RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index "
                         "--find-links \"$WHEELS_URL\" -r /tmp/requirements.lock"}, {"stream": "\n"},
              {"stream": " ---> Running in feedfacecafe\n"},
              {"stream": "Looking in links: http://127.0.0.1:40111/\n"},
              {"stream": "Processing /tmp/six-1.16.0-py2.py3-none-any.whl\n"}]
    if fail:
        return chunks + [{"stream": "error: deliberate failure\n"},
                         {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c python3 -m venv ...' "
                                                                "returned a non-zero code: 3"},
                          "error": "The command '/bin/sh -c python3 -m venv ...' returned a non-zero code: 3"}]
    return chunks + [{"stream": "Successfully installed six-1.16.0\n"},
                     {"stream": " ---> Removed intermediate container feedfacecafe\n"},
                     {"stream": " ---> 0fedcba98765\n"}, {"aux": {"ID": "sha256:0fedcba98765"}},
                     {"stream": "Successfully built 0fedcba98765\n"}, {"stream": f"Successfully tagged {tag}\n"}]


class FakeImages:
    def __init__(self):
        self.present: set[str] = set()

    def get(self, tag: str):
        from docker.errors import ImageNotFound

        if tag not in self.present:
            raise ImageNotFound(tag)
        return object()


class FakeAPI:
    def __init__(self, images_: FakeImages, fail: bool):
        self.images, self.fail, self.calls = images_, fail, []

    def build(self, **kwargs):
        self.calls.append(kwargs)

        def stream():
            yield from recorded_stream(kwargs["tag"], self.fail)
            if not self.fail:
                self.images.present.add(kwargs["tag"])
        return stream()


class FakeClient:
    def __init__(self, fail: bool = False):
        self.images = FakeImages()
        self.api = FakeAPI(self.images, fail)


def tiny_repo(root: Path) -> Path:
    (root / "images/base").mkdir(parents=True)
    (root / "images/base/build.sh").write_text(FAKE_BASE)
    (root / "images/tiny").mkdir(parents=True)
    (root / "images/tiny/Dockerfile").write_text(DOCKERFILE)
    (root / "images/tiny/requirements.lock").write_text("six==1.16.0 --hash=sha256:" + "0" * 64 + "\n")
    (root / "manifests").mkdir()
    (root / "manifests/images.yaml").write_text(yaml.safe_dump({"images": {"tiny": {
        "framework": "none", "dockerfile": "images/tiny/Dockerfile", "inputs": ["images/tiny"],
        "variants": {"cpu": {"lock": "images/tiny/requirements.lock", "base_image": "offline"}}}}}))
    return root


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """A tiny repository whose base recipe is a fake script and whose pip download replays PIP_OUTPUT."""
    root = tiny_repo(tmp_path / "repo")
    real_run = images._run_logged

    def run_logged(cmd, log, cwd):
        if cmd[1:4] == ["-m", "pip", "download"]:
            log(f"$ {' '.join(cmd)}")
            for line in PIP_OUTPUT:
                log(line)
            return 0, []
        return real_run(cmd, log, cwd)

    monkeypatch.setattr(images, "_run_logged", run_logged)
    monkeypatch.chdir(tmp_path)
    return root


def test_build_reports_each_long_step_with_its_log(fake_build):
    root = fake_build
    spec = image_manifest.load_manifest(root / "manifests/images.yaml")["tiny"]
    steps: list[tuple[str, Path | None]] = []
    lines: list[str] = []
    client = FakeClient()
    tag = images.build(spec, "cpu", root, client, on_log=lines.append,
                       on_step=lambda name, log=None: steps.append((name, log)))
    logs = root / ".cache/logs"
    assert steps == [
        ("base image", logs / "build-base.log"),
        ("base image: debootstrap", None),
        ("base image: importing", None),
        ("wheelhouse: downloading 1 wheel", logs / "wheelhouse-tiny-cpu.log"),
        ("docker build", logs / "build-tiny-cpu.log"),
        ("docker build step 2/5: FROM ${BASE_IMAGE}", None),
        ("docker build step 4/5: COPY ${LOCK} /tmp/requirements.lock", None),
        ("docker build step 5/5: RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index "
         "--find-links \"$WHEELS_URL\" -r /tmp/requirements.lock", None),
    ]
    assert f"Successfully tagged {tag}" in lines and "Successfully downloaded six" in lines
    assert client.api.calls[0]["buildargs"]["BASE_IMAGE"] == images.base_tag(root)
    # the old callers (on_log only) still work: a second build is a no-op that reports nothing
    assert images.build(spec, "cpu", root, client, on_log=lines.append) == tag


def cli_build(monkeypatch, root: Path, client: FakeClient, terminal: bool) -> tuple[str, io.StringIO]:
    con, buf = console(terminal=terminal, width=80)
    monkeypatch.setattr(cli, "console", con)
    monkeypatch.setattr(cli, "ROOT", root)
    return cli.images_build_one(client, "tiny", "cpu", root / "manifests"), buf


def test_cli_build_off_a_terminal_prints_each_step_once(fake_build, monkeypatch):
    tag, buf = cli_build(monkeypatch, fake_build, FakeClient(), terminal=False)
    out = buf.getvalue()
    assert "\x1b" not in out
    lines = [re.sub(r"\b\d+s\b", "Ns", line) for line in out.splitlines()]
    assert lines == [
        f"tiny (cpu): building {tag} ...",
        "tiny (cpu) [Ns] base image",
        "tiny (cpu) [Ns] base image: debootstrap",
        "tiny (cpu) [Ns] base image: importing",
        "tiny (cpu) [Ns] wheelhouse: downloading 1 wheel",
        "tiny (cpu) [Ns] docker build",
        "tiny (cpu) [Ns] docker build step 2/5: FROM ${BASE_IMAGE}",
        "tiny (cpu) [Ns] docker build step 4/5: COPY ${LOCK} /tmp/requirements.lock",
        "tiny (cpu) [Ns] docker build step 5/5: RUN python3 -m venv /opt/venv && /opt/ve…",
        f"tiny (cpu): built {tag} in Ns",
    ]
    buf.seek(0), buf.truncate()
    client = FakeClient()  # an engine that has the base image but not the framework image
    client.images.present.add(images.base_tag(fake_build))
    assert cli.images_build_one(client, "tiny", "cpu", fake_build / "manifests") == tag
    again = buf.getvalue()
    assert "base image" not in again and "wheelhouse" not in again  # both done: no step for them
    assert re.search(r"tiny \(cpu\) \[\d+s\] docker build step 5/5", again)
    buf.seek(0), buf.truncate()
    assert cli.images_build_one(client, "tiny", "cpu", fake_build / "manifests") == tag
    assert buf.getvalue() == f"tiny (cpu): {tag} up to date\n"


def test_cli_build_on_a_terminal_draws_steps_and_log_lines(fake_build, monkeypatch):
    tag, buf = cli_build(monkeypatch, fake_build, FakeClient(), terminal=True)
    drawn = ANSI.sub("", buf.getvalue())
    assert re.search(r"tiny \(cpu\) \[\d+s\] docker build step 5/5: RUN python3 -m venv", drawn)
    assert "  ---> 1234567890ab" in drawn  # step 5 is drawn at once, over step 4's last line
    assert re.search(rf"tiny \(cpu\): built {re.escape(tag)} in \d+s$", drawn.rstrip())


def test_cli_build_failure_names_the_step_the_output_and_the_log(fake_build, monkeypatch):
    with pytest.raises(images.ImageBuildError) as err:
        cli_build(monkeypatch, fake_build, FakeClient(fail=True), terminal=False)
    log = Path(".cache") / "logs" / "build-tiny-cpu.log"  # relative to the working directory (tmp_path)
    message = str(err.value)
    assert "a RUN step exited with code 3 (error: deliberate failure)" in message
    assert f"full log: repo/{log}" in message and (fake_build / log).is_file()
    out = cli.console.file.getvalue()
    assert re.search(r"^tiny \(cpu\) \[\d+s\] failed at docker build step 5/5: RUN python3", out, re.M), out
    assert "    error: deliberate failure" in out and "ERROR: The command" in out
    assert "full log" not in out  # the error line the CLI prints next names it (asserted above)


def test_cli_base_failure_prints_the_base_log(fake_build, monkeypatch):
    recipe = fake_build / "images/base/build.sh"
    recipe.write_text("#!/usr/bin/env bash\necho 'base: debootstrap bookworm' >&2\n"
                      "echo 'E: Failed getting release file' >&2\nexit 1\n")
    with pytest.raises(images.ImageBuildError) as err:
        cli_build(monkeypatch, fake_build, FakeClient(), terminal=False)
    assert "full log: repo/.cache/logs/build-base.log" in str(err.value)
    out = cli.console.file.getvalue()
    assert re.search(r"^tiny \(cpu\) \[\d+s\] failed at base image: debootstrap$", out, re.M), out
    assert "    E: Failed getting release file" in out
