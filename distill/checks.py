"""Range checks for the settings dataclasses (each raises a SettingError naming the field)."""

from __future__ import annotations

from typing import Any

from distill.errors import SettingError


def fail(obj: Any, name: str, problem: str) -> None:
    raise SettingError(type(obj).__name__, name, problem, getattr(obj, name))


def integer(obj: Any, name: str, minimum: int | None = None, nullable: bool = False) -> None:
    """`obj.name` is an int (not a bool), at least `minimum`; None allowed when `nullable`."""
    value = getattr(obj, name)
    if value is None and nullable:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        fail(obj, name, "must be an integer")
    if minimum is not None and value < minimum:
        fail(obj, name, f"must be >= {minimum}")


def positive(obj: Any, name: str, nullable: bool = False) -> None:
    """`obj.name` is a number > 0 (None allowed when `nullable`)."""
    value = getattr(obj, name)
    if value is None and nullable:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        fail(obj, name, "must be a number > 0")


def fraction(obj: Any, name: str) -> None:
    """`obj.name` is a number in [0, 1) (momenta)."""
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        fail(obj, name, "must be in [0, 1)")


def choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    """`obj.name` is one of `choices`."""
    if getattr(obj, name) not in choices:
        fail(obj, name, f"must be one of {', '.join(choices)}")
