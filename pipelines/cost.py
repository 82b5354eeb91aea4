"""COST: what the lake costs per month, what compaction saves in requests, what tiering would change.

Read-only: one listing per bucket, the published manifests and :func:`pipelines.tier.plan`.

Storage is priced per GiB-month from the policy's price table (``LAKE_PRICES_FILE`` over
:data:`pipelines.tier.DEFAULT_PRICES`), with S3's per-object billing rules applied:

* STANDARD_IA, ONEZONE_IA and GLACIER_IR bill an object smaller than 128 KiB as 128 KiB;
* GLACIER (Flexible Retrieval) and DEEP_ARCHIVE add 40 KiB to every object: 8 KiB of metadata
  billed at the STANDARD price and 32 KiB of index billed at the class's own price.

Minimum storage durations (30/90/180 days) are one-off charges on early deletion, not part of a
monthly bill, so they are left out; so are tiered volume discounts (prices are flat per GiB).
A storage class with no price (INTELLIGENT_TIERING, say) is reported with its bytes and no USD.
The embedded backend has one class: its folders are priced as if they were S3 STANDARD.

Request prices (USD per 1,000) default to S3 us-east-1 list prices and can be overridden by a
``"requests"`` section of the same prices file::

    {"STANDARD": 0.021, "requests": {"GET": 0.0004, "PUT": 0.005, "TRANSITION": {"GLACIER": 0.03}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipelines.compact import read_manifest
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError
from pipelines.lake import Lake
from pipelines.tier import CLASSES, GiB, TieringPolicy, load_prices, plan

KiB = 1024
#: S3's minimum billable object size in the infrequent-access and instant-retrieval classes
MIN_BILLABLE_BYTES = 128 * KiB
_MIN_SIZE_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "GLACIER_IR"})
#: per-object overhead of the archive classes: (bytes at the class price, bytes at STANDARD's)
ARCHIVE_OVERHEAD = {"GLACIER": (32 * KiB, 8 * KiB), "DEEP_ARCHIVE": (32 * KiB, 8 * KiB)}

# S3 us-east-1 request list prices, USD per 1,000 requests, as quoted from aws.amazon.com/s3/pricing
# in May-June 2026 (checked 2026-12-03): GET/SELECT $0.0004; PUT/COPY/POST/LIST $0.005; lifecycle
# transitions into a class are billed per object moved at that class's rate.
DEFAULT_GET_PRICE = 0.0004
DEFAULT_PUT_PRICE = 0.005
DEFAULT_TRANSITION_PRICES = {"STANDARD_IA": 0.01, "ONEZONE_IA": 0.01, "GLACIER_IR": 0.02,
                             "GLACIER": 0.03, "DEEP_ARCHIVE": 0.05}
#: range GETs a Parquet reader (DuckDB, pyarrow, Athena) issues per file at least: the footer
#: (the last bytes, holding the metadata), then the column chunks. Raw NDJSON is one GET each.
PARQUET_GETS_PER_FILE = 2
RAW_GETS_PER_OBJECT = 1


@dataclass(frozen=True)
class RequestPrices:
    """USD per 1,000 requests: GETs, PUT/COPY/POST/LIST, and lifecycle transitions by class."""

    get: float = DEFAULT_GET_PRICE
    put: float = DEFAULT_PUT_PRICE
    transition: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TRANSITION_PRICES))

    @classmethod
    def from_mapping(cls, data: Any, where: str = "request prices") -> RequestPrices:
        """``{"GET": usd, "PUT": usd, "TRANSITION": {"CLASS": usd}}`` (each key optional) over
        the defaults; anything else is a :class:`ConfigError` naming ``where``."""
        shape = (f'{where}: expected {{"GET": usd, "PUT": usd, "TRANSITION": {{"STORAGE_CLASS": usd}}}} '
                 "in USD per 1,000 requests, none negative")
        if not isinstance(data, Mapping) or not set(data) <= {"GET", "PUT", "TRANSITION"}:
            raise ConfigError(shape)
        transition = data.get("TRANSITION", {})
        if not all(_price(v) for k, v in data.items() if k != "TRANSITION") or not isinstance(transition, Mapping):
            raise ConfigError(shape)
        bad = [k for k, v in transition.items() if k not in DEFAULT_TRANSITION_PRICES or not _price(v)]
        if bad:
            raise ConfigError(f"{shape}; transition classes from {', '.join(DEFAULT_TRANSITION_PRICES)} "
                              f"(not {', '.join(map(repr, bad))})")
        return cls(get=float(data.get("GET", DEFAULT_GET_PRICE)), put=float(data.get("PUT", DEFAULT_PUT_PRICE)),
                   transition={**DEFAULT_TRANSITION_PRICES, **{k: float(v) for k, v in transition.items()}})

    def to_dict(self) -> dict[str, Any]:
        return {"GET": self.get, "PUT": self.put, "TRANSITION": dict(self.transition)}


def _price(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def load_price_file(path: str | None, what: str = "prices file") -> tuple[dict[str, float], RequestPrices]:
    """Storage prices (USD per GiB-month, over the defaults) and request prices from a JSON file.

    The storage part is the ``LAKE_PRICES_FILE`` format :func:`pipelines.tier.load_prices` reads
    (``{"CLASS": usd}``); a ``"requests"`` key holds :meth:`RequestPrices.from_mapping`'s format.
    No path gives the defaults.
    """
    prices = load_prices(path, what)
    if not path:
        return prices, RequestPrices()
    loaded = json.loads(Path(path).expanduser().read_text())  # load_prices has vetted it
    requests = RequestPrices.from_mapping(loaded["requests"], f"{what} {path} \"requests\"") \
        if "requests" in loaded else RequestPrices()
    return prices, requests


def prices_for(settings: LakeSettings, prices_file: str | None = None) -> tuple[TieringPolicy, RequestPrices]:
    """The lake's tiering policy and request prices, priced from ``prices_file`` if given, else
    from ``LAKE_PRICES_FILE`` (either one over the built-in list prices)."""
    path, what = (prices_file, "prices file") if prices_file else (settings.prices_file, "LAKE_PRICES_FILE")
    storage, requests = load_price_file(path, what)
    policy = replace(TieringPolicy.from_settings(settings.with_(prices_file=None)), prices=storage)
    return policy, requests


# ------------------------------------------------------------------------------------- the report


@dataclass
class StorageLine:
    """The objects of one (bucket role, prefix, storage class) and what they cost per month."""

    role: str
    bucket: str
    prefix: str
    storage_class: str
    objects: int
    bytes: int
    #: bytes billed at the class's price (after the 128 KiB minimum, plus the archive index)
    billable_bytes: int
    #: bytes billed at STANDARD's price on top (archive classes' 8 KiB metadata per object)
    standard_overhead_bytes: int
    #: USD per month; None when the price table has no price for the class
    usd_month: float | None


@dataclass
class DayCompaction:
    """One published day: objects and full-scan GETs before compaction (raw) and after (Parquet)."""

    dt: str
    version: str
    objects_before: int
    objects_after: int
    bytes_before: int
    bytes_after: int
    gets_before: int
    gets_after: int
    usd_per_scan_before: float
    usd_per_scan_after: float

    @property
    def usd_saved_per_scan(self) -> float:
        return self.usd_per_scan_before - self.usd_per_scan_after


@dataclass
class MoveCost:
    """One partition move of the tiering plan and its one-time lifecycle transition requests."""

    dt: str
    target: str
    objects: int
    bytes: int
    kept_small: int
    transition_usd: float


@dataclass
class PolicyEffect:
    """The current tiering policy's effect, from :func:`pipelines.tier.plan` (nothing applied).

    ``cost_now``/``cost_after`` are the plan's own (its scope: curated data files, raw days and
    quarantine, all assumed STANDARD now); expiries are free (lifecycle expiration has no charge).
    """

    today: str
    cost_now: dict[str, float]
    cost_after: dict[str, float]
    monthly_saving: float
    moves: list[MoveCost]
    expiring_objects: int

    @property
    def monthly_now(self) -> float:
        return sum(self.cost_now.values())

    @property
    def monthly_after(self) -> float:
        return sum(self.cost_after.values())

    @property
    def transition_requests(self) -> int:
        return sum(m.objects for m in self.moves)

    @property
    def transition_usd(self) -> float:
        return sum(m.transition_usd for m in self.moves)

    @property
    def payback_months(self) -> float | None:
        """Months of the saving that pay for the transitions; None when nothing is saved."""
        return self.transition_usd / self.monthly_saving if self.monthly_saving > 0 else None


@dataclass
class CostReport:
    """What the lake costs (storage by bucket, prefix and class), compaction's request saving and
    the tiering policy's effect, with the prices used."""

    today: str
    backend: str
    storage: list[StorageLine]
    compaction: list[DayCompaction]
    policy: PolicyEffect
    prices: dict[str, float]
    request_prices: RequestPrices
    parquet_gets_per_file: int = PARQUET_GETS_PER_FILE

    @property
    def unpriced_classes(self) -> list[str]:
        return sorted({s.storage_class for s in self.storage if s.usd_month is None})

    @property
    def storage_usd_month(self) -> float:
        return sum(s.usd_month or 0.0 for s in self.storage)

    def totals(self, by: str = "role") -> dict[str, dict[str, Any]]:
        """Objects, bytes, billable bytes and USD/month summed by ``role`` or ``storage_class``."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.storage:
            t = out.setdefault(getattr(s, by), {"objects": 0, "bytes": 0, "billable_bytes": 0, "usd_month": 0.0})
            t["objects"] += s.objects
            t["bytes"] += s.bytes
            t["billable_bytes"] += s.billable_bytes + s.standard_overhead_bytes
            t["usd_month"] += s.usd_month or 0.0
        order = {k: i for i, k in enumerate((*ROLES, *CLASSES))}  # the lake's order, then the rest by name
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what ``lake cost --format json`` prints)."""
        return {
            "today": self.today,
            "backend": self.backend,
            "prices": {"storage_usd_per_gib_month": self.prices, "requests_usd_per_1000": self.request_prices.to_dict()},
            "assumptions": {"raw_gets_per_object": RAW_GETS_PER_OBJECT,
                            "parquet_gets_per_file": self.parquet_gets_per_file,
                            "min_billable_bytes": {c: MIN_BILLABLE_BYTES for c in sorted(_MIN_SIZE_CLASSES)},
                            "archive_overhead_bytes": {c: {"class": a, "STANDARD": s}
                                                       for c, (a, s) in ARCHIVE_OVERHEAD.items()}},
            "storage": [asdict(s) for s in self.storage],
            "storage_totals": {"by_role": self.totals("role"), "by_class": self.totals("storage_class"),
                               "objects": sum(s.objects for s in self.storage),
                               "bytes": sum(s.bytes for s in self.storage),
                               "usd_month": self.storage_usd_month, "unpriced_classes": self.unpriced_classes},
            "compaction": [{**asdict(d), "usd_saved_per_scan": d.usd_saved_per_scan} for d in self.compaction],
            "compaction_totals": {k: sum(getattr(d, k) for d in self.compaction) for k in (
                "objects_before", "objects_after", "gets_before", "gets_after",
                "usd_per_scan_before", "usd_per_scan_after", "usd_saved_per_scan")},
            "policy": {**asdict(self.policy), "monthly_now": self.policy.monthly_now,
                       "monthly_after": self.policy.monthly_after,
                       "transition_requests": self.policy.transition_requests,
                       "transition_usd": self.policy.transition_usd,
                       "payback_months": self.policy.payback_months},
        }


