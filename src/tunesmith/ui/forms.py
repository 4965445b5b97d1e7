"""The New-run form, generated from the recipe schema, and its way back to a recipe.

:func:`form_schema` walks the pydantic models (the same ones the CLI validates with), so
every field's description is its help text, defaults and enums come from one place, and a
new field appears in the form without UI code. :func:`form_to_recipe` turns submitted
values into the recipe dict; :func:`check_form` validates it with the CLI's own messages,
keyed by field, and confines every path the recipe names to the workspace.

Form values are flat: ``{"train.lr": "2e-4", "data.train.0.path": "data/x.jsonl",
"method.type": "lora", "data.clean.enabled": true, ...}``. Text in a non-string field is
read as YAML, exactly like ``--set key=value``, so ``auto``, ``1e-4`` or ``[q, v]`` mean
what they mean on the command line.
"""

from __future__ import annotations

import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunesmith.config.load import check_recipe, parse_yaml
from tunesmith.config.methods import METHODS
from tunesmith.config.schema import RecipeConfig
from tunesmith.config.section import section_or_value
from tunesmith.objectives.tasks import TASKS

# Fields the form does not offer: the UI decides where runs go, and remote code is a CLI
# flag only (a form field must never make Tunesmith run a model folder's Python).
HIDDEN = {"output_dir", "model.trust_remote_code"}
# Sections that belong to one task only; the page shows them for that task.
TASK_SECTIONS = {"reward": "reward", "preference": "preference", "grpo": "grpo", "distill": "distill",
                 "data.generate_rejected": "preference"}
# Recipe values that name files: each must resolve inside the workspace.
PATH_KEYS = ("model.adapter_from", "data.chat_template")
ENABLED = "enabled"  # the checkbox of an optional section (data.clean.enabled)


