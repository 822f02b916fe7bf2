"""Quantity parsing: bounded like Kubernetes' resource.Quantity, and never slow whatever the text.

Regression: "1e999999999" made parse_quantity spend forever in Fraction.__pow__, spinning the event loop.
The hypothesis deadline is a hang detector (a bounded parse takes microseconds), not a speed claim.
"""

from __future__ import annotations

import math
from datetime import timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.model.quantity import (
    MAX_QUANTITY,
    NANO,
    cpu_millicores,
    memory_bytes,
    parse_quantity,
    whole_count,
)
from tests.podfactory import container, pod_body

HANG_DEADLINE = timedelta(seconds=2)
DECIMAL = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


@pytest.mark.parametrize(
    "text",
    ["1e999999999", "1E+999999999", "9e2147483647", "1e99999999999999999999999", "1" + "0" * 100_000,
     "9223372036854775808", "8Ei", "10000Pi", "1e19", "9.3e18", "100000000000000000000E", 1e308, 10**40],
)
def test_values_above_int64_are_refused_at_once(text: str | int | float) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_quantity(text)


@pytest.mark.parametrize("text", ["1e-999999999", "1e-99999999999999999999", "0." + "0" * 100_000 + "1", "1e-10", "0.1n"])
def test_a_non_zero_amount_below_one_nano_rounds_up_to_one_nano(text: str) -> None:
    assert parse_quantity(text) == NANO
    assert cpu_millicores(text) == 1 and memory_bytes(text) == 1


@pytest.mark.parametrize("text", ["0e999999999", "0e-999999999", "-0", "0.000", "0" * 100_000, "0Ei", "0n"])
def test_zero_in_any_spelling_is_zero(text: str) -> None:
    assert parse_quantity(text) == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("9223372036854775807", MAX_QUANTITY), ("7Ei", 7 * 2**60), ("9.2e18", 92 * 10**17), ("1.5", Fraction(3, 2)),
     ("1.0000000001", Fraction(1_000_000_001, 10**9)), ("0.00000000001Ki", 11 * NANO), (".5Mi", 2**19),
     ("1" + "0" * 200 + "e-190", 10**10), ("0.0000000009765625Ki", 1000 * NANO), ("0.0000000009765626Ki", 1001 * NANO),
     ("1.", 1), ("+5", 5), ("5e+3", 5000), ("0" * 100_000 + "7", 7), (0.1, Fraction(1, 10)), (2**62, 2**62)],
)
def test_values_in_range_are_exact(text: str | int | float, value: Fraction | int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", [float("inf"), float("nan"), True, "1e", "1e1.5", "1Ki2", "e9", "1 e9", "1ee9"])
def test_non_quantities_are_refused(text: str | int | float) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_quantity(text)


def test_a_mantissa_of_more_than_max_digits_is_refused() -> None:
    """An apiserver never serialises more than 19 digits; 100k of them would make a 100k-digit integer."""
    with pytest.raises(ValueError, match="significant digits"):
        parse_quantity("1." + "0" * 100_000 + "1")


def test_a_fractional_gpu_count_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        whole_count("1.0000000001")
    assert whole_count("2") == 2


@pytest.mark.parametrize("quantity", ["1e999999999", "1" + "0" * 30, "16Ei"])
@pytest.mark.parametrize("resource", ["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"])
def test_a_huge_pod_quantity_is_a_422_naming_the_field(quantity: str, resource: str) -> None:
    body = pod_body("q", [container("c", ["true"], resources={"limits": {resource: quantity}})])
    with pytest.raises(PodSpecError) as caught:
        parse_create_body(body)
    assert caught.value.status == 422
    assert caught.value.field == f"spec.containers[0].resources.limits[{resource}]"
    assert "too large" in caught.value.message


# any text of the quantity grammar, with digit runs and exponents far beyond any sane value
digits = st.one_of(st.text("0123456789", max_size=30), st.integers(0, 5000).map(lambda n: "9" * n),
                   st.integers(0, 5000).map(lambda n: "0" * n + "1"))
exponent = st.one_of(st.integers(-(10**30), 10**30), st.integers(-100, 100)).map(str)
grammar = st.builds(
    lambda sign, whole, frac, tail: sign + whole + frac + tail,
    st.sampled_from(["", "+", "-"]), digits, st.one_of(st.just(""), digits.map(lambda d: "." + d)),
    st.one_of(st.sampled_from([*DECIMAL, *BINARY]), exponent.map(lambda e: "e" + e), exponent.map(lambda e: "E+" + e)),
)


@settings(max_examples=1500, deadline=HANG_DEADLINE)
@given(grammar)
def test_any_quantity_text_is_bounded_or_refused_quickly(text: str) -> None:
    try:
        value = parse_quantity(text)
    except ValueError:
        return
    assert 0 <= value <= MAX_QUANTITY
    assert value == 0 or (value / NANO).denominator == 1


@settings(max_examples=400, deadline=HANG_DEADLINE)
@given(st.text(max_size=200))
def test_arbitrary_text_is_parsed_or_refused_with_a_value_error(text: str) -> None:
    try:
        value = parse_quantity(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert 0 <= value <= MAX_QUANTITY


def oracle(mantissa: Fraction, power10: int, power2: int) -> Fraction:
    """Exact value, rounded up to 1n as Kubernetes does (only for small exponents: it is the slow way)."""
    value = mantissa * Fraction(10) ** power10 * 2**power2
    return Fraction(math.ceil(value / NANO)) * NANO


@settings(max_examples=800, deadline=HANG_DEADLINE)
@given(st.text("0123456789", min_size=1, max_size=25), st.text("0123456789", max_size=15),
       st.one_of(st.sampled_from([*DECIMAL, *BINARY]), st.integers(-40, 40)))
def test_small_values_match_the_exact_computation(whole: str, frac: str, tail: str | int) -> None:
    text = whole + ("." + frac if frac else "") + (f"e{tail}" if isinstance(tail, int) else tail)
    mantissa = Fraction(whole + "." + (frac or "0"))
    power10 = tail if isinstance(tail, int) else DECIMAL.get(tail, 0)
    expected = oracle(mantissa, power10, BINARY.get(tail, 0) if isinstance(tail, str) else 0)
    if expected > MAX_QUANTITY:
        with pytest.raises(ValueError, match="too large"):
            parse_quantity(text)
    else:
        assert parse_quantity(text) == expected


@settings(max_examples=500, deadline=HANG_DEADLINE)
@given(st.data())
def test_every_canonical_in_range_quantity_is_accepted(data: st.DataObject) -> None:
    """Positive control: what an apiserver serialises (an integer and a suffix, at most 2^63-1) parses exactly."""
    suffix = data.draw(st.sampled_from([*DECIMAL, *BINARY]))
    unit = Fraction(2) ** BINARY[suffix] if suffix in BINARY else Fraction(10) ** DECIMAL[suffix]
    number = data.draw(st.integers(0, math.floor(MAX_QUANTITY / unit)))
    assert parse_quantity(f"{number}{suffix}") == number * unit
