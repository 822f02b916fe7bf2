"""Image references as the pod author writes them: checked before any runtime sees one.

An image always lands in a runtime's argv, so it must never read as an option (``-``), split into
two words, or carry control characters, and it must be one of the forms a runtime takes:

* an OCI/docker reference, ``[host[:port]/]path[:tag][@digest]`` (the distribution grammar);
* a transport URI, ``scheme://rest`` (``docker://``, ``oras://``, ``library://``, ``shub://``,
  ``https://``...), with a reference after ``docker://`` and ``oras://``;
* an apptainer archive transport, ``docker-archive:PATH``, ``oci-archive:PATH``, ``oci:PATH``,
  ``oci-sif:PATH``, ``docker-daemon:REF``;
* an absolute path (a SIF file or a sandbox directory), for the runtimes that take one.

Every check raises :class:`PodSpecError` naming the field, which the API answers with a 422.
"""

from __future__ import annotations

import re

from interlink_plugins.core.errors import PodSpecError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII
)
_NAME_MAX = 255
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.ASCII | re.DOTALL)
_REFERENCE_SCHEMES = ("docker", "oras")
ARCHIVE_TRANSPORTS = ("docker-archive:", "oci-archive:", "oci-sif:", "oci:")
_DAEMON_TRANSPORT = "docker-daemon:"
_MAX_LENGTH = 4096


def _bad_character(text: str) -> str | None:
    for char in text:
        if char.isspace() or ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or char in "\u2028\u2029":
            return f"{char!r}"
    return None


def _plain(text: str, field: str) -> None:
    """What every image (and image-root) must be: one argv word that no tool reads as an option."""
    if len(text) > _MAX_LENGTH:
        raise PodSpecError(field, f"is longer than {_MAX_LENGTH} characters")
    if text.startswith("-"):
        raise PodSpecError(field, f"{text!r} starts with '-': an image is never an option")
    bad = _bad_character(text)
    if bad is not None:
        raise PodSpecError(field, f"{text!r} contains the white space or control character {bad}")


def is_reference(text: str) -> bool:
    """An OCI/docker reference (``busybox``, ``localhost:5000/a/b:tag``, ``x@sha256:...``)."""
    match = _REFERENCE.fullmatch(text)
    return match is not None and len(match.group("name")) <= _NAME_MAX


def _check_reference(text: str, field: str, what: str) -> None:
    if not is_reference(text):
        raise PodSpecError(
            field, f"{what!r} is not an image reference ([registry[:port]/]name[:tag][@digest], name in lower case)"
        )


def check_image(text: str, field: str) -> None:
    """Any form some runtime takes (the check at parse time, before the runtime is known)."""
    _plain(text, field)
    if not text or text.startswith("/") or is_reference(text):
        return
    scheme = _SCHEME.fullmatch(text)
    if scheme is not None:
        name, rest = scheme.groups()
        if not rest:
            raise PodSpecError(field, f"{text!r} names nothing after {name}://")
        if name in _REFERENCE_SCHEMES:
            _check_reference(rest, field, rest)
        return
    if text.startswith(_DAEMON_TRANSPORT):
        _check_reference(text[len(_DAEMON_TRANSPORT) :], field, text)
        return
    for transport in ARCHIVE_TRANSPORTS:
        if text.startswith(transport):
            if not text[len(transport) :].startswith("/"):
                raise PodSpecError(field, f"{text!r}: {transport} takes an absolute path")
            return
    _check_reference(text, field, text)


def check_podman_image(text: str, field: str) -> None:
    """podman takes a reference (optionally ``docker://``): no path, no archive or host transport,
    which a root podman would open on the host (``oci-archive:/root/...``, ``dir:/``)."""
    _plain(text, field)
    if not text:
        raise PodSpecError(field, "is required")
    reference = text[len("docker://") :] if text.startswith("docker://") else text
    _check_reference(reference, field, text)


def check_apptainer_image(text: str, field: str) -> None:
    """apptainer/singularity: every form of :func:`check_image` (after ImagePrefix or image-root)."""
    if not text:
        raise PodSpecError(field, "is required")
    check_image(text, field)


def check_image_root(text: str, field: str) -> None:
    """The image-root annotation: a prefix ``scheme://[rest]`` or an absolute directory."""
    _plain(text, field)
    if text.startswith("/"):
        return
    scheme = _SCHEME.fullmatch(text)
    if scheme is None:
        raise PodSpecError(field, f"{text!r} is neither scheme://... nor an absolute directory")
