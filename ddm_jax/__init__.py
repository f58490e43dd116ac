"""ddm-jax: the Deep Decomposition Model (SF/AGN decomposition of galaxy spectra) in JAX/Flax.

Importing the package changes no global setting; `ddm_jax.runtime` says which XLA setting the
`prepare` fits need and who applies it.
"""

__version__ = "0.1.0"
