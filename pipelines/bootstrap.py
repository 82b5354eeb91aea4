"""Secure-by-default deployment: ``lake init`` sets the bucket controls, ``lake doctor`` checks
them, ``lake iam-policy`` writes the least-privilege policy of the pipeline's role.

Every function here returns data (:class:`InitReport`, :class:`DoctorReport`, a policy ``dict``);
the command line only prints it. On S3 the controls are, per role bucket: Block Public Access
(all four settings), default encryption matching ``LAKE_S3_SSE``, versioning on raw and curated,
a bucket policy that denies plain-HTTP requests and PUTs asking for another encryption (header-less
PUTs get the default encryption), ACLs disabled
(``BucketOwnerEnforced``), optional server access logging, and (checked here, written by
``lake tier apply``) the project's lifecycle rules. On the embedded backend the lake folder and
its role folders are owner-only (0o700); the bucket controls do not apply there.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError, LakeError, TerminalError
from pipelines.lifecycle import RULE_ID_PREFIX, VERSIONED_ROLES, desired_rules, same_rule
from pipelines.s3 import S3Storage, aws_error, aws_session, client_config
from pipelines.schema import TableSpec, load_spec
from pipelines.tier import TieringPolicy

#: every bucket-policy statement the project owns has a Sid starting with this; init replaces
#: those and keeps every other statement of an existing policy
SID_PREFIX = "ClickstreamLake"
SID_TLS = f"{SID_PREFIX}DenyInsecureTransport"
SID_WRONG_SSE = f"{SID_PREFIX}DenyWrongEncryption"
OWNER_ONLY = 0o700
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                       "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
NO_POLICY_REASON = ("bucket policy skipped (--no-bucket-policy): it denies every request not sent "
                    "over TLS, and an emulator such as `lake demo --s3` speaks plain HTTP, so with "
                    "it every emulator request would be (rightly) denied")
PLAIN_HTTP_WARNING = ("the endpoint {url} is plain HTTP: the TLS-only bucket policy now denies "
                      "requests sent through it; use `lake init --no-bucket-policy` for emulators")
LOCAL_NOTE = ("the bucket controls (Block Public Access, default encryption, versioning, bucket "
              "policy, ACLs, access logging, lifecycle) apply to S3 only: the embedded backend is "
              "a local folder, kept owner-only")
#: ``Get*`` errors that mean "this control is not configured": a FAIL, never a crash
MISSING_CONFIG = {"NoSuchPublicAccessBlockConfiguration", "NoSuchBucketPolicy",
                  "ServerSideEncryptionConfigurationNotFoundError", "OwnershipControlsNotFoundError",
                  "NoSuchLifecycleConfiguration"}
FIX_INIT = "run `lake init`"
FIX_POLICY = "run `lake init` (without --no-bucket-policy)"
FIX_LIFECYCLE = "run `lake tier apply`"
FIX_READ = "let this identity read the bucket configuration (`lake iam-policy --with-init`)"
_ACCOUNT_ID = re.compile(r"\d{12}")


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Change:
    """What ``lake init`` did to one control of one bucket (or folder)."""

    role: str
    target: str
    control: str
    #: ``created`` (was not configured), ``updated`` (was different), ``unchanged`` or ``skipped``
    outcome: str
    detail: str = ""


@dataclass
class InitReport:
    """Every control of every role bucket, as ``lake init`` left it."""

    backend: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the landing events queue (``notifications=True``): what LAKE_LANDING_QUEUE_URL should say
    queue_url: str | None = None

    @property
    def changed(self) -> bool:
        """Whether anything was created or updated (False on a re-run)."""
        return any(c.outcome in ("created", "updated") for c in self.changes)


@dataclass(frozen=True)
class Check:
    """One control of one bucket (or folder), as ``lake doctor`` found it."""

    role: str
    target: str
    control: str
    #: ``pass``, ``FAIL`` or ``n/a``
    status: str
    detail: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        """Whether this control failed (``n/a`` is not a failure)."""
        return self.status == "FAIL"


@dataclass
class DoctorReport:
    """Every control checked; the deployment is healthy when none failed."""

    backend: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed, in the order they were made."""
        return [c for c in self.checks if c.failed]

    @property
    def passed(self) -> bool:
        """Whether no control failed."""
        return not self.failures

    def summary(self) -> str:
        """One line: how many controls passed, failed, and did not apply."""
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "FAIL", "n/a")}
        return (f"{counts['pass']} passed, {counts['FAIL']} failed"
                + (f", {counts['n/a']} not applicable" if counts["n/a"] else ""))


