"""Actions of the demo domain. Each gets an ActionContext and returns a dict with an ``outcome``
(which picks the response template ``<action>_<outcome>``) and the values its template shows."""

from __future__ import annotations

from typing import Any

from voicebot.dialogue.actions import ActionContext


def lookup_order(ctx: ActionContext) -> dict[str, Any]:
    row = ctx.query_one("SELECT order_id, item, status, amount, eta FROM demo_orders WHERE order_id = ?", (ctx.slots["order_id"],))
    if row is None:
        return {"outcome": "not_found", "order_id": ctx.slots["order_id"]}
    return {"outcome": "found", **row}


def cancel_order(ctx: ActionContext) -> dict[str, Any]:
    order_id = ctx.slots["order_id"]
    row = ctx.query_one("SELECT order_id, item, status, amount FROM demo_orders WHERE order_id = ?", (order_id,))
    if row is None:
        return {"outcome": "not_found", "order_id": order_id}
    if row["status"] != "processing":
        return {"outcome": "not_cancellable", **row}
    ctx.execute("UPDATE demo_orders SET status = 'cancelled' WHERE order_id = ? AND status = 'processing'", (order_id,))
    return {"outcome": "cancelled", **row, "status": "cancelled"}


def troubleshoot_internet(ctx: ActionContext) -> dict[str, Any]:
    return {"outcome": ctx.slots["connection_type"]}


def send_password_reset(ctx: ActionContext) -> dict[str, Any]:
    email = ctx.slots["email"].lower()
    row = ctx.query_one("SELECT email, name FROM demo_accounts WHERE lower(email) = ?", (email,))
    if row is None:
        return {"outcome": "unknown_email", "email": email}
    return {"outcome": "sent", "email": row["email"], "name": row["name"]}
