#!/usr/bin/python3
"""Key rotation (SPEC s.2, issue 4) against a real writ-issuer, SoftHSM2 token
and SQLite store, with every period shortened to seconds by configuration.

The verifier here is the one the SPEC promises to protect: it refreshes the
JWKS only when the cache lifetime from the response's Cache-Control has
passed, and never because it meets an unknown kid. Every token is checked
right after it is received; a single failure fails the test."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt  # noqa: E402
from issuer_fixture import Agent, Issuer, ISSUER_BIN  # noqa: E402

POLICY = {"version": 1, "rules": [
    {"id": "read", "effect": "allow", "subjects": ["*"], "audiences": ["orders-db"],
     "actions": ["db:read"]}]}

# jwks_max_age + leeway = 3 <= key_pending_secs; token_ttl_max + leeway = 5
# <= key_retired_secs; rotation_period 6 > key_pending_secs.
WINDOWS = {"jwks_max_age": 2, "leeway": 1, "key_pending_secs": 3, "token_ttl": 3,
           "token_ttl_max": 4, "key_retired_secs": 5,
           "checkpoint_every": 50}  # so rotating keys each sign some checkpoints

failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f"  [{detail}]"), flush=True)
    if not cond:
        failures += 1


def configure(fx, alg="ES256", **extra):
    """Replace the fixture's leeway and signing_alg with the short windows."""
    settings = dict(WINDOWS, signing_alg=alg, rotation_period=0)
    settings.update(extra)
    with open(fx.conf) as f:
        lines = [l for l in f if l.split("=")[0].strip() not in settings]
    lines += [f"{k} = {v}\n" for k, v in settings.items()]
    with open(fx.conf, "w") as f:
        f.writelines(lines)


def keys(fx):
    return {k["kid"]: k for k in json.loads(fx.writ("key", "list", "--json").stdout)}


def hsm_kids(fx):
    """The token's writ keys, straight from the HSM (writ jwks lists them all)."""
    return {k["kid"] for k in json.loads(fx.writ("jwks", "--hsm").stdout)["keys"]}


def jwks_kids(fx):
    return {k["kid"] for k in json.loads(fx.request("/.well-known/jwks.json")[2])["keys"]}


class CachingVerifier:
    """Refreshes the JWKS only when max-age has passed; never on an unknown kid."""

    def __init__(self, fx):
        self.fx, self.keys, self.expires, self.fetches = fx, {}, 0.0, 0
        self.lock = threading.Lock()

    def _refresh(self):
        with urllib.request.urlopen(self.fx.issuer + "/.well-known/jwks.json", timeout=10) as r:
            cc = r.headers.get("Cache-Control", "")
            doc = json.loads(r.read())
        max_age = int(re.search(r"max-age=(\d+)", cc).group(1))
        self.keys = {k["kid"]: k for k in doc["keys"]}
        self.expires = time.monotonic() + max_age
        self.fetches += 1

    def verify(self, token, aud="orders-db"):
        with self.lock:
            if time.monotonic() >= self.expires:
                self._refresh()
            hdr = jwt.get_unverified_header(token)
            jwk = self.keys.get(hdr["kid"])
        if jwk is None:
            raise LookupError(f"unknown kid {hdr['kid']}")
        key = jwt.PyJWK(jwk).key
        return jwt.decode(token, key, algorithms=[jwk["alg"]], audience=aud,
                          issuer=self.fx.issuer, leeway=1)


