"""PostgreSQL fleet-wide queries: top hosts (every host at once).

With series resolved first, a query without a host or grouped by host is the per-host
statement of :mod:`.metrics` without the host condition (``series_cte``): the series of
every host that match the name and labels, then their samples by id. Fleet-wide queries
always read the raw samples (the API keeps them to the raw 30-day range). ``top`` is the
same statement with one bucket for the whole range and one series per host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from miniobserv.server.storage.base import (
    HOST_GROUP,
    HostValue,
    MetricQuery,
    TopQuery,
    rank_hosts,
)
from miniobserv.server.storage.postgres.metrics import whole_range

Fetch = Callable[[sql.Composed, dict[str, Any]], list[tuple[Any, ...]]]


def top(fetch: Fetch, query: TopQuery, *, packed: bool = False) -> list[HostValue]:
    """One aggregate per host over the whole range, ranked by :func:`rank_hosts`; with
    ``packed``, over the narrow and packed samples (blocks.py)."""
    window = MetricQuery(None, query.name, query.start, query.end, agg=query.agg,
                         labels=query.labels, group_by=HOST_GROUP)
    rows = fetch(*whole_range(window, packed=packed))
    return rank_hosts((HostValue(host, float(value)) for host, _, value in rows), query)
