"""Every named limit of the client, with its unit in its name.

The client imports nothing of the service (it is a client of the public
interfaces only), so it keeps its own limits here rather than in
billing/limits.py; the two that mirror the service's contract say so.
"""

# One HTTP request: connecting and reading the answer, on top of any ?wait.
request_timeout_s = 10.0
# A request that meets a connection error, a timeout or a 503 is sent again,
# with the same operation_id, up to this many attempts in all; the pause
# doubles from the initial to the maximum (about 16 s of pauses in all),
# long enough for a broker or database restart.
request_attempts_max = 8
retry_backoff_initial_s = 0.25
retry_backoff_max_s = 4.0

# The contract's longest long-poll of GET /v1/operations/{id}?wait=N.
operation_wait_max_s = 30
wait_default_s = 30.0

# The contract's default and largest page of entries and holds.
page_size_default = 100
page_size_max = 500

# Events the broker sends ahead of the caller's handler, unacknowledged.
events_prefetch_count = 32