def prefix_of(role: str, key: str) -> str:
    """The prefix a key's cost is reported under.

    Landing: the first path segment (the source). Elsewhere: an internal ``_name/`` folder
    (``_ledger/``, ``_locks/``, ...) as a whole; otherwise the folders before the first
    ``name=value`` one, so a table's ``dt=`` partitions roll up into ``clickstream/events/`` and
    quarantine's ``arrival=`` days into ``.../lines/`` and ``.../files/``. ``""`` is the top level.
    """
    first, sep, _ = key.partition("/")
    if not sep:
        return ""
    if role == "landing" or first.startswith("_"):
        return first + "/"
    folders = []
    for part in key.split("/")[:-1]:
        if "=" in part:
            break
        folders.append(part)
    return "".join(f + "/" for f in folders)


def billable(storage_class: str, size: int) -> tuple[int, int]:
    """(bytes billed at the class's price, bytes billed at STANDARD's) for one object."""
    if storage_class in _MIN_SIZE_CLASSES:
        return max(size, MIN_BILLABLE_BYTES), 0
    at_class, at_standard = ARCHIVE_OVERHEAD.get(storage_class, (0, 0))
    return size + at_class, at_standard


def storage_lines(lake: Lake, prices: Mapping[str, float]) -> list[StorageLine]:
    """Every bucket's objects by prefix and storage class, priced (one listing per bucket)."""
    lines = []
    for role in ROLES:
        groups: dict[tuple[str, str], list[int]] = {}
        for o in lake.storage.list(role):
            g = groups.setdefault((prefix_of(role, o.key), o.storage_class), [0, 0, 0, 0])
            at_class, at_standard = billable(o.storage_class, o.size)
            g[0] += 1
            g[1] += o.size
            g[2] += at_class
            g[3] += at_standard
        bucket = lake.settings.bucket(role) if lake.settings.backend == "s3" else role
        for (prefix, cls), (n, size, at_class, at_standard) in sorted(groups.items()):
            usd = None
            if cls in prices:
                usd = at_class / GiB * prices[cls] + at_standard / GiB * prices["STANDARD"]
            lines.append(StorageLine(role, bucket, prefix, cls, n, size, at_class, at_standard, usd))
    return lines


