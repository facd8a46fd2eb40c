"""Render lock names from cinder.coordination.synchronized templates: pure, sorted, de-duplicated."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lockd.errors import UsageError
from lockd.lock import validate_name


def call_arguments(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name plus ``f_name``, as Cinder's templates see them."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    for name, param in inspect.signature(func).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            values.update(values.pop(name, {}))
    values["f_name"] = func.__name__
    return values


def render_names(templates: Iterable[str], values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Format each template with ``values``; return the prefixed names sorted and de-duplicated.

    Sorting gives every caller the same acquisition order, so two calls needing the same locks cannot
    deadlock (Cinder does the same).

    Raises:
        UsageError: a template names an argument the call does not have, or renders to an invalid name.
    """
    return sorted({validate_name(prefix + render(template, values)) for template in templates})


def render(template: str, values: Mapping[str, Any], what: str = "lock name") -> str:
    """``template.format(**values)``, a bad template or argument becoming a UsageError that names it."""
    try:
        return template.format(**values)
    except (KeyError, AttributeError, IndexError, TypeError, ValueError) as exc:
        raise UsageError(f"{what} template {template!r} cannot be rendered: {exc!r}") from None
