"""Every named limit of the service, with its unit in its name, in one place."""

amount_min = 1
amount_max = 10**15
# An account's posted and held stay within -balance_max..balance_max (minor
# units): an operation that would take either outside fails with
# balance_limit_exceeded. Far inside PostgreSQL's bigint (about 9.2 * 10**18),
# so no client balance, nor any running figure of an entry, can overflow it.
# The external counter-accounts have no such limit: they keep no running
# balance (their balance is the sum of their entries, a numeric in SQL).
balance_max = 10**18
overdraft_limit_max = 10**15
identifier_length_max = 64
identifier_pattern = rf"^[A-Za-z0-9._:-]{{1,{identifier_length_max}}}\Z"

# Account metadata (and, in the contract, an operation's) is at most this
# much as compact JSON in UTF-8 (no spaces: how the client spaced it does not
# count), and at most this many objects or arrays deep, the metadata object
# itself the first of them.
metadata_size_max_bytes = 4 * 1024
metadata_depth_max = 8

page_size_default = 100
page_size_max = 500

# An API token shorter than this is refused at start: a bearer token is the
# only secret between the internet and the ledger, so it must resist guessing
# (`openssl rand -hex 16` makes 32 characters).
api_token_length_min_chars = 16

# Requests one API process serves at once (gevent greenlets); more wait in the
# listen backlog.
api_connections_per_process = 1000

operation_wait_max_s = 30
operation_wait_poll_min_ms = 10
operation_wait_poll_max_ms = 200

hold_expires_in_min_s = 1
hold_expires_in_max_s = 2_592_000

# How long a ledger transaction waits for a busy account lock before it gives
# the lock up and the task is retried through Celery instead.
lock_wait_ms = 2_000
statement_timeout_ms = 10_000
# A session left idle inside a transaction (a process stopped mid-transaction)
# is ended by PostgreSQL after this, so its row locks never hold others for long.
idle_in_transaction_timeout_ms = 60_000
# Connecting to PostgreSQL gives up after this (a database that is down
# answers 503 quickly instead of hanging the request), and a request waits
# this long at most for a pooled connection before it counts as unavailable.
database_connect_timeout_s = 3
database_pool_wait_s = 5
# A pooled connection idle this long is pinged before it is used again (one
# used more recently is not: `database._ping_after_idle`).
database_ping_after_idle_s = 1.0
# Pooled connections of one process (and as many more on overflow): an API
# process serves many greenlets; a worker's pool child runs one task at a time.
database_pool_size_api = 5
database_pool_size_worker = 2
lock_retry_backoff_min_s = 1
lock_retry_backoff_max_s = 30
lock_retries_max = 50
# How often a capture or release chooses its locks again when its hold was
# created between the choice and the locking.
lock_set_attempts_max = 3

# The API's gunicorn: a worker process silent for this long is killed and
# replaced (a gevent loop blocked that long serves nobody); on a stop or
# restart, requests in flight get the graceful time to finish. Idle keep-alive
# connections stay open 75 s, not gunicorn's 2: a client (or load balancer)
# that reuses a pooled connection the server has just closed gets its request
# reset; longer than the usual 60 s idle timeout of load balancers, so they
# close first.
api_worker_timeout_s = 60
api_graceful_timeout_s = 10
api_keep_alive_s = 75

# A task must finish well inside RabbitMQ's consumer timeout (30 minutes by
# default), so a hung task is killed long before the broker gives up on it.
task_time_limit_s = 120
task_soft_time_limit_s = 90
# A task message's own time limits (its `timelimit` header) are refused past
# this: none of the service's tasks needs more than the limits above.
task_header_time_limit_max_s = 86_400
# Celery's remote control commands take a few flat arguments; a command whose
# arguments nest deeper than this is dropped before Celery reads it.
control_arguments_depth_max = 4

# An accepted operation still pending after this long is enqueued again by
# the recovery sweep; an unpublished outcome is republished after this long.
pending_resend_after_s = 30
outbox_republish_after_s = 10
# The sweep sends a pending operation again at most this many times (the
# first time with the others it found, then each in a task of its own); at
# the next sweep after that it ends failed with internal_error. A lost task
# needs one resend; ten take at least 10 * pending_resend_after_s, so only an
# operation whose tasks never complete it for five minutes is given up.
pending_resends_max = 10
# An operation whose transaction fails for a reason other than an outage (a
# defect, data the database refuses) is tried alone this many times in the
# same task, then ends failed with internal_error; the others go on.
operation_attempts_max = 3
# The longest error message stored with a failed operation (characters).
error_message_chars_max = 500
sweep_batch_size_max = 1_000
outbox_publish_batch_max = 500

