"""A bug in the AMQP intake for one kind of message, for a worker that loads this module.

With this directory first on PYTHONPATH, Python imports `sitecustomize`
when it starts, before the worker imports `tasks.intake`, so the intake
takes this `parse_operation`, which raises for a message whose `note` is
"force a bug": the stand-in for any defect in the handling of one message,
which nothing a client sends can cause once the known ones are fixed.
"""

from typing import Any

from billing.adapters import schemas

_parse_operation = schemas.parse_operation


def parse_operation(message: Any) -> Any:
    if isinstance(message, dict) and message.get("note") == "force a bug":
        raise RuntimeError("a bug forced by the test")
    return _parse_operation(message)


schemas.parse_operation = parse_operation
