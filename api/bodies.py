"""How the API reads a JSON request body: bounded in size and depth, no key given twice.

webargs parses bodies with the standard library's `json.loads`, which keeps
the last of two equal keys and recurses as deep as the body goes. Every
route's Blueprint here parses with `billing.untrusted_json` instead, the
same parser as the AMQP intake's, and a refused body is a 422
`validation_error` saying why under `_body`; so is a body sent with another
content type. A query string may give each parameter once (a list parameter
aside): a repeat is a 422 naming it, not read as its first value, which would
list `type=transfer&type=credit` as transfers only, with no sign of it.
"""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from marshmallow import Schema
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import validation_error
from billing import limits, untrusted_json

NOT_JSON_MESSAGE = "The body must be JSON, sent with Content-Type: application/json."
REPEATED_MESSAGE = "Must be given once."


def parse_body(data: bytes) -> Any:
    """A request body's JSON value; a refusal becomes the contract's error."""
    if len(data) > limits.request_body_bytes_max:
        raise RequestEntityTooLarge()
    try:
        return untrusted_json.parse(data, bytes_max=limits.request_body_bytes_max)
    except untrusted_json.JsonRefused as refusal:
        raise validation_error({"_body": [str(refusal)]}) from refusal


class BodyParser(FlaskParser):
    """webargs' Flask parser, with `load_json` (the `json` location) and `load_querystring`
    made strict."""

    def load_querystring(self, req: flask.Request, schema: Schema) -> Any:
        query = super().load_querystring(req, schema)  # a proxy that knows the list fields
        repeated = {
            key: [REPEATED_MESSAGE]
            for key, values in req.args.lists()
            if len(values) > 1 and key not in query.multiple_keys
        }
        if repeated:
            raise validation_error(repeated)
        return query

    def load_json(self, req: flask.Request, schema: Schema) -> Any:
        data = req.get_data(cache=True)
        if not data:  # as webargs does: no body, so every required field is missing
            return core.missing
        if not is_json_request(req):
            # A body of another type (curl's -d without -H sends a form) would
            # otherwise read as no body at all: every field "missing".
            raise validation_error({"_body": [NOT_JSON_MESSAGE]})
        return parse_body(data)


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint with the strict body parser (its documented override)."""

    ARGUMENTS_PARSER = BodyParser()
