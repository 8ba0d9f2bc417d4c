#!/usr/bin/env python3
"""Serve a folder over WebDAV with WsgiDAV + cheroot on 127.0.0.1, for tests.

Run with the venv's python that scripts/setup.sh creates
(``${DAVSYNC_VENV:-$HOME/.cache/davsync-venv}/bin/python``)::

    wsgidav_serve.py --root DIR --port PORT [--user U --password P]
                     [--faults FILE] [--count-file FILE]

Without --user the share is anonymous (read-write). With --user/--password
only HTTP Basic with that pair is accepted (digest is off).

Fault injection (tests/all/servers.rs, ``DavServer::set_faults``): FILE holds a
JSON object and is re-read on every request, so a test can change the faults
while the server runs (write a temporary file and rename it over FILE, so a
request never reads half a file). A missing or empty file means no faults.
Keys, all optional:

    "delay_ms": 200            sleep that long before handling each request
    "hang": true               do not answer: hold the request until the file
                               says otherwise (checked every 50 ms)
    "put_status": 507          answer every PUT with this status, body unread
    "status_for": {"PUT /a/": 507, "* /b": 503}
                               answer requests whose method ("*" = any) and
                               decoded path prefix match with that status
    "fail_after_requests": 3   let the first 3 requests after this content of
                               FILE was first seen through untouched; the
                               faults above apply from the 4th on. If none of
                               them is set, those requests get "fail_status"
    "fail_status": 503         (default 503)
    "respond_for": {"PROPFIND /ab/": {"status": 207, "body": "<x/>",
                                      "headers": {"Location": "http://elsewhere/"}}}
                               answer requests whose method ("*" = any) and
                               decoded path prefix match with that canned
                               response instead of the server's (a hostile or
                               broken server: bad XML, redirects, ...)
    "hang_after_requests": 5   the first 5 requests after this content of FILE
                               was first seen go through; every later one is
                               held until FILE changes, then answered 503
                               unprocessed (the client is killed meanwhile: a
                               crash "after 5 requests")

Every request that reaches the server, faulted or not, is counted: the total
since start is written to --count-file (a single integer, replaced atomically)
before the request is handled.

Prints ``READY http://127.0.0.1:PORT/`` on stdout once the socket listens. Exits
when its parent process dies, so a crashed test run leaves no server behind.
"""

import argparse
import json
import os
import sys
import threading
import time

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp


class Faults:
    """WSGI middleware: counts requests and injects the faults of a JSON file."""

    def __init__(self, app, faults_path, count_path):
        self.app = app
        self.faults_path = faults_path
        self.count_path = count_path
        self.lock = threading.Lock()
        self.total = 0  # requests since start
        self.seen_text = ""  # faults file content last seen
        self.since_set = 0  # requests since that content was first seen
        if count_path:
            self._write_count()

    def _write_count(self):
        tmp = f"{self.count_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(str(self.total))
        os.replace(tmp, self.count_path)

    def _read_faults(self):
        if not self.faults_path:
            return ""
        try:
            with open(self.faults_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @staticmethod
    def _parse(text):
        return json.loads(text) if text.strip() else {}

    def __call__(self, environ, start_response):
        with self.lock:
            self.total += 1
            if self.count_path:
                self._write_count()
            text = self._read_faults()
            if text != self.seen_text:
                self.seen_text, self.since_set = text, 0
            self.since_set += 1
            nth = self.since_set
        faults = self._parse(text)
        if "hang_after_requests" in faults:
            if nth <= int(faults["hang_after_requests"]):
                return self.app(environ, start_response)
            while self._read_faults() == text:
                time.sleep(0.02)
            return self._answer(start_response, 503, {}, b"held, then dropped\n")
        if nth <= int(faults.get("fail_after_requests", 0)):
            return self.app(environ, start_response)

        if faults.get("delay_ms"):
            time.sleep(faults["delay_ms"] / 1000.0)
        while faults.get("hang"):
            time.sleep(0.05)
            faults = self._parse(self._read_faults())

        method = environ["REQUEST_METHOD"]
        # cheroot has %-decoded PATH_INFO; WSGI tunnels its UTF-8 bytes as latin-1.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        for key, canned in faults.get("respond_for", {}).items():
            want_method, _, prefix = key.partition(" ")
            if want_method in ("*", method) and path.startswith(prefix):
                body = canned.get("body", "").encode()
                return self._answer(start_response, canned["status"], canned.get("headers", {}), body)
        status = None
        if method == "PUT" and faults.get("put_status"):
            status = faults["put_status"]
        for key, code in faults.get("status_for", {}).items():
            want_method, _, prefix = key.partition(" ")
            if want_method in ("*", method) and path.startswith(prefix):
                status = code
                break
        if status is None and "fail_after_requests" in faults and not (
            faults.get("put_status") or faults.get("status_for") or faults.get("hang")
            or faults.get("delay_ms")
        ):
            status = faults.get("fail_status", 503)
        if status is None:
            return self.app(environ, start_response)

        body = f"injected fault {status} for {method} {path}\n".encode()
        return self._answer(start_response, status, {"Content-Type": "text/plain"}, body)

    @staticmethod
    def _answer(start_response, status, headers, body):
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "connection")}
        start_response(
            f"{int(status)} Injected",
            list(headers.items())
            + [
                ("Content-Length", str(len(body))),
                # The request body is left unread: make the client reconnect.
                ("Connection", "close"),
            ],
        )
        return [body]


def exit_when_orphaned():
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--faults", help="JSON file of faults, re-read per request")
    p.add_argument("--count-file", help="file that receives the request count")
    args = p.parse_args()
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")

    if args.user is None:
        user_mapping = {"*": True}  # anonymous
    else:
        user_mapping = {"*": {args.user: {"password": args.password}}}
    config = {
        "host": "127.0.0.1",
        "port": args.port,
        "provider_mapping": {"/": FilesystemProvider(args.root)},
        "simple_dc": {"user_mapping": user_mapping},
        "http_authenticator": {
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "dir_browser": {"enable": False},
        "lock_storage": True,
        "verbose": 1,  # application errors only
        "logging": {"enable": False},
    }
    app = Faults(WsgiDAVApp(config), args.faults, args.count_file)
    server = wsgi.Server(("127.0.0.1", args.port), app, numthreads=20)
    server.prepare()  # binds and listens
    print(f"READY http://127.0.0.1:{args.port}/", flush=True)
    threading.Thread(target=exit_when_orphaned, daemon=True).start()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
