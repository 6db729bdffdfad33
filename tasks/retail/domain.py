"""Retail domain: an online shop's customer-service back office.

State (db.json):

- ``users``: user_id -> name {first_name, last_name}, email, phone, address, payment_methods
  (id -> credit_card {brand, last_four} | gift_card {balance} | paypal), orders [order ids];
- ``orders``: order_id -> user_id, status, address, items [{item_id, product_id, name,
  options, price}], payment_history [{transaction_type payment|refund, amount,
  payment_method_id}], fulfillments [{tracking_id, item_ids}], plus fields that the write tools
  add (cancel_reason, items_modified, return_*, exchange_*);
- ``products``: product_id -> name and variants (item_id -> options, price, available);
- ``transfers``: tickets opened by ``transfer_to_human_agents``;
- ``_counters``: the counters behind deterministic new ids (bench.domain.new_id).

Money: prices and balances are stored as numbers with two decimals; every computation is done
in integer cents and converted back, so amounts are exact and replays give identical states.
Every write tool checks all its preconditions before it changes anything.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from bench.domain import ToolError, Toolset, new_id

tools = Toolset()

# --------------------------------------------------------------------------------------------
# argument schemas

USER_ID = {"type": "string", "pattern": "^[a-z]+(_[a-z]+)+_[0-9]{4}$", "description": "A user id, e.g. 'ada_lovelace_4821'."}
ORDER_ID = {"type": "string", "pattern": "^W[0-9]{4}$", "description": "An order id, e.g. 'W1001' (no leading '#')."}
ITEM_ID = {"type": "string", "pattern": "^I[0-9]{4}$", "description": "An item (product variant) id, e.g. 'I1101'."}
ITEM_IDS = {"type": "array", "items": ITEM_ID, "minItems": 1, "maxItems": 10}
PRODUCT_ID = {"type": "string", "pattern": "^P[0-9]{3}$", "description": "A product id, e.g. 'P100'."}
PAYMENT_METHOD_ID = {
    "type": "string",
    "pattern": "^(credit_card|gift_card|paypal)_[0-9]{4}$",
    "description": "A payment method id of the user, e.g. 'credit_card_4821', 'gift_card_4821' or 'paypal_3310'.",
}
ZIP = {"type": "string", "pattern": "^[0-9]{5}$", "description": "A five-digit US zip code."}
ADDRESS = {
    "address1": {"type": "string", "minLength": 1, "description": "Street address, e.g. '55 Market St'."},
    "address2": {"type": "string", "description": "Apartment, suite or unit (may be empty)."},
    "city": {"type": "string", "minLength": 1},
    "state": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "Two-letter state code, e.g. 'CA'."},
    "country": {"type": "string", "minLength": 1, "description": "Country, e.g. 'USA'."},
    "zip": ZIP,
}
CANCEL_REASONS = ["no longer needed", "ordered by mistake"]


# --------------------------------------------------------------------------------------------
# helpers (all deterministic; none of them mutates the state)

def _cents(amount: float | int) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value(rounding=ROUND_HALF_UP))


def _money(cents: int) -> float:
    return cents / 100


def _norm_name(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _user(db: dict, user_id: str) -> dict:
    user = db["users"].get(user_id)
    if user is None:
        raise ToolError(f"user {user_id} not found")
    return user


def _order(db: dict, order_id: str) -> dict:
    order = db["orders"].get(order_id)
    if order is None:
        raise ToolError(f"order {order_id} not found")
    return order


def _require_status(order: dict, status: str, action: str) -> None:
    if order["status"] != status:
        raise ToolError(f"order {order['order_id']} is {order['status']}; only {status} orders can be {action}")


def _payment_method(db: dict, order: dict, payment_method_id: str) -> dict:
    user = _user(db, order["user_id"])
    method = user["payment_methods"].get(payment_method_id)
    if method is None:
        raise ToolError(f"payment method {payment_method_id} is not one of the order owner's payment methods")
    return method


def _variant(db: dict, item_id: str) -> tuple[str, dict]:
    for product_id, product in db["products"].items():
        if item_id in product["variants"]:
            return product_id, product["variants"][item_id]
    raise ToolError(f"item {item_id} not found in the catalogue")


def _check_items_in_order(order: dict, item_ids: list[str]) -> None:
    have = Counter(item["item_id"] for item in order["items"])
    want = Counter(item_ids)
    for item_id, n in sorted(want.items()):
        if have[item_id] < n:
            raise ToolError(f"item {item_id} is not in order {order['order_id']}" if have[item_id] == 0
                            else f"order {order['order_id']} holds only {have[item_id]} of item {item_id}")


def _price_of(order: dict, item_id: str) -> int:
    for item in order["items"]:
        if item["item_id"] == item_id:
            return _cents(item["price"])
    raise ToolError(f"item {item_id} is not in order {order['order_id']}")  # pragma: no cover


def _check_swaps(db: dict, order: dict, item_ids: list[str], new_item_ids: list[str]) -> int:
    """Validate an item-for-item swap; return the price difference in cents (new - old)."""
    if len(item_ids) != len(new_item_ids):
        raise ToolError("item_ids and new_item_ids must have the same length (one new item per item)")
    _check_items_in_order(order, item_ids)
    diff = 0
    for old, new in zip(item_ids, new_item_ids):
        old_product = next(i["product_id"] for i in order["items"] if i["item_id"] == old)
        new_product, variant = _variant(db, new)
        if new_product != old_product:
            raise ToolError(f"item {new} is a different product ({new_product}) than item {old} ({old_product}); "
                            "items can only be swapped for another variant of the same product")
        if new == old:
            raise ToolError(f"new item {new} is the same as the item it replaces")
        if not variant["available"]:
            raise ToolError(f"item {new} is not available")
        diff += _cents(variant["price"]) - _price_of(order, old)
    return diff


def _check_can_pay(method: dict, payment_method_id: str, cents: int) -> None:
    if cents > 0 and method["source"] == "gift_card" and _cents(method["balance"]) < cents:
        raise ToolError(f"gift card {payment_method_id} has a balance of {_money(_cents(method['balance'])):.2f}, "
                        f"not enough to pay {_money(cents):.2f}")


def _settle(order: dict, method: dict, payment_method_id: str, cents: int) -> None:
    """Charge (cents > 0) or refund (cents < 0) a payment method and record it on the order.
    Callers have already checked that a gift card can pay."""
    if cents == 0:
        return
    kind = "payment" if cents > 0 else "refund"
    order["payment_history"].append({"transaction_type": kind, "amount": _money(abs(cents)), "payment_method_id": payment_method_id})
    if method["source"] == "gift_card":
        method["balance"] = _money(_cents(method["balance"]) - cents)


def _net_paid(order: dict) -> dict[str, int]:
    """Net amount paid per payment method, in cents, in the order of first use."""
    net: dict[str, int] = {}
    for tx in order["payment_history"]:
        sign = 1 if tx["transaction_type"] == "payment" else -1
        net[tx["payment_method_id"]] = net.get(tx["payment_method_id"], 0) + sign * _cents(tx["amount"])
    return net


def _original_payment_method(order: dict) -> str:
    for tx in order["payment_history"]:
        if tx["transaction_type"] == "payment":
            return tx["payment_method_id"]
    raise ToolError(f"order {order['order_id']} has no payment")  # pragma: no cover


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict:
    return {"address1": address1.strip(), "address2": address2.strip(), "city": city.strip(),
            "state": state.strip(), "country": country.strip(), "zip": zip.strip()}


# --------------------------------------------------------------------------------------------
# read-only tools

@tools.tool(read_only=True, params={"email": {"type": "string", "minLength": 3, "description": "The user's email address."}})
def find_user_id_by_email(db, email):
    """Find a user's id from their email address (case-insensitive). Use it to authenticate the user."""
    wanted = email.strip().lower()
    for user_id, user in db["users"].items():
        if user["email"].lower() == wanted:
            return user_id
    raise ToolError(f"no user with email {email}")


