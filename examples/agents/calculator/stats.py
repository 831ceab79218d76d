"""Tool `calculator.stats`: mean, min and max of `values`."""

import json
import sys

values = json.load(sys.stdin)["values"]
json.dump(
    {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)},
    sys.stdout,
)
