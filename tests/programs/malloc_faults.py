"""Allocate, fill and free a 200 MB array five times (a training step's pattern) after
bertcore.infra.malloc.keep_freed_memory, and print as JSON whether it applied and the minor page
faults of the last four rounds."""

import json
import resource

from bertcore.infra.malloc import keep_freed_memory

applied = keep_freed_memory()
import numpy as np  # noqa: E402  (after the malloc settings, as in the entry points)

np.ones(25_000_000).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    np.ones(25_000_000).sum()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
