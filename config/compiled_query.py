"""A read the API runs on every request, compiled by the ORM once per process and shape, then run
with each request's values: the QuerySet stays the one definition of the query (visibility and
consent rules included), and the compilation, which took longer than the query itself on the
profile and similar endpoints (README, issue 20), is paid once.

    nearest = CompiledQuery(lambda key: Profile.objects.filter(customer__key=key).values_list("pk"),
                            key=Slot("\\x00key"))
    nearest.rows(key="ab12…")

Each slot is a placeholder value the build is compiled with; it must reach the SQL as a parameter
equal to itself (strings, integers, vectors' text), and a compilation that does not show every
placeholder exactly once among the parameters is refused, so a build that inlines a value or
transforms it fails at its first use instead of running the wrong query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import QuerySet


@dataclass(frozen=True)
class Slot:
    placeholder: Any


class CompiledQuery:
    def __init__(self, build: Callable[..., QuerySet], **slots: Slot):
        self._build, self._slots = build, slots
        self._compiled: tuple[str, list, Any] | None = None
        self._lock = threading.Lock()

    def _compile(self) -> tuple[str, list, Any]:
        queryset = self._build(**{name: slot.placeholder for name, slot in self._slots.items()})
        sql, params = queryset.query.sql_with_params()
        where: list = []  # per parameter: the slot's name, or (None, the constant the build put there)
        for value in params:
            names = [name for name, slot in self._slots.items() if _same(value, slot.placeholder)]
            where.append((names[0], None) if names else (None, value))
        found = [name for name, _ in where if name]
        if sorted(found) != sorted(self._slots):
            raise ValueError(f"every slot must appear once among the compiled parameters: {found} for {list(self._slots)}")
        return sql, where, queryset.model

    def sql(self) -> str:
        return self._ready()[0]

    def _ready(self) -> tuple[str, list, Any]:
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._compile()
        return self._compiled

    def params(self, **values) -> list:
        _, where, _ = self._ready()
        return [values[name] if name else constant for name, constant in where]

    def rows(self, **values) -> list[tuple]:
        """The rows, as tuples in the order of the build's values_list, from the database the model
        is read from now (a replica inside a replica-read scope, config.db_router)."""
        sql, _, model = self._ready()
        with connections[router.db_for_read(model)].cursor() as cursor:
            cursor.execute(sql, self.params(**values))
            return cursor.fetchall()


def _same(value, placeholder) -> bool:
    return type(value) is type(placeholder) and value == placeholder
