"""Turn one SDK event (a parsed JSON object) into a typed row of the table spec, or a rejection.

This is the only place the schema's input paths are interpreted. It is pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from pipelines.schema import Column, TableSpec

MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d+)")
_MAX_ID_LEN = 512


@dataclass(frozen=True)
class Reject:
    """Why an event cannot be landed: a stable reason code and a human detail."""

    reason: str
    detail: str


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        self.reject = Reject(reason, detail)


def parse_time(value: Any, field: str) -> datetime | None:
    """Parse an SDK time value to an aware UTC datetime; None when absent.

    Raises ``_Rejected`` (unparseable_time) for a value that is present but not a time, and
    (time_out_of_range) for a valid time that has no UTC datetime (``0001-01-01T00:00+01:00``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Rejected("unparseable_time", f"{field} is a boolean")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _Rejected("unparseable_time", f"{field}={value!r} is out of range") from None
    if not isinstance(value, str):
        raise _Rejected("unparseable_time", f"{field} is a {type(value).__name__}, not a time string")
    text = value.strip()
    if len(text) > 64:
        raise _Rejected("unparseable_time", f"{field} is too long to be a time")
    if not text.isprintable():  # fromisoformat stops at a NUL after a complete time
        raise _Rejected("unparseable_time", f"{field} holds control characters")
    # fromisoformat accepts at most 6 fraction digits; SDKs and Go servers send up to 9.
    m = _FRACTION.search(text)
    if m and len(m.group(1)) > 7:
        text = text[: m.start()] + m.group(1)[:7] + text[m.end() :]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Rejected("unparseable_time", f"{field}={value[:80]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # one such event must be quarantined, not crash the whole landing pass on every retry
        raise _Rejected("time_out_of_range", f"{field}={value[:80]!r} has no UTC equivalent") from None


def event_time(ts: datetime | None, original: datetime | None, sent: datetime | None,
               received: datetime | None) -> tuple[datetime | None, str]:
    """The schema's event_time rule; returns the time and which rule chose it."""
    if ts is not None:
        return ts, "timestamp"
    if original is not None and sent is not None and received is not None:
        try:
            return original + (received - sent), "original_corrected"
        except OverflowError:
            # a skew that pushes the time past year 1 or 9999 is out of range, not a crash
            raise _Rejected("time_out_of_range",
                            "originalTimestamp corrected by receivedAt - sentAt is out of range") from None
    if received is not None:
        return received, "received_at"
    if original is not None:
        return original, "original_timestamp"
    return None, "none"


_RULE_INPUTS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


def _kind(col: Column) -> str:
    if col.lineage:
        return "lineage"
    if col.derive == "event_time":
        return "event_time"
    if col.remainder:
        return "remainder"
    if col.type == "timestamp":
        # a top-level rule input (sentAt, ...) is parsed once for the rule and reused
        rule_input = len(col.paths) == 1 and len(col.paths[0]) == 1 and col.paths[0][0] in _RULE_INPUTS
        return "rule_time" if rule_input else "time"
    return "json" if col.type == "json" else "string"


def _getter(path: tuple[str, ...]):
    """A fast accessor for one JSON path (most paths have one to three parts)."""
    if len(path) == 1:
        (a,) = path
        return lambda o: o.get(a)
    if len(path) == 2:
        a, b = path

        def get2(o):
            v = o.get(a)
            return v.get(b) if isinstance(v, dict) else None

        return get2
    if len(path) == 3:
        a, b, c = path

        def get3(o):
            v = o.get(a)
            if not isinstance(v, dict):
                return None
            v = v.get(b)
            return v.get(c) if isinstance(v, dict) else None

        return get3
    return lambda o: _get(o, path)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
        if obj is None:
            return None
    return obj


def _string(col: Column, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if col.coerce == "id" and isinstance(value, int | float) and not isinstance(value, bool):
        # numeric ids: 12345 and 12345.0 are the same user
        return str(int(value)) if float(value).is_integer() else repr(value)
    raise _Rejected("wrong_type", f"{col.name} must be a string, got {type(value).__name__}")


def _json_text(col: Column, value: Any) -> str | None:
    if value is None:
        return None
    if col.name in ("properties", "traits", "integrations", "context") and not isinstance(value, dict):
        raise _Rejected("wrong_type", f"{col.name} must be an object, got {type(value).__name__}")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class Normalizer:
    """Compiled view of a spec's input mapping; call :meth:`row` per event."""

    def __init__(self, spec: TableSpec, future_tolerance: timedelta):
        self.spec = spec
        self.future_tolerance = future_tolerance
        # paths under a remainder object that other columns consume, removed from the remainder
        self._consumed: dict[str, list[tuple[str, ...]]] = {}
        remainders = {c.remainder for c in spec.columns if c.remainder}
        for c in spec.columns:
            for p in c.paths:
                if p[0] in remainders and len(p) > 1:
                    self._consumed.setdefault(p[0], []).append(p[1:])
        self._consumed_trees = {r: _path_tree(self._consumed.get(r, [])) for r in remainders}
        # compiled once: (column, kind, getters); the per-event loop then does no spec lookups
        self._plan = [(c, _kind(c), [_getter(p) for p in c.paths]) for c in spec.columns]

    def row(self, obj: Any, *, arrival: datetime, source_object: str, source_line: int,
            ingested_at: datetime) -> dict[str, Any] | Reject:
        """Map one event to a row dict (times as aware datetimes), or a :class:`Reject`."""
        if not isinstance(obj, dict):
            return Reject("not_an_object", f"a JSON {type(obj).__name__}, not an object")
        try:
            return self._row(obj, arrival, source_object, source_line, ingested_at)
        except _Rejected as exc:
            return exc.reject

    def _row(self, obj: dict, arrival: datetime, source_object: str, source_line: int,
             ingested_at: datetime) -> dict[str, Any]:
        # the event-time rule's inputs, each parsed once
        rule = {k: parse_time(obj.get(k), k) for k in _RULE_INPUTS}
        lineage = {"source_object": source_object, "source_line": source_line, "ingested_at": ingested_at}
        row: dict[str, Any] = {}
        for col, kind, getters in self._plan:
            if kind == "lineage":
                row[col.name] = lineage[col.lineage]
                continue
            if kind == "event_time":
                row[col.name], _ = event_time(rule["timestamp"], rule["originalTimestamp"],
                                              rule["sentAt"], rule["receivedAt"])
                continue
            if kind == "remainder":
                row[col.name] = self._remainder(col, obj.get(col.remainder))
                continue
            if kind == "rule_time":
                row[col.name] = rule[col.paths[0][0]]
                continue
            value = None
            for get in getters:
                value = get(obj)
                if value is not None:
                    break
            if kind == "json":
                row[col.name] = _json_text(col, value)
            elif kind == "time":
                row[col.name] = parse_time(value, ".".join(col.paths[0]))
            else:
                row[col.name] = _string(col, value)
        self._check(row, arrival)
        return row

    def _remainder(self, col: Column, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _Rejected("wrong_type", f"{col.remainder} must be an object, got {type(value).__name__}")
        rest = _prune(value, self._consumed_trees[col.remainder])
        return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode() if rest else None

    def _check(self, row: dict[str, Any], arrival: datetime) -> None:
        spec = self.spec
        for col in spec.columns:
            if col.required and (row[col.name] is None or row[col.name] == ""):
                if col.derive == "event_time":
                    raise _Rejected("missing_required", "no usable time: timestamp, originalTimestamp and receivedAt are all missing")
                raise _Rejected("missing_required", f"{col.paths[0][0] if col.paths else col.name} is missing")
        for group in spec.required_any:
            if all(row[name] in (None, "") for name in group):
                raise _Rejected("missing_required", f"none of {', '.join(group)} is present")
        if spec.event_types and row["event_type"] not in spec.event_types:
            raise _Rejected("unknown_event_type", f"type {row['event_type'][:40]!r} is not one of {sorted(spec.event_types)}")
        if len(row[spec.dedupe_key]) > _MAX_ID_LEN:
            raise _Rejected("wrong_type", f"{spec.dedupe_key} is longer than {_MAX_ID_LEN} characters")
        t = row[spec.partition_from]
        if t < MIN_EVENT_TIME:
            raise _Rejected("time_out_of_range", f"event time {t.isoformat()} is before {MIN_EVENT_TIME.date()}")
        # bounded by the arrival, not the clock, so landing the same file twice decides the same way
        if t > arrival + self.future_tolerance:
            raise _Rejected("time_out_of_range", f"event time {t.isoformat()} is after its arrival")


def _path_tree(paths: list[tuple[str, ...]]) -> dict:
    """``[("page", "url"), ("ip",)]`` -> ``{"page": {"url": None}, "ip": None}`` (None: drop it)."""
    tree: dict = {}
    for path in paths:
        node = tree
        for part in path[:-1]:
            child = node.get(part, {})
            if child is None:  # an ancestor is dropped whole already
                break
            node = node.setdefault(part, child)
        else:
            node[path[-1]] = None
    return tree


def _prune(obj: dict, tree: dict) -> dict:
    """A copy of ``obj`` without the tree's leaves; objects left empty by that are dropped too."""
    out = {}
    for key, value in obj.items():
        if key not in tree:
            out[key] = value
            continue
        sub = tree[key]
        if sub is None:
            continue
        if isinstance(value, dict):
            value = _prune(value, sub)
            if value:
                out[key] = value
        else:
            out[key] = value
    return out


def partition_of(t: datetime) -> tuple[date, int]:
    """(UTC date, UTC hour) of an aware datetime."""
    u = t.astimezone(UTC)
    return u.date(), u.hour