# How often beat runs each periodic job. Expiry runs every second so a hold
# is released well within the contract's 5 seconds of its expires_at.
hold_expiry_interval_s = 1
outbox_relay_interval_s = 2
pending_sweep_interval_s = 10
outbox_prune_interval_s = 60

# The event feed (GET /v1/events) keeps events at least this long (the
# contract's promise); BILLING_EVENT_RETENTION_DAYS may make it longer, never
# shorter. Older published events are pruned from the outbox by a periodic
# job, in transactions of at most `outbox_prune_rows_per_transaction_max`
# rows (a few milliseconds each: nothing waits on them), at most
# `outbox_prune_transactions_per_run_max` of them a run, a run a minute: up
# to 144 million events a day, 1,700 a second sustained.
event_retention_days_min = 30
outbox_prune_rows_per_transaction_max = 1_000
outbox_prune_transactions_per_run_max = 100

# The most operations one batch request (or one ledger task) carries.
batch_size_max = 1_000
# The most operations one ledger transaction applies: a task applies its own
# and takes along the oldest other pending ones up to this many. About two
# advisory locks per transfer, well inside PostgreSQL's default lock table.
operations_per_transaction_max = 500
# The most ledger transactions one task runs one after another: a task's
# operations that the transaction limit leaves out (the second half of a
# batch of 1,000 whose first half is still pending, say) go in the next one.
# Two are enough for one batch; past this many the task is retried.
ledger_transactions_per_task_max = 4
# A transaction takes along only operations accepted this recently. Every
# completed operation leaves a dead entry in the index of pending ones until
# vacuum comes; read from the index's start, the take-along visited all of
# them (2 ms a call after 30 s at 500 operations/s, and growing). An older
# pending operation is applied by its own task, or sent again by the sweep.
take_along_window_s = 5
# Ledger statements of at most this many rows run prepared, under a plan made once
# per connection (`adapters.prepared`); bigger ones are planned for their size.
prepared_rows_max = 16
# An API process records and enqueues a request's operation at once when it
# is not already doing so for others; the requests that arrive meanwhile go
# together in the next transaction and ledger task, up to this many.
enqueue_group_size_max = 500

# `billing.responses` holds at most this many events, and this many bytes of
# their bodies (RabbitMQ's x-max-length and x-max-length-bytes, with
# x-overflow reject-publish); the environment may set others
# (BILLING_RESPONSES_MAX_EVENTS, BILLING_RESPONSES_MAX_BYTES). Beyond that the
# broker refuses new events, and they wait in the outbox until the queue has
# room. RabbitMQ 3.10 held 2.2 million unread events in 2.58 GB (1.2 KB each):
# 200,000 of them take about 240 MB, far below its memory alarm (40% of RAM).
responses_max_events = 200_000
responses_max_bytes = 128 * 1024 * 1024
# After the broker refused events (billing.responses full), the outbox relay
# of that process waits this long, doubling while refusals go on, rather than
# send the same oldest events again and again to a queue that refuses them.
events_refused_backoff_min_s = 1
events_refused_backoff_max_s = 8
# While the broker blocks the publisher's connection, a publish first reads
# for this long whether it stopped, and sends nothing if not.
broker_blocked_poll_s = 0.05
# One run of the outbox relay publishes bursts of `outbox_publish_batch_max`
# events, oldest first, one after another while the broker takes them all,
# up to this many: the relay drains a backlog at broker speed, not 500 events
# per interval, and a run still ends within seconds.
outbox_relay_bursts_per_run_max = 20
# Events unpublished for longer than `outbox_republish_after_s` are "waiting":
# /readyz and `billing up` say so. /readyz counts them up to this many.
readyz_backlog_count_max = 100_000
# The metrics scrape counts them up to this many (a second's scan at most).
metrics_backlog_count_max = 10_000_000

# How long a burst of events waits for the broker's confirms, and a new
# connection (a publisher's, Celery's, /readyz's probe) for the broker to
# answer, before they count as failed: the API answers 503 within a few
# seconds while the broker is down instead of hanging its clients.
event_confirm_timeout_s = 10
broker_connect_timeout_s = 2
# Celery's heartbeat on its broker connections: a dead peer is noticed within
# about two of these, not at the next TCP timeout.
broker_heartbeat_s = 30
# Parking an intake message waits this long at most for a producer of the
# worker's pool (all busy publishing) before the message is given back.
producer_pool_wait_s = 10

