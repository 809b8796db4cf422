#!/usr/bin/python3
"""libwrit's service API (verifier.h) against a real writ-issuer on
127.0.0.1, through Python ctypes over the shared library exactly as a
service would link it: keys fetched from the issuer's JWKS URL, max-age
honoured, ETag answered with 304, the unknown-kid refetch rate-limited,
and with the issuer stopped the last good keys serve for max_stale, then
the verifier fails closed. `writ verify --jwks-url` is checked too."""
import ctypes as C
import json
import os
import subprocess
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt  # noqa: E402
from issuer_fixture import Agent, Issuer, WRIT  # noqa: E402

LIB = os.environ.get("WRIT_LIB", os.path.join(os.path.dirname(WRIT), "libwrit.so"))
OK, UNKNOWN_KID, UNAVAILABLE, SCOPE, RATE_LIMITED = 0, 8, 23, 24, 25
POLICY = {"version": 1, "rules": [
    {"id": "read", "effect": "allow", "subjects": ["svc-*"], "audiences": ["orders-db"],
     "actions": ["db:read"], "ttl": 300, "lim": {"rps": 3}},
]}


class Cfg(C.Structure):
    _fields_ = [("issuer", C.c_char_p), ("audience", C.c_char_p), ("jwks_url", C.c_char_p),
                ("jwks_file", C.c_char_p), ("jwks_bytes", C.c_char_p), ("jwks_len", C.c_size_t),
                ("ca_file", C.c_char_p), ("leeway", C.c_uint), ("max_ttl", C.c_uint),
                ("min_refresh", C.c_uint), ("max_stale", C.c_uint),
                ("cache_entries", C.c_size_t)]


class Stats(C.Structure):
    _fields_ = [("fetches", C.c_uint64), ("not_modified", C.c_uint64),
                ("fetch_failures", C.c_uint64), ("cache_hits", C.c_uint64),
                ("verifications", C.c_uint64), ("keys", C.c_size_t)]


class Err(C.Structure):
    _fields_ = [("rc", C.c_int), ("lib_code", C.c_ulong), ("msg", C.c_char * 256)]


if os.environ.get("WRIT_SANITIZED") == "1":
    # ASan's runtime must be the first library of the process; it cannot
    # arrive later through ctypes. The same checks run in the plain build,
    # and the library's C tests run sanitized.
    print("SKIP: sanitizer build: libwrit cannot be loaded into python3")
    sys.exit(77)
lib = C.CDLL(LIB)
lib.writ_verifier_new.argtypes = [C.POINTER(Cfg), C.POINTER(C.c_void_p), C.POINTER(Err)]
lib.writ_verifier_verify.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t,
                                     C.POINTER(C.c_void_p), C.POINTER(Err)]
lib.writ_verifier_check.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t, C.c_char_p,
                                    C.POINTER(C.c_void_p), C.POINTER(C.c_double),
                                    C.POINTER(Err)]
lib.writ_verifier_get_stats.argtypes = [C.c_void_p, C.POINTER(Stats)]
lib.writ_verifier_free.argtypes = [C.c_void_p]
lib.writ_claims_free.argtypes = [C.c_void_p]
lib.writ_claims_string.argtypes = [C.c_void_p, C.c_char_p]
lib.writ_claims_string.restype = C.c_char_p

failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f"  [{detail}]"))
    if not cond:
        failures += 1


class Verifier:
    def __init__(self, fx, min_refresh=1, max_stale=2):
        self.cfg = Cfg(issuer=fx.issuer.encode(), audience=b"orders-db",
                       jwks_url=(fx.issuer + "/.well-known/jwks.json").encode(),
                       min_refresh=min_refresh, max_stale=max_stale)
        self.v = C.c_void_p()
        err = Err()
        rc = lib.writ_verifier_new(C.byref(self.cfg), C.byref(self.v), C.byref(err))
        if rc != OK:
            raise RuntimeError(f"writ_verifier_new: {rc} {err.msg.decode()}")

    def verify(self, tok):
        t = tok.encode()
        c = C.c_void_p()
        rc = lib.writ_verifier_verify(self.v, t, len(t), C.byref(c), None)
        sub = lib.writ_claims_string(c, b"sub").decode() if rc == OK else None
        lib.writ_claims_free(c)
        return rc, sub

    def check(self, tok, action):
        t = tok.encode()
        ra = C.c_double(0)
        rc = lib.writ_verifier_check(self.v, t, len(t), action.encode(), None, C.byref(ra), None)
        return rc, ra.value

    def stats(self):
        st = Stats()
        lib.writ_verifier_get_stats(self.v, C.byref(st))
        return st

    def free(self):
        lib.writ_verifier_free(self.v)


