"""Regenerate the bundled example spectra used by `ddm-jax example` (ddm_jax/data/example_spectra.npz).

    python tests/make_example_spectra.py

Synthetic spectra from `ddm_jax.synthetic` (seeded): a pure SF and a pure AGN spectrum and
composites of the two with known SF weights, in flux units of 1e-17 erg/s/cm2/A.
"""

from pathlib import Path

import jax
import numpy as np

from ddm_jax.constants import norm_window_slice
from ddm_jax.training import synthetic

OUTPUT = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "example_spectra.npz"
SF_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)
SEED, SNR, FLUX_SCALE = 2026, 30.0, 40.0


def unit_median(spectrum) -> np.ndarray:
    """Scaled to median 1 in the normalisation window, as training libraries are."""
    spectrum = np.asarray(spectrum)
    return spectrum / np.median(spectrum[norm_window_slice()])


def main() -> None:
    sf_key, agn_key = jax.random.split(jax.random.PRNGKey(SEED))
    sf = unit_median(synthetic.sf_spectra(sf_key, 1, SNR)[0][0])
    agn = unit_median(synthetic.agn_spectra(agn_key, 1, SNR, seyfert_fraction=1.0)[0][0])
    flux = np.stack([np.asarray(synthetic.composite(sf, agn, w)) for w in SF_WEIGHTS]) * FLUX_SCALE
    labels = np.array([f"synthetic, SF weight {w:.2f}" for w in SF_WEIGHTS])
    np.savez(OUTPUT, flux=flux.astype(np.float32), mass=np.ones(len(SF_WEIGHTS), np.float32),
             label=labels, sf_weight=np.array(SF_WEIGHTS, np.float32))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