def load(fx, seconds, on_tick, done=None, most=None):
    """Client threads exchange and verify continuously for `seconds`, and
    then on until done(seen) holds, for at most `most` seconds: under load
    (ASan, parallel tests) a rotation can take longer to play out, and the
    checks that follow stay as strict."""
    ver = CachingVerifier(fx)
    agents = [Agent(fx, f"load-{i}") for i in range(4)]
    halt = threading.Event()
    seen, errors, lock = [], [], threading.Lock()

    def client(agent):
        while not halt.is_set():
            st, _, doc = fx.token(agent.assertion())
            if st != 200:
                with lock:
                    errors.append(f"exchange {st} {doc}")
                continue
            try:
                claims = ver.verify(doc["access_token"])
                kid = jwt.get_unverified_header(doc["access_token"])["kid"]
                with lock:
                    seen.append((kid, claims["iat"]))
            except Exception as e:  # noqa: BLE001 - any failure counts
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while any(t.is_alive() for t in threads):
        t = time.monotonic() - t0
        on_tick(t)
        with lock:
            finished = done is None or done(seen)
        if (t >= seconds and finished) or t >= (most or seconds):
            halt.set()
        time.sleep(0.5)
    for t in threads:
        t.join()
    return seen, errors, ver.fetches


def rotation_under_load(alg):
    fx = Issuer(POLICY)
    try:
        configure(fx, alg, rotation_period=6)
        if alg != "ES256":
            fx.writ("key", "generate", "--alg", alg)
        fx.start()
        rotated = []

        def on_tick(t):
            if t > 9 and not rotated:  # an operator's rotation on top of the schedule
                rotated.append(fx.writ("key", "rotate", "--alg", alg, "--reason",
                                       "test: on command").stdout.split()[0])

        # 26 s: under load (ASan, parallel tests) an RSA key generation
        # takes seconds and a key made meanwhile waits its full pending
        # window after it was first served, so the on-command key (t = 9 s)
        # may activate as late as ~19 s.
        def rotation_seen(seen):
            kids = {k for k, _ in seen}
            return bool(rotated) and rotated[0] in kids and len(kids) >= 3

        seen, errors, fetches = load(fx, 26, on_tick, rotation_seen, 45)
        ks = keys(fx)
        kids = {k for k, _ in seen}
        mine = [k for k in ks.values() if k["alg"] == alg]
        print(f"     {alg}: {len(seen)} tokens verified, {len(errors)} failures, "
              f"{len(kids)} signing keys used, {len(mine)} keys made, {fetches} JWKS fetches")
        check(not errors and len(seen) > 100,
              f"{alg}: every token verifies through a max-age-honouring cache during rotation",
              errors[:3])
        check(len(kids) >= 3, f"{alg}: tokens were signed by at least 3 successive keys", kids)
        check(rotated and rotated[0] in kids, f"{alg}: the key made by 'writ key rotate' signed "
              "after its pending window", rotated)
        bad = [(k, iat) for k, iat in seen
               if ks[k]["alg"] != alg or iat < ks[k]["activated"]
               or ("retired" in ks[k] and iat > ks[k]["retired"] + 1)]
        check(not bad, f"{alg}: no token was signed by a pending or retired key", bad[:3])
        waits = [k["activated"] - k["created"] for k in mine
                 if "activated" in k and k["activated"] != k["created"]]
        check(waits and min(waits) >= WINDOWS["key_pending_secs"],
              f"{alg}: activation came key_pending_secs after creation", waits)
        return fx
    except BaseException:
        fx.close()
        raise


def removed_and_purged(fx):
    ks = keys(fx)
    removed = {k for k, v in ks.items() if v["state"] == "removed"}
    live = {k for k, v in ks.items() if v["state"] in ("pending", "active", "retired")}
    check(removed, "some keys reached removed after key_retired_secs", ks)
    check(not (removed & jwks_kids(fx)), "removed keys are gone from the JWKS")
    check(live <= jwks_kids(fx) | {k for k, v in keys(fx).items() if v["state"] == "removed"},
          "pending, active and retired keys are published")
    before = hsm_kids(fx)
    out = fx.writ("key", "purge").stdout
    after, ks2 = hsm_kids(fx), keys(fx)
    purged = {l.split()[0] for l in out.splitlines() if l.endswith(" purged")}
    check(purged and purged <= removed | {k for k, v in ks.items() if v["state"] == "revoked"},
          "purge names only removed or revoked keys", (purged, removed))
    check(before - after == purged and all(not ks2[k]["in_hsm"] and "purged" in ks2[k]
                                           for k in purged),
          "purge destroyed exactly those keys' HSM objects", (before - after, purged))
    check(all(ks2[k]["in_hsm"] for k, v in ks2.items()
              if v["state"] in ("pending", "active", "retired")),
          "pending, active and retired keys are still in the HSM")
    recs = fx.audit_records()
    ev = {r["event"] for r in recs if r.get("kid") in ks}
    check({"key_generated", "key_activated", "key_retired", "key_removed"} <= ev,
          "the lifecycle events are in the audit log", ev)


