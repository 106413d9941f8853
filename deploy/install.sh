#!/bin/sh
# Installs a built miproxy on a systemd host:
#   PREFIX/bin/miproxy                      the binary (PREFIX defaults to /usr/local)
#   PREFIX/share/miproxy/examples/*.json    reference configs
#   /etc/miproxy/config.json                0640 root:miproxy, from an example, never overwritten
#   /etc/systemd/system/miproxy.service     host-wide daemon
#   /etc/systemd/system/miproxy@.service    one instance per app (/etc/miproxy/NAME.json)
# and creates the system user and group "miproxy". It does not enable or start anything.
#
# DESTDIR=DIR (or --destdir DIR) installs below DIR instead of /, for packaging or a dry run:
# no user is created, no ownership is changed and systemd is not told. See docs/deploy-vm.md.
set -eu

usage() {
  cat <<'USAGE'
Usage: deploy/install.sh [options]
  --binary FILE        the built miproxy (default: build/miproxy in the source tree)
  --prefix DIR         install the binary under DIR/bin (default: /usr/local)
  --destdir DIR        stage everything below DIR (same as the DESTDIR variable)
  --config NAME        example to install as /etc/miproxy/config.json when none exists:
                       vm-daemon (default), per-app, sidecar, dev
  --arc                Azure Arc: add the units to group "himds" (reads the HIMDS key file)
  -h, --help           this text
USAGE
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

script_dir=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$script_dir")

prefix=/usr/local
destdir=${DESTDIR:-}
binary=$source_dir/build/miproxy
example=vm-daemon
arc=0

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    die "$1 needs a value"
  fi
}

while [ "$#" -gt 0 ]; do
  case $1 in
    --binary) need_value "$@"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --prefix) need_value "$@"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) need_value "$@"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --config) need_value "$@"; example=$2; shift 2 ;;
    --config=*) example=${1#*=}; shift ;;
    --arc) arc=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

case $prefix in
  /*) ;;
  *) die "--prefix must be an absolute path: $prefix" ;;
esac
case $destdir in
  '' | /*) ;;
  *) destdir=$(pwd)/$destdir ;;
esac
# Strip trailing slashes so that paths join cleanly ("/" stays as the empty string).
prefix=$(printf '%s' "$prefix" | sed 's:/*$::')
destdir=$(printf '%s' "$destdir" | sed 's:/*$::')

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  die "no executable miproxy at $binary (build it first, or pass --binary FILE)"
fi
example_file=$script_dir/examples/$example.json
[ -f "$example_file" ] || die "no example config named '$example' in $script_dir/examples"

staged=0
if [ -n "$destdir" ]; then
  staged=1
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root, or stage into a directory with DESTDIR=DIR / --destdir DIR"
fi

bindir=$prefix/bin
unitdir=/etc/systemd/system
confdir=/etc/miproxy
exampledir=$prefix/share/miproxy/examples

say() {
  echo "install.sh: $*"
}

# --- user and group ---------------------------------------------------------------------------
if [ "$staged" -eq 0 ]; then
  if ! getent group miproxy >/dev/null; then
    groupadd --system miproxy
    say "created group miproxy"
  fi
  if ! getent passwd miproxy >/dev/null; then
    useradd --system --gid miproxy --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "miproxy authenticating proxy" miproxy
    say "created user miproxy"
  fi
  if [ "$arc" -eq 1 ] && ! getent group himds >/dev/null; then
    die "--arc: group himds does not exist (is the Azure Connected Machine agent installed?)"
  fi
fi

# --- binary and examples ----------------------------------------------------------------------
install -d -m 0755 "$destdir$bindir"
install -m 0755 "$binary" "$destdir$bindir/miproxy"
say "installed $bindir/miproxy"

install -d -m 0755 "$destdir$exampledir"
for f in "$script_dir"/examples/*.json; do
  install -m 0644 "$f" "$destdir$exampledir/"
done

# --- configuration ----------------------------------------------------------------------------
# 0750 root:miproxy: the service reads it, other local users do not. Apps that use the Unix
# socket join group miproxy too, so secret files named by the config (secret_file,
# certificate_file) must be readable by the miproxy user alone: 0400 miproxy:miproxy.
install -d -m 0750 "$destdir$confdir"
if [ "$staged" -eq 0 ]; then
  chown root:miproxy "$confdir"
fi
if [ -e "$destdir$confdir/config.json" ]; then
  say "kept the existing $confdir/config.json"
else
  install -m 0640 "$example_file" "$destdir$confdir/config.json"
  if [ "$staged" -eq 0 ]; then
    chown root:miproxy "$confdir/config.json"
  fi
  say "installed $confdir/config.json from examples/$example.json: edit it, then run"
  say "  $bindir/miproxy check --config $confdir/config.json"
fi

# --- systemd units ----------------------------------------------------------------------------
install -d -m 0755 "$destdir$unitdir"
for unit in miproxy.service miproxy@.service; do
  tmp=$(mktemp)
  # The units name /usr/local/bin/miproxy; follow --prefix.
  sed "s:/usr/local/bin/miproxy:$bindir/miproxy:g" "$script_dir/systemd/$unit" >"$tmp"
  install -m 0644 "$tmp" "$destdir$unitdir/$unit"
  rm -f "$tmp"
  if [ "$arc" -eq 1 ]; then
    install -d -m 0755 "$destdir$unitdir/$unit.d"
    tmp=$(mktemp)
    printf '%s\n' "# Azure Arc: the HIMDS key file is readable by group himds only." \
      "[Service]" "SupplementaryGroups=himds" >"$tmp"
    install -m 0644 "$tmp" "$destdir$unitdir/$unit.d/arc.conf"
    rm -f "$tmp"
  fi
done
say "installed $unitdir/miproxy.service and $unitdir/miproxy@.service"

if [ "$staged" -eq 0 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say "systemd reloaded; start with: systemctl enable --now miproxy.service"
elif [ "$staged" -eq 0 ]; then
  say "systemd is not running here; the units take effect at the next boot under systemd"
else
  say "staged below $destdir (no user created, no ownership changed, systemd not told)"
fi
