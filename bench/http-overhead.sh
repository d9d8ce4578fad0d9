#!/usr/bin/env bash
# Time per generated token through the HTTP API (streamed SSE, measured by the
# client between the first and last content chunks) against `shelf bench`'s
# decode time per token, same model and threads, in one run. The server runs
# the model in a runner process, so this is the cost of HTTP and of crossing
# processes together. Exits non-zero when it is over BAR.
#
# Usage: bench/http-overhead.sh [MODEL.gguf] [THREADS]
# Env:   TG (128) REPS (5) ROUNDS (3) GPU_LAYERS (auto) BAR (1.05)
#        SHELF_BIN (default: build release)
set -euo pipefail
cd "$(dirname "$0")/.."
models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
tg=${TG:-128} reps=${REPS:-5} rounds=${ROUNDS:-3}
if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi

fifo=$(mktemp -u); mkfifo "$fifo"
SHELF_LOG=error "$SHELF_BIN" serve --addr 127.0.0.1:0 --model "$model" --threads "$threads" \
  --ctx $((tg + 256)) --parallel 1 --gpu-layers "${GPU_LAYERS:-auto}" --models-dir "$(mktemp -d)" \
  --keys "$(mktemp -d)/keys.db" > "$fifo" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$fifo"' EXIT
exec 3<"$fifo"
read -r line <&3; base=${line#shelf listening on }
read -r ready <&3

python3 - "$base" "$(basename "$model" .gguf)" "$tg" "$reps" "$rounds" "$SHELF_BIN" "$model" "$threads" "${BAR:-1.05}" "${GPU_LAYERS:-auto}" <<'PY'
import http.client, json, os, statistics, subprocess, sys, time, urllib.parse
base, model, tg, reps, rounds, shelf, path, threads, bar, ngl = sys.argv[1:11]
bar = float(bar)
tg, reps, rounds = int(tg), int(reps), int(rounds)
url = urllib.parse.urlparse(base)

def one_run():
    conn = http.client.HTTPConnection(url.hostname, url.port)
    body = json.dumps({"model": model, "stream": True, "max_tokens": tg + 1, "temperature": 0,
                       "ignore_eos": True, "messages": [{"role": "user", "content": "Tell me a story."}]})
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    times = []
    # The client shares the machine with the server: it only timestamps
    # content chunks (no JSON parsing) so its own cost stays out of the result.
    for raw in resp:
        if raw.startswith(b'data: {') and b'"delta":{"content":"' in raw:
            times.append(time.perf_counter())
    conn.close()
    # A token that is not a whole character yet is sent with the next, so
    # the rate is over chunk intervals (one chunk per token in practice).
    return (times[-1] - times[0]) / (len(times) - 1), len(times)

def bench_ms_per_token():
    out = subprocess.run([shelf, "bench", path, "--threads", threads, "--gpu-layers", ngl, "--pp", "0",
                          "--tg", str(tg), "--reps", str(reps), "--json"], capture_output=True, check=True,
                         env={**os.environ, "SHELF_LOG": "error"}).stdout
    return 1000 / json.loads(out)["results"][0]["avg_ts"]

one_run()  # warm-up
# Alternate the two so drift in the machine's load hits both alike.
bench, streamed = [], []
for _ in range(rounds):
    bench.append(bench_ms_per_token())
    streamed.append(statistics.mean(one_run()[0] for _ in range(reps)) * 1000)
bench_ms, http_ms = statistics.median(bench), statistics.median(streamed)
print(f"shelf bench decode:  {bench_ms:.3f} ms/token ({1000 / bench_ms:.1f} t/s), rounds {[round(b, 3) for b in bench]}")
print(f"HTTP streaming:      {http_ms:.3f} ms/token ({1000 / http_ms:.1f} t/s), rounds {[round(h, 3) for h in streamed]}")
ratio = http_ms / bench_ms
print(f"HTTP / bench:        {ratio:.3f} ({'within' if ratio <= bar else 'OVER'} the {bar} bar)")
sys.exit(0 if ratio <= bar else 1)
PY
