"""Celery settings for the billing workers and for every process that enqueues to them.

The aim is at-least-once delivery with an exactly-once effect: a message is
acknowledged only after its task has committed (or decided nothing is to be
done), so a crash anywhere redelivers it, and the ledger task's idempotency
check inside the account locks makes the second run a no-op.
"""

from kombu import Exchange, Queue

from billing import limits
from billing.config import Settings

_settings = Settings.from_env()
_name = _settings.amqp_name

# One URL, or a cluster's nodes separated by `;`: each connection (the
# worker's consumer, every producer, beat) goes to the first that answers and,
# when its node dies, to the next in the list, round robin. Ordering the list
# differently per host spreads the connections over the nodes.
broker_url = _settings.broker_url
broker_failover_strategy = "round-robin"
# Retry the broker connection forever, at start-up and after a broker restart:
# a worker that gives up is a worker that silently stops applying money.
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
# Publisher confirms: basic_publish returns only once the broker has taken
# the message, so an enqueue or a publish can't be lost without an error.
# (The API sends its ledger tasks without: it records each operation first,
# and the recovery sweep sends again what the broker did not take; see
# `billing.bootstrap.Services.task_queue`.)
broker_transport_options = {"confirm_publish": True}
broker_heartbeat = limits.broker_heartbeat_s
# Fail a connection attempt fast: the API answers 503 within a few seconds
# while the broker is down instead of hanging its clients.
broker_connection_timeout = limits.broker_connect_timeout_s

# JSON only: a pickle (or any other content type) on the queue is refused,
# never deserialized.
task_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
task_ignore_result = True
result_backend = None

# Acknowledge after the task, not before: a worker that dies mid-task leaves
# the message unacknowledged and RabbitMQ hands it to another worker.
task_acks_late = True
# A pool child killed by SIGKILL (OOM killer, operator) would otherwise have
# its message acknowledged and lost; reject it back to the queue instead.
task_reject_on_worker_lost = True
# A task that raises an unexpected error is a bug: reject it so the queue's
# dead-letter exchange parks it for inspection instead of acking it away.
# (The operation stays pending and the recovery sweep enqueues it again.)
# One that runs past its hard time limit is given back to the queue, whose
# delivery limit dead-letters it if it keeps doing so. (Celery 5.7's two
# settings; the one they replace is deprecated.)
task_acks_on_failure = False
task_acks_on_timeout = False
# When the broker connection drops, the broker redelivers unacknowledged
# messages to other workers; cancel our copies so a task never runs twice
# in parallel with itself (the ledger's locks would make it harmless, but it
# is wasted work and a confusing log).
worker_cancel_long_running_tasks_on_connection_loss = True
# Tasks finish well inside RabbitMQ's consumer timeout (30 min by default).
task_time_limit = limits.task_time_limit_s
task_soft_time_limit = limits.task_soft_time_limit_s
# A few messages in flight per process keeps the pool busy without hoarding
# work that another process could do (quorum queues use per-consumer QoS).
worker_prefetch_multiplier = limits.worker_prefetch_per_process

# Durable quorum queues: replicated, survive a broker restart, and count
# deliveries, so a poison message that keeps crashing workers is dead-lettered
# after `delivery_limit` attempts instead of being redelivered forever.
delivery_limit = limits.queue_delivery_limit
tasks_exchange = Exchange(_name("billing.tasks"), type="topic", durable=True)
tasks_dead_exchange = Exchange(_name("billing.tasks.dead"), type="fanout", durable=True)
tasks_routing_key = _name("billing.tasks")
_task_queue_arguments = {
    "x-queue-type": "quorum",
    "x-delivery-limit": delivery_limit,
    "x-dead-letter-exchange": tasks_dead_exchange.name,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
tasks_queue = Queue(
    _name("billing.tasks"),
    exchange=tasks_exchange,
    routing_key=tasks_routing_key,
    durable=True,
    queue_arguments=_task_queue_arguments,
)
# The periodic jobs have a queue of their own, so a hold expires as soon as a
# worker process is free instead of waiting behind every ledger task queued;
# and without dead-lettering: a run that waited
# past its `expires` (workers busy) is dropped by the broker, as meant,
# instead of landing among the poison messages in `billing.tasks.dead`; the
# next run comes within its interval anyway. A handful at most wait.
periodic_routing_key = _name("billing.periodic")
periodic_queue = Queue(
    _name("billing.periodic"),
    exchange=tasks_exchange,
    routing_key=periodic_routing_key,
    durable=True,
    queue_arguments={
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-max-length": limits.periodic_queue_length_max,
        "x-overflow": "drop-head",
    },
)
tasks_dead_queue = Queue(
    _name("billing.tasks.dead"),
    exchange=tasks_dead_exchange,
    routing_key="#",
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)
task_queues = [tasks_queue, periodic_queue]
_periodic = {"queue": periodic_queue.name, "routing_key": periodic_routing_key}
task_routes = {
    "billing.expire_holds": _periodic,
    "billing.relay_outbox": _periodic,
    "billing.resend_pending": _periodic,
    "billing.prune_outbox": _periodic,
}
task_default_queue = tasks_queue.name
task_default_exchange = tasks_exchange.name
# A topic exchange, because Celery's native delayed delivery (how a countdown
# works on quorum queues) cannot route through a direct exchange; the routing
# key carries the prefix so delayed messages of one deployment never reach
# another that shares the broker.
task_default_exchange_type = "topic"
task_default_routing_key = tasks_routing_key
task_create_missing_queues = False
broker_native_delayed_delivery_queue_type = "quorum"

# Undecodable messages (pickle, unknown content type, broken JSON) are
# dead-lettered instead of acknowledged away; unknown tasks and tasks with
# wrong arguments are rejected to the dead-letter exchange by Celery itself.
worker_consumer = "tasks.consumer:DeadLetteringConsumer"

# Task events for Flower, on exchanges named with the deployment's prefix.
# Workers start without them and Flower turns them on while it runs (it
# sends Celery's `enable_events` every 5 s): three events a task, each the
# broker must take in even with nobody listening, cost the workers and
# RabbitMQ about a quarter of their CPU when groups are small. Worker
# heartbeats stay on, so Flower lists the workers at once. The API's "sent"
# events are off: one per group, they add nothing Flower's "received" does
# not show.
worker_send_task_events = False
task_send_sent_event = False
event_exchange = _name("billing.celeryev")
event_queue_prefix = _name("billing.celeryev")
control_exchange = _name("billing")

# Periodic jobs; `expires` drops a run that waited in the queue past its
# interval (the broker drops it: see `periodic_queue`), so a backlog never
# piles up stale copies of the same job.
beat_schedule = {
    "expire-holds": {
        "task": "billing.expire_holds",
        "schedule": float(limits.hold_expiry_interval_s),
        "options": {
            "expires": limits.hold_expiry_interval_s * limits.periodic_run_expires_intervals
        },
    },
    "republish-outbox": {
        "task": "billing.relay_outbox",
        "schedule": float(limits.outbox_relay_interval_s),
        "options": {
            "expires": limits.outbox_relay_interval_s * limits.periodic_run_expires_intervals
        },
    },
    "resend-stuck-operations": {
        "task": "billing.resend_pending",
        "schedule": float(limits.pending_sweep_interval_s),
        "options": {
            "expires": limits.pending_sweep_interval_s * limits.periodic_run_expires_intervals
        },
    },
    "prune-outbox": {
        "task": "billing.prune_outbox",
        "schedule": float(limits.outbox_prune_interval_s),
        "options": {"expires": limits.outbox_prune_interval_s * 3},
    },
}
