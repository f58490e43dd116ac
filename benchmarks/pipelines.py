"""The benchmarked workloads, written once per framework on the same random-weight networks.

Two workloads: `ddm` (the DDM forward on normalised spectra) and `pipeline` (normalise,
DDM, regressor on the composite and both parts, BPT: what `decompose` runs). Every runner
takes (spectra (B, n_bins) float32, mass (B,) float32) NumPy arrays and returns a dict of
NumPy arrays with the keys of `OUTPUT_KEYS[workload]`, fully computed.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ddm_jax.config import PRESETS, conv_lengths
from ddm_jax.constants import NII_HA, OIII_HB, norm_window_slice
from ddm_jax.model import bpt
from ddm_jax.model.forward import decompose_batch
from ddm_jax.model.models import COMPUTE_DTYPES, DDM, LineRatioRegressor, fresh_params

WORKLOADS = ("ddm", "pipeline")
DDM_KEYS = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total")
OUTPUT_KEYS = {"ddm": DDM_KEYS,
               "pipeline": ("sf_spectrum", "agn_spectrum", "sf_fraction", "residual", "line_ratios", "bpt_class")}
Runner = Callable[[np.ndarray, np.ndarray], dict]


def keras_available() -> bool:
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass
class Networks:
    """Both networks' configs and float32 Flax params, and the Keras models they came from (or None)."""

    ddm_config: object
    regressor_config: object
    ddm_params: dict
    regressor_params: dict
    keras_ddm: object = None
    keras_regressor: object = None


def build_networks(preset: str, seed: int = 0, with_keras: bool = True) -> Networks:
    """Random-weight networks. With Keras: its models, randomised, saved and converted by the project's
    converter (so every framework runs the very same weights); without: Flax's initialisation."""
    ddm_config, regressor_config = PRESETS[preset]
    if not with_keras:
        return Networks(ddm_config, regressor_config, fresh_params(DDM(ddm_config), seed),
                        fresh_params(LineRatioRegressor(regressor_config), seed + 1))
    from ddm_jax.reference import keras_model
    from ddm_jax_convert import convert_file

    keras_ddm, keras_regressor = keras_model.build_ddm(ddm_config), keras_model.build_regressor(regressor_config)
    params = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate((keras_ddm, keras_regressor)):
            keras_model.randomize_weights(model, seed + i)
            path = Path(tmp) / f"net{i}.hdf5"
            model.save_weights(path)
            params.append(convert_file(str(path)).params)
    return Networks(ddm_config, regressor_config, *params, keras_ddm, keras_regressor)


