#!/bin/sh
# echo.sh: a handler that copies stdin to stdout, for tests.
#
# The job's payload becomes its result (warren trims one trailing newline
# and keeps at most 64 KiB). Always exits 0 unless reading or writing fails.
# Needs only POSIX sh and coreutils.
set -eu

exec cat
