#!/usr/bin/env bash
# Memory per held session: starts "smtpkit serve --discard" and the go-smtp
# baseline, holds N sessions open on each (after EHLO, then inside DATA) with
# bench/sessionmem.py, and prints the RSS growth per session. This isolates
# what a session costs from the executable's own pages, which peak RSS in
# bench/run.sh also counts.
#
#   bench/sessionmem.sh          # N=500
#   N=1000 bench/sessionmem.sh
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
N=${N:-500}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/smtpkit-sessionmem.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
go build -o "$WORK/smtpkit" ./cmd/smtpkit
(cd bench/gosmtp && go build -mod=mod -o "$WORK/gosmtp" .)

printf '%-8s %-5s %6s %10s %10s %12s\n' server stage n "RSS before" "RSS after" "KB/session"
for impl in smtpkit gosmtp; do
  for stage in idle data; do
    port=$((47000 + RANDOM % 3000))
    while [ -n "$(ss -Htan "( sport = :$port or dport = :$port )")" ]; do port=$((port + 1)); done
    if [ "$impl" = smtpkit ]; then
      "$WORK/smtpkit" serve --listen "127.0.0.1:$port" --discard --max-conns -1 --max-conns-per-ip -1 \
        --log-level warn --data "$WORK/data" 2>"$WORK/log" &
    else
      "$WORK/gosmtp" --listen "127.0.0.1:$port" --discard 2>"$WORK/log" &
    fi
    pid=$!
    for _ in $(seq 1 100); do
      [ -n "$(ss -Hltn "sport = :$port")" ] && break
      sleep 0.05
    done
    read -r st n before after per < <(python3 bench/sessionmem.py "$port" "$N" "$pid" "$stage")
    printf '%-8s %-5s %6s %7s kB %7s kB %12s\n' "$impl" "$st" "$n" "$before" "$after" "$per"
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
  done
done
