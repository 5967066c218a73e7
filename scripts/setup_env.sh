#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks: FFmpeg and espeak-ng (apt), Chromium for the browser test,
# and a venv at .venv with requirements-dev.txt and this package installed editable (its console commands on PATH). Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(ffmpeg espeak-ng)
[ "${WITH_BROWSER:-1}" = 1 ] && apt_packages+=(chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r requirements-dev.txt (about 2 minutes on a fresh machine)"
  # torch first and alone: with the pin satisfied, nothing later can pull a multi-GB CUDA build.
  .venv/bin/pip install -q --disable-pip-version-check "$(grep -E '^torch==' requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  # The package itself, editable: the pinned requirements above are its dependencies, so pip resolves nothing more.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
