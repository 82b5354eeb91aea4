"""Write, audit and publish one day in a process of its own: the victim of the kill test.

Usage: ``python compact_publish.py '<LakeSettings as JSON>' YYYY-MM-DD``. Prints the published
version on success. The test kills this process with SIGKILL at chosen moments and checks that
readers never see anything but a complete, audited version.
"""

from __future__ import annotations

import sys

import orjson

from pipelines.config import LakeSettings
from pipelines.lake import Lake
from pipelines.wap import process_day


def main(argv: list[str]) -> int:
    settings_json, dt = argv
    settings = LakeSettings(**orjson.loads(settings_json))
    result = process_day(Lake.open(settings), dt)
    print(result.version, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
