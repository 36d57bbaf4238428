#!/usr/bin/env bash
# Side-by-side throughput benchmark: "smtpkit serve" against a minimal
# github.com/emersion/go-smtp server (bench/gosmtp) doing the same work, both
# driven by Postfix's smtp-source on loopback.
#
# Cells: mode {discard, maildir (fsync)} x sessions {1,16,128}
#        x size {1 KiB, 100 KiB} x {one message per connection, many (-d)}.
# Each server runs as a fresh process per cell, so its CPU time and its peak
# RSS (VmHWM) are that cell's alone. CPU is the server's own utime+stime from
# /proc/PID/stat, read before and after the load (the load generator shares
# the 2 cores and is not counted).
#
# A run fails (rather than posting a fast number) when smtp-source exits
# non-zero, when its DATA counter is short, when the server read fewer body
# bytes than were sent (/proc/PID/io rchar), when the Maildir holds a
# different number of files than were sent, or when go-smtp's own count is
# short.
#
# Usage (from anywhere):
#   bench/run.sh                 # full matrix, ~25 minutes on a quiet machine; bench/results/latest.md
#   QUICK=1 bench/run.sh         # 1 and 128 sessions, fewer messages; bench/results/quick.md
#   MODES=discard SESSIONS="16" SIZES=1024 CONNS=many bench/run.sh   # a subset
#   SCALE=2 bench/run.sh         # twice the messages per cell
#   REPS=5 bench/run.sh          # runs per server per cell (default 3; the table shows medians)
#   OUT=/tmp/x.md bench/run.sh   # write the table elsewhere
#   SMTPKIT_BIN=/tmp/smtpkit-branch bench/run.sh   # measure another build of smtpkit
#   SERVER_CPUS=1 CLIENT_CPUS=0 bench/run.sh        # pin server and smtp-source (taskset)
# Environment: BENCH_TMPDIR (default /var/tmp) holds the per-cell Maildirs;
# put it on the disk you want to measure. Every cell gets a fresh Maildir, and
# all of them are deleted when the run ends, not after each cell: on ext4
# without a journal, freed inodes are skipped by the allocator for 60-360 s
# (fs/ext4/ialloc.c recently_deleted()), so deleting one cell's files makes
# file creation in the next cells several times more expensive. For the same
# reason, leave a few minutes between a run and anything that deleted many
# files on that file system (such as the end of the previous run).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
SCALE=${SCALE:-1}
REPS=${REPS:-3}
MODES=${MODES:-"discard maildir"}
if [ "$QUICK" = 1 ]; then
  SESSIONS=${SESSIONS:-"1 128"}
  SCALE=${SCALE_QUICK:-0.25}
  REPS=${REPS_QUICK:-1}
  OUT=${OUT:-$ROOT/bench/results/quick.md}
else
  SESSIONS=${SESSIONS:-"1 16 128"}
  OUT=${OUT:-$ROOT/bench/results/latest.md}
fi
SIZES=${SIZES:-"1024 102400"}
CONNS=${CONNS:-"one many"}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
# SERVER_CPUS and CLIENT_CPUS (taskset lists, e.g. 1 and 0) pin the server
# and smtp-source; empty means the scheduler places them.
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
SERVER_PIN=()
CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
PER_CONN=500 # messages per connection per round in "many" mode: below smtpkit's MaxTransactions (1000)

for t in "$SMTP_SOURCE" go ss awk; do
  command -v "$t" >/dev/null || { echo "run.sh: $t not found (smtp-source is in Debian's postfix package)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/smtpkit-bench.XXXXXX")
: >"$WORK/pids" # servers started and not yet stopped, one PID a line
DATA_ROOT=""
cleanup() {
  local p
  while read -r p; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done <"$WORK/pids"
  rm -rf "$WORK"
  if [ -n "$DATA_ROOT" ]; then
    echo "== deleting the Maildirs in $DATA_ROOT" >&2
    rm -rf "$DATA_ROOT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building into $WORK" >&2
if [ -n "${SMTPKIT_BIN:-}" ]; then
  cp "$SMTPKIT_BIN" "$WORK/smtpkit" # a build to compare, e.g. from a branch
else
  go build -o "$WORK/smtpkit" ./cmd/smtpkit
fi
(cd bench/gosmtp && go build -mod=mod -o "$WORK/gosmtp" .)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- . 2>/dev/null | grep -v '^?? bench/' || true)" ]; then REV="$REV+dirty"; fi
[ -n "${SMTPKIT_BIN:-}" ] && REV="$SMTPKIT_BIN"
. bench/lib.sh

