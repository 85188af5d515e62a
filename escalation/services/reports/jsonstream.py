"""Streaming JSON (ijson): values at chosen paths, built one at a time, with the shape checked on the way."""

from collections.abc import Iterator
from typing import IO, Any

import ijson

from escalation.exceptions import MalformedReport

_OPEN = {"start_map", "start_array"}
_CLOSE = {"end_map", "end_array"}


def json_values(file: IO[bytes], paths: set[str], *, shapes: dict[str, str] | None = None) -> Iterator[tuple]:
    """Yield (indexes, path, value) for each value at one of ``paths`` (ijson prefixes such as
    ``runs.item.results.item``), ``indexes`` being the positions in the enclosing ``*.item`` arrays.

    ``shapes`` maps a path to the JSON type it must have ("object" or "array"); any other type
    answers 400 naming the path. Broken JSON answers 400 too.
    """
    shapes = shapes or {}
    file.seek(0)
    indexes: dict[str, int] = {}
    builder = None
    depth = 0
    building = ""
    try:
        for prefix, event, value in ijson.parse(file, use_float=True):
            if builder is not None:
                builder.event(event, value)
                depth += 1 if event in _OPEN else -1 if event in _CLOSE else 0
                if depth == 0:
                    yield _positions(building, indexes), building, builder.value
                    builder = None
                continue
            if event in _OPEN or event not in _CLOSE | {"map_key"}:
                if prefix.endswith(".item") or prefix == "item":
                    indexes[prefix] = indexes.get(prefix, -1) + 1
                    _forget_below(indexes, prefix)
                _check_shape(prefix, event, shapes, indexes)
            if prefix in paths and event != "map_key" and event not in _CLOSE:
                if event in _OPEN:
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    depth, building = 1, prefix
                else:
                    yield _positions(prefix, indexes), prefix, value
    except ijson.JSONError as exc:
        raise MalformedReport(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedReport(f"the body is not UTF-8: {exc}") from None


def _check_shape(prefix: str, event: str, shapes: dict[str, str], indexes: dict[str, int]) -> None:
    wanted = shapes.get(prefix)
    if wanted is None:
        return
    got = {"start_map": "object", "start_array": "array"}.get(event, _scalar_name(event))
    if got != wanted:
        raise MalformedReport(f"{_where(prefix, indexes)} must be a JSON {wanted}, not {got}")


def _where(prefix: str, indexes: dict[str, int]) -> str:
    """runs.item.results -> runs[0].results, with the positions being read."""
    if not prefix:
        return "the body"
    parts, path = [], []
    for part in prefix.split("."):
        path.append(part)
        if part == "item":
            parts[-1:] = [f"{parts[-1] if parts else ''}[{indexes.get('.'.join(path), 0)}]"]
        else:
            parts.append(part)
    return ".".join(parts)


def _scalar_name(event: str) -> str:
    return {"number": "number", "integer": "number", "double": "number", "boolean": "boolean"}.get(event, event)


def _positions(prefix: str, indexes: dict[str, int]) -> tuple[int, ...]:
    parts = prefix.split(".")
    return tuple(indexes.get(".".join(parts[: i + 1]), 0) for i, part in enumerate(parts) if part == "item")


def _forget_below(indexes: dict[str, int], prefix: str) -> None:
    for key in [k for k in indexes if k != prefix and k.startswith(prefix + ".")]:
        del indexes[key]


def first_char(file: IO[bytes]) -> str:
    """The first non-blank character of the body (after a byte-order mark), to tell formats apart."""
    file.seek(0)
    head = file.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    file.seek(0)
    return head[:1].decode("latin-1")


def top_keys(file: IO[bytes]) -> dict[str, Any]:
    """The scalar members of a top-level JSON object (nested values are skipped, not built)."""
    file.seek(0)
    found: dict[str, Any] = {}
    try:
        for prefix, event, value in ijson.parse(file, use_float=True):
            if prefix == "" and event not in ("start_map", "end_map", "map_key"):
                raise MalformedReport("the body must be a JSON object")
            if "." not in prefix and prefix and event not in _OPEN | _CLOSE | {"map_key"}:
                found[prefix] = value
            elif "." not in prefix and prefix and event in _OPEN:
                found.setdefault(prefix, "object" if event == "start_map" else "array")
    except ijson.JSONError as exc:
        raise MalformedReport(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedReport(f"the body is not UTF-8: {exc}") from None
    file.seek(0)
    return found
