#!/usr/bin/env bash
# Install the Debian packages ecp needs to build, test and demo, if missing.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail

packages=(
	make gcc pkg-config curl
	postgresql-15 postgresql-server-dev-15
	postgresql-15-mysql-fdw postgresql-15-cron mariadb-server
	libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev zlib1g-dev
	libipc-run-perl python3
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "ecp: missing Debian packages: ${missing[*]}" >&2
	echo "ecp: run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi

echo "ecp: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
