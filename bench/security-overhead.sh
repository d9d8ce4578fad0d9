#!/usr/bin/env bash
# What keys, TLS and the audit log cost a single stream: time per generated
# token over HTTP from a plain server against one with an API key required,
# HTTPS (self-signed, HTTP/1.1) and --audit-log on, same model and threads,
# requests alternated between the two in one run. Also prints each one's
# time to first token. Exits non-zero when secured / plain is over BAR.
#
# Usage: bench/security-overhead.sh [MODEL.gguf] [THREADS]
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
source bench/lib/servers.sh
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/home"
SHELF_ARGS="" start_shelf "$model" "$threads" 1 $((tg + 256)) "${GPU_LAYERS:-auto}"
pids+=("$SERVER_PID"); base_plain=$SERVER_URL
key=$("$SHELF_BIN" keys create bench --keys "$work/keys.db" 2>/dev/null)
# The self-signed certificate is kept under $HOME/.shelf/tls.
HOME="$work/home" BENCH_KEYS="$work/keys.db" SHELF_ARGS="--tls self-signed --audit-log $work/audit.log" \
  start_shelf "$model" "$threads" 1 $((tg + 256)) "${GPU_LAYERS:-auto}"
pids+=("$SERVER_PID"); base_secured=$SERVER_URL

python3 - "$base_plain" "$base_secured" "$key" "$work/home/.shelf/tls/cert.pem" \
  "$(basename "$model" .gguf)" "$tg" "$reps" "$rounds" "${BAR:-1.05}" <<'PY'
import http.client, json, ssl, statistics, sys, time, urllib.parse
plain, secured, key, cert, model, tg, reps, rounds, bar = sys.argv[1:10]
tg, reps, rounds, bar = int(tg), int(reps), int(rounds), float(bar)
context = ssl.create_default_context(cafile=cert)

def one_run(base, headers):
    url = urllib.parse.urlparse(base)
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=context)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port)
    body = json.dumps({"model": model, "stream": True, "max_tokens": tg + 1, "temperature": 0,
                       "ignore_eos": True, "messages": [{"role": "user", "content": "Tell me a story."}]})
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    times = []
    # Only timestamps in the loop: the client's own cost stays out of it.
    for raw in resp:
        if raw.startswith(b'data: {') and b'"delta":{"content":"' in raw:
            times.append(time.perf_counter())
    conn.close()
    return (times[-1] - times[0]) / (len(times) - 1) * 1000, (times[0] - sent) * 1000

servers = {"plain": (plain, {}), "secured": (secured, {"Authorization": f"Bearer {key}"})}
for base, headers in servers.values():
    one_run(base, headers)  # warm-up
per_token = {name: [] for name in servers}
first = {name: [] for name in servers}
for _ in range(rounds):
    for _ in range(reps):
        # Alternate the two so drift in the machine's load hits both alike.
        for name, (base, headers) in servers.items():
            ms, ttft = one_run(base, headers)
            per_token[name].append(ms)
            first[name].append(ttft)
p, s = statistics.median(per_token["plain"]), statistics.median(per_token["secured"])
for name in servers:
    print(f"{name:8} decode {statistics.median(per_token[name]):.3f} ms/token, "
          f"first token {statistics.median(first[name]):.1f} ms (median of {len(per_token[name])})")
ratio = s / p
print(f"secured / plain:   {ratio:.3f} ({'within' if ratio <= bar else 'OVER'} the {bar} bar)")
sys.exit(0 if ratio <= bar else 1)
PY
