"""Configuration: defaults, TOML, environment overrides, and errors that name the key."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, load_config
from dicom_node.logs import JsonFormatter, KeyValueFormatter, log_event, phi_hash


def test_defaults_match_the_design_contract() -> None:
    config = load_config(None, env={})
    assert (config.node.ae_title, config.node.host, config.node.port) == ("NODULETRACK", "127.0.0.1", 11112)
    assert config.node.allowed_calling_ae == []
    assert config.storage.spool == "./var/spool"
    assert config.database.url == "sqlite:///./var/noduletrack.db"
    assert config.stability.quiet_seconds == 30
    assert (config.pacs.ae_title, config.pacs.port, config.pacs.query_retrieve) == ("ORTHANC", 4242, True)
    assert config.workers.processes == 1


def test_toml_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nae_title = "NT1"\nport = 11200\nallowed_calling_ae = ["ORTHANC"]\n[stability]\nquiet_seconds = 5\n')
    env = {"NODULETRACK_NODE_PORT": "11300", "NODULETRACK_PACS_QUERY_RETRIEVE": "false",
           "NODULETRACK_NODE_ALLOWED_CALLING_AE": "A,B", "NODULETRACK_STABILITY_QUIET_SECONDS": "2.5"}
    config = load_config(path, env=env)
    assert config.node.ae_title == "NT1"
    assert config.node.port == 11300  # environment wins over the file
    assert config.node.allowed_calling_ae == ["A", "B"]
    assert config.pacs.query_retrieve is False
    assert config.stability.quiet_seconds == 2.5


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[node]\nport = 70000\n", {}, "node.port"),
        ("[node]\nae_tittle = 'X'\n", {}, "node.ae_tittle"),
        ("[nodes]\nport = 1\n", {}, "[nodes]"),
        ("[node]\nae_title = 'WAY_TOO_LONG_AE_TITLE'\n", {}, "node.ae_title"),
        ("[workers]\nprocesses = 'two'\n", {}, "workers.processes"),
        ("", {"NODULETRACK_NODE_PORT": "abc"}, "NODULETRACK_NODE_PORT"),
        ("", {"NODULETRACK_PACS_QUERY_RETRIEVE": "maybe"}, "pacs.query_retrieve"),
        ("[database]\nurl = 'mysql://x'\n", {}, "database.url"),
        ("[node\n", {}, "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_config(path, env=env)


def test_cli_reports_config_error_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[node]\nport = -1\n")
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", "phantom", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--config" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", "phantom", "--config", str(path), "--out", str(tmp_path / "o"),
                           "--patients", "1", "--seed", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "node.port" in proc.stderr


@pytest.mark.parametrize("before", [True, False])
def test_config_is_honoured_before_or_after_a_nested_command(tmp_path: Path, before: bool) -> None:
    """`train --config X growth` and `train growth --config X` both read X (argparse would drop the first)."""
    path = tmp_path / "bad.toml"
    path.write_text("[node]\nport = -1\n")
    where = ["--config", str(path)]
    args = (["train", *where, "growth"] if before else ["train", "growth", *where]) + [
        "--manifest", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "node.port" in proc.stderr, proc.stderr


def test_missing_migrations_are_an_operator_message_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f"[database]\nurl = \"sqlite:///{tmp_path / 'fresh.db'}\"\n")
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", "status", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "noduletrack db upgrade" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_log_lines_are_structured_and_hash_phi() -> None:
    record = logging.makeLogRecord({"name": "noduletrack.test", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "stored", "fields": {"patient": phi_hash("PAT-001"), "bytes": 12}})
    text = KeyValueFormatter().format(record)
    assert "stored" in text and "bytes=12" in text and "PAT-001" not in text
    data = json.loads(JsonFormatter().format(record))
    assert data["event"] == "stored" and data["patient"] == phi_hash("PAT-001") and data["bytes"] == 12
    assert phi_hash("PAT-001") == phi_hash("PAT-001") != phi_hash("PAT-002")
    assert phi_hash("") == "-"


def test_log_event_passes_fields(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("noduletrack.test")
    with caplog.at_level(logging.INFO):
        log_event(logger, "association", calling_ae="ORTHANC", accepted=True)
    assert caplog.records[-1].fields == {"calling_ae": "ORTHANC", "accepted": True}
