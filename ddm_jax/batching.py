"""Running work over batches: the device mesh, fixed-size padded batches, and pipelining.

Compiled functions see a handful of batch shapes only: inputs are padded to a fixed size by
repeating their last row (real data, so padding cannot produce NaN) and outputs trimmed back.
`pipelined` dispatches the next batch before collecting the previous one, so the host's
work (reading, writing) overlaps the device's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

BATCH_AXIS = "batch"
Item, Launched, Result = TypeVar("Item"), TypeVar("Launched"), TypeVar("Result")


def device_mesh() -> Mesh:
    """A 1-D mesh over all local devices: batches are split along it, params replicated."""
    return Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with its last row repeated up to `rows` rows (unchanged if it has as many)."""
    array = np.asarray(array)
    if len(array) >= rows:
        return array
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def batch_ranges(count: int, size: int, start: int = 0) -> list[tuple[int, int]]:
    """[(lo, hi), ...] covering rows start..count in steps of `size`."""
    return [(lo, min(lo + size, count)) for lo in range(start, count, size)]


def pipelined(items: Iterable[Item], launch: Callable[[Item], Launched],
              collect: Callable[[Item, Launched], Result]) -> Iterator[tuple[Item, Result]]:
    """(item, collect(item, launch(item))) in order, launching item i + 1 before collecting item i.

    JAX dispatches asynchronously, so the device computes one batch while the caller handles
    the previous one's results.
    """
    pending = None
    for item in items:
        launched = launch(item)
        if pending is not None:
            yield pending[0], collect(*pending)
        pending = (item, launched)
    if pending is not None:
        yield pending[0], collect(*pending)


def prefetched(items: Iterable[Item], load: Callable[[Item], Result]) -> Iterator[tuple[Item, Result]]:
    """(item, load(item)) in order, with the next item's `load` running on a thread meanwhile
    (file reads overlap the caller's work)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        ahead = deque()
        for item in items:
            ahead.append((item, thread.submit(load, item)))
            if len(ahead) > 1:
                item, future = ahead.popleft()
                yield item, future.result()
        for item, future in ahead:
            yield item, future.result()


def map_padded(function: Callable[..., dict], arrays: tuple, max_batch: int,
               padded_size: Callable[[int], int]) -> dict[str, np.ndarray]:
    """`function(*batch)` over batches of at most `max_batch` rows of `arrays`, each padded to
    `padded_size(rows)` rows; the dict of outputs trimmed and concatenated over all rows."""
    parts = []
    for lo, hi in batch_ranges(len(arrays[0]), max_batch):
        size = padded_size(hi - lo)
        out = function(*(pad_rows(array[lo:hi], size) for array in arrays))
        parts.append({key: np.asarray(value)[: hi - lo] for key, value in out.items()})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
