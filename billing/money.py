"""Minor units and ISO-4217 codes, for people: 1299 eur -> "12.99 EUR", 500 jpy -> "500 JPY"."""

from decimal import Decimal, InvalidOperation

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
    """Parse "12.99" in `currency` into minor units; ValueError on anything that is not exact."""
    try:
        decimal = Decimal(value.strip().replace(",", ""))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not an amount") from exc
    minor = decimal.scaleb(exponent(currency))
    if minor != minor.to_integral_value() or not decimal.is_finite():
        raise ValueError(f"{value!r} has more decimals than {currency.upper()} allows")
    return int(minor)
