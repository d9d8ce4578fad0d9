# Shared by the serving benchmarks: start shelf and llama-server the same
# way (same model, threads, slots, context per slot, GPU layers), wait until
# each answers, and stop them. Source it; it uses SHELF_BIN, LLAMA_SERVER.

# start_shelf MODEL THREADS SLOTS CTX_PER_SLOT NGL -> sets SERVER_PID, SERVER_URL
# Its key database is BENCH_KEYS, or a fresh empty one: keys in the user's
# own would close the server to the benchmark's client.
start_shelf() {
  local model=$1 threads=$2 slots=$3 ctx=$4 ngl=$5 fifo
  fifo=$(mktemp -u); mkfifo "$fifo"
  SHELF_LOG=error "$SHELF_BIN" serve --addr 127.0.0.1:0 --model "$model" --threads "$threads" \
    --parallel "$slots" --ctx "$ctx" --gpu-layers "$ngl" --models-dir "$(mktemp -d)" \
    --keys "${BENCH_KEYS:-$(mktemp -d)/keys.db}" --assistant-db "$(mktemp -d)/assistant.db" ${SHELF_ARGS:-} > "$fifo" &
  SERVER_PID=$!
  exec 3<"$fifo"; rm -f "$fifo"
  local line ready
  read -r line <&3
  # With TLS, the certificate's fingerprint comes first.
  while [[ $line == "TLS certificate"* ]]; do read -r line <&3; done
  SERVER_URL=${line#shelf listening on }
  read -r ready <&3
  case "$ready" in "shelf ready"*) ;; *) echo "shelf did not get ready: $ready" >&2; return 1 ;; esac
}

# start_llama_server MODEL THREADS SLOTS CTX_PER_SLOT NGL -> sets SERVER_PID, SERVER_URL
start_llama_server() {
  local model=$1 threads=$2 slots=$3 ctx=$4 ngl=$5 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$LLAMA_SERVER" -m "$model" -t "$threads" -tb "$threads" -np "$slots" -c $((ctx * slots)) \
    -ngl "$ngl" --host 127.0.0.1 --port "$port" --log-disable ${LLAMA_SERVER_ARGS:-} > /dev/null 2>&1 &
  SERVER_PID=$!
  SERVER_URL=http://127.0.0.1:$port
  for _ in $(seq 600); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "$SERVER_URL/health" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "llama-server exited at start-up" >&2; return 1; }
    sleep 0.1
  done
  echo "llama-server did not get ready" >&2; return 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# Builds shelf (release) and the load generator unless given, and
# llama-server from the llama-cpp-python sdist unless LLAMA_SERVER is set.
prepare_binaries() {
  if [ -z "${SHELF_BIN:-}" ] || [ -z "${LOADGEN:-}" ]; then
    cargo build --release --bin shelf --bin shelf-loadgen >&2
    SHELF_BIN=${SHELF_BIN:-target/release/shelf}
    LOADGEN=${LOADGEN:-target/release/shelf-loadgen}
  fi
  LLAMA_SERVER=${LLAMA_SERVER:-$(bench/build-llama-server.sh)}
}

# run_rounds ROUNDS SLOTS CTX OUT SCENARIO [LOADGEN ARGS...]: ROUNDS times,
# each server in turn (each first in every other round), started on $model
# with $threads threads and $ngl GPU layers, warmed up, then the load
# generator's SCENARIO run against it into OUT/{llama,shelf}-ROUND.json.
run_rounds() {
  local rounds=$1 slots=$2 ctx=$3 out=$4 scenario=$5 round server name
  shift 5
  name=$(basename "$model" .gguf)
  for round in $(seq "$rounds"); do
    local order="llama shelf"
    [ $((round % 2)) = 1 ] || order="shelf llama"
    for server in $order; do
      case $server in
        llama) start_llama_server "$model" "$threads" "$slots" "$ctx" "$ngl" ;;
        shelf) start_shelf "$model" "$threads" "$slots" "$ctx" "$ngl" ;;
      esac
      "$LOADGEN" throughput --url "$SERVER_URL" --model "$name" --streams "$slots" --max-tokens 16 > /dev/null
      "$LOADGEN" "$scenario" --url "$SERVER_URL" --model "$name" "$@" > "$out/$server-$round.json"
      stop_server
    done
  done
}
