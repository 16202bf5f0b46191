"""The ``oros`` command line. Each subcommand parses its options and delegates to one ``run_*``."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime

from oros.logs import setup_logging
from oros.settings import IP_HASH_KEY, JWT_SECRET, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET, Settings, SettingsError

log = logging.getLogger("oros")

# The secrets each process uses (docs/security.md, "Secrets"). The admin API
# issues and verifies tokens and verifies Stripe's webhooks; without a Stripe
# key it still runs, and card funding answers 503. Payouts move money through
# Stripe. Ingest keys its IP hash with OROS_IP_HASH_KEY, required while it
# truncates IPs (``Settings.ip_secrets``), and so does the admin API (where a
# supporter made a share link). The tracker, settle, release-holds,
# reconcile, webhooks, migrate and create-admin hold no secret (webhook secrets are
# per endpoint, in Postgres).
ADMIN_SECRETS = (JWT_SECRET, STRIPE_WEBHOOK_SECRET)
PAYOUT_SECRETS = (STRIPE_API_KEY,)


def _settings(*secrets: str, optional: tuple[str, ...] = (), hashes_ips: bool = False, redis: bool = True):
    """Settings with concrete server URLs, and the embedded servers this process started.

    The secrets are checked before any server starts, so a refused process
    leaves nothing running. ``hashes_ips``: the process hashes IPs (ingest; the admin API's share links).
    ``redis``: the process uses Redis; the webhook deliverer does not, so it needs no REDIS_URL (and compose
    gives it none: no Redis password where it is not used).
    """
    from oros import embedded

    settings = embedded.attach_to_dev(Settings.from_env())
    if hashes_ips:
        secrets, optional = (*secrets, *settings.ip_secrets), (*optional, IP_HASH_KEY)
    settings.check_secrets(*secrets, optional=optional)
    return embedded.resolve(settings, prefer_local=False, redis=redis)


def cmd_dev(args) -> int:
    from oros import embedded
    from oros_cli.dev import run_dev

    env_settings = Settings.from_env()
    env_settings.check_secrets(optional=(IP_HASH_KEY,))
    if env_settings.webhooks_allow_private is None:  # local receivers, unless the environment says otherwise
        env_settings = replace(env_settings, webhooks_allow_private=True)
    settings, servers, fund_by_card = embedded.resolve_for_dev(
        env_settings, needs=(*ADMIN_SECRETS, *PAYOUT_SECRETS, *env_settings.ip_secrets),
        webhook_url=f"http://127.0.0.1:{args.admin_port}/v1/webhooks/stripe",
    )
    try:
        run_dev(settings, demo=args.demo, fund_by_card=fund_by_card, tracker_port=args.tracker_port,
                admin_port=args.admin_port)
    finally:
        servers.stop()
    return 0


def cmd_migrate(args) -> int:
    from oros.migrate import run_migrate

    settings, servers = _settings()
    try:
        applied = run_migrate(settings)
    finally:
        servers.stop()
    print(f"postgres: {len(applied['postgres'])} applied, clickhouse: {len(applied['clickhouse'])} applied")
    return 0


def cmd_create_admin(args) -> int:
    from oros.accounts import create_admin
    from oros.migrate import migrate_postgres

    settings, servers = _settings()
    try:
        migrate_postgres(settings)
        user_id = create_admin(settings, args.email, args.password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        servers.stop()
    print(f"admin {args.email} id={user_id}")
    return 0


def cmd_tracker(args) -> int:
    from tracker.server import run_tracker

    settings, servers = _settings()
    try:
        run_tracker(settings, workers=args.workers, port=args.port)
    finally:
        servers.stop()
    return 0


def cmd_ingest(args) -> int:
    from ingest import cli

    if args.restamp and args.replay_dead_letters is None:
        print("error: --restamp goes with --replay-dead-letters", file=sys.stderr)
        return 2
    settings, servers = _settings(hashes_ips=not (args.dead_letters or args.replay_dead_letters is not None
                                                 or args.drop_dead_letters))
    try:
        if args.dead_letters:
            return cli.run_list_dead_letters(settings, limit=args.limit)
        if args.replay_dead_letters is not None:
            return cli.run_replay_dead_letters(settings, args.replay_dead_letters, restamp=args.restamp)
        if args.drop_dead_letters:
            return cli.run_drop_dead_letters(settings, args.drop_dead_letters)
        cli.run_ingest(settings, once=args.once, metrics_port=args.metrics_port, consumer=args.consumer)
    finally:
        servers.stop()
    return 0


def cmd_settler(args) -> int:
    from settler.scheduler import run_settler

    settings, servers = _settings(*PAYOUT_SECRETS)
    try:
        run_settler(settings, metrics_port=args.metrics_port)
    finally:
        servers.stop()
    return 0


def _utc_time(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {raw!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def cmd_settle(args) -> int:
    from settler.run import run_settle_command

    if args.rescan != (args.since is not None):
        print("error: --rescan and --since go together", file=sys.stderr)
        return 2

    settings, servers = _settings()
    try:
        return run_settle_command(settings, dry_run=args.dry_run, rescan_from=args.since)
    finally:
        servers.stop()


def cmd_release_holds(args) -> int:
    from settler.holds import run_release_command

    settings, servers = _settings()
    try:
        return run_release_command(settings)
    finally:
        servers.stop()


def cmd_payouts(args) -> int:
    from settler.payouts import run_payouts_command

    settings, servers = _settings(*PAYOUT_SECRETS)
    try:
        return run_payouts_command(settings)
    finally:
        servers.stop()


def cmd_reconcile(args) -> int:
    from settler.reconcile import run_reconcile_command

    settings, servers = _settings()
    try:
        return run_reconcile_command(settings)
    finally:
        servers.stop()


def cmd_webhooks(args) -> int:
    from webhooks.cli import run_webhooks

    settings, servers = _settings(redis=False)
    try:
        run_webhooks(settings, once=args.once, metrics_port=args.metrics_port)
    finally:
        servers.stop()
    return 0


def cmd_admin(args) -> int:
    from admin_api.server import run_admin
    from settler.jobs import OWNER_JOBS

    # It hashes a share link's maker's address with ingest's key (docs/supporters.md, "Share links").
    settings, servers = _settings(*ADMIN_SECRETS, optional=PAYOUT_SECRETS, hashes_ips=True)
    try:
        run_admin(settings, port=args.port, jobs=OWNER_JOBS)
    finally:
        servers.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oros", description="OROS click tracking and creator payouts")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_setup_commands, _add_tracker_command, _add_ingest_command, _add_settler_commands,
                _add_webhooks_command, _add_admin_command):
        add(sub)
    return parser


def _add_setup_commands(sub) -> None:
    """The embedded stack and the database: dev, migrate, create-admin."""
    p = sub.add_parser("dev", help="everything in one process on the embedded stack")
    p.add_argument("--demo", action="store_true", help="create demo accounts, a funded campaign and a link")
    p.add_argument("--tracker-port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=8081)
    p.set_defaults(func=cmd_dev)

    sub.add_parser("migrate", help="apply Postgres and ClickHouse migrations").set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-admin", help="create or promote an admin")
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.set_defaults(func=cmd_create_admin)


def _add_tracker_command(sub) -> None:
    p = sub.add_parser("tracker", help="the redirect and conversion edge service")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_tracker)


def _add_ingest_command(sub) -> None:
    p = sub.add_parser("ingest", help="drain the event stream into ClickHouse; list, replay or drop dead letters")
    p.add_argument("--once", action="store_true", help="drain what is there now, then exit")
    p.add_argument("--metrics-port", type=int, default=9101, help="serve /metrics and /healthz here (0: not at all)")
    p.add_argument("--consumer", metavar="NAME",
                   help="consumer name in the group (default host-pid); a restart under the same name resumes its "
                        "own pending entries at once instead of claiming them after a minute")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--dead-letters", action="store_true", help="list the dead letters and exit")
    action.add_argument("--replay-dead-letters", nargs="*", metavar="ID",
                        help="re-queue these dead letters (all without ids) if they would insert now")
    action.add_argument("--drop-dead-letters", nargs="+", metavar="ID", help="delete these dead letters")
    p.add_argument("--restamp", action="store_true",
                   help="with --replay-dead-letters: stamp each event at the time Redis accepted it (a tracker's "
                        "clock was wrong); the old time stays in its metadata")
    p.add_argument("--limit", type=int, default=100, help="with --dead-letters: how many to list")
    p.set_defaults(func=cmd_ingest)


def _add_settler_commands(sub) -> None:
    """The settler's scheduler and its jobs, each once: settle, release-holds, payouts, reconcile."""
    from settler.metrics import DEFAULT_PORT as SETTLER_METRICS_PORT

    p = sub.add_parser("settler", help="scheduled settle, release-holds and reconcile jobs")
    p.add_argument("--metrics-port", type=int, default=SETTLER_METRICS_PORT,
                   help="serve /metrics and /healthz (0: off)")
    p.set_defaults(func=cmd_settler)

    p = sub.add_parser("settle", help="verify and pay the events since the watermark, and any still undecided")
    p.add_argument("--once", action="store_true", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--rescan", action="store_true",
                   help="also re-read every event since --since (event or ingest time); decided ones are skipped")
    p.add_argument("--since", type=_utc_time, metavar="T", help="ISO 8601 time, e.g. 2026-11-30T00:00:00Z")
    p.set_defaults(func=cmd_settle)

    p = sub.add_parser("release-holds", help="settle creator credits whose hold has passed")
    p.add_argument("--once", action="store_true", required=True)
    p.set_defaults(func=cmd_release_holds)

    p = sub.add_parser("payouts", help="pay requested withdrawals through Stripe")
    p.add_argument("--once", action="store_true", required=True)
    p.set_defaults(func=cmd_payouts)

    sub.add_parser("reconcile", help="prove the books balance (non-zero exit if not)").set_defaults(
        func=cmd_reconcile
    )


def _add_webhooks_command(sub) -> None:
    from webhooks.metrics import DEFAULT_PORT as WEBHOOKS_METRICS_PORT

    p = sub.add_parser("webhooks", help="deliver the outgoing webhooks (signed, retried for a day)")
    p.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    p.add_argument("--metrics-port", type=int, default=WEBHOOKS_METRICS_PORT,
                   help="serve /metrics and /healthz (0: off)")
    p.set_defaults(func=cmd_webhooks)


def _add_admin_command(sub) -> None:
    p = sub.add_parser("admin", help="the admin REST API")
    p.add_argument("--port", type=int, default=8081)
    p.set_defaults(func=cmd_admin)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

