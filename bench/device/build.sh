#!/bin/sh
# Builds, here, every binary bench/device/run.sh needs on the device: static
# (CGO_ENABLED=0) Linux binaries in bench/bin/, which git ignores and the
# device run carries. The device has no Go toolchain and no network.
#
#   bench/device/build.sh            # GOARCH defaults to this machine's
set -eu
cd "$(dirname "$0")/.."
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o bin/ ./cmd/server ./cmd/wsload ./cmd/benchall ./cmd/million ./cmd/summarize
ls -l bin/server bin/wsload bin/benchall bin/million bin/summarize
