"""OUT and PREPARED files as astronomers use them (docs/fits.md): one reader for every output
(`open_output`), the streamed FITS catalogue writer, astropy Tables.

    from ddm_jax.io.outputs import open_output, read_arrays
    with open_output("OUT.fits") as out:       # or an .npz, or a streamed folder
        sf_fraction = out.read("sf_fraction", 0, 1000)
"""

from ddm_jax.io.outputs.files import export, open_output, read_arrays, write_output

__all__ = ["export", "open_output", "read_arrays", "write_output"]
