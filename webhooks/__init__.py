"""Outgoing webhooks: the process that delivers the outbox Postgres writes (sql/postgres/0066).

``deliver.py`` claims due deliveries, signs and posts them and records each
attempt; ``schedule.py`` decides when a failed one is tried again;
``addresses.py`` refuses private targets when connecting; ``metrics.py``
and ``cli.py`` (``oros webhooks``) make it a service. docs/webhooks.md.
"""
