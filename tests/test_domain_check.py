"""`voicebot check` validates a domain and reports every problem with its file and line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from voicebot.dialogue.domain import load_domain
from voicebot.resources import demo_domain_dir


def run_check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicebot", "check", str(folder)], capture_output=True, text=True, timeout=60)


def test_demo_domain_is_clean() -> None:
    result = run_check(demo_domain_dir())
    assert result.returncode == 0, result.stdout
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_domain_dir(), broken)
    domain_yaml = broken / "domain.yaml"
    text = domain_yaml.read_text()
    text = text.replace("required: [email]", "required: [email_address]")  # undefined slot
    text = text.replace('lookup_order: {python: "actions.py:lookup_order"}', 'lookup_order: {python: "actions.py:find_order"}')
    domain_yaml.write_text(text)
    nlu_fr = broken / "nlu" / "fr.yaml"
    lines = nlu_fr.read_text().splitlines()
    greet_line = next(i for i, line in enumerate(lines) if line.strip() == "greet:")
    lines.insert(greet_line + 1, "    - 42")  # a number where text is needed
    nlu_fr.write_text("\n".join(lines) + "\n")
    (broken / "responses" / "de.yaml").write_text((broken / "responses" / "de.yaml").read_text().replace("ask_email:", "ask_mail:"))

    result = run_check(broken)
    assert result.returncode == 1
    out = result.stdout
    slot_line = next(i + 1 for i, line in enumerate(text.splitlines()) if "email_address" in line)
    assert f"domain.yaml:{slot_line}: error: flow 'password_reset' requires slot 'email_address'" in out
    assert "no function 'find_order' in actions.py" in out
    assert f"nlu/fr.yaml:{greet_line + 2}: error: example 1 of 'greet' must be non-empty text" in out
    assert "responses/de.yaml" in out and "'ask_email_address' is missing in de" in out
    assert "error(s)" in out


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_domain_dir(), broken)
    (broken / "kb" / "es.yaml").write_text("language: es\narticles:\n  - id: x\n    title: [unclosed\n")
    _, problems = load_domain(broken, strict=False)
    assert any(p.path.name == "es.yaml" and "invalid YAML" in p.message and p.line >= 4 for p in problems)


def test_serve_refuses_a_broken_domain_with_a_clear_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_domain_dir(), broken)
    (broken / "domain.yaml").write_text((broken / "domain.yaml").read_text().replace("default_language: en", "default_language: xx"))
    result = subprocess.run([sys.executable, "-m", "voicebot", "chat", "--domain", str(broken), "--data-dir", str(tmp_path / "d")],
                            input="hi\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "default_language 'xx' is not in languages" in result.stderr


def test_identification_keys_are_checked_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_domain_dir(), broken)
    domain_yaml = broken / "domain.yaml"
    lines = domain_yaml.read_text().splitlines()
    status = next(i for i, line in enumerate(lines) if line.strip().startswith("identify:"))
    lines[status] = "    identify: {any_of: [email, fax], check: verify_owner}"
    domain_yaml.write_text("\n".join(lines) + "\n")
    zh = broken / "responses" / "zh.yaml"
    zh.write_text("\n".join(line for line in zh.read_text().splitlines() if not line.strip().startswith("identify_refused:")) + "\n")

    result = run_check(broken)
    assert result.returncode == 1
    out = result.stdout
    assert f"domain.yaml:{status + 1}: error: flow 'order_status' identifies with slot 'fax', which is not defined under slots" in out
    assert f"domain.yaml:{status + 1}: error: flow 'order_status' checks identity with action 'verify_owner'" in out
    assert "responses/zh.yaml" in out and "'identify_refused' is missing in zh" in out


def test_a_speech_context_for_a_language_the_domain_lacks_is_a_warning(tmp_path: Path) -> None:
    """Callers may speak a language the domain does not answer in (cross-lingual understanding),
    so such a context is allowed, but said, in case it is a typo."""
    broken = tmp_path / "broken"
    shutil.copytree(demo_domain_dir(), broken)
    domain_yaml = broken / "domain.yaml"
    text = domain_yaml.read_text().replace("speech_context:\n", "speech_context:\n  it: \"Chiamata al servizio clienti.\"\n")
    domain_yaml.write_text(text)
    result = run_check(broken)
    assert result.returncode == 0, result.stdout
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if row.startswith("  it:"))
    assert f"domain.yaml:{line}: warning: speech_context names 'it', which is not in languages" in result.stdout, result.stdout