# count MODE SIZE CONN SESSIONS: messages for one cell, sized so that the
# faster server takes about 2-6 seconds on a 2-core VM (see BENCHMARKS.md).
count() {
  local mode=$1 size=$2 conn=$3 s=$4 n
  case "$mode/$size/$conn" in
    discard/1024/one)     n=20000 ;;
    discard/1024/many)    n=60000 ;;
    discard/102400/one)   n=8000 ;;
    discard/102400/many)  n=16000 ;;
    maildir/1024/one)     n=6000 ;;
    maildir/1024/many)    n=12000 ;;
    maildir/102400/one)   n=4000 ;;
    maildir/102400/many)  n=5000 ;;
  esac
  if [ "$s" = 1 ]; then n=$((n / 2)); fi # one session is slower everywhere
  n=$(awk -v n="$n" -v k="$SCALE" 'BEGIN { n = int(n * k); if (n < 200) n = 200; print n }')
  if [ "$conn" = many ] && [ "$n" -lt $((s * 10)) ]; then n=$((s * 10)); fi
  echo "$n"
}

# free_port sets PORT to a loopback TCP port no socket uses (not even one in
# TIME_WAIT from an earlier cell). Ports 20001-40000 are below Linux's
# default ephemeral range, so smtp-source's own sockets do not take them.
NEXT_PORT=$((20000 + RANDOM % 20000))
free_port() {
  local i
  for i in $(seq 1 500); do
    NEXT_PORT=$((NEXT_PORT + 1))
    if [ "$NEXT_PORT" -gt 40000 ]; then NEXT_PORT=20001; fi
    if [ -z "$(ss -Htan "( sport = :$NEXT_PORT or dport = :$NEXT_PORT )")" ]; then
      PORT=$NEXT_PORT
      return 0
    fi
  done
  echo "run.sh: no free port" >&2
  return 1
}

# busy_ticks: CPU time that processes used on the whole machine (user, nice,
# system; interrupts are left out, as they serve the server's own I/O).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 }' /proc/stat; }
# kthread_ticks: CPU time of kernel threads (ksoftirqd, kworkers flushing the
# Maildir, ...), which work for the server's sockets and files, not for
# another job.
kthread_ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{ sub(/^.*\) /, ""); if ($2 == 2) t += $12 + $13 } END { print t + 0 }'; }


rchar() { awk '/^rchar:/ { print $2 }' "/proc/$1/io"; }

# start_server IMPL MODE PORT DATADIR: starts the server, sets SERVER_PID.
start_server() {
  local impl=$1 mode=$2 port=$3 dir=$4 args=()
  case "$impl/$mode" in
    smtpkit/discard) args=("$WORK/smtpkit" serve --listen "127.0.0.1:$port" --discard) ;;
    smtpkit/maildir) args=("$WORK/smtpkit" serve --listen "127.0.0.1:$port" --data "$dir") ;;
    gosmtp/discard) args=("$WORK/gosmtp" --listen "127.0.0.1:$port" --discard) ;;
    gosmtp/maildir) args=("$WORK/gosmtp" --listen "127.0.0.1:$port" --data "$dir") ;;
  esac
  if [ "$impl" = smtpkit ]; then
    args+=(--max-conns -1 --max-conns-per-ip -1 --log-level warn --hostname bench.example)
  else
    args+=(--hostname bench.example)
  fi
  "${SERVER_PIN[@]}" "${args[@]}" 2>"$WORK/server.log" &
  SERVER_PID=$!
  echo "$SERVER_PID" >>"$WORK/pids"
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "run.sh: $impl exited at start:" >&2
      cat "$WORK/server.log" >&2
      return 1
    fi
    [ -n "$(ss -Hltn "sport = :$port")" ] && return 0
    sleep 0.05
  done
  echo "run.sh: $impl did not listen on $port" >&2
  return 1
}

stop_server() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sed -i "/^$pid\$/d" "$WORK/pids"
}

