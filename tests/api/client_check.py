"""Uses a client generated from warren's /openapi.json by openapi-python-client, as a team
integrating with warren would: post a job, read it, list the queues, peek at and requeue a
dead letter, checking the typed results. Run by tests/generated_client.rs.

Environment: WARREN_CLIENT_DIR (the directory holding the generated `warren_client`
package), WARREN_BASE (http://127.0.0.1:PORT), WARREN_QUEUE (a queue whose handler fails
every job permanently, with max_attempts 1), WARREN_TOKEN (an admin token, or empty when
the server runs without tokens). Exits non-zero with a message on the first mismatch.
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.environ["WARREN_CLIENT_DIR"])

from warren_client import AuthenticatedClient, Client  # noqa: E402
from warren_client.api.dead_letters import peek, requeue  # noqa: E402
from warren_client.api.jobs import get_job, post_job  # noqa: E402
from warren_client.api.queues import list_queues  # noqa: E402
from warren_client.models import (  # noqa: E402
    DeadLetters,
    Job,
    JobRequest,
    JobStatus,
    Overview,
    Problem,
    ProblemType,
    RequeueRequest,
    RequeueResult,
)

BASE = os.environ["WARREN_BASE"]
QUEUE = os.environ["WARREN_QUEUE"]
TOKEN = os.environ.get("WARREN_TOKEN", "")

client = (
    AuthenticatedClient(base_url=BASE, token=TOKEN, raise_on_unexpected_status=True)
    if TOKEN
    else Client(base_url=BASE, raise_on_unexpected_status=True)
)


def expect(cond, what):
    if not cond:
        raise SystemExit(f"generated client: {what}")


def until(what, fetch, done, timeout=30.0):
    """fetch() until done(value) holds (polling a remote state the API has no push for)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        expect(time.monotonic() < deadline, f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.1)


# Post a job: 202, a typed Job, Location pointing at it.
resp = post_job.sync_detailed(
    QUEUE,
    client=client,
    body=JobRequest(payload={"customer": 42, "items": [1, 2]}, max_attempts=1),
    idempotency_key=f"client-{uuid.uuid4()}",
    x_correlation_id="generated-client",
)
expect(resp.status_code == 202, f"POST job answered {resp.status_code}: {resp.content!r}")
job = resp.parsed
expect(isinstance(job, Job), f"POST job parsed as {type(job)}")
expect(job.queue == QUEUE and job.status == JobStatus.QUEUED, f"posted job {job}")
expect(job.correlation_id == "generated-client", f"correlation id {job.correlation_id}")
expect(resp.headers["location"] == f"/v1/jobs/{job.id}", f"Location {resp.headers}")

# Read it until its handler has failed it for good.
dead = until(
    "the job's status",
    lambda: get_job.sync(str(job.id), client=client),
    lambda j: isinstance(j, Job) and j.status == JobStatus.DEAD,
)
expect(dead.id == job.id and dead.attempts == 1, f"dead job {dead}")
expect(isinstance(dead.last_error, str) and dead.last_error, f"last_error {dead.last_error!r}")

# An unknown job is a typed problem.
missing = get_job.sync_detailed(str(uuid.uuid4()), client=client)
expect(missing.status_code == 404, f"unknown job answered {missing.status_code}")
expect(isinstance(missing.parsed, Problem), f"unknown job parsed as {type(missing.parsed)}")
expect(missing.parsed.type_ == ProblemType.UNKNOWN_JOB, f"problem type {missing.parsed.type_}")

# The queue overview shows the dead letter.
overview = until(
    "the queue overview",
    lambda: list_queues.sync(client=client),
    lambda o: isinstance(o, Overview)
    and any(q.queue == QUEUE and q.dead == 1 for q in o.queues),
)
entry = next(q for q in overview.queues if q.queue == QUEUE)
expect(entry.dlq == f"{QUEUE}.dlq", f"overview entry {entry}")

# Peek at it, then requeue it: it runs again.
letters = peek.sync(QUEUE, client=client, limit=10)
expect(isinstance(letters, DeadLetters) and letters.depth == 1, f"peek {letters}")
expect(letters.dead_letters[0].id == str(job.id), f"dead letter {letters.dead_letters[0]}")
moved = requeue.sync(QUEUE, client=client, body=RequeueRequest(limit=10))
expect(isinstance(moved, RequeueResult) and moved.moved == 1 and moved.kept == 0, f"requeue {moved}")
# The requeued job runs again (and fails again: a later finished_at, back in the DLQ).
until(
    "the requeued job",
    lambda: get_job.sync(str(job.id), client=client),
    lambda j: isinstance(j, Job) and j.status == JobStatus.DEAD and j.finished_at > dead.finished_at,
)
until(
    "the DLQ after the requeued job failed again",
    lambda: peek.sync(QUEUE, client=client, limit=1),
    lambda d: isinstance(d, DeadLetters) and d.depth == 1,
)
print("generated client: ok")
