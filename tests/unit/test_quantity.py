from decimal import Decimal
from fractions import Fraction

import pytest

from baseline_operator.quantity import parse_quantity, quantities_equal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Decimal(0)),
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("100n", Decimal("0.0000001")),
        ("10u", Decimal("0.00001")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1G", Decimal(10**9)),
        ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),
        ("1Ki", Decimal(1024)),
        ("1Mi", Decimal(2**20)),
        ("1Gi", Decimal(2**30)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("2e+2", Decimal(200)),
        ("5e-3", Decimal("0.005")),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+1", Decimal(1)),
        ("-1", Decimal(-1)),
        ("0.1m", Decimal("0.0001")),
    ],
)
def test_parses_every_suffix_and_form(text, value):
    assert parse_quantity(text) == value


def test_large_binary_quantities_are_exact():
    # Compared as fractions: Decimal arithmetic in the test itself would round at 28 digits.
    assert Fraction(parse_quantity("123456789.123456789Ei")) == Fraction(123456789123456789 * 2**60, 10**9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "1 Gi",
        "Gi",
        "1gi",
        "1KiB",
        "1.2.3",
        "e3",
        "1e",
        "1e1.5",
        "1ee3",
        "0x10",
        "1Ki1",
        "\uff11",  # a full-width digit: Python says it is a digit, Kubernetes does not
        "1K",
        "--1",
    ],
)
def test_refuses_what_kubernetes_refuses(text):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_refuses_absurd_exponents():
    with pytest.raises(ValueError, match="exponent"):
        parse_quantity("1e999999999")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("1000m", "1"),
        ("1024Mi", "1Gi"),
        ("1e3", "1k"),
        ("50", 50),
        ("0.5", "500m"),
        ("2Gi", "2048Mi"),
        ("1.5", "1500m"),
    ],
)
def test_equal_values_however_spelled(first, second):
    assert quantities_equal(first, second)
    assert quantities_equal(second, first)


@pytest.mark.parametrize(
    ("first", "second"), [("1G", "1Gi"), ("1", "2"), ("100m", "1"), ("bogus", "1"), ("bogus", "other")]
)
def test_different_values(first, second):
    assert not quantities_equal(first, second)


def test_identical_text_is_equal_even_when_not_a_quantity():
    assert quantities_equal("bogus", "bogus")
