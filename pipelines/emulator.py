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
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


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
               "LAKE_S3_ENDPOINT_URL": url, "LAKE_GLUE_ENDPOINT_URL": url, "LAKE_AWS_REGION": "us-east-1"}
        # a profile would override the dummy keys
        with patched_environ(env, remove=("AWS_PROFILE", "LAKE_AWS_PROFILE")):
            yield env
