"""The one template engine: every value is shell-quoted unless marked trusted.

``Environment(finalize=...)`` runs on every ``{{ expression }}`` result, so a template author
cannot forget to quote. Trusted fragments (text the template layer itself built from quoted
parts, or admin-enabled raw shell) are wrapped in :class:`Raw` and pass through unchanged.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jinja2


class Raw(str):
    """A fragment that is already shell-safe (or deliberately raw shell enabled by the admin)."""

    __slots__ = ()


def shell_quote(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return " ".join(shell_quote(item) for item in value)
    return shlex.quote(str(value))


def quote_words(words: Iterable[Any]) -> Raw:
    """A quoted command line: each word quoted on its own."""
    return Raw(" ".join(shell_quote(word) for word in words))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("interlink_plugins", "templates"),
        finalize=shell_quote,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - shell, not HTML: finalize quotes every value
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the package: no stat of the file per render
    )
    env.filters["raw"] = Raw
    env.filters["words"] = quote_words
    return env


def render(template_name: str, **context: Any) -> str:
    return environment().get_template(template_name).render(**context)
