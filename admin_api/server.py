"""Entrypoint of the admin API process (``oros admin``)."""

from __future__ import annotations

import logging

from aiohttp import web

from oros.jobs import OwnerJobs
from oros.settings import Settings

from .app import create_app

log = logging.getLogger(__name__)


def run_admin(settings: Settings, port: int = 8081, host: str = "0.0.0.0", jobs: OwnerJobs | None = None) -> None:
    """Serve the admin API until SIGINT/SIGTERM (aiohttp's runner handles both)."""
    log.info("admin api starting", extra={"port": port})
    web.run_app(create_app(settings, jobs), host=host, port=port, access_log=None, print=None)
