"""A webhook receiver for the compose kit: prints every request it gets (method, path,
CloudEvents headers, body) and answers 200. The Python standard library only."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        ce = {k: v for k, v in self.headers.items() if k.lower().startswith("ce-")}
        print(f"{self.command} {self.path} {ce} {body.decode('utf-8', 'replace')}", flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print("demo sink listening on :8000", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
