"""Read a PyTorch `state_dict` of the project's PyTorch port (`ddm_jax.reference.torch_port`)."""

from __future__ import annotations

import numpy as np

from ddm_jax.errors import DDMError


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors by key, as float arrays. Loaded with `weights_only=True`: no code is unpickled."""
    try:
        import torch
    except ImportError as err:
        raise DDMError(f"{path} is a PyTorch file; reading it needs `pip install 'ddm-jax[torch]'`") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt, truncated or unsafe files
        raise DDMError(f"{path}: cannot load it as a PyTorch state_dict: {str(err).splitlines()[0]}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DDMError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    not_float = [key for key, value in state.items() if not value.is_floating_point()]
    if not_float:
        raise DDMError(f"{path}: tensor {not_float[0]!r} is not floating point; not a weight file of this model")
    return {key: value.detach().to(torch.float32).numpy() for key, value in state.items()}
