"""Where the samples lie in each input of a model: its batch axis, or none.

Models do not all take samples on axis 0: a recurrent state is often (layers, batch, hidden), a
sample rate is a scalar that holds for the whole batch. The batch axis of each input is read from
the model's symbolic dimensions (the name most inputs carry first, e.g. "batch"), and can be
given explicitly where the model does not say (`--batch-axis state=1`, `batch_axes=` in the API).
Data is then sliced, counted and split along each input's own axis; an input without one
(`None`) is fed whole with every batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import ConfigError, DataError

Shape = Sequence[int | str | None]
BatchAxes = Mapping[str, int | None]


def infer_batch_axes(
    shapes: Mapping[str, Shape], overrides: BatchAxes | None = None
) -> dict[str, int | None]:
    """Input name -> its batch axis (None: a scalar, or an input the override marks constant).

    The batch symbol is the symbolic dimension most inputs carry on axis 0; an input holding it
    elsewhere ((2, batch, 128)) takes that axis, any other input with dimensions axis 0.
    `overrides` (input -> axis or None) win, checked against the input's rank."""
    firsts = [s[0] for s in shapes.values() if len(s) and isinstance(s[0], str) and s[0]]
    symbol = Counter(firsts).most_common(1)[0][0] if firsts else None
    axes: dict[str, int | None] = {}
    for name, shape in shapes.items():
        if not len(shape):
            axes[name] = None
        elif symbol is not None and symbol in list(shape):
            axes[name] = list(shape).index(symbol)
        else:
            axes[name] = 0
    for name, axis in (overrides or {}).items():
        if name not in shapes:
            raise ConfigError(
                f"--batch-axis names {name!r}, which is not an input of the model "
                f"(inputs: {', '.join(shapes)})"
            )
        rank = len(shapes[name])
        if axis is not None and not 0 <= axis < rank:
            raise ConfigError(
                f"--batch-axis {name}={axis}: input {name!r} has {rank} dimension(s), so the axis "
                f"is 0 to {rank - 1} (or 'none' for an input fed whole with every batch)"
            )
        axes[name] = axis
    return axes


def parse_batch_axes(items: Sequence[str]) -> dict[str, int | None]:
    """`NAME=AXIS` strings (AXIS a number or `none`) as a mapping."""
    out: dict[str, int | None] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not (value.isdigit() or value == "none"):
            raise ConfigError(
                f"--batch-axis expects NAME=AXIS (AXIS a number or 'none'), got {item!r}"
            )
        out[name] = None if value == "none" else int(value)
    return out


def count(arrays: Mapping[str, NDArray[Any]], axes: BatchAxes) -> int:
    """The number of samples: the length along each input's batch axis, which must agree."""
    sizes: dict[str, int] = {}
    for name, a in arrays.items():
        axis = axes.get(name)
        if axis is not None:
            sizes[name] = a.shape[axis]
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"inputs hold different numbers of samples along their batch axes {sizes}: give every "
            "input the same number of samples (--batch-axis NAME=AXIS says where they lie)"
        )
    return next(iter(sizes.values()), 1)


def take(
    arrays: Mapping[str, NDArray[Any]], axes: BatchAxes, start: int, stop: int
) -> dict[str, NDArray[Any]]:
    """Samples start..stop of every input along its batch axis; inputs without one stay whole."""
    out: dict[str, NDArray[Any]] = {}
    for name, a in arrays.items():
        axis = axes.get(name)
        if axis is None:
            out[name] = a
        else:
            index: list[slice] = [slice(None)] * a.ndim
            index[axis] = slice(start, stop)
            out[name] = a[tuple(index)]
    return out


def axes_of(arrays: Mapping[str, NDArray[Any]]) -> dict[str, int | None]:
    """The default when the model is not known: axis 0, none for 0-d arrays."""
    return {name: (0 if np.ndim(a) else None) for name, a in arrays.items()}
