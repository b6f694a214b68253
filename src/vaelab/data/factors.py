"""Known generative factors of a dataset: their names, the value of each index, and their kind."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class Factors:
    """The factors of variation behind a dataset's images, as a grid of indices.

    `values[f][k]` is the physical value of index k of factor f (an orientation in radians, a
    position in [0, 1], ...); a split's `factors` tensor holds the indices. `categorical[f]` is
    True for an unordered factor (a shape), whose values only name its categories. Lists (from
    JSON) are normalised to tuples.
    """

    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    categorical: tuple[bool, ...]

    def __post_init__(self) -> None:
        names, values, categorical = (
            _as_tuple(self.names, "names"),
            _as_tuple(self.values, "values"),
            _as_tuple(self.categorical, "categorical"),
        )
        if not names or not all(isinstance(n, str) and n for n in names):
            raise VaelabError(f"factor names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise VaelabError(f"factor names must differ, got {names!r}")
        if len(values) != len(names) or len(categorical) != len(names):
            raise VaelabError(
                f"factors need one values list and one categorical flag per name: {len(names)} "
                f"names, {len(values)} values lists, {len(categorical)} flags"
            )
        if not all(isinstance(c, bool) for c in categorical):
            raise VaelabError(f"factor categorical flags must be True or False, got {categorical}")
        values = tuple(_factor_values(name, v) for name, v in zip(names, values, strict=True))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "categorical", categorical)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of values of each factor."""
        return tuple(len(v) for v in self.values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; `Factors.from_json` rebuilds it."""
        return {
            "names": list(self.names),
            "values": [list(v) for v in self.values],
            "categorical": list(self.categorical),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Factors:
        """The factors saved by `to_json`."""
        if not isinstance(data, dict):
            raise VaelabError(f"factors must be a JSON object, got {type(data).__name__}")
        missing = [key for key in ("names", "values", "categorical") if key not in data]
        if missing:
            raise VaelabError(f"factors lack {', '.join(missing)}; save them with to_json")
        return cls(names=data["names"], values=data["values"], categorical=data["categorical"])


def _as_tuple(items: object, what: str) -> tuple:
    if not isinstance(items, (tuple, list)):
        raise VaelabError(f"factor {what} must be a list, got {type(items).__name__}")
    return tuple(items)


def _factor_values(name: str, values: object) -> tuple[float, ...]:
    """At least one finite number per factor, as floats."""
    values = _as_tuple(values, f"{name!r} values")
    ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    if not values or not ok or not all(math.isfinite(v) for v in values):
        raise VaelabError(f"factor {name!r} needs at least one finite number, got {values!r}")
    return tuple(float(v) for v in values)