def compaction_days(lake: Lake, requests: RequestPrices,
                    parquet_gets_per_file: int = PARQUET_GETS_PER_FILE) -> list[DayCompaction]:
    """Per published day: raw inputs and Parquet outputs of its manifest, and the GETs (and USD)
    a full scan of the day takes reading the raw objects versus the compacted files."""
    days = []
    for p in sorted(lake.catalog.list_partitions(lake.spec.table), key=lambda p: p.dt):
        manifest = read_manifest(lake, p.dt, p.version)
        if manifest is None:
            continue  # a published version without a manifest: `lake verify` reports it
        before, after = manifest["inputs"], manifest["outputs"]
        gets_before, gets_after = len(before) * RAW_GETS_PER_OBJECT, len(after) * parquet_gets_per_file
        days.append(DayCompaction(
            p.dt, p.version, len(before), len(after),
            sum(i.get("size", 0) for i in before), sum(o["size"] for o in after),
            gets_before, gets_after, gets_before * requests.get / 1000, gets_after * requests.get / 1000))
    return days


def policy_effect(lake: Lake, policy: TieringPolicy, today: date, requests: RequestPrices) -> PolicyEffect:
    """:func:`pipelines.tier.plan`'s costs, plus the transition requests its moves would bill."""
    p = plan(lake, policy, today)
    moves = []
    for m in p.moves:
        moves.append(MoveCost(m.dt, m.target, m.objects, m.bytes, m.kept_small,
                              m.objects * requests.transition[m.target] / 1000))
    return PolicyEffect(p.today, dict(p.cost_now), dict(p.cost_after), p.monthly_saving, moves,
                        sum(e.objects for e in p.expiries if e.on <= p.today))


