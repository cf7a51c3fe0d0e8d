#!/bin/sh
# One bench.py scenario against forkchat, ngIRCd and InspIRCd, alternated
# (forkchat, ngircd, inspircd, forkchat, ...), a fresh server for each run,
# each run under `flock /tmp/bench.lock` (one benchmark on the machine at a
# time).  forkchat is started by bench.py itself; the others by run.sh.
#
#   scripts/reference/compare.sh ROUNDS OUT.jsonl BENCH-ARGS...
#
# e.g. scripts/reference/compare.sh 2 /tmp/ref.jsonl --scenario latency -n 100
# Extra arguments for one server only: FORKCHAT_ARGS, NGIRCD_ARGS,
# INSPIRCD_ARGS (NGIRCD_ARGS="--in-flight 10" where 1000 clients must join:
# its listen backlog is 10).  PYTHON: the interpreter with psutil (python3).
# BENCH_LOCK: the lock file (/tmp/bench.lock).
# Must be run as root (run.sh starts the servers as user irc).  Exits 1 if
# any run failed (each said why), 2 on wrong arguments or an OUT it cannot write.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bench="$here/../bench.py"
python=${PYTHON:-python3}
lock=${BENCH_LOCK:-/tmp/bench.lock}
if [ $# -lt 3 ]; then
    echo "usage: $0 ROUNDS OUT.jsonl BENCH-ARGS..." >&2; exit 2
fi
rounds=$1; out=$2; shift 2
case $rounds in
    ''|*[!0-9]*|0|0*) echo "$0: ROUNDS is a number of rounds above 0, not '$rounds'" >&2; exit 2 ;;
esac
# Before any run, not three usage texts of bench.py after the servers started
if ! (: >> "$out") 2> /dev/null; then
    echo "$0: cannot write $out" >&2; exit 2
fi
work=$(mktemp -d /tmp/forkchat-compare-XXXXXX)
chmod 711 "$work"
pid=            # the reference server running now, if any
runs=0
failed=0

stop_server() {
    [ -n "$pid" ] || return 0
    kill "$pid" 2> /dev/null || true
    tries=0
    while kill -0 "$pid" 2> /dev/null && [ $tries -lt 50 ]; do
        sleep 0.1; tries=$((tries + 1))
    done
    kill -9 "$pid" 2> /dev/null || true
    pid=
}
# run.sh starts the server in a session of its own, which Ctrl+C does not
# reach: stop it here, whatever ends this script
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

round=0
while [ $round -lt "$rounds" ]; do
    round=$((round + 1))
    for kind in forkchat ngircd inspircd; do
        echo "$(date -u +%T) round $round: $kind" >&2
        runs=$((runs + 1))
        if [ $kind = forkchat ]; then
            # shellcheck disable=SC2086  # the *_ARGS are lists of words
            flock "$lock" "$python" "$bench" "$@" ${FORKCHAT_ARGS:-} --out "$out" \
                > /dev/null || { echo "$0: bench.py failed against forkchat" >&2
                                 failed=$((failed + 1)); }
            continue
        fi
        if ! started=$("$here/run.sh" $kind "$work/$kind-$round"); then
            echo "$0: $kind did not start (run.sh said why above)" >&2
            failed=$((failed + 1))
            continue
        fi
        port=${started% *}; pid=${started#* }
        [ $kind = ngircd ] && extra=${NGIRCD_ARGS:-} || extra=${INSPIRCD_ARGS:-}
        # shellcheck disable=SC2086
        flock "$lock" "$python" "$bench" --attach "127.0.0.1:$port" --pid "$pid" \
            "$@" $extra --out "$out" > /dev/null \
            || { echo "$0: bench.py failed against $kind" >&2; failed=$((failed + 1)); }
        stop_server
    done
done
if [ $failed -gt 0 ]; then
    echo "$0: $failed of $runs runs failed" >&2; exit 1
fi
