"""Process-wide XLA settings that ddm-jax needs, applied only by the code paths that need them.

XLA:CPU's concurrency-optimised scheduler deadlocks the batched continuum and line fits of
`prepare` (jaxlib 0.10.2, two cores, batches of 64 spectra and more: every thread waits, none
runs); without it they run, and the DDM is as fast (measured 148 vs 142-155 spectra/s, batch 256).
XLA reads XLA_FLAGS once, when JAX starts its backend, so the setting must come before the
process's first JAX computation. The `ddm-jax` command applies it at start; `prepare`'s library
functions apply it when JAX has not started yet, and warn when it is too late. A library user who
runs other JAX work first calls `disable_cpu_concurrent_scheduler()` before it (or sets the flag in
XLA_FLAGS). A user's own setting of the flag always wins.
"""

from __future__ import annotations

import os
import sys
import warnings

SCHEDULER_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def _jax_started() -> bool:
    if "jax" not in sys.modules:  # nothing can have started a backend
        return False
    try:
        from jax._src.xla_bridge import backends_are_initialized  # JAX has no public way to ask
    except ImportError:  # a JAX that moved it: cannot tell; setting the flag is then harmless at worst
        return False
    return backends_are_initialized()


def disable_cpu_concurrent_scheduler() -> bool:
    """Turn XLA:CPU's concurrency-optimised scheduler off for this process (module docstring).

    Returns True when the setting is in force: set now, or already named in XLA_FLAGS. Returns
    False, with a warning, when JAX has already started without it (the batched fits may hang).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return True
    if _jax_started():
        warnings.warn(f"JAX started before ddm-jax could set --{SCHEDULER_FLAG}=false in XLA_FLAGS: prepare's "
                      "batched fits may hang on a CPU. Call ddm_jax.runtime.disable_cpu_concurrent_scheduler() "
                      "before the first JAX computation, or set the flag in XLA_FLAGS", RuntimeWarning,
                      stacklevel=2)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --{SCHEDULER_FLAG}=false".strip()
    return True
