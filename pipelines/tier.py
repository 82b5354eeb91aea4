"""TIER: the tiering policy and, on the embedded backend, the plan of what would move where.

Curated partitions move by the partition's own date (not the objects' age, which a backfill or
a re-compaction resets). Raw objects expire after their day is compacted, quarantine after a
retention period. On S3 the same policy becomes lifecycle rules and object tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pipelines import layout
from pipelines.compact import read_manifest
from pipelines.lake import Lake

GiB = 1 << 30
MIN_TRANSITION_BYTES = 128 * 1024  # S3 bills smaller IA/Glacier IR objects as 128 KiB

#: USD per GiB-month, S3 us-east-1 list prices; override with your region's or contract's.
DEFAULT_PRICES = {
    "STANDARD": 0.023,
    "STANDARD_IA": 0.0125,
    "GLACIER_IR": 0.004,
    "GLACIER": 0.0036,
    "DEEP_ARCHIVE": 0.00099,
}


@dataclass(frozen=True)
class TieringPolicy:
    """When data moves or expires. Ages are in days."""

    curated_transitions: tuple[tuple[int, str], ...] = ((30, "STANDARD_IA"), (90, "GLACIER_IR"))
    raw_expire_after_compacted_days: int = 7
    quarantine_expire_days: int = 30
    abort_multipart_days: int = 1
    min_transition_bytes: int = MIN_TRANSITION_BYTES
    prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def tier_for(self, dt: date, today: date) -> str:
        """The storage class a partition of date ``dt`` belongs in on ``today``."""
        age = (today - dt).days
        tier = "STANDARD"
        for days, cls in sorted(self.curated_transitions):
            if age >= days:
                tier = cls
        return tier


@dataclass
class PartitionMove:
    dt: str
    objects: int
    bytes: int
    target: str
    kept_small: int  # objects under the minimum billable size, left in STANDARD


@dataclass
class Expiry:
    role: str
    what: str
    objects: int
    bytes: int
    on: str


@dataclass
class TierPlan:
    """What the policy would do today, and the storage cost before and after (USD per month)."""

    today: str
    moves: list[PartitionMove]
    expiries: list[Expiry]
    cost_now: dict[str, float]
    cost_after: dict[str, float]

    @property
    def monthly_saving(self) -> float:
        return round(sum(self.cost_now.values()) - sum(self.cost_after.values()), 6)


def plan(lake: Lake, policy: TieringPolicy | None = None, today: date | None = None) -> TierPlan:
    """The tiering plan for the lake's current contents (changes nothing)."""
    policy = policy or TieringPolicy()
    today = today or datetime.now(UTC).date()
    spec = lake.spec
    now_bytes: dict[str, int] = {}
    after_bytes: dict[str, int] = {}
    moves: list[PartitionMove] = []
    expiries: list[Expiry] = []

    def add(d: dict[str, int], cls: str, n: int) -> None:
        d[cls] = d.get(cls, 0) + n

    for p in lake.catalog.list_partitions(spec.table):
        manifest = read_manifest(lake, p.dt, p.version) or {"outputs": []}
        target = policy.tier_for(layout.parse_dt(p.dt), today)
        sizes = [o["size"] for o in manifest["outputs"]]
        movable = [s for s in sizes if s >= policy.min_transition_bytes]
        add(now_bytes, "STANDARD", sum(sizes))
        if target == "STANDARD" or not movable:
            add(after_bytes, "STANDARD", sum(sizes))
            continue
        add(after_bytes, target, sum(movable))
        add(after_bytes, "STANDARD", sum(sizes) - sum(movable))
        moves.append(PartitionMove(p.dt, len(movable), sum(movable), target, len(sizes) - len(movable)))

    published = {p.dt: p for p in lake.catalog.list_partitions(spec.table)}
    base = layout.table_prefix(spec) + "/dt="
    raw_by_day: dict[str, list] = {}
    for o in lake.storage.list("raw", base):
        raw_by_day.setdefault(o.key[len(base):].split("/", 1)[0], []).append(o)
    for dt, objs in sorted(raw_by_day.items()):
        size = sum(o.size for o in objs)
        add(now_bytes, "STANDARD", size)
        p = published.get(dt)
        manifest = read_manifest(lake, dt, p.version) if p else None
        covered = manifest and {i["key"] for i in manifest["inputs"]} >= {o.key for o in objs}
        if covered:
            on = datetime.fromtimestamp(manifest["created_at"], UTC).date() + timedelta(days=policy.raw_expire_after_compacted_days)
            expiries.append(Expiry("raw", f"dt={dt}", len(objs), size, on.isoformat()))
            if on <= today:
                continue
        add(after_bytes, "STANDARD", size)

    q_prefix = layout.table_prefix(spec) + "/"
    q_by_day: dict[str, list] = {}
    for o in lake.storage.list("quarantine", q_prefix):
        arrival = next((s.split("=", 1)[1] for s in o.key.split("/") if s.startswith("arrival=")), None)
        if arrival:
            q_by_day.setdefault(arrival, []).append(o)
    for arrival, objs in sorted(q_by_day.items()):
        size = sum(o.size for o in objs)
        add(now_bytes, "STANDARD", size)
        on = date.fromisoformat(arrival) + timedelta(days=policy.quarantine_expire_days)
        expiries.append(Expiry("quarantine", f"arrival={arrival}", len(objs), size, on.isoformat()))
        if on > today:
            add(after_bytes, "STANDARD", size)

    def cost(d: dict[str, int]) -> dict[str, float]:
        return {cls: round(n / GiB * policy.prices[cls], 6) for cls, n in sorted(d.items())}

    return TierPlan(today.isoformat(), moves, expiries, cost(now_bytes), cost(after_bytes))
