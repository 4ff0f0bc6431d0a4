"""Stripe webhooks: subscriptions and invoices as the contract's billing events.

The signature (``Stripe-Signature``, 5-minute tolerance) is checked by the official ``stripe`` library.
The Stripe event id (``evt_...``) becomes ``event_id``: Stripe retries a delivery for up to three days on
any non-2xx, and every retry carries the same id, so the worker counts it once. A verified event that
cannot be mapped is dead-lettered and answered 200: retrying it for three days would not make it valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import stripe

from streams.ingest.config import StripeConfig
from streams.ingest.source import Parsed, Rejected, Unauthorized, as_id, get_path, load_object, to_event

HANDLED = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)
# Currencies whose amounts Stripe gives in whole units (stripe.com/docs/currencies#zero-decimal).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# One interval of each kind, in months.
_MONTHS = {
    "day": Decimal(12) / Decimal(365),
    "week": Decimal(12) / Decimal(52),
    "month": Decimal(1),
    "year": Decimal(12),
}
_CENT = Decimal("0.01")
# A subscription in these states is over or never started: its end comes as customer.subscription.deleted.
_ENDED = ("canceled", "incomplete_expired")


def _units(minor: Any, currency: str | None) -> Decimal:
    value = Decimal(str(minor))
    return value if (currency or "").lower() in ZERO_DECIMAL else value / 100


def _price(item: dict[str, Any]) -> dict[str, Any]:
    """The item's price (``plan`` on API versions before prices; same fields that matter)."""
    price = item.get("price") or item.get("plan")
    if not isinstance(price, dict):
        raise Rejected(f"subscription item {item.get('id')!r} has no price")
    return price


def _recurring(price: dict[str, Any]) -> tuple[str, int, str]:
    rec: dict[str, Any] = price["recurring"] if isinstance(price.get("recurring"), dict) else price
    interval = rec.get("interval")
    if interval not in _MONTHS:
        raise Rejected(
            f"price {price.get('id')!r}: recurring interval {interval!r} is not day/week/month/year"
        )
    return interval, int(rec.get("interval_count") or 1), str(rec.get("usage_type") or "licensed")


def monthly_amount(amount: Decimal, interval: str, count: int) -> Decimal:
    """An amount charged every ``count`` ``interval``s, per month."""
    return amount / (_MONTHS[interval] * count)


def subscription_mrr(sub: dict[str, Any], seat_products: Sequence[str] = ()) -> tuple[Decimal, int]:
    """(MRR, seats): each licensed item's price x quantity normalised to a month, discounts applied; seats
    are the quantities of the seat products (all licensed items when none are named). Metered items
    count no MRR (their amount is known only per invoice)."""
    items = get_path(sub, "items.data", [])
    if not isinstance(items, list) or not items:
        raise Rejected("subscription has no items")
    mrr = Decimal(0)
    seats = 0
    period: tuple[str, int] | None = None
    for item in items:
        price = _price(item)
        interval, count, usage = _recurring(price)
        if usage == "metered":
            continue
        quantity = int(item.get("quantity") or 0)
        unit = price.get("unit_amount_decimal") or price.get("unit_amount", price.get("amount"))
        if unit is None:
            raise Rejected(
                f"price {price.get('id')!r} ({price.get('billing_scheme')}) has no unit amount: its MRR "
                "cannot be computed from the event"
            )
        mrr += monthly_amount(_units(unit, price.get("currency")) * quantity, interval, count)
        if (
            not seat_products
            or price.get("product") in seat_products
            or price.get("lookup_key") in seat_products
        ):
            seats += quantity
        period = period or (interval, count)
    for discount in _discounts(sub):
        coupon = discount.get("coupon") or get_path(discount, "source.coupon")
        if not isinstance(coupon, dict):
            continue  # an unexpanded id: nothing to apply
        if coupon.get("percent_off"):
            mrr *= 1 - Decimal(str(coupon["percent_off"])) / 100
        elif coupon.get("amount_off") and period:
            off = _units(coupon["amount_off"], coupon.get("currency") or sub.get("currency"))
            mrr -= monthly_amount(off, *period)  # once per invoice, i.e. per billing period
    return max(mrr, Decimal(0)).quantize(_CENT), seats