def audit_verifies_after_purge(fx):
    """Checkpoints signed by keys since removed and purged still verify:
    the store keeps every signing key's public JWK. Run with the issuer
    stopped, so the log's last line is complete."""
    fx.stop()
    ks = keys(fx)
    purged = {k for k, v in ks.items() if "purged" in v}
    by_purged = [r for r in fx.audit_records()
                 if r.get("event") == "checkpoint" and r.get("kid") in purged]
    v = fx.writ("audit", "verify", fx.audit, ok=False)
    check(v.returncode == 0 and "signatures verified with the store's keys" in v.stdout
          and by_purged,
          f"audit verify checks {len(by_purged)} checkpoints signed by purged keys "
          "with the public keys the store kept", v.stdout + v.stderr)
    # Attack: checkpoints signed with a compromised key after its revocation
    # prove nothing. Revoke a key that signed checkpoints, recorded as if
    # before it signed them (revoked_at in 1970): verify must refuse them.
    signed = by_purged
    revoked = [signed[0]["kid"]] if signed else ["none"]
    db = fx.raw_db()
    with db:
        db.execute("UPDATE signing_keys SET state='revoked', revoked_at=1, reason='test' "
                   "WHERE kid=?", (revoked[0],))
    db.close()
    v = fx.writ("audit", "verify", fx.audit, ok=False)
    check(signed and v.returncode == 1 and "revoked before that" in v.stdout,
          "test_checkpoint_by_revoked_key_refused: audit verify refuses a checkpoint signed "
          "after its key's revocation", (len(signed), v.stdout + v.stderr))


def emergency_revoke(fx):
    ver = CachingVerifier(fx)
    a = Agent(fx, "revoke-test")
    old = fx.token(a.assertion())[2]["access_token"]
    ver.verify(old)
    kid = jwt.get_unverified_header(old)["kid"]
    if keys(fx)[kid]["state"] != "active":  # rotated meanwhile: the next is active
        old = fx.token(a.assertion())[2]["access_token"]
        kid = jwt.get_unverified_header(old)["kid"]
    fx.writ("key", "revoke", kid, "--reason", "test: key compromised")
    time.sleep(0.6)
    check(kid not in jwks_kids(fx), "a revoked key leaves the JWKS at once")
    # Attack: a store restored from a backup, or lost, would let reconcile
    # adopt a compromised key the HSM still held; revoke destroys it.
    check(kid not in hsm_kids(fx) and "purged" in keys(fx)[kid],
          "test_revoked_key_cannot_come_back: revoke destroys it in the HSM")
    time.sleep(WINDOWS["jwks_max_age"] + 0.2)
    try:
        ver.verify(old)
        ok = False
    except Exception:  # noqa: BLE001
        ok = True
    check(ok, "after the cache lifetime, a token signed by the revoked key fails")
    new = fx.token(a.assertion())[2]["access_token"]
    nkid = jwt.get_unverified_header(new)["kid"]
    try:
        ver.verify(new)
        ok = nkid != kid
    except Exception as e:  # noqa: BLE001
        ok = e
    check(ok is True, "new tokens verify, signed by the replacement key", ok)
    fx.stop()  # drains the outbox into the audit log
    rec = [r for r in fx.audit_records() if r.get("event") == "key_revoked" and
           r.get("kid") == kid]
    check(rec and rec[0].get("reason") == "test: key compromised" and
          rec[0].get("actor", "").startswith("uid:"), "the revocation is audited with who/why",
          rec)


