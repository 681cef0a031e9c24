"""Settings: every MURMUR_* environment variable, its default and its meaning, read once.

Each field names its variable; README's table of variables is checked against
this class by a test. Code asks `get_settings()`, never `os.environ`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from murmur.workers.cpu.sources import split_s3
from murmur.workers.errors import MurmurError
from murmur.workers.options import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, JobOptions

# Workers and producers share one store of record; without MURMUR_DATABASE_URL they meet here.
DEFAULT_FLEET_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/murmur"


def _variable(name: str, default, shown: str | None = None, parse=str, **kwargs):
    """A field read from environment variable `name`; `shown` is the default as README writes it."""
    return field(default=default, metadata={"env": name, "shown": str(default) if shown is None else shown, "parse": parse}, **kwargs)


def _seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("a whole number of seconds")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("a whole number from 1")
    return int(text)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("a whole number") from None


def _flag(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(p).resolve() for p in text.split(os.pathsep) if p)


def _bytes(text: str) -> int:
    """A size: a whole number of bytes, or with a suffix K, M, G or T (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise ValueError("a size in bytes such as 2G or 500M")
    return int(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " ")


def parse_duration(text: str) -> int:
    """Seconds, or a number with s, m, h or d (30d is thirty days); 0 turns the feature off."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError("a duration such as 3600, 90m, 4h or 30d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _output_uri(text: str) -> str:
    split_s3(text)  # raises ValueError: "an s3://bucket/key URI"
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def is_redis(url: str) -> bool:
    """A Redis URL, as kombu and redis-py take them (the other broker is RabbitMQ, amqp://)."""
    return url.startswith(("redis://", "rediss://", "redis+socket://", "unix://"))


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _variable(
        "MURMUR_DATABASE_URL", None, "embedded: SQLite in ~/.local/share/murmur; fleet: " + DEFAULT_FLEET_DATABASE_URL)
    broker_url: str = _variable("MURMUR_BROKER_URL", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0 (or amqp://…)")
    result_url: str | None = _variable("MURMUR_RESULT_URL", None, "the tensor store's URL")
    tensor_url: str | None = _variable("MURMUR_TENSOR_URL", None, "the broker URL (a Redis: required with amqp://)")
    tensor_ttl: int = _variable("MURMUR_TENSOR_TTL", 6 * 3600, parse=_seconds)
    # A message unacknowledged this long is handed to another worker. Recovery from a dead
    # worker comes from leases (below), so this only has to outlast the longest live task:
    # redelivering a task that is still running would only duplicate work.
    visibility_timeout: int = _variable("MURMUR_VISIBILITY_TIMEOUT", 3600, parse=_seconds)
    # A worker holds each job it prepares and each chunk it was handed for this long,
    # renewed every third of it while the worker lives; a lapsed lease is re-driven.
    lease_seconds: int = _variable("MURMUR_LEASE_SECONDS", 30, parse=_seconds)
    stall_timeout: int = _variable("MURMUR_STALL_TIMEOUT", 120, parse=_seconds)
    max_attempts: int = _variable("MURMUR_MAX_ATTEMPTS", 3, parse=_positive)
    reconcile_interval: int = _variable("MURMUR_RECONCILE_INTERVAL", 10, parse=_seconds)
    retention: int = _variable("MURMUR_RETENTION", 0, "0: keep every job", parse=parse_duration)
    max_duration: int = _variable("MURMUR_MAX_DURATION", 4 * 3600, "14400 (4 h)", parse=parse_duration)
    max_bytes: int = _variable("MURMUR_MAX_BYTES", 2 * 1024**3, "2G", parse=_bytes)
    tensor_budget: int | None = _variable("MURMUR_TENSOR_BUDGET", None, "half of Redis' maxmemory, or 2G (also where CONFIG is refused)", parse=_bytes)
    allowed_roots: tuple[Path, ...] = _variable("MURMUR_ALLOWED_ROOTS", (), "unset: any path", parse=_paths)
    # None: trusted producers (CLI, Client, raw Celery) may name any bucket, and `murmur serve` takes no s3:// source
    s3_allow: tuple[str, ...] | None = _variable("MURMUR_S3_ALLOW", None, "unset: any bucket, none through murmur serve",
                                                 parse=_names)
    model_dirs: tuple[Path, ...] = _variable("MURMUR_MODEL_DIRS", (), "unset: bundled models only", parse=_paths)
    callback_allow: tuple[str, ...] = _variable("MURMUR_CALLBACK_ALLOW", (), "unset: public addresses only", parse=_names)
    callback_secret: str | None = _variable("MURMUR_CALLBACK_SECRET", None, "unset: unsigned")
    callback_deadline: int = _variable("MURMUR_CALLBACK_DEADLINE", 10, parse=_positive)
    output_uri: str | None = _variable("MURMUR_OUTPUT_URI", None, "unset: none", parse=_output_uri)
    # Short chunks of different jobs share a Whisper window on a GPU worker (README, "Short jobs share windows")
    pack_windows: bool = _variable("MURMUR_PACK_WINDOWS", True, "true", parse=_flag)
    upload_dir: Path | None = _variable("MURMUR_UPLOAD_DIR", None, "~/.local/share/murmur/uploads", parse=lambda t: Path(t).resolve())
    api_max_jobs: int = _variable("MURMUR_API_MAX_JOBS", 100, parse=_positive)
    upload_timeout: int = _variable("MURMUR_UPLOAD_TIMEOUT", 30, parse=_seconds)
    upload_min_free: int = _variable("MURMUR_UPLOAD_MIN_FREE", 1024**3, "1G", parse=_bytes)
    metrics_port: int = _variable("MURMUR_METRICS_PORT", 0, "0: none", parse=_whole)
    metrics_address: str = _variable("MURMUR_METRICS_ADDRESS", "127.0.0.1")
    model: str = _variable("MURMUR_MODEL", DEFAULT_MODEL)
    device: str = _variable("MURMUR_DEVICE", "auto")
    compute_type: str = _variable("MURMUR_COMPUTE_TYPE", "auto")
    batch_size: int = _variable("MURMUR_BATCH_SIZE", DEFAULT_BATCH_SIZE, parse=_whole)
    # None: the model module's default, ~/.cache/murmur
    cache_dir: Path | None = _variable("MURMUR_CACHE_DIR", None, "~/.cache/murmur", parse=Path)
    data_dir: Path = field(default=Path.home() / ".local" / "share" / "murmur")  # from XDG_DATA_HOME

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            raw = environ.get(name) if name else None
            if raw:
                try:
                    values[f.name] = f.metadata["parse"](raw)
                except ValueError as exc:
                    raise MurmurError(f"{name} must be {exc}, not {raw!r}") from None
        if environ.get("XDG_DATA_HOME"):
            values["data_dir"] = Path(environ["XDG_DATA_HOME"]) / "murmur"
        return cls(**values)

    @property
    def embedded_database_url(self) -> str:
        """The embedded runner's database: a local SQLite file unless MURMUR_DATABASE_URL names one."""
        return self.database_url or f"sqlite:///{self.data_dir / 'murmur.db'}"

    @property
    def uploads(self) -> Path:
        """Where `murmur serve` streams uploaded files: MURMUR_UPLOAD_DIR, or beside the embedded database (absolute)."""
        return self.upload_dir or (self.data_dir / "uploads").resolve()

    @property
    def store_url(self) -> str:
        """The Redis that holds the tensors: MURMUR_TENSOR_URL, or the broker when it is a Redis."""
        if self.tensor_url:
            return self.tensor_url
        if is_redis(self.broker_url):
            return self.broker_url
        raise MurmurError(f"MURMUR_BROKER_URL is not a Redis ({self.broker_url.split('://')[0]}://): "
                          "set MURMUR_TENSOR_URL to the Redis that carries the tensors")

    @property
    def fleet_database_url(self) -> str:
        """The workers' and producers' database: the local Postgres unless MURMUR_DATABASE_URL names one."""
        return self.database_url or DEFAULT_FLEET_DATABASE_URL

    def job_options(self, **overrides) -> JobOptions:
        """A job's options: MURMUR_MODEL and MURMUR_BATCH_SIZE as defaults, then the caller's values."""
        values = {"model": self.model, "batch_size": self.batch_size}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return JobOptions.from_json(values)


def variables() -> dict[str, str]:
    """Each MURMUR_* variable and its default as README shows it."""
    return {f.metadata["env"]: f.metadata["shown"] for f in fields(Settings) if f.metadata.get("env")}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
