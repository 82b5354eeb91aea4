"""``lake init``, ``lake doctor`` and ``lake iam-policy`` against the moto server and a local folder.

Known moto behaviour these tests rely on (checked here, not assumed): with the TLS-only bucket
policy set, moto denies object PUTs over its plain-HTTP endpoint (as AWS would), while the
bucket-configuration calls init and doctor make (Get/Put of the policy, Block Public Access,
encryption, versioning, ownership, lifecycle, logging) still succeed.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipelines import bootstrap
from pipelines.cli import app
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import LakeError
from pipelines.lifecycle import RULE_ID_PREFIX, apply_lifecycle
from pipelines.s3 import S3Storage
from tests.conftest import s3_settings_for

pytestmark = pytest.mark.timeout(300)
ACCOUNT = "123456789012"  # moto's account
S3_CONTROLS = {"bucket", "block public access", "tls-only", "wrong-encryption deny", "default encryption",
               "versioning", "lifecycle", "object ownership"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("LAKE_"):
            monkeypatch.delenv(name)


def run(settings: LakeSettings, *args: str):
    """The CLI as a deployment runs it: settings from LAKE_* variables, a wide console."""
    env = {**settings.to_env(), "COLUMNS": "400"}
    return CliRunner().invoke(app, ["--root", str(settings.root_path), *args], env=env)


def client(settings: LakeSettings):
    return S3Storage(settings).client


def snapshot(settings: LakeSettings) -> dict:
    """Every bucket configuration init touches, as the S3 API returns it."""
    s3 = client(settings)
    found: dict = {}
    for role in ROLES:
        bucket = settings.bucket(role)
        for name in ("get_public_access_block", "get_bucket_encryption", "get_bucket_versioning",
                     "get_bucket_policy", "get_bucket_ownership_controls", "get_bucket_logging"):
            try:
                r = getattr(s3, name)(Bucket=bucket)
                r.pop("ResponseMetadata", None)
            except ClientError as exc:
                r = {"error": exc.response["Error"]["Code"]}
            found[(bucket, name)] = r
    return found


def put_project_lifecycle(settings: LakeSettings) -> None:
    """What `lake tier apply` does: the project's lifecycle rules on every bucket."""
    assert apply_lifecycle(settings).written


def fail_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " FAIL " in line]


@pytest.fixture
def s3_settings(moto_endpoint, tmp_path) -> LakeSettings:
    """A fresh lake whose buckets exist with no controls (as the conftest creates them)."""
    return s3_settings_for(moto_endpoint, tmp_path / "lake")


# -------------------------------------------------------------------------------- S3: init


