"""One JSON Lines record: parsed, checked and its text fields taken out, or a BadRecord.

`parse_line` parses one line with orjson and, when orjson rejects it (or may have widened an
integer), with the stdlib parser (`parse_line_stdlib`), so the accepted records and the error kinds
are exactly the stdlib's. `check_object` and `record_fields` require a JSON object holding every
requested key as a string; `matches` applies the `filters` of a read. Each failure is a BadRecord
whose `kind` is one of `base.RECORD_ERROR_KINDS`. Used by the JSON Lines and Parquet readers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from dataprep.readers.base import excerpt, type_name

_MISSING = object()
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a UTF-16 pair


class BadRecord(Exception):
    """A record that cannot become a Document; `kind` is one of base.RECORD_ERROR_KINDS."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _first_line_hint(text: str) -> str:
    start = text.lstrip("\ufeff \t").lower()
    if start.startswith(("<!doctype html", "<html")):
        return " (the content is an HTML page, not JSON Lines: download the file again)"
    if start.startswith("version https://git-lfs"):
        return " (the content is a git-LFS pointer: run `git lfs pull`)"
    if start.startswith("["):
        return (
            " (the file looks like one JSON array, not JSON Lines: convert it with `jq -c '.[]'`)"
        )
    return ""


def parse_line(raw: bytes, line: int) -> Any:
    """The JSON value of one line (bytes, with or without its newline), or BadRecord."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also what the stdlib accepts (NaN): let it decide
        return parse_line_stdlib(raw, line)
    if _may_be_a_wide_integer(value):  # orjson reads integers past 64 bits as floats
        return parse_line_stdlib(raw, line)
    return value


def _may_be_a_wide_integer(value: Any) -> bool:
    """True if a float in `value` is at least 2**63 in size: orjson's reading of an integer too
    wide for 64 bits (or a literal such as 1e20, which the stdlib then reads the same)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is float and abs(v) >= 9.2e18:
            return True
    return False


def parse_line_stdlib(raw: bytes, line: int) -> Any:
    """`parse_line` by the stdlib parser alone: the reference for what is accepted."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[max(0, e.start - 10) : e.start + 10]
        raise BadRecord(
            "invalid_utf8",
            f"invalid UTF-8 at byte {e.start + 1} of the line ({e.reason}): {bad!r}; "
            "re-encode the file as UTF-8",
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        found = excerpt(text.rstrip("\r\n"), e.pos)
        hint = _first_line_hint(text) if line == 1 else ""
        raise BadRecord(
            "not_json",
            f"not JSON: {e.msg.removesuffix(' at')} at column {e.colno}: {found}{hint}",
        ) from None
    except RecursionError:
        raise BadRecord("not_json", "not JSON: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        # the JSON escape of a lone surrogate ("\ud800") parses to a str that is not valid UTF-8
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            code = ord(e.object[e.start])
            found = excerpt(text.rstrip("\r\n"), text.find(f"{code:04x}"))
            raise BadRecord(
                "lone_surrogate",
                f"the JSON escape \\u{code:04x} is a lone UTF-16 surrogate (half of a character), "
                f"which is not valid text: {found}",
            ) from None
    return value


def check_object(record: Any, json_keys: Sequence[str], raw: bytes) -> dict:
    """The record if it is a JSON object, else BadRecord("not_object")."""
    if type(record) is not dict:
        found = excerpt(raw.decode("utf-8", "replace").rstrip("\r\n"))
        like = f'{{"{json_keys[0]}": ...}}'
        raise BadRecord(
            "not_object", f"a JSON {type_name(record)}, expected an object like {like}: {found}"
        )
    return record


def record_fields(record: dict, json_keys: Sequence[str]) -> dict[str, str]:
    """key -> text for every requested key of a JSON object, or BadRecord."""
    fields = {}
    for key in json_keys:
        value = record.get(key, _MISSING)
        if type(value) is str:
            fields[key] = value
        elif value is _MISSING:
            keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
            raise BadRecord(
                "missing_key",
                f"missing key {key!r} (keys found: {keys})",
            )
        elif value is None:
            raise BadRecord("null_text", f"{key!r} is null, expected a string")
        else:
            found = json.dumps(value, ensure_ascii=False)
            found = found if len(found) <= 40 else found[:40] + "…"
            raise BadRecord(
                "non_string_text",
                f"{key!r} is a JSON {type_name(value)} ({found}), expected a string",
            )
    return fields


def filter_value(key: str, metadata: Mapping[str, Any], record: Mapping[str, Any]) -> Any:
    """The value `filters[key]` matches: from the metadata, a top-level field, or meta[key]."""
    value = metadata.get(key, _MISSING)
    if value is _MISSING:
        value = record.get(key, _MISSING)
    if value is _MISSING:
        meta = record.get("meta")
        value = meta.get(key, _MISSING) if isinstance(meta, dict) else _MISSING
    return value


def matches(filters: Mapping[str, Collection[str]], metadata: Mapping, record: Mapping) -> bool:
    for key, allowed in filters.items():
        value = filter_value(key, metadata, record)
        if value is _MISSING:
            return False
        if isinstance(value, str):
            if value not in allowed:
                return False
        elif str(value) not in allowed:  # e.g. a number compared with the strings given
            return False
    return True