# A quorum queue counts deliveries: a message (a task or an intake request)
# that keeps crashing the workers or the intake is dead-lettered after this
# many instead of being redelivered forever.
queue_delivery_limit = 20
# Intake messages the consumer of each worker's main process holds
# unacknowledged: each waits for its submit_request task to be confirmed, so
# enough are in flight to keep the intake busy meanwhile.
intake_prefetch_count = 64
# Task messages a worker pool process holds ahead (Celery's prefetch
# multiplier): keeps the pool busy without hoarding work another process
# could do (quorum queues use per-consumer QoS).
worker_prefetch_per_process = 4
# The periodic jobs' queue keeps at most this many runs (older ones dropped):
# a run that waited behind busy workers is of no use once the next one comes;
# one not started within this many of its intervals expires.
periodic_queue_length_max = 100
periodic_run_expires_intervals = 3

# The API sends a ledger task again after a dropped connection, at most this
# many times, pausing from the first interval up by the step to the maximum;
# past it the request gets a TransientError (a 503) within a few seconds.
enqueue_retries_max = 2
enqueue_retry_interval_first_s = 0.1
enqueue_retry_interval_step_s = 0.5
enqueue_retry_interval_max_s = 1.0
# A ledger task's arguments as Flower and the worker's log show them
# (`argsrepr`), cut as Celery cuts them: the ids are in the body already.
task_argsrepr_chars_max = 1_024
# A request waits this long at most for the group its operation joined to be
# recorded and enqueued (behind a call that hangs) before it counts as failed.
enqueue_wait_max_s = 10.0

# `billing dead-letters` holds every message it has looked at unacknowledged
# until the run ends (so it never sees one twice and loses none if it dies),
# so one run looks at no more than this many messages.
dead_letter_scan_max = 10_000
dead_letter_list_default = 100
dead_letter_body_preview_chars = 200
dead_letter_confirm_timeout_s = 30
dead_letter_progress_every = 100
dead_letter_give_back_wait_max_s = 5
dead_letter_connect_timeout_s = 5

# `billing audit` lists at most this many offending rows of each invariant:
# enough to find the cause, not a dump of a broken table.
audit_rows_per_violation_max = 20

# Every JSON text that comes from outside (an HTTP body, a batch, an intake
# message, a dead letter) is refused when nested deeper than this, before it
# is parsed: nothing that reads it, encodes it again or stores it recurses
# further. Operation metadata may be 8 levels deep (account metadata 32),
# inside a batch body, an item and the metadata field itself; 64 leaves room
# for both and stays far below the recursion limits of Python's json (about
# 1,000) and orjson (255 when encoding).
json_depth_max = 64
# The largest HTTP request body the API reads, with or without a
# Content-Length (a chunked body is cut off when it passes this; Flask's
# MAX_CONTENT_LENGTH): 413 beyond. A full batch of 1,000 operations with
# metadata fits.
request_body_bytes_max = 4 * 1024 * 1024
# The largest message the AMQP intake parses: one operation, whose metadata
# is at most 4 KiB, fits many times over. A larger one is rejected.
intake_message_bytes_max = 64 * 1024
# A `request.rejected` event carries the original message as text, cut at
# this many characters (and says when it was cut).
rejected_message_chars_max = 8 * 1024
# `billing dead-letters` reads the operation ids out of bodies up to this size.
dead_letter_parse_bytes_max = 4 * 1024 * 1024

# `billing up`. Each probe of PostgreSQL or RabbitMQ gives up after the first
# timeout; the preflight probes again every interval, up to the wait (the
# default of --wait-for-services) for a service that is still starting.
up_probe_timeout_s = 2
up_probe_interval_s = 1
up_services_wait_s = 30
# Docker's own commands (version, info, ps) answer within this, or Docker
# counts as absent; a service started with compose must report healthy within
# the wait (compose's health checks allow RabbitMQ 20 s + 12 x 10 s).
up_docker_command_timeout_s = 10
up_compose_start_timeout_s = 600
up_compose_healthy_wait_s = 180
# The banner waits this long at most for the API's /readyz and a worker's
# ping; a ping waits this long for the replies.
up_ready_wait_s = 180
up_ready_poll_interval_s = 1
up_worker_ping_timeout_s = 1
# A process that exits is started again after a pause that doubles from the
# first to the last value, at most this many times in all; then everything stops.
up_restarts_max = 5
up_restart_backoff_min_s = 1
up_restart_backoff_max_s = 16
# After the banner, `billing up` asks /readyz this often whether events wait
# to be published, and says so when that changes.
up_events_check_interval_s = 10
# Ctrl-C: each process gets this long to stop after SIGTERM, then SIGKILL.
up_stop_grace_s = 20
