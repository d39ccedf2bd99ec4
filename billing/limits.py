"""Every named limit of the service, with its unit in its name, in one place."""

amount_min = 1
amount_max = 10**15
overdraft_limit_max = 10**15
identifier_length_max = 64
identifier_pattern = r"^[A-Za-z0-9._:-]{1,64}\Z"

page_size_default = 100
page_size_max = 500

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
lock_retry_backoff_min_s = 1
lock_retry_backoff_max_s = 30
lock_retries_max = 50
# How often a capture or release chooses its locks again when its hold was
# created between the choice and the locking.
lock_set_attempts_max = 3

# A task must finish well inside RabbitMQ's consumer timeout (30 minutes by
# default), so a hung task is killed long before the broker gives up on it.
task_time_limit_s = 120
task_soft_time_limit_s = 90

# An accepted operation still pending after this long is enqueued again by
# the recovery sweep; an unpublished outcome is republished after this long.
pending_resend_after_s = 30
outbox_republish_after_s = 10
sweep_batch_size_max = 1_000
outbox_publish_batch_max = 500

# How often beat runs each periodic job. Expiry runs every second so a hold
# is released well within the contract's 5 seconds of its expires_at.
hold_expiry_interval_s = 1
outbox_relay_interval_s = 2
pending_sweep_interval_s = 10

# The most operations one batch request (or one ledger task) carries.
batch_size_max = 1_000
# The most operations one ledger transaction applies: a task applies its own
# and takes along the oldest other pending ones up to this many. About two
# advisory locks per transfer, well inside PostgreSQL's default lock table.
operations_per_transaction_max = 500
# A transaction takes along only operations accepted this recently. Every
# completed operation leaves a dead entry in the index of pending ones until
# vacuum comes; read from the index's start, the take-along visited all of
# them (2 ms a call after 30 s at 500 operations/s, and growing). An older
# pending operation is applied by its own task, or sent again by the sweep.
take_along_window_s = 5
# An API process records and enqueues a request's operation at once when it
# is not already doing so for others; the requests that arrive meanwhile go
# together in the next transaction and ledger task, up to this many.
enqueue_group_size_max = 500

# How long a burst of events waits for the broker's confirms, and a new
# publisher connection for the broker to answer, before they count as failed.
event_confirm_timeout_s = 10
broker_connect_timeout_s = 2

# `billing dead-letters` holds every message it has looked at unacknowledged
# until the run ends (so it never sees one twice and loses none if it dies),
# so one run looks at no more than this many messages.
dead_letter_scan_max = 10_000
dead_letter_list_default = 100
dead_letter_body_preview_chars = 200
dead_letter_confirm_timeout_s = 30
dead_letter_progress_every = 100
dead_letter_give_back_wait_max_s = 5
