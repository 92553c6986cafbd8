#!/usr/bin/env bash
# esd discard-mode throughput: NDJSON bytes per wall second that one esd core
# accepts, validates and answers, compared with a trivial sink on the same
# server (/_esd/sink only reads and discards the body), and with the
# filter_path ecp sends on every bulk request (the items filtered while they
# are written, bulk_filter.c).
#
#   test/bench/esd_throughput.sh [MiB-per-file (default 64)] [repeats (default 8)]
#
# esd is pinned to CPU 0, curl to CPU 1 (when there is one).  One keep-alive
# connection; curl streams the file (-T, no copy into memory first) REPEATS
# times with --next.  Stops by itself:
# every curl has a --max-time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mib=${1:-64}
reps=${2:-8}
esd=${ESD_BIN:-$root/test/esd/esd}

if [ ! -x "$esd" ] || [ -z "${ESD_BIN:-}" ]; then
    make -s -C "$root/test/esd" >/dev/null
fi

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# realistic documents: ~500 bytes, strings, numbers, booleans, nested object, array, date
perl -e '
    my ($mib, $out) = @ARGV;
    open my $fh, ">", $out or die;
    my $limit = $mib * 1024 * 1024; my $n = 0; my $bytes = 0;
    my @words = qw(kettle mug teapot spoon plate bowl fork knife glass cup jar pan lid tray);
    srand(42);
    while (1) {
        my $id = sprintf "order-%09d", $n;
        my $act = qq({"index":{"_index":"orders","_id":"$id"}}\n);
        my $desc = join " ", map { $words[rand @words] } 1..28;
        my $doc = sprintf q({"id":%d,"customer":{"id":%d,"name":"Customer %d","email":"c%d@example.com","vip":%s},"status":"%s","total":%.2f,"currency":"EUR","items":[{"sku":"SKU-%05d","qty":%d,"price":%.2f},{"sku":"SKU-%05d","qty":%d,"price":%.2f}],"created_at":"2024-%02d-%02dT%02d:%02d:%02dZ","description":"%s","tags":["web","promo"]}) . "\n",
            $n, $n % 100000, $n % 100000, $n % 100000, ($n % 7 ? "false" : "true"),
            (qw(new paid shipped done))[$n % 4], rand(1000), $n % 99999, 1 + $n % 5, rand(100),
            ($n + 7) % 99999, 1 + $n % 3, rand(50), 1 + $n % 12, 1 + $n % 28, $n % 24, $n % 60, $n % 60, $desc;
        last if $bytes + length($act) + length($doc) > $limit;
        print $fh $act, $doc; $bytes += length($act) + length($doc); $n++;
    }
    print STDERR "generated $n documents, $bytes bytes, avg doc ", int($bytes / $n), " bytes/pair\n";
' "$mib" "$tmp/bulk.ndjson"

size=$(stat -c %s "$tmp/bulk.ndjson")
cpus=$(nproc)
esd_cpu=0
curl_pin=()
if [ "$cpus" -ge 2 ]; then curl_pin=(taskset -c 1); fi

taskset -c $esd_cpu "$esd" --port 0 --port-file "$tmp/port" --discard \
    --max-content-length $((size + 1024)) >"$tmp/esd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(cat "$tmp/port")
url="http://127.0.0.1:$port"

run() {   # run PATH -> prints seconds
    local path=$1 args=()
    for ((i = 0; i < reps; i++)); do
        [ $i -gt 0 ] && args+=(--next)
        args+=(-s -g -o /dev/null --max-time 50 -H 'Content-Type: application/x-ndjson' -H 'Expect:'
               -X POST -T "$tmp/bulk.ndjson" "$url$path")
    done
    local t0 t1
    t0=$(date +%s.%N)
    "${curl_pin[@]}" curl "${args[@]}"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# warm-up (page cache, buffers)
curl -s -o /dev/null --max-time 50 -H 'Content-Type: application/x-ndjson' -H 'Expect:' \
    --data-binary "@$tmp/bulk.ndjson" "$url/_bulk"

# check that the answer is complete and correct before timing it
curl -s --max-time 50 -H 'Content-Type: application/x-ndjson' -H 'Expect:' \
    --data-binary "@$tmp/bulk.ndjson" "$url/_bulk?filter_path=errors" >"$tmp/check.json"
grep -q '"errors":false' "$tmp/check.json" || { echo "unexpected bulk answer: $(head -c 300 "$tmp/check.json")"; exit 1; }

# what ecp sends (the filter is applied while the items are written)
ecp_filter='errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.reason'

t_sink=$(run /_esd/sink)
t_bulk=$(run /_bulk)
t_filt=$(run "/_bulk?filter_path=$ecp_filter")
total=$((size * reps))
mbps() { echo "$total / $1 / 1000000" | bc -l; }
mbps_sink=$(mbps "$t_sink")
mbps_bulk=$(mbps "$t_bulk")
mbps_filt=$(mbps "$t_filt")
printf 'file: %d bytes x %d requests, one keep-alive connection, esd on cpu %d\n' "$size" "$reps" "$esd_cpu"
printf 'sink  (/_esd/sink, read and discard): %8.1f MB/s  (%.2f s)\n' "$mbps_sink" "$t_sink"
printf 'bulk  (/_bulk --discard, full items): %8.1f MB/s  (%.2f s)\n' "$mbps_bulk" "$t_bulk"
printf 'bulk  (same, with ecp'"'"'s filter_path):  %8.1f MB/s  (%.2f s)\n' "$mbps_filt" "$t_filt"
printf 'ratio bulk/sink: %.2f   filtered/unfiltered time: %.2f\n' \
    "$(echo "$mbps_bulk / $mbps_sink" | bc -l)" "$(echo "$t_filt / $t_bulk" | bc -l)"
