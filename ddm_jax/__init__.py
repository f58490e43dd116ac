"""ddm-jax: the Deep Decomposition Model (SF/AGN decomposition of galaxy spectra) in JAX/Flax."""

import os

__version__ = "0.1.0"

# XLA:CPU's concurrency-optimised scheduler deadlocks the batched continuum and line fits of
# `prepare` (jaxlib 0.10.2, two cores, batches of 64 spectra and more: every thread waits, none
# runs); without it they run, and the DDM is as fast (measured 148 vs 142-155 spectra/s, batch
# 256). XLA reads XLA_FLAGS when JAX first compiles, so this holds wherever ddm_jax is imported
# before the first JAX computation; a user's own setting of the flag wins.
_SCHEDULER_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_SCHEDULER_FLAG}=false".strip()
