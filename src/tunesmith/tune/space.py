"""The search space of `tunesmith tune`: a YAML file of recipe keys and their ranges.

```yaml
train.lr: {log_uniform: [1e-5, 1e-2]}
train.warmup_ratio: {uniform: [0.0, 0.2]}
train.batch_size: {int: [8, 32], step: 8}
method.type: {choice: [lora, ia3, adapter]}
method.r: {choice: [4, 8, 16]}             # only sampled when method.type is one that has r
method.dropout: {uniform: [0, 0.2], when: {method.type: [lora]}}
```

A ``method.*`` key is sampled only for the method types that have that field (and those
named in ``when``). The whole space is checked before any trial runs: an unknown key
(with the closest valid one), an empty or reversed range, a log range touching zero, or a
value the recipe schema refuses is an error naming the key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunesmith.config.methods import METHODS
from tunesmith.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "choice")


@dataclass
class Param:
    """One searched recipe key."""

    key: str
    kind: str
    values: list
    step: float | int | None = None
    when: dict[str, list] = field(default_factory=dict)

    def applies(self, chosen: dict) -> bool:
        """Whether this key is sampled given the values already chosen (its conditions)."""
        if self.key.startswith("method.") and self.key != "method.type":
            method = chosen.get("method.type")
            if method is not None and self.key.split(".", 1)[1] not in METHODS[method].config.model_fields:
                return False
        return all(chosen.get(k) in allowed for k, allowed in self.when.items())


def _recipe_keys(base: dict) -> set[str]:
    """Every 'section.field' key a recipe can set (any method's fields under method.)."""
    from tunesmith.config.schema import RecipeConfig

    keys = set()
    for name, info in RecipeConfig.model_fields.items():
        annotation = info.annotation
        fields = getattr(annotation, "model_fields", None)
        if name == "method":
            keys |= {f"method.{f}" for row in METHODS.values() for f in row.config.model_fields}
        elif fields:
            keys |= {f"{name}.{f}" for f in fields}
        else:
            keys.add(name)
    return keys


def load_space(path: str | Path, base: dict) -> list[Param]:
    """Read and check a search space against the recipe ``base`` (its raw dict).

    Raises:
        ConfigError: naming the offending key, before any trial runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Search space {str(path)!r} does not exist.", "Pass --space FILE.yaml.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"Search space {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"Search space {path} must map recipe keys to ranges.",
                          "Example: train.lr: {log_uniform: [1e-5, 1e-2]}")
    known = _recipe_keys(base)
    params = [_param(str(key), spec, known) for key, spec in raw.items()]
    for param in params:
        _check_values(param, base)
    return params


def _param(key: str, spec, known: set[str]) -> Param:
    if key not in known:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        raise ConfigError(f"search space: unknown recipe key '{key}'.",
                          f"Did you mean '{close[0]}'?" if close else "Keys are recipe paths like train.lr.")
    if not isinstance(spec, dict):
        raise ConfigError(f"search space: '{key}' needs a range such as {{log_uniform: [1e-5, 1e-2]}} or "
                          "{choice: [a, b]}.")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in KINDS + ("step", "when")]
    if len(kinds) != 1 or extra:
        raise ConfigError(f"search space: '{key}' must have exactly one of {', '.join(KINDS)}"
                          + (f" (unknown: {', '.join(map(str, extra))})" if extra else "") + ".")
    kind, values = kinds[0], spec[kinds[0]]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"search space: '{key}' {kind} needs a non-empty list.")
    if kind != "choice":
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"search space: '{key}' {kind} needs two numbers [low, high], got {values}.")
        low, high = values
        if not low < high:
            raise ConfigError(f"search space: '{key}' {kind} range [{low}, {high}] is empty (low must be below high).")
        if kind == "log_uniform" and low <= 0:
            raise ConfigError(f"search space: '{key}' log_uniform needs a positive low bound, got {low}.")
        if kind == "int" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"search space: '{key}' int needs whole numbers, got {values}.")
    when = spec.get("when") or {}
    if not isinstance(when, dict) or not all(isinstance(v, list) for v in when.values()):
        raise ConfigError(f"search space: '{key}' when must map keys to lists of values, e.g. "
                          "{when: {method.type: [lora]}}.")
    return Param(key, kind, values, spec.get("step"), {str(k): v for k, v in when.items()})


def _check_values(param: Param, base: dict) -> None:
    """Every bound or choice must give a recipe the schema accepts."""
    from tunesmith.config.load import validate_recipe

    for value in param.values:
        overrides = {param.key: value}
        if param.key.startswith("method.") and param.key != "method.type":
            owners = [name for name, row in METHODS.items() if param.key.split(".", 1)[1] in row.config.model_fields]
            current = (base.get("method") or {}).get("type", "lora")
            overrides["method.type"] = current if current in owners else owners[0]
        try:
            validate_recipe(apply_params(base, overrides))
        except ConfigError as exc:
            raise ConfigError(f"search space: '{param.key}' value {value!r} is not valid in the recipe: "
                              f"{exc.problem}") from None


def apply_params(base: dict, params: dict) -> dict:
    """The recipe ``base`` with ``params`` ({'train.lr': 1e-3, ...}) applied. A new method
    type starts its method section afresh (another method's fields would not apply)."""
    recipe = yaml.safe_load(yaml.safe_dump(base))
    method_type = params.get("method.type")
    if method_type is not None and (recipe.get("method") or {}).get("type", "lora") != method_type:
        recipe["method"] = {"type": method_type}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if not name:
            recipe[section] = value
            continue
        recipe.setdefault(section, {})
        recipe[section][name] = value
    return recipe
