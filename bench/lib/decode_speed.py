#!/usr/bin/env python3
"""Decode speed of a server's streamed chat answers, as its client sees it.

Sends each prompt of a task file (prompts separated by lines holding only
`---`) to an OpenAI-compatible server's /v1/chat/completions, greedy and
streamed, and times each answer from its first token to its last. Prints
JSON: decode tokens per second over all answers (each answer's first token,
which comes with the prompt, left out), the tokens, and the answers' text.
Standard library only, so it runs on a GPU machine with nothing installed.

Usage: decode_speed.py URL MODEL TASKFILE MAX_TOKENS REPS [EXTRA_BODY_JSON]
"""
import json
import sys
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
    texts, tokens, seconds = [], 0, 0.0
    answer(url, model, prompts[0], 16, extra)  # warm-up
    for _ in range(int(reps)):
        for prompt in prompts:
            text, n, spent = answer(url, model, prompt, int(max_tokens), extra)
            texts.append(text)
            tokens += max(n - 1, 0)
            seconds += spent
    print(json.dumps({"tps": tokens / seconds if seconds else 0.0, "tokens": tokens, "answers": texts}))


if __name__ == "__main__":
    main()