def cost_report(lake: Lake, policy: TieringPolicy | None = None, today: date | None = None, *,
                request_prices: RequestPrices | Mapping[str, Any] | None = None,
                parquet_gets_per_file: int = PARQUET_GETS_PER_FILE) -> CostReport:
    """What the lake costs now, what compaction saves per scan and what the policy would change.

    ``policy`` defaults to the lake's settings (prices from ``LAKE_PRICES_FILE``);
    ``request_prices`` to that file's ``"requests"`` section or the S3 list prices; ``today`` to
    the UTC date. Changes nothing.
    """
    if policy is None or request_prices is None:
        own_policy, own_requests = prices_for(lake.settings)
        policy = policy or own_policy
        request_prices = request_prices if request_prices is not None else own_requests
    if not isinstance(request_prices, RequestPrices):
        request_prices = RequestPrices.from_mapping(request_prices)
    if parquet_gets_per_file < 1:
        raise ValueError("parquet_gets_per_file must be at least 1")
    today = today or datetime.now(UTC).date()
    return CostReport(
        today=today.isoformat(), backend=lake.settings.backend,
        storage=storage_lines(lake, policy.prices),
        compaction=compaction_days(lake, request_prices, parquet_gets_per_file),
        policy=policy_effect(lake, policy, today, request_prices),
        prices=dict(policy.prices), request_prices=request_prices,
        parquet_gets_per_file=parquet_gets_per_file)
