"""Lifecycle as code: the tiering policy as S3 lifecycle rules, applied next to everyone else's.

Every rule the project owns has an ID starting with :data:`RULE_ID_PREFIX`, followed by its
scope: the table (``<namespace>/<table>``) for rules about one table's objects, or ``bucket``
for the bucket's housekeeping (stale multipart uploads, superseded versions, delete markers).
Applying reads each bucket's configuration, keeps every other rule exactly as read (rules
without the prefix, and the rules of other tables sharing the bucket), replaces this table's and
the bucket's project rules with the desired ones, and writes only when that changes something:
applying twice writes nothing the second time.

No rule may make S3 bill a minimum storage duration or a minimum object size for nothing:
transitions carry a size filter (nothing under 128 KiB moves), respect S3's smallest ``Days``,
and a superseded version is kept at least its class's minimum storage duration. S3 honours the
*shortest* of overlapping expirations, so :func:`check_rules` checks every pair that can match
the same object, not only each rule alone.

S3 has no conditional PUT for lifecycle configurations: a rule someone adds between our read
and our write is lost. Apply from one place (a deploy step), not from every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pipelines import layout
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError, UnsupportedError
from pipelines.lake import Lake
from pipelines.schema import TableSpec
from pipelines.tier import (
    CLASSES,
    COMPACTED,
    LANDED,
    MIN_STORAGE_DAYS,
    MIN_TRANSITION_BYTES,
    MIN_TRANSITION_DAYS,
    STATE_TAG,
    TIER_TAG,
    TieringPolicy,
)

#: the start of every lifecycle rule ID this project owns; other rules are never touched
RULE_ID_PREFIX = "clickstream-lake:"
#: the scope of rules about a whole bucket (a table's scope always has a "/", so they differ)
BUCKET_SCOPE = "bucket"
#: S3's limits: rules per bucket configuration, characters per rule ID
MAX_RULES, MAX_ID_LENGTH = 1000, 255
#: where publish locks live in the curated bucket (see pipelines/locks.py)
LOCKS_PREFIX = "_locks/"
#: classes that bill an object under 128 KiB as 128 KiB
SMALL_OBJECT_BILLED = ("STANDARD_IA", "ONEZONE_IA", "GLACIER_IR")
#: the buckets lake init versions: their superseded versions and delete markers need rules
VERSIONED_ROLES = ("raw", "curated")

Rule = dict[str, Any]


def rule_id(scope: str, name: str) -> str:
    """The ID of a project rule: ``clickstream-lake:<scope>:<name>``."""
    rid = f"{RULE_ID_PREFIX}{scope}:{name}"
    if len(rid) > MAX_ID_LENGTH:
        raise ConfigError(f"lifecycle rule ID {rid[:60]}... is longer than S3's {MAX_ID_LENGTH} characters: "
                          "use a shorter namespace or table name")
    return rid


def _rule(rid: str, rule_filter: dict[str, Any], **actions: Any) -> Rule:
    return {"ID": rid, "Status": "Enabled", "Filter": rule_filter, **actions}


def _tagged(prefix: str, key: str, value: str, **sizes: int) -> dict[str, Any]:
    return {"And": {"Prefix": prefix, "Tags": [{"Key": key, "Value": value}], **sizes}}


def desired_rules(settings: LakeSettings, spec: TableSpec, policy: TieringPolicy, *,
                  landing_expire_days: int | None = None) -> dict[str, list[Rule]]:
    """The project's lifecycle rules for one table, by bucket role.

    * every bucket: abort multipart uploads left incomplete ``abort_multipart_days``;
    * landing: objects tagged ``lake-state=landed`` expire ``landing_expire_days`` after they
      were written (default: the policy's; none when 0). Landing writes the tag only after the
      object's ledger record (pipelines/land.py), so an object never landed never expires. The
      rule is the bucket's, not a table's: producers choose landing keys, which are not under
      a table prefix;
    * raw: objects of the table tagged ``lake-state=compacted`` expire
      ``raw_expire_after_compacted_days`` after they were written;
    * quarantine: the table's objects expire after ``quarantine_expire_days``;
    * curated: for each class of the policy, objects of the table tagged ``lake-tier=<class>``
      and larger than ``min_transition_bytes - 1`` move there as early as S3 allows (the tag says
      when a partition is old enough, see pipelines/tier.py);
    * raw and curated are versioned: superseded versions expire after ``noncurrent_expire_days``
      (in curated, per tier tag never before the class's minimum storage duration), lock versions
      after a day, and delete markers left alone are removed.
    """
    if landing_expire_days is None:
        landing_expire_days = policy.landing_expire_days
    table_scope = layout.table_prefix(spec)
    prefix = table_scope + "/"  # the slash: "ns/events" must not reach "ns/events_v2/"
    keep_days = policy.noncurrent_expire_days

    def own(name: str) -> str:
        return rule_id(table_scope, name)

    def shared(name: str) -> str:
        return rule_id(BUCKET_SCOPE, name)

    def housekeeping(role: str) -> list[Rule]:
        rules = [_rule(shared("abort-incomplete-multipart"), {"Prefix": ""},
                       AbortIncompleteMultipartUpload={"DaysAfterInitiation": policy.abort_multipart_days})]
        if role in VERSIONED_ROLES:
            rules.append(_rule(shared("expired-delete-markers"), {"Prefix": ""},
                               Expiration={"ExpiredObjectDeleteMarker": True}))
        return rules

    landing = housekeeping("landing")
    if landing_expire_days < 0:
        raise ConfigError("landing expiry must be 0 (keep landing objects) or at least 1 day")
    if landing_expire_days:
        # the tag alone, not the whole bucket: an untagged object may never have been landed
        landing.append(_rule(shared("landing-expire"), {"Tag": {"Key": STATE_TAG, "Value": LANDED}},
                             Expiration={"Days": int(landing_expire_days)}))

    raw = [
        _rule(own("raw-expire-compacted"), _tagged(prefix, STATE_TAG, COMPACTED),
              Expiration={"Days": policy.raw_expire_after_compacted_days}),
        # raw never changes class: every superseded version can go after the same delay
        _rule(shared("noncurrent-expire"), {"Prefix": ""},
              NoncurrentVersionExpiration={"NoncurrentDays": keep_days}),
        *housekeeping("raw"),
    ]

    quarantine = [
        _rule(own("quarantine-expire"), {"Prefix": prefix}, Expiration={"Days": policy.quarantine_expire_days}),
        *housekeeping("quarantine"),
    ]

    curated: list[Rule] = []
    for _, cls in sorted(policy.curated_transitions):
        curated.append(_rule(
            own(f"curated-tier-{cls}"),
            _tagged(prefix, TIER_TAG, cls, ObjectSizeGreaterThan=policy.min_transition_bytes - 1),
            Transitions=[{"Days": MIN_TRANSITION_DAYS.get(cls, 0), "StorageClass": cls}]))
    # every class, not only the policy's: objects moved under an earlier policy are still there
    for cls in CLASSES:
        curated.append(_rule(own(f"curated-noncurrent-{cls}"), _tagged(prefix, TIER_TAG, cls),
                             NoncurrentVersionExpiration={"NoncurrentDays": max(keep_days, MIN_STORAGE_DAYS[cls])}))
    curated += [
        # under the transition size nothing ever moves, so it is all STANDARD: manifests, audits,
        # locks, small parts
        _rule(shared("noncurrent-expire-small"), {"ObjectSizeLessThan": policy.min_transition_bytes},
              NoncurrentVersionExpiration={"NoncurrentDays": keep_days}),
        # larger objects not tagged yet: S3 applies the shortest overlapping expiration, so this
        # rule also reaches tagged objects and must wait the longest minimum of any class; the
        # tagged rules above, shorter, win for the objects they match
        _rule(shared("noncurrent-expire-untagged"), {"ObjectSizeGreaterThan": policy.min_transition_bytes - 1},
              NoncurrentVersionExpiration={"NoncurrentDays": max(keep_days, *MIN_STORAGE_DAYS.values())}),
        # a released lock is garbage at once
        _rule(shared("locks-noncurrent-expire"), {"Prefix": LOCKS_PREFIX},
              NoncurrentVersionExpiration={"NoncurrentDays": 1}),
        *housekeeping("curated"),
    ]

    rules = {"landing": landing, "raw": raw, "curated": curated, "quarantine": quarantine}
    for role, role_rules in rules.items():
        if len(role_rules) > MAX_RULES:
            raise ConfigError(f"the tiering policy needs {len(role_rules)} lifecycle rules in the {role} bucket; "
                              f"S3 allows {MAX_RULES}")
        check_rules(role_rules)
    return rules


# ------------------------------------------------------------------------------- canonical form


def _int(value: Any) -> int:
    return int(value)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def predicates(rule: Rule) -> dict[str, Any]:
    """What a rule's filter selects: prefix, tags, and the exclusive size bounds (None = none)."""
    f = rule.get("Filter") or {}
    both = f.get("And") or {}
    tags = [*([f["Tag"]] if f.get("Tag") else []), *(both.get("Tags") or [])]
    prefix = rule.get("Prefix") or f.get("Prefix") or both.get("Prefix") or ""

    def size(key: str) -> int | None:
        value = f.get(key, both.get(key))
        return None if value is None else _int(value)

    return {"prefix": prefix, "tags": sorted([t["Key"], t.get("Value", "")] for t in tags),
            "gt": size("ObjectSizeGreaterThan"), "lt": size("ObjectSizeLessThan")}


def canonical(rule: Rule) -> dict[str, Any]:
    """A rule in one spelling, to compare what S3 returns with what we want.

    S3 and its emulators write the same rule differently: ``Filter: {"Prefix": ""}``, an empty
    filter or the old top-level ``Prefix``; keys in any order; numbers as text; empty lists left
    out; dates with or without a time.
    """
    out: dict[str, Any] = {"ID": rule.get("ID"), "Status": rule.get("Status"), "Filter": predicates(rule)}
    exp = rule.get("Expiration") or {}
    e: dict[str, Any] = {}
    if exp.get("Days") is not None:
        e["Days"] = _int(exp["Days"])
    if exp.get("Date") is not None:
        e["Date"] = _when(exp["Date"])
    if _truthy(exp.get("ExpiredObjectDeleteMarker")):
        e["ExpiredObjectDeleteMarker"] = True
    if e:
        out["Expiration"] = e

    def steps(items: list[dict[str, Any]] | None, days_key: str) -> list[dict[str, Any]]:
        got = []
        for t in items or []:
            step = {"StorageClass": t.get("StorageClass")}
            if t.get(days_key) is not None:
                step[days_key] = _int(t[days_key])
            if t.get("Date") is not None:
                step["Date"] = _when(t["Date"])
            if t.get("NewerNoncurrentVersions") is not None:
                step["NewerNoncurrentVersions"] = _int(t["NewerNoncurrentVersions"])
            got.append(step)
        return sorted(got, key=lambda s: json.dumps(s, sort_keys=True))

    if rule.get("Transitions"):
        out["Transitions"] = steps(rule["Transitions"], "Days")
    if rule.get("NoncurrentVersionTransitions"):
        out["NoncurrentVersionTransitions"] = steps(rule["NoncurrentVersionTransitions"], "NoncurrentDays")
    nve = rule.get("NoncurrentVersionExpiration") or {}
    if nve:
        out["NoncurrentVersionExpiration"] = {k: _int(v) for k, v in nve.items() if v is not None}
    aimu = rule.get("AbortIncompleteMultipartUpload") or {}
    if aimu.get("DaysAfterInitiation") is not None:
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": _int(aimu["DaysAfterInitiation"])}
    return out


def same_rule(a: Rule, b: Rule) -> bool:
    """Whether two rules mean the same, however S3 spelled them."""
    return json.dumps(canonical(a), sort_keys=True) == json.dumps(canonical(b), sort_keys=True)


# ---------------------------------------------------------------------------------- safety check


def filters_overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether one object can match both filters, as :func:`predicates` gives them (prefixes
    nest, no tag key asks for two values, the size ranges intersect)."""
    if not (a["prefix"].startswith(b["prefix"]) or b["prefix"].startswith(a["prefix"])):
        return False
    tags_a, tags_b = dict(a["tags"]), dict(b["tags"])
    if any(k in tags_b and tags_b[k] != v for k, v in tags_a.items()):
        return False
    above = max(x for x in (a["gt"], b["gt"], -1) if x is not None)
    below = min((x for x in (a["lt"], b["lt"]) if x is not None), default=None)
    return below is None or above + 1 < below


def rule_problems(rules: list[Rule]) -> list[str]:
    """Why a bucket's rules would make S3 bill minimum durations or sizes (empty when none do)."""
    live = [(r, predicates(r)) for r in rules if r.get("Status", "Enabled") == "Enabled"]
    problems: list[str] = []
    ids = [r.get("ID") for r in rules if r.get("ID")]
    if len(rules) > MAX_RULES:
        problems.append(f"{len(rules)} rules: S3 allows {MAX_RULES}")
    if len(set(ids)) != len(ids):
        problems.append("two rules share an ID")
    problems += [f"rule ID {i[:40]}... is longer than {MAX_ID_LENGTH}" for i in ids if len(i) > MAX_ID_LENGTH]
    entries: list[tuple[str, int, dict[str, Any], str]] = []  # class, day it enters it, filter, rule ID
    for rule, f in live:
        rid = rule.get("ID")
        steps = sorted(rule.get("Transitions") or [], key=lambda t: _int(t.get("Days") or 0))
        for i, t in enumerate(steps):
            cls, days = t.get("StorageClass"), t.get("Days")
            if days is None:
                continue  # a fixed date: no duration to check
            days = _int(days)
            if days < MIN_TRANSITION_DAYS.get(cls, 0):
                problems.append(f"{rid}: moves to {cls} after {days} days, S3 needs {MIN_TRANSITION_DAYS[cls]}")
            if cls in SMALL_OBJECT_BILLED and (f["gt"] is None or f["gt"] < MIN_TRANSITION_BYTES - 1):
                problems.append(f"{rid}: moves objects under {MIN_TRANSITION_BYTES} bytes to {cls}, "
                                f"which bills them as {MIN_TRANSITION_BYTES}")
            if i + 1 < len(steps) and steps[i + 1].get("Days") is not None:
                stay = _int(steps[i + 1]["Days"]) - days
                if stay < MIN_STORAGE_DAYS.get(cls, 0):
                    problems.append(f"{rid}: leaves {cls} after {stay} days, before its "
                                    f"{MIN_STORAGE_DAYS[cls]}-day minimum")
            entries.append((cls, days, f, rid))
    for rule, f in live:
        rid = rule.get("ID")
        keep = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        tier = dict(f["tags"]).get(TIER_TAG)
        if keep is not None and tier in MIN_STORAGE_DAYS and _int(keep) < MIN_STORAGE_DAYS[tier]:
            problems.append(f"{rid}: deletes superseded {tier} versions after {keep} days, before its "
                            f"{MIN_STORAGE_DAYS[tier]}-day minimum")
        expire = (rule.get("Expiration") or {}).get("Days")
        for cls, entered, moved, mover in entries:
            if not filters_overlap(f, moved):
                continue
            if keep is not None and _int(keep) < MIN_STORAGE_DAYS.get(cls, 0):
                problems.append(f"{rid}: deletes superseded versions after {keep} days, but {mover} puts "
                                f"objects it matches in {cls} ({MIN_STORAGE_DAYS[cls]}-day minimum)")
            if expire is not None and _int(expire) < entered + MIN_STORAGE_DAYS.get(cls, 0):
                problems.append(f"{rid}: expires objects after {expire} days, but {mover} puts objects it "
                                f"matches in {cls} from day {entered} ({MIN_STORAGE_DAYS[cls]}-day minimum)")
    return problems


def check_rules(rules: list[Rule] | dict[str, list[Rule]]) -> None:
    """Raise ``ValueError`` if the rules (one bucket's, or a dict of them by role) would make S3
    bill a minimum storage duration or object size: transitions into STANDARD_IA / GLACIER_IR
    without a size filter of at least 128 KiB - 1, ``Days`` under S3's minimum, superseded
    versions of a tier (or any object a transition reaches) deleted before the class's minimum."""
    per_bucket = rules if isinstance(rules, dict) else {"bucket": rules}
    problems = [f"{role}: {p}" for role, rs in per_bucket.items() for p in rule_problems(rs)]
    if problems:
        raise ValueError("lifecycle rules would pay minimum-duration or minimum-size charges: "
                         + "; ".join(problems))


# ---------------------------------------------------------------------------------- plan / apply


def is_project_rule(rule: Rule) -> bool:
    """Whether the project owns the rule (its ID starts with :data:`RULE_ID_PREFIX`)."""
    return str(rule.get("ID") or "").startswith(RULE_ID_PREFIX)


def rule_scope(rule: Rule) -> str | None:
    """The table (``namespace/table``) or ``bucket`` a project rule is about; None if foreign."""
    if not is_project_rule(rule):
        return None
    rest = str(rule["ID"])[len(RULE_ID_PREFIX):]
    scope = rest.split(":", 1)[0]
    return scope if "/" in scope else BUCKET_SCOPE  # any other project ID is bucket housekeeping


@dataclass
class BucketPlan:
    """What applying the rules does to one bucket; the rules as read stay as read."""

    role: str
    bucket: str
    current: list[Rule]          # the project rules in scope, as read
    foreign: list[Rule]          # rules the project does not own, kept byte for byte
    other_tables: list[Rule]     # project rules of other tables sharing the bucket, kept too
    to_add: list[Rule] = field(default_factory=list)
    to_change: list[tuple[Rule, Rule]] = field(default_factory=list)  # (as read, desired)
    to_remove: list[Rule] = field(default_factory=list)
    unchanged: list[Rule] = field(default_factory=list)
    configuration: list[Rule] = field(default_factory=list)  # what a PUT would write
    transition_default: str | None = None  # TransitionDefaultMinimumObjectSize as read
    warnings: list[str] = field(default_factory=list)  # problems of the configuration as a whole

    @property
    def changed(self) -> bool:
        return bool(self.to_add or self.to_change or self.to_remove)


@dataclass
class LifecycleReport:
    """The outcome of :func:`apply_lifecycle`, per bucket role."""

    buckets: dict[str, BucketPlan]
    dry_run: bool
    written: list[str] = field(default_factory=list)  # buckets whose configuration was PUT

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.buckets.values())

    def summary(self) -> str:
        n = {k: sum(len(getattr(p, k)) for p in self.buckets.values())
             for k in ("to_add", "to_change", "to_remove", "unchanged", "foreign", "other_tables")}
        verb = "would change" if self.dry_run else "changed"
        head = (f"{verb} {sum(p.changed for p in self.buckets.values())} of {len(self.buckets)} buckets"
                if self.changed else "lifecycle rules already up to date")
        return (f"{head}: {n['to_add']} added, {n['to_change']} changed, {n['to_remove']} removed, "
                f"{n['unchanged']} unchanged; kept {n['foreign']} foreign and {n['other_tables']} "
                "other tables' rules")


def _no_lifecycle() -> UnsupportedError:
    return UnsupportedError("the embedded backend has no lifecycle rules to apply: "
                            "`lake tier plan` shows what the policy would move and expire")


def _require_s3(storage: Any) -> None:
    if getattr(storage, "client", None) is None or not hasattr(storage, "buckets"):
        raise _no_lifecycle()


def read_lifecycle(storage: Any, role: str) -> tuple[list[Rule], str | None]:
    """A bucket's lifecycle rules as S3 returns them (none if it has no configuration), and its
    ``TransitionDefaultMinimumObjectSize``."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.s3 import aws_error

    _require_s3(storage)
    bucket = storage.buckets[role]
    try:
        got = storage.client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return [], None
        raise aws_error(exc, f"reading the lifecycle rules of {bucket}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"reading the lifecycle rules of {bucket}") from exc
    return list(got.get("Rules") or []), got.get("TransitionDefaultMinimumObjectSize")


def _scopes(rules: dict[str, list[Rule]]) -> set[str]:
    return {s for rs in rules.values() for r in rs if (s := rule_scope(r))} | {BUCKET_SCOPE}


def plan_lifecycle(storage: Any, rules: dict[str, list[Rule]], *,
                   scopes: set[str] | None = None) -> dict[str, BucketPlan]:
    """Per bucket: the project rules in scope as read, the foreign and other tables' rules kept,
    and the rules to add, change, remove and leave alone to reach ``rules`` (by role).

    The scope is the tables the desired rules are about, and the bucket housekeeping
    (``scopes`` overrides it): project rules of other tables sharing a bucket are kept.
    """
    _require_s3(storage)
    scopes = scopes or _scopes(rules)
    plans: dict[str, BucketPlan] = {}
    for role, desired in rules.items():
        read, default = read_lifecycle(storage, role)
        mine = [r for r in read if rule_scope(r) in scopes]
        plan = BucketPlan(role=role, bucket=storage.buckets[role], current=mine,
                          foreign=[r for r in read if not is_project_rule(r)],
                          other_tables=[r for r in read if is_project_rule(r) and rule_scope(r) not in scopes],
                          transition_default=default)
        by_id = {r.get("ID"): r for r in mine}
        wanted = {r["ID"] for r in desired}
        for rule in desired:
            old = by_id.get(rule["ID"])
            if old is None:
                plan.to_add.append(rule)
            elif same_rule(old, rule):
                plan.unchanged.append(old)
            else:
                plan.to_change.append((old, rule))
        plan.to_remove = [r for r in mine if r.get("ID") not in wanted]
        replaced = {id(r) for r in mine}
        plan.configuration = [*(r for r in read if id(r) not in replaced), *desired]
        if len(plan.configuration) > MAX_RULES:
            raise ConfigError(f"{plan.bucket} would hold {len(plan.configuration)} lifecycle rules "
                              f"({len(read) - len(mine)} not ours); S3 allows {MAX_RULES}")
        plan.warnings = rule_problems(plan.configuration)
        plans[role] = plan
    return plans


def _write(storage: Any, plan: BucketPlan) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.s3 import aws_error

    kwargs: dict[str, Any] = {"Bucket": plan.bucket}
    if plan.transition_default:  # a PUT without it would reset the owner's choice to the default
        kwargs["TransitionDefaultMinimumObjectSize"] = plan.transition_default
    try:
        if plan.configuration:
            storage.client.put_bucket_lifecycle_configuration(
                LifecycleConfiguration={"Rules": plan.configuration}, **kwargs)
        else:
            storage.client.delete_bucket_lifecycle(Bucket=plan.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"writing the lifecycle rules of {plan.bucket}") from exc


def apply_lifecycle(lake_or_settings: Lake | LakeSettings, policy: TieringPolicy | None = None, *,
                    dry_run: bool = False, landing_expire_days: int | None = None) -> LifecycleReport:
    """Make every bucket's project rules the desired ones for the lake's table; keep the rest.

    ``policy`` defaults to the settings' (:meth:`TieringPolicy.from_settings`). A bucket is
    written only when its project rules differ from the desired ones in meaning; ``dry_run``
    reads and reports without writing. The embedded backend has no lifecycle: it raises
    :class:`UnsupportedError` (``lake tier plan`` shows the plan instead).
    """
    lake = lake_or_settings if isinstance(lake_or_settings, Lake) else None
    settings = lake.settings if lake else lake_or_settings
    if settings.backend != "s3":
        raise _no_lifecycle()
    lake = lake or Lake.open(settings)
    _require_s3(lake.storage)
    policy = policy or TieringPolicy.from_settings(settings)
    rules = desired_rules(settings, lake.spec, policy, landing_expire_days=landing_expire_days)
    plans = plan_lifecycle(lake.storage, {role: rules[role] for role in ROLES})
    report = LifecycleReport(buckets=plans, dry_run=dry_run)
    for plan in plans.values():
        if plan.changed and not dry_run:
            _write(lake.storage, plan)
            report.written.append(plan.bucket)
    return report
