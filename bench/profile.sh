#!/usr/bin/env bash
# Profiles smtpkit in one benchmark cell: runs bench/harness/profserve (the
# daemon's own code under runtime/pprof) and drives it with smtp-source, then
# prints the top of the CPU profile. Profiles are left in bench/results/.
#
#   bench/profile.sh                                  # discard, 128 sessions, 1 KiB, one message per connection
#   MODE=maildir SESSIONS=16 SIZE=1024 MANY=1 N=8000 bench/profile.sh
#   go tool pprof -top -cum bench/results/profile-cpu.prof
#   go tool pprof -sample_index=alloc_objects -top bench/results/profile-mem.prof
#
# The go-smtp baseline takes --cpuprofile too (bench/gosmtp), for comparing.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-discard}
SESSIONS=${SESSIONS:-128}
SIZE=${SIZE:-1024}
MANY=${MANY:-0}
N=${N:-30000}
OUTDIR=bench/results
mkdir -p "$OUTDIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/smtpkit-profile.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd bench/harness && go build -mod=mod -o "$WORK/profserve" ./profserve)

port=$((46000 + RANDOM % 4000))
while [ -n "$(ss -Htan "( sport = :$port or dport = :$port )")" ]; do port=$((port + 1)); done
args=(--listen "127.0.0.1:$port" --cpuprofile "$OUTDIR/profile-cpu.prof" --memprofile "$OUTDIR/profile-mem.prof")
if [ "$MODE" = discard ]; then
  args+=(--discard)
else
  args+=(--data "$WORK/data")
fi
"$WORK/profserve" "${args[@]}" 2>"$WORK/server.log" &
pid=$!
for _ in $(seq 1 100); do
  [ -n "$(ss -Hltn "sport = :$port")" ] && break
  sleep 0.05
done
dflag=()
[ "$MANY" = 1 ] && dflag=(-d)
# In -d mode every session's connection carries N/SESSIONS messages; keep
# that under the server's MaxTransactions (1000).
c0=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
t0=$(date +%s%N)
/usr/sbin/smtp-source "${dflag[@]}" -s "$SESSIONS" -l "$SIZE" -m "$N" -M client.example \
  -f sender@client.example -t rcpt@bench.example "127.0.0.1:$port"
t1=$(date +%s%N)
c1=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
kill -TERM "$pid"
wait "$pid" || true
pid=""
awk -v n="$N" -v t=$(((t1 - t0) / 1000000)) -v c=$((c1 - c0)) -v tck="$(getconf CLK_TCK)" \
  'BEGIN { printf "%d messages: %.0f msg/s, %.2f server CPU-s (%.0f msg/CPU-s; profiling adds overhead)\n", n, n / (t / 1000), c / tck, n / (c / tck) }'
go tool pprof -top -cum -nodecount=30 "$OUTDIR/profile-cpu.prof" 2>/dev/null | sed -n '4,40p'
