"""Liveness and Prometheus metrics of the admin API."""

from __future__ import annotations


async def test_healthz_answers_when_postgres_is_reachable(api):
    response = await api.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"ok": True}


async def test_metrics_count_requests_by_route_template_not_raw_path(api):
    await api.get("/v1/campaigns/00000000-0000-0000-0000-00000000abcd")
    await api.get("/v1/campaigns/00000000-0000-0000-0000-00000000abce")
    response = await api.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'oros_admin_requests_total{method="GET",route="/v1/campaigns/{id}",status="404"} 2.0' in text
    assert "abcd" not in text
