"""The one-way dependency order (.importlinter, README "Architecture") holds, covers every module,
and a back-import breaks `make test`."""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
NOT_LAYERED = {"migrations", "tests", "apps", "__init__"}  # Django's plumbing and test code


def _contract() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return parser


def _lint(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_every_import_follows_the_layers():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_every_module_of_the_product_has_a_layer():
    contract = _contract()
    packages = contract["importlinter"]["root_packages"].split()
    layered = set(re.split(r"[\s:|]+", contract["importlinter:contract:layers"]["layers"])) - {""}
    missing = []
    for package in packages:
        for path in (ROOT / package).iterdir():
            name = path.stem if path.suffix == ".py" else path.name
            if name in NOT_LAYERED or name.startswith(("test_", "__")) or not (path.suffix == ".py" or path.is_dir()):
                continue
            if f"{package}.{name}" not in layered:
                missing.append(f"{package}.{name}")
    assert missing == [], "modules outside every layer of .importlinter (place each in one)"


def test_a_back_import_breaks_the_contract(tmp_path):
    for package in _contract()["importlinter"]["root_packages"].split():
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    with open(tmp_path / "profiles" / "services.py", "a") as module:  # profiles reaching up into segments
        module.write("\nfrom segments import selectors as _segments_selectors  # noqa\n")

    done = _lint(tmp_path)

    assert done.returncode != 0
    assert "profiles.services is not allowed to import segments.selectors" in done.stdout


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
