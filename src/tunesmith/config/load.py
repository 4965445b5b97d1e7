"""Read a recipe: YAML file + ``--set a.b=c`` overrides -> validated :class:`RecipeConfig`."""

from __future__ import annotations

import difflib
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunesmith.config.methods import METHOD_TYPES, METHODS
from tunesmith.config.schema import RecipeConfig
from tunesmith.errors import ConfigError


MAX_RECIPE_BYTES = 1_000_000
MAX_ALIASES = 100  # a recipe needs a few; a "billion laughs" bomb needs thousands of expansions
_SHORT = reprlib.Repr()  # bounded: a value in an error message may be huge or deeply nested
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 4
_SHORT.maxlevel = 2


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2; PyYAML's 1.1 rules need a dot)
    and refuses more than :data:`MAX_ALIASES` aliases (nested aliases expand exponentially when
    a value is validated or printed)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name): refused as a possible alias bomb")
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str):
    """YAML text -> plain values through the safe loader (how recipes and --set values are read)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Load and validate a recipe file.

    Args:
        path: the YAML recipe.
        overrides: ``key.sub=value`` strings; values are parsed as YAML (``1e-4``, ``true``, ``[a, b]``).

    Raises:
        ConfigError: missing/unparsable file, unknown keys (with the closest valid key), bad values.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory, not a recipe file.",
                          "Give the YAML file (a run directory's recipe is its config.yaml).")
    if not path.is_file():
        raise ConfigError(f"Recipe file {str(path)!r} does not exist.", "Check the path (see configs/ for examples).")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"Recipe {path} is {path.stat().st_size:,} bytes; a recipe is at most "
                          f"{MAX_RECIPE_BYTES:,}.", "Put data in data files, not in the recipe.")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"Recipe {path} is not a UTF-8 text file.", "Give the YAML recipe.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Recipe {path} is not valid YAML: {exc}", "Fix the YAML syntax.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Recipe {path} must be a mapping of sections (name, task, model, data, ...).")
    config = validate_recipe(apply_overrides(raw, overrides or []))
    _anchor_data_paths(config, path.resolve().parent)
    return config


def _anchor_data_paths(config: RecipeConfig, recipe_dir: Path) -> None:
    """Make relative data paths absolute, so the resolved config.yaml in a run directory
    still points at the same files when it is used to repeat the run."""
    for source in config.data.train + (config.data.eval or []):
        if not source.path.startswith("builtin:") and not Path(source.path).expanduser().is_absolute():
            source.path = str(recipe_dir / source.path)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=c`` override applied (creating sections as needed)."""
    result = yaml.safe_load(yaml.safe_dump(raw))  # deep copy through plain types
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override {item!r} is not of the form key.sub=value.", "Example: --set train.lr=1e-4")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        try:
            node[parts[-1]] = parse_yaml(value) if value != "" else None
        except yaml.YAMLError:
            raise ConfigError(
                f"Override {item!r} has a value that is not valid YAML.", "Quote it: --set 'key=\"text\"'"
            ) from None
    return result


def validate_recipe(raw: dict[str, Any]) -> RecipeConfig:
    """Validate a plain dict, turning pydantic's errors into one readable ConfigError."""
    config, problems = check_recipe(raw)
    if problems:
        lines = [message for _, message in problems]
        raise ConfigError(
            "The recipe is invalid:\n  - " + "\n  - ".join(lines),
            "Fix these keys in the YAML or with --set key=value.",
        )
    return config


def check_recipe(raw: dict[str, Any]) -> tuple[RecipeConfig | None, list[tuple[str, str]]]:
    """Validate ``raw``; return the config, or None and every problem as ``(key, message)``.

    ``key`` is the dotted YAML path (``train.lr``, ``data.train.0.path``, ``method.r``;
    "recipe" for rules across fields) and ``message`` the line the CLI prints, so the UI
    can put each message next to its field.
    """
    try:
        return RecipeConfig.model_validate(raw), []
    except ValidationError as exc:
        return None, [_explain(err, raw) for err in exc.errors()]


def allow_remote_code(config: RecipeConfig) -> RecipeConfig:
    """``config`` with the model folder's own code allowed: only the CLI flag
    ``--trust-remote-code`` calls this (a recipe value cannot; see ModelConfig)."""
    return config.model_copy(update={"model": config.model.model_copy(update={"trust_remote_code": True})})


def dump_recipe(config: RecipeConfig, path: Path) -> None:
    """Write the fully resolved config so ``tunesmith train path`` repeats the run (without
    ``--trust-remote-code``'s permission, which the repeating user gives again or not)."""
    data = config.model_dump(mode="json", exclude={"model": {"trust_remote_code"}})
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _explain(err: dict, raw: dict) -> tuple[str, str]:
    loc = [str(p) for p in err["loc"]]
    # Drop pydantic's union tags (e.g. 'adalora' in method.adalora.init_r) so the path matches the YAML.
    if len(loc) >= 2 and loc[0] == "method" and loc[1] in METHODS:
        loc = [loc[0]] + loc[2:]
    where = ".".join(loc) or "recipe"
    if err["type"] == "extra_forbidden":
        suggestion = _closest_key(loc, raw)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        return where, f"unknown key {where!r}.{hint}"
    if err["type"] == "missing":
        return where, f"{where}: required key is missing"
    if err["type"] == "union_tag_invalid":
        return where, f"{where}: unknown method type; choose one of {', '.join(METHOD_TYPES)}"
    msg = err["msg"].removeprefix("Value error, ")
    got = f" (got {_SHORT.repr(err['input'])})" if "input" in err and not isinstance(err["input"], dict) else ""
    return where, f"{where}: {msg}{got}"


# Names other tools (PEFT, HF TrainingArguments) use for a field, which string similarity
# alone would not suggest: 'rank' is closer to 'init' than to 'r'.
KEY_ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
               "learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
               "gradient_accumulation_steps": "grad_accum", "warmup": "warmup_ratio"}


def _closest_key(loc: list[str], raw: dict) -> str | None:
    """The valid key nearest to the unknown last element of ``loc``."""
    model: type[BaseModel] | None = RecipeConfig
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if model else None
        model = _section_model(field, raw, loc) if field else None
    if model is None:
        return None
    alias = KEY_ALIASES.get(loc[-1])
    if alias in model.model_fields:
        return ".".join(loc[:-1] + [alias])
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.5)
    return ".".join([p for p in loc[:-1]] + [matches[0]]) if matches else None


def _section_model(field, raw: dict, loc: list[str]):
    ann = field.annotation
    if loc and loc[0] == "method":
        method = raw.get("method")
        kind = method.get("type", "lora") if isinstance(method, dict) else None
        return METHODS[kind].config if kind in METHODS else None
    for candidate in getattr(ann, "__args__", (ann,)):
        inner = getattr(candidate, "__args__", (candidate,))
        for c in inner:
            if isinstance(c, type) and issubclass(c, BaseModel):
                return c
    return None
