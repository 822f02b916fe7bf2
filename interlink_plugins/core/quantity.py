"""Kubernetes resource quantities ("500m", "1Gi", "1.5", "2e3") as exact fractions."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

_QUANTITY = re.compile(
    r"^(?P<sign>[+-]?)(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)


def parse_quantity(text: str | int | float) -> Fraction:
    """Parse a quantity; raises ValueError with the offending text."""
    if isinstance(text, bool):
        raise ValueError(f"not a quantity: {text!r}")
    if isinstance(text, int | float):
        return Fraction(str(text))
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    value = Fraction(match["num"])
    if match["exp"]:
        value *= Fraction(10) ** int(match["exp"][1:])
    else:
        value *= _SUFFIXES[match["suffix"] or ""]
    if match["sign"] == "-":
        value = -value
    if value < 0:
        raise ValueError(f"negative quantity: {text!r}")
    return value


def cpu_millicores(text: str | int | float) -> int:
    return math.ceil(parse_quantity(text) * 1000)


def memory_bytes(text: str | int | float) -> int:
    return math.ceil(parse_quantity(text))


def whole_count(text: str | int | float) -> int:
    """Extended resources (GPUs) must be whole numbers."""
    value = parse_quantity(text)
    if value.denominator != 1:
        raise ValueError(f"must be a whole number: {text!r}")
    return int(value)
