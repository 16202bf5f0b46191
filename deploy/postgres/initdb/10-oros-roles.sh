#!/usr/bin/env bash
# The database roles of the production topology (docs/security.md, "Database roles and functions").
#
# The official postgres image runs this once, as the superuser POSTGRES_USER, when it
# initialises an empty data directory (scripts in /docker-entrypoint-initdb.d). After it no
# OROS process uses a superuser:
#   * the settler's login owns the database and runs `oros migrate` (it owns every object);
#   * the admin API's login is a member of oros_api only, the tracker's of oros_tracker only,
#     the webhook deliverer's of oros_webhooks only (0168).
# The NOLOGIN group roles are created here because the owner has no CREATEROLE; migrations
# 0001, 0025 and 0168 then find them, check them, and grant them what each needs.
set -euo pipefail

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${OROS_SETTLER_DB_PASSWORD:?set OROS_SETTLER_DB_PASSWORD}"
: "${OROS_ADMIN_DB_PASSWORD:?set OROS_ADMIN_DB_PASSWORD}"
: "${OROS_TRACKER_DB_PASSWORD:?set OROS_TRACKER_DB_PASSWORD}"
: "${OROS_WEBHOOKS_DB_PASSWORD:?set OROS_WEBHOOKS_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" \
  -v settler="${OROS_SETTLER_DB_USER:-oros_settler}" -v settler_password="$OROS_SETTLER_DB_PASSWORD" \
  -v admin="${OROS_ADMIN_DB_USER:-oros_admin_api}" -v admin_password="$OROS_ADMIN_DB_PASSWORD" \
  -v tracker="${OROS_TRACKER_DB_USER:-oros_tracker_svc}" -v tracker_password="$OROS_TRACKER_DB_PASSWORD" \
  -v webhooks="${OROS_WEBHOOKS_DB_USER:-oros_webhooks_svc}" -v webhooks_password="$OROS_WEBHOOKS_DB_PASSWORD" \
  <<'EOSQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_app') THEN
    CREATE ROLE oros_app NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_api') THEN
    CREATE ROLE oros_api NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_tracker') THEN
    CREATE ROLE oros_tracker NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_webhooks') THEN
    CREATE ROLE oros_webhooks NOLOGIN;
  END IF;
  IF NOT pg_has_role('oros_api', 'oros_app', 'MEMBER') THEN
    GRANT oros_app TO oros_api;
  END IF;
END
$$;

CREATE ROLE :"settler" LOGIN PASSWORD :'settler_password';
-- 0001 makes the migrating role a member of oros_app; without CREATEROLE it could not itself.
GRANT oros_app TO :"settler";
ALTER DATABASE :"db" OWNER TO :"settler";

CREATE ROLE :"admin" LOGIN PASSWORD :'admin_password' IN ROLE oros_api;
CREATE ROLE :"tracker" LOGIN PASSWORD :'tracker_password' IN ROLE oros_tracker;
CREATE ROLE :"webhooks" LOGIN PASSWORD :'webhooks_password' IN ROLE oros_webhooks;
EOSQL