def mint(fx, agent):
    st, _, doc = fx.token(agent.assertion(), scope="db:read")
    if st != 200:
        raise RuntimeError(f"token: {st} {doc}")
    return doc["access_token"]


def test_fetch_max_age_etag(fx, tok):
    v = Verifier(fx, min_refresh=1)
    check(v.stats().fetches == 1 and v.stats().keys == 1, "keys fetched from the JWKS URL")
    check(v.verify(tok) == (OK, "svc-a"), "an issued token verifies through the library")
    for _ in range(50):
        v.verify(tok)
    st = v.stats()
    check(st.fetches == 1, "no fetch before max-age (2 s) passes", st.fetches)
    check(st.verifications == 1 and st.cache_hits == 50, "repeats come from the token cache")
    time.sleep(2.3)
    check(v.verify(tok)[0] == OK, "still verifies after max-age")
    st = v.stats()
    check(st.fetches == 2 and st.not_modified == 1,
          "after max-age one conditional fetch, answered 304 (ETag)",
          (st.fetches, st.not_modified))
    v.free()


def test_unknown_kid_flood(fx, tok, agent):
    v = Verifier(fx, min_refresh=30)
    h, p, s = tok.split(".")
    bad = 0
    for i in range(1000):
        hdr = jwt.utils.base64url_encode(json.dumps(
            {"alg": "ES256", "typ": "at+jwt", "kid": f"garbage-{i}"}).encode()).decode()
        bad += v.verify(f"{hdr}.{p}.{s}")[0] == UNKNOWN_KID
    st = v.stats()
    check(bad == 1000, "1000 tokens with random kids are refused")
    check(st.fetches <= 2, "... and cost at most one refetch", st.fetches)
    v.free()


def test_scope_and_limit(fx, tok):
    v = Verifier(fx)
    check(v.check(tok, "db:write")[0] == SCOPE, "an action outside scope is refused")
    rcs = [v.check(tok, "db:read") for _ in range(4)]
    check([r for r, _ in rcs] == [OK, OK, OK, RATE_LIMITED] and 0 < rcs[3][1] <= 0.34,
          "lim {rps: 3} admits three, then asks to wait", rcs)
    v.free()


def test_cli_jwks_url(fx, tok):
    url = fx.issuer + "/.well-known/jwks.json"
    p = subprocess.run([WRIT, "verify", "--jwks-url", url, "--iss", fx.issuer, "--aud",
                        "orders-db"], input=tok, capture_output=True, text=True)
    check(p.returncode == 0 and json.loads(p.stdout)["sub"] == "svc-a",
          "writ verify --jwks-url verifies through the library", p.stderr)
    p = subprocess.run([WRIT, "verify", "--jwks-url", url, "--iss", fx.issuer, "--aud",
                        "other"], input=tok, capture_output=True, text=True)
    check(p.returncode == 1 and "audience" in p.stderr, "... and refuses the wrong audience",
          p.stderr)


def test_issuer_down(fx, tok):
    v = Verifier(fx, min_refresh=1, max_stale=2)
    check(v.verify(tok)[0] == OK, "verifies while the issuer is up")
    fx.stop()
    time.sleep(2.3)  # past max-age 2
    check(v.verify(tok)[0] == OK, "issuer down: the last good keys serve within max_stale")
    time.sleep(2.2)  # past max-age + max_stale
    rc = v.verify(tok)[0]
    check(rc == UNAVAILABLE, "past max-age + max_stale the verifier fails closed", rc)
    check(v.stats().fetch_failures >= 1, "the failed fetches are counted")
    v.free()


def main():
    if not os.path.exists(LIB):
        print(f"skip: {LIB} not built")
        return 77
    fx = Issuer(POLICY, extra_conf="jwks_max_age = 2\n")
    try:
        fx.start()
        agent = Agent(fx, "svc-a")
        tok = mint(fx, agent)
        test_fetch_max_age_etag(fx, tok)
        test_unknown_kid_flood(fx, tok, agent)
        test_scope_and_limit(fx, mint(fx, agent))
        test_cli_jwks_url(fx, tok)
        test_issuer_down(fx, tok)
    finally:
        fx.close()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
