"""No module writes another app's tables: a write (ORM update/delete/create…, or raw INSERT, UPDATE,
DELETE, TRUNCATE, COPY … FROM) names only its own app's models and tables. Another app's rows
change by calling that app's service (erasure calls each app's `*_erase`; a merge calls
ingestion.merging). Reads may cross apps freely, through selectors."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("config", "access", "privacy", "ingestion", "training", "profiles", "crm", "segments", "pipeline")
ORM_WRITES = {"update", "delete", "create", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}
SQL_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE|COPY)\s+\"?([a-z]+)_([a-z_]+)", re.I)


def _modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if not {"migrations", "tests"} & set(path.parts):
                yield app, path


def _model_owners(tree: ast.AST) -> dict[str, str]:
    owners = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".models"):
            for alias in node.names:
                owners[alias.asname or alias.name] = node.module.split(".")[0]
    return owners


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def foreign_writes(app: str, source: str) -> list[str]:
    """'line: what' for each write in `source` (a module of `app`) to another app's table."""
    tree = ast.parse(source)
    owners = _model_owners(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ORM_WRITES:
            name = _root_name(node.func.value)
            if name in owners and owners[name] != app:
                found.append(f"{node.lineno}: {name}.…{node.func.attr}() writes {owners[name]}'s table")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in SQL_WRITE.finditer(node.value):
                table_app = match.group(1).lower()
                if table_app in APPS and table_app != app:
                    found.append(f"{node.lineno}: SQL writes {match.group(1)}_{match.group(2)}")
    return found


def test_every_write_names_only_its_own_apps_tables():
    offences = {f"{path.relative_to(ROOT)}:{where}" for app, path in _modules()
                for where in foreign_writes(app, path.read_text())}
    assert not offences, "\n".join(sorted(offences))


@pytest.mark.parametrize(("snippet", "expected"), [
    ("from ingestion.models import Customer\nCustomer.objects.filter(pk=1).update(age=3)", "writes ingestion's"),
    ("from ingestion.models import Customer as C\nC.objects.get_or_create(key='k')", "writes ingestion's"),
    ("SQL = 'DELETE FROM ingestion_event WHERE customer_id = 1'", "SQL writes ingestion_event"),
    ("SQL = 'UPDATE \"ingestion_customer\" SET age = 1'", "SQL writes ingestion_customer"),
])
def test_the_check_sees_a_write_to_another_apps_table(snippet, expected):
    found = foreign_writes("profiles", snippet)
    assert len(found) == 1 and expected in found[0]


@pytest.mark.parametrize("snippet", [
    "from profiles.models import Profile\nProfile.objects.filter(pk=1).delete()",  # its own table
    "from ingestion.models import Customer\nCustomer.objects.filter(pk=1).values_list('id')",  # a read
    "SQL = 'TRUNCATE profile_stage'",  # a temporary table of its own
    "SQL = 'SELECT * FROM ingestion_event'",
])
def test_the_check_lets_reads_and_own_writes_pass(snippet):
    assert foreign_writes("profiles", snippet) == []
