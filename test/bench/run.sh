#!/usr/bin/env bash
# make bench: every benchmark, each reporting figures against a baseline
# measured in the same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/esd_throughput.sh"
bash "$here/sync_throughput.sh"
bash "$here/mysql_paging.sh"
bash "$here/mysql_sharded.sh"
