"""The AWS Glue Data Catalog behind the :class:`~pipelines.catalog.Catalog` interface.

Each lake table is an external Parquet table in ``LAKE_GLUE_DATABASE`` that Athena (or Spark,
Trino, DuckDB) can query; each published partition is a Glue partition whose location is the
published version's folder, with the version, row count and file list in its parameters.

Glue has no conditional write for partitions, so compare-and-set is checked against a read taken
just before the write and the written partitions are read back afterwards: a publisher that
overwrote ours in between is reported as a conflict, never as success. Two publishers racing on
the *same* partition can still both pass their checks (last writer wins); the pipeline serializes
same-partition publishes with a lock (``pipelines/publish.py``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.catalog import (
    ConcurrentPublishError,
    Partition,
    check_compatible,
    validate_partition_key,
    validate_table,
    validate_updates,
)
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError, NotFoundError, SchemaError, TerminalError, TransientError
from pipelines.s3 import aws_error, aws_session, client_config
from pipelines.schema import TableSpec

_FORMATS = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                  "Parameters": {"serialization.format": "1"}},
}
# request limits of BatchGetPartition and Batch{Create,Update}Partition (botocore's service model)
_GET_CHUNK, _WRITE_CHUNK = 1000, 100
# per-entry batch errors worth another try; botocore retries whole failed calls, not entries
_RETRYABLE = frozenset({"InternalServiceException", "ThrottlingException",
                        "ConcurrentModificationException", "OperationTimeoutException"})
# a concurrent create or drop: re-read the partition and decide again
_REREAD = _RETRYABLE | {"AlreadyExistsException", "EntityNotFoundException"}
# Glue codes aws_error (written for S3) does not know are terminal
_TERMINAL = frozenset({"AccessDeniedException", "InvalidInputException", "ValidationException",
                       "ResourceNumberLimitExceededException", "GlueEncryptionException",
                       "EntityNotFoundException", "UnrecognizedClientException"})
_ATTEMPTS = 8
# table properties every lake table carries (tables created before one was added get it on the
# next ensure_table). Athena (engine v3) skips GLACIER / DEEP_ARCHIVE objects, even restored
# ones, unless the table says to read restored ones: `lake restore` depends on it
# (https://docs.aws.amazon.com/athena/latest/ug/querying-glacier.html)
_TABLE_PROPERTIES = {"read_restored_glacier_objects": "true"}
_MAX_PARAMETER = 512_000  # characters in one Glue parameter value


def _code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def _error(exc: Exception, what: str) -> Exception:
    err = aws_error(exc, what)
    if _code(exc) in _TERMINAL and not isinstance(err, TerminalError):
        return TerminalError(str(err))
    return err


def _backoff(attempt: int) -> None:
    time.sleep(min(5.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))


def _hive(columns: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(c["Name"].lower(), c["Type"].lower()) for c in columns]


def _columns(spec: TableSpec) -> list[dict[str, str]]:
    # Glue refuses column comments over 255 characters; they only describe, so cut them
    return [{**c, "Comment": c["Comment"][:255]} for c in spec.hive_columns()]


class GlueCatalog:
    """Tables and partitions in one Glue database."""

    def __init__(self, client: Any, database: str):
        self.client = client
        self.database = database
        # what ensure_table last accepted per table, and the table's StorageDescriptor, which
        # every partition copies: publishing then needs no GetTable per call
        self._ensured: dict[str, tuple] = {}
        self._descriptors: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> GlueCatalog:
        """A catalog on ``LAKE_GLUE_DATABASE`` with the lake's AWS session and retry settings."""
        client = aws_session(settings).client("glue", endpoint_url=settings.glue_endpoint_url or None,
                                              config=client_config(settings))
        return cls(client, settings.glue_database)

    def _call(self, what: str, fn, **kwargs) -> Any:
        try:
            return fn(DatabaseName=self.database, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "EntityNotFoundException" and "TableName" in kwargs:
                self._forget(kwargs["TableName"])  # dropped behind our back: ensure_table again
                raise NotFoundError(f"Glue table {self.database}.{kwargs['TableName']} does not exist "
                                    "(ensure_table creates it)") from exc
            raise _error(exc, what) from exc

    def _forget(self, table: str) -> None:
        self._ensured.pop(table, None)
        self._descriptors.pop(table, None)

    # -- tables ----------------------------------------------------------------------------------

    def _get_table(self, table: str) -> dict[str, Any] | None:
        try:
            return self.client.get_table(DatabaseName=self.database, Name=table)["Table"]
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "EntityNotFoundException":
                return None
            raise _error(exc, f"reading Glue table {self.database}.{table}") from exc

    def ensure_table(self, spec: TableSpec, location: str) -> None:
        """Create the database and table, or append new columns; refuse any other change.

        An incompatible spec raises :class:`SchemaError` before anything is written. An additive
        change is written with the table's ``VersionId``, so a concurrent table update is re-read
        and re-checked instead of lost.
        """
        validate_table(spec, location)
        signature = (tuple(_hive(spec.hive_columns())), spec.version, location)
        if self._ensured.get(spec.table) == signature:
            return
        name = f"Glue table {self.database}.{spec.table}"
        for attempt in range(_ATTEMPTS):
            table = self._get_table(spec.table)
            if table is None:
                descriptor = self._create_table(spec, location)
                if descriptor is None:
                    continue  # another process created it first: compare with theirs
            else:
                table_input = self._evolved(table, spec, location)
                descriptor = (table_input or table)["StorageDescriptor"]
                if table_input is not None:
                    try:
                        version = {"VersionId": table["VersionId"]} if table.get("VersionId") else {}
                        self.client.update_table(DatabaseName=self.database, TableInput=table_input, **version)
                    except (ClientError, BotoCoreError) as exc:
                        if _code(exc) != "ConcurrentModificationException":
                            raise _error(exc, f"updating {name}") from exc
                        _backoff(attempt)
                        continue
            self._descriptors[spec.table] = descriptor
            self._ensured[spec.table] = signature
            return
        raise TransientError(f"{name} kept changing while it was being updated; try again")

    def _create_table(self, spec: TableSpec, location: str) -> dict[str, Any] | None:
        """Create the table (and database); None when someone else created the table first."""
        try:
            self.client.create_database(DatabaseInput={"Name": self.database})
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "AlreadyExistsException":
                raise _error(exc, f"creating Glue database {self.database}") from exc
        descriptor = {"Columns": _columns(spec), "Location": location, **_FORMATS}
        try:
            self.client.create_table(DatabaseName=self.database, TableInput={
                "Name": spec.table, "Description": spec.description[:2048], "TableType": "EXTERNAL_TABLE",
                "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE", "parquet.compression": "ZSTD",
                               "lake.table": spec.qualified_name, "lake.schema_version": str(spec.version),
                               **_TABLE_PROPERTIES},
                "StorageDescriptor": descriptor, "PartitionKeys": spec.hive_partition_keys()})
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "AlreadyExistsException":
                return None
            raise _error(exc, f"creating Glue table {self.database}.{spec.table}") from exc
        return descriptor

    def _evolved(self, table: dict[str, Any], spec: TableSpec, location: str) -> dict[str, Any] | None:
        """The TableInput taking ``table`` to ``spec``; None when it already matches."""
        name = f"{self.database}.{spec.table}"
        descriptor = table.get("StorageDescriptor") or {}
        parameters = table.get("Parameters") or {}
        old, new = _hive(descriptor.get("Columns", [])), _hive(spec.hive_columns())
        check_compatible(old, new, spec.table)
        keys = [k["Name"].lower() for k in table.get("PartitionKeys", [])]
        if keys != [spec.partition_key]:
            raise SchemaError(f"Glue table {name} is partitioned by {keys}, not [{spec.partition_key!r}]")
        try:
            stored = int(parameters.get("lake.schema_version") or 0)
        except ValueError:
            stored = 0
        if stored > spec.version:
            raise SchemaError(f"table {spec.table} is at schema v{stored}, newer than v{spec.version}")
        if (descriptor.get("Location") or "").rstrip("/") != location.rstrip("/"):
            # most likely two lakes sharing one database: they would overwrite each other's partitions
            raise ConfigError(f"Glue table {name} points at {descriptor.get('Location')}, not {location}; "
                              "give each lake its own LAKE_GLUE_DATABASE")
        properties_ok = all(parameters.get(k) == v for k, v in _TABLE_PROPERTIES.items())
        if old == new and stored == spec.version and properties_ok:
            return None
        allowed = self.client.meta.service_model.shape_for("TableInput").members
        table_input = {k: v for k, v in table.items() if k in allowed}
        table_input["StorageDescriptor"] = {**descriptor, "Columns": _columns(spec)}
        table_input["Parameters"] = {**parameters, "lake.schema_version": str(spec.version), **_TABLE_PROPERTIES}
        return table_input

    def _descriptor(self, table: str) -> dict[str, Any]:
        if table not in self._descriptors:
            found = self._get_table(table)
            if found is None:
                raise NotFoundError(f"Glue table {self.database}.{table} does not exist (ensure_table creates it)")
            self._descriptors[table] = found["StorageDescriptor"]
        return self._descriptors[table]

    # -- partitions ------------------------------------------------------------------------------

    def get_partition(self, table: str, dt: str) -> Partition | None:
        """The partition as Glue has it, or None (also when the table does not exist)."""
        validate_partition_key(table, dt)
        try:
            found = self.client.get_partition(DatabaseName=self.database, TableName=table, PartitionValues=[dt])
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "EntityNotFoundException":
                return None
            raise _error(exc, f"reading Glue partition {table} dt={dt}") from exc
        return _partition(table, found["Partition"])

    def list_partitions(self, table: str) -> list[Partition]:
        """Every partition of the table, by date ([] when the table does not exist)."""
        pages = self.client.get_paginator("get_partitions").paginate(
            DatabaseName=self.database, TableName=table, ExcludeColumnSchema=True)
        try:
            found = [_partition(table, p) for page in pages for p in page.get("Partitions", ())]
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "EntityNotFoundException":
                return []
            raise _error(exc, f"listing Glue partitions of {table}") from exc
        return sorted(found, key=lambda p: p.dt)

    def publish(self, table: str, partition: Partition, expected_version: str | None) -> None:
        """Point the partition at a new version if it is still at ``expected_version``."""
        self.publish_many(table, [(partition, expected_version)])

    def publish_many(self, table: str, updates: Sequence[tuple[Partition, str | None]]) -> list[str]:
        """Publish many partitions, each compare-and-set against its expected version.

        Returns the dates changed. Raises :class:`ConcurrentPublishError` naming the partitions
        found at another version (before or right after the write) once the others are applied.
        A failed batch call may leave part of the updates applied; publishing again is idempotent.
        """
        validate_updates(table, updates)
        wanted = {p.dt: (p, expected) for p, expected in updates}
        if len(wanted) != len(updates):
            raise ValueError(f"{table}: publish_many got the same partition twice")
        if not wanted:
            return []
        descriptor = self._descriptor(table)
        inputs = {dt: _partition_input(descriptor, p) for dt, (p, _) in wanted.items()}
        pending, tried, written = set(wanted), set(), set()
        conflicts: dict[str, str] = {}
        failures: dict[str, tuple[str, str]] = {}  # dt -> (error code, message)
        for attempt in range(_ATTEMPTS):
            current = self._batch_get(table, sorted(pending))
            creates, replaces = [], []
            for dt in sorted(pending):
                p, expected = wanted[dt]
                cur = current.get(dt)
                if cur is not None and cur.version == p.version:
                    pending.discard(dt)  # already published: by us on an earlier try, or before
                    if dt in tried:
                        written.add(dt)
                elif cur is None and expected is None:
                    creates.append(dt)
                # the same location is the same data: adopt a partition someone registered by hand
                elif cur is not None and (cur.version == expected or cur.location == p.location):
                    replaces.append(dt)
                else:
                    conflicts[dt] = f"dt={dt} is at {cur.version if cur else None}, expected {expected}"
                    pending.discard(dt)
            tried.update(creates, replaces)
            errors = self._write(table, "create", [inputs[dt] for dt in creates])
            errors.update(self._write(table, "update", [inputs[dt] for dt in replaces]))
            for dt in (*creates, *replaces):
                code, message = errors.get(dt, ("", ""))
                if not code:
                    written.add(dt)
                    pending.discard(dt)
                elif code in _REREAD:
                    failures[dt] = (code, f"dt={dt}: {code} {_ATTEMPTS} times: {message}")  # unless a retry works
                else:
                    failures[dt] = (code, f"dt={dt}: {code}: {message}")
                    pending.discard(dt)
            if not pending:
                break
            if any(code in _RETRYABLE for code, _ in errors.values()):
                _backoff(attempt)
        # a publisher that wrote between our read and our write, or right after it, shows here
        after = self._batch_get(table, sorted(written))
        for dt in sorted(written):
            now = after.get(dt)
            if now is None or now.version != wanted[dt][0].version:
                conflicts[dt] = f"dt={dt} is at {now.version if now else None} right after publishing"
        changed = [p.dt for p, _ in updates if p.dt in written and p.dt not in conflicts]
        failures = {dt: f for dt, f in failures.items() if dt not in written and dt not in conflicts}
        if failures:
            retryable = any(code in _REREAD for code, _ in failures.values())
            raise (TransientError if retryable else TerminalError)(
                f"{table}: {len(failures)} partition(s) not published in Glue: "
                + "; ".join([*(text for _, text in failures.values()), *conflicts.values()]))
        if conflicts:
            raise ConcurrentPublishError(f"{table}: " + "; ".join(conflicts.values()), sorted(conflicts))
        return changed

    def _batch_get(self, table: str, dts: list[str]) -> dict[str, Partition]:
        found: dict[str, Partition] = {}
        for i in range(0, len(dts), _GET_CHUNK):
            keys = [{"Values": [dt]} for dt in dts[i:i + _GET_CHUNK]]
            for attempt in range(_ATTEMPTS):
                r = self._call(f"reading Glue partitions of {table}", self.client.batch_get_partition,
                               TableName=table, PartitionsToGet=keys)
                found.update((p["Values"][0], _partition(table, p)) for p in r.get("Partitions", ()))
                keys = r.get("UnprocessedKeys") or []
                if not keys:
                    break
                _backoff(attempt)
            else:
                raise TransientError(f"Glue kept {len(keys)} partitions of {table} unprocessed")
        return found

    def _write(self, table: str, op: str, inputs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """Create or update partitions in batches; per-entry errors by dt."""
        errors: dict[str, tuple[str, str]] = {}
        for i in range(0, len(inputs), _WRITE_CHUNK):
            chunk = inputs[i:i + _WRITE_CHUNK]
            if op == "create":
                r = self._call(f"creating Glue partitions of {table}", self.client.batch_create_partition,
                               TableName=table, PartitionInputList=chunk)
            else:
                r = self._call(f"updating Glue partitions of {table}", self.client.batch_update_partition,
                               TableName=table,
                               Entries=[{"PartitionValueList": p["Values"], "PartitionInput": p} for p in chunk])
            for e in r.get("Errors") or ():
                values = e.get("PartitionValues") or e.get("PartitionValueList") or [""]
                detail = e.get("ErrorDetail") or {}
                errors[values[0]] = (detail.get("ErrorCode") or "UnknownError", detail.get("ErrorMessage", ""))
        return errors

    def drop_partition(self, table: str, dt: str) -> None:
        """Remove the partition from Glue; a missing partition (or table) is fine."""
        validate_partition_key(table, dt)
        try:
            self.client.delete_partition(DatabaseName=self.database, TableName=table, PartitionValues=[dt])
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "EntityNotFoundException":
                raise _error(exc, f"dropping Glue partition {table} dt={dt}") from exc


def _partition_input(descriptor: dict[str, Any], p: Partition) -> dict[str, Any]:
    files = orjson.dumps(list(p.files)).decode()
    if len(files) > _MAX_PARAMETER:
        raise TerminalError(f"dt={p.dt}: {len(p.files)} file URIs exceed Glue's {_MAX_PARAMETER}-character "
                            "parameter limit; compact the partition into fewer files")
    return {"Values": [p.dt], "StorageDescriptor": {**descriptor, "Location": p.location},
            "Parameters": {"lake.version": p.version, "lake.rows": str(p.rows),
                           "lake.published_at": repr(float(p.published_at)), "lake.files": files}}


def _partition(table: str, glue: dict[str, Any]) -> Partition:
    """Map a Glue partition; one registered by other tools gets version "" and no files."""
    params = glue.get("Parameters") or {}
    try:
        files = tuple(orjson.loads(params["lake.files"]))
    except (KeyError, orjson.JSONDecodeError):
        files = ()
    try:
        rows = int(params.get("lake.rows") or 0)
    except ValueError:
        rows = 0
    try:
        published_at = float(params["lake.published_at"])
    except (KeyError, ValueError):
        created = glue.get("CreationTime")
        published_at = created.timestamp() if isinstance(created, datetime) else 0.0
    return Partition(table=table, dt=glue["Values"][0], version=params.get("lake.version", ""),
                     location=(glue.get("StorageDescriptor") or {}).get("Location", ""),
                     files=files, rows=rows, published_at=published_at)
