#!/usr/bin/env bash
# End-to-end relay throughput: "smtpkit serve --relay mx" against a private
# Postfix instance configured the same way, on loopback, both delivering to
# Postfix's smtp-sink. Postfix's smtp-source injects 1 KiB messages; a cell
# is timed from the start of the injection until the sink has counted every
# message and the relay's queue is empty.
#
# What runs (all on 127.0.0.1, high ports, fresh per cell unless said):
#   dnsd        bench/relay/dnsd (one for the whole run): MX for dst.test ->
#               mx.dst.test, A 127.0.0.1; AAAA/TXT/TLSA empty (no DANE,
#               no MTA-STS). Only smtpkit asks it; Postfix's transport map
#               names the sink by address.
#   smtp-sink   -c counters; the last "mesg=" must equal N exactly, else the
#               cell fails (fewer: lost; more: duplicated).
#   smtpkit     serve --relay mx --dns DNSD --mx-port SINKPORT, a fresh
#               --data dir, fsync on (the default), logs at warn.
#   Postfix     its own config dir, queue_directory and data_directory
#               (under BENCH_TMPDIR), inet_interfaces=127.0.0.1,
#               mynetworks=127.0.0.0/8, smtpd on a high port,
#               transport_maps "* smtp:[127.0.0.1]:SINKPORT", maillog_file
#               in the instance dir, otherwise Postfix 3.7 defaults (queue
#               files fsynced before 250, destination concurrency 20,
#               connection cache on demand, 100 processes per service
#               except smtpd: SMTPD_MAXPROC, default 200, so that 128
#               sessions do not queue for a process; see below).
#               master.cf has chroot off (Postfix's upstream default; Debian
#               turns it on, which needs a copy of /etc inside the queue).
#
# CPU per message: smtpkit's utime+stime (/proc/PID/stat). Postfix: master's
# utime+stime+cutime+cstime (children it reaped) plus every live child's
# utime+stime+cutime+cstime, read at the start and right before "postfix
# stop" (every Postfix daemon is a child of master). smtp-source,
# smtp-sink and dnsd are not counted for either; dnsd's CPU is reported on
# its own (a real deployment pays it in its resolver).
#
# Usage (from anywhere):
#   bench/relay/run.sh                     # 16 and 128 sessions, one message
#                                          # per connection and many (-d), 3 runs
#   QUICK=1 bench/relay/run.sh             # a few hundred messages, 1 run: smoke test
#   SYSTEMS=smtpkit SESSIONS=128 CONNS=one REPS=1 bench/relay/run.sh
#   N_SMTPKIT=20000 N_POSTFIX=8000 bench/relay/run.sh     # messages per cell (the defaults)
#   SMTPKIT_BIN=/tmp/smtpkit-branch bench/relay/run.sh    # another build
#   OUT=/tmp/x.md bench/relay/run.sh       # default bench/relay/results/latest.md
#   KEEP=1 bench/relay/run.sh              # keep the work dir (logs, queues)
# Environment: BENCH_TMPDIR (default /var/tmp; Postfix's maillog_file must
# be under /var) holds the spools, TIMEOUT (default 300 s) bounds each cell,
# QUIET_MAX/QUIET_WAIT/OTHER_MAX/ATTEMPTS as in bench/run.sh.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
REPS=${REPS:-3}
SYSTEMS=${SYSTEMS:-"smtpkit postfix"}
SESSIONS=${SESSIONS:-"16 128"}
CONNS=${CONNS:-"one many"}
SIZE=${SIZE:-1024}
# Messages per cell: each run takes about 4-7 s (smtpkit) and 10-12 s
# (Postfix) on a 2-core VM; the rates are steady well before that.
N_SMTPKIT=${N_SMTPKIT:-20000}
N_POSTFIX=${N_POSTFIX:-8000}
if [ "$QUICK" = 1 ]; then
  N_SMTPKIT=${N_QUICK:-400}
  N_POSTFIX=${N_QUICK:-400}
  REPS=${REPS_QUICK:-1}
  OUT=${OUT:-$ROOT/bench/relay/results/quick.md}
else
  OUT=${OUT:-$ROOT/bench/relay/results/latest.md}
