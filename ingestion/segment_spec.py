"""The Segment Spec (what the Segment and RudderStack SDKs send to /v1/batch) translated into our
native rows: events as `POST /api/v1/events` takes them, customers as `POST /api/v1/customers`
takes them, and the identity links an identify or alias call asks for. Pure functions, no database:
pipeline.flows.segment_batch_ingest writes the result through the same services as the native API.

Mapping (README "Segment-Spec source"):
- `messageId` is the event id, so a retried batch is a duplicate, not a second copy; an Order
  event with a `products` array becomes one event per product line, with the id
  `<messageId>#<line>` (deterministic, so a retry repeats it too).
- `userId` names the customer, else `anonymousId` the visitor not yet identified.
- The e-commerce events of the spec become our event types (ECOMMERCE_EVENTS) with item, price,
  quantity and revenue; every other `track`, and `page` and `screen` calls, become `click` events
  with the name and properties in the context.
- `identify` traits (top-level, or in `context.traits` as RudderStack sends them) become a customer upsert (the visitor's, with only an `anonymousId`); an
  identify that carries both ids, and an `alias`, ask for an identity merge.
- The message's own `context` (IP address, user agent, library) is not kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

MESSAGE_MAX_BYTES = 32 * 1024  # the Spec's limit per message
BATCH_MAX_BYTES = 500 * 1024  # and per batch request (uncompressed)
MESSAGE_TYPES = ("track", "identify", "page", "screen", "alias", "group")

# Segment e-commerce spec v2 event names → our event types.
ECOMMERCE_EVENTS = {
    "Product Viewed": "view",
    "Product Clicked": "click",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Added to Wishlist": "click",
    "Products Searched": "search",
    "Product Shared": "share",
    "Cart Shared": "share",
    "Product Reviewed": "rating",
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Order Cancelled": "cancellation",
}
# Order events carry a `products` array: one event per line.
ORDER_EVENTS = ("Order Completed", "Order Refunded", "Order Cancelled")
# Other events are kept as interactions with their name and properties in the context.
OTHER_EVENT_TYPE = "click"

# Segment trait → our customer field (the rest go to the customer's attributes).
TRAIT_FIELDS = {"email": "email", "name": "name", "phone": "phone", "age": "age", "region": "region",
                "consent_profiling": "consent_profiling", "consent_marketing": "consent_marketing",
                "is_loyalty_member": "is_loyalty_member"}
GENDERS = {"f": "female", "female": "female", "woman": "female", "m": "male", "male": "male", "man": "male",
           "other": "other", "non-binary": "other", "nonbinary": "other"}

# Native field → where it came from in the message, to name it in a 400.
NATIVE_TO_SPEC = {
    "event_id": "messageId", "customer_id": "userId", "anonymous_id": "anonymousId", "timestamp": "timestamp",
    "item_id": "properties.product_id", "quantity": "properties.quantity", "value": "properties.price",
    "currency": "properties.currency", "rating": "properties.rating", "order_id": "properties.order_id",
    "context": "properties", "event_type": "event", "session_id": "context", "channel": "context",
    "device": "context",
}
CUSTOMER_TO_SPEC = {"external_id": "userId", "signup_date": "traits.createdAt", "age_band": "traits",
                    "attributes": "traits"}


@dataclass
class Translation:
    """What a batch asks for, in native shapes; `errors` lists bad messages by index."""

    events: list[dict] = field(default_factory=list)
    event_origins: list[int] = field(default_factory=list)  # message index of each event
    customers: list[dict] = field(default_factory=list)  # customer rows of `userId`s
    customer_origins: list[int] = field(default_factory=list)
    visitors: list[dict] = field(default_factory=list)  # customer rows of anonymous visitors (traits before sign-up)
    visitor_origins: list[int] = field(default_factory=list)
    identities: list[tuple[str, str]] = field(default_factory=list)  # (anonymousId, userId) from identify
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (previousId, userId)
    ignored: int = 0  # messages with nothing for us (group calls)
    errors: list[dict] = field(default_factory=list)


class MessageInvalid(ValueError):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def message_size(message) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def _text(value) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def _identity(message: dict) -> tuple[str | None, str | None]:
    errors = {}
    ids = {}
    for name in ("userId", "anonymousId"):
        value = message.get(name)
        if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool):
            errors[name] = ["must be a string"]
        else:
            ids[name] = _text(value)
    if errors:
        raise MessageInvalid(errors)
    return ids["userId"], ids["anonymousId"]


def _object(message: dict, name: str) -> dict:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageInvalid({name: ["must be a JSON object"]})
    return value


def _when(message: dict, received_at: datetime):
    """The Spec's `timestamp` (when it happened), else the client's `originalTimestamp`, else now."""
    for name in ("timestamp", "originalTimestamp"):
        if message.get(name) not in (None, ""):
            return message[name]
    return received_at.isoformat()


def _item(properties: dict):
    return _text(properties.get("product_id")) or _text(properties.get("sku")) or _text(properties.get("id"))


def _line_value(properties: dict):
    """price × quantity of one product line (the store keeps a line's total)."""
    price = properties.get("price")
    if price is None or isinstance(price, bool):
        return None
    try:
        return round(float(price) * float(properties.get("quantity") or 1), 2)
    except (TypeError, ValueError):
        return price  # cleaning names it: "not a number"


def _order_value(properties: dict):
    for name in ("revenue", "total", "value"):
        if properties.get(name) is not None:
            return properties[name]
    return None


def _base_event(message: dict, customer: str | None, anonymous: str | None, when) -> dict:
    row = {"timestamp": when}
    if customer:
        row["customer_id"] = customer
    elif anonymous:
        row["anonymous_id"] = anonymous
    return row


def track_events(message: dict, *, customer: str | None, anonymous: str | None, received_at: datetime) -> list[dict]:
    """The native event rows of one track, page or screen message."""
    kind = message["type"]
    properties = _object(message, "properties")
    when = _when(message, received_at)
    message_id = _text(message.get("messageId"))
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise MessageInvalid({"event": ["required for track calls"]})
        name = name.strip()
    else:
        name = _text(message.get("name")) or ""
    base = _base_event(message, customer, anonymous, when)
    if message_id:
        base["event_id"] = message_id
    event_type = ECOMMERCE_EVENTS.get(name) if kind == "track" else None
    if event_type is None:
        return [{**base, "event_type": OTHER_EVENT_TYPE,
                 "context": {"segment_type": kind, "event": name, "properties": properties}}]

    currency = _text(properties.get("currency"))
    if name in ORDER_EVENTS:
        order_id = _text(properties.get("order_id")) or _text(properties.get("checkout_id"))
        products = properties.get("products")
        if products is not None and not isinstance(products, list):
            raise MessageInvalid({"properties.products": ["must be a list"]})
        order = {**base, "event_type": event_type}
        if order_id:
            order["order_id"] = order_id[:64]
        if currency:
            order["currency"] = currency
        if not products:
            value = _order_value(properties)
            if value is not None:
                order["value"] = value
            order["context"] = {"event": name, "properties": properties}
            return [order]
        rows = []
        for line, product in enumerate(products):
            if not isinstance(product, dict):
                raise MessageInvalid({f"properties.products[{line}]": ["must be a JSON object"]})
            row = {**order, "item_id": _item(product), "quantity": product.get("quantity"),
                   "value": _line_value(product), "context": {"event": name, "line": line}}
            if message_id:
                row["event_id"] = f"{message_id}#{line}"
            rows.append({k: v for k, v in row.items() if v is not None})
        return rows

    row = {**base, "event_type": event_type, "item_id": _item(properties), "quantity": properties.get("quantity"),
           "currency": currency, "context": {"event": name, "properties": properties}}
    if event_type in ("add_to_cart", "remove_from_cart"):
        row["value"] = _line_value(properties)
    elif event_type == "rating":
        row["rating"] = properties.get("rating")
    elif event_type == "search":
        row["context"] = {"event": name, "query": properties.get("query"), "properties": properties}
    return [{k: v for k, v in row.items() if v is not None}]


def traits_customer(traits: dict, *, external_id: str) -> dict:
    """A customer row (ingestion.row_validation.CustomerRow) from identify traits: the known traits
    in their fields, every other trait in `attributes`. Values are checked by the row validator."""
    row: dict = {"external_id": external_id}
    rest = {}
    for name, value in traits.items():
        if name in TRAIT_FIELDS:
            row[TRAIT_FIELDS[name]] = value
        elif name == "gender" and isinstance(value, str) and value.strip().lower() in GENDERS:
            row["gender"] = GENDERS[value.strip().lower()]
        elif name == "createdAt" and isinstance(value, str) and len(value) >= 10:
            row["signup_date"] = value[:10]
        elif name in ("firstName", "lastName"):
            continue
        else:
            rest[name] = value
    if "name" not in row and (traits.get("firstName") or traits.get("lastName")):
        row["name"] = " ".join(str(traits[n]) for n in ("firstName", "lastName") if traits.get(n))
    address = traits.get("address")
    if "region" not in row and isinstance(address, dict):
        region = _text(address.get("state")) or _text(address.get("country"))
        if region:
            row["region"] = region[:64]
    if rest:
        row["attributes"] = rest
    return row


def batch_translate(messages: list, *, received_at: datetime) -> Translation:
    """Every message of a batch in native shapes, or the reasons each bad one is refused."""
    out = Translation()
    for index, message in enumerate(messages):
        try:
            _message_translate(out, index, message, received_at)
        except MessageInvalid as invalid:
            out.errors.append({"index": index, "errors": invalid.errors})
    return out


def _message_translate(out: Translation, index: int, message, received_at: datetime) -> None:
    if not isinstance(message, dict):
        raise MessageInvalid({"message": ["must be a JSON object"]})
    if message_size(message) > MESSAGE_MAX_BYTES:
        raise MessageInvalid({"message": [f"larger than {MESSAGE_MAX_BYTES} bytes"]})
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        raise MessageInvalid({"type": [f"must be one of {', '.join(MESSAGE_TYPES)}"]})
    customer, anonymous = _identity(message)
    if kind == "alias":
        previous = _text(message.get("previousId"))
        problems = {}
        if not previous:
            problems["previousId"] = ["required for alias calls"]
        if not customer:
            problems["userId"] = ["required for alias calls"]
        if problems:
            raise MessageInvalid(problems)
        if previous != customer:
            out.aliases.append((previous, customer))
        return
    if not customer and not anonymous:
        raise MessageInvalid({"userId": ["userId or anonymousId is required"]})
    if kind == "group":
        _object(message, "traits")
        out.ignored += 1
        return
    if kind == "identify":
        # rudder-sdk-python sends identify traits in context.traits only; the Spec allows both
        context_traits = _object(message, "context").get("traits")
        traits = {**(context_traits if isinstance(context_traits, dict) else {}), **_object(message, "traits")}
        if customer:
            out.customers.append(traits_customer(traits, external_id=customer))
            out.customer_origins.append(index)
            if anonymous and anonymous != customer:
                out.identities.append((anonymous, customer))
        elif traits:
            out.visitors.append(traits_customer(traits, external_id=anonymous))
            out.visitor_origins.append(index)
        return
    rows = track_events(message, customer=customer, anonymous=anonymous, received_at=received_at)
    out.events.extend(rows)
    out.event_origins.extend([index] * len(rows))


def errors_by_message(row_errors: list[dict], origins: list[int], names: dict[str, str]) -> list[dict]:
    """Native per-row errors (index = row) as per-message errors (index = message), each field
    named as the message spells it."""
    merged: dict[int, dict[str, list[str]]] = {}
    for error in row_errors:
        message = merged.setdefault(origins[error["index"]], {})
        for name, reasons in error["errors"].items():
            message.setdefault(names.get(name, name), []).extend(str(r) for r in reasons)
    return [{"index": i, "errors": merged[i]} for i in sorted(merged)]
