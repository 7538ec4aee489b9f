"""Bulk inserts through UNNEST for models with array columns.

Django 5.2 inserts many rows as `INSERT ... SELECT * FROM UNNEST(%s::type[], ...)`, one
parameter per column, unless a column is an array (an array of arrays cannot be unnested row by
row): then it falls back to `VALUES (%s, ...), (...)`, one placeholder per value, each compiled
in Python and planned by PostgreSQL. `Message.server_ids` made every message insert take that
path: 30 placeholders a message, and corpus ingest ~6% slower (bench/ingest.py). Here an array
column travels as the text of its array literal, one text per row, cast back in the SELECT.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Field, Model


def bulk_insert(objs: Sequence[Model]) -> None:
    """Insert OBJS (new rows of one model, no pk yet) in one statement and set their pks, as
    `bulk_create` does."""
    if not objs:
        return
    fields, sql = _statement(type(objs[0]))
    _foreign_keys_take_ids(objs)
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: `connection` is a proxy
    params = []
    for field in fields:
        prep = field.get_db_prep_save
        if type(field).pre_save is Field.pre_save:  # no auto_now and the like: the attribute
            attname = field.attname
            values = [prep(getattr(obj, attname), db) for obj in objs]
        else:
            values = [prep(field.pre_save(obj, True), db) for obj in objs]
        params.append([_array_literal(v) for v in values] if _is_array(field) else values)
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = db.alias


def _foreign_keys_take_ids(objs: Sequence[Model]) -> None:
    """A foreign key given as an object saved after it was assigned (a parent inserted just
    before its children) takes that object's id, as `bulk_create` does."""
    for field in _foreign_keys(type(objs[0])):
        attname = field.attname
        for obj in objs:
            if getattr(obj, attname) is None and field.is_cached(obj):
                related = field.get_cached_value(obj)
                if related is not None:
                    setattr(obj, attname, related.pk)


@functools.cache
def _foreign_keys(model: type[Model]) -> list[Field]:
    return [f for f in model._meta.concrete_fields if f.many_to_one]


@functools.cache
def _statement(model: type[Model]) -> tuple[list[Field], str]:
    """The columns written and the INSERT of MODEL (its pk and generated columns left out)."""
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not f.generated and f is not opts.pk]
    quote = connection.ops.quote_name
    arrays, selects = [], []
    for n, field in enumerate(fields):
        db_type = field.db_type(connection)
        if _is_array(field):
            arrays.append("%s::text[]")
            selects.append(f"c{n}::{db_type}")
        else:
            arrays.append(f"%s::{db_type.split('(')[0]}[]")
            selects.append(f"c{n}")
    names = ", ".join(f"c{n}" for n in range(len(fields)))
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(arrays)}) AS u({names}) "
        f"RETURNING {quote(opts.pk.column)}"
    )
    return fields, sql


def _is_array(field: Field) -> bool:
    return isinstance(field, ArrayField)


def _array_literal(values: list[Any] | None) -> str | None:
    """PostgreSQL's text form of a one-dimensional array."""
    if values is None:
        return None
    items = (
        "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    )
    return "{" + ",".join(items) + "}"
