"""Other places to run a bench: a Slurm job array (slurm), rendered Kubernetes Indexed Jobs (k8s)."""
