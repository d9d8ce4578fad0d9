"""How fast could prompt lookup make decode on this machine, at best?

Replays greedy answers (token ids of prompt and answer, one JSON object a
line, as `cargo run --release -p shelf-engine-llama --example dump_tokens`
writes them) through prompt lookup as shelf does it (the latest of the
longest repeat of the text's last 2 to 16 tokens), charging each step what a
decode of that many rows was measured to cost (`rows ms` lines, as
`--example rows_bench` prints them). Prints, per task, the speed-up over
plain decode of:

- an oracle that knows before each step how many drafted tokens the target
  will keep, and drafts exactly those (padded to a cheaper shape where one
  exists): no drafting policy with this lookup can beat it;
- simple rules: draft R-1 tokens whenever the match is at least M long.

Usage: python3 bench/speculative_replay.py TOKENS.jsonl ROWS.txt [--bar B]
Exits 1 when the oracle on the rewrite task is below B (default: none).
"""
import argparse
import json
import sys

LONGEST, SHORTEST = 16, 2


def load_costs(path):
    costs = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            costs[int(parts[0])] = float(parts[1])
    if 1 not in costs:
        sys.exit(f"{path}: no cost for one row")
    return costs


def cost_of(costs, rows):
    """Measured, or read along the straight line between measured sizes."""
    if rows in costs:
        return costs[rows]
    below = max((r for r in costs if r < rows), default=None)
    above = min((r for r in costs if r > rows), default=None)
    if below is None or above is None:
        return None
    return costs[below] + (rows - below) / (above - below) * (costs[above] - costs[below])


def lookup(text, most):
    """What followed the latest of the longest earlier repeat of the text's
    last tokens, and the match's length."""
    last, before = text[-1], text[:-1]
    best = None
    for end in range(len(before) - 1, -1, -1):
        if before[end] != last:
            continue
        matched = 1
        while matched < LONGEST and end >= matched and text[end - matched] == before[len(before) - matched]:
            matched += 1
        if matched >= SHORTEST and (best is None or matched > best[0]):
            best = (matched, end + 1)
            if matched >= LONGEST:
                break
    if best is None:
        return [], 0
    return text[best[1]:best[1] + most], best[0]


def replay(answers, costs, choose):
    """Plain time over speculative time for every answer; `choose(kept,
    matched)` gives the rows of each step (1: plain decode)."""
    most = max(costs) - 1
    plain = speculative = 0.0
    for prompt, output in answers:
        plain += len(output) * costs[1]
        at = 1  # the first token comes with the prompt
        while at < len(output):
            drafted, matched = lookup(prompt + output[:at], most)
            kept = 0
            while kept < len(drafted) and at + kept < len(output) and drafted[kept] == output[at + kept]:
                kept += 1
            rows = choose(kept, matched if drafted else 0)
            speculative += cost_of(costs, rows)
            at += 1 + (min(kept, rows - 1) if rows > 1 else 0)
    return plain / speculative


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tokens")
    parser.add_argument("rows")
    parser.add_argument("--bar", type=float)
    args = parser.parse_args()
    costs = load_costs(args.rows)
    measured = sorted(costs)

    def oracle(kept, matched):
        if kept == 0:
            return 1
        rows = min((r for r in measured if r >= kept + 1), key=lambda r: costs[r], default=1)
        worth = rows > 1 and cost_of(costs, rows) / (kept + 1) < costs[1]
        return rows if worth else 1

    tasks = {}
    for line in open(args.tokens):
        answer = json.loads(line)
        tasks.setdefault(answer["task"], []).append((answer["prompt"], answer["output"]))
    status = 0
    for task, answers in tasks.items():
        best = replay(answers, costs, oracle)
        rules = []
        for least in (2, 4, 6, 8):
            for rows in (r for r in (4, 8, 16, 32) if r in costs):
                speed = replay(answers, costs, lambda kept, matched: rows if matched >= least else 1)
                rules.append((speed, f"match >= {least}, {rows} rows"))
        speed, rule = max(rules)
        print(f"{task}: oracle {best:.3f}x; best rule ({rule}) {speed:.3f}x")
        if args.bar is not None and task == "rewrite" and best < args.bar:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
