"""One typed config file (TOML or YAML), environment overrides, clear errors naming the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voicebot.config import ConfigError, load_settings


def test_defaults_serve_the_demo_domain_on_loopback() -> None:
    settings = load_settings()
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8080
    assert (settings.domain.path / "domain.yaml").is_file()


def test_toml_and_yaml_files_load(tmp_path: Path) -> None:
    toml = tmp_path / "bot.toml"
    toml.write_text('[server]\nport = 9001\n[nlu]\noos_threshold = 0.5\n')
    yaml_file = tmp_path / "bot.yaml"
    yaml_file.write_text("server:\n  port: 9002\nstorage:\n  data_dir: /tmp/x\n")
    assert load_settings(toml).server.port == 9001 and load_settings(toml).nlu.oos_threshold == 0.5
    assert load_settings(yaml_file).server.port == 9002 and load_settings(yaml_file).storage.data_dir == Path("/tmp/x")


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("[server]\nport = 9001\n")
    monkeypatch.setenv("VOICEBOT_SERVER__PORT", "9100")
    monkeypatch.setenv("VOICEBOT_LANGUAGE__SWITCH_CONFIDENCE", "0.7")
    settings = load_settings(config)
    assert settings.server.port == 9100 and settings.language.switch_confidence == 0.7
    assert load_settings(config, server__port=9200).server.port == 9200


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server]\nprot = 8080\n", "server.prot"),
        ("[nlu]\noos_threshold = 2.0\n", "nlu.oos_threshold"),
        ("[storage]\nbackend = 'oracle'\n", "storage.backend"),
        ("[server\nport = 1\n", "not valid TOML"),
    ],
)
def test_invalid_file_names_the_setting(tmp_path: Path, content: str, named: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(config)


def test_invalid_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBOT_SERVER__PORT", "99999")
    with pytest.raises(ConfigError, match="VOICEBOT_SERVER__PORT"):
        load_settings()


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  port: -5\n")
    result = subprocess.run([sys.executable, "-m", "voicebot", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "server.port" in result.stderr and "Traceback" not in result.stderr
