#!/bin/sh
# report.sh: handler of the sample `exec` queue; does visible work per job.
#
# Reads the job's JSON payload from stdin and writes a report file
#   ${WARREN_REPORT_DIR:-out/reports}/<WARREN_JOB_ID>.txt
# (relative to the current directory, which warren sets to the directory of
# queues.toml) holding the job id, queue, attempt, UTC time, payload size in
# bytes, SHA-256 of the payload and the payload itself. The file is written
# to a temporary name and renamed, so readers never see half a report.
# On success it prints one line of JSON on stdout, kept as the job's result:
#   {"report":"<path>","bytes":N,"sha256":"<hex>"}
#
# Payloads containing "fail": true are rejected: a reason goes to stderr and
# the exit status is 65 (EX_DATAERR from sysexits.h), which warren treats as
# a permanent failure and dead-letters at once (a way to demo dead letters).
# Other failures (e.g. a full disk) exit with other codes and are retried.
#
# Environment (set by warren): WARREN_JOB_ID, WARREN_QUEUE, WARREN_ATTEMPT.
# Optional: WARREN_REPORT_DIR. Needs only POSIX sh and coreutils.
set -eu

EX_DATAERR=65

: "${WARREN_JOB_ID:?WARREN_JOB_ID is not set (this script is run by warren)}"
queue="${WARREN_QUEUE:-unknown}"
attempt="${WARREN_ATTEMPT:-unknown}"
dir="${WARREN_REPORT_DIR:-out/reports}"

# The job id becomes a file name: allow only UUID characters.
case "$WARREN_JOB_ID" in
  '' | *[!0-9A-Za-z-]*)
    printf 'report.sh: job id %s is not a UUID\n' "$WARREN_JOB_ID" >&2
    exit "$EX_DATAERR"
    ;;
esac

payload=""
tmp_report=""
cleanup() {
  if [ -n "$payload" ]; then rm -f -- "$payload"; fi
  if [ -n "$tmp_report" ]; then rm -f -- "$tmp_report"; fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

payload="$(mktemp)"
cat >"$payload"

if grep -q '"fail"[[:space:]]*:[[:space:]]*true' "$payload"; then
  echo 'report.sh: the payload asks to fail ("fail": true); rejecting it permanently' >&2
  exit "$EX_DATAERR"
fi

bytes="$(wc -c <"$payload" | tr -d '[:space:]')"
sha256="$(sha256sum <"$payload" | cut -d ' ' -f 1)"
now="$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
report="$dir/$WARREN_JOB_ID.txt"

mkdir -p -- "$dir"
tmp_report="$(mktemp "$dir/.$WARREN_JOB_ID.XXXXXX")"
{
  printf 'job:     %s\n' "$WARREN_JOB_ID"
  printf 'queue:   %s\n' "$queue"
  printf 'attempt: %s\n' "$attempt"
  printf 'time:    %s\n' "$now"
  printf 'bytes:   %s\n' "$bytes"
  printf 'sha256:  %s\n' "$sha256"
  printf 'payload:\n'
  cat -- "$payload"
  printf '\n'
} >"$tmp_report"
chmod 0644 -- "$tmp_report"
mv -f -- "$tmp_report" "$report"
tmp_report=""

# JSON-escape the path (backslashes and double quotes; no control characters
# can come from the job id, and a report dir with them is not supported).
json_path="$(printf '%s' "$report" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
printf '{"report":"%s","bytes":%s,"sha256":"%s"}\n' "$json_path" "$bytes" "$sha256"