fi
TIMEOUT=${TIMEOUT:-300}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}
# Messages per connection with -d (each smtp-source round sends
# SESSIONS x PER_CONN): the same for both systems whatever their N, and
# below smtpkit's limit of 1000 per connection.
PER_CONN=${PER_CONN:-50}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
POSTFIX=${POSTFIX:-/usr/sbin/postfix}
POSTQUEUE=${POSTQUEUE:-/usr/sbin/postqueue}
SINK_USER=${SINK_USER:-nobody} # smtp-sink refuses to run as root without -u
# smtpd processes (master.cf maxproc of the listener). Postfix's default,
# 100, is below 128 sessions, and then (Postfix 3.7.11 here) the excess
# connections make every smtpd wait about a second for its next client:
# about 110 msg/s instead of 500-700. smtpkit runs with --max-conns -1, so
# Postfix gets room for every session too.
SMTPD_MAXPROC=${SMTPD_MAXPROC:-200}
# Extra main.cf lines for Postfix (experiments only; the table notes them).
POSTFIX_MAIN_CF_EXTRA=${POSTFIX_MAIN_CF_EXTRA:-}

for t in "$SMTP_SOURCE" "$SMTP_SINK" "$POSTFIX" "$POSTQUEUE" go ss awk jq; do
  command -v "$t" >/dev/null || { echo "relay/run.sh: $t not found" >&2; exit 1; }
done

WORK=$(mktemp -d "$BENCH_TMPDIR/smtpkit-relay.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons (user postfix) walk into it
: >"$WORK/pids"     # processes started and not yet stopped
: >"$WORK/postfixes" # Postfix config dirs started and not yet stopped
cleanup() {
  local p d
  while read -r d; do
    [ -n "$d" ] && "$POSTFIX" -c "$d" stop >/dev/null 2>&1 || true
  done <"$WORK/postfixes"
  while read -r p; do
    [ -n "$p" ] && { kill -TERM "$p" 2>/dev/null; sleep 0.1; kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; } || true
  done <"$WORK/pids"
  if [ "$KEEP" = 1 ]; then
    echo "== kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building into $WORK" >&2
if [ -n "${SMTPKIT_BIN:-}" ]; then
  cp "$SMTPKIT_BIN" "$WORK/smtpkit"
else
  go build -o "$WORK/smtpkit" ./cmd/smtpkit
fi
(cd bench/relay/dnsd && go build -o "$WORK/dnsd" .)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- . 2>/dev/null | grep -v '^?? bench/' || true)" ]; then REV="$REV+dirty"; fi
[ -n "${SMTPKIT_BIN:-}" ] && REV="$SMTPKIT_BIN"
. bench/lib.sh
PF_VERSION=$(postconf -d -h mail_version 2>/dev/null || echo unknown)

# free_port sets PORT to a loopback port no TCP or UDP socket uses (not even
# in TIME_WAIT). 20001-40000 is below Linux's ephemeral range.
NEXT_PORT=$((20000 + RANDOM % 20000))
free_port() {
  local i
  for i in $(seq 1 500); do
    NEXT_PORT=$((NEXT_PORT + 1))
    if [ "$NEXT_PORT" -gt 40000 ]; then NEXT_PORT=20001; fi
    if [ -z "$(ss -Htuan "( sport = :$NEXT_PORT or dport = :$NEXT_PORT )")" ]; then
      PORT=$NEXT_PORT
      return 0
    fi
  done
  echo "relay/run.sh: no free port" >&2
  return 1
}

wait_listen() { # PORT PID NAME
  local i
  for i in $(seq 1 200); do
    if [ -n "$2" ] && ! kill -0 "$2" 2>/dev/null; then
      echo "relay/run.sh: $3 exited at start" >&2
      return 1
    fi
    [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.05
  done
  echo "relay/run.sh: $3 did not listen on $1" >&2
  return 1
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sed -i "/^$pid\$/d" "$WORK/pids"
}

busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# tree_ticks PID: the process's utime+stime+cutime+cstime plus the same of
# each live child (for Postfix's master and its daemons).
tree_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$1" '
    { pid = $1; sub(/^[0-9]+ \(.*\) /, ""); if (pid == r || $2 == r) t += $12 + $13 + $14 + $15 }
    END { print t + 0 }'
}
# proc_snap FILE: "pid ppid own children" CPU ticks of every process.
# snap_delta FILE0 FILE1 RELAY_PID: "kthreads others" ticks in between.
# kthreads: kernel threads (children of kthreadd, pid 2) present both
# times (kworkers come and go): writeback, journal and softirq work that
# the relays cause but no user process is charged for; reported on its
# own, counted for neither relay. others: processes that are neither this
# script's descendants (smtp-source, smtp-sink, dnsd, smtpkit) nor Postfix
# (RELAY_PID and its children), nor kernel threads: other jobs on the
# machine, whose CPU makes a run "disturbed".
proc_snap() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk '
    { pid = $1; sub(/^[0-9]+ \(.*\) /, ""); print pid, $2, $12 + $13, $14 + $15 }' >"$1"
}
snap_delta() {
  awk -v me="$$" -v relay="$3" '
    NR == FNR { o0[$1] = $3; c0[$1] = $4; next }
    { pp[$1] = $2; own[$1] = $3; ch[$1] = $4 }
    END {
      for (p in own) {
        if (p == 2 || pp[p] == 2) { if (p in o0 && own[p] >= o0[p]) kt += own[p] - o0[p]; continue }
        if (p == relay || pp[p] == relay) continue
        mine = 0
        for (q = p; q in pp && q > 1; q = pp[q]) if (q == me) { mine = 1; break }
        if (mine) continue
        if (p in o0) { d = own[p] - o0[p] + ch[p] - c0[p] } else { d = own[p] }
        if (d > 0) ot += d
      }
      print kt + 0, ot + 0
    }' "$1" "$2"
}
# tree_breakdown PID: CPU seconds of the live children by program, and of
# the reaped ones (the master's cutime+cstime), for the log.
tree_breakdown() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$1" -v tck="$TCK" '
    { pid = $1; comm = $2; sub(/^[0-9]+ \(.*\) /, "")
      if (pid == r) { t["master"] += $12 + $13; t["reaped"] += $14 + $15 }
      else if ($2 == r) t[comm] += $12 + $13 + $14 + $15 }
    END { for (k in t) printf "%s=%.2f ", k, t[k] / tck; print "" }'
}
sink_count() { tail -c 200 "$1" | tr '\r' '\n' | awk '/mesg=/ { sub(/.*mesg=/, ""); n = $1 } END { print n + 0 }'; }


