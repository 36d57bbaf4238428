#!/usr/bin/env bash
# Streams one large message (default 100 MB) into "smtpkit serve --discard"
# and reports how much the server's memory grew: VmRSS before, VmRSS after,
# and VmHWM (the peak) after. The target is a growth (peak minus before)
# under 8 MB. The server's read byte count (/proc/PID/io rchar) must cover
# the message, so a server that answers without reading cannot pass. The same is done for the go-smtp baseline (bench/gosmtp), and
# for both servers storing into a Maildir with fsync.
#
#   bench/bigmsg.sh                 # 100 MB
#   SIZE=200000000 bench/bigmsg.sh
#   MODES=discard bench/bigmsg.sh   # only the discarding servers
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

SIZE=${SIZE:-100000000}
MODES=${MODES:-"discard maildir"}
LIMIT_KB=$((8 * 1024))
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/smtpkit-bigmsg.XXXXXX")
: >"$WORK/pids"
cleanup() {
  local p
  while read -r p; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done <"$WORK/pids"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$WORK/smtpkit" ./cmd/smtpkit
(cd bench/gosmtp && go build -mod=mod -o "$WORK/gosmtp" .)
(cd bench/harness && go build -mod=mod -o "$WORK/bigmsg" ./bigmsg)

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

port=$((40001 + RANDOM % 10000))
fail=0
printf '%-8s %-8s %12s %12s %12s %12s  %s\n' server mode "RSS before" "RSS after" "peak (HWM)" "peak-before" result
for mode in $MODES; do
  for impl in smtpkit gosmtp; do
    port=$((port + 1))
    while [ -n "$(ss -Htan "( sport = :$port or dport = :$port )")" ]; do port=$((port + 1)); done
    dir=$(mktemp -d "$BENCH_TMPDIR/smtpkit-bigmsg-data.XXXXXX")
    case "$impl/$mode" in
      smtpkit/discard) args=("$WORK/smtpkit" serve --discard --log-level warn) ;;
      smtpkit/maildir) args=("$WORK/smtpkit" serve --data "$dir" --log-level warn) ;;
      gosmtp/discard) args=("$WORK/gosmtp" --discard) ;;
      gosmtp/maildir) args=("$WORK/gosmtp" --data "$dir") ;;
    esac
    "${args[@]}" --listen "127.0.0.1:$port" --max-size 200000000 --hostname bench.example 2>"$WORK/server.log" &
    pid=$!
    echo "$pid" >>"$WORK/pids"
    for _ in $(seq 1 100); do
      [ -n "$(ss -Hltn "sport = :$port")" ] && break
      sleep 0.05
    done
    sleep 0.5 # let the runtime settle after start
    before=$(kb "$pid" VmRSS)
    r0=$(awk '/^rchar:/ { print $2 }' "/proc/$pid/io")
    if ! out=$("$WORK/bigmsg" --addr "127.0.0.1:$port" --size "$SIZE" 2>&1); then
      echo "bigmsg against $impl $mode failed: $out" >&2
      cat "$WORK/server.log" >&2
      fail=1
    fi
    after=$(kb "$pid" VmRSS)
    hwm=$(kb "$pid" VmHWM)
    r1=$(awk '/^rchar:/ { print $2 }' "/proc/$pid/io")
    if [ $((r1 - r0)) -lt "$SIZE" ]; then
      echo "$impl $mode: server read only $((r1 - r0)) bytes" >&2
      fail=1
    fi
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    if [ "$mode" = maildir ]; then
      stored=$(find "$dir/maildir/new" -type f -size +$((SIZE / 1024))k | wc -l)
      if [ "$stored" != 1 ]; then
        echo "$impl maildir: $stored messages of at least $SIZE bytes stored, want 1" >&2
        fail=1
      fi
    fi
    rm -rf "$dir"
    grow=$((hwm - before))
    verdict="ok (< 8 MB)"
    if [ "$grow" -ge "$LIMIT_KB" ]; then
      verdict="OVER 8 MB"
      [ "$impl" = smtpkit ] && fail=1
    fi
    printf '%-8s %-8s %9d kB %9d kB %9d kB %9d kB  %s; %s\n' "$impl" "$mode" "$before" "$after" "$hwm" "$grow" "$verdict" "$out"
  done
done
exit $fail
