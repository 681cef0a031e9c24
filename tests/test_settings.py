"""Settings as a pure unit: one object, README's table of variables, readable errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from murmur.settings import DEFAULT_FLEET_DATABASE_URL, Settings, get_settings, variables
from murmur.workers.errors import MurmurError

README = Path(__file__).parents[1] / "README.md"


def test_readme_table_lists_every_variable_with_its_default():
    rows = re.findall(r"^\| `(MURMUR_[A-Z_]+)` \| ([^|]+) \|", README.read_text(), flags=re.MULTILINE)
    assert dict((name, default.strip()) for name, default in rows) == variables()


def test_no_module_reads_murmur_variables_but_settings():
    package = Path(__file__).parents[1]
    readers = [str(p.relative_to(package)) for folder in ("tasks", "workers", "db", "murmur")
               for p in (package / folder).rglob("*.py") if re.search(r"environ(\.get)?[\[(]\s*[\"']MURMUR_", p.read_text())]
    assert readers == []


def test_defaults_and_parsing():
    defaults = Settings.from_env({})
    assert defaults.broker_url == "redis://127.0.0.1:6379/0" and defaults.visibility_timeout == 900
    assert defaults.fleet_database_url == DEFAULT_FLEET_DATABASE_URL
    assert defaults.embedded_database_url.startswith("sqlite:///") and defaults.allowed_roots == ()
    given = Settings.from_env({"MURMUR_TENSOR_TTL": "60", "MURMUR_BATCH_SIZE": "16", "MURMUR_ALLOWED_ROOTS": "/data:/srv",
                               "MURMUR_DATABASE_URL": "sqlite:////tmp/x.db", "XDG_DATA_HOME": "/tmp/xdg"})
    assert given.tensor_ttl == 60 and given.batch_size == 16
    assert given.allowed_roots == (Path("/data"), Path("/srv"))
    assert given.embedded_database_url == given.fleet_database_url == "sqlite:////tmp/x.db"
    assert Settings.from_env({"XDG_DATA_HOME": "/tmp/xdg"}).embedded_database_url == "sqlite:////tmp/xdg/murmur/murmur.db"
    options = given.job_options(language="de")
    assert (options.model, options.batch_size, options.language) == ("base", 16, "de")


@pytest.mark.parametrize("name, value, reason", [
    ("MURMUR_VISIBILITY_TIMEOUT", "15m", "MURMUR_VISIBILITY_TIMEOUT must be a whole number of seconds, not '15m'"),
    ("MURMUR_TENSOR_TTL", "0", "MURMUR_TENSOR_TTL must be a whole number of seconds"),
    ("MURMUR_BATCH_SIZE", "many", "MURMUR_BATCH_SIZE must be a whole number, not 'many'"),
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
