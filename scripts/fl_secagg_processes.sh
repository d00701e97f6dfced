#!/bin/bash
# SecAgg+ with real processes on one machine: `medlens fl server --secure-aggregation` + 3 x `medlens fl site`.
#   scripts/fl_secagg_processes.sh SITES_DIR OUT_DIR [ROUNDS] [PORT]
# SITES_DIR holds site1..site3 (from `medlens fl split`); each site's work (catalog, feature cache) is
# OUT_DIR/work/siteN. Prints the end of the server log; the audit log is OUT_DIR/out/audit.jsonl.
set -u
SITES=${1:?sites folder}; R=${2:?output folder}; ROUNDS=${3:-1}; PORT=${4:-19231}
ML=${MEDLENS:-medlens}
mkdir -p "$R"
cat > "$R/fl.yaml" <<YAML
name: secagg-processes
task: radiomics
rounds: $ROUNDS
min_sites: 3
wait_for_sites_s: 300
round_timeout_s: 600
server: {host: 127.0.0.1, port: $PORT}
secure_aggregation: {enabled: true, timeout_s: 600}
radiomics: {settings: $(cd "$(dirname "$0")/.." && pwd)/examples/sts-pet-radiomics.yaml, folds: 2, n_features: 3}
output: {dir: $R/out}
YAML
export FLWR_HOME="$R/flwr" OMP_NUM_THREADS=1
( nice -n 10 "$ML" fl server "$R/fl.yaml" --timeout-s 3000 > "$R/server.log" 2>&1; echo "server rc $?" >> "$R/server.log" ) &
server=$!
sleep 8
pids=()
for i in 1 2 3; do
  nice -n 10 "$ML" fl site --data "$SITES/site$i" --site-id "site$i" --superlink "127.0.0.1:$PORT" \
    --port $((PORT + 10 + i)) --work "$R/work/site$i" > "$R/site$i.log" 2>&1 &
  pids+=($!)
done
wait "$server"
kill "${pids[@]}" 2>/dev/null
sleep 3
grep -v DEBUG "$R/server.log" | tail -5
