"""One case convention in the API: every field the schema documents is snake_case."""

import re

import pytest
import yaml

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _property_names(node, found):
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            found.add(name)
            _property_names(value, found)
        for key, value in node.items():
            if key != "properties":
                _property_names(value, found)
    elif isinstance(node, list):
        for value in node:
            _property_names(value, found)
    return found


@pytest.mark.django_db
def test_every_documented_field_is_snake_case(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    names = _property_names(schema["components"]["schemas"], set())
    assert {"object_id", "account_id", "has_more"} <= names
    assert sorted(n for n in names if not SNAKE.match(n)) == []
