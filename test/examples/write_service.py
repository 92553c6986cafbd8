#!/usr/bin/env python3
"""An example write service for ecp consumers of kind 'http' (standard library only).

ecp POSTs every batch to the consumer's URL as JSON:

    {"task": "orders", "run": 12, "part": 0, "index": "orders",
     "indexes": ["orders"],                   # + "orders-42" while a migration of orders loads
     "tag": "FLUSH", "op": "index",
     "docs": [{"id": "1", "doc": {...}},      # a document to write
              {"id": "2", "delete": true},    # gone at the source
              {"id": "3"}]}                   # id only: the service builds the document

and expects a 2xx answer {"failed": [{"id": "7", "retryable": true, "reason": "..."}]}
(an empty list, {} or an empty body: all accepted).  Retryable ids are re-sent after a
back-off, the others become dead letters.  429/502/503/504 (and other 5xx) make ecp send the
whole batch again; 401/403 and other 4xx fail the run.  A batch may come twice (after a crash
ecp re-sends from its checkpoint), so writes must be idempotent per id: here every write is an
index or delete by _id.  Every document must reach every index of "indexes" (a dual write while
an alias_swap migration loads): a document the answer does not list in "failed" counts as written
to all of them.

This one assembles the documents its own way (adds "synced_by") and forwards each batch to
the _bulk endpoint of its own Elasticsearch (the "flush group"), into <index>-flush for each
index of "indexes", or into --index alone.

    python3 write_service.py --listen 127.0.0.1:8080 --es http://127.0.0.1:9200 \
        [--index NAME] [--port-file FILE] [--max-seconds N] [--expect-auth 'Bearer xyz']
"""
import argparse, gzip, json, os, threading, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None


class Unavailable(Exception):
    """Elasticsearch cannot take the batch now: answer 503 and ecp sends it again later."""


def assemble(item):
    """The service's own document assembly."""
    if "doc" in item:
        doc = dict(item["doc"])
    else:
        # Id only: the task has no lookup query, so this is where a team looks the row up
        # in its own database (SELECT ... WHERE id = %s) and builds the document.
        doc = {"id": item["id"], "assembled": True}
    doc["synced_by"] = "write-service"
    return doc


def es_bulk(ndjson):
    """POST to Elasticsearch's _bulk; returns its items, raises Unavailable when ES cannot take it.
    (A busy service would keep connections to ES open: a pool, or the official client.)"""
    req = urllib.request.Request(ARGS.es.rstrip("/") + "/_bulk", data=ndjson, method="POST",
                                 headers={"Content-Type": "application/x-ndjson"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)["items"]
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            raise Unavailable(f"elasticsearch answered {e.code}")
        # Any other refusal of the whole request (bad credentials of this service...) is our
        # own configuration problem: a 500 makes ecp retry until it is fixed, no run fails.
        raise RuntimeError(f"elasticsearch refused _bulk: {e.code} {e.read()[:300]!r}")
    except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
        raise Unavailable(f"elasticsearch unreachable: {e}")


def write_batch(batch):
    """Forward one batch; returns the "failed" list of the answer."""
    docs = batch["docs"]
    if not docs:
        return []
    # every index the batch names (a dual write while a migration loads), each to <name>-flush
    targets = [ARGS.index] if ARGS.index else [name + "-flush" for name in batch.get("indexes", [batch["index"]])]
    lines = []
    for item in docs:
        for index in targets:
            if item.get("delete"):
                lines.append({"delete": {"_index": index, "_id": item["id"]}})
            else:
                lines.append({"index": {"_index": index, "_id": item["id"]}})
                lines.append(assemble(item))
    ndjson = "".join(json.dumps(line) + "\n" for line in lines).encode()
    items = es_bulk(ndjson)
    if len(items) != len(docs) * len(targets):
        raise Unavailable(f"_bulk answered {len(items)} items for {len(docs) * len(targets)} actions")
    failed = []
    for n, item in enumerate(docs):
        # a document is written only when every index took it; retryable if every refusal is
        refusals = []
        for result in items[n * len(targets):(n + 1) * len(targets)]:
            action, r = next(iter(result.items()))
            status = r.get("status", 500)
            if status < 300 or (action == "delete" and status == 404):  # deleting a missing doc is fine
                continue
            err = r.get("error") or {}
            reason = f"{err.get('type', 'error')}: {err.get('reason', '')}" if isinstance(err, dict) else str(err)
            if len(targets) > 1:
                reason = f"{r.get('_index', '?')}: {reason}"
            refusals.append((status == 429 or status >= 500, reason))
        if refusals:
            failed.append({"id": item["id"], "retryable": all(retry for retry, _ in refusals),
                           "reason": "; ".join(reason for _, reason in refusals)})
    return failed


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: ecp reuses its connections
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError, EOFError) as e:
            self.close_connection = True
            return self.answer(400, {"error": f"unreadable body: {e}"})
        if ARGS.expect_auth and self.headers.get("Authorization") != ARGS.expect_auth:
            return self.answer(401, {"error": "bad credentials"})
        try:
            batch = json.loads(body)
            if not isinstance(batch.get("docs"), list) or not isinstance(batch.get("index"), str):
                raise ValueError("docs (an array) and index (a string) are required")
        except (ValueError, AttributeError) as e:
            return self.answer(400, {"error": f"malformed batch: {e}"})
        try:
            self.answer(200, {"failed": write_batch(batch)})
        except Unavailable as e:
            self.answer(503, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - anything unexpected: let ecp retry the batch
            self.answer(500, {"error": f"{type(e).__name__}: {e}"})

    def log_message(self, fmt, *args):
        if ARGS.verbose:
            super().log_message(fmt, *args)


def main():
    global ARGS
    p = argparse.ArgumentParser(description="example ecp write service forwarding to Elasticsearch")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any free port)")
    p.add_argument("--es", default="http://127.0.0.1:9200", help="the Elasticsearch to write to")
    p.add_argument("--index", help="target index (default: the batch's index + '-flush')")
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument("--expect-auth", help="answer 401 unless the Authorization header is this")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ARGS = p.parse_args()
    host, port = ARGS.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    if ARGS.port_file:  # tmp file + rename: a reader never sees half a port
        with open(ARGS.port_file + ".tmp", "w") as f:
            f.write(f"{server.server_address[1]}\n")
        os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    if ARGS.max_seconds:
        timer = threading.Timer(ARGS.max_seconds, server.shutdown)
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
