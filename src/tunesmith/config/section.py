"""The base of every recipe section (kept apart so the schema and the method catalog can share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every config section: strict about unknown keys, validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
