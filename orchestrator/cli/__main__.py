"""``python -m orchestrator.cli``: the zoobench CLI (what each Slurm array task runs)."""
from . import main

main()
