#!/usr/bin/env bash
# Debian packages nni-bio's tests and studies use: the Fashion-MNIST files
# (/usr/share/datasets/fashion-mnist) and an SSH server for the remote-training-service test.
# Skips the install when everything is there already; needs root (or sudo) otherwise.
set -euo pipefail
packages=(dataset-fashion-mnist openssh-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "system-packages: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