# The DNS responder, shared by every cell.
for i in 1 2 3 4 5; do
  free_port
  DNS_PORT=$PORT
  "$WORK/dnsd" -listen "127.0.0.1:$DNS_PORT" -domain dst.test >"$WORK/dnsd.out" 2>"$WORK/dnsd.err" &
  DNSD_PID=$!
  echo "$DNSD_PID" >>"$WORK/pids"
  sleep 0.2
  if kill -0 "$DNSD_PID" 2>/dev/null; then break; fi
  sed -i "/^$DNSD_PID\$/d" "$WORK/pids"
  DNSD_PID=""
done
[ -n "$DNSD_PID" ] || { echo "relay/run.sh: dnsd did not start:" >&2; cat "$WORK/dnsd.err" >&2; exit 1; }
dns_queries() {
  kill -USR1 "$DNSD_PID"
  sleep 0.05
  awk '/^dnsd: queries=/ { sub(/.*queries=/, ""); n = $1 } END { print n + 0 }' "$WORK/dnsd.out"
}

start_sink() { # DIR: sets SINK_PID, SINK_PORT
  free_port
  SINK_PORT=$PORT
  "$SMTP_SINK" -u "$SINK_USER" -c "127.0.0.1:$SINK_PORT" 1024 >"$1/sink.out" 2>"$1/sink.err" &
  SINK_PID=$!
  echo "$SINK_PID" >>"$WORK/pids"
  wait_listen "$SINK_PORT" "$SINK_PID" smtp-sink
}

