#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a live `tollgate serve` in store mode, with the
# admin API's own OpenAPI document: no server error, and every status, content type
# and response body as documented. The store is seeded with the example configuration
# so operations reach real resources. Called by scripts/test.sh; needs a built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/tollgate
dir=$(mktemp -d)
token=schemathesis-token
port_file="$dir/out"
TOLLGATE_ADMIN_TOKEN=$token "$bin" serve --store "sqlite://$dir/tollgate.db" \
  --staging-listen 127.0.0.1:0 --production-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$port_file" 2>"$dir/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
admin=""
for _ in $(seq 1 100); do
  admin=$(sed -n 's/^tollgate: admin API *\(http:\/\/[^ ]*\)\/api\/v1.*/\1/p' "$port_file")
  [ -n "$admin" ] && break
  kill -0 $pid 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$admin" ] || { echo "schemathesis.sh: the server did not start" >&2; cat "$dir/err" >&2; exit 1; }
# Seed: the example's configuration, with a certificate of its own for its CA file (a
# save checks the files a configuration names, as `tollgate check` does).
cp examples/websocket-echo/tollgate.yaml "$dir/"
sh examples/websocket-echo/make-cert.sh "$dir/ssl-cert" >/dev/null
TOLLGATE_ADMIN_URL=$admin TOLLGATE_ADMIN_TOKEN=$token "$bin" apply -f "$dir/tollgate.yaml" >/dev/null
st run "$admin/api/v1/openapi.json" -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples 10 --workers 2 --seed 42
