"""DATABASE_READ_URL: the admin API's reports read from a replica; money and fresh writes never do.

A second database stands in for the replica: cloned from the migrated template, it holds only what
the test copies into it, so an answer shows which database it came from.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlparse

import psycopg
import pytest

from admin_api.app import create_app
from admin_api.typedefs import READ_POOL
from oros.migrate import migrate_postgres
from settler.jobs import OWNER_JOBS


@pytest.fixture
def replica_url(settings, template_db):
    name = f"{urlparse(settings.database_url).path.lstrip('/')}_replica"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = urlparse(settings.database_url)._replace(path=f"/{name}").geturl()
    migrate_postgres(replace(settings, database_url=url))  # the database's own ACL, as the settings fixture does
    yield url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def replica_api(aiohttp_client, settings, replica_url):
    return await aiohttp_client(create_app(replace(settings, database_read_url=replica_url), OWNER_JOBS))


def copy_user(replica_url: str, pg, user_id: str) -> None:
    """What streaming replication would have copied: the user and its roles."""
    user = pg.execute("SELECT id, email, kyc_status FROM users WHERE id = %s", (user_id,)).fetchone()
    roles = [r["role"] for r in pg.execute("SELECT role FROM user_roles WHERE user_id = %s", (user_id,))]
    with psycopg.connect(replica_url, autocommit=True) as replica:
        replica.execute("INSERT INTO users (id, email, kyc_status) VALUES (%(id)s, %(email)s, %(kyc_status)s)", user)
        for role in roles:
            replica.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user_id, role))


async def test_reports_read_the_replica(replica_api, replica_url, admin, make_user, pg):
    copy_user(replica_url, pg, admin.id)
    with psycopg.connect(replica_url, autocommit=True) as replica:
        run = replica.execute("INSERT INTO settlement_runs (status, events_paid) VALUES ('succeeded', 7)"
                              " RETURNING id::text").fetchone()[0]
    response = await replica_api.get("/v1/admin/settlements", headers=admin.headers)
    assert response.status == 200
    assert [(r["id"], r["events_paid"]) for r in (await response.json())["items"]] == [(run, 7)]
    assert pg.execute("SELECT count(*) AS n FROM settlement_runs").fetchone()["n"] == 0

    creator = make_user("creator")
    copy_user(replica_url, pg, creator.id)
    for path in ("/v1/me/earnings", "/v1/me/stats", "/v1/me/earnings.csv"):
        assert (await replica_api.get(path, headers=creator.headers)).status == 200, path


async def test_money_and_reads_after_a_write_stay_on_the_primary(replica_api, replica_url, make_user):
    business = make_user("business")  # on the primary only: the replica has not caught up
    created = await replica_api.post("/v1/campaigns", headers=business.headers, json={
        "title": "Spring", "objective": "click", "payout_per_action": "0.50", "total_budget": "100.00",
        "destination_url": "https://shop.example.com/"})
    assert created.status == 201, await created.text()
    campaign = (await created.json())["id"]
    assert (await replica_api.get(f"/v1/campaigns/{campaign}", headers=business.headers)).status == 200
    assert (await replica_api.get("/v1/wallet", headers=business.headers)).status == 200
    # Its stats read the replica, which does not know the campaign yet.
    assert (await replica_api.get(f"/v1/campaigns/{campaign}/stats", headers=business.headers)).status == 404


async def test_the_replica_pool_never_writes(replica_api):
    async with replica_api.app[READ_POOL].connection() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("CREATE TABLE written_on_the_replica (id int)")
