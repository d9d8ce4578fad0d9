"""How fast could prompt lookup make decode on this machine, at best?

Replays greedy answers (token ids of prompt and answer, one JSON object a
line, as `cargo run --release -p shelf-engine-llama --example dump_tokens`
writes them) through prompt lookup as shelf does it (the latest of the
longest repeat of the text's last 2 to 16 tokens), charging each step what a
decode of that many rows was measured to cost (`rows ms` lines, as
`--example rows_bench` prints them). Prints, per task, the speed-up over
plain decode (the first token, which comes with the prompt, left out) of:

- the best any policy could do: at each step it may draft any start of the
  lookup's proposal, padded to any measured size, knowing the whole answer
  in advance (an exact dynamic programme over positions, as lookup depends
  only on the text so far);
- simple rules: draft up to R-1 of the lookup's tokens whenever the match
  is at least M long.

Usage: python3 bench/speculative_replay.py TOKENS.jsonl ROWS.txt [--bar B]
Exits 1 when the best on the rewrite task is below B (default: no bar).
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


def steps(prompt, output, most):
    """For each position after the first, the lookup's proposal length and
    how many of its tokens the answer goes on with."""
    found = {}
    for at in range(1, len(output)):
        drafted, matched = lookup(prompt + output[:at], most)
        kept = 0
        while kept < len(drafted) and at + kept < len(output) and drafted[kept] == output[at + kept]:
            kept += 1
        found[at] = (len(drafted), matched if drafted else 0, kept)
    return found


def best(output, found, costs):
    """Least time to decode the answer after its first token: at each
    position, decode plainly or verify r rows (any measured size), keeping
    min(kept, r - 1) drafted tokens plus the target's own."""
    least = [0.0] * (len(output) + 1)
    for at in range(len(output) - 1, 0, -1):
        _, _, kept = found[at]
        options = [costs[1] + least[at + 1]]
        for rows, ms in costs.items():
            if rows > 1:
                options.append(ms + least[min(len(output), at + 1 + min(kept, rows - 1))])
        least[at] = min(options)
    return least[1]


def replay(output, found, costs, rule):
    """Time to decode the answer after its first token when `rule(offered,
    matched)` gives each step's rows (1: plain decode)."""
    time, at = 0.0, 1
    while at < len(output):
        offered, matched, kept = found[at]
        rows = min(rule(offered, matched), offered + 1)
        time += cost_of(costs, rows)
        at += 1 + min(kept, rows - 1)
    return time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tokens")
    parser.add_argument("rows")
    parser.add_argument("--bar", type=float)
    args = parser.parse_args()
    costs = load_costs(args.rows)
    most = max(costs) - 1
    tasks = {}
    for line in open(args.tokens):
        answer = json.loads(line)
        output = answer["output"]
        found = steps(answer["prompt"], output, most)
        tasks.setdefault(answer["task"], []).append((output, found))
    status = 0
    for task, answers in tasks.items():
        plain = sum((len(output) - 1) * costs[1] for output, _ in answers)
        optimum = plain / sum(best(output, found, costs) for output, found in answers)
        rules = []
        for least in (2, 4, 6, 8):
            for rows in (r for r in (4, 8, 16, 32) if r in costs):
                rule = lambda offered, matched: rows if matched >= least else 1
                speed = plain / sum(replay(output, found, costs, rule) for output, found in answers)
                rules.append((speed, f"match >= {least}, up to {rows} rows"))
        speed, rule = max(rules)
        print(f"{task}: best possible {optimum:.3f}x; best rule ({rule}) {speed:.3f}x")
        if args.bar is not None and task == "rewrite" and optimum < args.bar:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
