"""PII redaction: contact and payment details go, the facts of a support answer stay."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicebot.privacy import redact, redact_many
from voicebot.privacy.redaction import iban_valid, luhn_valid

VALID_CARDS = ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5555 5555 5555 4444", "3782 822463 10005"]
INVALID_CARDS = ["4111 1111 1111 1112", "5555-5555-5555-4445", "4111111111111121"]
VALID_IBANS = ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB29 NWBK 6016 1331 9268 19",
               "FR14 2004 1010 0505 0001 3M02 606", "ES91 2100 0418 4502 0005 1332", "NL91ABNA0417164300"]
INVALID_IBANS = ["DE89 3704 0044 0532 0130 01", "DE88370400440532013000", "GB29 NWBK 6016 1331 9268 18"]


def test_checksums() -> None:
    assert all(luhn_valid(re.sub(r"\D", "", card)) for card in VALID_CARDS)
    assert not any(luhn_valid(re.sub(r"\D", "", card)) for card in INVALID_CARDS)
    assert all(iban_valid(iban.replace(" ", "")) for iban in VALID_IBANS)
    assert not any(iban_valid(iban.replace(" ", "")) for iban in INVALID_IBANS)


@pytest.mark.parametrize("card", VALID_CARDS)
def test_luhn_valid_cards_are_redacted(card: str) -> None:
    text, findings = redact(f"my card is {card}, expiry 12/27")
    assert text == "my card is <CARD>, expiry 12/27"
    assert [(f.kind, f.value) for f in findings] == [("card", card)]


@pytest.mark.parametrize("number", INVALID_CARDS)
def test_luhn_invalid_numbers_are_left_alone(number: str) -> None:
    assert redact(f"reference {number} please") == (f"reference {number} please", [])


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_mod97_valid_ibans_are_redacted(iban: str) -> None:
    text, findings = redact(f"Refund to {iban} please")
    assert text == "Refund to <IBAN> please"
    assert [f.kind for f in findings] == ["iban"]


@pytest.mark.parametrize("iban", INVALID_IBANS)
def test_mod97_invalid_ibans_are_left_whole(iban: str) -> None:
    # Neither an IBAN nor taken apart into a "phone number".
    assert redact(f"Refund to {iban} please") == (f"Refund to {iban} please", [])


@pytest.mark.parametrize(("text", "expected"), [
    ("Write to maria.garcia@example.com.", "Write to <EMAIL>."),
    ("call me on +49 151 2345 6789 or 030 12345678", "call me on <PHONE> or <PHONE>"),
    ("phone (030) 1234-5678, thanks", "phone <PHONE>, thanks"),
    ("Appelez-moi au 01 23 45 67 89 ou 01.23.45.67.89, commande 54321", "Appelez-moi au <PHONE> ou <PHONE>, commande 54321"),
    ("Mi número es +34 612 345 678 y mi pedido 67890", "Mi número es <PHONE> y mi pedido 67890"),
    ("Meine IBAN ist DE89 3704 0044 0532 0130 00, Bestellung 24680 vom 03.12.2026 über 89,90 €",
     "Meine IBAN ist <IBAN>, Bestellung 24680 vom 03.12.2026 über 89,90 €"),
    ("我的手机号是13812345678，订单号12345，金额89.90元，日期2026年12月3日，邮箱是maria.garcia@example.com谢谢",
     "我的手机号是<PHONE>，订单号12345，金额89.90元，日期2026年12月3日，邮箱是<EMAIL>谢谢"),
    ("卡号4111111111111111，IBAN:DE89370400440532013000。电话+86 138 1234 5678。",
     "卡号<CARD>，IBAN:<IBAN>。电话<PHONE>。"),
    ("de89 3704 0044 0532 0130 00 bitte, und GB29 NWBK 6016 1331 9268 19 OK", "<IBAN> bitte, und <IBAN> OK"),
])
def test_redaction_in_several_languages(text: str, expected: str) -> None:
    assert redact(text)[0] == expected


@pytest.mark.parametrize("text", [
    "Order 12345 (Redmi Note 13) is on its way. Expected delivery: 2026-12-03.",
    "orders 12345 54321 and 67890",
    "Refunds of 89.90 or 1.299,00 € or 1,299.00 USD within 5 business days",
    "Dates: 03.12.2026, 12/03/2026, 2026/12/03, 2026-12-01 2026-12-03, at 10:30",
    "退货政策：30天内可退货，订单24680将于2026-12-01送达，金额1299.00元",
    "Su pedido 11111 llegará el 01/12/2026. Total: 89,90 €",
    "Model A320 with 5G, 20GB and Wi-Fi 6; step 1. restart, step 2. reset",
])
def test_facts_of_support_answers_are_untouched(text: str) -> None:
    assert redact(text) == (text, [])


def test_extra_patterns_win_and_name_their_placeholder() -> None:
    text, findings = redact("customer CN-12345678 calls from 0151 23456789", {"customer_id": r"CN-\d{8}"})
    assert text == "customer <CUSTOMER_ID> calls from <PHONE>"
    assert [f.kind for f in findings] == ["customer_id", "phone"]
    with pytest.raises(ValueError):
        redact("x", {"not a name": "x"})


def test_the_same_value_gets_the_same_placeholder_in_related_texts() -> None:
    # The target alone gives no hint that 0151 2345678 is a phone number (it is not even one
    # run of digits there): the input names it, so it goes in both.
    (prompt, answer), findings = redact_many(["facts: phone=0151 2345678 | user: call 0151 2345678", "We will call 0151 2345678 today."])
    assert prompt == "facts: phone=<PHONE> | user: call <PHONE>" and answer == "We will call <PHONE> today."
    assert [len(f) for f in findings] == [2, 1]
    (_, answer), _ = redact_many(["facts: account=X-42-YZ", "Account X-42-YZ is locked."], {"account": r"X-\d+-[A-Z]+"})
    assert answer == "Account <ACCOUNT> is locked."


def test_findings_do_not_show_the_value() -> None:
    _, findings = redact("mail maria.garcia@example.com")
    assert "maria" not in repr(findings) and findings[0].value == "maria.garcia@example.com"
    assert findings[0].placeholder == "<EMAIL>"


@settings(max_examples=200, deadline=None)
@given(
    order=st.integers(10000, 99999),
    day=st.integers(1, 28), month=st.integers(1, 12), year=st.integers(2000, 2039),
    euros=st.integers(0, 99999), cents=st.integers(0, 99),
    words=st.sampled_from(["Order", "订单", "Pedido", "Bestellung", "commande"]),
)
def test_order_ids_dates_and_amounts_are_never_touched(order: int, day: int, month: int, year: int, euros: int, cents: int, words: str) -> None:
    for text in (
        f"{words} {order}: {year}-{month:02d}-{day:02d}, {euros}.{cents:02d}",
        f"{words}{order}，{day:02d}.{month:02d}.{year}，{euros},{cents:02d}€",
        f"{words} {order} {day}/{month}/{year} {euros}.{cents:02d}",
    ):
        assert redact(text) == (text, []), text
