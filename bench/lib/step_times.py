"""Summarise the decode loop's `step` trace lines (SHELF_LOG=shelf_engine_llama=trace)
read from stdin: steps and mean milliseconds by tokens generated in the batch,
for steps without prompt tokens, and apart from them the settled steps (the
same shape as the two before: on CUDA, those that replay a captured graph)."""
import re
import statistics
import sys
from collections import defaultdict

ANSI = re.compile(r"\x1b\[[0-9;]*m")
steps = defaultdict(list)
settled = defaultdict(list)
last = [None, None]
for line in sys.stdin:
    line = ANSI.sub("", line)
    if ": step " not in line:
        continue
    fields = dict(re.findall(r"(\w+)=([0-9.]+)", line))
    shape = (fields.get("generated"), fields.get("prompt"))
    if fields.get("prompt") == "0" and "generated" in fields:
        rows = int(fields["generated"])
        steps[rows].append(float(fields["ms"]))
        if last == [shape, shape]:
            settled[rows].append(float(fields["ms"]))
    last = [last[1], shape]


def median(times):
    return f"{statistics.median(times):.3f}" if times else "-"


print("| rows | steps | mean ms | median ms | settled steps | settled median ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for rows in sorted(steps):
    times = steps[rows]
    print(f"| {rows} | {len(times)} | {sum(times) / len(times):.3f} | {median(times)} "
          f"| {len(settled[rows])} | {median(settled[rows])} |")
