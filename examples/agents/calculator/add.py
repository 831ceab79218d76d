"""Tool `calculator.add`: arguments on stdin as JSON, result on stdout as JSON."""

import json
import sys

args = json.load(sys.stdin)
json.dump({"sum": args["a"] + args["b"]}, sys.stdout)
