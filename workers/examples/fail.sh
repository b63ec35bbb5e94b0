#!/bin/sh
# fail.sh: a handler that always fails in a retryable way, for tests and
# demos of retries and backoff.
#
# Reads (and discards) the payload from stdin, prints a message naming the
# attempt on stderr and exits 1. Any exit status other than 0 and 65 makes
# warren retry the job until the queue's max_attempts, then dead-letter it.
# Needs only POSIX sh and coreutils.
set -eu

cat >/dev/null
printf 'fail.sh: simulated failure of job %s on attempt %s of %s\n' \
  "${WARREN_JOB_ID:-?}" "${WARREN_ATTEMPT:-?}" "${WARREN_MAX_ATTEMPTS:-?}" >&2
exit 1
