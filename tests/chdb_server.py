#!/usr/bin/env python3
"""A current ClickHouse engine behind ClickHouse's HTTP interface, for tests.

    chdb_server.py DATA_DIR

Runs chDB (`chdb-core` from PyPI: the ClickHouse engine of today, in
process) on DATA_DIR and serves the part of ClickHouse's HTTP interface the
gateway's `clickhouse` crate uses, on a free loopback port that it prints as
its first line of output (`port N`):

- a query in the POST body (or `?query=`), answered in `?default_format=`
  (RowBinary for the crate's fetches) or in the FORMAT the SQL names;
- an INSERT in `?query=` with its data in the body (chunked or not): the
  data goes to a temporary file and is inserted with the same statement
  `FROM INFILE`, so the rows are exactly the bytes the gateway encoded;
- errors as ClickHouse gives them: status 500 and `Code: N. DB::Exception`.

So the gateway's own writer and reader (the Rust code, unchanged) run
against the current engine exactly as against a server. One query at a
time (chDB sessions are not shared across threads). The Rust test
(`tests/compat.rs`) starts it; `scripts/test` makes the virtual environment
with `chdb-core` in it. It exits when its standard input closes, so it never
outlives the test that started it.
"""

import os
import re
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chdb import session

LOCK = threading.Lock()
INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.*?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
HAS_FORMAT = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.I)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(self, status, data, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if status != 200:
            self.send_header("X-ClickHouse-Exception-Code", "1")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path == "/ping":
            return self.answer(200, b"Ok.\n", "text/plain")
        return self.do_POST()

    def do_POST(self):
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        data = self.body()
        try:
            with LOCK:
                out = self.run(params, data)
            self.answer(200, out)
        except Exception as e:  # chDB raises its server's exception text
            text = str(e)
            if "Code:" not in text:
                text = f"Code: 1000. DB::Exception: {text}"
            self.answer(500, text.encode(), "text/plain")

    def run(self, params, data):
        sql = params.get("query")
        if sql is None:
            sql, data = data.decode(), b""
        m = INSERT.match(sql)
        if m:
            with tempfile.NamedTemporaryFile(dir=DATA, suffix=".bin", delete=False) as f:
                f.write(data)
            try:
                quoted = f.name.replace("\\", "\\\\").replace("'", "\\'")
                SESSION.query(f"INSERT INTO {m.group(1)} FROM INFILE '{quoted}' FORMAT {m.group(2)}")
            finally:
                os.unlink(f.name)
            return b""
        fmt = params.get("default_format") or "TabSeparated"
        if HAS_FORMAT.search(sql):
            fmt = "TabSeparated"  # the SQL's own FORMAT wins
        return SESSION.query(sql, fmt).bytes()


def main():
    global SESSION, DATA
    DATA = os.path.abspath(sys.argv[1])
    os.makedirs(DATA, exist_ok=True)
    SESSION = session.Session(os.path.join(DATA, "chdb"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the parent closes it (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