# start_system SYS DIR: starts the relay in DIR (fresh), sets SYS_PORT and
# SYS_PID (smtpkit's pid, or Postfix's master's).
start_system() {
  local sys=$1 dir=$2
  free_port
  SYS_PORT=$PORT
  case "$sys" in
    smtpkit)
      "$WORK/smtpkit" serve --listen "127.0.0.1:$SYS_PORT" --data "$dir/data" --hostname relay.bench.test \
        --relay mx --dns "127.0.0.1:$DNS_PORT" --mx-port "$SINK_PORT" \
        --log-level warn --max-conns -1 --max-conns-per-ip -1 2>"$dir/smtpkit.log" &
      SYS_PID=$!
      echo "$SYS_PID" >>"$WORK/pids"
      wait_listen "$SYS_PORT" "$SYS_PID" smtpkit || { cat "$dir/smtpkit.log" >&2; return 1; }
      ;;
    postfix)
      local c=$dir/conf
      mkdir -p "$c" "$dir/queue" "$dir/data"
      chmod 755 "$dir"
      chown postfix "$dir/data"
      printf '*\tsmtp:[127.0.0.1]:%s\n' "$SINK_PORT" >"$c/transport"
      cat >"$c/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
transport_maps = texthash:$c/transport
maillog_file = $dir/maillog
$POSTFIX_MAIN_CF_EXTRA
EOF
      cat >"$c/master.cf" <<EOF
127.0.0.1:$SYS_PORT inet n - n - $SMTPD_MAXPROC smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
      "$POSTFIX" -c "$c" check >"$dir/postfix-check.log" 2>&1 || { cat "$dir/postfix-check.log" >&2; return 1; }
      echo "$c" >>"$WORK/postfixes"
      "$POSTFIX" -c "$c" start >"$dir/postfix-start.log" 2>&1 || { cat "$dir/postfix-start.log" "$dir/maillog" >&2; return 1; }
      wait_listen "$SYS_PORT" "" postfix || { cat "$dir/postfix-start.log" "$dir/maillog" >&2; return 1; }
      SYS_PID=$(awk '{ print $1 + 0 }' "$dir/queue/pid/master.pid")
      ;;
  esac
}

sys_ticks() { # SYS PID
  if [ "$1" = smtpkit ]; then cpu_ticks "$2"; else tree_ticks "$2"; fi
}

queue_empty() { # SYS DIR
  if [ "$1" = smtpkit ]; then
    [ "$("$WORK/smtpkit" queue --json --data "$2/data" list 2>/dev/null | jq '(.messages // []) | length')" = 0 ]
  else
    # The queue directories themselves: asking postqueue would make
    # Postfix (showq) work while it is being measured.
    [ -z "$(find "$2/queue/incoming" "$2/queue/active" "$2/queue/deferred" "$2/queue/maildrop" "$2/queue/hold" -type f -print -quit 2>/dev/null)" ]
  fi
}

stop_system() { # SYS DIR PID
  if [ "$1" = smtpkit ]; then
    stop_pid "$3"
  else
    "$POSTFIX" -c "$2/conf" stop >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 200); do
      kill -0 "$3" 2>/dev/null || break
      sleep 0.05
    done
    sed -i "\#^$2/conf\$#d" "$WORK/postfixes"
  fi
}

