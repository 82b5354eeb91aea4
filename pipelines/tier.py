"""TIER: the tiering policy and, on the embedded backend, the plan of what would move where.

Curated partitions move by the partition's own date (not the objects' age, which a backfill or
a re-compaction resets). Raw objects expire after their day is compacted, quarantine after a
retention period. On S3 the same policy becomes lifecycle rules and object tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines import layout
from pipelines.compact import read_manifest
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError
from pipelines.lake import Lake

# the tiering modules import the tags from here
from pipelines.storage import ARCHIVE_CLASSES, COMPACTED, LANDED, STATE_TAG, TIER_TAG  # noqa: F401

GiB = 1 << 30
MIN_TRANSITION_BYTES = 128 * 1024  # S3 bills smaller IA/Glacier IR objects as 128 KiB

#: the classes, warmest first; a partition only ever moves to a colder one
CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
#: days an object is billed in a class at least, however early it leaves it
MIN_STORAGE_DAYS = {"STANDARD": 0, "STANDARD_IA": 30, "GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}
#: the smallest ``Days`` a lifecycle transition into a class may have (S3 refuses fewer)
MIN_TRANSITION_DAYS = {"STANDARD_IA": 30}

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
    #: landing objects tagged ``lake-state=landed`` (recorded in the ledger) expire this many
    #: days after they were written; 0 keeps the inbox forever
    landing_expire_days: int = 30
    abort_multipart_days: int = 1
    min_transition_bytes: int = MIN_TRANSITION_BYTES
    noncurrent_expire_days: int = 30
    restore_days: int = 7
    prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def __post_init__(self) -> None:
        if self.landing_expire_days < 0:
            raise ConfigError("landing expiry must be 0 (keep landing objects) or at least 1 day")
        steps = sorted(self.curated_transitions)
        ages = [a for a, _ in steps]
        if len(set(ages)) != len(ages) or any(a < 1 for a in ages):
            raise ConfigError(f"tier transitions {self.curated_transitions}: ages must be distinct and at least 1 day")
        previous = "STANDARD"
        for i, (age, cls) in enumerate(steps):
            if cls not in CLASSES[1:]:
                raise ConfigError(f"unknown storage class {cls!r}: use one of {', '.join(CLASSES[1:])}")
            if CLASSES.index(cls) <= CLASSES.index(previous):
                raise ConfigError(f"tier transitions must go to colder classes: {previous} then {cls}")
            if i + 1 < len(steps) and steps[i + 1][0] - age < MIN_STORAGE_DAYS[cls]:
                raise ConfigError(
                    f"{cls} from day {age} to day {steps[i + 1][0]} is shorter than its {MIN_STORAGE_DAYS[cls]}-day "
                    "minimum storage duration: every object would pay for days it is not stored")
            previous = cls
        missing = {c for c in (*CLASSES, *[c for _, c in steps]) if c not in self.prices}
        if missing:
            raise ConfigError(f"the price table has no price for {', '.join(sorted(missing))}")

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> TieringPolicy:
        """The policy the ``LAKE_TIER_*`` / ``LAKE_*_DAYS`` / ``LAKE_PRICES_FILE`` settings describe."""
        return cls(
            curated_transitions=parse_transitions(settings.tier_transitions),
            raw_expire_after_compacted_days=settings.raw_expire_days,
            quarantine_expire_days=settings.quarantine_expire_days,
            landing_expire_days=settings.landing_expire_days,
            abort_multipart_days=settings.abort_multipart_days,
            noncurrent_expire_days=settings.noncurrent_expire_days,
            restore_days=settings.restore_days,
            prices=load_prices(settings.prices_file))

    @property
    def archive_classes(self) -> list[str]:
        """The policy's classes Athena cannot read without a restore (GLACIER, DEEP_ARCHIVE)."""
        return [c for _, c in sorted(self.curated_transitions) if c in ARCHIVE_CLASSES]

    def tier_for(self, dt: date, today: date) -> str:
        """The storage class a partition of date ``dt`` belongs in on ``today``."""
        age = (today - dt).days
        tier = "STANDARD"
        for days, cls in sorted(self.curated_transitions):
            if age >= days:
                tier = cls
        return tier

    def tier_for_object(self, dt: date, created: date, today: date, current: str = "STANDARD") -> str:
        """The tier tag for one object of partition ``dt`` written on ``created``.

        Usually :meth:`tier_for`. But an object written long after its date (a backfill, a
        re-compaction) enters a class later than the policy assumes (lifecycle counts transition
        days from creation): if it would then leave that class for the next one before the class's
        minimum storage duration, it keeps its ``current`` tier and goes straight to the next one
        later, instead of paying for days it is not stored.
        """
        target = self.tier_for(dt, today)
        if target == current or CLASSES.index(target) < CLASSES.index(current):
            return current  # lifecycle never moves an object back to a warmer class
        steps = sorted(self.curated_transitions)
        index = [c for _, c in steps].index(target)
        if index + 1 == len(steps):
            return target  # the last class: it stays there
        age_now = (today - dt).days
        entry = max(age_now, (created - dt).days + MIN_TRANSITION_DAYS.get(target, 0))
        if steps[index + 1][0] - entry < MIN_STORAGE_DAYS[target]:
            return current
        return target


