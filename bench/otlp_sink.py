"""A loopback OTLP/HTTP endpoint that accepts every export: used when no Collector is built.

POST /v1/traces and /v1/metrics are read whole and answered 200 with an empty protobuf
body (an empty Export*ServiceResponse: nothing rejected). GET answers 200 as a readiness
probe. HTTP/1.1 keep-alive, like a collector, so the exporter reuses its connection.
Usage: python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sink).serve_forever()


if __name__ == "__main__":
    main()
