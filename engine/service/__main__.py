"""`python -m engine.service`: the retail API on RESLAB_HOST:RESLAB_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn

from engine.policy import PolicyError
from engine.service.app import create_app
from engine.service.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"engine.service: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":
        # The LLM client's HTTP layer logs every request at INFO; at the load tests' rates
        # formatting and writing that line costs more CPU than the request it describes.
        # Its warnings and errors still come through.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"engine.service: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # One line per request would dominate the CPU at the load tests' rates; the
        # request metrics carry the same information.
        access_log=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