def test_init_then_doctor_passes_every_control(s3_settings):
    settings = s3_settings
    done = run(settings, "init")
    assert done.exit_code == 0, done.output
    assert "created" in done.output
    assert "plain HTTP" in done.output  # the emulator endpoint: warned about the TLS-only policy

    s3 = client(settings)
    for role in ROLES:
        bucket = settings.bucket(role)
        assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == \
            bootstrap.PUBLIC_ACCESS_BLOCK
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == (
            "Enabled" if role in ("raw", "curated") else None)
        assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": "BucketOwnerEnforced"}]
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        by_sid = {s["Sid"]: s for s in policy["Statement"]}
        arn = f"arn:aws:s3:::{bucket}"
        assert by_sid[bootstrap.SID_TLS]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert set(by_sid[bootstrap.SID_TLS]["Resource"]) == {arn, f"{arn}/*"}
        # IfExists: multipart parts carry no encryption header and must not be denied
        assert by_sid[bootstrap.SID_WRONG_SSE]["Condition"] == {
            "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "AES256"}}
        assert set(by_sid) == {bootstrap.SID_TLS, bootstrap.SID_WRONG_SSE}

    # lifecycle is `lake tier apply`'s: until it ran, that is the only control failing
    before = run(settings, "doctor")
    assert before.exit_code == 1, before.output
    lines = fail_lines(before.output)
    assert len(lines) == len(ROLES)
    assert all("lifecycle" in line and "lake tier apply" in line for line in lines)

    put_project_lifecycle(settings)
    after = run(settings, "doctor")
    assert after.exit_code == 0, after.output
    report = bootstrap.doctor(settings)
    assert report.passed
    assert {c.control for c in report.checks} == S3_CONTROLS
    assert {c.status for c in report.checks if c.role in ("raw", "curated")} == {"pass"}
    assert [c.control for c in report.checks if c.status == "n/a"] == ["versioning", "versioning"]
    assert report.summary() == "30 passed, 0 failed, 2 not applicable"
    assert report.summary() in after.output


def test_init_creates_missing_buckets(moto_endpoint, tmp_path):
    existing = s3_settings_for(moto_endpoint, tmp_path / "lake")
    settings = existing.with_(bucket_prefix=f"n-{uuid.uuid4().hex[:10]}")
    report = bootstrap.init_lake(settings, bucket_policy=False)
    assert [c.outcome for c in report.changes if c.control == "bucket"] == ["created"] * 4
    names = {b["Name"] for b in client(settings).list_buckets()["Buckets"]}
    assert {settings.bucket(r) for r in ROLES} <= names
    assert report.notes == [bootstrap.NO_POLICY_REASON]


def test_rerun_changes_nothing(s3_settings):
    settings = s3_settings
    s3 = client(settings)
    log_bucket = f"{settings.bucket_prefix}-logs"
    s3.create_bucket(Bucket=log_bucket)
    s3.put_bucket_policy(Bucket=log_bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "S3ServerAccessLogs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{log_bucket}/*",
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]}))

    first = bootstrap.init_lake(settings, access_log_bucket=log_bucket)
    assert first.changed
    logging = s3.get_bucket_logging(Bucket=settings.bucket("raw"))["LoggingEnabled"]
    assert (logging["TargetBucket"], logging["TargetPrefix"]) == (log_bucket, f"{settings.bucket('raw')}/")

    before = snapshot(settings)
    again = run(settings, "init", "--access-log-bucket", log_bucket)
    assert again.exit_code == 0, again.output
    assert "nothing to change" in again.output
    assert " created " not in again.output and " updated " not in again.output
    assert snapshot(settings) == before

    second = bootstrap.init_lake(settings, access_log_bucket=log_bucket)
    assert not second.changed
    assert {c.outcome for c in second.changes} == {"unchanged", "skipped"}
    assert {c.control for c in second.changes if c.outcome == "skipped"} == {"versioning"}  # landing, quarantine


def test_init_keeps_foreign_policy_statements_and_replaces_its_own(s3_settings):
    settings = s3_settings
    s3 = client(settings)
    bucket = settings.bucket("curated")
    foreign = {"Sid": "PartnerRead", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
               "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    stale = {**bootstrap.project_statements(settings, bucket)[1],
             "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17",
                                                           "Statement": [foreign, stale]}))

    report = bootstrap.init_lake(settings)
    change = next(c for c in report.changes if c.target == bucket and c.control == "bucket policy")
    assert change.outcome == "updated" and "kept 1 other" in change.detail
    statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert statements[0] == foreign
    assert [s["Sid"] for s in statements] == ["PartnerRead", bootstrap.SID_TLS, bootstrap.SID_WRONG_SSE]
    assert statements[2]["Condition"] == {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "AES256"}}

    again = bootstrap.init_lake(settings)
    assert next(c for c in again.changes if c.target == bucket and c.control == "bucket policy").outcome == "unchanged"


