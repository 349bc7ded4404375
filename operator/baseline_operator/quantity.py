"""Kubernetes resource quantities (`500m`, `2Gi`, `1e3`) as exact decimals.

The API server stores quantities in a canonical spelling (`1000m` comes back as `1`, `1024Mi` as
`1Gi`), so the spec and the live object are compared by value, never by text. The grammar is the one
of `k8s.io/apimachinery/pkg/api/resource`:

    <quantity>     ::= <sign>? <numeric> <suffix>
    <numeric>      ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>       ::= <binarySI> | <decimalSI> | <decimalExponent>
    <binarySI>     ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>    ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExp>   ::= e <sign>? <digits> | E <sign>? <digits>
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from types import MappingProxyType

_QUANTITY = re.compile(
    r"""
    (?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))
    (?:
        (?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)
      | [eE](?P<exponent>[+-]?[0-9]+)
    )?
    """,
    re.VERBOSE,
)

_MULTIPLIERS = MappingProxyType(
    {
        "n": Decimal(10) ** -9,
        "u": Decimal(10) ** -6,
        "m": Decimal(10) ** -3,
        "k": Decimal(10) ** 3,
        "M": Decimal(10) ** 6,
        "G": Decimal(10) ** 9,
        "T": Decimal(10) ** 12,
        "P": Decimal(10) ** 15,
        "E": Decimal(10) ** 18,
        "Ki": Decimal(2) ** 10,
        "Mi": Decimal(2) ** 20,
        "Gi": Decimal(2) ** 30,
        "Ti": Decimal(2) ** 40,
        "Pi": Decimal(2) ** 50,
        "Ei": Decimal(2) ** 60,
    }
)

# Kubernetes itself caps exponents far below this; the cap keeps a hostile `1e999999999` from
# producing numbers that are slow to compare.
_MAX_EXPONENT = 1000

# Enough digits that no real quantity (2**60 times a long mantissa) is ever rounded.
_PRECISION = 100


def parse_quantity(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity; ValueError when `text` is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 1e3)")
    with localcontext() as context:
        context.prec = _PRECISION
        number = Decimal(match["number"])
        if match["exponent"] is not None:
            exponent = int(match["exponent"])
            if abs(exponent) > _MAX_EXPONENT:
                raise ValueError(f"{text!r}: exponent out of range")
            return number.scaleb(exponent)
        if match["suffix"] is not None:
            return number * _MULTIPLIERS[match["suffix"]]
        return number


def quantities_equal(first: str | int, second: str | int) -> bool:
    """Whether two quantities have the same value, however spelled.

    Integers are accepted because JSON bodies may carry `pods: 50` rather than `"50"`. Text that is
    not a quantity is equal only to the identical text, so a malformed value is still reported as a
    difference rather than raising in the middle of a comparison.
    """
    if str(first) == str(second):
        return True
    try:
        return parse_quantity(str(first)) == parse_quantity(str(second))
    except ValueError:
        return False