# run_cell SYS SESSIONS CONN N: prints
#   "msgs/s cpu_s lost intake_s dns_q dns_cpu_s other_cpu_s kthread_cpu_s unattributed_cpu_s"
# other: other jobs' processes; unattributed: busy CPU (/proc/stat: user,
# nice, system, irq, softirq) that no process was charged for (softirq,
# and, in Postfix runs, about 0.3 CPU that its many short process wake-ups
# seem to cost in the kernel); counted for neither relay.
run_cell() {
  local sys=$1 s=$2 conn=$3 n=$4 dir
  dir=$(mktemp -d "$WORK/$sys.XXXXXX")
  start_sink "$dir" || return 1
  start_system "$sys" "$dir" || return 1
  local pid=$SYS_PID
  local dflag=() per=$n
  if [ "$conn" = many ]; then
    dflag=(-d)
    per=$((s * PER_CONN))
  fi
  sleep 0.5 # let start-up work (Postfix's first daemons) settle before the first reading
  local c0 c1 d0 d1 k0 k1 b0 b1 q0 q1 s0 s1 x0 x1 t0 t1 ti sent=0 m rc got deadline count=0
  q0=$(dns_queries)
  times >"$dir/times.0"
  b0=$(busy_ticks)
  c0=$(sys_ticks "$sys" "$pid")
  d0=$(cpu_ticks "$DNSD_PID")
  s0=$(cpu_ticks "$SINK_PID")
  proc_snap "$dir/procs.0"
  t0=$(date +%s%N)
  deadline=$((t0 + TIMEOUT * 1000000000))
  while [ "$sent" -lt "$n" ]; do
    m=$((n - sent))
    [ "$m" -gt "$per" ] && m=$per
    rc=0
    timeout "$TIMEOUT" "$SMTP_SOURCE" -c "${dflag[@]}" -s "$s" -l "$SIZE" -m "$m" -M client.bench.test \
      -f a@src.test -t b@dst.test "127.0.0.1:$SYS_PORT" >"$dir/source.out" 2>"$dir/source.err" || rc=$?
    got=$(tr '\r' '\n' <"$dir/source.out" | awk '/^[0-9]+$/ { n = $1 } END { print n + 0 }')
    if [ "$rc" != 0 ] || [ "$got" != "$m" ]; then
      echo "relay/run.sh: $sys s=$s $conn: smtp-source rc=$rc, $got of $m messages" >&2
      cat "$dir/source.err" >&2
      stop_system "$sys" "$dir" "$pid"
      stop_pid "$SINK_PID"
      return 1
    fi
    sent=$((sent + m))
  done
  ti=$(date +%s%N)
  # Until the sink has every message and the queue is empty.
  while :; do
    count=$(sink_count "$dir/sink.out")
    if [ "$count" -ge "$n" ] && queue_empty "$sys" "$dir"; then break; fi
    if [ "$(date +%s%N)" -gt "$deadline" ]; then
      echo "relay/run.sh: $sys s=$s $conn: timed out after ${TIMEOUT}s, sink has $count of $n" >&2
      break
    fi
    sleep 0.02
  done
  t1=$(date +%s%N)
  c1=$(sys_ticks "$sys" "$pid")
  [ "$sys" = postfix ] && echo "   postfix CPU-s since start, by process: $(tree_breakdown "$pid")" >&2
  d1=$(cpu_ticks "$DNSD_PID")
  s1=$(cpu_ticks "$SINK_PID")
  proc_snap "$dir/procs.1"
  b1=$(busy_ticks)
  times >"$dir/times.1"
  q1=$(dns_queries)
  k0=$(child_cpu "$dir/times.0")
  local kt ot
  read -r kt ot < <(snap_delta "$dir/procs.0" "$dir/procs.1" "$pid")
  k1=$(child_cpu "$dir/times.1")
  if [ "$sys" = postfix ]; then
    "$POSTQUEUE" -c "$dir/conf" -p >"$dir/postqueue.out" 2>&1 || true
  fi
  stop_system "$sys" "$dir" "$pid"
  sleep 0.2 # a last delivery in flight, if any, reaches the sink's counter
  count=$(sink_count "$dir/sink.out")
  echo "   sink: $(tail -c 200 "$dir/sink.out" | tr '\r' '\n' | awk '/mesg=/ { l = $0 } END { print l }') (sessions from the relay)" >&2
  stop_pid "$SINK_PID"
  local lost=$((n - count))
  if [ "$lost" != 0 ]; then
    echo "relay/run.sh: $sys s=$s $conn: the sink counted $count of $n messages" >&2
  fi
  if [ "$sys" = postfix ] && ! grep -q 'Mail queue is empty' "$dir/postqueue.out"; then
    echo "relay/run.sh: postfix s=$s $conn: queue not empty:" >&2
    head -5 "$dir/postqueue.out" >&2
  fi
  if [ "$sys" = postfix ]; then
    echo "   postfix log: $(grep -c 'status=sent' "$dir/maillog" || true) sent, $(grep -c 'status=deferred' "$dir/maillog" || true) deferred, $(grep -c 'status=bounced' "$dir/maillog" || true) bounced" >&2
  else
    [ -s "$dir/smtpkit.log" ] && { echo "   smtpkit log ($(wc -l <"$dir/smtpkit.log") lines):" >&2; head -3 "$dir/smtpkit.log" >&2; }
  fi
  awk -v n="$n" -v t0="$t0" -v t1="$t1" -v ti="$ti" -v c0="$c0" -v c1="$c1" -v tck="$TCK" -v lost="$lost" \
    -v q0="$q0" -v q1="$q1" -v d0="$d0" -v d1="$d1" -v s0="$s0" -v s1="$s1" -v b0="$b0" -v b1="$b1" -v k0="$k0" -v k1="$k1" \
    -v kt="$kt" -v ot="$ot" \
    'BEGIN { printf "%.1f %.3f %d %.3f %d %.3f %.3f %.3f %.3f\n", n / ((t1 - t0) / 1e9), (c1 - c0) / tck, lost, (ti - t0) / 1e9,
      q1 - q0, (d1 - d0) / tck, ot / tck, kt / tck, (b1 - b0 - (c1 - c0) - (d1 - d0) - (s1 - s0) - kt - ot) / tck - (k1 - k0) }'
}

