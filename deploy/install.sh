#!/usr/bin/env bash
# Lays out a service host for the units in deploy/systemd (README: "Running on two laptops").
#
#   sudo deploy/install.sh rx --from DIR --bundle BUNDLE
#   sudo deploy/install.sh tx --from DIR --bundle BUNDLE --rx RX_HOST [--data-dir IDX_DIR]
#   sudo deploy/install.sh op --from DIR --tx TX_HOST --rx RX_HOST
#   options: --root PREFIX (every path below PREFIX; tests), --code DIR (the clone, /opt/semalign)
#
# DIR holds what the laptop received: keys/ (this role's NAME.key_secret and NAME.key, and for
# tx and op the peers' public rx.key, tx.key), allow-tx/ allow-ops/ allow-monitor/ (*.key), and
# optionally tls/ (ca.crt and ROLE-metrics.crt/.key from deploy/tls/tls-certs.sh: metrics over
# mutual TLS on every interface; without them Prometheus stays on loopback).
# tx and rx: user `semalign`, /var/lib/semalign/{keys,allow-tx,allow-ops,allow-monitor,tls,bundles,data},
# /etc/semalign/ROLE.yaml from deploy/ROLE.yaml with absolute paths, the unit in /etc/systemd/system.
# op: /etc/semalign/ctl.yaml naming the operator's own files in DIR (they stay where they are).
# Running it again gives the same result (allow-lists mirror DIR: a key removed there goes).
set -euo pipefail

USER_NAME=semalign
STATE=/var/lib/semalign
ETC=/etc/semalign
UNITS=/etc/systemd/system
DATA_PORT=5555 CONTROL_PORT=5556 TX_MONITOR_PORT=5557 RX_MONITOR_PORT=5558
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "install.sh: $*" >&2; exit 2; }
usage() { sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
role=$1
shift
case "$role" in tx|rx|op) ;; -h|--help) usage ;; *) die "expected the role tx, rx or op first, got '$role'" ;; esac

root="" from="" bundle="" data_dir="" tx_host="" rx_host="" code=/opt/semalign
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case "$1" in
    --root) root=$2 ;;
    --from) from=$2 ;;
    --bundle) bundle=$2 ;;
    --data-dir) data_dir=$2 ;;
    --tx) tx_host=$2 ;;
    --rx) rx_host=$2 ;;
    --code) code=$2 ;;
    *) die "unknown option $1 (see the head of $0)" ;;
  esac
  shift 2
done

