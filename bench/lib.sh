# Shell functions shared by bench/run.sh and bench/relay/run.sh; sourced,
# not run. The sourcing script defines busy_ticks (what counts as another
# job's CPU differs between them) and may set QUIET_MAX, OTHER_MAX,
# ATTEMPTS and QUIET_WAIT before sourcing.

TCK=$(getconf CLK_TCK)

# cpu_ticks PID: the process's own user+system time, in ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# hwm_kb PID: the process's peak resident set so far.
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# child_cpu FILE: CPU seconds of this shell's finished children (smtp-source
# and helpers) as "times" wrote them into FILE. ("times" must run in the
# shell itself: in $(...) it would report the subshell's children.)
child_cpu() { awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.3f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"; }

# wait_quiet waits (at most QUIET_WAIT seconds) until other processes use
# less than QUIET_MAX CPUs, so that another job on the machine does not
# steal the cores from one system under test and not the other. A run
# during which they used more than OTHER_MAX CPUs on average is repeated,
# up to ATTEMPTS times in all (the scripts' own loops).
QUIET_MAX=${QUIET_MAX:-0.10}
OTHER_MAX=${OTHER_MAX:-0.15}
ATTEMPTS=${ATTEMPTS:-3}
QUIET_WAIT=${QUIET_WAIT:-900}
wait_quiet() {
  local waited=0 b0 b1
  while :; do
    b0=$(busy_ticks)
    sleep 1
    b1=$(busy_ticks)
    if awk -v d=$((b1 - b0)) -v t="$TCK" -v m="$QUIET_MAX" 'BEGIN { exit !(d / t <= m) }'; then
      return 0
    fi
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      echo "$(basename "$0"): the machine is still busy after ${QUIET_WAIT}s; measuring anyway" >&2
      return 0
    fi
    [ $((waited % 60)) = 0 ] && echo "   waiting for other jobs to finish (machine busy: $(awk -v d=$((b1 - b0)) -v t="$TCK" 'BEGIN { printf "%.2f", d / t }') CPUs)" >&2
    sleep 4
    waited=$((waited + 5))
  done
}
