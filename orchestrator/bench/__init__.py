"""Plan and run a bench on this host: plan (jobs), imagefacts (what each image serves), datascan,
pixelcache (cachestore lists and clears them), containers and mounts (one locked-down container per
model), runner (Bench, publish), layout (the results folder), runlock, and service (``zoobench run``
start to finish)."""
