"""Node configuration: one TOML file plus ``NODULETRACK_<SECTION>_<KEY>`` overrides.

The section and key names are a contract (``../shared/DESIGN.md``); other tools write these files.
Everything has a default so that ``noduletrack serve`` runs with nothing configured. Validation
happens once, at load time, and every error names the offending key so an administrator can fix
the file without reading code.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

ENV_PREFIX = "NODULETRACK_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


@dataclass(frozen=True)
class NodeSection:
    """Our SCP."""

    ae_title: str = "NODULETRACK"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_ae: list[str] = field(default_factory=list)  # empty = any caller
    receivers: int = 1  # receiving processes sharing the port (SO_REUSEPORT)
    max_associations: int = 16
    max_instance_mb: int = 2048
    tls_cert: str = ""  # PEM; TLS is on when cert and key are both set
    tls_key: str = ""
    tls_ca: str = ""  # when set, client certificates are required and checked against it

    def validate(self) -> None:
        _check_ae("node.ae_title", self.ae_title)
        for ae in self.allowed_calling_ae:
            _check_ae("node.allowed_calling_ae", ae)
        _check_port("node.port", self.port)
        _check_positive("node.receivers", self.receivers)
        _check_positive("node.max_associations", self.max_associations)
        _check_positive("node.max_instance_mb", self.max_instance_mb)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("node.tls_cert and node.tls_key must be set together")


@dataclass(frozen=True)
class StorageSection:
    spool: str = "./var/spool"
    results: str = "./var/results"  # SEG/SR/key images we wrote, kept until sent (and after)
    fsync: bool = True  # fsync every instance before acknowledging it

    def validate(self) -> None:
        if not self.spool:
            raise ConfigError("storage.spool must not be empty")
        if not self.results:
            raise ConfigError("storage.results must not be empty")


@dataclass(frozen=True)
class DatabaseSection:
    url: str = "sqlite:///./var/noduletrack.db"

    def validate(self) -> None:
        if not (self.url.startswith("sqlite") or self.url.startswith("postgresql")):
            raise ConfigError(
                f"database.url must be a sqlite:/// or postgresql+psycopg:// URL, got {self.url!r}"
            )


@dataclass(frozen=True)
class StabilitySection:
    quiet_seconds: float = 30.0
    sweep_seconds: float = 5.0

    def validate(self) -> None:
        _check_non_negative("stability.quiet_seconds", self.quiet_seconds)
        _check_positive("stability.sweep_seconds", self.sweep_seconds)


@dataclass(frozen=True)
class PacsSection:
    """Where results go and where priors come from. Empty ``host`` = no PACS configured."""

    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    port: int = 4242
    query_retrieve: bool = True
    send_results: bool = True
    max_prior_instances: int = 2000
    min_prior_days: int = 30
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 600.0
    max_attempts: int = 12

    def validate(self) -> None:
        _check_ae("pacs.ae_title", self.ae_title)
        _check_port("pacs.port", self.port)
        _check_positive("pacs.max_prior_instances", self.max_prior_instances)
        _check_non_negative("pacs.min_prior_days", self.min_prior_days)
        _check_positive("pacs.retry_initial_seconds", self.retry_initial_seconds)
        _check_positive("pacs.retry_max_seconds", self.retry_max_seconds)
        _check_positive("pacs.max_attempts", self.max_attempts)


@dataclass(frozen=True)
class WorkersSection:
    processes: int = 1
    lease_seconds: float = 600.0
    max_attempts: int = 3
    poll_seconds: float = 1.0

    def validate(self) -> None:
        _check_non_negative("workers.processes", self.processes)
        _check_positive("workers.lease_seconds", self.lease_seconds)
        _check_positive("workers.max_attempts", self.max_attempts)
        _check_positive("workers.poll_seconds", self.poll_seconds)


@dataclass(frozen=True)
class GuidelineSection:
    """How the study recommendation is chosen (CLINICAL.md)."""

    screening_program: bool = False  # True: Lung-RADS v2022; False: Fleischner 2017
    risk: str = "low"  # Fleischner risk when the study does not say
    default_age_years: int = 60

    def validate(self) -> None:
        if self.risk not in ("low", "high"):
            raise ConfigError(f"guideline.risk must be 'low' or 'high', got {self.risk!r}")
        _check_positive("guideline.default_age_years", self.default_age_years)


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"
    format: str = "text"  # "text" (key=value) or "json"

    def validate(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"logging.level must be DEBUG/INFO/WARNING/ERROR, got {self.level!r}")
        if self.format not in ("text", "json"):
            raise ConfigError(f"logging.format must be 'text' or 'json', got {self.format!r}")


@dataclass(frozen=True)
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    storage: StorageSection = field(default_factory=StorageSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    stability: StabilitySection = field(default_factory=StabilitySection)
    pacs: PacsSection = field(default_factory=PacsSection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    guideline: GuidelineSection = field(default_factory=GuidelineSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()

    @property
    def spool_dir(self) -> Path:
        return Path(self.storage.spool)


SECTIONS: dict[str, type] = get_type_hints(Config)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate, and return the config.

    Raises :class:`ConfigError` naming the bad key on any unknown section or key, wrong type or
    invalid value.
    """
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a [section] table")

    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = dict(raw.get(name, {}))
        hints = get_type_hints(cls)
        for key in values:
            if key not in hints:
                raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(hints)})")
        labels = {key: f"{name}.{key}" for key in hints}
        for key, hint in hints.items():
            env_name = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            if env_name in env:
                labels[key] = f"{name}.{key} (from {env_name})"
                values[key] = _parse_env(labels[key], env[env_name], hint)
        coerced = {k: _coerce(labels[k], v, hints[k]) for k, v in values.items()}
        sections[name] = cls(**coerced)
    config = Config(**sections)
    config.validate()
    return config


def _parse_env(key: str, text: str, hint: Any) -> Any:
    if hint is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {text!r}")
    if get_origin(hint) is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _coerce(key: str, value: Any, hint: Any) -> Any:
    if get_origin(hint) is list:
        (item_type,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, v, item_type) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if hint is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _check_ae(key: str, ae: str) -> None:
    if not ae or len(ae) > 16 or not ae.isascii() or "\\" in ae or ae != ae.strip():
        raise ConfigError(f"{key} must be an AE title of 1-16 ASCII characters without backslash, got {ae!r}")


def _check_port(key: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key} must be a TCP port 0-65535, got {port}")


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _check_non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")