# ---------------------------------------------------------------------------- desired state


def partition(region: str) -> str:
    """The ARN partition of a region (``aws``, ``aws-cn`` or ``aws-us-gov``)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_arn(settings: LakeSettings, bucket: str) -> str:
    """The ARN of a bucket in the settings' partition."""
    return f"arn:{partition(settings.aws_region)}:s3:::{bucket}"


def project_statements(settings: LakeSettings, bucket: str) -> list[dict[str, Any]]:
    """The bucket-policy statements the project owns: TLS only, and no PUT that asks for another
    server-side encryption than the configured one.

    A PUT without an encryption header is not denied: UploadPart (every part of a multipart
    upload) is authorised as ``s3:PutObject`` and never carries the header, so the usual
    "deny when the header is missing" statement (or a plain ``StringNotEquals``) denies every
    upload above ``LAKE_S3_MULTIPART_BYTES`` (aws-cli#4251, botocore#471). Header-less writes
    are encrypted anyway, with the bucket's default encryption, which ``lake init`` sets.
    """
    arn = bucket_arn(settings, bucket)
    objects = f"{arn}/*"
    return [
        {"Sid": SID_TLS, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, objects], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": SID_WRONG_SSE, "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": objects,
         "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": settings.s3_sse}}},
    ]


def merge_policy(existing: dict[str, Any] | None, ours: list[dict[str, Any]]) -> dict[str, Any]:
    """``existing`` with the project's statements replaced by ``ours``; every statement whose Sid
    the project does not own is kept as it was, in its order."""
    doc = dict(existing or {})
    doc.setdefault("Version", "2012-10-17")
    statements = doc.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    foreign = [s for s in statements if not str(s.get("Sid", "")).startswith(SID_PREFIX)]
    doc["Statement"] = [*foreign, *ours]
    return doc


def _canonical(value: Any) -> Any:
    """A policy element with one-item lists and strings made equal, for comparing read-backs."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
    if isinstance(value, bool):
        return str(value).lower()
    return value


def _same_policy(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    if a is None:
        return False
    norm = [json.dumps(_canonical(s), sort_keys=True) for s in _statements(a)]
    want = [json.dumps(_canonical(s), sort_keys=True) for s in _statements(b)]
    return sorted(norm) == sorted(want) and a.get("Version") == b.get("Version")


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    statements = doc.get("Statement") or []
    return [statements] if isinstance(statements, dict) else list(statements)


def _describe_encryption(settings: LakeSettings) -> str:
    if settings.s3_sse == "aws:kms":
        return f"SSE-KMS, key {settings.s3_kms_key_id or 'aws/s3'}, bucket key on"
    return "SSE-S3 (AES256)"


def encryption_rule(settings: LakeSettings) -> dict[str, Any]:
    """The default-encryption rule the settings ask for (SSE-KMS with a bucket key, or SSE-S3)."""
    if settings.s3_sse == "aws:kms":
        default: dict[str, Any] = {"SSEAlgorithm": "aws:kms"}
        if settings.s3_kms_key_id:
            default["KMSMasterKeyID"] = settings.s3_kms_key_id
        # a bucket key cuts KMS requests (and their cost) by orders of magnitude
        return {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}
    return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


# ------------------------------------------------------------------- comparisons (init, doctor)


def _same_key(configured: str, found: str) -> bool:
    """A key id, key ARN or alias names the same key as another spelling of it."""
    if configured == found:
        return True
    short, long = sorted((configured, found), key=len)
    return long.startswith("arn:") and (long.endswith("/" + short) or long.endswith(":" + short))


def encryption_problem(settings: LakeSettings, config: dict[str, Any] | None) -> str | None:
    """Why a bucket's default encryption does not match the settings; None when it does."""
    if config is None:
        return "no default encryption"
    rules = config.get("Rules") or []
    if not rules:
        return "no default encryption rule"
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    algorithm = default.get("SSEAlgorithm")
    if algorithm != settings.s3_sse:
        return f"default encryption is {algorithm}, the settings say {settings.s3_sse} (LAKE_S3_SSE)"
    if settings.s3_sse == "aws:kms":
        key = default.get("KMSMasterKeyID")
        if settings.s3_kms_key_id and not (key and _same_key(settings.s3_kms_key_id, key)):
            return f"default KMS key is {key or 'aws/s3'}, the settings say {settings.s3_kms_key_id}"
        if not settings.s3_kms_key_id and key:
            return f"default KMS key is {key}, the settings say the aws/s3 key (LAKE_S3_KMS_KEY_ID empty)"
        if not rules[0].get("BucketKeyEnabled"):
            return "SSE-KMS without a bucket key (every object costs KMS requests)"
    return None