# Sources are read as given, before anything is written; the installed paths are absolute.
abs() { [ -e "$1" ] || die "$2: $1 does not exist"; (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
[ -n "$from" ] || die "--from DIR is required (the directory holding keys/ and the allow-lists)"
from=$(abs "$from" --from)
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(abs "$root" --root)
fi
keys="$from/keys"
[ -f "$keys/$role.key_secret" ] || die "$keys/$role.key_secret is missing (semalign keygen $role --out $keys)"
[ -f "$keys/$role.key" ] || die "$keys/$role.key is missing (semalign keygen $role --out $keys)"

# A YAML scalar: plain when it cannot be misread, else double-quoted (JSON is YAML).
yaml_str() {
  if [[ $1 =~ ^[A-Za-z0-9_./:+-]+$ && $1 != *": "* ]]; then printf '%s' "$1"
  else python3 -c 'import json, sys; print(json.dumps(sys.argv[1]), end="")' "$1"; fi
}

# render TEMPLATE OUT KEY=VALUE...: the template with each key's value replaced (a commented
# `# key:` line is uncommented; a missing key is appended to its section), comments kept.
# KEY is `name` (top level) or `section.name`; VALUE `-` deletes the key's line.
render() {
  python3 - "$@" <<'PY'
import re, sys
template, out, *pairs = sys.argv[1:]
lines = open(template).read().splitlines()
for pair in pairs:
    key, value = pair.split("=", 1)
    section, _, name = key.rpartition(".")
    indent = "  " if section else ""
    start, end = 0, len(lines)
    if section:
        start = next(i for i, l in enumerate(lines) if re.match(rf"{section}:\s*(#.*)?$", l)) + 1
        end = next((i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    pattern = re.compile(rf"^{indent}(# )?{name}:\s*(\S*)(\s+#.*)?$")
    hit = next((i for i in range(start, end) if pattern.match(lines[i])), None)
    if value == "-":
        if hit is not None:
            del lines[hit]
        continue
    line = f"{indent}{name}: {value}"
    if hit is None:
        lines.insert(end, line)
    else:
        comment = pattern.match(lines[hit]).group(3) or ""
        lines[hit] = line + (f"  {comment.strip()}" if comment else "")
open(out, "w").write("\n".join(lines) + "\n")
PY
}

# copy_keys SRC DEST: DEST's *.key mirror SRC's (public certificates, 0644).
copy_keys() {
  install -d -m 0755 -o "$owner" -g "$owner" "$2"
  rm -f "$2"/*.key
  local n=0
  for f in "$1"/*.key; do
    [ -f "$f" ] || continue
    install -m 0644 -o "$owner" -g "$owner" "$f" "$2/"
    n=$((n + 1))
  done
  [ $n -gt 0 ] || die "$1 holds no public key (*.key); the daemon would refuse to start"
}

# copy_tree SRC DEST: DEST becomes a copy of SRC, owned by the service user, read-only to it.
copy_tree() {
  rm -rf "$2.new"
  cp -r "$1" "$2.new"
  chown -R "$owner:$owner" "$2.new"
  chmod -R u=rwX,go=rX "$2.new"
  rm -rf "$2"
  mv "$2.new" "$2"
}

# Host names go into endpoints and the YAML as they are: letters, digits and . - _ : [ ] only.
for host in "$tx_host" "$rx_host"; do
  [[ -z $host || $host =~ ^[][A-Za-z0-9._:-]+$ ]] || die "expected a host name or address, got '$host'"
done

install -d -m 0755 "$root$ETC"

if [ "$role" = op ]; then
  [ -n "$tx_host" ] && [ -n "$rx_host" ] || die "op needs --tx TX_HOST and --rx RX_HOST"
  for f in op.key_secret tx.key rx.key; do [ -f "$keys/$f" ] || die "$keys/$f is missing"; done
  render "$HERE/ctl.yaml" "$root$ETC/ctl.yaml.new" \
    "tx=tcp://$tx_host:$CONTROL_PORT" \
    "tx_monitor=tcp://$tx_host:$TX_MONITOR_PORT" \
    "rx_monitor=tcp://$rx_host:$RX_MONITOR_PORT" \
    "rx_peer=$(yaml_str "$keys/rx.key")" \
    "security.key=$(yaml_str "$keys/op.key_secret")" \
    "security.peer=$(yaml_str "$keys/tx.key")"
  chmod 0644 "$root$ETC/ctl.yaml.new"
  mv "$root$ETC/ctl.yaml.new" "$root$ETC/ctl.yaml"
  echo "$root$ETC/ctl.yaml"
  exit 0
fi

[ -n "$bundle" ] || die "$role needs --bundle BUNDLE (the directory semalign pretrain wrote)"
bundle=$(abs "$bundle" --bundle)
[ -f "$bundle/metadata.json" ] || die "--bundle: $bundle/metadata.json is missing (not a bundle)"
dataset=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["dataset"])' "$bundle/metadata.json")
# The bundle came from another laptop: its dataset name becomes a path and a YAML value here.
[[ $dataset =~ ^(digits|mnist|fashion-mnist)$ ]] || die "--bundle: metadata.json names an unknown dataset '$dataset'"
if [ "$role" = tx ]; then
  [ -n "$rx_host" ] || die "tx needs --rx RX_HOST (the RX laptop's name or address)"
  [ -f "$keys/rx.key" ] || die "$keys/rx.key is missing (RX's public key, from the RX laptop)"
  [ "$dataset" = digits ] || [ -n "$data_dir" ] || die "tx needs --data-dir (the $dataset IDX files: TX reads its images there)"
fi
[ -z "$data_dir" ] || data_dir=$(abs "$data_dir" --data-dir)

# The service user (the host's own, also under --root: the units name it).
if ! getent passwd "$USER_NAME" >/dev/null; then
  useradd --system --user-group --home-dir "$STATE" --shell /usr/sbin/nologin "$USER_NAME"
fi
owner=$USER_NAME
state="$root$STATE"
install -d -m 0750 -o "$owner" -g "$owner" "$state"
install -d -m 0700 -o "$owner" -g "$owner" "$state/keys" "$state/tls"
install -d -m 0755 -o "$owner" -g "$owner" "$state/bundles" "$state/data"

install -m 0600 -o "$owner" -g "$owner" "$keys/$role.key_secret" "$state/keys/"
install -m 0644 -o "$owner" -g "$owner" "$keys/$role.key" "$state/keys/"
name=$(basename "$bundle")
copy_tree "$bundle" "$state/bundles/$name"
# Paths in the config are absolute (a `~` would be the service user's home) and carry --root.
q() { yaml_str "$state/$1"; }
settings=("dataset=$dataset" "bundle=$(q "bundles/$name")" "metrics_out=$(q "$role-metrics.jsonl")"
          "security.key=$(q "keys/$role.key_secret")")
if [ -n "$data_dir" ]; then
  copy_tree "$data_dir" "$state/data/$dataset"
  settings+=("data_dir=$(q "data/$dataset")")
elif [ "$role" = tx ]; then
  settings+=("data_dir=null")
fi
if [ "$role" = tx ]; then
  install -m 0644 -o "$owner" -g "$owner" "$keys/rx.key" "$state/keys/"
  copy_keys "$from/allow-ops" "$state/allow-ops"
  settings+=("endpoint=tcp://$rx_host:$DATA_PORT" "control=tcp://0.0.0.0:$CONTROL_PORT"
             "monitor=tcp://0.0.0.0:$TX_MONITOR_PORT"
             "security.peer=$(q keys/rx.key)" "security.allow=$(q allow-ops)")
else
  copy_keys "$from/allow-tx" "$state/allow-tx"
  settings+=("bind=tcp://0.0.0.0:$DATA_PORT" "monitor=tcp://0.0.0.0:$RX_MONITOR_PORT"
             "security.allow=$(q allow-tx)")
fi
copy_keys "$from/allow-monitor" "$state/allow-monitor"
settings+=("security.monitor_allow=$(q allow-monitor)")

# Metrics over mutual TLS when the operator made this host a certificate; loopback otherwise.
tls="$from/tls"
if [ -f "$tls/$role-metrics.crt" ]; then
  for f in ca.crt "$role-metrics.key"; do [ -f "$tls/$f" ] || die "$tls/$f is missing (deploy/tls/tls-certs.sh)"; done
  install -m 0644 -o "$owner" -g "$owner" "$tls/ca.crt" "$tls/$role-metrics.crt" "$state/tls/"
  install -m 0600 -o "$owner" -g "$owner" "$tls/$role-metrics.key" "$state/tls/"
  settings+=("prometheus_addr=0.0.0.0" "prometheus_cert=$(q "tls/$role-metrics.crt")"
             "prometheus_key=$(q "tls/$role-metrics.key")" "prometheus_client_ca=$(q tls/ca.crt)")
else
  settings+=("prometheus_addr=127.0.0.1" "prometheus_cert=-" "prometheus_key=-" "prometheus_client_ca=-")
fi

render "$HERE/$role.yaml" "$root$ETC/$role.yaml.new" "${settings[@]}"
chmod 0644 "$root$ETC/$role.yaml.new"
mv "$root$ETC/$role.yaml.new" "$root$ETC/$role.yaml"
install -d -m 0755 "$root$UNITS"
# The unit as shipped; under --root or --code its paths move with the files.
sed -e "s|/opt/semalign|$code|g" -e "s|/var/lib/semalign|$state|g" -e "s|/etc/semalign|$root$ETC|g" \
  "$HERE/systemd/semalign-$role.service" > "$root$UNITS/semalign-$role.service.new"
chmod 0644 "$root$UNITS/semalign-$role.service.new"
mv "$root$UNITS/semalign-$role.service.new" "$root$UNITS/semalign-$role.service"
[ -x "$root$code/.venv/bin/semalign" ] || [ -n "$root" ] \
  || echo "install.sh: note: $code/.venv/bin/semalign is missing; the unit runs it (README: the clone and its .venv)" >&2
echo "$root$ETC/$role.yaml"
echo "$root$UNITS/semalign-$role.service"