@tools.tool(read_only=True, params={
    "first_name": {"type": "string", "minLength": 1},
    "last_name": {"type": "string", "minLength": 1},
    "zip": ZIP,
})
def find_user_id_by_name_zip(db, first_name, last_name, zip):
    """Find a user's id from their first name, last name and the zip code of their address. Use it to
    authenticate a user who cannot give their email. Names match ignoring case and punctuation."""
    first, last = _norm_name(first_name), _norm_name(last_name)
    for user_id, user in db["users"].items():
        name = user["name"]
        if _norm_name(name["first_name"]) == first and _norm_name(name["last_name"]) == last and user["address"]["zip"] == zip.strip():
            return user_id
    raise ToolError(f"no user named {first_name} {last_name} with zip code {zip}")


@tools.tool(read_only=True, params={"user_id": USER_ID})
def get_user_details(db, user_id):
    """Get a user's profile: name, email, phone, default address, payment methods (with gift card
    balances) and the ids of their orders."""
    return _user(db, user_id)


@tools.tool(read_only=True, params={"order_id": ORDER_ID})
def get_order_details(db, order_id):
    """Get an order: its owner (user_id), status, shipping address, items (item id, product id,
    options, price), payment history and fulfilments (tracking numbers)."""
    return _order(db, order_id)


