#!/usr/bin/env bash
# The pure core stays pure: nothing under src/core/ (tests included: they are unit tests of pure
# functions) may reach the API server, the runtime, the clock, the environment or the shells
# around it. Run by tests/all.sh with the lints; prints each offending line and fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

forbidden=(
    'kube::Client' 'kube::Api\b' 'kube::api::' 'kube::runtime::(watcher|reflector|controller)'
    '\btokio::' 'Timestamp::now\(' 'SystemTime::now\(' 'Instant::now\(' 'OffsetDateTime::now'
    'std::env::' 'std::fs::' 'std::net::' '\btracing::' 'prometheus_client'
    'crate::(reconcile|webhook|status|cli|telemetry|kubectl)\b'
)
pattern=$(IFS='|'; echo "${forbidden[*]}")
if hits=$(grep -rnE "$pattern" src/core --include='*.rs' | grep -vE '^[^:]+:[0-9]+:\s*//'); then
    printf 'layers: src/core must stay pure (no I/O, clock, environment or shell imports):\n%s\n' "$hits" >&2
    exit 1
fi
echo "layers: src/core is pure ($(find src/core -name '*.rs' | wc -l) files)"
