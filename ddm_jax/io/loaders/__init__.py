"""Files -> `Spectrum` records, one module per format, each registering itself with `registry`.

    from ddm_jax.io.loaders import read_any, read_many
    spectra = read_any("spec-0266-51602-0003.fits")     # a list of Spectrum records

Importing this package registers every bundled format.
"""

from ddm_jax.io.loaders import arrays, desi, manga, sdss, sdss_dr7  # noqa: F401  (each registers its reader)
from ddm_jax.io.loaders.registry import expand_inputs, read_any, read_fits, read_many

__all__ = ["expand_inputs", "read_any", "read_fits", "read_many"]
