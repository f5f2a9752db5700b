"""Sweep files: a base config, a cartesian grid, zipped axes and seeds → a list of runs.

```toml
name = "lr-width"
[base]                      # any config keys; nested tables flatten to dotted keys
"model.name" = "gpt"
[grid]                      # cartesian product, in file order
"optim.lr" = [1e-3, 3e-3]
[zip]                       # optional: axes that move together (equal lengths)
seeds = [0, 1, 2]           # optional: every point runs once per seed (sets train.seed)
```
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from proxylab.config import (ConfigError, RunConfig, allowed_keys, flatten_table, from_flat,
                             parse_set, read_toml)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TOP_KEYS = ("name", "base", "grid", "zip", "seeds", "description")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    zip: dict[str, list] = field(default_factory=dict)
    seeds: list[int] | None = None
    description: str = ""
    source: str = "<python>"     # file the spec came from, for error messages

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "base": self.base, "grid": self.grid, "zip": self.zip,
             "seeds": self.seeds, "description": self.description}
        return {k: v for k, v in d.items() if v not in (None, {}, "")}

    @property
    def axes(self) -> list[str]:
        """Config keys that vary across the sweep's runs."""
        return list(self.grid) + list(self.zip) + (["train.seed"] if self.seeds else [])

    def with_overrides(self, sets: list[str] | tuple[str, ...]) -> "SweepSpec":
        """Apply ``--set KEY=VALUE`` to the base; setting a swept axis is an error."""
        base = dict(self.base)
        for item in sets:
            k, v = parse_set(item)
            if k in self.axes:
                raise ConfigError(f"--set {k}: this key is a sweep axis in {self.source}; "
                                  "change the sweep file instead")
            base[k] = v
        return SweepSpec(self.name, base, self.grid, self.zip, self.seeds, self.description,
                         self.source)

    def expand(self) -> list[RunConfig]:
        """Every run of the sweep, validated, in a stable order, without duplicates."""
        grid_points = itertools.product(*self.grid.values()) if self.grid else [()]
        zip_len = len(next(iter(self.zip.values()))) if self.zip else 1
        seeds = self.seeds if self.seeds else [None]
        out: dict[str, RunConfig] = {}
        for gp in grid_points:
            for zi in range(zip_len):
                for seed in seeds:
                    flat = dict(self.base)
                    flat.update(zip(self.grid, gp))
                    flat.update({k: v[zi] for k, v in self.zip.items()})
                    if seed is not None:
                        flat["train.seed"] = seed
                    try:
                        cfg = from_flat(flat)
                    except ConfigError as e:
                        raise ConfigError(f"{self.source}: {e}") from None
                    out.setdefault(cfg.id, cfg)
        return list(out.values())


def _check_axis_values(source: str, table: str, key: str, values: Any) -> list:
    if not isinstance(values, list):
        raise ConfigError(f"{source}: [{table}] {key!r} must be a list of values, got {values!r}")
    if not values:
        raise ConfigError(f"{source}: [{table}] {key!r} is empty; give at least one value")
    return values


def _check_key(source: str, table: str, key: str) -> None:
    if key.startswith("optim.extra."):
        return  # checked per optimizer when the runs are built
    if key not in allowed_keys():
        raise ConfigError(f"{source}: [{table}] has unknown config key {key!r} "
                          "(see `proxylab keys` for the allowed keys)")


def spec_from_dict(d: Mapping[str, Any], source: str = "<python>") -> SweepSpec:
    unknown = [k for k in d if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; allowed: "
                          f"{', '.join(_TOP_KEYS)}")
    name = d.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{source}: 'name' must be a string of letters, digits, '.', '_', '-' "
                          f"(got {name!r})")
    for table in ("base", "grid", "zip"):
        if table in d and not isinstance(d[table], Mapping):
            raise ConfigError(f"{source}: [{table}] must be a table")
    base = flatten_table(d.get("base", {}))
    for k in base:
        _check_key(source, "base", k)
    # bare dotted keys (optim.lr = [...]) arrive as nested tables: flatten down to the lists
    grid_t, zip_t = flatten_table(d.get("grid", {})), flatten_table(d.get("zip", {}))
    seeds = d.get("seeds")
    for table in (grid_t, zip_t):
        # `seeds = [...]` written after a [grid] or [zip] header lands inside that table
        # (TOML scoping); DESIGN.md's own example does this, so accept it there.
        if "seeds" in table:
            if seeds is not None:
                raise ConfigError(f"{source}: 'seeds' is given twice")
            seeds = table.pop("seeds")
    grid = {k: _check_axis_values(source, "grid", k, v) for k, v in grid_t.items()}
    zipped = {k: _check_axis_values(source, "zip", k, v) for k, v in zip_t.items()}
    for table, axes in (("grid", grid), ("zip", zipped)):
        for k in axes:
            _check_key(source, table, k)
    if len({len(v) for v in zipped.values()}) > 1:
        lens = {k: len(v) for k, v in zipped.items()}
        raise ConfigError(f"{source}: [zip] axes must have equal lengths, got {lens}")
    dup = set(grid) & set(zipped)
    if dup:
        raise ConfigError(f"{source}: {sorted(dup)} appear in both [grid] and [zip]")
    if seeds is not None:
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise ConfigError(f"{source}: 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
        if "train.seed" in grid or "train.seed" in zipped:
            raise ConfigError(f"{source}: give seeds either as 'seeds' or as a train.seed axis, not both")
    return SweepSpec(name=name, base=base, grid=grid, zip=zipped, seeds=seeds,
                     description=str(d.get("description", "")), source=source)


def load_sweep(path: str | Path) -> SweepSpec:
    return spec_from_dict(read_toml(path), source=str(path))
