"""Reading PostgreSQL's plans in tests: `EXPLAIN (FORMAT JSON)` output, node by node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The node and every node under it, depth first."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)
