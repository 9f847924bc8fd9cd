"""A read the API runs on every request, compiled by the ORM once per process and shape, then run
with each request's values: the QuerySet stays the one definition of the query (visibility and
consent rules included), and the compilation, which took longer than the query itself on the
profile and similar endpoints (README, issue 20), is paid once.

    by_key = CompiledQuery(lambda key: Profile.objects.filter(customer__key=key).values_list("pk"),
                           key=Slot("\\x00key"))
    by_key.rows(key="ab12…")       # tuples, for a values_list build
    by_key.instances(key="ab12…")  # model instances (select_related and annotations too), for a model build

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
        self._compiler = None
        self._converters: dict = {}
        self._layouts: dict[str, tuple] = {}  # per database alias: instances()'s columns and related populators
        self._lock = threading.Lock()

    def _compile(self) -> tuple[str, list, Any]:
        queryset = self._build(**{name: slot.placeholder for name, slot in self._slots.items()})
        # the compiler keeps what as_sql worked out (columns, select_related, converters) for instances()
        self._compiler = compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        # the fields' converters, worked out once (results_iter works them out for every call)
        fields = [column[0] for column in compiler.select[:compiler.col_count]]
        if compiler.has_composite_fields(fields):
            raise ValueError("a build selecting a composite field is not supported")
        self._converters = compiler.get_converters(fields)
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
        """The rows as the database sends them, in the order of the build's values_list, from the
        database the model is read from now (a replica inside a replica-read scope, config.db_router)."""
        sql, _, model = self._ready()
        with connections[router.db_for_read(model)].cursor() as cursor:
            cursor.execute(sql, self.params(**values))
            return cursor.fetchall()

    def instances(self, **values) -> list:
        """The rows as model instances, as iterating the build's QuerySet makes them
        (django.db.models.query.ModelIterable): the fields' converters applied, select_related
        objects attached, annotations set."""
        _, _, model = self._ready()
        db = router.db_for_read(model)
        rows = self.rows(**values)
        compiler = self._compiler
        klass_info, annotation_col_map = compiler.klass_info, compiler.annotation_col_map or {}
        start, end, init_list, populators = self._layout(db)
        if self._converters:
            rows = compiler.apply_converters(rows, self._converters)
        out = []
        for row in rows:
            obj = klass_info["model"].from_db(db, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in annotation_col_map.items():
                setattr(obj, name, row[position])
            out.append(obj)
        return out

    def _layout(self, db: str) -> tuple:
        layout = self._layouts.get(db)
        if layout is None:
            from django.db.models.query import get_related_populators

            compiler = self._compiler
            select, klass_info = compiler.select, compiler.klass_info
            start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
            init_list = [column[0].target.attname for column in select[start:end]]
            layout = self._layouts[db] = (start, end, init_list, get_related_populators(klass_info, select, db))
        return layout


def _same(value, placeholder) -> bool:
    return type(value) is type(placeholder) and value == placeholder
