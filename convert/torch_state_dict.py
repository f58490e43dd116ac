"""Read a PyTorch `state_dict` of the project's PyTorch port (`ddm_jax.reference.torch_port`)."""

from __future__ import annotations

import numpy as np

from ddm_jax.errors import InputError, first_line

from .rules import DeclaredArray

_PICKLE_PROTO = b"\x80"  # torch.save's legacy (pre-1.6) format is a bare pickle stream


def read_state_dict(path: str) -> dict[str, DeclaredArray]:
    """Tensors by key, as declared arrays (`load()` gives float32).

    Loaded with `weights_only=True` (no code is unpickled) and `mmap=True`: tensor data stay in
    the file until a rule has compared their shapes and asks for them. The legacy format cannot
    be memory-mapped (its storages are read whole, at the sizes it declares), so it is refused.
    """
    try:
        import torch
    except ImportError as err:
        raise InputError(f"{path} is a PyTorch file; reading it needs `pip install 'ddm-jax[torch]'`") from err
    with open(path, "rb") as f:
        if f.read(1) == _PICKLE_PROTO:
            raise InputError(f"{path}: a PyTorch file in the legacy (pre-1.6) format, which is read whole before "
                             "its shapes can be checked; save it again with torch.save(state_dict, path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for corrupt, truncated or unsafe files
        raise InputError(f"{path}: cannot load it as a PyTorch state_dict: {first_line(err)}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    not_float = [key for key, value in state.items() if not value.is_floating_point()]
    if not_float:
        raise InputError(f"{path}: tensor {not_float[0]!r} is {state[not_float[0]].dtype}, not floating point; "
                         "not a weight file of this model")
    return {key: DeclaredArray(tuple(value.shape), np.dtype(np.float32),
                               lambda value=value: value.detach().to(torch.float32, copy=True).numpy())
            for key, value in state.items()}
