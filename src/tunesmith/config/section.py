"""The base of every recipe section, and the rule that recipe values name things, never code
(kept apart so the schema, the method catalog and the registries can share them)."""

from __future__ import annotations

import re
import typing
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# "package.module:function" (or "module:attr.attr"): the shape of an import path. Names of
# this shape are refused everywhere (recipe values and registry names alike), so a recipe
# value that looks like code to import is never mistaken for a registered name.
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def looks_like_import_path(name: str) -> bool:
    """Whether ``name`` has the shape of ``package.module:function`` (or has both '.' and ':').

    The second rule is deliberately broad: no registered name needs both characters, and a
    value such as ``pkg.mod:fn-v2`` still reads as an attempt to name code.
    """
    return bool(_IMPORT_PATH.fullmatch(name)) or ("." in name and ":" in name)


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_safe_name(value: str) -> str:
    """``value`` if it is one safe folder name: it names a directory that is created, written
    and (with --overwrite) deleted, so '', '.', '..', slashes and absolute paths are refused."""
    if not _SAFE_NAME.fullmatch(value) or set(value) == {"."}:
        raise ValueError(f"{value!r} is not a folder name: use 1-128 letters, digits, '.', '_' or '-', starting "
                         "with a letter or digit (no '/', no '..')")
    return value


SafeName = Annotated[str, AfterValidator(check_safe_name)]


class Section(BaseModel):
    """Base for every config section: strict about unknown keys, validates on assignment,
    and refuses inf/NaN (``lr: .inf`` would train until the guard gives up)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def section_or_value(annotation) -> bool:
    """Whether a field may hold a section or a plain value (data.history: keep | drop_oldest |
    {last_n_turns: N}): the recipe reference and the UI form show it as one field, not a section."""
    members = [m for m in typing.get_args(annotation) if m is not type(None)]
    return len(members) > 1 and any(not (isinstance(m, type) and issubclass(m, BaseModel)) for m in members)
