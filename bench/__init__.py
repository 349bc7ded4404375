"""Performance benchmarks of baseline-operator on a real local control plane (not tests).

`make bench` (or `.venv/bin/python -m bench --help`) starts a control plane, runs the scenarios in
`bench.scenarios` against the real operator process and writes `bench/results/<date>.{json,md,png}`.
`bench.harness` holds the plumbing (a lean API client, watch-based arrival timing, the audit log
tally, the operator process); `bench.report` turns the figures into the JSON, markdown and chart.
"""