@tools.tool(read_only=True, params={"product_id": PRODUCT_ID})
def get_product_details(db, product_id):
    """Get a product and all its variants: item id, options, price, and whether it is available."""
    product = db["products"].get(product_id)
    if product is None:
        raise ToolError(f"product {product_id} not found")
    return product


@tools.tool(read_only=True)
def list_all_product_types(db):
    """List every product type the shop sells, as a map from product name to product id."""
    return {product["name"]: product_id for product_id, product in sorted(db["products"].items())}


@tools.tool(read_only=True, params={"expression": {
    "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[0-9+\\-*/(). ]+$",
    "description": "An arithmetic expression with numbers, + - * / and parentheses, e.g. '(19.99 + 24.95) * 2'.",
}})
def calculate(db, expression):
    """Evaluate an arithmetic expression exactly and return the result rounded to 2 decimals."""
    value = _Arithmetic(expression).parse()
    rounded = Decimal(value.numerator) / Decimal(value.denominator)
    return float(rounded.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class _Arithmetic:
    """A tiny recursive-descent parser for + - * / and parentheses over exact fractions."""

    _TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(.))")

    def __init__(self, text: str):
        self.tokens: list[tuple[str, str]] = []
        for number, op in self._TOKEN.findall(text):
            if number:
                self.tokens.append(("num", number))
            elif op.strip():
                self.tokens.append(("op", op))
        self.pos = 0

    def parse(self) -> Fraction:
        if not self.tokens:
            raise ToolError("empty expression")
        value = self._sum()
        if self.pos != len(self.tokens):
            raise ToolError(f"unexpected {self.tokens[self.pos][1]!r} in expression")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op" else None

    def _sum(self) -> Fraction:
        value = self._product()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            rhs = self._product()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _product(self) -> Fraction:
        value = self._unary()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            rhs = self._unary()
            if op == "/" and rhs == 0:
                raise ToolError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def _unary(self) -> Fraction:
        if self._peek() in ("+", "-"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            value = self._unary()
            return -value if op == "-" else value
        return self._atom()

    def _atom(self) -> Fraction:
        if self.pos >= len(self.tokens):
            raise ToolError("incomplete expression")
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "num":
            return Fraction(Decimal(text))
        if text == "(":
            if self.pos > 60:
                raise ToolError("expression nested too deeply")
            value = self._sum()
            if self._peek() != ")":
                raise ToolError("missing ')' in expression")
            self.pos += 1
            return value
        raise ToolError(f"unexpected {text!r} in expression")


# --------------------------------------------------------------------------------------------
# write tools

@tools.tool(read_only=False, params={
    "order_id": ORDER_ID,
    "reason": {"type": "string", "enum": CANCEL_REASONS, "description": "Why the user cancels."},
})
def cancel_pending_order(db, order_id, reason):
    """Cancel a pending order. The reason must be 'no longer needed' or 'ordered by mistake'. Everything
    paid is refunded to the payment methods it came from (gift cards are credited at once). Returns
    the updated order."""
    order = _order(db, order_id)
    _require_status(order, "pending", "cancelled")
    user = _user(db, order["user_id"])
    refunds = [(pm, cents) for pm, cents in _net_paid(order).items() if cents > 0]
    for pm, _ in refunds:
        if pm not in user["payment_methods"]:  # pragma: no cover - data invariant
            raise ToolError(f"payment method {pm} of order {order_id} no longer exists")
    # all checks passed: mutate
    for pm, cents in refunds:
        _settle(order, user["payment_methods"][pm], pm, -cents)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    return order


@tools.tool(read_only=False, params={
    "order_id": ORDER_ID,
    "item_ids": {**ITEM_IDS, "description": "The items of the order to replace (repeat an id to replace several identical items)."},
    "new_item_ids": {**ITEM_IDS, "description": "The new items, position by position: each must be an available variant of the same product."},
    "payment_method_id": {**PAYMENT_METHOD_ID, "description": "Pays a price increase, or receives a price decrease."},
})
def modify_pending_order_items(db, order_id, item_ids, new_item_ids, payment_method_id):
    """Swap items of a pending order for other available variants of the same products (e.g. another
    size or color). An order's items can be modified only once, so give every swap in one call.
    The price difference is charged to, or refunded to, the given payment method; a gift card must
    cover a charge. Returns the updated order."""
    order = _order(db, order_id)
    _require_status(order, "pending", "modified")
    if order.get("items_modified"):
        raise ToolError(f"the items of order {order_id} were already modified once; they cannot be modified again")
    method = _payment_method(db, order, payment_method_id)
    diff = _check_swaps(db, order, item_ids, new_item_ids)
    _check_can_pay(method, payment_method_id, diff)
    # all checks passed: mutate
    pending = list(zip(item_ids, new_item_ids))
    for item in order["items"]:
        for k, (old, new) in enumerate(pending):
            if item["item_id"] == old:
                _, variant = _variant(db, new)
                item["item_id"] = new
                item["options"] = dict(variant["options"])
                item["price"] = variant["price"]
                del pending[k]
                break
    _settle(order, method, payment_method_id, diff)
    order["items_modified"] = True
    return order


@tools.tool(read_only=False, params={"order_id": ORDER_ID, **ADDRESS})
def modify_pending_order_address(db, order_id, address1, address2, city, state, country, zip):
    """Change the shipping address of a pending order. Returns the updated order."""
    order = _order(db, order_id)
    _require_status(order, "pending", "modified")
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


@tools.tool(read_only=False, params={"order_id": ORDER_ID, "payment_method_id": PAYMENT_METHOD_ID})
def modify_pending_order_payment(db, order_id, payment_method_id):
    """Pay a pending order with another of the user's payment methods: the new method is charged the
    order's total and the old one refunded. A gift card must cover the whole total. Only possible
    while the order has a single payment. Returns the updated order."""
    order = _order(db, order_id)
    _require_status(order, "pending", "modified")
    if len(order["payment_history"]) != 1:
        raise ToolError(f"order {order_id} has more than one transaction; its payment method cannot be changed")
    old = order["payment_history"][0]
    if old["payment_method_id"] == payment_method_id:
        raise ToolError(f"order {order_id} is already paid with {payment_method_id}")
    new_method = _payment_method(db, order, payment_method_id)
    old_method = _payment_method(db, order, old["payment_method_id"])
    total = _cents(old["amount"])
    _check_can_pay(new_method, payment_method_id, total)
    # all checks passed: mutate
    _settle(order, new_method, payment_method_id, total)
    _settle(order, old_method, old["payment_method_id"], -total)
    return order


@tools.tool(read_only=False, params={"user_id": USER_ID, **ADDRESS})
def modify_user_address(db, user_id, address1, address2, city, state, country, zip):
    """Change a user's default address (it does not change the address of existing orders).
    Returns the updated user."""
    user = _user(db, user_id)
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


@tools.tool(read_only=False, params={
    "order_id": ORDER_ID,
    "item_ids": {**ITEM_IDS, "description": "The delivered items to return."},
    "payment_method_id": {**PAYMENT_METHOD_ID, "description": "Receives the refund: the order's original payment method or a gift card of the user."},
})
def return_delivered_order_items(db, order_id, item_ids, payment_method_id):
    """Return items of a delivered order. The refund (the price of the returned items) goes to the
    order's original payment method or to one of the user's gift cards. An order can have only one
    return or exchange, so give every item in one call. Returns the refund and the updated order."""
    order = _order(db, order_id)
    _require_status(order, "delivered", "returned")
    _check_items_in_order(order, item_ids)
    method = _payment_method(db, order, payment_method_id)
    original = _original_payment_method(order)
    if payment_method_id != original and method["source"] != "gift_card":
        raise ToolError(f"a refund must go to the original payment method ({original}) or a gift card, not {payment_method_id}")
    refund = sum(_price_of(order, item_id) for item_id in item_ids)
    # all checks passed: mutate
    _settle(order, method, payment_method_id, -refund)
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return {"refund_amount": _money(refund), "refund_payment_method_id": payment_method_id, "order": order}


@tools.tool(read_only=False, params={
    "order_id": ORDER_ID,
    "item_ids": {**ITEM_IDS, "description": "The delivered items to exchange."},
    "new_item_ids": {**ITEM_IDS, "description": "The replacements, position by position: each an available variant of the same product."},
    "payment_method_id": {**PAYMENT_METHOD_ID, "description": "Pays a price increase, or receives a price decrease."},
})
def exchange_delivered_order_items(db, order_id, item_ids, new_item_ids, payment_method_id):
    """Exchange items of a delivered order for other available variants of the same products. The
    price difference is charged to, or refunded to, the given payment method; a gift card must
    cover a charge. An order can have only one return or exchange, so give every item in one call.
    Returns the price difference and the updated order."""
    order = _order(db, order_id)
    _require_status(order, "delivered", "exchanged")
    method = _payment_method(db, order, payment_method_id)
    diff = _check_swaps(db, order, item_ids, new_item_ids)
    _check_can_pay(method, payment_method_id, diff)
    # all checks passed: mutate
    _settle(order, method, payment_method_id, diff)
    order["status"] = "exchange requested"
    pairs = sorted(zip(item_ids, new_item_ids))
    order["exchange_items"] = [old for old, _ in pairs]
    order["exchange_new_items"] = [new for _, new in pairs]
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = _money(diff)
    return {"price_difference": _money(diff), "order": order}


@tools.tool(read_only=False, params={"summary": {
    "type": "string", "minLength": 1, "maxLength": 2000,
    "description": "The user's id, the order concerned and what the user needs.",
}})
def transfer_to_human_agents(db, summary):
    """Hand the conversation to a human agent, with a summary of the user's issue. Use it only when
    the user asks for a human or the request cannot be handled with your tools and policy."""
    ticket_id = new_id(db, "transfer", "T")
    db["transfers"].append({"ticket_id": ticket_id, "summary": summary.strip()})
    return {"ticket_id": ticket_id, "message": "Transfer successful: a human agent will take over."}