def _split(annotation) -> tuple[list, bool]:
    """The non-None members of a union annotation, and whether None is one."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def _section(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The section model a field holds, and whether it is a list of them. A field that may
    also hold a plain value (data.history: keep, drop_oldest or {last_n_turns: N}) is a
    YAML text field, not a section."""
    if section_or_value(annotation):
        return None, False
    for member in _split(annotation)[0]:
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member, False
        if typing.get_origin(member) is list:
            inner = typing.get_args(member)[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner, True
    return None, False


def _widget(annotation) -> dict:
    members, nullable = _split(annotation)
    if len(members) == 1:
        member = members[0]
        if member is bool:
            return {"widget": "checkbox"}
        if typing.get_origin(member) is Literal:
            return {"widget": "select", "choices": list(typing.get_args(member)), "nullable": nullable}
        if member is str:
            return {"widget": "text", "kind": "str"}
        if member in (int, float):
            return {"widget": "text", "kind": member.__name__}
    return {"widget": "text", "kind": "yaml"}


def _default(field) -> Any:
    if field.default is PydanticUndefined and field.default_factory is None:
        return None
    value = field.default_factory() if field.default_factory is not None else field.default
    return None if isinstance(value, BaseModel) else value


def _fields(model: type[BaseModel], prefix: str) -> list[dict]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if key in HIDDEN or (prefix == "method." and name == "type") or _section(field.annotation)[0]:
            continue
        required = field.default is PydanticUndefined and field.default_factory is None
        rows.append({"key": key, "name": name, "description": field.description or "", "default": _default(field),
                     "required": required, **_widget(field.annotation)})
    return rows


def _sections(model: type[BaseModel], prefix: str, title: str, task: str | None = None) -> list[dict]:
    """One form section per pydantic section model, depth first (``task``: shown for that task only)."""
    out = [{"key": prefix.rstrip("."), "title": title, "fields": _fields(model, prefix)}]
    for name, field in model.model_fields.items():
        section, repeated = _section(field.annotation)
        key = f"{prefix}{name}"
        if section is None or key == "method":
            continue
        default = _default(field)
        section_task = TASK_SECTIONS.get(key, task)
        sub = _sections(section, f"{key}.0." if repeated else f"{key}.", key, section_task)
        sub[0].update(description=field.description or "", repeated=repeated,
                      optional=not repeated and field.default is None,
                      required=field.default is PydanticUndefined and field.default_factory is None,
                      task=section_task, default_count=len(default) if isinstance(default, list) else None)
        out += sub
    return out


def form_schema() -> dict:
    """What the New-run page draws: sections of fields, the methods with their own fields,
    the tasks with their headline metrics."""
    sections = _sections(RecipeConfig, "", "run")
    methods = {name: {"fields": _fields(info.config, "method."), "default_lr": info.default_lr}
               for name, info in METHODS.items()}
    tasks = {name: {"description": spec.description, "headline": spec.headline} for name, spec in TASKS.items()}
    return {"sections": sections, "methods": methods, "tasks": tasks, "default_method": "lora"}


@functools.cache
def _optional_sections() -> frozenset[str]:
    # The schema does not change while the UI runs; the form is checked on every keystroke.
    return frozenset(s["key"] for s in form_schema()["sections"] if s.get("optional"))


# ---- values -> recipe ---------------------------------------------------------------------

def _annotation(key: str, method: str | None):
    """The annotation of the field at dotted ``key`` (list indices skipped), or None."""
    parts = key.split(".")
    if parts[0] == "method":
        model = METHODS[method].config if method in METHODS else None
        parts = parts[1:]
    else:
        model = RecipeConfig
    annotation = None
    for part in parts:
        if part.isdigit():
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = _section(annotation)[0]
    return annotation


def _set(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    node: Any = tree
    for part, following in zip(parts, parts[1:] + [None]):
        if following is None:
            break
        child_is_list = following.isdigit()
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append([] if child_is_list else {})
            node = node[index]
        else:
            node = node.setdefault(part, [] if child_is_list else {})
    last = parts[-1]
    if isinstance(node, list):
        index = int(last)
        while len(node) <= index:
            node.append(None)
        node[index] = value
    else:
        node[last] = value


def form_to_recipe(values: dict[str, Any]) -> tuple[dict, list[tuple[str, str]]]:
    """The recipe dict of the submitted values, and the values that could not be read.

    Empty text means "the default" and is left out; an optional section is kept only when
    its ``<section>.enabled`` box is ticked.
    """
    method = values.get("method.type") or "lora"
    enabled = {k.removesuffix("." + ENABLED) for k, v in values.items() if k.endswith("." + ENABLED) and v}
    optional = _optional_sections()
    raw: dict = {}
    problems = []
    for key, value in sorted(values.items(), key=lambda kv: _order(kv[0])):
        if key.endswith("." + ENABLED) or any(key.startswith(s + ".") and s not in enabled for s in optional):
            continue
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue
        annotation = _annotation(key, method)
        kind = _widget(annotation).get("kind") if annotation is not None else "yaml"
        if isinstance(value, str) and kind != "str":
            try:
                value = parse_yaml(value)
            except yaml.YAMLError:
                problems.append((key, f"{key}: {value!r} is not a value (write it as in YAML: 2e-4, true, [a, b])"))
                continue
        _set(raw, key, value)
    for section in enabled & optional:
        node = raw
        for part in section.split("."):
            node = node.setdefault(part, {})
    return raw, problems


def _order(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def recipe_to_values(raw: dict) -> dict[str, Any]:
    """The form values of a recipe dict (the inverse of :func:`form_to_recipe`), for an upload."""
    values: dict[str, Any] = {}
    optional = _optional_sections()

    def walk(node, prefix: str):
        if prefix.rstrip(".") in optional:
            values[prefix + ENABLED] = True
        for key, value in node.items():
            path = prefix + str(key)
            if path in ("data.train", "data.eval") and isinstance(value, (str, dict)):
                value = [value]  # the short forms `train: file.jsonl`
            if path in ("data.train", "data.eval") and isinstance(value, list):
                value = [{"path": v} if isinstance(v, str) else v for v in value]
            if isinstance(value, dict):
                walk(value, path + ".")
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for i, item in enumerate(value):
                    walk(item, f"{path}.{i}.")
            elif isinstance(value, bool):
                values[path] = value
            elif isinstance(value, str) and _widget(_annotation(path, raw.get("method", {}).get("type"))).get("kind") == "str":
                values[path] = value
            else:
                values[path] = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    walk(raw, "")
    values.setdefault("method.type", "lora")
    return values


# ---- validation -----------------------------------------------------------------------------

def _is_local_path(text: str, root: Path) -> bool:
    return not text.startswith("builtin:") and (
        text.startswith(("/", ".", "~")) or (root / text).exists() or "\\" in text)


def confine_paths(raw: dict, root: Path) -> list[tuple[str, str]]:
    """Rewrite the recipe's file paths to absolute paths inside ``root``; report each that leaves it.

    Data sources are always files (or ``builtin:``); ``model.name`` is a file path when it
    looks like one or exists in the workspace, otherwise a hub id.
    """
    base = root.resolve()
    problems = []

    def confine(key: str, text, always: bool) -> Any:
        if not isinstance(text, str) or (not always and not _is_local_path(text, base)) or text.startswith("builtin:"):
            return text
        if "\x00" in text:
            problems.append((key, f"{key}: the path contains a NUL byte"))
            return text
        resolved = (base / Path(text).expanduser()).resolve()
        if not resolved.is_relative_to(base):
            problems.append((key, f"{key}: {text!r} is outside the workspace {base}; put the file inside it "
                                  "(the Data page uploads into data/)"))
        return str(resolved)

    model = raw.get("model")
    if isinstance(model, dict):
        model["name"] = confine("model.name", model.get("name"), False)
        if model.get("adapter_from"):
            model["adapter_from"] = confine("model.adapter_from", model["adapter_from"], True)
    data = raw.get("data")
    if isinstance(data, dict):
        for split in ("train", "eval"):
            sources = data.get(split)
            if isinstance(sources, list):
                for i, source in enumerate(sources):
                    if isinstance(source, dict):
                        source["path"] = confine(f"data.{split}.{i}.path", source.get("path"), True)
        if data.get("chat_template") and _is_local_path(str(data["chat_template"]), base):
            data["chat_template"] = confine("data.chat_template", data["chat_template"], True)
        train = raw.get("train")
        regularize = train.get("regularize") if isinstance(train, dict) else None
        if isinstance(regularize, dict) and regularize.get("data"):  # ewc's general data: a dataset like the others
            regularize["data"] = confine("train.regularize.data", regularize["data"], True)
    # Runs whose models a recipe loads: a distillation teacher, GRPO's reward and classifier runs.
    distill = raw.get("distill")
    if isinstance(distill, dict) and distill.get("teacher"):
        distill["teacher"] = confine("distill.teacher", distill["teacher"], True)
    rewards = (raw.get("grpo") or {}).get("rewards") if isinstance(raw.get("grpo"), dict) else None
    for i, entry in enumerate(rewards if isinstance(rewards, list) else []):
        if isinstance(entry, dict) and entry.get("run"):
            entry["run"] = confine(f"grpo.rewards.{i}.run", entry["run"], True)
    return problems


def check_form(values: dict[str, Any], root: Path):
    """``(config or None, recipe dict, [(key, message)])`` for the submitted form values."""
    raw, problems = form_to_recipe(values)
    raw.pop("output_dir", None)
    problems += confine_paths(raw, root)
    config, invalid = check_recipe(raw)
    problems += invalid
    return (config if not problems else None), raw, problems


def recipe_yaml(raw: dict) -> str:
    """The recipe as the YAML a user would download and run with ``tunesmith train``."""
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