def public_access_problem(config: dict[str, Any] | None) -> str | None:
    """Which Block Public Access settings are off; None when all four are on."""
    if config is None:
        return "no Block Public Access configuration"
    off = [k for k in PUBLIC_ACCESS_BLOCK if not config.get(k)]
    return f"not blocked: {', '.join(off)}" if off else None


def ownership_problem(config: dict[str, Any] | None) -> str | None:
    """Why ACLs are still in force; None when object ownership is ``BucketOwnerEnforced``."""
    if config is None:
        return "no object ownership controls: ACLs are enabled"
    rules = config.get("Rules") or []
    found = rules[0].get("ObjectOwnership") if rules else None
    return None if found == "BucketOwnerEnforced" else f"object ownership is {found}: ACLs are enabled"


def versioning_problem(config: dict[str, Any]) -> str | None:
    """Why versioning is not on (off or suspended); None when it is enabled."""
    found = config.get("Status")
    return None if found == "Enabled" else f"versioning is {found or 'off'}"


def _principal_everyone(p: Any) -> bool:
    if p == "*":
        return True
    if isinstance(p, dict):
        aws = p.get("AWS")
        return aws == "*" or aws == ["*"]
    return False


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _condition(stmt: dict[str, Any], operator: str, key: str) -> list[str]:
    values = (stmt.get("Condition") or {}).get(operator, {}).get(key)
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(values)]


def _denies(stmt: dict[str, Any], action: str) -> bool:
    actions = _as_list(stmt.get("Action"))
    return (stmt.get("Effect") == "Deny" and _principal_everyone(stmt.get("Principal"))
            and ("s3:*" in actions or action in actions or "*" in actions))


def policy_problems(settings: LakeSettings, bucket: str, doc: dict[str, Any] | None) -> dict[str, str | None]:
    """Per control (``tls-only``, ``wrong-encryption deny``) why the policy lacks it; None = present.

    Statements are recognised by what they say, not by their Sid: an equivalent statement
    written by someone else counts.
    """
    arn = bucket_arn(settings, bucket)
    statements = _statements(doc) if doc else []
    tls_covered: set[str] = set()
    for s in statements:
        if _denies(s, "s3:*") and _condition(s, "Bool", "aws:SecureTransport") == ["false"]:
            tls_covered.update(_as_list(s.get("Resource")))
    tls = None
    if doc is None:
        tls = "no bucket policy"
    elif not {arn, f"{arn}/*"} <= tls_covered:
        tls = "no statement denying requests without TLS (aws:SecureTransport false) on the bucket and its objects"

    def put_deny(match: Callable[[dict[str, Any]], bool]) -> bool:
        return any(_denies(s, "s3:PutObject") and f"{arn}/*" in _as_list(s.get("Resource")) and match(s)
                   for s in statements)

    # either operator denies a wrong algorithm; the IfExists form also lets multipart parts through
    wrong = put_deny(lambda s: any(_condition(s, op, "s3:x-amz-server-side-encryption") == [settings.s3_sse]
                                   for op in ("StringNotEqualsIfExists", "StringNotEquals")))
    sse = None
    if doc is None:
        sse = "no bucket policy"
    elif not wrong:
        sse = f"no statement denying PutObject with an encryption other than {settings.s3_sse}"
    return {"tls-only": tls, "wrong-encryption deny": sse}


# ------------------------------------------------------------------------------ S3 plumbing


def _code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def _read(fn: Callable[..., dict[str, Any]], what: str, **kwargs: Any) -> dict[str, Any] | None:
    """A ``Get*`` of a bucket configuration; None when it is not configured."""
    try:
        response = fn(**kwargs)
    except ClientError as exc:
        if _code(exc) in MISSING_CONFIG:
            return None
        raise aws_error(exc, what) from exc
    except BotoCoreError as exc:
        raise aws_error(exc, what) from exc
    response.pop("ResponseMetadata", None)
    return response


