"""A ClickHouse server for one machine: the chDB engine in its own process, behind ClickHouse's HTTP interface.

chDB opens a data directory from one process only, and this machine has no
ClickHouse server (the chdb wheel's engine has the HTTP listener compiled in
but does not let Python start it; Debian's ``clickhouse-server`` is from 2018
and lacks the features our tables use). So the chaos run gives the real
engine a process of its own, as a ClickHouse server would be, and every
``oros`` process reaches it with ``CLICKHOUSE_URL=http://…`` through
clickhouse-connect's HTTP client: the production code path. Making ClickHouse
unavailable is then what it is in production: this process dies, its port
refuses connections, and it comes back on the same data.

    python loadtests/chdb_server.py --path DIR --port N

Served is what clickhouse-connect sends: ``GET /ping``; a query in the body
or the ``query`` parameter (a ``query`` parameter followed by a body is one
statement, as ClickHouse reads it); ``INSERT … FORMAT F`` whose data follows
(the body may be lz4, zstd, gzip or deflate, per ``Content-Encoding``);
``database``; ``param_*`` for server-side bound parameters; every other
parameter that is not transport (sessions, compression, progress headers) is
a setting for that statement. Statements run one at a time (one engine). A
failed statement answers 500 with ``X-ClickHouse-Exception-Code`` and the
engine's message, as ClickHouse does; responses are never compressed.
"""

from __future__ import annotations

import argparse
import gzip
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import chdb
import lz4.frame
from clickhouse_connect.driver.compression import _zstd_decompress

# Parameters of the HTTP interface that are not settings of the statement.
TRANSPORT = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "user", "password", "quota_key", "compress", "decompress", "client_protocol_version", "wait_end_of_query",
    "buffer_size", "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
    "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
})
DECODERS = {"lz4": lz4.frame.decompress, "zstd": _zstd_decompress, "gzip": gzip.decompress,
            "deflate": zlib.decompress}
_INSERT = re.compile(rb"\A\s*(INSERT\s+INTO\s.+?\sFORMAT\s+(\w+))[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"Code: (\d+)")
_SETTING_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


class Engine:
    """The one chDB connection; ``run`` executes a statement with its database, settings and parameters."""

    def __init__(self, path: Path) -> None:
        self.conn = chdb.connect(str(path))
        self.lock = threading.Lock()
        self.spill = path.with_name(path.name + "-insert.data")  # beside the data, not in it

    def run(self, statement: bytes, data: bytes | None, fmt: str | None, database: str,
            settings: dict[str, str], params: dict[str, str]) -> bytes:
        with self.lock:
            self.conn.query(f"USE {_identifier(database)}")
            applied = []
            try:
                for name, value in settings.items():
                    self.conn.query(f"SET {_setting(name)} = {_literal(value)}")
                    applied.append(name)
                if data is None:
                    return self.conn.query(statement.decode(), "TabSeparated", params=params).bytes()
                # chDB reads insert data from a file (as clickhouse-connect's own chDB backend does).
                self.spill.write_bytes(data)
                head = statement.decode()
                target = head[: head.upper().rindex("FORMAT")]
                return self.conn.query(f"{target} FROM INFILE {_literal(str(self.spill))} FORMAT {fmt}", "TabSeparated",
                                       params=params).bytes()
            finally:
                for name in applied:  # the engine is shared: the next statement gets the defaults
                    self.conn.query(f"SET {name} = DEFAULT")


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _setting(name: str) -> str:
    if not _SETTING_NAME.match(name):
        raise ValueError(f"not a setting name: {name!r}")
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's pool expects
    engine: Engine

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/ping":
            self._answer(200, b"Ok.\n")
            return
        self._execute()

    def do_POST(self) -> None:
        self._execute()

    def _execute(self) -> None:
        params = dict(parse_qsl(urlparse(self.path).query, keep_blank_values=True))
        body = self._body()
        text = params.get("query", "").encode()
        text = text + b"\n" + body if text and body else text or body
        insert = _INSERT.match(text)
        statement, data, fmt = text, None, None
        if insert and text[insert.end():]:
            statement, data, fmt = insert.group(1), text[insert.end():], insert.group(2).decode()
        try:
            result = self.engine.run(
                statement, data, fmt, params.get("database") or "default",
                {k: v for k, v in params.items() if k not in TRANSPORT and not k.startswith("param_")},
                {k[6:]: v for k, v in params.items() if k.startswith("param_")},
            )
        except Exception as exc:  # noqa: BLE001 - the engine's error is the answer, as ClickHouse gives it
            # The engine's message may quote an entry's bytes that are not UTF-8: send them as they are.
            message = exc.object if isinstance(exc, UnicodeDecodeError) else str(exc).encode()
            code = _CODE.search(message.decode(errors="replace"))
            self._answer(500, message + b"\n", {"X-ClickHouse-Exception-Code": code.group(1) if code else "1002"})
            return
        self._answer(200, result)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding")
        return DECODERS[encoding](body) if encoding in DECODERS else body

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # one line per statement would drown the run's output
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", type=Path, required=True, help="the chDB data directory (owned by this process)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    args.path.mkdir(parents=True, exist_ok=True)
    Handler.engine = Engine(args.path)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"chdb server on 127.0.0.1:{args.port} path={args.path}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
