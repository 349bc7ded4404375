// Build module for the benchmark's calibration client (standard library only: no requirements).
module baseline-operator/tools/bench-client

go 1.26.0
