#!/usr/bin/env bash
# Installs what kugetsu needs to build and test on Debian 12 (bookworm).
#
# Idempotent: installs only the packages that are missing, and runs `apt-get update` only
# if something is. Non-interactive. Must run as root when something is missing; otherwise
# it prints the packages and the command to install them, and exits 1.
set -euo pipefail

packages=(
    cmake g++ make git ca-certificates python3
    libboost-dev libboost-context-dev librange-v3-dev nlohmann-json3-dev
    librapidcheck-dev catch2 libbenchmark-dev libcli11-dev
    libsqlite3-dev sqlite3
    # the man page (help2man), and a shell to check the zsh completion with
    help2man zsh
    # clang's libFuzzer and sanitizer runtimes (scripts/fuzz.sh) are in libclang-rt-14-dev,
    # which clang-14 only recommends: --no-install-recommends below would leave it out.
    clang-14 libclang-rt-14-dev
)

installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-debian: all ${#packages[@]} packages are installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-debian: error: missing packages: ${missing[*]}" >&2
    echo "setup-debian: run this script as root, or: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "setup-debian: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
    installed "$p" || still+=("$p")
done
if [ "${#still[@]}" -ne 0 ]; then
    echo "setup-debian: error: still missing after apt-get install: ${still[*]}" >&2
    exit 1
fi
echo "setup-debian: done"
