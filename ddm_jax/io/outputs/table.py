"""An output as an astropy Table (`catalog_table`): the FITS catalogue's columns, units and
descriptions, without writing a file."""

from __future__ import annotations

import numpy as np

from ddm_jax.io.outputs.base import ArraysOutput
from ddm_jax.io.outputs.layout import id_columns, plan_layout, table_columns
from ddm_jax.schema import CATALOG_FORMAT, PROVENANCE_CARDS


def catalog_table(arrays: dict[str, np.ndarray]):
    """The CATALOG columns (survey ids, per-spectrum numbers, named line-ratio and BPT columns, flags,
    units) of in-memory outputs, as an astropy Table: the same table `Table.read(OUT.fits)` gives."""
    from astropy.table import Table

    reader = ArraysOutput(arrays)
    layout = plan_layout(reader)
    identifier_columns, ids = id_columns(reader)
    table = Table()
    for column in identifier_columns:
        table[column.name] = ids[column.name]
        table[column.name].description = column.description
    for column in table_columns(reader, layout, {}):
        values = reader.read(column.key)
        table[column.name] = values[(slice(None),) + column.index] if column.index is not None else values
        table[column.name].unit = column.unit
        table[column.name].description = column.description
    table.meta.update({"DDMFORM": CATALOG_FORMAT, **{PROVENANCE_CARDS[k][0]: v for k, v in reader.provenance.items()
                                             if k in PROVENANCE_CARDS}})
    return table
