"""The page's server: loopback only, a JSON API over one `Collection`, and the package's static files.

``GET /`` is the page; ``/static/<name>`` its script and style (only the package's own files);
``/api/summary`` the path's kind, counts, run metrics and eval reports; ``/api/rows`` every episode's
table row (the page sorts, filters and pages them); ``/api/episode/<n>`` one whole record, read on demand.
Nothing else under PATH, or outside it, is reachable.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from nbagent.view.data import Collection

HOST = "127.0.0.1"
STATIC = {"view.js": "text/javascript", "view.css": "text/css", "index.html": "text/html"}


def static_text(name: str) -> str:
    """One of the page's files, from the package."""
    return resources.files("nbagent.view").joinpath("static", name).read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the command prints the address once."""

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any) -> None:
        self._send(json.dumps(value, ensure_ascii=False).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        collection = self.server.collection
        if path in ("/", "/index.html"):
            self._send(static_text("index.html").encode(), STATIC["index.html"])
        elif path.startswith("/static/") and path.removeprefix("/static/") in STATIC:
            name = path.removeprefix("/static/")
            self._send(static_text(name).encode(), STATIC[name])
        elif path == "/api/summary":
            self._json(collection.summary())
        elif path == "/api/rows":
            self._json(collection.rows)
        elif path.startswith("/api/episode/") and path.removeprefix("/api/episode/").isdigit():
            try:
                self._json(collection.episode(int(path.removeprefix("/api/episode/"))))
            except IndexError:
                self._send(b"no such episode", "text/plain", HTTPStatus.NOT_FOUND)
        else:
            self._send(b"not found", "text/plain", HTTPStatus.NOT_FOUND)


class ViewServer(ThreadingHTTPServer):
    """Serves one collection on ``127.0.0.1``; port 0 picks a free one (see `url`)."""

    daemon_threads = True

    def __init__(self, collection: Collection, port: int = 0) -> None:
        super().__init__((HOST, port), _Handler)
        self.collection = collection

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"
