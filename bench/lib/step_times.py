"""Summarise the decode loop's `step` trace lines (SHELF_LOG=shelf_engine_llama=trace)
read from stdin: steps and mean milliseconds by tokens generated in the batch,
for steps without prompt tokens."""
import re
import sys
from collections import defaultdict

ANSI = re.compile(r"\x1b\[[0-9;]*m")
steps = defaultdict(list)
for line in sys.stdin:
    line = ANSI.sub("", line)
    if ": step " not in line:
        continue
    fields = dict(re.findall(r"(\w+)=([0-9.]+)", line))
    if fields.get("prompt") == "0" and "generated" in fields:
        steps[int(fields["generated"])].append(float(fields["ms"]))
print("| rows | steps | mean ms |")
print("| ---: | ---: | ---: |")
for rows in sorted(steps):
    times = steps[rows]
    print(f"| {rows} | {len(times)} | {sum(times) / len(times):.3f} |")