def _bucket_exists(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied", "Forbidden"):
            raise TerminalError(f"bucket {bucket} exists but this identity may not use it (owned by another "
                                "account, or no s3:ListBucket): choose another LAKE_BUCKET_PREFIX or fix "
                                "the permissions") from exc
        raise aws_error(exc, f"checking bucket {bucket}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"checking bucket {bucket}") from exc


def _s3(settings: LakeSettings, storage: S3Storage | None = None) -> S3Storage:
    return storage if storage is not None else S3Storage(settings)


# ------------------------------------------------------------------------------------- init


def init_lake(settings: LakeSettings, *, access_log_bucket: str | None = None,
              bucket_policy: bool = True, storage: S3Storage | None = None,
              notifications: bool = False) -> InitReport:
    """Create the role buckets (or folders) and bring every control into line; idempotent.

    A re-run on a deployment that already matches reports every control ``unchanged`` and writes
    nothing. ``bucket_policy=False`` leaves the bucket policy alone (for plain-HTTP emulators).
    ``notifications`` also sets up the landing events queue (see :mod:`pipelines.notifications_setup`).
    """
    if settings.backend == "local":
        if notifications:
            raise ConfigError("--notifications needs LAKE_BACKEND=s3: S3 event notifications come from an S3 "
                              "bucket; the embedded backend lands by listing its landing folder")
        return _init_local(settings, access_log_bucket, bucket_policy)
    s3 = _s3(settings, storage)
    report = InitReport(backend="s3")
    buckets = {role: settings.bucket(role) for role in ROLES}
    if access_log_bucket:
        _check_log_bucket(s3.client, access_log_bucket, buckets.values())
    if not bucket_policy:
        report.notes.append(NO_POLICY_REASON)
    elif (settings.s3_endpoint_url or "").startswith("http://"):
        report.notes.append(PLAIN_HTTP_WARNING.format(url=settings.s3_endpoint_url))
    for role, bucket in buckets.items():
        report.changes.extend(_init_bucket(settings, s3, role, bucket, access_log_bucket, bucket_policy))
    if notifications:
        from pipelines import notifications_setup  # it builds on this module's Change and Check

        changes, report.queue_url = notifications_setup.init_notifications(settings, s3)
        report.changes.extend(changes)
    return report


def _init_bucket(settings: LakeSettings, s3: S3Storage, role: str, bucket: str, log_bucket: str | None,
                 bucket_policy: bool) -> Iterable[Change]:
    client = s3.client

    def change(control: str, outcome: str, detail: str = "") -> Change:
        return Change(role=role, target=bucket, control=control, outcome=outcome, detail=detail)

    def apply(control: str, state: str, before: Any, problem: str | None, write: Callable[[], Any]) -> Change:
        """Write ``state`` when ``problem`` says the bucket differs from it; ``before`` is the
        configuration as read (None: there was none)."""
        if problem is None:
            return change(control, "unchanged", state)
        s3._call(f"setting {control} of bucket {bucket}", write)
        if before is None:
            return change(control, "created", state)
        return change(control, "updated", f"{state} (was: {problem})")

    if _bucket_exists(client, bucket):
        yield change("bucket", "unchanged")
    else:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.aws_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
        try:
            client.create_bucket(**kwargs)
            yield change("bucket", "created")
        except ClientError as exc:
            if _code(exc) == "BucketAlreadyOwnedByYou":  # created meanwhile by another init
                yield change("bucket", "unchanged")
            elif _code(exc) == "BucketAlreadyExists":
                raise ConfigError(f"bucket name {bucket} is taken by another account: choose another "
                                  "LAKE_BUCKET_PREFIX") from exc
            else:
                raise aws_error(exc, f"creating bucket {bucket}") from exc

    # ACLs off first: with BucketOwnerEnforced no grant can make an object public or foreign-owned
    found = _read(client.get_bucket_ownership_controls, f"reading ownership of {bucket}", Bucket=bucket)
    own = found.get("OwnershipControls") if found else None
    yield apply("object ownership", "BucketOwnerEnforced (ACLs disabled)", own, ownership_problem(own), lambda: client.put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}))

    pab = _read(client.get_public_access_block, f"reading Block Public Access of {bucket}", Bucket=bucket)
    pab_config = (pab or {}).get("PublicAccessBlockConfiguration") if pab else None
    yield apply("block public access", "all four settings on", pab_config, public_access_problem(pab_config),
                lambda: client.put_public_access_block(Bucket=bucket,
                                                       PublicAccessBlockConfiguration=dict(PUBLIC_ACCESS_BLOCK)))

    enc = _read(client.get_bucket_encryption, f"reading encryption of {bucket}", Bucket=bucket)
    enc_config = enc.get("ServerSideEncryptionConfiguration") if enc else None
    yield apply("default encryption", _describe_encryption(settings), enc_config,
                encryption_problem(settings, enc_config),
                lambda: client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
                    "Rules": [encryption_rule(settings)]}))

    # raw and curated keep superseded versions, which their lifecycle rules expire; landing and
    # quarantine objects are written once and expire whole, so versions would only keep garbage
    if role in VERSIONED_ROLES:
        ver = _read(client.get_bucket_versioning, f"reading versioning of {bucket}", Bucket=bucket) or {}
        yield apply("versioning", "Enabled", ver if ver.get("Status") else None, versioning_problem(ver),
                    lambda: client.put_bucket_versioning(Bucket=bucket,
                                                         VersioningConfiguration={"Status": "Enabled"}))
    else:
        yield change("versioning", "skipped", f"not versioned: {role} objects are written once")

    if bucket_policy:
        found = _read(client.get_bucket_policy, f"reading the policy of {bucket}", Bucket=bucket)
        existing = json.loads(found["Policy"]) if found else None
        wanted = merge_policy(existing, project_statements(settings, bucket))
        kept = len(_statements(wanted)) - len(project_statements(settings, bucket))
        state = f"TLS only, PutObject only with {settings.s3_sse}" + (
            f"; kept {kept} other statement{'s' if kept != 1 else ''}" if kept else "")
        problem = None if _same_policy(existing, wanted) else "other project statements"
        yield apply("bucket policy", state, existing, problem,
                    lambda: client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted)))
    else:
        yield change("bucket policy", "skipped", "--no-bucket-policy")

    if log_bucket:
        yield _init_logging(s3, role, bucket, log_bucket)


