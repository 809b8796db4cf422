"""A real writ-issuer for tests: a fresh SoftHSM2 token, an ES256 key, a
SQLite store, a policy file and an audit log in a temporary directory, and
the daemon listening on 127.0.0.1. Agents get real EC keys; assertions are
signed with PyJWT (an independent JOSE implementation)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

WRIT = os.environ.get("WRIT_BIN", "build/writ")
ISSUER_BIN = os.path.join(os.path.dirname(WRIT), "writ-issuer")
GT = "urn:ietf:params:oauth:grant-type:token-exchange"
TT = "urn:ietf:params:oauth:token-type:jwt"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Agent:
    def __init__(self, fx, agent_id, groups=()):
        self.id = agent_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pub_path = os.path.join(fx.dir, f"{agent_id}.pub.pem")
        with open(self.pub_path, "wb") as f:
            f.write(self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        args = ["agent", "add", agent_id, "--key", self.pub_path]
        for g in groups:
            args += ["--group", g]
        fx.writ(*args)
        self.fx = fx

    def assertion(self, **over):
        now = int(time.time())
        claims = {"iss": self.id, "sub": self.id, "aud": self.fx.issuer, "iat": now,
                  "exp": now + 60, "jti": uuid.uuid4().hex}
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="ES256")


class Issuer:
    def __init__(self, policy, extra_conf="", token_dir=None, tls=False):
        self.dir = tempfile.mkdtemp(prefix="writ-issuer-")
        self.port = free_port()
        self.ssl = None
        if tls:
            # A self-signed certificate for 127.0.0.1, trusted by this client.
            cert, key = (os.path.join(self.dir, n) for n in ("tls.crt", "tls.key"))
            newkey = (["-newkey", "rsa:2048"] if tls == "rsa" else
                      ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key,
                            "-out", cert,
                            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                            "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            extra_conf += f"tls_cert = {cert}\ntls_key = {key}\n"
            import ssl
            self.ssl = ssl.create_default_context(cafile=cert)
        self.issuer = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        subprocess.run([WRIT, "token", "init", "--dir", self.dir, "--issuer", self.issuer],
                       check=True, capture_output=True)
        self.conf = os.path.join(self.dir, "writ.conf")
        with open(self.conf, "a") as f:
            f.write(f"listen = 127.0.0.1:{self.port}\nleeway = 5\n{extra_conf}")
        self.writ("key", "generate", "--alg", "ES256")
        self.write_policy(policy)
        self.proc = None
        self.audit = os.path.join(self.dir, "audit.log")

    def write_policy(self, policy):
        with open(os.path.join(self.dir, "policy.json"), "w") as f:
            json.dump(policy, f)

    def writ(self, *args, ok=True, stdin=None):
        p = subprocess.run([WRIT, "-c", self.conf, *args], capture_output=True, text=True,
                           input=stdin)
        if ok and p.returncode != 0:
            raise RuntimeError(f"writ {' '.join(args)}: {p.stderr}")
        return p

    def start(self):
        # stderr to a file, not a pipe nobody drains: a full pipe would
        # block the issuer's next log line (and its key thread with it).
        self.err_path = os.path.join(self.dir, "issuer.err")
        with open(self.err_path, "a") as err:
            self.proc = subprocess.Popen([ISSUER_BIN, "-c", self.conf], stdout=subprocess.PIPE,
                                         stderr=err, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("issuer did not start: " + line + self.stderr_text())
        return self

    def raw_db(self):
        """A plain sqlite3 connection to the state database, with the SQL
        functions writ's triggers call registered as writ's store does: for
        tests that change rows behind writ's back."""
        import sqlite3
        db = sqlite3.connect(os.path.join(self.dir, "writ.db"), timeout=5)
        db.create_function("writ_actor", 0, lambda: "test-raw-sql")
        db.create_function("writ_event", -1, lambda *kv: json.dumps(
            {k: v for k, v in zip(kv[::2], kv[1::2]) if v is not None}, separators=(",", ":")))
        return db

    def stderr_text(self):
        """Everything the issuer (all its runs in this fixture) wrote to stderr."""
        with open(self.err_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(timeout=30)
            self.proc.stdout.close()
            self.proc = None
            return rc
        return None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, path, body=None, ctype="application/x-www-form-urlencoded",
                headers=None, method=None):
        url = self.issuer + path
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None and ctype is not None:
            req.add_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def token(self, assertion, audience="orders-db", scope="db:read", extra=None, raw=None):
        params = [("grant_type", GT), ("subject_token", assertion),
                  ("subject_token_type", TT), ("audience", audience), ("scope", scope)]
        params += list(extra or [])
        body = raw if raw is not None else urllib.parse.urlencode(
            [(k, v) for k, v in params if v is not None])
        status, headers, text = self.request("/token", body)
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            doc = {"raw": text}
        return status, headers, doc

    def audit_records(self):
        with open(self.audit) as f:
            return [json.loads(l) for l in f if l.endswith("\n")]
