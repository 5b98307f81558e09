#!/usr/bin/env python3
"""The token service of the e2e tests' registry: Docker's token authentication.

GET /token?service=S&scope=repository:NAME:ACTIONS answers {"token": JWT}: a JWT signed
RS256 (by openssl) with the signing certificate in its x5c header, which the registry
trusts (its auth.token.rootcertbundle). The user named on the command line, with its
password (HTTP basic), gets the actions asked for; anonymous callers get none. One line
per request on stdout, so a test can see who asked for what.

Usage: token_server.py PORT KEY.pem CERT.der ISSUER USER PASSWORD
"""
import base64
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

PORT, KEY, CERT_DER, ISSUER, USER, PASSWORD = sys.argv[1:7]
with open(CERT_DER, "rb") as f:
    X5C = base64.b64encode(f.read()).decode()
WANTED_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        known = self.headers.get("Authorization", "") == WANTED_AUTH
        scopes = " ".join(query.get("scope", [])).split()
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) == 3 and parts[0] == "repository":
                actions = parts[2].split(",") if known else []
                access.append({"type": "repository", "name": parts[1], "actions": actions})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": USER if known else "",
            "aud": query.get("service", [""])[0],
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{os.getpid()}-{time.monotonic_ns()}",
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": [X5C]}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", KEY],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
        ).stdout
        body = json.dumps({"token": signing_input + "." + b64url(signature), "expires_in": 600}).encode()
        who = USER if known else "anonymous"
        print(f"token user={who} scope={' '.join(scopes)}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
