"""Ingest: the Redis event stream into ClickHouse, the one writer of the events table.

``consumer`` (the consumer-group loop) -> ``writer`` (one insert per batch)
-> ClickHouse; ``rows`` checks an entry against the table's limits,
``deadletter`` keeps what can never insert, ``metrics`` serves the counters,
``cli`` is ``oros ingest``. It imports nothing from the tracker.
"""
