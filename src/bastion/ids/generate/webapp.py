"""The generator's web shop: a threaded stdlib HTTP server with pages, a product lookup, a search box and a login
form. Run inside the server namespace: ``python webapp.py ADDRESS PORT SECONDS`` (standard library only).

It is deliberately naive (the search echoes its query, the product id is pasted into a fake SQL string) so the web
attacks get real answers; it never executes anything. It stops by itself after SECONDS; each connection times
out after 30 s of silence."""

from __future__ import annotations

import html
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

USER, PASSWORD = "alice", "wonderland42"
PAGES = {"/": "Welcome to the shop", "/about": "About us", "/contact": "Write to us", "/products": "Our products",
         "/news": "What is new"}
FORM = ('<form method="post" action="/login"><input name="user"><input name="pass" type="password">'
        '<button>log in</button></form>')


class Handler(BaseHTTPRequestHandler):
    timeout = 30
    server_version = "shop/1.0"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, code: int, body: str) -> None:
        data = f"<html><body>{body}</body></html>".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/login":
            self._send(200, FORM)
        elif url.path == "/product":
            pid = q.get("id", ["1"])[0]
            sql = f"SELECT name, price FROM products WHERE id = '{pid}'"
            found = pid.isdigit() and 0 < int(pid) < 50
            self._send(200 if found else 404, f"<p>{html.escape(sql)}</p>" + ("<p>a product</p>" * 3 if found else ""))
        elif url.path == "/search":
            term = q.get("q", [""])[0]
            self._send(200, f"<h1>Results for {term}</h1>" + "<li>item</li>" * (len(term) % 7))
        elif url.path in PAGES:
            self._send(200, f"<h1>{PAGES[url.path]}</h1>" + "<p>lorem ipsum dolor sit amet</p>" * 20)
        else:
            self._send(404, "not found")

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        form = parse_qs(self.rfile.read(length).decode("latin-1"))
        ok = form.get("user", [""])[0] == USER and form.get("pass", [""])[0] == PASSWORD
        self._send(200, "Welcome back, alice" if ok else "Invalid user or password" + FORM)


class Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that hangs up (a flood, a slow attack) is expected; nothing to log


def serve(address: str, port: int, seconds: float) -> None:
    server = Server((address, port), Handler)
    server.daemon_threads = True
    timer = threading.Timer(seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
