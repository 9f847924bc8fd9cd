"""A test that is not collected does not exist: every test_*.py in the repository must be collected.
pytest.ini collects only the one tree tests/<app>/, so a test file written anywhere else fails here."""

import subprocess
import sys
from pathlib import Path

from django.conf import settings

SKIPPED_TREES = {".venv", "var", "frontend", "node_modules", ".git"}


def test_every_test_file_in_the_repository_is_collected_by_make_test():
    root = Path(settings.BASE_DIR)
    on_disk = {
        str(path.relative_to(root))
        for path in root.rglob("test_*.py")
        if not SKIPPED_TREES.intersection(path.relative_to(root).parts)
    }
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    collected_files = {line.split("::", 1)[0] for line in collected.stdout.splitlines() if "::" in line}

    assert len(on_disk) > 40
    assert on_disk - collected_files == set(), "test files pytest does not collect (see pytest.ini)"
