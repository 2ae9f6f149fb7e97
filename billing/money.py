"""Minor units and ISO-4217 codes, for people: 1299 eur -> "12.99 EUR", 500 jpy -> "500 JPY"."""

import re
from decimal import Decimal

# Stripe's zero-decimal currencies (https://docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Stripe's three-decimal currencies.
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def format_money(amount: int, currency: str) -> str:
    places = exponent(currency)
    value = Decimal(amount).scaleb(-places)
    return f"{value:,.{places}f} {currency.upper()}"


def to_minor_units(value: str, currency: str) -> int:
    """Parse an amount typed in `currency` ("12.99" EUR -> 1299, "500" JPY -> 500); ValueError otherwise.

    Strict on purpose: digits, then a dot and at most the currency's decimals. No comma of any kind, so
    "12,99" is refused rather than read as 1,299.00 (a 100x refund), and no sign, exponent or spaces inside.
    """
    places = exponent(currency)
    text = value.strip()
    if "," in text:
        raise ValueError(f"{value!r}: use a dot for decimals ({_example(currency)}) and no thousands separators")
    decimals = rf"(\.\d{{1,{places}}})?" if places else ""
    if not re.fullmatch(rf"\d{{1,15}}{decimals}", text, flags=re.ASCII):
        if re.fullmatch(r"\d+\.\d+", text, flags=re.ASCII):
            raise ValueError(f"{value!r} has more decimals than {currency.upper()} allows ({_example(currency)})")
        raise ValueError(f"{value!r} is not an amount in {currency.upper()}, e.g. {_example(currency)}")
    return int(Decimal(text).scaleb(places))


def _example(currency: str) -> str:
    places = exponent(currency)
    return f"{'12.' + '9' * places if places else '1299'} {currency.upper()}"