def parse_transitions(text: str) -> tuple[tuple[int, str], ...]:
    """``"30:STANDARD_IA,90:GLACIER_IR"`` as ((30, "STANDARD_IA"), (90, "GLACIER_IR"))."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        age, sep, cls = item.partition(":")
        if not sep or not age.strip().isdigit():
            raise ConfigError(f"LAKE_TIER_TRANSITIONS item {item!r}: expected AGE_DAYS:STORAGE_CLASS")
        out.append((int(age), cls.strip().upper()))
    return tuple(out)


def load_prices(path: str | None, what: str = "LAKE_PRICES_FILE") -> dict[str, float]:
    """The list prices, overridden by a JSON file of ``{"CLASS": usd_per_gib_month}`` (a
    ``"requests"`` section in the same file is for `lake cost` and ignored here)."""
    prices = dict(DEFAULT_PRICES)
    if not path:
        return prices
    try:
        loaded = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None
    if isinstance(loaded, dict):
        loaded.pop("requests", None)  # request prices, read by `lake cost` from the same file
    if not isinstance(loaded, dict) or not all(
            k in CLASSES and isinstance(v, int | float) and v >= 0 for k, v in loaded.items()):
        raise ConfigError(f"{what} {path}: expected {{\"STORAGE_CLASS\": USD per GiB-month}} "
                          f"with classes from {', '.join(CLASSES)} (and an optional \"requests\" section)")
    prices.update({k: float(v) for k, v in loaded.items()})
    return prices


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

    # each object's class now (one listing); the move is what the tagging pass would tag, so a
    # backfilled partition is not planned into a class it would leave before its minimum duration
    classes = {o.key: o.storage_class for o in lake.storage.list("curated", layout.table_prefix(spec) + "/")}
    partitions = lake.catalog.list_partitions(spec.table)
    for p in partitions:
        manifest = read_manifest(lake, p.dt, p.version) or {"outputs": [], "created_at": 0}
        day = layout.parse_dt(p.dt)
        created = datetime.fromtimestamp(manifest["created_at"], UTC).date()
        moving, kept_small, target = [], 0, "STANDARD"
        for o in manifest["outputs"]:
            now = classes.get(o["key"], "STANDARD")
            add(now_bytes, now, o["size"])
            after = now
            if o["size"] >= policy.min_transition_bytes:
                after = policy.tier_for_object(day, created, today, current=now)
            elif policy.tier_for(day, today) != "STANDARD":
                kept_small += 1
            add(after_bytes, after, o["size"])
            if after != now:
                moving.append(o["size"])
                target = max(target, after, key=CLASSES.index)
        if moving:
            moves.append(PartitionMove(p.dt, len(moving), sum(moving), target, kept_small))

    published = {p.dt: p for p in partitions}
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
