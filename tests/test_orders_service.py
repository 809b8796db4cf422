#!/usr/bin/python3
"""The demo target service (examples/orders-service) as agents meet it: a real
writ-issuer on 127.0.0.1 (SoftHSM2 token, SQLite store, policy, audit log)
and the service verifying its tokens offline against the issuer's JWKS URL.
GET /orders needs db:read, POST /orders needs db:write, and the token's lim
caps the rate. Refusals follow RFC 6750 s.3. Each check is named for the
behaviour it pins."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from issuer_fixture import Agent, Issuer, WRIT  # noqa: E402

SERVICE_BIN = os.path.join(os.path.dirname(WRIT), "examples", "orders-service")
LEEWAY = 1

POLICY = {"version": 1, "rules": [
    {"id": "orders-read", "effect": "allow", "subjects": ["os-*"], "audiences": ["orders-db"],
     "actions": ["db:read"], "ttl": 120, "lim": {"rps": 2}},
    {"id": "no-writes", "effect": "deny", "subjects": ["*"], "audiences": ["orders-*"],
     "actions": ["db:write"]},
]}

failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f"  [{detail}]"))
    if not cond:
        failures += 1


class Service:
    """orders-service on an ephemeral port; its stderr (the decision log)
    is collected line by line."""

    def __init__(self, fx, *extra):
        args = [SERVICE_BIN, "--issuer", fx.issuer, "--audience", "orders-db",
                "--listen", "127.0.0.1:0", "--leeway", str(LEEWAY), *extra]
        if not any(a.startswith("--jwks") for a in extra):
            args += ["--jwks-url", fx.issuer + "/.well-known/jwks.json"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://\S+:(\d+)/orders", line)
        if m is None:
            raise RuntimeError("orders-service did not start: " + line + self.proc.stderr.read())
        self.port = int(m.group(1))
        self.log = []
        self.reader = threading.Thread(target=self._read_log, daemon=True)
        self.reader.start()

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def decisions(self):
        out = []
        for line in list(self.log):
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def request(self, method="GET", path="/orders", token=None, headers=(), body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.putrequest(method, path)
        if token is not None:
            conn.putheader("Authorization", "Bearer " + token)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body.encode() if body is not None else None)
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


def mint(fx, sub, scope="db:read", aud="orders-db", ttl=None):
    args = ["mint", "--sub", sub, "--aud", aud, "--scope", scope]
    if ttl is not None:
        args += ["--ttl", str(ttl)]
    return fx.writ(*args).stdout.strip()


def exchange(fx, agent, scope="db:read"):
    st, _, doc = fx.token(agent.assertion(), audience="orders-db", scope=scope)
    if st != 200:
        raise RuntimeError(f"exchange for {agent.id}: {st} {doc}")
    return doc["access_token"]


def challenge(hdrs):
    """Parse a Bearer WWW-Authenticate into (scheme, {attr: value})."""
    h = hdrs.get("www-authenticate", "")
    scheme, _, rest = h.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_no_or_bad_token(svc, fx):
    st, hdr, body = svc.request()
    scheme, attrs = challenge(hdr)
    check(st == 401 and scheme == "Bearer" and attrs.get("realm") == "orders-db",
          "no token: 401 with WWW-Authenticate: Bearer realm=\"orders-db\"", (st, hdr))
    check("error" not in attrs, "no token: the challenge has no error attribute (RFC 6750 s.3.1)",
          attrs)
    check(hdr.get("cache-control") == "no-store", "answers are Cache-Control: no-store")

    st, hdr, _ = svc.request(headers=[("Authorization", "Basic dXNlcjpwYXNz")])
    scheme, attrs = challenge(hdr)
    check(st == 401 and scheme == "Bearer" and "error" not in attrs,
          "another auth scheme: 401 Bearer challenge without an error code", (st, hdr))

    st, hdr, body = svc.request(token="not.a.token")
    scheme, attrs = challenge(hdr)
    check(st == 401 and attrs.get("error") == "invalid_token" and attrs.get("error_description"),
          "garbage token: 401 error=\"invalid_token\" with a description", (st, hdr))
    check(json.loads(body).get("error") == "invalid_token", "the JSON body names the error too")

    other = mint(fx, "os-other-aud", aud="other-db")
    st, hdr, _ = svc.request(token=other)
    scheme, attrs = challenge(hdr)
    check(st == 401 and attrs.get("error") == "invalid_token"
          and "audience" in attrs.get("error_description", ""),
          "token for another audience: 401 invalid_token (wrong audience)", (st, hdr))

    # A token signed by a key the issuer never published.
    forged = jwt.encode({"iss": fx.issuer, "sub": "os-forged", "aud": "orders-db",
                         "scope": "db:read", "iat": int(time.time()),
                         "exp": int(time.time()) + 60, "jti": "forged-1"},
                        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"typ": "at+jwt", "kid": "not-a-published-kid"})
    st, hdr, _ = svc.request(token=forged)
    check(st == 401 and challenge(hdr)[1].get("error") == "invalid_token",
          "token signed by an unpublished key: 401 invalid_token", (st, hdr))


def test_malformed_authorization(svc, fx):
    tok = mint(fx, "os-malformed")
    for what, hdrs in [
        ("two spaces after Bearer", [("Authorization", "Bearer  " + tok)]),
        ("a token with a space in it", [("Authorization", "Bearer " + tok[:10] + " " + tok[10:])]),
        ("Bearer with no token", [("Authorization", "Bearer")]),
        ("two Authorization headers", [("Authorization", "Bearer " + tok),
                                       ("Authorization", "Bearer " + tok)]),
    ]:
        st, hdr, _ = svc.request(headers=hdrs)
        check(st == 400 and challenge(hdr)[1].get("error") == "invalid_request",
              f"{what}: 400 error=\"invalid_request\" (RFC 6750 s.3.1)", (st, hdr))
    st, _, _ = svc.request(headers=[("Authorization", "bEARER " + tok)])
    check(st == 200, "the scheme name is case-insensitive (RFC 9110 s.11.1)", st)


def test_read_allowed_write_blocked(svc, fx):
    reader = Agent(fx, "os-reader")
    tok = exchange(fx, reader)
    claims = jwt.decode(tok, options={"verify_signature": False})
    check(claims.get("lim") == {"rps": 2} and claims.get("scope") == "db:read",
          "the issued token carries scope db:read and lim {rps: 2}", claims)

    st, hdr, body = svc.request(token=tok)
    doc = json.loads(body) if st == 200 else {}
    check(st == 200 and isinstance(doc.get("orders"), list) and doc["orders"],
          "GET /orders with a db:read token: 200 with the orders", (st, body))

    st, hdr, body = svc.request("POST", token=tok, body='{"customer":"acme"}')
    scheme, attrs = challenge(hdr)
    check(st == 403 and attrs.get("error") == "insufficient_scope"
          and attrs.get("scope") == "db:write",
          "POST /orders with a db:read token: 403 insufficient_scope, scope=\"db:write\"",
          (st, hdr))

    time.sleep(0.2)
    dec = [d for d in svc.decisions() if d.get("jti") == claims["jti"]]
    check(any(d["allowed"] and d["action"] == "db:read" and d["sub"] == "os-reader"
              for d in dec),
          "the decision log has the read, with the token's jti and sub", dec)
    check(any(not d["allowed"] and d["action"] == "db:write" for d in dec),
          "the decision log has the refused write, with the same jti", dec)
    issued = [r for r in fx.audit_records() if r.get("jti") == claims["jti"]]
    check(len(issued) == 1 and issued[0]["event"] == "token_issued",
          "that jti joins the service's log with the issuer's audit record", issued)
    check(any(d.get("jti") is None and not d["allowed"] for d in svc.decisions()),
          "a request without a token is logged too (no jti)")

    writer = mint(fx, "os-writer", scope="db:read db:write")
    st, _, body = svc.request("POST", token=writer, body='{"customer":"acme"}')
    check(st == 201 and "created" in json.loads(body),
          "POST /orders with a db:write token (writ mint): 201 created", (st, body))


def test_expired(svc, fx):
    tok = mint(fx, "os-expiring", ttl=1)
    st, _, _ = svc.request(token=tok)
    check(st == 200, "a 1-second token works at once", st)
    time.sleep(1 + LEEWAY + 1.5)
    st, hdr, _ = svc.request(token=tok)
    attrs = challenge(hdr)[1]
    check(st == 401 and attrs.get("error") == "invalid_token"
          and "expired" in attrs.get("error_description", ""),
          "the same token after exp + leeway: 401 invalid_token (expired), cache or not",
          (st, hdr))


def test_rate_limit(svc, fx):
    tok = exchange(fx, Agent(fx, "os-busy"))
    res = [svc.request(token=tok) for _ in range(8)]
    codes = [r[0] for r in res]
    check(codes[0] == 200 and 429 in codes, "lim rps 2: a quick burst of 8 GETs hits 429", codes)
    limited = [r for r in res if r[0] == 429]
    ra = int(limited[0][1].get("retry-after", "0")) if limited else 0
    check(1 <= ra <= 2, "429 carries Retry-After in whole seconds (1..2 for rps 2)", ra)
    check(limited and json.loads(limited[0][2]).get("error") == "rate_limited",
          "the 429 body says rate_limited")
    time.sleep(ra)
    st, _, _ = svc.request(token=tok)
    check(st == 200, "after waiting Retry-After the next GET is 200", st)
    other = exchange(fx, Agent(fx, "os-calm"))
    st, _, _ = svc.request(token=other)
    check(st == 200, "another agent is not limited by the busy one's bucket", st)
    time.sleep(0.2)
    jti = jwt.decode(tok, options={"verify_signature": False})["jti"]
    check(any(d.get("jti") == jti and not d["allowed"] and "rate" in d["why"]
              for d in svc.decisions()), "the rate-limited requests are logged with the jti")


def test_http_edges(svc, fx):
    tok = mint(fx, "os-edges")
    st, _, _ = svc.request(path="/customers", token=tok)
    check(st == 404, "an unknown path is 404", st)
    st, hdr, _ = svc.request("DELETE", token=tok)
    check(st == 405 and "GET" in hdr.get("allow", ""), "DELETE /orders: 405 with Allow", st)
    writer = mint(fx, "os-big-writer", scope="db:write")
    st, _, _ = svc.request("POST", token=writer, body="x" * (64 * 1024))
    check(st == 413, "a body over the cap: 413", st)
    st, _, _ = svc.request(token="A" * 40000)
    check(st in (401, 413, 431), "an oversized Authorization header is refused", st)


def test_jwks_file(fx):
    tok = mint(fx, "os-file")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(fx.request("/.well-known/jwks.json")[2])
    try:
        svc = Service(fx, "--jwks", f.name)
        st, _, _ = svc.request(token=tok)
        check(st == 200, "--jwks FILE: a valid token is accepted", st)
        check(svc.stop() == 0, "SIGTERM: the --jwks service exits 0")
    finally:
        os.unlink(f.name)


def test_startup_errors(fx):
    p = subprocess.run([SERVICE_BIN, "--issuer", fx.issuer, "--jwks-url",
                        "http://127.0.0.1:9/.well-known/jwks.json", "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and p.stderr.strip() and "listening" not in p.stdout,
          "keys unreachable at start: exits 1 with one line, does not serve blind",
          (p.returncode, p.stderr))
    p = subprocess.run([SERVICE_BIN, "--audience", "orders-db"], capture_output=True, text=True)
    check(p.returncode == 2 and "usage" in p.stderr, "no --issuer: usage, exit 2")


def main():
    if not os.access("/usr/lib/softhsm/libsofthsm2.so", os.R_OK):
        print("SKIP: SoftHSM2 not installed")
        return 77
    if not os.access(SERVICE_BIN, os.X_OK):
        print(f"FAIL: {SERVICE_BIN} not built")
        return 1
    fx = Issuer(POLICY)
    svc = None
    try:
        fx.start()
        svc = Service(fx)
        test_no_or_bad_token(svc, fx)
        test_malformed_authorization(svc, fx)
        test_read_allowed_write_blocked(svc, fx)
        test_rate_limit(svc, fx)
        test_expired(svc, fx)
        test_http_edges(svc, fx)
        test_jwks_file(fx)
        test_startup_errors(fx)
        rc = svc.stop()
        svc = None
        check(rc == 0, "SIGTERM: orders-service exits 0")
    finally:
        if svc is not None:
            svc.proc.kill()
            svc.proc.wait()
        fx.close()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