def _check_log_bucket(client: Any, log_bucket: str, ours: Iterable[str]) -> None:
    if log_bucket in set(ours):
        raise ConfigError(f"--access-log-bucket {log_bucket} is one of the lake's buckets: a bucket that logs "
                          "into itself logs its own log deliveries; use a separate bucket")
    try:
        exists = _bucket_exists(client, log_bucket)
    except TerminalError:
        return  # it exists but we may not look at it: PutBucketLogging says whether it can be used
    if not exists:
        raise ConfigError(f"--access-log-bucket {log_bucket} does not exist: create it (in "
                          "the lake's region) first")


def _logging_grant_hint(log_bucket: str) -> str:
    return (f"give {log_bucket} a bucket policy allowing the principal "
            "{\"Service\": \"logging.s3.amazonaws.com\"} s3:PutObject on "
            f"arn:aws:s3:::{log_bucket}/* (with aws:SourceAccount set to this account)")


def _init_logging(s3: S3Storage, role: str, bucket: str, log_bucket: str) -> Change:
    client = s3.client
    prefix = f"{bucket}/"
    found = _read(client.get_bucket_logging, f"reading access logging of {bucket}", Bucket=bucket) or {}
    enabled = found.get("LoggingEnabled") or {}
    if enabled.get("TargetBucket") == log_bucket and enabled.get("TargetPrefix") == prefix:
        return Change(role, bucket, "access logging", "unchanged", f"s3://{log_bucket}/{prefix}")
    try:
        client.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": log_bucket, "TargetPrefix": prefix}})
    except ClientError as exc:
        if _code(exc) == "InvalidTargetBucketForLogging":
            raise ConfigError(f"S3 may not deliver access logs of {bucket} to {log_bucket}: "
                              f"{_logging_grant_hint(log_bucket)}") from exc
        if _code(exc) == "CrossLocationLoggingProhibited":
            raise ConfigError(f"--access-log-bucket {log_bucket} is in another region than {bucket}: "
                              "use a log bucket in the lake's region") from exc
        raise aws_error(exc, f"setting access logging of {bucket}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"setting access logging of {bucket}") from exc
    return Change(role, bucket, "access logging", "updated" if enabled else "created",
                  f"s3://{log_bucket}/{prefix}")


def _role_folders(settings: LakeSettings) -> list[tuple[str, Path]]:
    root = settings.root_path
    return [("lake", root), *((role, root / role) for role in ROLES)]


def _init_local(settings: LakeSettings, access_log_bucket: str | None, bucket_policy: bool) -> InitReport:
    report = InitReport(backend="local", notes=[LOCAL_NOTE])
    if access_log_bucket or not bucket_policy:
        report.notes.append("--access-log-bucket and --no-bucket-policy have no effect on the embedded backend")
    for role, path in _role_folders(settings):
        if not path.exists():
            path.mkdir(parents=True, mode=OWNER_ONLY)
            path.chmod(OWNER_ONLY)  # mkdir's mode is masked by the umask
            outcome, detail = "created", f"mode {OWNER_ONLY:04o}"
        elif not path.is_dir():
            raise ConfigError(f"{path} exists and is not a folder: the lake needs it for {role}")
        else:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode == OWNER_ONLY:
                outcome, detail = "unchanged", f"mode {mode:04o}"
            else:
                path.chmod(OWNER_ONLY)
                outcome, detail = "updated", f"mode {mode:04o} -> {OWNER_ONLY:04o}"
        report.changes.append(Change(role=role, target=str(path), control="folder", outcome=outcome,
                                     detail=detail))
    return report


# ----------------------------------------------------------------------------------- doctor

#: the controls doctor checks on every bucket, in the order it prints them
CONTROLS = ("bucket", "block public access", "tls-only", "wrong-encryption deny", "default encryption",
            "versioning", "lifecycle", "object ownership")


def doctor(settings: LakeSettings, *, storage: S3Storage | None = None,
           spec: TableSpec | None = None) -> DoctorReport:
    """Check every control of every role bucket (or folder); reads only, changes nothing.

    The lifecycle control wants every rule ``lake tier apply`` writes for the table (``spec``,
    by default the settings' table) present and enabled, by rule ID.
    """
    if settings.backend == "local":
        return _doctor_local(settings)
    s3 = _s3(settings, storage)
    spec = spec or load_spec("clickstream", settings.table)
    rules = desired_rules(settings, spec, TieringPolicy.from_settings(settings))
    report = DoctorReport(backend="s3")
    for role in ROLES:
        report.checks.extend(_doctor_bucket(settings, s3.client, role, settings.bucket(role), rules[role]))
    if settings.landing_trigger == "queue":
        from pipelines import notifications_setup  # it builds on this module's Change and Check

        report.checks.extend(notifications_setup.doctor_checks(settings, s3))
    return report


def _doctor_bucket(settings: LakeSettings, client: Any, role: str, bucket: str,
                   rules: list[dict[str, Any]]) -> list[Check]:
    checks: list[Check] = []

    def check(control: str, problem: str | None, fix: str, ok: str = "") -> None:
        checks.append(Check(role, bucket, control, "pass" if problem is None else "FAIL",
                            ok if problem is None else problem, "" if problem is None else fix))

    def read(control: str, fn: Callable[..., dict[str, Any]]) -> tuple[bool, dict[str, Any] | None]:
        try:
            return True, _read(fn, f"reading {control} of {bucket}", Bucket=bucket)
        except TerminalError as exc:  # e.g. AccessDenied: this control cannot be vouched for
            checks.append(Check(role, bucket, control, "FAIL", str(exc), FIX_READ))
            return False, None

    try:
        exists = _bucket_exists(client, bucket)
    except TerminalError as exc:
        check("bucket", str(exc), FIX_INIT)
        return checks
    if not exists:
        check("bucket", "bucket does not exist (its other controls were not checked)", FIX_INIT)
        return checks
    check("bucket", None, FIX_INIT, "exists")

    ok, pab = read("block public access", client.get_public_access_block)
    if ok:
        config = pab.get("PublicAccessBlockConfiguration") if pab else None
        check("block public access", public_access_problem(config), FIX_INIT, "all four settings on")

    ok, found = read("tls-only", client.get_bucket_policy)
    if ok:
        doc = json.loads(found["Policy"]) if found else None
        problems = policy_problems(settings, bucket, doc)
        check("tls-only", problems["tls-only"], FIX_POLICY, "denies aws:SecureTransport false")
        check("wrong-encryption deny", problems["wrong-encryption deny"], FIX_POLICY,
              f"denies PutObject without {settings.s3_sse}")
    else:
        checks.append(Check(role, bucket, "wrong-encryption deny", "FAIL", "the bucket policy could not be read",
                            FIX_READ))

    ok, enc = read("default encryption", client.get_bucket_encryption)
    if ok:
        config = enc.get("ServerSideEncryptionConfiguration") if enc else None
        check("default encryption", encryption_problem(settings, config), FIX_INIT,
              settings.s3_sse + (f" key {settings.s3_kms_key_id}" if settings.s3_kms_key_id else ""))

    if role in VERSIONED_ROLES:
        ok, ver = read("versioning", client.get_bucket_versioning)
        if ok:
            check("versioning", versioning_problem(ver or {}), FIX_INIT, "enabled")
    else:
        checks.append(Check(role, bucket, "versioning", "n/a", f"{role} is not versioned"))

    ok, life = read("lifecycle", client.get_bucket_lifecycle_configuration)
    if ok:
        problem, detail = lifecycle_problem(life, rules)
        check("lifecycle", problem, FIX_LIFECYCLE, detail)

    ok, own = read("object ownership", client.get_bucket_ownership_controls)
    if ok:
        check("object ownership", ownership_problem(own.get("OwnershipControls") if own else None), FIX_INIT,
              "BucketOwnerEnforced (ACLs disabled)")
    return checks


def lifecycle_problem(config: dict[str, Any] | None, wanted: list[dict[str, Any]]) -> tuple[str | None, str]:
    """Why a bucket's lifecycle lacks the project's ``wanted`` rules (None when it has them,
    by ID and enabled), and a description of what was found."""
    if config is None:
        return "no lifecycle configuration", ""
    found = {str(r.get("ID")): r for r in config.get("Rules") or []
             if str(r.get("ID", "")).startswith(RULE_ID_PREFIX) and r.get("Status") == "Enabled"}
    missing = [r["ID"] for r in wanted if r["ID"] not in found]
    if not found:
        return f"no enabled lifecycle rule of the project (IDs starting {RULE_ID_PREFIX!r})", ""
    if missing:
        return f"missing project rules: {', '.join(missing)}", ""
    # by ID, not by content: S3 emulators drop parts of rules on read-back (size filters)
    differ = [r["ID"] for r in wanted if not same_rule(found[r["ID"]], r)]
    detail = f"{len(wanted)} project rules enabled"
    if differ:
        detail += f"; {len(differ)} read back unlike the policy ({', '.join(differ)}): `lake tier apply` rewrites them"
    return None, detail


def _doctor_local(settings: LakeSettings) -> DoctorReport:
    report = DoctorReport(backend="local")
    for role, path in _role_folders(settings):
        if not path.is_dir():
            report.checks.append(Check(role, str(path), "folder", "FAIL", "does not exist", FIX_INIT))
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            report.checks.append(Check(role, str(path), "folder", "FAIL",
                                       f"mode {mode:04o}: group or others may read or write it",
                                       f"{FIX_INIT} (or chmod 700 {path})"))
        else:
            report.checks.append(Check(role, str(path), "folder", "pass", f"mode {mode:04o} (owner only)"))
    for control in CONTROLS[1:]:
        report.checks.append(Check("all", "-", control, "n/a", "n/a on the embedded backend"))
    return report


# ------------------------------------------------------------------------------- IAM policy

#: what the pipeline does to the objects of its buckets (HEAD is GetObject, copy is Get + Put,
#: multipart parts are PutObject)
OBJECT_ACTIONS = ("s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:GetObjectTagging",
                  "s3:ListMultipartUploadParts", "s3:PutObject", "s3:PutObjectTagging", "s3:RestoreObject")
#: on the buckets themselves: list (and HEAD bucket), stale multipart uploads, lifecycle rules
BUCKET_ACTIONS = ("s3:GetLifecycleConfiguration", "s3:ListBucket", "s3:ListBucketMultipartUploads",
                  "s3:PutLifecycleConfiguration")
#: what ``lake init`` reads and writes (``lake doctor`` needs the Get* half)
INIT_ACTIONS = ("s3:CreateBucket", "s3:GetBucketLogging", "s3:GetBucketOwnershipControls",
                "s3:GetBucketPolicy", "s3:GetBucketPublicAccessBlock", "s3:GetBucketVersioning",
                "s3:GetEncryptionConfiguration", "s3:PutBucketLogging", "s3:PutBucketOwnershipControls",
                "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock", "s3:PutBucketVersioning",
                "s3:PutEncryptionConfiguration")
GLUE_ACTIONS = ("glue:BatchCreatePartition", "glue:BatchGetPartition", "glue:BatchUpdatePartition",
                "glue:CreateDatabase", "glue:CreateTable", "glue:DeletePartition", "glue:GetDatabase",
                "glue:GetPartition", "glue:GetPartitions", "glue:GetTable", "glue:UpdateTable")
KMS_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


def validate_account_id(value: str) -> str:
    """The account id, or a ConfigError saying why it is not one."""
    value = value.strip()
    if not _ACCOUNT_ID.fullmatch(value):
        raise ConfigError(f"--account-id must be the 12 digits of an AWS account id, not {value!r}")
    return value


def caller_account_id(settings: LakeSettings) -> str:
    """The account of the current credentials (STS GetCallerIdentity, which needs no permission)."""
    # an emulator serves every service on its one URL; on AWS both endpoints are empty
    endpoint = settings.glue_endpoint_url or settings.s3_endpoint_url or None
    try:
        sts = aws_session(settings).client("sts", endpoint_url=endpoint, config=client_config(settings, 2))
        return validate_account_id(str(sts.get_caller_identity()["Account"]))
    except (ClientError, BotoCoreError, LakeError) as exc:
        raise ConfigError(f"cannot find the AWS account id of these credentials ({exc}): "
                          "pass --account-id") from exc


def _kms_statement(settings: LakeSettings, part: str, account: str) -> dict[str, Any]:
    key = settings.s3_kms_key_id or ""
    statement: dict[str, Any] = {"Sid": "LakeKmsKey", "Effect": "Allow", "Action": list(KMS_ACTIONS)}
    region = settings.aws_region
    alias = None
    if key.startswith("arn:"):
        if ":alias/" in key:
            fields = key.split(":")
            region, account = fields[3], fields[4]
            alias = "alias/" + key.split(":alias/", 1)[1]
        else:
            statement["Resource"] = key
    elif key.startswith("alias/"):
        alias = key
    else:
        statement["Resource"] = f"arn:{part}:kms:{region}:{account}:key/{key}"
    if alias:
        # key permissions are checked on the key an alias points to: scope to the account's keys
        # that carry the alias
        statement["Resource"] = f"arn:{part}:kms:{region}:{account}:key/*"
        statement["Condition"] = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}
    return statement


