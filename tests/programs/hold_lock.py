"""Hold the RUNDIR lock of argv[1] (as a live run does), say "held", and sleep until killed."""

import sys
import time

from bertcore.infra.files import hold_lock

hold_lock(sys.argv[1] + "/.lock", "x")
print("held", flush=True)
time.sleep(120)
