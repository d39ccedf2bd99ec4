"""The event feed over HTTP: every event published to `billing.events`, in feed order."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import RAISE

from api.bodies import Blueprint
from api.context import services
from api.errors import ApiError, validation_error
from billing import feed
from billing.adapters import outbox_reads
from billing.adapters.schemas import EventPageQuerySchema, EventPageSchema

blp = Blueprint("events", __name__, url_prefix="/v1/events", description="Events")


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventPageQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, EventPageSchema)
    @blp.alt_response(410, response="EventsPruned")
    def get(self, query: dict[str, Any]) -> Response:
        """Every event published to `billing.events`, after the `event_seq` given, oldest first.

        Operation outcomes and `hold.expired`, each with its `event_seq` (also in its
        body on the exchange), numbered in the order they became visible: a client that
        reads page after page from `after=0`, each time from the `next_after` of the page
        before, sees every event exactly once, none skipped. A consumer that lost its
        queue catches up from the last `event_seq` it handled. Events are kept at least
        30 days; reading from before that answers 410 `events_pruned`.
        `request.rejected` is not in the feed (it is about no operation).
        """
        after, limit = query["after"], query["limit"]
        last_seq, events = outbox_reads.feed_page(services().engine, after, limit)
        try:
            page = feed.feed_page(after, last_seq, events)
        except feed.AfterBeyondEnd as error:
            raise validation_error({"after": [str(error)]}) from error
        except feed.EventsPruned as error:
            raise ApiError(
                410, "events_pruned", str(error), {"retained_after": error.retained_after}
            ) from error
        return _page_response(page)


def _page_response(page: feed.FeedPage) -> Response:
    """The page as JSON, each body spliced in as the text published: the same bytes."""
    items = ",".join(
        f'{{"body":{event.body},"event_seq":{event.event_seq},'
        f'"message_id":{json.dumps(event.message_id)},'
        f'"routing_key":{json.dumps(event.routing_key)}}}'
        for event in page.events
    )
    text = f'{{"items":[{items}],"next_after":{page.next_after}}}'
    return Response(text, status=200, mimetype="application/json")
