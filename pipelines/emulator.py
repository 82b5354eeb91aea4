"""An S3 + Glue emulator (moto's server) on 127.0.0.1, to run the AWS path without an account.

Used by ``lake demo --s3``. It lives in this process and in memory: everything in it is gone
when the process ends. Credentials given to it are dummies, so real ones never leave the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.errors import ConfigError

#: the emulator accepts any credentials; these make sure real ones are never sent to it
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "emulator", "AWS_SECRET_ACCESS_KEY": "emulator",
                        "AWS_SESSION_TOKEN": "emulator"}


@contextmanager
def moto_server(port: int = 0) -> Iterator[str]:
    """Run moto's server on 127.0.0.1 (all its services on one port); yields its URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("the emulator needs moto: run `uv sync` in a checkout, or "
                          "`pip install 'clickstream-lake[emulator]'`") from None
    _faithful_lifecycle_filters()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


#: the size predicates of a lifecycle filter, which S3 stores and returns and moto 5.2 drops
_SIZE_KEYS = ("ObjectSizeGreaterThan", "ObjectSizeLessThan")
#: set on moto's ``FakeBucket.set_lifecycle`` once the fix below is in place
_FIXED = "_lake_keeps_lifecycle_sizes"


def _faithful_lifecycle_filters() -> None:
    """Make the emulator keep lifecycle size predicates, as S3 does (applied once per process).

    S3 stores ``ObjectSizeGreaterThan`` / ``ObjectSizeLessThan`` of a rule's ``Filter`` (alone or
    inside ``And``) and returns them on GetBucketLifecycleConfiguration. moto 5.2 accepts them
    on PUT, keeps only prefix and tags in its model (``LifecycleFilter``/``LifecycleAndFilter``)
    and leaves them out of the response, so a rule read back from the emulator is not the rule
    AWS would hold. The lake's rules rely on them (nothing under 128 KiB is ever moved to a
    class that bills it as 128 KiB), and ``lake tier apply`` compares what it reads with what it
    wants: without this, every apply would see a difference that AWS would not show.

    This makes the emulator more like AWS, not our code more successful: it stores what the
    request said and returns it, and refuses what S3 refuses (a size predicate next to another
    predicate outside ``And``). Nothing else in moto changes. The server runs in this process
    (``ThreadedMotoServer``), so patching moto's classes here changes what it serves.
    """
    import moto
    from moto.s3 import exceptions, models, responses

    bucket, response = getattr(models, "FakeBucket", None), getattr(responses, "S3Response", None)
    needed = {"FakeBucket.set_lifecycle": getattr(bucket, "set_lifecycle", None),
              "S3Response.get_bucket_lifecycle": getattr(response, "get_bucket_lifecycle", None),
              "S3Response.serialized": getattr(response, "serialized", None),
              "LifecycleFilter": getattr(models, "LifecycleFilter", None),
              "LifecycleAndFilter": getattr(models, "LifecycleAndFilter", None),
              "MalformedXML": getattr(exceptions, "MalformedXML", None)}
    missing = sorted(name for name, found in needed.items() if found is None)
    if missing:
        raise ConfigError(f"moto {moto.__version__} no longer has {', '.join(missing)}: update "
                          "_faithful_lifecycle_filters in pipelines/emulator.py for it (moto is pinned in uv.lock)")
    if getattr(bucket.set_lifecycle, _FIXED, False):
        return
    set_lifecycle, get_lifecycle = bucket.set_lifecycle, response.get_bucket_lifecycle

    def sizes(predicates: dict | None) -> dict[str, int]:
        try:
            return {k: int(predicates[k]) for k in _SIZE_KEYS if (predicates or {}).get(k) is not None}
        except (TypeError, ValueError):
            raise exceptions.MalformedXML() from None

    def set_lifecycle_keeping_sizes(self, rules):
        # read the request before moto's parser rewrites parts of it
        wanted = []
        for rule in rules:
            f = rule.get("Filter") or {}
            top = sizes(f)
            # S3: outside And, a Filter holds exactly one predicate (moto counts only the others)
            if top and sum(k in f for k in ("Prefix", "Tag", "And", *_SIZE_KEYS)) > 1:
                raise exceptions.MalformedXML()
            wanted.append((top, sizes(f.get("And"))))
        set_lifecycle(self, rules)
        for stored, (top, inner) in zip(self.rules, wanted, strict=True):
            if stored.filter is not None:
                stored.filter.lake_sizes = top
                if stored.filter.and_filter is not None:
                    stored.filter.and_filter.lake_sizes = inner

    def get_lifecycle_with_sizes(self):
        serialized = self.serialized

        def with_sizes(action_result):
            result = action_result.result
            if isinstance(result, dict):  # not an error: the rules, in moto's stored order
                stored = self.backend.get_bucket_lifecycle(self.bucket_name)
                for out, rule in zip(result["Rules"], stored, strict=True):
                    if rule.filter is None or "Filter" not in out:
                        continue
                    out["Filter"].update(getattr(rule.filter, "lake_sizes", {}))
                    if rule.filter.and_filter is not None and "And" in out["Filter"]:
                        out["Filter"]["And"].update(getattr(rule.filter.and_filter, "lake_sizes", {}))
            return serialized(action_result)

        # moto builds one S3Response per request, so this shadows nothing another request uses
        self.serialized = with_sizes
        try:
            return get_lifecycle(self)
        finally:
            del self.serialized

    setattr(set_lifecycle_keeping_sizes, _FIXED, True)
    bucket.set_lifecycle = set_lifecycle_keeping_sizes
    response.get_bucket_lifecycle = get_lifecycle_with_sizes


@contextmanager
def patched_environ(values: dict[str, str], remove: tuple[str, ...] = ()) -> Iterator[None]:
    """Set (and unset) environment variables for the duration; the previous values come back."""
    saved = {k: os.environ.get(k) for k in [*values, *remove]}
    os.environ.update(values)
    for k in remove:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def emulator(port: int = 0) -> Iterator[dict[str, str]]:
    """Start the emulator; yields the environment (``LAKE_*``, ``AWS_*``) that points at it.

    The variables are also set in ``os.environ`` for the duration, so runs and worker
    processes started meanwhile use the emulator; the previous values are restored after.
    """
    with moto_server(port) as url:
        env = {**EMULATOR_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "LAKE_BACKEND": "s3",
               "LAKE_S3_ENDPOINT_URL": url, "LAKE_GLUE_ENDPOINT_URL": url,
               "LAKE_SQS_ENDPOINT_URL": url, "LAKE_AWS_REGION": "us-east-1"}
        # a profile would override the dummy keys
        with patched_environ(env, remove=("AWS_PROFILE", "LAKE_AWS_PROFILE")):
            yield env
