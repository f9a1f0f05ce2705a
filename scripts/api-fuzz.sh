#!/usr/bin/env bash
# Fuzzes `tally serve` from its own OpenAPI document: schemathesis (PyPI,
# pinned, in a virtualenv cached under $TALLY_ASSETS) generates requests
# for every operation /v1/openapi.json describes, valid and invalid, and
# checks every answer against the document: no 5xx, only documented status
# codes, content types and headers, bodies matching their schemas, auth
# enforced, unsupported methods refused. Loopback only, bounded by
# --max-examples.
#
# `positive_data_acceptance` is left out: a schema-valid body can still be
# a bundle that is not a signed package, a receipt whose seal does not
# check, or a backend this host does not serve, which the host must refuse
# and a schema cannot express.
#
# Usage: scripts/api-fuzz.sh [MAX_EXAMPLES]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
assets="${TALLY_ASSETS:-$PWD/.assets}"
venv="$assets/venv-schemathesis-4.32.5"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv.tmp"
    "$venv.tmp/bin/pip" install -q "schemathesis==4.32.5"
    rm -rf "$venv" && mv "$venv.tmp" "$venv"
    # A moved virtualenv keeps its old paths in its scripts' shebangs.
    sed -i "1s|$venv.tmp|$venv|" "$venv"/bin/*
fi
cargo build --locked -q --bin tally
tally="${CARGO_TARGET_DIR:-$PWD/target}/debug/tally"

work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
echo "api-fuzz-token" > "$work/token"
TALLY_HOME="$work/home" "$tally" serve --listen 127.0.0.1:0 --no-warm-up \
    --backend tract --token-file "$work/token" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do
    url="$(sed -n 's/^listening on //p' "$work/serve.log")"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { cat "$work/serve.log" >&2; exit 1; }
# From the scratch directory: schemathesis and hypothesis keep their
# caches (.schemathesis/, .hypothesis/) in the working directory.
cd "$work"
"$venv/bin/schemathesis" run "$url/v1/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance \
    -H "Authorization: Bearer api-fuzz-token" \
    --max-examples "$examples" --workers 1 --request-timeout 30
