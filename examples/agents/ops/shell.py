"""Tool `ops.shell`: echoes the command; it never executes anything."""

import json
import sys

json.dump({"would_run": json.load(sys.stdin)["command"]}, sys.stdout)
