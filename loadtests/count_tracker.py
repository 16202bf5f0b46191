"""What a click costs the tracker in CPU instructions, next to the bare handler: numbers the machine's load cannot move.

Wall-clock benchmarks on a shared machine swing by 2x from one hour to the
next; the instructions a process executes for a fixed replay of requests do
not. This runs the bare handler (loadtests/bare_app.py) and then
``oros tracker`` (one worker) under valgrind's callgrind with instrumentation
off, warms each up with every link once (uninstrumented), then turns
instrumentation on, replays the same ``--requests`` clicks of click_mix.py
over ``--connections`` keep-alive connections, and dumps the counts. It prints
instructions per request (Ir) for both and their ratio; the tracker's Redis is
real (a redis-server of its own), and every click must be in its stream.

    .venv/bin/python loadtests/count_tracker.py [--requests 4000] [--mix clicks|bot] [--fsync everysec]
        [--keep DIR] [--tree PATH]

``--tree PATH`` runs the tracker of another checkout (an older commit, to
compare: ``mkdir /tmp/old && git archive <commit> | tar -x -C /tmp/old``) with this harness.

``--keep DIR`` keeps the callgrind files (``callgrind_annotate DIR/tracker.out``
for the C-level profile). User-space instructions only: the kernel's share
(loopback, epoll) is about the same for both sides (docs/tracker.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click_mix
import redis
from bench_tracker import (
    BOT_CODE,
    PREFIX,
    PYTHON,
    ROOT,
    add_fsync_option,
    free_port,
    replay,
    seed_links,
    start_redis,
    stop,
    wait_http,
)

VALGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-systime=no"]


def measure(name: str, command: list[str], env: dict, health: str, args, reqs, warmup, outdir: Path) -> int:
    """Instructions the process under ``command`` executed for the replay of ``reqs``."""
    out = outdir / f"{name}.out"
    port = free_port()
    proc = subprocess.Popen([*VALGRIND, f"--callgrind-out-file={out}", *command, "--port", str(port)], env=env,
                            cwd=args.tree)
    try:
        wait_http(port, health, timeout_s=300)
        asyncio.run(replay(port, warmup, args.connections))
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        started = time.monotonic()
        answered = asyncio.run(replay(port, reqs, args.connections))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        print(f"{name}: {answered}/{len(reqs)} redirects in {time.monotonic() - started:.1f} s under callgrind")
    finally:
        stop(proc)
    dumps = sorted(outdir.glob(f"{name}.out.*"), key=lambda p: p.stat().st_mtime)
    return int(re.search(r"^totals: (\d+)", dumps[-1].read_text(errors="replace"), re.M).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="clicks replayed per side (default 4000)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--mix", choices=("clicks", "bot"), default="clicks")
    parser.add_argument("--links", type=int, default=10_000)
    add_fsync_option(parser)
    parser.add_argument("--only", choices=("bare", "tracker"), help="measure one side only")
    parser.add_argument("--keep", type=Path, help="keep the callgrind output files in this directory")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose tracker runs (default: this one)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (apt-get install -y valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="oros-count-"))
    outdir = args.keep or workdir
    outdir.mkdir(parents=True, exist_ok=True)
    bot = args.mix == "bot"
    reqs = click_mix.bot(BOT_CODE) * args.requests if bot else click_mix.requests(args.links, args.requests)
    warmup = click_mix.bot(BOT_CODE) * 200 if bot else click_mix.every_code(args.links)
    redis_proc, redis_port = start_redis(workdir, "0-1", fsync=args.fsync)
    client = redis.Redis(port=redis_port)
    seed_links(client, [BOT_CODE] if bot else click_mix.codes(args.links))
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        "OROS_DATA_DIR": str(workdir / "oros"),
        "OROS_REDIS_PREFIX": PREFIX,
        # Links stay in the process cache for the whole run: the benchmark measures the clicks of a
        # warm tracker, not the background refresh each cached code gets every 30 s (one Redis GET).
        "OROS_LINK_CACHE_TTL_S": "3600",
    }
    counts = {}
    try:
        if args.only != "tracker":
            counts["bare"] = measure("bare", [PYTHON, str(ROOT / "loadtests" / "bare_app.py")], env, "/warm", args,
                                     reqs, warmup, outdir)
        if args.only != "bare":
            before = client.xlen(f"{PREFIX}events")
            counts["tracker"] = measure("tracker", [PYTHON, "-m", "oros_cli", "--log-level", "ERROR", "tracker"], env,
                                        "/healthz", args, reqs, warmup, outdir)
            gained = client.xlen(f"{PREFIX}events") - before
            print(f"stream gained {gained} events for {len(warmup) + len(reqs)} clicks"
                  f" ({'none missing' if gained >= len(warmup) + len(reqs) else 'MISSING'})")
    finally:
        stop(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)
    for name, total in counts.items():
        print(f"{name:8s} {total / len(reqs):10.0f} Ir/request")
    if len(counts) == 2:
        print(f"tracker/bare instructions = {counts['tracker'] / counts['bare']:.2f}"
              f" (throughput ratio if CPU-bound: {counts['bare'] / counts['tracker']:.2f})")


if __name__ == "__main__":
    main()