# run_cell IMPL MODE SESSIONS SIZE CONN N PORT: prints "msgs/s cpu_s hwm_kb other_s",
# where other_s is the CPU time that processes other than the server,
# smtp-source and kernel threads used during the run: other jobs on the
# machine.
run_cell() {
  local impl=$1 mode=$2 s=$3 size=$4 conn=$5 n=$6 port=$7 dir=""
  if [ "$mode" = maildir ]; then
    dir=$(mktemp -d "$DATA_ROOT/cell.XXXXXX")
  fi
  start_server "$impl" "$mode" "$port" "$dir"
  local pid=$SERVER_PID
  local dflag=() per=$n
  if [ "$conn" = many ]; then
    dflag=(-d)
    per=$((s * PER_CONN))
  fi
  local c0 r0 t0 t1 c1 r1 b0 b1 k0 k1 q0 q1 sent=0 m rc got
  times >"$WORK/times.0"
  b0=$(busy_ticks)
  q0=$(kthread_ticks)
  c0=$(cpu_ticks "$pid")
  r0=$(rchar "$pid")
  t0=$(date +%s%N)
  while [ "$sent" -lt "$n" ]; do
    m=$((n - sent))
    [ "$m" -gt "$per" ] && m=$per
    rc=0
    "${CLIENT_PIN[@]}" "$SMTP_SOURCE" -c "${dflag[@]}" -s "$s" -l "$size" -m "$m" -M client.example \
      -f sender@client.example -t rcpt@bench.example "127.0.0.1:$port" >"$WORK/source.out" 2>"$WORK/source.err" || rc=$?
    got=$(tr '\r' '\n' <"$WORK/source.out" | awk '/^[0-9]+$/ { n = $1 } END { print n + 0 }')
    if [ "$rc" != 0 ] || [ "$got" != "$m" ]; then
      echo "run.sh: $impl $mode s=$s size=$size $conn: smtp-source rc=$rc, $got of $m messages" >&2
      cat "$WORK/source.err" "$WORK/server.log" >&2
      stop_server "$pid"
      return 1
    fi
    sent=$((sent + m))
  done
  t1=$(date +%s%N)
  c1=$(cpu_ticks "$pid")
  b1=$(busy_ticks)
  q1=$(kthread_ticks)
  times >"$WORK/times.1"
  k0=$(child_cpu "$WORK/times.0")
  k1=$(child_cpu "$WORK/times.1")
  r1=$(rchar "$pid")
  local hwm
  hwm=$(hwm_kb "$pid")
  stop_server "$pid"
  if [ $((r1 - r0)) -lt $((n * size)) ]; then
    echo "run.sh: $impl $mode s=$s size=$size $conn: server read $((r1 - r0)) bytes, sent at least $((n * size))" >&2
    return 1
  fi
  if [ "$impl" = gosmtp ]; then
    local counted
    counted=$(sed -n 's/^gosmtp: messages=\([0-9]*\).*/\1/p' "$WORK/server.log")
    if [ "$counted" != "$n" ]; then
      echo "run.sh: gosmtp counted ${counted:-nothing} of $n messages" >&2
      cat "$WORK/server.log" >&2
      return 1
    fi
  fi
  if [ "$mode" = maildir ]; then
    local files tmpfiles
    files=$(find "$dir/maildir/new" -type f | wc -l)
    tmpfiles=$(find "$dir/maildir/tmp" -type f | wc -l)
    sync # write back the directories' metadata now rather than during the next cell
    if [ "$files" != "$n" ] || [ "$tmpfiles" != 0 ]; then
      echo "run.sh: $impl maildir s=$s size=$size $conn: $files files in new/ and $tmpfiles in tmp/, want $n and 0" >&2
      return 1
    fi
  fi
  awk -v n="$n" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v tck="$TCK" -v h="$hwm" \
    -v b0="$b0" -v b1="$b1" -v k0="$k0" -v k1="$k1" -v q0="$q0" -v q1="$q1" \
    'BEGIN { printf "%.1f %.3f %d %.3f\n", n / ((t1 - t0) / 1e9), (c1 - c0) / tck, h, (b1 - b0 - (c1 - c0) - (q1 - q0)) / tck - (k1 - k0) }'
}

if [[ " $MODES " == *" maildir "* ]]; then
  DATA_ROOT=$(mktemp -d "$BENCH_TMPDIR/smtpkit-bench-data.XXXXXX")
  need_kb=0
  for size in $SIZES; do for conn in $CONNS; do for s in $SESSIONS; do
    n=$(count maildir "$size" "$conn" "$s")
    need_kb=$((need_kb + n * (size / 1024 + 8) * 2 * REPS))
  done; done; done
  free_kb=$(df -Pk "$DATA_ROOT" | awk 'NR == 2 { print $4 }')
  if [ "$free_kb" -lt $((need_kb + need_kb / 4)) ]; then
    echo "run.sh: the Maildirs need about $((need_kb / 1024)) MiB in $BENCH_TMPDIR, only $((free_kb / 1024)) MiB free" >&2
    exit 1
  fi
fi

mkdir -p "$(dirname "$OUT")"
TSV="${OUT%.md}.tsv"
printf 'mode\tsessions\tsize\tconn\tmessages\timpl\tmsgs_per_s\tcpu_s\thwm_kb\tother_cpu_s\tattempt\n' >"$TSV"
DISTURBED=0

fmt_size() { if [ "$1" -ge 1024 ]; then echo "$(($1 / 1024)) KiB"; else echo "$1 B"; fi; }