def test_no_bucket_policy_says_why_and_leaves_the_emulator_usable(s3_settings):
    settings = s3_settings
    done = run(settings, "init", "--no-bucket-policy")
    assert done.exit_code == 0, done.output
    assert "--no-bucket-policy" in done.output and "plain HTTP" in done.output
    s3 = client(settings)
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_policy(Bucket=settings.bucket("raw"))
    assert missing.value.response["Error"]["Code"] == "NoSuchBucketPolicy"
    storage = S3Storage(settings)
    assert storage.put("raw", "probe/a.txt", b"x").size == 1  # writes work without the policy
    head = s3.head_object(Bucket=settings.bucket("raw"), Key="probe/a.txt")
    assert head["ServerSideEncryption"] == "AES256"

    doctor = run(settings, "doctor")
    assert doctor.exit_code == 1
    policy_fails = [line for line in fail_lines(doctor.output) if "tls-only" in line or "wrong-encryption" in line]
    assert len(policy_fails) == 2 * len(ROLES)
    assert all("without --no-bucket-policy" in line for line in policy_fails)

    # with the TLS-only policy the same write over plain HTTP is refused: the reason for the flag
    bootstrap.init_lake(settings)
    with pytest.raises(LakeError):
        storage.put("raw", "probe/b.txt", b"x")


def test_access_log_bucket_must_exist_and_grant_log_delivery(s3_settings):
    settings = s3_settings
    missing = run(settings, "init", "--access-log-bucket", f"{settings.bucket_prefix}-nolog")
    assert missing.exit_code == 2
    assert "does not exist" in missing.output and "Traceback" not in missing.output

    ungranted = f"{settings.bucket_prefix}-logs"
    client(settings).create_bucket(Bucket=ungranted)
    refused = run(settings, "init", "--no-bucket-policy", "--access-log-bucket", ungranted)
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith("error: ") and "logging.s3.amazonaws.com" in refused.output

    ours = run(settings, "init", "--access-log-bucket", settings.bucket("raw"))
    assert ours.exit_code == 2 and "one of the lake's buckets" in ours.output


# ------------------------------------------------------------------------------ S3: doctor


def test_doctor_names_every_failing_control_of_plain_buckets(s3_settings):
    settings = s3_settings
    result = run(settings, "doctor")
    assert result.exit_code == 1, result.output
    report = bootstrap.doctor(settings)
    failing = {(c.role, c.control) for c in report.failures}
    for role in ROLES:
        expected = {"block public access", "tls-only", "wrong-encryption deny", "default encryption",
                    "lifecycle", "object ownership"}
        if role in ("raw", "curated"):
            expected.add("versioning")
        assert {control for r, control in failing if r == role} == expected, role
    assert {c.control for c in report.checks if c.status == "pass"} == {"bucket"}

    lines = fail_lines(result.output)
    assert len(lines) == len(report.failures)
    for c in report.failures:
        line = next(line for line in lines if c.target in line and f" {c.control} " in line)
        assert c.fix in line
    assert all("lake init" in line or "lake tier apply" in line for line in lines)


def test_doctor_on_missing_buckets_fails_without_crashing(moto_endpoint, tmp_path):
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake").with_(bucket_prefix=f"n-{uuid.uuid4().hex[:10]}")
    result = run(settings, "doctor")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = bootstrap.doctor(settings)
    assert [(c.control, c.status) for c in report.checks] == [("bucket", "FAIL")] * 4


