"""Actions of the demo domain. Each gets an ActionContext and returns a dict with an ``outcome``
(which picks the response template ``<action>_<outcome>``) and the values its template shows."""

from __future__ import annotations

from typing import Any

from voicebot.dialogue.actions import ActionContext
from voicebot.dialogue.contacts import same_email, same_phone


def verify_order_owner(ctx: ActionContext) -> dict[str, Any]:
    """Does the email or phone given belong to the order? One answer for "no such order" and
    "not yours", and nothing about the order in it, so the check cannot be used to probe ids."""
    row = ctx.query_one("SELECT customer_email, customer_phone FROM demo_orders WHERE order_id = ?", (ctx.slots["order_id"],))
    owner = row is not None and (
        same_email(ctx.slots.get("email"), row["customer_email"]) or same_phone(ctx.slots.get("phone"), row["customer_phone"])
    )
    return {"outcome": "verified" if owner else "not_verified"}


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
    """Send the link when the account exists; answer the same either way, so nobody can learn
    from the bot (or its trace) whether an e-mail address has an account here."""
    email = ctx.slots["email"].lower()
    account = ctx.query_one("SELECT email FROM demo_accounts WHERE lower(email) = ?", (email,))
    if account is not None:  # the mailer (not part of the demo) sends what is queued here
        ctx.execute("INSERT INTO demo_password_resets (email) VALUES (?)", (account["email"],))
    return {"outcome": "sent", "email": email}
