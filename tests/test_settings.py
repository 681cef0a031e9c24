"""Settings as a pure unit: one object, README's table of variables, readable errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from murmur.settings import DEFAULT_FLEET_DATABASE_URL, Settings, get_settings, variables
from murmur.workers.errors import MurmurError

README = Path(__file__).parents[1] / "README.md"


def test_readme_table_lists_every_variable_with_its_default():
    rows = re.findall(r"^\| `(MURMUR_[A-Z0-9_]+)` \| ([^|]+) \|", README.read_text(), flags=re.MULTILINE)
    assert dict((name, default.strip()) for name, default in rows) == variables()


def test_no_module_reads_murmur_variables_but_settings():
    package = Path(__file__).parents[1]
    readers = [str(p.relative_to(package)) for folder in ("api", "tasks", "workers", "db", "murmur")
               for p in (package / folder).rglob("*.py") if re.search(r"environ(\.get)?[\[(]\s*[\"']MURMUR_", p.read_text())]
    assert readers == []


def test_defaults_and_parsing():
    defaults = Settings.from_env({})
    assert defaults.broker_url == "redis://127.0.0.1:6379/0" and defaults.visibility_timeout == 3600
    assert defaults.fleet_database_url == DEFAULT_FLEET_DATABASE_URL
    assert defaults.embedded_database_url.startswith("sqlite:///") and defaults.allowed_roots == ()
    given = Settings.from_env({"MURMUR_TENSOR_TTL": "60", "MURMUR_BATCH_SIZE": "16", "MURMUR_ALLOWED_ROOTS": "/data:/srv",
                               "MURMUR_DATABASE_URL": "sqlite:////tmp/x.db", "XDG_DATA_HOME": "/tmp/xdg"})
    assert given.tensor_ttl == 60 and given.batch_size == 16
    assert given.allowed_roots == (Path("/data"), Path("/srv"))
    assert given.embedded_database_url == given.fleet_database_url == "sqlite:////tmp/x.db"
    assert Settings.from_env({"XDG_DATA_HOME": "/tmp/xdg"}).embedded_database_url == "sqlite:////tmp/xdg/murmur/murmur.db"
    assert (defaults.lease_seconds, defaults.stall_timeout, defaults.max_attempts, defaults.retention) == (30, 120, 3, 0)
    assert (defaults.max_duration, defaults.max_bytes, defaults.model_dirs, defaults.callback_allow) == (14400, 2 << 30, (), ())
    limits = Settings.from_env({"MURMUR_MAX_DURATION": "90m", "MURMUR_MAX_BYTES": "500M", "MURMUR_RETENTION": "30d",
                                "MURMUR_TENSOR_BUDGET": "1G", "MURMUR_CALLBACK_ALLOW": "hooks.internal, 10.0.0.0/8"})
    assert (limits.max_duration, limits.max_bytes, limits.retention, limits.tensor_budget) == (5400, 500 << 20, 30 * 86400, 1 << 30)
    assert limits.callback_allow == ("hooks.internal", "10.0.0.0/8")
    options = given.job_options(language="de")
    assert (options.model, options.batch_size, options.language) == ("base", 16, "de")


@pytest.mark.parametrize("name, value, reason", [
    ("MURMUR_VISIBILITY_TIMEOUT", "15m", "MURMUR_VISIBILITY_TIMEOUT must be a whole number of seconds, not '15m'"),
    ("MURMUR_TENSOR_TTL", "0", "MURMUR_TENSOR_TTL must be a whole number of seconds"),
    ("MURMUR_BATCH_SIZE", "many", "MURMUR_BATCH_SIZE must be a whole number, not 'many'"),
    ("MURMUR_MAX_BYTES", "lots", "MURMUR_MAX_BYTES must be a size in bytes such as 2G or 500M"),
    ("MURMUR_RETENTION", "a month", "MURMUR_RETENTION must be a duration such as 3600, 90m, 4h or 30d"),
    ("MURMUR_MAX_ATTEMPTS", "0", "MURMUR_MAX_ATTEMPTS must be a whole number from 1"),
])
def test_bad_values_name_their_variable(name, value, reason):
    with pytest.raises(MurmurError, match=re.escape(reason)):
        Settings.from_env({name: value})


def test_read_once(monkeypatch):
    get_settings.cache_clear()
    first = get_settings()
    monkeypatch.setenv("MURMUR_BATCH_SIZE", "3")
    assert get_settings() is first and get_settings().batch_size == first.batch_size
    get_settings.cache_clear()
    assert get_settings().batch_size == 3
    monkeypatch.undo()
    get_settings.cache_clear()