def test_sse_kms_settings(moto_endpoint, tmp_path):
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")
    key = kms.create_key(Description="lake test key")["KeyMetadata"]["Arn"]
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake", s3_sse="aws:kms", s3_kms_key_id=key)
    bootstrap.init_lake(settings)
    put_project_lifecycle(settings)
    s3 = client(settings)
    for role in ROLES:
        rule = s3.get_bucket_encryption(Bucket=settings.bucket(role))["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
        assert rule["BucketKeyEnabled"] is True
        statements = json.loads(s3.get_bucket_policy(Bucket=settings.bucket(role))["Policy"])["Statement"]
        assert statements[-1]["Condition"] == {
                "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    assert bootstrap.doctor(settings).passed

    # a bucket left at SSE-S3 while the settings say SSE-KMS fails its encryption control
    s3.put_bucket_encryption(Bucket=settings.bucket("curated"), ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    report = bootstrap.doctor(settings)
    assert [(c.role, c.control) for c in report.failures] == [("curated", "default encryption")]
    assert "AES256" in report.failures[0].detail and "aws:kms" in report.failures[0].detail
    result = run(settings, "doctor")
    assert result.exit_code == 1
    assert len(fail_lines(result.output)) == 1 and "lake init" in fail_lines(result.output)[0]

    # settings that say AES256 on these KMS buckets: encryption and the PUT deny both disagree
    aes = bootstrap.doctor(settings.with_(s3_sse="AES256", s3_kms_key_id=None))
    assert {c.control for c in aes.failures} == {"default encryption", "wrong-encryption deny"}


# -------------------------------------------------------------------------------- IAM policy


def _iam_policy(settings: LakeSettings, *args: str) -> dict:
    result = run(settings, "iam-policy", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _resources(policy: dict, service: str) -> list[str]:
    found = []
    for s in policy["Statement"]:
        if any(a.startswith(service + ":") for a in s["Action"]):
            found.extend(s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    return found


def test_iam_policy_names_exactly_the_lake_resources(s3_settings, moto_endpoint):
    settings = s3_settings
    policy = _iam_policy(settings, "--account-id", "210987654321")
    buckets = {f"arn:aws:s3:::{settings.bucket(r)}" for r in ROLES}
    s3_resources = _resources(policy, "s3")
    assert set(s3_resources) == buckets | {f"{b}/*" for b in buckets}
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert "s3:ListBucket" in by_sid["LakeBuckets"]["Action"] and set(by_sid["LakeBuckets"]["Resource"]) == buckets
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:RestoreObject", "s3:PutObjectTagging",
            "s3:AbortMultipartUpload"} <= set(by_sid["LakeObjects"]["Action"])
    assert all(r.endswith("/*") for r in by_sid["LakeObjects"]["Resource"])
    glue = "arn:aws:glue:us-east-1:210987654321"
    db = settings.glue_database
    assert set(_resources(policy, "glue")) == {f"{glue}:catalog", f"{glue}:database/{db}", f"{glue}:table/{db}/events"}
    assert {"glue:BatchCreatePartition", "glue:BatchUpdatePartition", "glue:GetPartitions", "glue:UpdateTable"} \
        <= set(by_sid["LakeCatalog"]["Action"])
    assert "LakeBootstrap" not in by_sid and "LakeKmsKey" not in by_sid
    text = json.dumps(policy)
    assert '"*"' not in text and "s3:CreateBucket" not in text

    with_init = _iam_policy(settings, "--account-id", "210987654321", "--with-init")
    boot = next(s for s in with_init["Statement"] if s["Sid"] == "LakeBootstrap")
    assert {"s3:CreateBucket", "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock",
            "s3:PutEncryptionConfiguration", "s3:PutBucketVersioning", "s3:PutBucketOwnershipControls",
            "s3:GetBucketPolicy"} <= set(boot["Action"])
    assert set(boot["Resource"]) == buckets

    # moto's IAM checks the policy grammar as AWS does
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    for n, doc in enumerate((policy, with_init)):
        iam.create_policy(PolicyName=f"lake-{settings.bucket_prefix}-{n}", PolicyDocument=json.dumps(doc))


def test_iam_policy_account_from_sts_and_kms_key(moto_endpoint, tmp_path):
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{uuid.uuid4()}"
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake", s3_sse="aws:kms", s3_kms_key_id=key)
    policy = _iam_policy(settings)  # the account comes from STS GetCallerIdentity
    assert f"arn:aws:glue:us-east-1:{ACCOUNT}:catalog" in _resources(policy, "glue")
    kms = next(s for s in policy["Statement"] if s["Sid"] == "LakeKmsKey")
    assert kms["Resource"] == key
    assert set(kms["Action"]) == {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"}
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    iam.create_policy(PolicyName=f"lake-{settings.bucket_prefix}-kms", PolicyDocument=json.dumps(policy))

    # a bare key id becomes the key's ARN in the region and account
    by_id = bootstrap.iam_policy(settings.with_(s3_kms_key_id="1234abcd-12ab-34cd-56ef-1234567890ab"),
                                 table="events", account_id=ACCOUNT)
    assert next(s for s in by_id["Statement"] if s["Sid"] == "LakeKmsKey")["Resource"] == \
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize("bad", ["12345", "12345678901a", "1234567890123", ""])
def test_iam_policy_refuses_a_bad_account_id(s3_settings, bad):
    result = run(s3_settings, "iam-policy", "--account-id", bad)
    assert result.exit_code == 2
    assert "error: --account-id must be the 12 digits" in result.output
    assert "Traceback" not in result.output


def test_iam_policy_on_the_embedded_backend_is_a_clear_error(tmp_path):
    settings = LakeSettings(root=str(tmp_path / "lake"))
    result = run(settings, "iam-policy", "--account-id", ACCOUNT)
    assert result.exit_code == 2
    assert "error:" in result.output and "LAKE_BACKEND=s3" in result.output


# ------------------------------------------------------------------------------ local backend


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_init_and_doctor(tmp_path):
    settings = LakeSettings(root=str(tmp_path / "lake"))
    root = settings.root_path
    done = run(settings, "init")
    assert done.exit_code == 0, done.output
    assert "S3 only" in done.output
    for path in [root, *(root / r for r in ROLES)]:
        assert path.is_dir() and _mode(path) == 0o700, path

    ok = run(settings, "doctor")
    assert ok.exit_code == 0, ok.output
    assert "n/a on the embedded backend" in ok.output
    report = bootstrap.doctor(settings)
    assert {c.status for c in report.checks if c.control == "folder"} == {"pass"}
    assert {c.control for c in report.checks if c.status == "n/a"} == S3_CONTROLS - {"bucket"}

    (root / "raw").chmod(0o777)
    bad = run(settings, "doctor")
    assert bad.exit_code == 1, bad.output
    [line] = fail_lines(bad.output)
    assert str(root / "raw") in line and "0777" in line and "lake init" in line

    again = bootstrap.init_lake(settings)
    assert [(c.role, c.outcome) for c in again.changes if c.outcome != "unchanged"] == [("raw", "updated")]
    assert _mode(root / "raw") == 0o700
    assert not bootstrap.init_lake(settings).changed
    assert run(settings, "doctor").exit_code == 0


def test_local_doctor_before_init(tmp_path):
    settings = LakeSettings(root=str(tmp_path / "nowhere"))
    result = run(settings, "doctor")
    assert result.exit_code == 1
    assert len(fail_lines(result.output)) == 1 + len(ROLES)
    assert not settings.root_path.exists()  # doctor only reads


def test_doctor_wants_every_project_lifecycle_rule(s3_settings):
    settings = s3_settings
    bootstrap.init_lake(settings)
    s3 = client(settings)
    raw = settings.bucket("raw")
    # one housekeeping rule of the project and a foreign rule: not the table's rules
    s3.put_bucket_lifecycle_configuration(Bucket=raw, LifecycleConfiguration={"Rules": [
        {"ID": f"{RULE_ID_PREFIX}bucket:abort-incomplete-multipart", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3}}]})
    check = next(c for c in bootstrap.doctor(settings).checks if c.target == raw and c.control == "lifecycle")
    assert check.status == "FAIL" and check.detail.startswith("missing project rules: ")
    assert check.fix == bootstrap.FIX_LIFECYCLE

    put_project_lifecycle(settings)  # keeps the foreign rule, adds the table's
    check = next(c for c in bootstrap.doctor(settings).checks if c.target == raw and c.control == "lifecycle")
    assert check.status == "pass", check
    ids = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=raw)["Rules"]}
    assert "someone-elses" in ids
