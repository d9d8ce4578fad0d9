"""The planner against published llama.cpp runs it was not fitted to.

Reads bench/planner/published.csv (or --data FILE in the same columns: set,
hardware, model, test, kind, prompt, published, bar, build, source, notes),
asks `shelf fit MODEL --hardware BOX --prompt N --json` for each row, and
prints predicted against published. Rows of the `fit` set are the ones the
constants were fitted on; the bars are judged on the `check` set only, on
rows with bar=yes (a `no` says in its notes why the row is shown but not
judged, e.g. a llama.cpp build before a kernel change):

  decode:  at least 90% of rows within ±25%
  prefill: at least 75% of rows within ±25%

Usage: python3 bench/planner_check.py [--data FILE] [--set fit|check|all]
The table it prints is docs/planner.md's (run with --set check).
Exits 1 when a bar is missed. SHELF_BIN picks the binary (target/release/shelf)."""
import argparse
import csv
import json
import os
import subprocess
import sys

BARS = {"decode": 0.90, "prefill": 0.75}
TOLERANCE = 0.25
HERE = os.path.dirname(os.path.abspath(__file__))


def predict(shelf, cache, row):
    key = (row["hardware"], row["model"], row["prompt"])
    if key not in cache:
        prompt = max(int(row["prompt"]), 1)
        out = subprocess.run(
            [shelf, "fit", row["model"], "--hardware", row["hardware"], "--prompt", str(prompt), "--json"],
            capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"shelf fit {row['model']} --hardware {row['hardware']} failed: {out.stderr.strip()}")
        cache[key] = json.loads(out.stdout)
    estimate = cache[key]
    return estimate["prefill_tps"] if row["kind"] == "prefill" else estimate["decode_tps"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.path.join(HERE, "planner", "published.csv"))
    parser.add_argument("--set", default="all", choices=["fit", "check", "all"])
    args = parser.parse_args()
    shelf = os.environ.get("SHELF_BIN", "target/release/shelf")
    with open(args.data, newline="") as f:
        rows = [r for r in csv.DictReader(f) if args.set == "all" or r["set"] == args.set]
    cache = {}
    print("| set | box | model | test | published t/s | predicted t/s | predicted / published | judged |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | --- |")
    tally = {}
    for row in rows:
        published = float(row["published"])
        predicted = predict(shelf, cache, row)
        ratio = predicted / published
        within = abs(ratio - 1.0) <= TOLERANCE
        judged = row["bar"] == "yes"
        mark = ("ok" if within else "MISS") if judged else "shown only"
        print(f"| {row['set']} | {row['hardware']} | {row['model']} | {row['test']} | {published:.1f} "
              f"| {predicted:.1f} | {ratio:.2f} | {mark} |")
        if judged:
            counts = tally.setdefault((row["set"], row["kind"]), [0, 0])
            counts[0] += within
            counts[1] += 1
    print()
    missed = False
    for (which, kind), (good, total) in sorted(tally.items()):
        share = good / total
        line = f"{which} set, {kind}: {good}/{total} within ±25% ({share:.0%})"
        if which == "check":
            bar = BARS[kind]
            line += f", bar {bar:.0%}"
            if share < bar:
                line += " MISSED"
                missed = True
        print(line)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
