#!/usr/bin/env bash
# CI: `promtool check rules` on deploy/prometheus/alerts.yml, then its unit tests (alerts.test.yml).
# promtool comes from Debian's `prometheus` package; when it is missing this downloads that package with
# apt and unpacks only promtool into target/tools (no server installed, no service started).
set -euo pipefail
cd "$(dirname "$0")/../.."

promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  promtool=target/tools/usr/bin/promtool
  if [ ! -x "$promtool" ]; then
    if ! command -v apt-get >/dev/null; then
      echo "check-rules: no promtool and no apt-get: install Prometheus's promtool" >&2
      exit 1
    fi
    mkdir -p target/tools
    (cd target/tools && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb . && rm prometheus_*.deb)
  fi
fi
"$promtool" check rules deploy/prometheus/alerts.yml
"$promtool" test rules deploy/prometheus/alerts.test.yml

# The dashboard's queries parse too: promtool checks them as recording rules, with Grafana's variables
# given plain values.
dashboard_rules=$(mktemp --suffix=.yml)
trap 'rm -f "$dashboard_rules"' EXIT
{
  echo "groups: [{name: dashboard, rules: ["
  sed -n 's/^ *"expr": "\(.*\)",\{0,1\}$/\1/p' deploy/grafana/tether.json |
    sed -e 's/\\"/"/g' -e 's/\$__rate_interval/5m/g' -e 's/\$sidecar/.*/g' |
    awk '{ gsub(/'"'"'/, "'"''"'"); printf "  {record: \"dashboard:q%d\", expr: '"'"'%s'"'"'},\n", NR, $0 }'
  echo "]}]"
} >"$dashboard_rules"
"$promtool" check rules "$dashboard_rules" | sed "s|$dashboard_rules|deploy/grafana/tether.json (queries)|"
