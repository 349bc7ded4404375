// Build module for the pause process of the optional real node's sandbox image (no requirements).
module baseline-operator/tools/pause

go 1.26.0
