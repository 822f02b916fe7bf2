"""Names and values as Kubernetes allows them, checked where a pod enters the plugin.

A pod's name and namespace end up in paths, submit descriptions, job names and container labels: they
are held to the apiserver's own rules (DNS-1123 subdomain and label), so a newline or a `$` in one is
refused before any backend sees it. The pod uid is what interLink sends (a UUID); anything that could
end a line or leave a directory is refused. A JSON string may hold a lone UTF-16 surrogate (`"\\ud800"`),
which no file, script or answer can encode: such a body is refused whole, naming where it was found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from interlink_plugins.core.errors import PodSpecError

DNS_SUBDOMAIN_MAX = 253
DNS_LABEL_MAX = 63
UID_MAX = 128
# patterns as the OpenAPI schema states them too (ECMA-262); always used with fullmatch here
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
UID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)
_UID = re.compile(UID_PATTERN)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
QUALIFIED_NAME_MAX = 63
# a lone surrogate reaches a str only through a \u escape (or CESU-8 bytes, which json accepts)
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def shown(text: str) -> str:
    """`text` quoted for a message: control characters and surrogates escaped (an answer must encode)."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _matches(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.fullmatch(text) is not None


def check_dns_label(value: str, field: str) -> str:
    """RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends, at most 63 characters."""
    if len(value) > DNS_LABEL_MAX or not _matches(_DNS_LABEL, value):
        raise PodSpecError(field, f"{shown(value)} is not a DNS-1123 label (lowercase letters, digits and '-', "
                                  f"a letter or digit at each end, at most {DNS_LABEL_MAX} characters)")
    return value


def check_dns_subdomain(value: str, field: str) -> str:
    """RFC 1123 subdomain: DNS labels joined by '.', at most 253 characters (a pod's metadata.name)."""
    if len(value) > DNS_SUBDOMAIN_MAX or not _matches(_DNS_SUBDOMAIN, value):
        raise PodSpecError(field, f"{shown(value)} is not a DNS-1123 subdomain (lowercase letters, digits, '-' "
                                  f"and '.', a letter or digit at each end, at most {DNS_SUBDOMAIN_MAX} characters)")
    return value


def check_pod_uid(value: str, field: str = "metadata.uid") -> str:
    """What interLink sends (the apiserver's UUID); letters, digits, '.', '_', '-' only, alphanumeric first:
    never a path separator, '..', a line break or a `$`."""
    if len(value) > UID_MAX or not _matches(_UID, value):
        raise PodSpecError(field, f"{shown(value)} is not a valid UID (a UUID: letters, digits, '-', '.', '_', "
                                  f"a letter or digit first, at most {UID_MAX} characters)")
    return value


def _check_qualified_name(key: str, field: str) -> None:
    """A label or annotation key: an optional DNS-1123 subdomain prefix and '/', then a qualified name."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > DNS_SUBDOMAIN_MAX or not _matches(_DNS_SUBDOMAIN, prefix)):
        raise PodSpecError(field, f"key {shown(key)}: the prefix must be a DNS-1123 subdomain")
    if len(name) > QUALIFIED_NAME_MAX or not _matches(_QUALIFIED_NAME, name):
        raise PodSpecError(field, f"key {shown(key)} is not a qualified name (letters, digits, '-', '_', '.', "
                                  f"alphanumeric at each end, at most {QUALIFIED_NAME_MAX} characters)")


def check_keys(mapping: Mapping[str, str], field: str) -> None:
    """Label and annotation keys as the apiserver allows them: a key is written bare into the downward API's
    `key="value"` files (a newline or '=' in one would forge a line). Values are quoted where they are
    written, and checked where they are used (submit commands, options)."""
    for key in mapping:
        _check_qualified_name(key, f"{field}[{key}]")


def job_dir_name(namespace: str, uid: str) -> str:
    """The pod's job dir under the data root, one per (namespace, uid) and never the same for two:
    `<namespace>-<uid>` (the Go plugin's name) when the uid is a UUID, whose fixed length makes the split
    unambiguous; `<namespace>_<uid>` otherwise ('_' never appears in a namespace, a DNS-1123 label)."""
    check_dns_label(namespace, "metadata.namespace")
    check_pod_uid(uid)
    return f"{namespace}-{uid}" if _matches(_UUID, uid) else f"{namespace}_{uid}"


def surrogate_field(body: Any, *, raw: bytes | None = None) -> str | None:
    """The JSON path of the first string (value or key) of `body` holding a lone surrogate, else None.
    With the `raw` bytes it was parsed from, a body that cannot hold one is not walked."""
    if raw is not None and _MAYBE_SURROGATE.search(raw) is None and not raw[:4].count(b"\x00"):
        return None
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path or "body"
        elif isinstance(value, dict):
            for key in value:  # keys first: a key is named by the path that ends with it
                if _has_surrogate(key):
                    return f"{path}.{key}" if path else key
            stack.extend(reversed([(f"{path}.{key}" if path else key, item) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{index}]", item) for index, item in enumerate(value)]))
    return None


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_path(path: str) -> str:
    """A JSON path that may itself hold a surrogate (a key), made safe to put in an answer."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")
