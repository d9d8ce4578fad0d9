#!/usr/bin/env bash
# Embeddings throughput: shelf's /v1/embeddings against llama.cpp's
# llama-embedding on the same inputs (256 sentences), model and threads, in
# one run, alternating ROUNDS times. llama-embedding's time is its batches'
# compute (from its own log's timestamps, model load excluded); shelf's is the
# whole HTTP request with the model loaded (tokenizing and JSON included).
#
# Exits non-zero when shelf is below BAR (0.9) x llama-embedding.
#
# Usage: bench/embeddings.sh [MODEL.gguf] [THREADS]
# Env:   ROUNDS (3) BAR (0.9) SHELF_BIN LLAMA_EMBEDDING
set -euo pipefail
cd "$(dirname "$0")/.."

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/all-minilm-l6-v2-f16.gguf}
threads=${2:-2}
[ -f "$model" ] || .venv/bin/python scripts/convert-minilm.py >&2
if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi
LLAMA_EMBEDDING=${LLAMA_EMBEDDING:-$(bench/build-llama-embedding.sh)}
. bench/lib/servers.sh

start_shelf "$model" "$threads" 1 512 0
trap 'stop_server' EXIT
python3 - "$SERVER_URL" "$LLAMA_EMBEDDING" "$model" "$threads" "${ROUNDS:-3}" "${BAR:-0.9}" <<'PY'
import json, random, re, statistics, subprocess, sys, tempfile, time, urllib.request

url, binary, model, threads, rounds, bar = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
random.seed(7)
words = ("the a model server local private token memory fast batch embedding search document query answer "
         "user team office data file note lawyer doctor review contract patient record policy budget report").split()
texts = [" ".join(random.choice(words) for _ in range(random.randint(8, 40))).capitalize() + "." for _ in range(256)]
inputs = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
inputs.write("\n".join(texts)); inputs.close()

def llama():
    run = subprocess.run([binary, "-m", model, "-f", inputs.name, "-t", threads, "-tb", threads, "-b", "512",
                          "-ub", "512", "-np", "64", "--embd-normalize", "2", "--embd-output-format", "json"],
                         capture_output=True, text=True, check=True)
    # Each batch logs "M.SS.mmm.uuu I batch_decode: n_tokens = N" as it starts.
    starts, tokens = [], 0
    for line in run.stderr.splitlines():
        m = re.match(r"(\d+)\.(\d+)\.(\d+)\.(\d+) I batch_decode: n_tokens = (\d+)", line)
        if m:
            mins, secs, ms, us = map(int, m.groups()[:4])
            starts.append(mins * 60 + secs + ms / 1e3 + us / 1e6)
            tokens += int(m.group(5))
    n = len(starts)
    seconds = (starts[-1] - starts[0]) * n / (n - 1)
    return tokens / seconds

def shelf():
    body = json.dumps({"model": "all-minilm-l6-v2-f16", "input": texts}).encode()
    request = urllib.request.Request(f"{url}/v1/embeddings", body, {"content-type": "application/json"})
    started = time.perf_counter()
    answer = json.load(urllib.request.urlopen(request))
    elapsed = time.perf_counter() - started
    assert len(answer["data"]) == len(texts)
    return answer["usage"]["prompt_tokens"] / elapsed

shelf()  # warm-up
ratios = []
print("| round | llama-embedding tokens/s | shelf tokens/s | ratio |")
print("| ---: | ---: | ---: | ---: |")
for r in range(rounds):
    a, b = (llama(), shelf()) if r % 2 == 0 else tuple(reversed((shelf(), llama())))
    ratios.append(b / a)
    print(f"| {r + 1} | {a:.0f} | {b:.0f} | {b / a:.3f} |")
median = statistics.median(ratios)
print(f"median ratio {median:.3f} (bar >= {bar})")
sys.exit(0 if median >= bar else 1)
PY