mkdir -p "$(dirname "$OUT")"
TSV="${OUT%.md}.tsv"
printf 'system\tsessions\tconn\tmessages\tmsgs_per_s\tcpu_s\tlost\tintake_s\tdns_queries\tdns_cpu_s\tother_jobs_cpu_s\tkthread_cpu_s\tunattributed_cpu_s\tattempt\n' >"$TSV"
DISTURBED=0
FAILED=0
{
  echo "<!-- generated by bench/relay/run.sh; do not edit -->"
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), smtpkit $REV, Postfix $PF_VERSION, $(go version | awk '{print $3}'), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)."
  echo "QUICK=$QUICK REPS=$REPS SIZE=$SIZE N_SMTPKIT=$N_SMTPKIT N_POSTFIX=$N_POSTFIX SMTPD_MAXPROC=$SMTPD_MAXPROC${POSTFIX_MAIN_CF_EXTRA:+ POSTFIX_MAIN_CF_EXTRA='$POSTFIX_MAIN_CF_EXTRA'}. Spools in $BENCH_TMPDIR ($(df -P "$BENCH_TMPDIR" | awk 'NR == 2 { print $1 }'))."
  echo
  echo "| system | sessions | msgs/conn | messages | msg/s | CPU ms/msg | msg/s × Postfix | CPU ÷ (Postfix/this) | lost | intake msg/s | DNS queries/msg | dnsd CPU ms/msg | kernel threads ms/msg |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$OUT"

med() { tr ' ' '\n' | awk 'NF { a[++k] = $1 + 0 } END {
  for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  if (k == 0) print 0; else if (k % 2) print a[(k + 1) / 2]; else print (a[k / 2] + a[k / 2 + 1]) / 2 }'; }

