"""The base of every recipe section, and the rule that recipe values name things, never code
(kept apart so the schema, the method catalog and the registries can share them)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

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


class Section(BaseModel):
    """Base for every config section: strict about unknown keys, validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
