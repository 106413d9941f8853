#!/usr/bin/env bash
# Installs missing dependencies, builds miproxy, then:
#   ./run.sh                          starts the demo (scripts/demo.sh): Azurite over HTTPS with
#                                     OAuth, miproxy in front, curl commands to try; Ctrl-C stops
#   ./run.sh --config FILE            runs miproxy with FILE (any miproxy arguments work:
#   ./run.sh check --config FILE      check, doctor, wait, --help, ...)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./scripts/install-deps.sh
./scripts/build.sh --quiet --target miproxy

if [ $# -eq 0 ]; then
  exec ./scripts/demo.sh
fi
exec ./build/miproxy "$@"
