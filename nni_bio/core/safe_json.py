"""JSON in and out: reading what a user (or someone else) handed in (genotype files, ``--sample``,
``--rule-map``), and writing result files atomically (:func:`write_json`, every layer's one way to write JSON).

Such a file may be crafted. :func:`read_json` reads at most :data:`MAX_BYTES`, refuses nesting deeper
than :data:`MAX_DEPTH` before parsing (Python's parser would recurse until it overflows), refuses
numbers that are not finite or too long to be numbers (``1e999``, a 5,000-digit integer), and then
checks the shape the caller needs (a schema function), so a bad file gets one clear error naming it,
never a traceback or a long stall.

Example:
    >>> read_json('{"conv1": "conv_3x3@fa"}', what="--sample", schema=sample_schema)
    {'conv1': 'conv_3x3@fa'}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError, write_failure

#: the largest JSON document read (1 MiB: a DARTS genotype is about 2 kB)
MAX_BYTES = 1 << 20
#: the deepest nesting of arrays and objects accepted (a genotype needs 4)
MAX_DEPTH = 32
#: the longest number literal accepted, in characters
MAX_NUMBER = 64
#: the keys a genotype file may hold (``search_spaces``: every space's ``export_genotype``)
GENOTYPE_KEYS = ("space", "args", "sample", "normal", "normal_concat", "reduce", "reduce_concat")


class UnsafeJsonError(NniBioError, ValueError):
    """A JSON input that is too large, too deep, not finite, or not the shape it must have."""


def read_json(source: str | os.PathLike, *, what: str, schema: Callable[[Any, str], None] | None = None,
              is_path: bool | None = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``source`` (a path, or JSON text when ``is_path`` is false or it is a ``str`` starting with ``{``/``[``).

    Raises:
        UnsafeJsonError: one line naming ``what``, the problem and the limit.
    """
    if is_path is None:
        is_path = isinstance(source, os.PathLike) or not str(source).lstrip().startswith(("{", "["))
    if is_path:
        path = Path(source)
        what = f"{what} {path}"
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise UnsafeJsonError(f"{what}: {size:,} bytes, more than the {max_bytes:,} a JSON input may have")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UnsafeJsonError(f"cannot read {what}: {exc}") from exc
    else:
        text = str(source)
        if len(text) > max_bytes:
            raise UnsafeJsonError(f"{what}: {len(text):,} characters, more than the {max_bytes:,} a JSON input may have")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise UnsafeJsonError(f"{what}: nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        value = json.loads(text, parse_float=_number(what, float), parse_int=_number(what, int),
                           parse_constant=_not_finite(what))
    except json.JSONDecodeError as exc:
        raise UnsafeJsonError(f"{what} is not valid JSON: {exc}") from exc
    if schema is not None:
        schema(value, what)
    return value


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _number(what: str, kind: type) -> Callable[[str], Any]:
    def parse(literal: str) -> Any:
        if len(literal) > MAX_NUMBER:
            raise UnsafeJsonError(f"{what}: a number of {len(literal):,} characters; at most {MAX_NUMBER} are accepted")
        value = kind(literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise UnsafeJsonError(f"{what}: the number {literal} is not finite")
        return value

    return parse


def _not_finite(what: str) -> Callable[[str], Any]:
    def parse(literal: str) -> Any:
        raise UnsafeJsonError(f"{what}: {literal} is not a number JSON allows here")

    return parse


# ------------------------------------------------------------------------------------------ schemas

def _fail(what: str, problem: str) -> None:
    raise UnsafeJsonError(f"{what}: {problem}")


def _is_choice(value: Any) -> bool:
    """A sample's value: a candidate name, an index, or a list of indices (cell inputs)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return not isinstance(value, str) or len(value) <= 200
    return isinstance(value, list) and len(value) <= 64 and all(isinstance(v, (str, int)) for v in value)


def sample_schema(value: Any, what: str) -> None:
    """An architecture sample: ``{slot label: candidate}``."""
    if not isinstance(value, dict):
        _fail(what, f"must be a JSON object of slot -> candidate, got {type(value).__name__}")
    if len(value) > 10_000:
        _fail(what, f"{len(value):,} slots; a sample has at most 10,000")
    bad = [k for k, v in value.items() if len(k) > 200 or not _is_choice(v)]
    if bad:
        _fail(what, f"slot(s) {', '.join(map(repr, bad[:5]))} hold something that is not a candidate name, index or "
                    "list of indices")


def genotype_schema(value: Any, what: str) -> None:
    """A genotype file: ``{"space": NAME, "args": {...}, "sample": {...}}`` (plus a DARTS cell's own keys)."""
    if not isinstance(value, dict):
        _fail(what, f"a genotype is a JSON object with 'space', 'args' and 'sample', got {type(value).__name__}")
    unknown = sorted(set(value) - set(GENOTYPE_KEYS))
    if unknown:
        _fail(what, f"unknown key(s) {', '.join(map(repr, unknown[:5]))}; a genotype has {', '.join(GENOTYPE_KEYS)}")
    missing = [k for k in ("space", "sample") if k not in value]
    if missing:
        _fail(what, f"lacks {', '.join(map(repr, missing))} (a genotype.json written by a search has them)")
    if not isinstance(value["space"], str) or len(value["space"]) > 64:
        _fail(what, f"'space' must be a space name, got {str(value['space'])[:80]!r}")
    if not isinstance(value.get("args", {}), dict):
        _fail(what, "'args' must be a JSON object of the space's arguments")
    sample_schema(value["sample"], f"{what} 'sample'")


def rule_map_schema(value: Any, what: str) -> None:
    """``--rule-map``: ``{fnmatch pattern: rule name}``."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(k) <= 500
                                              and len(v) <= 200 for k, v in value.items()):
        _fail(what, 'must be a JSON object of pattern -> rule name, e.g. {"0": "backprop", "*": "usf"}')


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # full disk, read-only folder: the old file stays; one line says where and why
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_failure(path, exc) from exc


__all__ = ["MAX_BYTES", "MAX_DEPTH", "UnsafeJsonError", "genotype_schema", "nesting_depth", "read_json",
           "rule_map_schema", "sample_schema", "write_json"]
