#!/bin/bash
# Profile the daemon under load with py-spy (dev extra): bench/profile_daemon.sh OUT [STREAMS] [LOAD_PCT]
#
# Runs `perceptd bench --pipeline --sweep-load LOAD_PCT` for STREAMS streams (default 4 at 75 % of
# the max rate measured first; 120 s windows: three recordings plus py-spy's own start-up, ~8 s
# each on a busy 2-core box, must end before the daemon does) and attaches py-spy to that
# point's daemon after 12 s (start + warm-up), three times 20 s, one after the other:
#   OUT/flame.svg                    flame graph, by thread (`--threads`)
#   OUT/profile.speedscope.json      every running thread's stacks (what the summary reads)
#   OUT/profile-gil.speedscope.json  only the thread holding the GIL: the Python-level work
# plus /proc/PID/task/*/stat around the second window (exact CPU per thread), and the summaries
# of bench/profile_summary.py (OUT/summary.txt, OUT/gil-summary.txt, .json beside them).
# `--nonblocking`: py-spy does not pause the daemon (blocking sampling stalled its control
# socket past the bench's 3 s status timeout on a busy 2-core box).  Attaching needs ptrace
# (CAP_SYS_PTRACE, or kernel.yama.ptrace_scope 0).
set -euo pipefail
out=${1:?usage: bench/profile_daemon.sh OUT [STREAMS] [LOAD_PCT]}
streams=${2:-4}
load=${3:-75}
venv=${VENV:-.venv}
mkdir -p "$out"
PERCEPTD_BENCH_RESULTS="$out" "$venv/bin/python" -m perceptd bench --pipeline --streams "$streams" \
  --no-configurations --no-latency --sweep-load "$load" --seconds 120 --warmup 5 > "$out/bench.log" 2>&1 &
bench=$!
pid=""
until [ -n "$pid" ]; do
  kill -0 "$bench" 2>/dev/null || { echo "the bench ended first: $out/bench.log"; exit 1; }
  pid=$(pgrep -f "perceptd run -c .*/load${load}_${streams}/perceptd.yaml" || true)
  sleep 1
done
echo "daemon pid $pid ($(date -u +%T)), profiling from +12 s"
sleep 12
spy="$venv/bin/py-spy"
"$spy" record --nonblocking --pid "$pid" --duration 20 --threads -o "$out/flame.svg"
t0=$(date +%s.%N)
cat /proc/"$pid"/task/*/stat > "$out/task-before.txt"
"$spy" record --nonblocking --pid "$pid" --duration 20 --format speedscope -o "$out/profile.speedscope.json"
cat /proc/"$pid"/task/*/stat > "$out/task-after.txt"
t1=$(date +%s.%N)
"$spy" record --nonblocking --pid "$pid" --duration 20 --gil --format speedscope \
  -o "$out/profile-gil.speedscope.json"
wait "$bench"
tail -4 "$out/bench.log"
"$venv/bin/python" -m perceptd.bench.profile_summary "$out/profile.speedscope.json" --top 40 \
  --task-stat "$out/task-before.txt" "$out/task-after.txt" --seconds "$(python3 -c "print($t1 - $t0)")" \
  --json "$out/summary.json" > "$out/summary.txt"
"$venv/bin/python" -m perceptd.bench.profile_summary "$out/profile-gil.speedscope.json" --top 40 \
  --json "$out/gil-summary.json" > "$out/gil-summary.txt"
echo "wrote $out (summary.txt, gil-summary.txt)"
