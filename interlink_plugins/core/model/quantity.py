"""Kubernetes resource quantities ("500m", "1Gi", "1.5", "2e3") as exact fractions.

Bounded like Kubernetes' resource.Quantity: a non-zero value below 1n rounds up to 1n, and a value above
2^63-1 (the int64 every kubelet and scheduler reads a quantity as) is refused, as is a mantissa of more than
MAX_DIGITS significant digits. The magnitude is checked from the digit count and the exponent before any
arithmetic, so "1e999999999" costs nothing.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_QUANTITY = 2**63 - 1
NANO = Fraction(1, 10**9)
# an int64 at nano scale has 28 digits, and an apiserver serialises at most 19: more is not a real quantity
MAX_DIGITS = 100

# decimal suffixes as powers of ten, binary ones as powers of two
_DECIMAL: dict[str, int] = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}

QUANTITY_RE = re.compile(
    r"^(?P<sign>[+-]?)(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac_only>[0-9]+))"
    r"(?:[eE](?P<exp>[+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)


def parse_quantity(text: str | int | float) -> Fraction:
    """Parse a quantity; raises ValueError with the offending text."""
    if isinstance(text, bool):
        raise ValueError(f"not a quantity: {text!r}")
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise ValueError(f"not a Kubernetes quantity: {text!r}")
        text = repr(text) if isinstance(text, float) else str(text)
    match = QUANTITY_RE.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {_shown(text)}")
    whole = (match["int"] or "").lstrip("0")
    frac = (match["frac"] or match["frac_only"] or "").rstrip("0")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return Fraction(0)
    if match["sign"] == "-":
        raise ValueError(f"negative quantity: {_shown(text)}")
    significant = digits.rstrip("0")
    power10 = len(digits) - len(significant) - len(frac)
    digits = significant
    power2 = 0
    if match["exp"] is not None:
        exp = match["exp"].lstrip("+-").lstrip("0") or "0"
        if len(exp) > 12:  # far past both bounds below; int() of it would only cost time
            if match["exp"].startswith("-"):
                return NANO
            raise _too_large(text)
        power10 += -int(exp) if match["exp"].startswith("-") else int(exp)
    elif match["suffix"] in _BINARY:
        power2 = _BINARY[match["suffix"]]
    else:
        power10 += _DECIMAL[match["suffix"] or ""]
    # value = digits * 10**power10 * 2**power2, with 10**(top - 1) <= digits * 10**power10 < 10**top
    top = len(digits) + power10
    if top > 40:  # at least 10**39, far above 2**63: refused before any arithmetic
        raise _too_large(text)
    if top < -28:  # below 1n even times 2**60 (< 10**19): Kubernetes rounds a non-zero amount up to 1n
        return NANO
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"quantity has more than {MAX_DIGITS} significant digits: {_shown(text)}")
    exact = Fraction(int(digits)) * Fraction(10) ** power10
    value = Fraction(math.ceil(exact * 2**power2 / NANO)) * NANO  # rounded up to 1n, as Kubernetes
    if value > MAX_QUANTITY:
        raise _too_large(text)
    return value


def _too_large(text: str) -> ValueError:
    return ValueError(f"quantity too large: {_shown(text)} is above 2^63-1, the largest a kubelet can use")


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"


def cpu_millicores(text: str | int | float) -> int:
    return math.ceil(parse_quantity(text) * 1000)


def memory_bytes(text: str | int | float) -> int:
    return math.ceil(parse_quantity(text))


def whole_count(text: str | int | float) -> int:
    """Extended resources (GPUs) must be whole numbers."""
    value = parse_quantity(text)
    if value.denominator != 1:
        raise ValueError(f"must be a whole number: {_shown(str(text))}")
    return int(value)
