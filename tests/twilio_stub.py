#!/usr/bin/python3
"""A stand-in for Twilio's Messages API, for the status callback e2e test.

usage: twilio_stub.py CERT KEY LOG

Serves HTTPS on a free 127.0.0.1 port with CERT and KEY and prints
"twilio_stub listening on 127.0.0.1:PORT" when ready. Every POST to
/2010-04-01/Accounts/<sid>/Messages.json is answered 201 with
{"sid": "SM<n>", "status": "queued"}, as Twilio does; a POST to /send
(a generic gateway) 200 with {"messages": [{"id": "SM<n>", "status": 0}]}.
Each is appended to LOG as one JSON line: {"path", "form", "sid"} (the
form decoded). Anything else gets 404. It exits by itself after five minutes.
"""

import http.server
import json
import os
import ssl
import sys
import threading
import urllib.parse

LIFETIME = 300


def main():
    cert, key, log = sys.argv[1:4]
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            twilio = (self.path.startswith("/2010-04-01/Accounts/")
                      and self.path.endswith("/Messages.json"))
            if not twilio and self.path != "/send":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
            count[0] += 1
            sid = "SM%032x" % count[0]
            with open(log, "a") as f:
                f.write(json.dumps({"path": self.path, "form": form, "sid": sid}) + "\n")
            if twilio:
                out = json.dumps({"sid": sid, "status": "queued"}).encode()
            else:
                out = json.dumps({"messages": [{"id": sid, "status": 0}]}).encode()
            self.send_response(201 if twilio else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    timer = threading.Timer(LIFETIME, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    print("twilio_stub listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