def iam_policy(settings: LakeSettings, *, table: str, account_id: str, with_init: bool = False,
               notifications: bool | None = None) -> dict[str, Any]:
    """A least-privilege IAM policy for the pipeline's role on these settings' deployment.

    S3 actions name exactly the four role buckets (bucket actions) and their objects (object
    actions); Glue actions name exactly the catalog, the database and ``table``; KMS actions the
    configured key; SQS actions (``notifications``, by default when ``LAKE_LANDING_TRIGGER=queue``)
    exactly the landing events queue and its dead-letter queue. Every action used has
    resource-level permissions, so no statement needs ``"Resource": "*"`` (STS
    GetCallerIdentity, used to find the account, needs no permission).
    """
    if settings.backend != "s3":
        raise ConfigError("the embedded backend uses no AWS permissions: `lake iam-policy` describes an "
                          "S3 deployment (LAKE_BACKEND=s3)")
    account = validate_account_id(account_id)
    part = partition(settings.aws_region)
    buckets = [bucket_arn(settings, settings.bucket(role)) for role in ROLES]
    statements: list[dict[str, Any]] = [
        {"Sid": "LakeBuckets", "Effect": "Allow", "Action": list(BUCKET_ACTIONS), "Resource": buckets},
        {"Sid": "LakeObjects", "Effect": "Allow", "Action": list(OBJECT_ACTIONS),
         "Resource": [f"{b}/*" for b in buckets]},
    ]
    if settings.catalog_kind == "glue":
        glue = f"arn:{part}:glue:{settings.aws_region}:{account}"
        db = settings.glue_database
        statements.append({"Sid": "LakeCatalog", "Effect": "Allow", "Action": list(GLUE_ACTIONS),
                           "Resource": [f"{glue}:catalog", f"{glue}:database/{db}", f"{glue}:table/{db}/{table}"]})
    if settings.s3_sse == "aws:kms" and settings.s3_kms_key_id:
        # the aws/s3 managed key (no key id) is usable through S3 by the account's principals
        statements.append(_kms_statement(settings, part, account))
    if with_init:
        statements.append({"Sid": "LakeBootstrap", "Effect": "Allow", "Action": list(INIT_ACTIONS),
                           "Resource": buckets})
    if notifications is None:
        notifications = settings.landing_trigger == "queue"
    if notifications:
        from pipelines import notifications_setup  # it builds on this module's Change and Check

        statements.extend(notifications_setup.iam_statements(settings, account, with_init))
    return {"Version": "2012-10-17", "Statement": statements}
