"""Running the networks over inputs: `Decomposer` (params on devices, batches, trust), `streaming`
(jobs over files: resumable folders, multi-host shares, merge) and `spectrum_api` (specutils
Spectrum objects in and out).

    from ddm_jax.inference import Decomposer
    decomposer = Decomposer.from_checkpoint("weights/ddm-jax-checkpoint")
    result = decomposer(spectra, mass)      # spectra (B, 2208), mass (B,)
"""

from ddm_jax.inference.decomposer import Decomposer

__all__ = ["Decomposer"]
