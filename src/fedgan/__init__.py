"""FedGAN: hospitals jointly train a generative model of their medical images with Flower,
without any image leaving its hospital, and publish a synthetic dataset."""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedgan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: How long torch's OpenMP threads (GNU libgomp in the Linux wheels) spin at a barrier before they
#: sleep. libgomp's default, 300,000 spins, assumes every core is the process's own. Beside one busy
#: job started from another terminal, on 2 cores, a training step of the demo's model took 20 x its
#: quiet time (2.38 s against 0.12 s): the thread that finishes a region first spins on its core
#: while the other waits for its share of the busy one. At 10,000 the same step took 0.40 s there,
#: and 1.04 x libgomp's default on a quiet machine (`benchmarks/thread_contention.py`). libgomp reads
#: it once, when torch is imported, so it is set here, before any module of ours imports torch; the
#: engines' worker processes inherit it. A user's own setting (or OMP_WAIT_POLICY) wins.
SPIN_COUNT = "10000"
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