def _discounts(sub: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(sub.get("discount"), dict):
        found.append(sub["discount"])
    for d in sub.get("discounts") or []:
        if isinstance(d, dict) and d.get("id") not in {f.get("id") for f in found}:
            found.append(d)
    return found


def _renewal(sub: dict[str, Any]) -> date:
    end = sub.get("current_period_end") or get_path(sub, "items.data.0.current_period_end")
    if not isinstance(end, int | float):
        raise Rejected("subscription has no current_period_end")
    return datetime.fromtimestamp(end, UTC).date()


def _plan(sub: dict[str, Any]) -> str:
    price = _price(get_path(sub, "items.data.0", {}))
    for candidate in (price.get("nickname"), price.get("lookup_key"), price.get("product"), price.get("id")):
        if isinstance(candidate, str) and candidate:
            return candidate[:100]
    raise Rejected("subscription's price has no nickname, lookup_key, product or id")


class StripeSource:
    name = "stripe"
    invalid_status = 200  # Stripe retries every other status for three days

    def __init__(self, cfg: StripeConfig, secret: str | None, tolerance_s: float = 300.0) -> None:
        # No secret (``healthmon import events`` parses files, it verifies nothing): verify refuses all.
        self.cfg = cfg
        self._secret = secret
        self.tolerance = int(tolerance_s)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        header = headers.get("Stripe-Signature")
        if not header or not self._secret:
            raise Unauthorized("Stripe-Signature header missing")
        try:
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8", "replace"), header, self._secret, self.tolerance
            )
        except stripe.SignatureVerificationError as exc:
            # The library's message names the problem (no signatures found, timestamp outside the tolerance
            # zone, ...); it never holds the secret.
            raise Unauthorized(f"Stripe-Signature: {exc.user_message or exc}") from None

    def account(self, obj: dict[str, Any]) -> str:
        key = self.cfg.account_metadata_key
        paths = (
            "metadata",
            "subscription_details.metadata",
            "parent.subscription_details.metadata",
            "customer.metadata",
        )
        for path in paths:  # customer.metadata: when the customer comes expanded
            meta = get_path(obj, path)
            if isinstance(meta, dict) and as_id(meta.get(key)):
                return str(meta[key])
        customer = obj.get("customer")
        customer_id = customer.get("id") if isinstance(customer, dict) else as_id(customer)
        if customer_id in self.cfg.customers:
            return self.cfg.customers[customer_id]
        if customer_id and self.cfg.customer_id_fallback:
            return customer_id
        raise Rejected(
            f"no account for Stripe customer {customer_id!r}: metadata key {key!r} is not on the object "
            "(set it on the subscription), nor is the customer in the configured map"
        )

    def parse(self, headers: Mapping[str, str], body: bytes, now: float) -> Parsed:
        evt = load_object(body)
        out = Parsed()
        kind = evt.get("type")
        if kind not in HANDLED:
            out.ignored += 1
            return out
        obj = get_path(evt, "data.object")
        event_id, created = as_id(evt.get("id")), evt.get("created")
        if not isinstance(obj, dict) or event_id is None or not isinstance(created, int | float):
            raise Rejected("not a Stripe event: id, created and data.object are required")
        base = {
            "event_id": event_id,
            "account_id": self.account(obj),
            "occurred_at": datetime.fromtimestamp(created, UTC).isoformat(),
        }
        if kind == "customer.subscription.deleted":
            details: dict[str, Any] = obj.get("cancellation_details") or {}
            reason = details.get("feedback") or details.get("reason")
            out.events.append(to_event({**base, "type": "subscription_canceled", "reason": reason}))
        elif kind.startswith("customer.subscription."):
            if obj.get("status") in _ENDED:
                out.ignored += 1
                return out
            mrr, seats = subscription_mrr(obj, self.cfg.seat_products)
            fields = {"type": "subscription", "mrr": mrr, "plan": _plan(obj), "seats": seats}
            out.events.append(to_event({**base, **fields, "renewal_date": _renewal(obj)}))
        else:
            currency = obj.get("currency")
            paid = kind == "invoice.paid"
            amount = obj.get("amount_paid" if paid else "amount_due")
            if amount is None:
                raise Rejected(f"invoice {obj.get('id')!r} has no {'amount_paid' if paid else 'amount_due'}")
            fields = {
                "type": "invoice_paid" if paid else "payment_failed",
                "invoice_id": as_id(obj.get("id")),
                "amount": _units(amount, currency),
            }
            out.events.append(to_event({**base, **fields}))
        return out
