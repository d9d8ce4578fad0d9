#!/usr/bin/env python3
"""Decode speed of a server's streamed chat answers, as its client sees it.

Sends each prompt of a task file (prompts separated by lines holding only
`---`) to an OpenAI-compatible server's /v1/chat/completions, greedy and
streamed, and times each answer from its first token to its last. Prints
JSON: decode tokens per second over all answers (each answer's first token,
which comes with the prompt, left out), the tokens, and the answers' text.
Standard library only, so it runs on a GPU machine with nothing installed.

With STREAMS=N (N > 1) in the environment, N clients answer every prompt
REPS times at once, each starting at a different prompt, and tps is
aggregate: all answers' tokens over the wall time from the first request to
the last answer's end (prompts included), as a server under load delivers.
Those requests send `cache_prompt: false` (unless EXTRA_BODY_JSON says
otherwise): the clients share their prompts, so a server would otherwise
read a prompt again or reuse it from another client's slot depending on
which client ran ahead, and that, not decoding, would decide the figure.

Usage: decode_speed.py URL MODEL TASKFILE MAX_TOKENS REPS [EXTRA_BODY_JSON]
"""
import json
import os
import sys
import threading
import time
import urllib.request


def answer(url, model, prompt, max_tokens, extra):
    """One streamed greedy answer: (text, completion tokens, decode seconds)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    text, first, last, chunks, tokens = [], None, None, 0, None
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
                    text.append(piece)
    return "".join(text), tokens or chunks, (last - first) if first else 0.0


def main():
    url, model, task_file, max_tokens, reps = sys.argv[1:6]
    extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    prompts = [p.strip() for p in open(task_file).read().split("\n---\n") if p.strip()]
    streams = int(os.environ.get("STREAMS", "1"))
    answer(url, model, prompts[0], 16, extra)  # warm-up
    if streams > 1:
        print(json.dumps(aggregate(url, model, prompts, int(max_tokens), int(reps), extra, streams)))
        return
    texts, tokens, seconds = [], 0, 0.0
    for _ in range(int(reps)):
        for prompt in prompts:
            text, n, spent = answer(url, model, prompt, int(max_tokens), extra)
            texts.append(text)
            tokens += max(n - 1, 0)
            seconds += spent
    print(json.dumps({"tps": tokens / seconds if seconds else 0.0, "tokens": tokens, "answers": texts}))


def aggregate(url, model, prompts, max_tokens, reps, extra, streams):
    """`streams` clients at once, each through every prompt `reps` times."""
    extra = {"cache_prompt": False, **extra}
    results = [[] for _ in range(streams)]
    failures = []

    def client(i):
        order = prompts[i % len(prompts):] + prompts[:i % len(prompts)]
        try:
            for _ in range(reps):
                for prompt in order:
                    results[i].append(answer(url, model, prompt, max_tokens, extra))
        except Exception as error:  # a failed answer fails the measurement
            failures.append(repr(error))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        sys.exit(f"{len(failures)} client(s) failed: {failures[0]}")
    answers = [a for r in results for a in r]
    tokens = sum(n for _, n, _ in answers)
    return {"tps": tokens / wall, "tokens": tokens, "answers": [t for t, _, _ in answers]}


if __name__ == "__main__":
    main()