def make_inputs(count: int, n_bins: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positive spectra with a continuum slope, noise and a few emission lines; masses in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(0.0, 1.0, n_bins)
    flux = 5.0 + rng.uniform(-1.0, 1.0, (count, 1)) * wave + 0.3 * rng.normal(size=(count, n_bins))
    for centre in rng.uniform(0.1, 0.9, 6):
        flux += rng.uniform(0.0, 5.0, (count, 1)) * np.exp(-0.5 * ((wave - centre) / 0.002) ** 2)
    return flux.astype(np.float32), rng.uniform(0.5, 2.0, count).astype(np.float32)


def normalize_np(spectra: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """The DDM's normalisation (docs/model.md#preprocessing) in NumPy, the upstream's way."""
    window = spectra[:, norm_window_slice(spectra.shape[1])]
    centred = spectra - np.median(window, axis=1, keepdims=True)
    return (centred / window.std(axis=1, keepdims=True) / mass[:, None]).astype(np.float32)


def center_np(spectra: np.ndarray) -> np.ndarray:
    window = spectra[:, norm_window_slice(spectra.shape[1])]
    return (spectra - np.median(window, axis=1, keepdims=True)).astype(np.float32)


def classify_nii_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`ddm_jax.model.bpt.classify_nii`'s standard scheme in NumPy: the Keras and PyTorch pipelines run
    without JAX, as upstream's would (tests/model/test_bpt.py holds the scheme itself)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        star_forming = (x < bpt.KAUFFMANN03_ASYMPTOTE) & (y < bpt.kauffmann03(x))
        below_kewley = (x < bpt.KEWLEY01_NII_ASYMPTOTE) & (y < bpt.kewley01_nii(x))
        agn = np.where(y > bpt.schawinski07(x), bpt.SEYFERT, bpt.LINER)
    cls = np.where(star_forming, bpt.STAR_FORMING, np.where(below_kewley, bpt.COMPOSITE, agn))
    return np.where(np.isfinite(x) & np.isfinite(y), cls, bpt.UNDEFINED).astype(np.int8)


def _post_process(normalised, sf_spectrum, agn_spectrum, p_sf, predict_regressor) -> dict:
    """Fractions, residual, regressor on the three parts and BPT, in NumPy (the Keras pipeline)."""
    batch = normalised.shape[0]
    sf_fraction = np.clip(p_sf, 0.0, 1.0)
    w = sf_fraction[:, None]
    residual = w * sf_spectrum + (1.0 - w) * agn_spectrum - normalised
    parts = np.stack([normalised, sf_spectrum, agn_spectrum], axis=1).reshape(3 * batch, -1)
    line_ratios = predict_regressor(center_np(parts)).reshape(batch, 3, -1)
    return {"sf_spectrum": sf_spectrum, "agn_spectrum": agn_spectrum, "sf_fraction": sf_fraction,
            "residual": residual, "line_ratios": line_ratios,
            "bpt_class": classify_nii_np(line_ratios[..., NII_HA], line_ratios[..., OIII_HB])}


# --- JAX ------------------------------------------------------------------------------------------

class JaxRunner:
    """The project's own code: `DDM.apply` and `model.forward.decompose_batch`, jitted, at a precision."""

    def __init__(self, nets: Networks, workload: str, precision: str):
        dtype = COMPUTE_DTYPES[precision]
        self.ddm, self.regressor = DDM(nets.ddm_config, dtype=dtype), LineRatioRegressor(nets.regressor_config,
                                                                                            dtype=dtype)
        self.params = jax.device_put((nets.ddm_params, nets.regressor_params))
        self.workload = workload
        self._ddm_forward = jax.jit(lambda p, x: self.ddm.apply({"params": p}, x)._asdict())
        self._compiled = {}  # batch size -> compiled executable

    def _args(self, spectra, mass):
        return (self.params[0], spectra) if self.workload == "ddm" else (*self.params, spectra, mass)

    def compiled(self, spectra, mass):
        """The executable for this batch size, compiled ahead of time (once) so its memory can be read."""
        if spectra.shape not in self._compiled:
            if self.workload == "ddm":
                lowered = self._ddm_forward.lower(*self._args(spectra, mass))
            else:
                lowered = decompose_batch.lower(*self._args(spectra, mass), ddm=self.ddm, regressor=self.regressor)
            self._compiled[spectra.shape] = lowered.compile()
        return self._compiled[spectra.shape]

    def __call__(self, spectra, mass):
        out = jax.block_until_ready(self.compiled(spectra, mass)(*self._args(spectra, mass)))
        return {key: np.asarray(out[key]) for key in OUTPUT_KEYS[self.workload]}

    def xla_memory_mb(self, spectra, mass) -> float | None:
        """XLA's own account of the compiled program's buffers (arguments, outputs, temporaries)."""
        stats = self.compiled(spectra, mass).memory_analysis()
        if stats is None:
            return None
        return (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes) / 2**20


# --- PyTorch --------------------------------------------------------------------------------------

def torch_modules(nets: Networks):
    """The PyTorch port loaded with the same weights (Flax layout -> torch layout)."""
    from ddm_jax.reference.torch_port import TorchDDM, TorchRegressor, load_flax_params

    return [load_flax_params(TorchDDM(nets.ddm_config), nets.ddm_params).eval(),
            load_flax_params(TorchRegressor(nets.regressor_config), nets.regressor_params).eval()]


class TorchRunner:
    """The PyTorch port in eager mode or under `torch.compile`, pre/post-processing in torch and NumPy."""

    def __init__(self, nets: Networks, workload: str, compiled: bool):
        import torch

        self.torch, self.workload = torch, workload
        ddm, regressor = torch_modules(nets)
        self.ddm, self.regressor = (torch.compile(ddm), torch.compile(regressor)) if compiled else (ddm, regressor)
        self.window = norm_window_slice(nets.ddm_config.n_bins)

    def _median(self, x):  # numpy's median (the mean of the two middle values), unlike torch.median
        return self.torch.quantile(x[:, self.window], 0.5, dim=1, keepdim=True)

    def __call__(self, spectra, mass):
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(spectra)
            if self.workload == "ddm":
                return dict(zip(DDM_KEYS, (o.numpy() for o in self.ddm(x))))
            window = x[:, self.window]
            normalised = (x - self._median(x)) / window.std(dim=1, unbiased=False, keepdim=True)
            normalised = normalised / torch.from_numpy(mass)[:, None]
            sf_spectrum, agn_spectrum, p_sf, _, _ = self.ddm(normalised)
            sf_fraction = p_sf.clamp(0.0, 1.0)
            w = sf_fraction[:, None]
            residual = w * sf_spectrum + (1.0 - w) * agn_spectrum - normalised
            parts = torch.stack([normalised, sf_spectrum, agn_spectrum], dim=1).flatten(0, 1)
            line_ratios = self.regressor(parts - self._median(parts)).reshape(x.shape[0], 3, -1).numpy()
        return {"sf_spectrum": sf_spectrum.numpy(), "agn_spectrum": agn_spectrum.numpy(),
                "sf_fraction": sf_fraction.numpy(), "residual": residual.numpy(), "line_ratios": line_ratios,
                "bpt_class": classify_nii_np(line_ratios[..., NII_HA], line_ratios[..., OIII_HB])}


# --- Keras ----------------------------------------------------------------------------------------

class KerasRunner:
    """The original networks through Keras `predict`, pre/post-processing in NumPy as upstream."""

    def __init__(self, nets: Networks, workload: str):
        self.nets, self.workload = nets, workload

    def __call__(self, spectra, mass):
        from ddm_jax.reference.keras_model import predict

        batch = spectra.shape[0]
        if self.workload == "ddm":
            return {key: o.reshape(batch, -1).squeeze(-1) if o.shape[-1] == 1 else o
                    for key, o in zip(DDM_KEYS, predict(self.nets.keras_ddm, spectra, batch_size=batch))}
        normalised = normalize_np(spectra, mass)
        sf_spectrum, agn_spectrum, p_sf = predict(self.nets.keras_ddm, normalised, batch_size=batch)[:3]
        return _post_process(normalised, sf_spectrum, agn_spectrum, p_sf[:, 0],
                             lambda parts: predict(self.nets.keras_regressor, parts, batch_size=3 * batch)[0])


def make_runner(name: str, nets: Networks, workload: str):
    """Runner for a framework name of `FRAMEWORKS`."""
    if name.startswith("jax-"):
        return JaxRunner(nets, workload, name.removeprefix("jax-"))
    if name in ("torch-eager", "torch-compile"):
        return TorchRunner(nets, workload, compiled=name == "torch-compile")
    if name == "keras":
        return KerasRunner(nets, workload)
    raise ValueError(f"unknown framework {name!r}")


FRAMEWORKS = ("jax-float32", "jax-bf16", "torch-eager", "torch-compile", "keras")


# --- FLOPs ----------------------------------------------------------------------------------------

def network_flops(params: dict, config, conv_key: str) -> int:
    """Multiply-adds x 2 of one forward pass per spectrum: convs (k*in*out per output position) and Dense layers."""
    lengths = conv_lengths(config.n_bins, config.convs)
    convs = sum(2 * int(np.prod(params[conv_key][f"conv_{i}"]["kernel"].shape)) * length
                for i, length in enumerate(lengths, start=1))
    dense = sum(2 * int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
                if path[0].key != conv_key and path[-1].key == "kernel")
    return convs + dense


def flops_per_spectrum(nets: Networks, workload: str) -> int:
    ddm = network_flops(nets.ddm_params, nets.ddm_config, "trunk")
    if workload == "ddm":
        return ddm
    return ddm + 3 * network_flops(nets.regressor_params, nets.regressor_config, "convs")


def matmul_roofline(size: int = 2048, repeats: int = 5) -> dict:
    """Best float32 GFLOP/s of a square matmul in NumPy and in XLA (and XLA bf16), on this machine now."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), np.float32), rng.random((size, size), np.float32)
    dot = jax.jit(jnp.dot)
    cases = {"numpy_float32": lambda: a @ b,
             "jax_float32": lambda: jax.block_until_ready(dot(a_j, b_j)),
             "jax_bf16": lambda: jax.block_until_ready(dot(a_h, b_h))}
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)
    a_h, b_h = a_j.astype(jnp.bfloat16), b_j.astype(jnp.bfloat16)
    result = {}
    for name, fn in cases.items():
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        result[name] = 2 * size**3 / best / 1e9
    result["float32_peak"] = max(result["numpy_float32"], result["jax_float32"])
    result["size"] = size
    return result
