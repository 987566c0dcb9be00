#!/bin/sh
# Run every benchmark; each prints progress on stderr and one JSON line on
# stdout.  Pass --quick (about 10-20 s each) or --smoke; default is the full run.
set -e
cd "$(dirname "$0")/.."
for name in bulk echo_rtt session_open memory fairness routed_bulk frame_flood; do
    python benchmarks/$name.py "$@"
done
