"""Request metrics and structured request logs for the API, and the `/metrics` scrape."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from api.bodies import Blueprint
from api.context import services
from billing import logs
from billing.adapters import metrics

blp = Blueprint("observability", __name__, description="Prometheus metrics (no token needed)")
log = logging.getLogger("billing.api")


@blp.route("/metrics", methods=["GET"])
@blp.response(
    200,
    {"type": "string"},
    content_type=CONTENT_TYPE_LATEST,
    description="The Prometheus text exposition",
    example="billing_operations_completed_total"
    '{type="transfer",status="succeeded",error_code=""} 42.0\n',
)
def scrape() -> Response:
    """Prometheus metrics of this machine's API and worker processes, and where events wait."""
    settings = services().settings
    body, content_type = metrics.render(
        services().engine, settings.broker_url, settings.amqp_name("billing.responses")
    )
    return Response(body, content_type=content_type)


def instrument(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()
        logs.current_operation_id.set(None)

    @app.after_request
    def _record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        elapsed_s = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.http_latency.labels(request.method, route).observe(elapsed_s)
        # A line per answered request would cost more CPU than the request
        # itself under load, and the metrics above count them all already:
        # refusals and errors are logged, the rest only at DEBUG.
        level = logging.INFO if response.status_code >= 400 else logging.DEBUG
        if not log.isEnabledFor(level):
            return response
        log.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={"status": response.status_code, "duration_ms": round(elapsed_s * 1000, 2)},
        )
        return response
