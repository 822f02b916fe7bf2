"""Kubernetes ``$(VAR)`` expansion for container command and args.

A port of k8s.io/kubernetes ``third_party/forked/golang/expansion`` (``Expand`` with
``MappingFuncFor``), which the kubelet applies to ``command`` and ``args``:

* ``$(NAME)`` becomes the value of NAME when NAME is defined;
* ``$$`` becomes ``$`` (so ``$$(NAME)`` is the literal ``$(NAME)``);
* an unknown reference, an unterminated ``$(``, a ``$`` before any other character and a ``$`` at
  the end stay as written; everything else is copied unchanged.

The reference name is everything up to the FIRST ``)``: ``$(A$(B))`` looks up ``A$(B``.
Values are inserted as they are, never expanded again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from interlink_plugins.core.model.pod import EnvVar

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


def env_map(env: Iterable[EnvVar]) -> dict[str, str]:
    """The lookup map the kubelet builds from a container's env list: later duplicates win."""
    result: dict[str, str] = {}
    for var in env:
        result[var.name] = var.value
    return result


def _read_variable(text: str, start: int) -> tuple[str, bool, int]:
    """Go's ``tryReadVariableName`` on ``text[start:]`` (the part after a ``$``).

    Returns (content, is_reference, characters consumed).
    """
    first = text[start]
    if first == _OPERATOR:
        return _OPERATOR, False, 1
    if first == _OPENER:
        close = text.find(_CLOSER, start + 1)
        if close != -1:
            return text[start + 1 : close], True, close - start + 1
        return _OPERATOR + _OPENER, False, 1
    return _OPERATOR + first, False, 1


def expand_k8s(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` references in ``text`` exactly as the kubelet does."""
    if _OPERATOR not in text:
        return text
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    length = len(text)
    while cursor < length:
        if text[cursor] == _OPERATOR and cursor + 1 < length:
            out.append(text[checkpoint:cursor])
            content, is_reference, advance = _read_variable(text, cursor + 1)
            if is_reference:
                value = env.get(content)
                out.append(value if value is not None else _OPERATOR + _OPENER + content + _CLOSER)
            else:
                out.append(content)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)
