"""A real Redis Cluster on localhost for a test: three masters, three replicas, fast failover.

Started with ``redis-server --cluster-enabled yes`` and joined by ``redis-cli --cluster create``,
as an operator would; every server is stopped by its PID and reaped (``stop``), whatever happens.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from processes import free_port, stop_process

MASTERS = 3
# A master unreachable this long is failing; its replica is promoted about a second after that.
NODE_TIMEOUT_MS = 1000


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class LocalCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: dict[int, subprocess.Popen] = {}
        self._commands: dict[int, list[str]] = {}

    @property
    def url(self) -> str:
        """A seed node (any node will do: the client reads the whole topology from it)."""
        return f"redis://127.0.0.1:{min(self.nodes)}/0"

    def start(self) -> LocalCluster:
        try:
            for _ in range(2 * MASTERS):
                self._start_node(free_port())
            for port in self.nodes:
                self._wait(lambda port=port: self.client(port).ping(), f"node {port} to answer")
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.nodes),
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self._wait(self._healthy, "the cluster to be ok with every replica in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> None:
        directory = self.workdir / str(port)
        directory.mkdir(parents=True)
        self._commands[port] = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             # The bus port defaults to port + 10000, which may be taken or past 65535.
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()),
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # A replica may always take over, however long it was cut off; the other
             # masters' slots keep serving while one is failing over.
             "--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "no",
             # A replica's first sync starts at once, not after the default 5 s wait for more replicas.
             "--repl-diskless-sync-delay", "0",
             # Stop at once on SIGTERM, without waiting for replicas to catch up: the data is a test's.
             "--shutdown-on-sigterm", "now",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        self._run(port)

    def _run(self, port: int) -> None:
        self.nodes[port] = subprocess.Popen(self._commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    def live_ports(self) -> list[int]:
        return [port for port, proc in self.nodes.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key`` now, as a live node sees it."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in self.client(self.live_ports()[0]).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(f"no master holds slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL the node: no shutdown, no last write to anyone."""
        self.nodes[port].kill()
        self.nodes[port].wait(timeout=10)

    def replica_of(self, master_port: int) -> int:
        for port in self.live_ports():
            info = self.client(port).info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master_port:
                return port
        raise LookupError(f"no replica of {master_port}")

    def pause(self, port: int) -> None:
        """SIGSTOP the node: connected, but it acknowledges nothing (a replica that stopped keeping up)."""
        self.nodes[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.nodes[port].send_signal(signal.SIGCONT)

    def restart(self, port: int) -> None:
        """Start a killed node again, as an orchestrator would: it rejoins as a replica of its successor."""
        self._run(port)
        self._wait(self._healthy, "the restarted node to rejoin and every replica to be in sync")

    def wait_failed_over(self, key: str, dead_port: int, timeout_s: float = 30) -> int:
        """Wait until a replica took over ``key``'s slot from ``dead_port``; return its port."""
        def promoted() -> bool:
            return self.master_of(key) != dead_port and self._cluster_ok()

        self._wait(promoted, "a replica to take over", timeout_s)
        return self.master_of(key)

    def _healthy(self) -> bool:
        if not self._cluster_ok():
            return False
        for port in self.live_ports():
            info = self.client(port).info("replication")
            if info["role"] == "master" and info["connected_slaves"] < 1:
                return False
            if info["role"] == "slave" and info["master_link_status"] != "up":
                return False
        return True

    def _cluster_ok(self) -> bool:
        return all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO") for p in self.live_ports())

    @staticmethod
    def _wait(predicate, what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if predicate():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused node would not act on SIGTERM
            stop_process(proc)