cell=0
for conn in $CONNS; do
  for s in $SESSIONS; do
    declare -A RATE=() CPU=() LOST=() INTAKE=() DNSQ=() DNSC=() KT=() NN=()
    for rep in $(seq 1 "$REPS"); do
      order=$SYSTEMS
      [ $((cell % 2)) = 1 ] && order=$(echo "$SYSTEMS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
      cell=$((cell + 1))
      for sys in $order; do
        n=$N_SMTPKIT
        [ "$sys" = postfix ] && n=$N_POSTFIX
        if [ "$conn" = many ] && [ "$n" -lt $((s * 10)) ]; then n=$((s * 10)); fi
        NN[$sys]=$n
        echo "== $sys s=$s $conn n=$n (run $rep of $REPS)" >&2
        for attempt in $(seq 1 "$ATTEMPTS"); do
          wait_quiet
          if ! res=$(run_cell "$sys" "$s" "$conn" "$n"); then
            FAILED=$((FAILED + 1))
            res="0 0 $n 0 0 0 0 0 0"
          fi
          read -r rate cpu lost intake dq dc other kt un <<<"$res"
          echo "   $rate msg/s, $cpu CPU-s, lost $lost, intake done at ${intake}s, $dq DNS queries ($dc CPU-s), kernel threads $kt CPU-s, unattributed $un CPU-s, other jobs: $other CPU-s" >&2
          printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$s" "$conn" "$n" "$rate" "$cpu" "$lost" "$intake" "$dq" "$dc" "$other" "$kt" "$un" "$attempt" >>"$TSV"
          if [ "$lost" = 0 ] && awk -v o="$other" -v r="$rate" -v n="$n" -v m="$OTHER_MAX" 'BEGIN { exit !(r > 0 && o / (n / r) > m) }'; then
            if [ "$attempt" -lt "$ATTEMPTS" ]; then
              echo "   disturbed by other jobs; again" >&2
              continue
            fi
            DISTURBED=$((DISTURBED + 1))
          fi
          break
        done
        RATE[$sys]+="$rate "
        CPU[$sys]+="$(awk -v c="$cpu" -v n="$n" 'BEGIN { printf "%.4f", c * 1000 / n }') "
        LOST[$sys]=$(( ${LOST[$sys]:-0} + (lost < 0 ? -lost : lost) ))
        INTAKE[$sys]+="$(awk -v i="$intake" -v n="$n" 'BEGIN { printf "%.1f", (i > 0 ? n / i : 0) }') "
        DNSQ[$sys]+="$(awk -v q="$dq" -v n="$n" 'BEGIN { printf "%.2f", q / n }') "
        DNSC[$sys]+="$(awk -v c="$dc" -v n="$n" 'BEGIN { printf "%.4f", c * 1000 / n }') "
        KT[$sys]+="$(awk -v c="$kt" -v n="$n" 'BEGIN { printf "%.4f", c * 1000 / n }') "
      done
    done
    pr=$(echo "${RATE[postfix]:-}" | med)
    pc=$(echo "${CPU[postfix]:-}" | med)
    for sys in $SYSTEMS; do
      per=1
      if [ "$conn" = many ]; then
        per=$(( (${NN[$sys]} + s - 1) / s ))
        [ "$per" -gt "$PER_CONN" ] && per=$PER_CONN
      fi
      r=$(echo "${RATE[$sys]}" | med)
      c=$(echo "${CPU[$sys]}" | med)
      it=$(echo "${INTAKE[$sys]}" | med)
      dq=$(echo "${DNSQ[$sys]}" | med)
      dc=$(echo "${DNSC[$sys]}" | med)
      kt=$(echo "${KT[$sys]}" | med)
      awk -v sys="$sys" -v s="$s" -v per="$per" -v n="${NN[$sys]}" -v r="$r" -v c="$c" -v pr="$pr" -v pc="$pc" \
        -v lost="${LOST[$sys]}" -v it="$it" -v dq="$dq" -v dc="$dc" -v kt="$kt" 'BEGIN {
          xr = (sys == "postfix" || pr == 0) ? "–" : sprintf("%.2f×", r / pr)
          xc = (sys == "postfix" || c == 0 || pc == 0) ? "–" : sprintf("%.2f", pc / c)
          dns = (sys == "postfix") ? "–" : sprintf("%.2f", dq)
          dcpu = (sys == "postfix") ? "–" : sprintf("%.3f", dc)
          printf "| %s | %d | %s | %d | %.0f | %.3f | %s | %s | %d | %.0f | %s | %s | %.3f |\n", sys, s, per, n, r, c, xr, xc, lost, it, dns, dcpu, kt
        }' >>"$OUT"
    done
    unset RATE CPU LOST INTAKE DNSQ DNSC KT NN
  done
done
{
  echo
  echo "msg/s: messages ÷ (time from the start of smtp-source until smtp-sink counted all of them and the relay's queue was empty); median of $REPS runs, each on a fresh relay, spool and sink."
  echo "CPU ms/msg: the relay's own CPU (smtpkit: its process; Postfix: master and all its daemons) ÷ messages; median. smtp-source, smtp-sink and dnsd are not counted."
  echo "kernel threads ms/msg: CPU of kernel threads (writeback, journal, ksoftirqd) during the run ÷ messages, counted for neither relay."
  echo "lost: messages the sink did not count, summed over the runs (a failed run counts all its messages). intake msg/s: messages ÷ time until smtp-source had its last 250."
  echo "Runs disturbed by other jobs (their processes used more than $OTHER_MAX CPUs on average) after $ATTEMPTS attempts: $DISTURBED; failed runs: $FAILED (raw data: $(basename "$TSV"))."
} >>"$OUT"
echo >&2
cat "$OUT"
[ "$FAILED" = 0 ]
