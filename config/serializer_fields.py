"""Serializers of the hot read endpoints whose fields are built once, not on every request.

DRF's Serializer.get_fields deep-copies every declared field for each serializer instance, so that an
instance may change its own fields; re-instantiating the fields of the similar search's query string
(8 fields, their choices, validators and messages) cost more than the rest of its validation and about
a quarter of the request outside its queries (cProfile of bench/api_load.py's requests). The serializers
here never change their fields, and a DRF field keeps no state of one validation or representation (that
lives on the serializer: initial_data, validated_data, errors): so each thread builds a class's fields
once and every instance in that thread takes them, bound to itself each time it looks at them. One thread's instances follow each
other; no two threads share a field."""

import threading

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

_built = threading.local()


class FieldsBuiltOnce(serializers.Serializer):
    @property
    def fields(self):
        fields = self.__dict__.get("_fields_bound")
        if fields is None:
            by_class = _built.__dict__.setdefault("fields", {})
            prototype = by_class.get(type(self))
            if prototype is None:
                # bound once (DRF's bind sets each field's name, label and source), to this first instance
                prototype = by_class[type(self)] = BindingDict(self)
                for name, field in self.get_fields().items():
                    prototype[name] = field
            fields = self.__dict__["_fields_bound"] = BindingDict(self)
            fields.fields = prototype.fields
        # the parent is this instance whenever its fields are looked at, even if another instance of the class
        # took them since (a field's root and context are its parent's)
        for field in fields.fields.values():
            field.parent = self
        return fields
