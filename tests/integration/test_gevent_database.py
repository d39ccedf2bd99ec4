"""The API's gevent processes: a query in flight must not stop the process's other requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from billing.adapters.database import cooperate_with_gevent
from billing.config import Settings

# Runs in a process of its own, patched by gevent as gunicorn's gevent worker
# patches the API's processes: one greenlet waits on a query of 0.6 s while
# another ticks every 20 ms; the ticks that fall inside the query tell
# whether the query let the other greenlet run.
PROBE = """
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
from sqlalchemy import text
from billing.adapters.database import cooperate_with_gevent, make_engine

cooperating = cooperate_with_gevent() if sys.argv[2] == "cooperate" else False
engine = make_engine(sys.argv[1])
with engine.connect() as connection:
    connection.execute(text("SELECT 1"))
window = {}
ticks = []

def query():
    with engine.connect() as connection:
        window["start"] = time.monotonic()
        connection.execute(text("SELECT pg_sleep(0.6)"))
        window["end"] = time.monotonic()

def ticker():
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        ticks.append(time.monotonic())
        gevent.sleep(0.02)

gevent.joinall([gevent.spawn(query), gevent.spawn(ticker)])
inside = sum(1 for t in ticks if window["start"] < t < window["end"])
print(json.dumps({"cooperating": cooperating, "ticks_inside": inside}))
"""


def _probe(mode: str) -> dict[str, object]:
    # The server's own database: the probe only waits on it.
    url = Settings.from_env().database_url.rsplit("/", 1)[0] + "/postgres"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_query_lets_the_other_requests_of_a_gevent_process_run() -> None:
    probe = _probe("cooperate")
    assert probe["cooperating"] is True
    # About 30 ticks fit in 0.6 s; a process that blocked would tick at most once.
    assert int(probe["ticks_inside"]) >= 10, probe


def test_without_the_wait_callback_the_query_blocks_the_process() -> None:
    """The check above can fail: psycopg2's own wait stops every greenlet."""
    probe = _probe("block")
    assert probe["cooperating"] is False
    assert int(probe["ticks_inside"]) <= 1, probe


def test_a_process_gevent_has_not_patched_keeps_blocking_calls() -> None:
    assert cooperate_with_gevent() is False


# The API's app factory in a process gevent has patched, as gunicorn's gevent
# worker builds it: psycopg2 must wait through gevent from then on.
APP_PROBE = """
from gevent import monkey
monkey.patch_all()
import psycopg2.extensions
from api import create_app
from billing.config import Settings

create_app(Settings.from_env())
print(psycopg2.extensions.get_wait_callback() is not None)
"""


def test_the_api_built_in_a_gevent_process_waits_through_gevent() -> None:
    done = subprocess.run(
        [sys.executable, "-c", APP_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BILLING_API_TOKENS": "probe-token-long-enough"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"
