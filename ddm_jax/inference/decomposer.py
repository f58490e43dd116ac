"""Jitted batch decomposition: preprocessing, DDM, line-ratio regressor, post-processing, BPT.

    from ddm_jax.inference import Decomposer
    decomposer = Decomposer.from_checkpoint("weights/ddm-jax-checkpoint")
    result = decomposer(spectra, mass)   # spectra (B, 2208) or (2208,), mass (B,) or ()
    result["sf_fraction"], result["line_ratios"][:, 1, 0]   # SF part's log([NII]/Halpha)

`Decomposer` splits each batch over all local devices (a 1-D mesh); nothing names a particular one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ddm_jax.batching import BATCH_AXIS, batch_ranges, device_mesh, pad_rows, pipelined
from ddm_jax.config import DDMConfig, RegressorConfig, config_from_dict, config_to_dict
from ddm_jax.constants import wavelength_grid
from ddm_jax.errors import InputError
from ddm_jax.inference.spectrum_api import decompose_spectra, is_spectrum
from ddm_jax.io.safe import params_sha256
from ddm_jax.model import bpt
from ddm_jax.model.forward import decompose_batch, dropout_std
from ddm_jax.model.inputs import validate_inputs, validate_ivar
from ddm_jax.model.models import COMPUTE_DTYPES, DDM, LineRatioRegressor
from ddm_jax.model.scoring import TrustCalibration, scoring_arrays
from ddm_jax.schema import MASS_CONVENTIONS, MASS_LINEAR, MASS_LOG10, MASS_NONE, OUTPUT_KEYS, STD_KEYS, TRUST_KEYS

DEFAULT_BATCH_SIZE = 256


def checkpoint_sources(metadata: dict) -> str:
    """One line on what a checkpoint was made from: converted weight files, or what it was trained on."""
    sources = metadata.get("sources")
    if sources:
        return "; ".join(f"{name}: {src.get('file', '?')} sha256 {str(src.get('sha256', '?'))[:16]}"
                         for name, src in sources.items())
    return f"trained on {metadata.get('expects', {}).get('trained_on', 'unknown data')}"


class Decomposer:
    """Holds both networks' params and runs `decompose_batch` over any number of spectra.

    With several local devices (GPUs, TPU cores, or CPU devices from
    XLA_FLAGS=--xla_force_host_platform_device_count=N) each batch is split over all of them
    along the batch axis (data parallel; params replicated).
    """

    def __init__(self, ddm_params, regressor_params, ddm_config: DDMConfig = DDMConfig(),
                 regressor_config: RegressorConfig = RegressorConfig(), bpt_scheme: str = "standard",
                 batch_size: int = DEFAULT_BATCH_SIZE, samples: int = 0, seed: int = 0,
                 precision: str = "float32", trust: TrustCalibration | None = None, needs_mass: bool = True,
                 mass_convention: str | None = None):
        if bpt_scheme not in bpt.SCHEMES:
            raise InputError(f"unknown BPT scheme {bpt_scheme!r}; choose one of {bpt.SCHEMES}")
        if batch_size < 1:
            raise InputError(f"batch size must be positive, got {batch_size}")
        if precision not in COMPUTE_DTYPES:
            raise InputError(f"unknown precision {precision!r}; choose one of {sorted(COMPUTE_DTYPES)}")
        if samples < 0 or samples == 1:
            raise InputError(f"Monte-Carlo dropout needs at least 2 samples (0 turns it off), got {samples}")
        if mass_convention not in (*MASS_CONVENTIONS, None):
            raise InputError(f"unknown mass convention {mass_convention!r}; one of {MASS_CONVENTIONS}")
        if ddm_config.n_bins != regressor_config.n_bins:
            raise InputError("the DDM and the regressor were built for different spectrum lengths")
        mesh = device_mesh()
        self.n_devices = mesh.size
        self.batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
        self.ddm_params, self.regressor_params, self.trust_arrays = jax.device_put(
            (ddm_params, regressor_params, None if trust is None else scoring_arrays(trust)),
            NamedSharding(mesh, PartitionSpec()))
        dtype = COMPUTE_DTYPES[precision]  # params stay float32; bf16 casts the computation only
        self.ddm, self.regressor = DDM(ddm_config, dtype=dtype), LineRatioRegressor(regressor_config, dtype=dtype)
        self.bpt_scheme, self.batch_size, self.precision = bpt_scheme, batch_size, precision
        self.samples, self.seed = samples, seed
        self.trust, self.needs_mass = trust, needs_mass  # needs_mass False: a missing mass means ones
        # what the network divides by (schema.MASS_CONVENTIONS); None: the checkpoint does not say
        self.mass_convention = MASS_NONE if not needs_mass else mass_convention
        self.wavelength = wavelength_grid(ddm_config.n_bins)
        self.checkpoint = {}  # where the params came from: set by from_checkpoint

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> Decomposer:
        """The checkpoint's params, configs, trust calibration (if any) and what it expects (`needs_mass`)."""
        from ddm_jax.io.checkpoint import load_checkpoint, load_trust

        ddm_params, regressor_params, metadata = load_checkpoint(path)
        decomposer = cls(ddm_params, regressor_params, config_from_dict(DDMConfig, metadata["ddm_config"]),
                         config_from_dict(RegressorConfig, metadata["regressor_config"]),
                         trust=load_trust(path, ddm_params),
                         needs_mass=metadata.get("expects", {}).get("needs_mass", True),
                         mass_convention=metadata.get("expects", {}).get("mass_convention"), **kwargs)
        decomposer.checkpoint = {"checkpoint": str(Path(path).absolute()),
                                 "checkpoint_sources": checkpoint_sources(metadata)}
        return decomposer

    def padded_batch(self, rows: int) -> int:
        """`rows` rounded up to a multiple of the device count."""
        return -(-rows // self.n_devices) * self.n_devices

    def launch(self, spectra: np.ndarray, mass: np.ndarray | None, normalize: bool, size: int, first_row: int = 0,
               ivar: np.ndarray | None = None):
        """Start one batch (padded to `size` rows by repeating the last) without waiting for it.

        `first_row` (the batch's first row in the whole input) seeds its dropout masks, so that a
        resumed Monte-Carlo run reproduces an uninterrupted one.
        """
        mass = np.ones(spectra.shape[0], np.float32) if mass is None else np.asarray(mass).reshape(-1)
        spectra, mass, ivar = jax.device_put(
            tuple(None if a is None else pad_rows(np.asarray(a, np.float32), size) for a in (spectra, mass, ivar)),
            self.batch_sharding)
        out = decompose_batch(self.ddm_params, self.regressor_params, spectra, mass, self.trust_arrays, ivar,
                              ddm=self.ddm, regressor=self.regressor, normalize=normalize,
                              bpt_scheme=self.bpt_scheme)
        if self.samples:
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), first_row)
            out.update(dropout_std(self.ddm_params, spectra, mass, key, ddm=self.ddm, normalize=normalize,
                                   samples=self.samples))
        return out

    @staticmethod
    def collect(launched, count: int) -> dict[str, np.ndarray]:
        """Wait for a launched batch; its first `count` rows as NumPy arrays."""
        return {key: value[:count] for key, value in jax.device_get(launched).items()}

    def output_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-spectrum shape and dtype of each output key."""
        n_bins = self.ddm.config.n_bins
        shapes = jax.eval_shape(partial(decompose_batch, ddm=self.ddm, regressor=self.regressor,
                                        bpt_scheme=self.bpt_scheme), self.ddm_params, self.regressor_params,
                                jax.ShapeDtypeStruct((1, n_bins), np.float32), jax.ShapeDtypeStruct((1,), np.float32),
                                self.trust_arrays)
        specs = {key: (value.shape[1:], np.dtype(value.dtype)) for key, value in shapes.items()}
        if self.samples:
            specs.update({std: specs[std[:-len("_std")]] for std in STD_KEYS})
        return specs

    def provenance(self) -> dict:
        """What made the outputs, for a file's provenance (`schema.PROVENANCE_CARDS` items)."""
        return {**self.checkpoint, "params_sha256": self.params_sha256, "bpt_scheme": self.bpt_scheme,
                "precision": self.precision, "mc_samples": self.samples, "mc_seed": self.seed}

    @cached_property
    def params_sha256(self) -> str:
        """SHA-256 of the params and the trust calibration (computed once: it reads every weight)."""
        return params_sha256((self.ddm_params, self.regressor_params, self.trust_arrays))

    def describe(self) -> dict:
        """What determines the outputs: configs, BPT scheme and a digest of the params and trust calibration."""
        return {"ddm_config": config_to_dict(self.ddm.config),
                "regressor_config": config_to_dict(self.regressor.config), "bpt_scheme": self.bpt_scheme,
                "params_sha256": self.params_sha256,
                "mc_dropout": {"samples": self.samples, "seed": self.seed}, "precision": self.precision}

    def default_mass(self, mass, rows: int, normalize: bool):
        """`mass`, or ones where it is missing and the checkpoint expects no mass (`needs_mass` False).
        A DDMError, naming the ways to give one, where it is missing and the checkpoint needs one."""
        if mass is None and normalize and self.needs_mass:
            convention = self.mass_convention or "convention not stated"
            raise InputError(f"this checkpoint needs a mass per spectrum ({convention}): give --mass, a PREPARED "
                             "input (its log_stellar_mass) or --mass-table; "
                             "for spectra that are already normalised pass --no-normalize (docs/model.md#the-mass)")
        return np.ones(rows, np.float32) if mass is None and normalize else mass

    def mass_from_log(self, log_mass: np.ndarray, where: str) -> np.ndarray:
        """log10 stellar masses (B,) (PREPARED's, or a mass table's) as this checkpoint's network takes
        them (`mass_convention`): as they are, or 10**log_mass. A DDMError if the checkpoint needs no
        mass or does not say which convention it takes."""
        if not self.needs_mass:
            raise InputError(f"{where}: this checkpoint expects no mass (mass_convention 'none'); drop the masses")
        if self.mass_convention == MASS_LOG10:
            return np.asarray(log_mass, np.float32)
        if self.mass_convention == MASS_LINEAR:
            return np.power(10.0, np.asarray(log_mass, np.float64)).astype(np.float32)
        raise InputError(f"{where}: the checkpoint needs a mass but does not state its mass_convention (log10 or "
                         "linear); convert it again (ddm-jax convert), or give --mass as the network takes it")

    def __call__(self, spectra, mass=None, normalize: bool = True,
                 progress: Callable[[int, int], None] | None = None, ivar=None, *, z=None,
                 coverage: str = "refuse"):
        """Decompose spectra (B, n_bins) or (n_bins,), with optional inverse variances `ivar` of the
        same shape: a dict of NumPy arrays with B rows (OUTPUT_KEYS, TRUST_KEYS, and STD_KEYS with
        Monte-Carlo dropout).

        `spectra` may instead be a `specutils.Spectrum` (or a list of them) in any units and frame,
        with its uncertainty; `z` (default: each Spectrum's redshift) and `coverage` apply to those
        only. Then the result is an `inference.spectrum_api.SpectrumResult`: Spectrum parts and a Table.

        Batches are padded to a fixed size so that one compilation serves all; the next batch is
        dispatched before the previous one's results are fetched.
        """
        if is_spectrum(spectra):
            if ivar is not None:
                raise InputError("a Spectrum carries its own uncertainty; drop ivar")
            return decompose_spectra(self, spectra, mass, normalize, progress, z, coverage)
        if z is not None:
            raise InputError("z applies to specutils.Spectrum inputs; arrays are on the rest-frame grid already")
        n_rows = np.shape(spectra)[0] if np.ndim(spectra) == 2 else 1
        spectra, mass = validate_inputs(spectra, self.default_mass(mass, n_rows, normalize), self.ddm.config.n_bins,
                                        normalize)
        count = spectra.shape[0]
        if ivar is not None:
            ivar = validate_ivar(ivar, count, self.ddm.config.n_bins)
        chunk = self.padded_batch(min(self.batch_size, 1 << (count - 1).bit_length()))  # a batch of 1 stays small

        def launch(rows):
            lo, hi = rows
            return self.launch(spectra[lo:hi], mass[lo:hi], normalize, chunk, first_row=lo,
                               ivar=None if ivar is None else ivar[lo:hi])

        def collect(rows, launched):
            return self.collect(launched, rows[1] - rows[0])

        results = []
        for (_, stop), result in pipelined(batch_ranges(count, chunk), launch, collect):
            results.append(result)
            if progress is not None:
                progress(stop, count)
        keys = OUTPUT_KEYS + TRUST_KEYS + (STD_KEYS if self.samples else ())
        return {key: np.concatenate([r[key] for r in results]) for key in keys}
