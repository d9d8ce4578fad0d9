"""Digests in the background against a chat in the foreground, in one run:
a chat's time to first token and decode speed with the assistant idle, then
while it digests a folder of 50 files with the same model (the same runner),
alternating. Bars: time to first token at most 1.15x idle, decode at least
0.9x idle.

Usage: python3 bench/assistant_priority.py [MODEL] [--threads N] [--reps N] [--parallel N]
Exits 1 when a bar is missed."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "assistant"))
import corpus  # noqa: E402

MODELS = os.environ.get("SHELF_TEST_MODELS") or os.path.expanduser("~/.cache/shelf/test-models")
TOPICS = ["backups", "passwords", "printers", "invoices", "holidays", "meetings", "laptops", "contracts"]


def chat(base, model, max_tokens, topic):
    """(seconds to the first content chunk, decode tokens per second) for a
    prompt no earlier chat shares a prefix with (a request's real prefill)."""
    prompt = f"On {topic}: write a short paragraph about why {topic} matter for a small office."
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True}
    request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    sent = time.perf_counter()
    first = last = None
    chunks = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    return first - sent, (chunks - 1) / (last - first)


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(MODELS, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"))
    parser.add_argument("--threads", default="2")
    parser.add_argument("--reps", type=int, default=3, choices=range(1, 5))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--parallel", default="2", help="slots; with 1, a chat must take a digest's slot")
    args = parser.parse_args()
    shelf = os.environ.get("SHELF_BIN", "target/release/shelf")
    work = tempfile.mkdtemp()
    folder = os.path.join(work, "files")
    corpus.build(folder)
    for i in range(50 - len(corpus.files())):
        with open(os.path.join(folder, f"note-{i:02d}.md"), "w") as f:
            f.write(f"# Note {i}\n\nCall supplier {i} about order {1000 + i} before day {i % 28 + 1}.\n" * 3)
    db = os.path.join(work, "assistant.db")
    name = os.path.basename(args.model).removesuffix(".gguf")
    server = subprocess.Popen(
        [shelf, "--assistant-db", db, "--threads", args.threads, "serve", "--addr", "127.0.0.1:0",
         "--model", args.model, "--assistant-model", name, "--parallel", args.parallel, "--models-dir", work,
         "--keys", os.path.join(work, "keys.db")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "SHELF_LOG": "warn"})
    try:
        base = server.stdout.readline().strip().removeprefix("shelf listening on ")
        assert server.stdout.readline().startswith("shelf ready")
        chat(base, name, 8, "coffee")  # warm-up
        idle = [chat(base, name, args.tokens, TOPICS[i]) for i in range(args.reps)]
        subprocess.run([shelf, "--assistant-db", db, "watch", "add", folder, "--name", "files"],
                       check=True, capture_output=True)

        def status():
            out = subprocess.run([shelf, "--assistant-db", db, "watch", "status", "files", "--json"],
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out)[0]

        while status()["digested"] == 0:
            time.sleep(0.5)
        busy = [chat(base, name, args.tokens, TOPICS[4 + i]) for i in range(args.reps)]
        left = status()["queued"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    ttft = median([b[0] for b in busy]) / median([i[0] for i in idle])
    decode = median([b[1] for b in busy]) / median([i[1] for i in idle])
    print(f"idle:      first token {median([i[0] for i in idle]) * 1000:.0f} ms, decode {median([i[1] for i in idle]):.2f} t/s")
    print(f"digesting: first token {median([b[0] for b in busy]) * 1000:.0f} ms, decode {median([b[1] for b in busy]):.2f} t/s "
          f"({left} of 50 files still queued after)")
    print(f"first token {ttft:.3f}x idle (bar 1.15), decode {decode:.3f}x idle (bar 0.9)")
    missed = ttft > 1.15 or decode < 0.9 or left == 0
    if missed:
        print("MISSED" + (" (digests finished before the chats: nothing measured)" if left == 0 else ""))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