def test_revoke_active_key_under_load():
    """Defect: `writ key revoke` of the active key commits the revocation,
    then destroys the key; the issuer went on signing with the revoked key
    until its next tick, then answered 503 (the key was gone) until the
    tick after: about 0.2 s of refusals for agents renewing in a loop. Now
    a request that sees the keys' change signal rebuilds the key set
    first, and one caught signing when the key goes rebuilds and retries."""
    fx = Issuer(POLICY)
    try:
        configure(fx)
        fx.start()
        a = Agent(fx, "revoke-load")
        kid = jwt.get_unverified_header(fx.token(a.assertion())[2]["access_token"])["kid"]
        results, stop, revoked_at = [], threading.Event(), []

        def renew():
            while not stop.is_set():
                assertion = a.assertion()
                t0 = time.monotonic()
                status, _, doc = fx.token(assertion)
                results.append((t0, status, doc.get("access_token")))

        workers = [threading.Thread(target=renew) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        fx.writ("key", "revoke", kid, "--reason", "test: revoke under load")
        revoked_at.append(time.monotonic())
        time.sleep(0.8)
        stop.set()
        for w in workers:
            w.join()
        refused = [st for _, st, _ in results if st != 200]
        after = [t for t0, st, t in results if st == 200 and t0 > revoked_at[0]]
        by_revoked = [t for t in after if jwt.get_unverified_header(t)["kid"] == kid]
        check(len(results) > 50 and not refused,
              "test_revoke_active_key_under_load: no request refused while the active key "
              "is revoked", (len(results), refused[:5]))
        check(after and not by_revoked,
              "test_revoke_active_key_under_load: nothing signed by the revoked key after "
              "revoke returns", (len(after), len(by_revoked)))
    finally:
        fx.close()


def states(fx):
    return {k: v["state"] for k, v in keys(fx).items()}


def restart_at_each_step():
    fx = Issuer(POLICY)
    try:
        configure(fx)
        fx.start()
        a = Agent(fx, "restart")
        k1 = [k for k, s in states(fx).items() if s == "active"][0]
        base = hsm_kids(fx)
        p = subprocess.run([os.environ.get("WRIT_BIN", "build/writ"), "-c", fx.conf, "key",
                            "rotate"], env=dict(os.environ, WRIT_TEST_CRASH_AFTER_KEYGEN="1"),
                           capture_output=True, text=True)
        orphan = hsm_kids(fx) - base
        check(p.returncode == 3 and len(orphan) == 1 and not (orphan & set(keys(fx))),
              "simulated crash: an HSM key without a store record", (p.returncode, orphan))
        k2 = fx.writ("key", "rotate").stdout.split()[0]
        step = {"pending": (k1, {k1: "active", k2: "pending"}),
                "active": (k2, {k1: "retired", k2: "active"}),
                "removed": (k2, {k1: "removed", k2: "active"})}
        waits = {"pending": 0, "active": 4, "removed": 6}
        for name in ("pending", "active", "removed"):
            time.sleep(waits[name])
            want_signer, want = step[name]
            before = states(fx)
            fx.stop()
            fx.start()
            after = states(fx)
            tok = fx.token(a.assertion())[2]["access_token"]
            signer = jwt.get_unverified_header(tok)["kid"]
            pub = jwks_kids(fx)
            check(all(before.get(k) == v and after.get(k) == v for k, v in want.items()),
                  f"restart with the new key {name}: states kept", (before, after))
            check(signer == want_signer and
                  pub == {k for k, v in want.items() if v != "removed"},
                  f"restart with the new key {name}: right signer and JWKS", (signer, pub))
        fx.writ("key", "purge")
        fx.stop()
        fx.start()
        check(states(fx)[k1] == "removed" and k1 not in hsm_kids(fx) and k2 in hsm_kids(fx),
              "restart after purge: the purged key stays removed, the active one is intact")
        fx.stop()
        rec = [r for r in fx.audit_records() if r.get("event") == "key_reconciled"]
        check(not (orphan & hsm_kids(fx)) and any(r.get("kid") in orphan for r in rec),
              "the crash orphan was destroyed and the outcome audited", rec)
    finally:
        fx.close()


def bad_config():
    fx = Issuer(POLICY)
    try:
        cases = [({"key_pending_secs": 2}, r"key_pending_secs \(2\).*jwks_max_age \(2\)"),
                 ({"key_retired_secs": 4}, r"key_retired_secs \(4\).*token_ttl_max \(4\)"),
                 ({"rotation_period": 3}, r"rotation_period \(3\).*key_pending_secs \(3\)")]
        for extra, msg in cases:
            configure(fx, **extra)
            chk = subprocess.run([ISSUER_BIN, "-c", fx.conf, "--check-config"],
                                 capture_output=True, text=True)
            run = subprocess.run([ISSUER_BIN, "-c", fx.conf], capture_output=True, text=True,
                                 timeout=20)
            check(chk.returncode != 0 and re.search(msg, chk.stderr) and run.returncode != 0
                  and re.search(msg, run.stderr),
                  f"unsatisfiable {list(extra)[0]} refuses to start, naming the settings",
                  chk.stderr + run.stderr)
        configure(fx)
        chk = subprocess.run([ISSUER_BIN, "-c", fx.conf, "--check-config"], capture_output=True,
                             text=True)
        check(chk.returncode == 0 and "key_pending_secs 3" in chk.stdout,
              "--check-config reports the key windows of a good configuration", chk.stdout)
    finally:
        fx.close()


def served_then_signed(fx, a, kid):
    """When (monotonic) the issuer's JWKS first showed kid, and when a token
    was first signed with it; None for what did not happen in time."""
    first_served = first_signed = None
    t_end = time.monotonic() + WINDOWS["key_pending_secs"] + 4
    while time.monotonic() < t_end and first_signed is None:
        now = time.monotonic()
        if first_served is None and kid in jwks_kids(fx):
            first_served = now
        signer = jwt.get_unverified_header(fx.token(a.assertion())[2]["access_token"])["kid"]
        if signer == kid:
            first_signed = time.monotonic()
        time.sleep(0.02)
    return first_served, first_signed


def key_rotated_with_no_issuer_waits_for_one():
    """Attack on the pending window: a key rotated in while no issuer runs.
    `writ key` commands apply due transitions too, so once its window had
    passed by the store's clock the CLI made it active, and the first issuer
    to start signed with a kid no verifier's cached JWKS held. It must stay
    pending until an issuer has published it for key_pending_secs."""
    fx = Issuer(POLICY)
    try:
        configure(fx, "ES256")
        fx.start()
        a = Agent(fx, "offline")
        old = jwt.get_unverified_header(fx.token(a.assertion())[2]["access_token"])["kid"]
        fx.stop()
        new = fx.writ("key", "rotate").stdout.split()[0]
        time.sleep(WINDOWS["key_pending_secs"] + 1.5)
        listed = keys(fx)  # `writ key list` applies due transitions
        check(listed[new]["state"] == "pending" and "published" not in listed[new] and
              listed[old]["state"] == "active",
              "with no issuer running, a rotated key stays pending past its window", listed)
        fx.start()
        first_served, first_signed = served_then_signed(fx, a, new)
        check(first_served is not None and first_signed is not None and
              first_signed - first_served >= WINDOWS["key_pending_secs"] - 0.25,
              "the first issuer to start serves it for key_pending_secs before it signs",
              (old, new, first_served, first_signed))
        check("published" in keys(fx)[new], "writ key list shows when it was first published")
    finally:
        fx.close()


def stalled_issuer_publishes_before_activating():
    """Attack on the pending window: a key the CLI records while the issuer's
    key thread is busy (an RSA key generation takes seconds; here SIGSTOP
    for longer than key_pending_secs) is already due by the store's clock
    when the issuer next looks. It must still be served for the whole
    pending window before it signs, or caches that fetched the JWKS just
    before see tokens under a kid they do not know."""
    fx = Issuer(POLICY)
    try:
        configure(fx, "ES256")
        fx.start()
        a = Agent(fx, "stall")
        old = jwt.get_unverified_header(fx.token(a.assertion())[2]["access_token"])["kid"]
        fx.proc.send_signal(signal.SIGSTOP)
        try:
            new = fx.writ("key", "rotate").stdout.split()[0]
            time.sleep(WINDOWS["key_pending_secs"] + 1.5)
        finally:
            fx.proc.send_signal(signal.SIGCONT)
        first_served, first_signed = served_then_signed(fx, a, new)
        check(first_served is not None and first_signed is not None and
              first_signed - first_served >= WINDOWS["key_pending_secs"] - 0.25,
              "a key recorded while the issuer was stalled is served for key_pending_secs "
              "before it signs",
              (old, new, first_served, first_signed))
    finally:
        fx.close()


def test_rotation_past_16_published_keys():
    """Defect: the issuer looked for pending keys to record as published in
    a list capped at 16 published keys, oldest first, so with more the
    newest pending keys were served in the JWKS but never recorded as
    published (published_at NULL): they never activated, and scheduled
    rotation stalled behind them; /metrics left them out too. Now every
    published key counts."""
    fx = Issuer(POLICY)
    try:
        # Long pending window: the 17 new keys all stay pending meanwhile.
        configure(fx, jwks_max_age=0, key_pending_secs=120)
        fx.start()
        for _ in range(17):
            fx.writ("key", "rotate")
        db = fx.raw_db()
        end = time.time() + 3
        while True:
            rows = db.execute("SELECT kid, published_at FROM signing_keys "
                              "WHERE state='pending'").fetchall()
            unpublished = [kid for kid, at in rows if at is None]
            if (len(rows) == 17 and not unpublished) or time.time() > end:
                break
            time.sleep(0.1)
        every = db.execute("SELECT state, count(*) FROM signing_keys GROUP BY state").fetchall()
        db.close()
        served = jwks_kids(fx)
        check(len(served) == 18 and {kid for kid, _ in rows} <= served,
              "past 16 keys: the JWKS serves the active key and all 17 pending ones",
              (len(served), len(rows), every))
        check(len(rows) == 17 and not unpublished,
              "test_rotation_past_16_published_keys: every served pending key is recorded "
              "as published", unpublished)
        body = fx.request("/metrics")[2]
        shown = set(re.findall(r'^writ_signing_key_age_seconds\{kid="([^"]+)"', body, re.M))
        check(shown == served, "test_rotation_past_16_published_keys: /metrics shows all "
              "published keys", (len(shown), len(served)))
    finally:
        fx.close()


def main():
    if not os.path.exists("/usr/lib/softhsm/libsofthsm2.so"):
        print("SoftHSM2 missing")
        return 77
    bad_config()
    test_rotation_past_16_published_keys()
    test_revoke_active_key_under_load()
    fx = rotation_under_load("ES256")
    try:
        removed_and_purged(fx)
        emergency_revoke(fx)
        audit_verifies_after_purge(fx)
    finally:
        fx.close()
    fx = rotation_under_load("RS256")
    fx.close()
    restart_at_each_step()
    stalled_issuer_publishes_before_activating()
    key_rotated_with_no_issuer_waits_for_one()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
