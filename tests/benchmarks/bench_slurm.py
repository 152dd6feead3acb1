"""Slurm engine benchmark (not a test): prints figures and ratios measured in one run, asserts nothing.

The same bench (default: the smoke profile's 9 random-weight models on the 6 sample images, and
the sample profile's 3 Lite0 models) run three ways, each into a fresh results folder with the
pixel cache warm: locally (one model at a time), as a Slurm array whose tasks share one (fake) GPU
(`--gres gpu:1`: one task at a time, like the local run), and as an array with no gres (as many
tasks at once as the node has free cores). Per way: wall time of `zoobench run`, and the Slurm
overhead per task = (Slurm wall - local wall) / tasks for the serial array. Also the time from
`zoobench slurm cancel` to no container left.
Needs the Slurm test cluster: `bash tests/slurm/cluster.sh up` and SLURM_CONF as it prints.
Usage: .venv/bin/python tests/benchmarks/bench_slurm.py [--profile smoke] [--limit N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ZB = str(ROOT / ".venv" / "bin" / "zoobench")


def timed(*args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([ZB, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"zoobench {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def containers(results: Path) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=zoobench.results={results.resolve()}"],
                         capture_output=True, text=True).stdout
    return out.split()


def cancel_latency(base: list[str], results: Path) -> float | None:
    """Seconds from `zoobench slurm cancel` to no container of the folder left (None: none started)."""
    proc = subprocess.Popen([ZB, *base, "--results", str(results), "--engine", "slurm", "--gres", "gpu:1", "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not containers(results) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not containers(results):
        proc.wait()
        return None
    start = time.monotonic()
    subprocess.run([ZB, "slurm", "cancel", str(results)], capture_output=True)
    while containers(results):
        time.sleep(0.05)
    took = time.monotonic() - start
    proc.wait()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="append", help="profiles to run (default: smoke and sample)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    if not os.environ.get("SLURM_CONF"):
        sys.exit("set SLURM_CONF (bash tests/slurm/cluster.sh up prints it)")
    tmp = Path(tempfile.mkdtemp(prefix="zb-slurm-bench-"))
    for profile in args.profile or ["smoke", "sample"]:
        base = ["run", "--profile", profile, "--format", "none"] + (["--limit", str(args.limit)] if args.limit else [])
        timed(*base, "--results", str(tmp / f"{profile}-warmup"))  # images built, listings and pixel cache warm
        n = sum(1 for p in (tmp / f"{profile}-warmup").glob("*/run.json"))
        local = timed(*base, "--results", str(tmp / f"{profile}-local"))
        serial = timed(*base, "--results", str(tmp / f"{profile}-serial"), "--engine", "slurm", "--gres", "gpu:1")
        parallel = timed(*base, "--results", str(tmp / f"{profile}-parallel"), "--engine", "slurm")
        print(f"{profile}: {n} models; local {local:.1f} s; Slurm one task at a time (gres gpu:1) {serial:.1f} s "
              f"(x{serial / local:.2f}, +{(serial - local) / n:.1f} s per task); Slurm no gres "
              f"{parallel:.1f} s (x{parallel / local:.2f} of local)")
    took = cancel_latency(["run", "--profile", "smoke", "--format", "none"], tmp / "cancel")
    print(f"cancel: no container left {took:.2f} s after `zoobench slurm cancel`" if took is not None
          else "cancel: no container started")
    print(f"(cores: {os.cpu_count()}; results under {tmp})")


if __name__ == "__main__":
    main()
