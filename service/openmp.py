"""OpenMP's waiting policy for the API process, whose forward passes run outside its main thread.

libgomp counts the threads it manages. Once a thread other than the process's first one starts a
parallel region it counts more threads than cores (on 2 cores: the main thread, the thread running the
forward pass and its helper), and from then on it "throttles": between two parallel regions its helpers
sleep on a futex almost at once instead of spinning, and each of a forward pass's regions pays for the
wake-up. resnet18 at 96x96, one image, 2 cores, channels-last: 8.6 ms from the main thread, 12.9 ms from
any other. `OMP_WAIT_POLICY=ACTIVE` with a bounded `GOMP_SPINCOUNT` lets helpers spin a little in both
cases: 9.5 ms from another thread, and an idle process still uses no CPU (ACTIVE alone spins for ever:
a whole core while idle). Training is untouched: workers train in their main thread, and `transferlab
serve` starts its workers before it sets these.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

SERVING_OPENMP = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000"}


def tune_openmp_for_serving(
    environ: MutableMapping[str, str] = os.environ, modules: Mapping[str, object] = sys.modules
) -> dict[str, str]:
    """Set both variables unless the operator set either; returns what was set. libgomp reads them
    once, when torch loads it, so this must run before anything imports torch."""
    if any(name in environ for name in SERVING_OPENMP):
        return {}
    if "torch" in modules:
        log.warning("torch is already imported: OpenMP keeps its default waiting policy")
        return {}
    environ.update(SERVING_OPENMP)
    return dict(SERVING_OPENMP)
