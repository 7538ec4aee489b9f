"""Requests checked against the Gmail discovery document google-api-python-client bundles:
the method a path names (with its path parameters), and the query parameters it takes.

Google's front end refuses a query parameter the method does not declare with 400 INVALID_ARGUMENT
"Invalid JSON payload received. Unknown name "x": Cannot bind query parameter. Field 'x' could
not be found in request message.", a value outside a parameter's enum with 400 too.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import googleapiclient

from tests.gmail_fake.errors import ApiError, bad_request, not_found

DOCUMENT = Path(googleapiclient.__file__).parent / "discovery_cache/documents/gmail.v1.json"
_PLACEHOLDER = re.compile(r"\{\+?(\w+)\}")


@dataclass(frozen=True)
class Method:
    id: str  # e.g. "gmail.users.messages.modify"
    http_method: str
    patterns: tuple[re.Pattern, ...]  # the path, and the upload path of a media method
    parameters: dict  # name -> the document's description (location, type, enum, required)
    placeholders: int

    @property
    def query(self) -> dict:
        return {k: v for k, v in self.parameters.items() if v.get("location") == "query"}


def _pattern(template: str) -> re.Pattern:
    parts, end = [], 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[end : match.start()]))
        parts.append(f"(?P<{match[1]}>[^/]+)")
        end = match.end()
    parts.append(re.escape(template[end:]))
    return re.compile("^/" + "".join(parts).lstrip("/") + "$")


def _walk(resources: dict) -> list[dict]:
    found = []
    for resource in resources.values():
        found += resource.get("methods", {}).values()
        found += _walk(resource.get("resources", {}))
    return found


@functools.cache
def document() -> dict:
    return json.loads(DOCUMENT.read_text())


@functools.cache
def methods() -> tuple[Method, ...]:
    doc = document()
    out = []
    for spec in _walk(doc["resources"]):
        templates = [doc["servicePath"] + spec["path"]]
        simple = spec.get("mediaUpload", {}).get("protocols", {}).get("simple", {})
        if simple.get("path"):
            templates.append(simple["path"])
        out.append(
            Method(
                id=spec["id"],
                http_method=spec["httpMethod"],
                patterns=tuple(_pattern(t) for t in templates),
                parameters=spec.get("parameters", {}),
                placeholders=len(_PLACEHOLDER.findall(spec["path"])),
            )
        )
    # A literal segment wins over a placeholder: POST messages/send is not messages/{id}.
    return tuple(sorted(out, key=lambda m: m.placeholders))


def resolve(http_method: str, path: str) -> tuple[Method, dict[str, str]]:
    """The method PATH names and its path parameters; 404 for a path the API does not have."""
    for method in methods():
        if method.http_method != http_method:
            continue
        for pattern in method.patterns:
            match = pattern.match(path)
            if match:
                return method, match.groupdict()
    raise not_found()


def unknown_name(name: str) -> ApiError:
    text = (
        f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
        f"Field '{name}' could not be found in request message."
    )
    error = ApiError(400, text, "invalid")
    error.details = [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"description": text}],
        }
    ]
    return error


def check_query(method: Method, query: dict[str, list[str]]) -> None:
    """400 for a query parameter METHOD does not take, a missing required one, or a value
    outside a parameter's enum or type."""
    allowed = {**document()["parameters"], **method.query}
    for name in query:
        if name not in allowed:
            raise unknown_name(name)
    for name, spec in method.query.items():
        values = query.get(name, [])
        if spec.get("required") and not values:
            raise bad_request(f"Required parameter: {name}")
        if len(values) > 1 and not spec.get("repeated"):
            raise bad_request(f"Invalid value at '{name}': more than one value")
        for value in values:
            _check_value(name, spec, value)


def _check_value(name: str, spec: dict, value: str) -> None:
    enum = spec.get("enum")
    if enum and value not in enum and value.upper() not in {e.upper() for e in enum}:
        raise bad_request(f"Invalid value at '{name}' ({value!r})")
    kind = spec.get("type")
    if kind == "boolean" and value.lower() not in ("true", "false"):
        raise bad_request(f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"")
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        raise bad_request(f"Invalid value at '{name}' (TYPE_UINT32), \"{value}\"")
