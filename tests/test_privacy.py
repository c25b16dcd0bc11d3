"""Privacy (issue #5): redaction of stored transcripts, traces and logs; encryption at rest with key
rotation; retention and erasure with an audit log that keeps no data. Real SQLite files are read
byte by byte to check that what must not be stored is not there; the storage tests run on SQLite and
on a real PostgreSQL (``storage_backend``), whose rows are read with psycopg and whose data files and
WAL are read byte by byte too."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.conftest import fresh_data_dir
from tests.storage_backends import BackendUnderTest
from voicebot.cli import main as cli_main
from voicebot.config import PrivacySettings, Settings
from voicebot.core.events import BotMessage, BotTextChunk, ErrorEvent
from voicebot.core.runtime import BotRuntime
from voicebot.core.session import DialogueState, SlotValue
from voicebot.learning.export import ExportOptions, export_dataset
from voicebot.pipelines.generation.seq2seq import GenerationResult
from voicebot.privacy.audit import subject_ref
from voicebot.privacy.crypto import EncryptionKeyError
from voicebot.privacy.logs import LogRedaction
from voicebot.privacy.restore import PlaceholderStream
from voicebot.privacy.sealing import Sealer
from voicebot.storage import Storage, StoredTurn

EMAIL = "maria.garcia@example.com"
PHONE = "+49 151 2345 6789"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
PII = (EMAIL, PHONE, CARD, IBAN, "maria.garcia", "2345 6789", "4111 1111", "3704 0044")
KEY_A, KEY_B, KEY_C = (Fernet.generate_key().decode() for _ in range(3))


def sealer(*keys: str, redact: bool = True, encrypt: bool = True, patterns: dict[str, dict[str, str]] | None = None) -> Sealer:
    privacy = PrivacySettings(encryption_keys=list(keys), redact_stored=redact, encrypt_at_rest=encrypt, extra_patterns=patterns or {})
    return Sealer.from_settings(privacy, Path("/nonexistent"), create_key=False)


def state_with_email(marker: str = "") -> DialogueState:
    state = DialogueState(language="en", active_flow="password_reset")
    state.slots["email"] = SlotValue(EMAIL, 1.0, 1, f"{marker} my email is {EMAIL}")
    return state


def pii_turn(conversation_id: str, index: int = 1, marker: str = "") -> StoredTurn:
    user = f"{marker} my email is {EMAIL}, call {PHONE}, card {CARD}, IBAN {IBAN}, order 12345 of 2026-12-03 for 89.90"
    bot = f"I've sent a password reset link to {EMAIL}. Order 12345 is on its way."
    trace = {
        "entities": [{"slot": "email", "value": EMAIL}, {"slot": "phone", "value": "+4915123456789"}],
        "state": {"slots": {"email": {"value": EMAIL, "source_text": user}}},
        "response": {"path": "action", "prompt_fields": {"language": "en", "intent": "login_problem", "user": user, "facts": {"email": EMAIL},
                                                         "knowledge": None, "template": bot, "history": []}},
        "intent": {"name": "login_problem", "confidence": 0.93},
    }
    return StoredTurn(conversation_id, index, f"t{index}", user, bot, "en", "login_problem", "action", trace)


async def store_conversation(storage: Storage, conversation_id: str, user_id: str | None, marker: str = "", tenant: str = "default") -> None:
    await storage.create_conversation(conversation_id, f"token-{conversation_id}", "websocket", "en", user_id, state_with_email(marker),
                                      tenant=tenant)
    await storage.save_turn(pii_turn(conversation_id, marker=marker), state_with_email(marker), "active")


# -- redaction and encryption of what is stored ---------------------------------------------------

async def test_a_turn_is_stored_masked_and_encrypted_but_the_state_keeps_real_values(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(sealer(KEY_A))
    try:
        await store_conversation(storage, "c1", "customer-1", marker="zebra-crossing")
        await storage.rate_turn("c1", turn_index=1, rating=-1, comment=f"write to {EMAIL} instead")
        await storage.record_interruption("c1", "t1", f"I've sent a password reset link to {EMAIL}")

        # On disk (PostgreSQL: data files and WAL): not one customer detail, and no conversation text at all.
        data = storage_backend.raw_bytes()
        assert not [text for text in (*PII, "zebra-crossing", "password reset") if text.encode() in data]
        for row in storage_backend.raw_rows("SELECT user_text, bot_text, trace, feedback, delivered_text FROM turns"):
            assert all(value.startswith("enc1:") for value in row)
        assert storage_backend.raw_rows("SELECT state FROM dialogue_state")[0][0].startswith("enc1:")

        # Decrypted: masked transcripts and traces, the facts of the answer untouched.
        turn = (await storage.get_conversation("c1"))["turns"][0]  # type: ignore[index]
        assert turn["user_text"] == ("zebra-crossing my email is <EMAIL>, call <PHONE>, card <CARD>, IBAN <IBAN>, "
                                     "order 12345 of 2026-12-03 for 89.90")
        assert turn["bot_text"] == "I've sent a password reset link to <EMAIL>. Order 12345 is on its way."
        assert (turn["feedback"], turn["delivered_text"]) == ("write to <EMAIL> instead", "I've sent a password reset link to <EMAIL>")
        stored_trace = json.dumps(turn["trace"])
        assert not [text for text in PII if text in stored_trace]
        # The extractor's normalised phone (+digits) is masked too.
        assert turn["trace"]["entities"] == [{"slot": "email", "value": "<EMAIL>"}, {"slot": "phone", "value": "<PHONE>"}]
        assert turn["trace"]["privacy"] == {"redacted": {"card": 1, "email": 1, "iban": 1, "phone": 2}}

        # The dialogue state is encrypted, not redacted: a resumed conversation needs the address.
        found = await storage.resume("token-c1")
        assert found is not None and found[1].slot_value("email") == EMAIL
    finally:
        await storage.close()


async def test_locale_patterns_apply_to_their_language(storage_backend: BackendUnderTest) -> None:
    patterns = {"de": {"steuer_id": r"\bSTID-\d{6}\b"}, "*": {"customer_no": r"\bCN-[A-Z]{4}\b"}}
    storage = await storage_backend.open(sealer(KEY_A, patterns=patterns))
    try:
        for conversation_id, language in (("de1", "de-AT"), ("en1", "en")):
            await storage.create_conversation(conversation_id, f"t-{conversation_id}", "websocket", language, None, DialogueState(language=language))
            turn = StoredTurn(conversation_id, 1, "t1", "STID-123456 und CN-ABCD", "ok", language, None, "template", {})
            await storage.save_turn(turn, DialogueState(language=language), "active")
        german = (await storage.get_conversation("de1"))["turns"][0]["user_text"]  # type: ignore[index]
        english = (await storage.get_conversation("en1"))["turns"][0]["user_text"]  # type: ignore[index]
        assert german == "<STEUER_ID> und <CUSTOMER_NO>"
        assert english == "STID-123456 und <CUSTOMER_NO>"
    finally:
        await storage.close()


async def test_a_database_written_before_encryption_still_reads_and_rotation_encrypts_it(storage_backend: BackendUnderTest) -> None:
    plain = await storage_backend.open(None)  # what an older version wrote: plaintext, unredacted
    await store_conversation(plain, "old", "customer-old")
    await plain.close()
    assert EMAIL.encode() in storage_backend.raw_bytes()

    storage = await storage_backend.open(sealer(KEY_A))
    try:
        conversation = await storage.get_conversation("old")
        assert conversation is not None and EMAIL in conversation["turns"][0]["user_text"]
        counts = await storage.rotate_encryption(actor="test")
        assert counts["encrypted"] >= 4 and counts["reencrypted"] == 0
        rows = storage_backend.raw_rows("SELECT user_text, bot_text, trace FROM turns UNION ALL SELECT state, state, state FROM dialogue_state")
        assert rows and all(value.startswith("enc1:") for row in rows for value in row)
        if storage_backend.wipes_deleted_bytes:  # PostgreSQL keeps the old row versions until VACUUM (docs/storage.md)
            assert EMAIL.encode() not in storage_backend.raw_bytes()
        conversation = await storage.get_conversation("old")
        assert conversation is not None and EMAIL in conversation["turns"][0]["user_text"]  # still reads, now encrypted
    finally:
        await storage.close()


# -- keys: rotation and errors --------------------------------------------------------------------

async def test_key_rotation_keeps_old_data_readable_and_retires_the_old_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str],
                                                                          storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(sealer(KEY_A))
    await store_conversation(storage, "c1", "customer-1")
    await storage.rate_conversation("c1", rating=4, comment="fine")
    await storage.close()

    # New key first, old key second: everything written under A still reads; new writes use B.
    storage = await storage_backend.open(sealer(KEY_B, KEY_A))
    await store_conversation(storage, "c2", "customer-2")
    assert (await storage.get_conversation("c1"))["feedback"] == "fine"  # type: ignore[index]
    await storage.close()

    # B alone cannot read c1 yet: a clear error that names the setting, at open.
    with pytest.raises(EncryptionKeyError, match=r"privacy\.encryption_keys"):
        await storage_backend.open(sealer(KEY_B))

    # voicebot rotate-keys, configured like the server ([B, A] in the environment).
    for name, value in storage_backend.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VOICEBOT_PRIVACY__ENCRYPTION_KEYS", json.dumps([KEY_B, KEY_A]))
    assert await asyncio.to_thread(cli_main, ["rotate-keys", "--data-dir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "re-encrypted" in report and "already under the newest key" in report
    reencrypted = int(report.split("re-encrypted ")[1].split(" ")[0])
    assert reencrypted >= 5  # c1's user text, bot text, trace, state, comment (and its profile)

    # Now B alone reads everything, and A alone reads nothing.
    storage = await storage_backend.open(sealer(KEY_B))
    try:
        for conversation_id in ("c1", "c2"):
            conversation = await storage.get_conversation(conversation_id)
            assert conversation is not None and conversation["turns"][0]["bot_text"].startswith("I've sent a password reset link to <EMAIL>")
            found = await storage.resume(f"token-{conversation_id}")
            assert found is not None and found[1].slot_value("email") == EMAIL
        assert (await storage.get_profile("customer-1")) is not None
        total, audit = await storage.list_audit(None, 10, 0)
        assert audit[0]["action"] == "rotate_keys" and audit[0]["detail"]["reencrypted"] == reencrypted
    finally:
        await storage.close()
    with pytest.raises(EncryptionKeyError):
        await storage_backend.open(sealer(KEY_A))
    # What rotation rewrote is under B in the database itself, not just readable through the backend.
    assert all(row[0].startswith("enc1:") for row in storage_backend.raw_rows("SELECT state FROM dialogue_state"))


async def test_wrong_or_malformed_keys_are_reported_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(sealer(KEY_A))
    await store_conversation(storage, "c1", None)
    await storage.close()
    for name, value in storage_backend.env().items():
        monkeypatch.setenv(name, value)

    # `voicebot serve` with another key refuses before starting, without a traceback.
    monkeypatch.setenv("VOICEBOT_PRIVACY__ENCRYPTION_KEYS", json.dumps([KEY_C]))
    assert await asyncio.to_thread(cli_main, ["serve", "--data-dir", str(tmp_path), "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "cannot be decrypted" in error and "VOICEBOT_PRIVACY__ENCRYPTION_KEYS" in error and "Traceback" not in error

    monkeypatch.setenv("VOICEBOT_PRIVACY__ENCRYPTION_KEYS", json.dumps(["not-a-key"]))
    assert await asyncio.to_thread(cli_main, ["rotate-keys", "--data-dir", str(tmp_path)]) == 2
    assert "key #1 of privacy.encryption_keys is not a Fernet key" in capsys.readouterr().err

    # A key file (newest first, comments allowed) works like the setting.
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# newest first\n{KEY_A}\n")
    monkeypatch.delenv("VOICEBOT_PRIVACY__ENCRYPTION_KEYS")
    monkeypatch.setenv("VOICEBOT_PRIVACY__ENCRYPTION_KEYS_FILE", str(key_file))
    assert await asyncio.to_thread(cli_main, ["rotate-keys", "--data-dir", str(tmp_path)]) == 0


def test_a_generated_key_file_is_private_to_its_owner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = Sealer.from_settings(PrivacySettings(), tmp_path)
    key_file = tmp_path / "encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "next to the data" in caplog.text
    token = first.seal_secret("hello")
    assert Sealer.from_settings(PrivacySettings(), tmp_path).open(token) == "hello"  # the same key, read back


async def test_export_reads_encrypted_conversations_with_the_servers_keys(tmp_path: Path, storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(sealer(KEY_A))
    await store_conversation(storage, "c1", None)
    await storage.close()
    out = tmp_path / "dataset.jsonl"
    exporting = await storage_backend.open(sealer(KEY_A))  # the server's keys
    try:
        report = await export_dataset(exporting, out, ExportOptions())
    finally:
        await exporting.close()
    line = json.loads(out.read_text(encoding="utf-8"))
    assert report.written == 1 and "<EMAIL>" in line["input"] and "<EMAIL>" in line["target"] and EMAIL not in out.read_text()
    assert report.redactions["email"] >= 2
    with pytest.raises(EncryptionKeyError):
        await storage_backend.open(Sealer())  # an export without the keys: refused at open


# -- retention, erasure, audit --------------------------------------------------------------------

async def test_retention_deletes_old_conversations_and_audits_counts_only(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(sealer(KEY_A))
    try:
        for conversation_id in ("old", "live", "recent"):
            await store_conversation(storage, conversation_id, f"user-{conversation_id}")
        # Two of them idle for 100 days.
        storage_backend.execute("UPDATE conversations SET updated_at = updated_at - 100 * 86400 WHERE id IN ('old', 'live')")
        storage_backend.execute("UPDATE user_profiles SET updated_at = updated_at - 100 * 86400 WHERE user_id IN ('user-old', 'user-live')")
        deleted = await storage.delete_conversations_older_than(90 * 86400, keep={"live"})
        assert deleted == 1
        assert await storage.get_conversation("old") is None and await storage.get_profile("user-old") is None
        assert await storage.get_conversation("live") is not None and await storage.get_conversation("recent") is not None
        assert storage_backend.raw_rows("SELECT COUNT(*) FROM turns WHERE conversation_id = 'old'") == [(0,)]
        assert storage_backend.raw_rows("SELECT COUNT(*) FROM dialogue_state WHERE conversation_id = 'old'") == [(0,)]
        assert storage_backend.raw_rows("SELECT COUNT(*) FROM user_profiles WHERE user_id = 'user-old'") == [(0,)]
        assert await storage.delete_conversations_older_than(90 * 86400, keep={"live"}) == 0

        total, audit = await storage.list_audit(None, 10, 0)
        records = [record for record in audit if record["action"] == "retention_delete"]
        assert {record["tenant"] for record in records} == {"default", None}
        conversations = next(record for record in records if record["tenant"] == "default")
        assert conversations["actor"] == "retention"
        assert {k: conversations["detail"][k] for k in ("conversations", "turns", "states")} == {"conversations": 1, "turns": 1, "states": 1}
        assert next(record for record in records if record["tenant"] is None)["detail"]["profiles"] == 1
        stored = json.dumps(storage_backend.raw_rows("SELECT * FROM audit_log"), default=str)
        assert "old" not in stored.replace("older_than_s", "") and EMAIL not in stored and "user-old" not in stored
    finally:
        await storage.close()


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
async def test_erasure_removes_one_customer_from_the_file_and_nobody_else(storage_backend: BackendUnderTest, encrypt: bool) -> None:
    storage = await storage_backend.open(sealer(KEY_A, encrypt=encrypt))
    try:
        await store_conversation(storage, "alice-1", "alice", marker="alice-marker-kumquat")
        await store_conversation(storage, "alice-2", "alice", marker="alice-marker-kumquat")
        await store_conversation(storage, "alice-other-tenant", "alice", marker="alice-marker-acme", tenant="acme")
        await store_conversation(storage, "bob-1", "bob", marker="bob-marker-quince")
        stored = {row[0] for row in storage_backend.raw_rows("SELECT user_text FROM turns WHERE conversation_id LIKE 'alice-_'")}
        stored |= {row[0] for row in storage_backend.raw_rows("SELECT state FROM dialogue_state WHERE conversation_id LIKE 'alice-_'")}
        before = storage_backend.raw_bytes()
        assert all(value.encode() in before for value in stored)
        if not encrypt:
            assert b"alice-marker-kumquat" in before

        result = await storage.erase_customer("alice", "default", actor="support-admin")
        # The profile (name, preferred language; no conversation text) stays while tenant acme still serves alice.
        assert {k: result[k] for k in ("conversations", "turns", "states", "profiles")} == {"conversations": 2, "turns": 2, "states": 2, "profiles": 0}
        # Gone for every reader of the database, below the backend too.
        left = storage_backend.raw_rows("SELECT user_text FROM turns WHERE conversation_id LIKE 'alice-_' UNION ALL "
                                        "SELECT state FROM dialogue_state WHERE conversation_id LIKE 'alice-_'")
        assert left == []
        # SQLite overwrites the deleted rows; PostgreSQL says it did not (dead rows until VACUUM, WAL; docs/storage.md).
        assert result["wiped"] is storage_backend.wipes_deleted_bytes
        if storage_backend.wipes_deleted_bytes:
            after = storage_backend.raw_bytes()
            assert b"alice-marker-kumquat" not in after
            assert not [value for value in stored if value.encode() in after]  # not even the ciphertext is left
        assert await storage.get_conversation("alice-1") is None and await storage.get_profile("alice") is not None
        # Other customers, and the same id in another tenant, are untouched.
        bob = await storage.get_conversation("bob-1")
        assert bob is not None and bob["turns"][0]["user_text"].startswith("bob-marker-quince")
        assert await storage.get_conversation("alice-other-tenant") is not None

        total, audit = await storage.list_audit("default", 10, 0)
        assert total == 1 and audit[0]["action"] == "erase_customer" and audit[0]["actor"] == "support-admin"
        assert audit[0]["detail"]["subject"] == subject_ref("alice")
        assert sorted(audit[0]["detail"]["conversation_ids"]) == ["alice-1", "alice-2"]
        assert (await storage.list_audit("acme", 10, 0))[0] == 0
        assert b"alice\"" not in json.dumps(storage_backend.raw_rows("SELECT * FROM audit_log"), default=str).encode()
        # Erased in acme too: now the profile goes.
        assert (await storage.erase_customer("alice", "acme", actor="support-admin"))["profiles"] == 1
        assert await storage.get_profile("alice") is None
    finally:
        await storage.close()


async def test_the_audit_log_refuses_free_text(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open(None)
    try:
        assert await storage.write_audit("transcript_read", "api-key-1", "default", {"conversation": "c1", "turns": 3}) > 0
        for detail in ({"note": "customer said: my email is x@y.z"}, {"text": ["a b c"]}, {"nested": {"a": 1}}):
            with pytest.raises(ValueError):
                await storage.write_audit("transcript_read", "api-key-1", "default", detail)
    finally:
        await storage.close()


# -- logs ----------------------------------------------------------------------------------------

def test_log_records_are_redacted_arguments_and_tracebacks_included(caplog: pytest.LogCaptureFixture) -> None:
    redaction = LogRedaction().install()
    try:
        log = logging.getLogger("voicebot.test_privacy")
        log.warning("customer %s called from %s about order %s", EMAIL, PHONE, "12345")
        try:
            raise ValueError(f"card {CARD} declined")
        except ValueError:
            log.exception("payment for %s failed", EMAIL)
    finally:
        redaction.remove()
    assert caplog.records[0].getMessage() == "customer <EMAIL> called from <PHONE> about order 12345"
    assert "card <CARD> declined" in caplog.text
    assert not [text for text in PII if text in caplog.text]
    logging.getLogger("voicebot.test_privacy").warning("after removal: %s", EMAIL)
    assert EMAIL in caplog.records[-1].getMessage()


# -- the live turn (real engine and storage, in process) --------------------------------------------

class EchoReferenceGenerator:
    """Stands in for a well-behaved model: answers with the prompt's reference, in 3-character
    pieces (so placeholders arrive split), and remembers the prompts it was given."""

    model_name = "echo-reference"
    precision = "fp32"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def start_stream(self, prompt: str, max_new_tokens: int) -> tuple[AsyncIterator[str], asyncio.Future[GenerationResult], threading.Event]:
        self.prompts.append(prompt)
        text = prompt.split("reference: ", 1)[1].rsplit(" | user: ", 1)[0]
        future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        future.set_result(GenerationResult(text, len(text) // 3, False, 1, 0.0, 0.0, self.model_name))

        async def pieces() -> AsyncIterator[str]:
            for start in range(0, len(text), 3):
                yield text[start:start + 3]

        return pieces(), future, threading.Event()

    def close(self) -> None:
        pass


async def say(handle: Any, text: str) -> tuple[BotMessage, list[str]]:
    events = handle.events().__aiter__()
    await handle.send_text(text)
    chunks = []
    while True:
        event = await asyncio.wait_for(events.__anext__(), 60)
        if isinstance(event, BotTextChunk):
            chunks.append(event.text)
        if isinstance(event, ErrorEvent):
            raise AssertionError(event)
        if isinstance(event, BotMessage):
            return event, chunks


@pytest.mark.parametrize("generator_sees_raw", [False, True], ids=["masked-prompt", "raw-prompt"])
async def test_the_live_reply_uses_the_real_email_while_store_and_logs_do_not(
        tmp_path: Path, trained_models: Path, caplog: pytest.LogCaptureFixture, generator_sees_raw: bool) -> None:
    data_dir = fresh_data_dir(tmp_path, trained_models)
    settings = Settings(storage={"data_dir": data_dir}, privacy={"encryption_keys": [KEY_A], "generator_sees_raw": generator_sees_raw})
    runtime = BotRuntime(settings)
    await runtime.start()
    try:
        generator = EchoReferenceGenerator()
        runtime.generator = generator  # type: ignore[assignment]
        assert runtime.retention._task is not None and not runtime.retention._task.done()  # the periodic job runs
        handle = await runtime.open_session("terminal", language="en", user_id="customer-7")
        reply, chunks = await say(handle, f"I forgot my password, my email is {EMAIL}")
        logging.getLogger("voicebot.test_privacy").warning("turn answered for %s: %s", EMAIL, reply.text)

        # Live: the customer reads their real address, streamed and final.
        assert EMAIL in reply.text and EMAIL in "".join(chunks)
        response = reply.trace["response"]
        assert response["used"] == "generator" and response["guard"]["passed"]
        if generator_sees_raw:
            assert EMAIL in generator.prompts[0] and "prompt_masked" not in response
        else:
            assert EMAIL not in generator.prompts[0] and "<EMAIL>" in generator.prompts[0]
            assert "<EMAIL>" in response["generated_text"] and response["prompt_masked"] == {"<EMAIL>": 1}

        # Stored: masked; the state keeps the real value for a resume.
        stored = await runtime.storage.get_conversation(handle.id)
        assert stored is not None
        assert stored["turns"][0]["user_text"] == "I forgot my password, my email is <EMAIL>"
        assert "<EMAIL>" in stored["turns"][0]["bot_text"] and EMAIL not in json.dumps(stored["turns"])
        assert stored["state"]["slots"]["email"]["value"] == EMAIL
        assert EMAIL.encode() not in BackendUnderTest("sqlite", data_dir).raw_bytes()

        # Logged: masked.
        assert "turn answered for <EMAIL>" in caplog.text and EMAIL not in caplog.text

        # Erasure through the runtime ends the live session first.
        result = await runtime.erase_customer("customer-7", None, actor="test")
        assert result["conversations"] == 1 and handle.id not in runtime.sessions
        assert await runtime.storage.get_conversation(handle.id) is None
    finally:
        await runtime.close()
    assert runtime.retention._task is None


def test_placeholders_split_over_stream_pieces_are_restored() -> None:
    stream = PlaceholderStream({"<EMAIL>": ["a@b.cd", "x@y.zz"], "<PHONE>": ["+1 555 0100"]})
    pieces = ["Sent to <E", "MAIL> and <", "EMAIL>; call <PH", "ONE>, or <EMAIL>", " <not a placeholder> <"]
    shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
    assert shown == "Sent to a@b.cd and x@y.zz; call +1 555 0100, or x@y.zz <not a placeholder> <"
    assert stream.unknown("<IBAN> and <EMAIL>") == ["<IBAN>"]
