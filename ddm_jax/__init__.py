"""ddm-jax: the Deep Decomposition Model (SF/AGN decomposition of galaxy spectra) in JAX/Flax."""

__version__ = "0.1.0"
