#!/usr/bin/python3
"""Tokens minted by writ in a real SoftHSM2 token verify with independent
implementations: PyJWT (python3-jwt) using `writ jwks` output, and the
openssl command over the signing input, for every supported algorithm.
Also: the same tokens verify with `writ verify`, and the CLI rejects them
for the wrong audience or issuer with one clear line."""
import base64
import json
import os
import subprocess
import sys
import tempfile

import jwt
from jwcrypto import jwk as jwcrypto_jwk

WRIT = os.environ.get("WRIT_BIN", "build/writ")
ALGS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
ISS = "http://127.0.0.1:8080"
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def writ(conf, *args, stdin=None, ok=True):
    p = subprocess.run([WRIT, "-c", conf, *args], input=stdin, capture_output=True, text=True)
    if ok and p.returncode != 0:
        sys.exit(f"writ {' '.join(args)} failed: {p.stderr}")
    return p


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def der_from_raw(raw):
    half = len(raw) // 2

    def der_int(b):
        b = b.lstrip(b"\0") or b"\0"
        if b[0] & 0x80:
            b = b"\0" + b
        return b"\x02" + bytes([len(b)]) + b

    body = der_int(raw[:half]) + der_int(raw[half:])
    if len(body) < 128:
        return b"\x30" + bytes([len(body)]) + body
    return b"\x30\x81" + bytes([len(body)]) + body


def openssl_verify(alg, pem, signing_input, sig, d):
    pub, msg, sigf = (os.path.join(d, n) for n in ("pub.pem", "msg", "sig"))
    open(pub, "wb").write(pem)
    open(msg, "wb").write(signing_input)
    if alg == "EdDSA":
        open(sigf, "wb").write(sig)
        cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
               "-in", msg, "-sigfile", sigf]
    else:
        md = "-sha384" if alg == "ES384" else "-sha256"
        open(sigf, "wb").write(der_from_raw(sig) if alg.startswith("ES") else sig)
        cmd = ["openssl", "dgst", md, "-verify", pub, "-signature", sigf]
        if alg == "PS256":
            cmd[2:2] = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
        cmd.append(msg)
    return subprocess.run(cmd, capture_output=True).returncode == 0


def main():
    if subprocess.run(["test", "-r", "/usr/lib/softhsm/libsofthsm2.so"]).returncode != 0:
        print("SKIP: SoftHSM2 not installed")
        return 77
    with tempfile.TemporaryDirectory(prefix="writ-interop-") as d:
        subprocess.run([WRIT, "token", "init", "--dir", d], check=True, capture_output=True)
        conf = os.path.join(d, "writ.conf")
        for alg in ALGS:
            writ(conf, "key", "generate", "--alg", alg)
        jwks_text = writ(conf, "jwks").stdout
        jwks = json.loads(jwks_text)
        jwks_file = os.path.join(d, "jwks.json")
        open(jwks_file, "w").write(jwks_text)
        check(len(jwks["keys"]) == len(ALGS), "jwks lists one key per algorithm")
        by_kid = {k["kid"]: k for k in jwks["keys"]}
        for k in jwks["keys"]:
            check(jwcrypto_jwk.JWK(**k).thumbprint() == k["kid"],
                  f"{k['alg']}: kid is the RFC 7638 thumbprint (jwcrypto)")
            check("d" not in k and k["use"] == "sig", f"{k['alg']}: public-only, use sig")

        for alg in ALGS:
            tok = writ(conf, "mint", "--alg", alg, "--sub", "agent-7", "--aud", "orders-db",
                       "--scope", "db:read db:list", "--ttl", "120").stdout.strip()
            h, p, s = tok.split(".")
            header = json.loads(b64d(h))
            check(header == {"alg": alg, "typ": "at+jwt", "kid": header["kid"]},
                  f"{alg}: header is exactly alg, typ at+jwt, kid")
            key = by_kid[header["kid"]]
            check(key["alg"] == alg, f"{alg}: signed by a key pinned to {alg}")
            pyjwk = jwt.PyJWK(key)
            claims = jwt.decode(tok, pyjwk.key, algorithms=[alg], audience="orders-db",
                                issuer=ISS, options={"require": ["exp", "iat", "nbf", "jti"]})
            check(claims["sub"] == "agent-7" and claims["client_id"] == "agent-7",
                  f"{alg}: PyJWT verifies; sub and client_id")
            check(claims["scope"] == "db:read db:list" and claims["exp"] - claims["iat"] == 120,
                  f"{alg}: PyJWT: scope and ttl as minted")
            check(len(b64d(claims["jti"])) == 16, f"{alg}: jti is 128 random bits")
            pem = jwcrypto_jwk.JWK(**key).export_to_pem()
            check(openssl_verify(alg, pem, f"{h}.{p}".encode(), b64d(s), d),
                  f"{alg}: openssl verifies the signature over the signing input")
            v = writ(conf, "verify", "--jwks", jwks_file, "--iss", ISS, "--aud", "orders-db",
                     stdin=tok + "\n")
            check(json.loads(v.stdout)["jti"] == claims["jti"], f"{alg}: writ verify accepts")
            bad = writ(conf, "verify", "--jwks", jwks_file, "--iss", ISS, "--aud", "billing",
                       stdin=tok,
                       ok=False)
            check(bad.returncode == 1 and bad.stderr.count("\n") == 1 and "audience" in bad.stderr,
                  f"{alg}: writ verify refuses the wrong audience with one line")
            bad = writ(conf, "verify", "--jwks", jwks_file, "--iss", "https://evil", "--aud",
                       "orders-db", stdin=tok,
                       ok=False)
            check(bad.returncode == 1 and "issuer" in bad.stderr,
                  f"{alg}: writ verify refuses the wrong issuer")
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