{
  echo "<!-- generated by bench/run.sh; do not edit -->"
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), smtpkit $REV, $(go version | awk '{print $3}'), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)."
  echo "QUICK=$QUICK SCALE=$SCALE REPS=$REPS SERVER_CPUS=${SERVER_CPUS:-any} CLIENT_CPUS=${CLIENT_CPUS:-any}. Maildir in $BENCH_TMPDIR ($(df -P "$BENCH_TMPDIR" | awk 'NR == 2 { print $1 }'))."
  echo
  echo "| mode | sessions | size | msgs/conn | messages | smtpkit msg/s | go-smtp msg/s | ratio | smtpkit msg/CPU-s | go-smtp msg/CPU-s | ratio | smtpkit peak RSS | go-smtp peak RSS |"
  echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$OUT"

cell=0
for mode in $MODES; do
  for size in $SIZES; do
    for conn in $CONNS; do
      for s in $SESSIONS; do
        n=$(count "$mode" "$size" "$conn" "$s")
        declare -A RATES=() PERCPU=() HWMS=()
        MARK=""
        for rep in $(seq 1 "$REPS"); do
          order="smtpkit gosmtp"
          [ $((cell % 2)) = 1 ] && order="gosmtp smtpkit" # alternate so drift does not favour one side
          cell=$((cell + 1))
          for impl in $order; do
            echo "== $mode s=$s size=$size $conn n=$n $impl (run $rep of $REPS)" >&2
            for attempt in $(seq 1 "$ATTEMPTS"); do
              wait_quiet
              free_port
              res=$(run_cell "$impl" "$mode" "$s" "$size" "$conn" "$n" "$PORT")
              read -r rate cpu hwm other <<<"$res"
              echo "   $rate msg/s, $cpu CPU-s, VmHWM $hwm kB; other processes: $other CPU-s" >&2
              printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$s" "$size" "$conn" "$n" "$impl" "$rate" "$cpu" "$hwm" "$other" "$attempt" >>"$TSV"
              # Another job took CPU during the run: measure again.
              if awk -v o="$other" -v r="$rate" -v n="$n" -v m="$OTHER_MAX" 'BEGIN { exit !(o / (n / r) > m) }'; then
                if [ "$attempt" -lt "$ATTEMPTS" ]; then
                  echo "   disturbed by other processes; again" >&2
                  continue
                fi
                DISTURBED=$((DISTURBED + 1))
                MARK=" (disturbed)"
              fi
              break
            done
            RATES[$impl]+="$rate "
            PERCPU[$impl]+="$(awk -v n="$n" -v c="$cpu" 'BEGIN { printf "%.1f", (c > 0 ? n / c : 0) }') "
            HWMS[$impl]+="$hwm "
          done
        done
        per=$([ "$conn" = one ] && echo 1 || echo many)
        modecol="$mode$MARK"
        awk -v mode="$modecol" -v s="$s" -v size="$(fmt_size "$size")" -v per="$per" -v n="$n" \
          -v kr="${RATES[smtpkit]}" -v kp="${PERCPU[smtpkit]}" -v kh="${HWMS[smtpkit]}" \
          -v gr="${RATES[gosmtp]}" -v gp="${PERCPU[gosmtp]}" -v gh="${HWMS[gosmtp]}" '
          function med(str,   a, k, i, j, t) {
            k = split(str, a, " ")
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
          }
          function mx(str,   a, k, i, m) { k = split(str, a, " "); m = 0; for (i = 1; i <= k; i++) if (a[i] + 0 > m) m = a[i] + 0; return m }
          BEGIN {
            r1 = med(kr); r2 = med(gr); p1 = med(kp); p2 = med(gp); h1 = mx(kh); h2 = mx(gh)
            printf "| %s | %d | %s | %s | %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %.1f MiB | %.1f MiB |\n",
              mode, s, size, per, n, r1, r2, (r2 > 0 ? r1 / r2 : 0), p1, p2, (p2 > 0 ? p1 / p2 : 0), h1 / 1024, h2 / 1024
          }' >>"$OUT"
        unset RATES PERCPU HWMS
      done
    done
  done
done
{
  echo
  echo "msg/s and msg/CPU-s are medians of $REPS runs per server (each a fresh process); peak RSS is the largest VmHWM of those runs."
  echo "CPU-s is the server process's own utime+stime; smtp-source's CPU is not counted."
  echo "Runs disturbed by other processes (more than $OTHER_MAX CPUs on average) after $ATTEMPTS attempts: $DISTURBED, in the cells marked (disturbed). Raw data: $(basename "$TSV")."
} >>"$OUT"
echo >&2
cat "$OUT"
