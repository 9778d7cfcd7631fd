#!/usr/bin/env bash
# TLS for the Prometheus endpoints (mutual TLS): a small CA, one server certificate per daemon
# host, one client certificate per scraper. Needs only openssl. docs/monitoring.md shows the use.
#
#   deploy/tls/tls-certs.sh ca     DIR                 DIR/ca.crt, DIR/ca.key (keep ca.key offline)
#   deploy/tls/tls-certs.sh server DIR NAME SAN...     DIR/NAME.crt, DIR/NAME.key; SAN: DNS names or IPs
#   deploy/tls/tls-certs.sh client DIR NAME            DIR/NAME.crt, DIR/NAME.key (e.g. prometheus)
#
# Private keys are written 0600; certificates 0644. Nothing is overwritten.
set -euo pipefail

usage() { sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
kind=$1 dir=$2
shift 2
DAYS=${DAYS:-825}
mkdir -p "$dir"
umask 077

refuse_existing() {
  for f in "$@"; do
    if [ -e "$f" ]; then echo "tls-certs: $f exists; remove it first" >&2; exit 2; fi
  done
}

case "$kind" in
  ca)
    refuse_existing "$dir/ca.crt" "$dir/ca.key"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$DAYS" \
      -subj "/CN=semalign metrics CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 0644 "$dir/ca.crt"
    echo "$dir/ca.crt"
    ;;
  server|client)
    [ $# -ge 1 ] || usage
    name=$1
    shift
    case "$name" in ""|*/*|.*) echo "tls-certs: expected a plain name, got '$name'" >&2; exit 2;; esac
    [ -f "$dir/ca.crt" ] && [ -f "$dir/ca.key" ] || { echo "tls-certs: $dir/ca.crt and ca.key are needed first (tls-certs.sh ca $dir)" >&2; exit 2; }
    refuse_existing "$dir/$name.crt" "$dir/$name.key"
    ext=$(mktemp)
    trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
    if [ "$kind" = server ]; then
      [ $# -ge 1 ] || { echo "tls-certs: a server certificate needs at least one DNS name or IP" >&2; exit 2; }
      sans=()
      for san in "$@"; do
        if [[ $san =~ ^[0-9.]+$ || $san == *:* ]]; then sans+=("IP:$san"); else sans+=("DNS:$san"); fi
      done
      (IFS=,; printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "${sans[*]}") > "$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' > "$ext"
    fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
      -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days "$DAYS" -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    chmod 0644 "$dir/$name.crt"
    echo "$dir/$name.crt"
    ;;
  *) usage ;;
esac
