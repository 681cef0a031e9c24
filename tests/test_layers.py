"""Imports run one way: the import-linter contracts of pyproject.toml hold on the package as it installs,
an arrow planted back up breaks them, and every folder of Python is a package setuptools installs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str) -> Path:
    """Where a package's modules are in this repository, by setuptools' `package-dir`."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        mapped = SETUP["package-dir"].get(".".join(parts[:n]))
        if mapped is not None:
            return ROOT / mapped / Path(*parts[n:])
    raise AssertionError(f"{package} has no folder")


def _installed_tree(into: Path) -> Path:
    """The package laid out as a wheel installs it: import-linter walks a package's own folder and
    cannot follow the mapping an editable install makes from `murmur.tasks` to ./tasks."""
    for package in SETUP["packages"]:
        target = into / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in _folder(package).glob("*.py"):
            shutil.copy(module, target / module.name)
    return into


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), str(ROOT / "pyproject.toml"),
                           "--no-cache"], capture_output=True, text=True, env=env, cwd=tree, timeout=300)


def test_the_layers_hold(tmp_path):
    done = _lint(_installed_tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, upward", [
    ("workers/options.py", "from murmur.settings import get_settings"),  # the compute reading the settings
    ("db/queries.py", "import murmur.tasks.jobs"),  # the record knowing the Celery edge
    ("tasks/fleet/worker.py", "from murmur.tasks.fleet import chain"),  # the worker process importing its tasks
    ("tasks/tensors/store.py", "from murmur.tasks import stages"),  # a room importing the room above it
])
def test_an_arrow_back_up_breaks_them(tmp_path, module, upward):
    planted = _installed_tree(tmp_path) / "murmur" / module  # each top folder is murmur.<folder>
    planted.write_text(planted.read_text() + f"\n{upward}  # planted\n")
    done = _lint(tmp_path)
    assert done.returncode != 0 and "BROKEN" in done.stdout.upper(), done.stdout


def test_every_folder_of_python_is_a_package_setuptools_installs():
    folders = {_folder(package).resolve() for package in SETUP["packages"]}
    for top in SETUP["package-dir"].values():
        for module in (ROOT / top).rglob("*.py"):
            assert module.parent.resolve() in folders, f"{module.parent} is not in [tool.setuptools] packages"


def test_the_readme_names_every_module_and_each_says_what_it_holds():
    """README's "How it works" names every module where it lives; each module's docstring opens with a line."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## How it works"):readme.index("## Benchmarks")]
    for package in SETUP["packages"]:
        if ".migrations" in package:
            continue  # named as a folder, db/migrations/
        for module in _folder(package).glob("*.py"):
            where = module.relative_to(ROOT).as_posix()
            if module.name != "__init__.py" or package == "murmur":
                assert f"`{where}`" in table, f"README's How it works does not name {where}"
            first = ast.get_docstring(ast.parse(module.read_text())) or ""
            assert first.strip(), f"{where} does not say what it holds"
