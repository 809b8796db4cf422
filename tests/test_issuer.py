#!/usr/bin/python3
"""The issuer as agents, target services and operators use it (SPEC s.4-7):
a real writ-issuer on 127.0.0.1 with a real SoftHSM2 token, SQLite store,
policy file and audit log. Each check is named for the behaviour it pins."""
import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwt  # noqa: E402
from issuer_fixture import GT, ISSUER_BIN, TT, Agent, Issuer, WRIT, free_port  # noqa: E402

POLICY = {"version": 1, "rules": [
    {"id": "analysts-read", "effect": "allow", "subjects": ["group:analysts"],
     "audiences": ["orders-db"], "actions": ["db:read", "db:list"], "ttl": 120},
    {"id": "ops-all", "effect": "allow", "subjects": ["ops-*"], "audiences": ["orders-db"],
     "actions": ["db:*"], "ttl": 60},
    {"id": "no-writes", "effect": "deny", "subjects": ["*"], "audiences": ["orders-*"],
     "actions": ["db:write", "db:drop"]},
    {"id": "limited", "effect": "allow", "subjects": ["rl-*"], "audiences": ["search"],
     "actions": ["q"], "rate": "2/sec", "lim": {"rps": 5}},
    {"id": "twin-fast", "effect": "allow", "subjects": ["twin-*"], "audiences": ["ledger"],
     "actions": ["read"], "rate": "1/sec"},
    {"id": "twin-slow", "effect": "allow", "subjects": ["twin-*"], "audiences": ["ledger"],
     "actions": ["read"], "rate": "3/min"},
    {"id": "long-reports", "effect": "allow", "subjects": ["long-*"], "audiences": ["reports"],
     "actions": ["r"], "ttl": 900},
    {"id": "reports-default", "effect": "allow", "subjects": ["group:readers"],
     "audiences": ["reports"], "actions": ["r"]},
]}

failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f"  [{detail}]"))
    if not cond:
        failures += 1


def err_of(r):
    return r[0], r[2].get("error")


def test_success_and_pyjwkclient(fx, analyst):
    st, hdr, doc = fx.token(analyst.assertion(), scope="db:read db:write")
    check(st == 200, "exchange succeeds for an allowed agent", doc)
    check(doc.get("issued_token_type") == "urn:ietf:params:oauth:token-type:access_token"
          and doc.get("token_type") == "Bearer", "RFC 8693 response fields")
    check(doc.get("scope") == "db:read", "granted scope is the allowed subset (write denied)")
    check(hdr.get("Cache-Control") == "no-store", "token response is Cache-Control: no-store")
    st, _, disc = fx.request("/.well-known/oauth-authorization-server")
    disc = json.loads(disc)
    st2, _, oidc = fx.request("/.well-known/openid-configuration")
    check(disc["issuer"] == fx.issuer and json.loads(oidc) == disc,
          "discovery documents name the issuer and agree")
    client = jwt.PyJWKClient(disc["jwks_uri"])
    key = client.get_signing_key_from_jwt(doc["access_token"])
    claims = jwt.decode(doc["access_token"], key.key, algorithms=["ES256"], audience="orders-db",
                        issuer=fx.issuer)
    check(claims["sub"] == analyst.id and claims["grp"] == ["analysts"],
          "PyJWKClient verifies the token against the live JWKS; sub and grp")
    check(claims["exp"] - claims["iat"] == 120 and doc["expires_in"] == 120,
          "TTL is the rule's (120 s) under the default (300 s)")
    check(jwt.get_unverified_header(doc["access_token"])["typ"] == "at+jwt", "typ at+jwt")
    st, hdr, _ = fx.request("/.well-known/jwks.json")
    check("max-age=" in hdr.get("Cache-Control", "") and hdr.get("ETag"),
          "JWKS has Cache-Control max-age and an ETag")
    st, _, _ = fx.request("/.well-known/jwks.json", headers={"If-None-Match": hdr["ETag"]})
    check(st == 304, "If-None-Match with the ETag gets 304")
    recs = [r for r in fx.audit_records() if r.get("jti") == claims["jti"]]
    check(len(recs) == 1 and recs[0]["event"] == "token_issued" and recs[0]["rule"] ==
          "analysts-read" and recs[0]["attestation"]["kind"] == "agent_key",
          "the issued token's audit record names agent, rule and attestation")


def test_error_rows(fx, analyst):
    a = analyst
    check(err_of(fx.token(a.assertion(), extra=[], raw="scope=x")) == (400, "invalid_request"),
          "missing grant_type: invalid_request")
    check(err_of(fx.token(a.assertion(), raw="grant_type=password&username=a&password=b")) ==
          (400, "unsupported_grant_type"), "password grant: unsupported_grant_type")
    body = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
            "&scope=db:read&scope=db:write")
    check(err_of(fx.token(None, raw=body)) == (400, "invalid_request"),
          "repeated parameter: invalid_request")
    asr = a.assertion()
    check(fx.token(asr)[0] == 200, "fresh assertion accepted")
    check(err_of(fx.token(asr)) == (400, "invalid_grant"), "replayed assertion: invalid_grant")
    now = int(time.time())
    check(err_of(fx.token(a.assertion(iat=now - 400, exp=now - 200))) == (400, "invalid_grant"),
          "expired assertion: invalid_grant")
    check(err_of(fx.token(a.assertion(iat=now + 600, exp=now + 660))) == (400, "invalid_grant"),
          "future-dated assertion: invalid_grant")
    check(err_of(fx.token(a.assertion(aud="https://other-issuer"))) == (400, "invalid_grant"),
          "assertion for another audience: invalid_grant")
    check(err_of(fx.token(a.assertion(exp=now + 3600))) == (400, "invalid_grant"),
          "assertion living longer than 5 minutes: invalid_grant")
    check(err_of(fx.token(a.assertion(jti=None))) == (400, "invalid_grant"),
          "assertion without jti: invalid_grant")
    ghost = Agent.__new__(Agent)
    ghost.id, ghost.fx, ghost.key = "ghost", fx, a.key
    r = fx.token(ghost.assertion())
    check(err_of(r) == (400, "invalid_grant"), "unknown agent: invalid_grant")
    forger = Agent.__new__(Agent)
    forger.id, forger.fx = a.id, fx
    forger.key = __import__("cryptography.hazmat.primitives.asymmetric.ec",
                            fromlist=["ec"]).generate_private_key(
        __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ec"]).SECP256R1())
    f = fx.token(forger.assertion())
    check(err_of(f) == (400, "invalid_grant"), "assertion signed by an unregistered key: invalid_grant")
    check(r[2].get("error_description") == f[2].get("error_description"),
          "unknown agent and bad signature read the same (no agent enumeration)")
    jwks = fx.request("/.well-known/jwks.json")[2]
    kids = [k["kid"] for k in json.loads(jwks)["keys"]]
    check(not any(k in json.dumps(x[2]) for x in (r, f) for k in kids + [a.id]),
          "error descriptions name no key material and no agent")
    st, _, doc = fx.token(a.assertion())
    r = fx.token(doc["access_token"])
    check(err_of(r) == (400, "invalid_grant"), "an access token presented as assertion: invalid_grant")
    check(err_of(fx.token(a.assertion(), audience="billing")) == (400, "invalid_target"),
          "unknown audience: invalid_target")
    check(err_of(fx.token(a.assertion(), scope="db:write")) == (400, "invalid_scope"),
          "no allowed scope: invalid_scope")
    d = Agent(fx, "disabled-1", ["analysts"])
    fx.writ("agent", "disable", d.id)
    check(err_of(fx.token(d.assertion())) == (400, "invalid_grant"), "disabled agent: invalid_grant")
    st, _, _ = fx.request("/token", "grant_type=x", ctype="application/json")
    check(st == 415, "wrong content type: 415")
    st, _, _ = fx.request("/token", "a=" + "x" * 100000)
    check(st == 413, "oversized body: 413")
    st, _, doc = fx.request("/token", "grant_type=%zz")
    check(st == 400 and json.loads(doc)["error"] == "invalid_request", "bad %-escape: 400")


def test_policy(fx):
    ops = Agent(fx, "ops-1")
    st, _, doc = fx.token(ops.assertion(), scope="db:read db:write db:vacuum")
    check(st == 200 and doc["scope"] == "db:read db:vacuum",
          "deny beats allow (db:* allow, db:write deny); granted is a subset of requested")
    check(doc["expires_in"] == 60, "TTL capped by the rule (60 s)")
    new = json.loads(json.dumps(POLICY))
    new["rules"][0]["actions"] = ["db:list"]
    fx.write_policy(new)
    fx.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    a = Agent(fx, "analyst-reload", ["analysts"])
    check(err_of(fx.token(a.assertion(), scope="db:read")) == (400, "invalid_scope"),
          "SIGHUP reloads a good policy")
    with open(os.path.join(fx.dir, "policy.json"), "w") as f:
        f.write('{"version": 1, "rules": [{"id": "x", "effect": "allow", "subjectz": []}]}')
    fx.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    check(fx.token(a.assertion(), scope="db:list")[0] == 200,
          "a bad policy on SIGHUP leaves the running one in force")
    check(any(r["event"] == "policy_rejected" for r in fx.audit_records()),
          "the rejected policy is audited")
    fx.write_policy(POLICY)
    fx.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)


def test_request_bounds(fx):
    """Request values that would make the audit record too long to write
    are refused (400), and the refusal is audited: before, a 20 kB scope
    overflowed the record and the issuer answered 503 with no audit line,
    a refusal anyone could repeat unrecorded."""
    ops = Agent(fx, "ops-bounds")
    r = fx.token(ops.assertion(), scope="a" * 20000)
    check(err_of(r) == (400, "invalid_scope"),
          "test_unaudited_refusal_by_oversized_scope: 400 invalid_scope", r[:1])
    recs = [x for x in fx.audit_records() if x.get("scope_requested_bytes") == 20000]
    check(len(recs) == 1 and "scope_requested" not in recs[0],
          "the refusal is in the audit log, with the scope's size rather than its bytes", recs)
    r = fx.token(ops.assertion(), audience="x" * 20000)
    check(err_of(r) == (400, "invalid_request") and
          any(x.get("audience_bytes") == 20000 for x in fx.audit_records()),
          "an oversized audience: 400, audited by size")
    # Attack: a granted scope over the token's claim limit made signing fail,
    # counted as an HSM outage (/healthz 503) that any agent could trigger.
    big = " ".join("db:" + c * 117 for c in "abcdefghi")  # 1088 bytes, all granted by db:*
    r = fx.token(ops.assertion(), scope=big)
    health = json.loads(fx.request("/healthz")[2])
    check(err_of(r) == (400, "invalid_scope") and health.get("hsm") is True,
          "test_fake_hsm_outage_by_large_scope: refused as a request error, /healthz stays ok",
          (r[:1], health))
    ok = " ".join("db:" + c * 100 for c in "abcdefghi")  # 944 bytes
    st, _, doc = fx.token(ops.assertion(), scope=ok)
    check(st == 200 and doc.get("scope") == ok, "a 944-byte scope is granted in full", st)
    # Attack: glob characters in the audience ("orders-pro[d]" passed an
    # allow rule "orders-*" beside a deny rule for "orders-prod").
    check(err_of(fx.token(ops.assertion(), audience="orders-d[b]")) == (400, "invalid_request"),
          "test_audience_with_glob_characters_refused")
    # A rule's ttl above the configured default is the rule's (under the cap).
    longer = Agent(fx, "long-1")
    st, _, doc = fx.token(longer.assertion(), audience="reports", scope="r")
    check(st == 200 and doc.get("expires_in") == 900,
          "a rule's ttl (900 s) above token_ttl (300 s) is honoured", (st, doc))
    # Attack: lengthening tokens by adding a rule. A second granting rule
    # without a ttl allows the default (300 s), and the smallest applies.
    both = Agent(fx, "long-2", ["readers"])
    st, _, doc = fx.token(both.assertion(), audience="reports", scope="r")
    check(st == 200 and doc.get("expires_in") == 300,
          "test_ttl_widened_by_rule_without_ttl: min(900, default 300)", (st, doc))
    # invalid_target when no allow rule for this agent names the audience,
    # even when a deny rule ("no-writes", orders-*) or another agent's
    # rule does; invalid_scope only for an audience the agent may use.
    check(err_of(fx.token(longer.assertion(), audience="orders-db", scope="db:read"))
          == (400, "invalid_target"),
          "an audience named only by other agents' rules and a deny rule: invalid_target")


def test_rate_limit(fx):
    rl = Agent(fx, "rl-1")
    res = [fx.token(rl.assertion(), audience="search", scope="q") for _ in range(4)]
    codes = [r[0] for r in res]
    check(codes[:2] == [200, 200] and 429 in codes[2:], "rate 2/sec: third request is 429", codes)
    limited = [r for r in res if r[0] == 429][0]
    check(int(limited[1].get("Retry-After", "0")) >= 1, "429 carries Retry-After")
    time.sleep(1.2)
    st, _, doc = fx.token(rl.assertion(), audience="search", scope="q")
    check(st == 200, "the bucket refills")
    # Two rules with rates grant the same request: a refusal by one must
    # not use up the other (before, requests refused by 1/sec drained the
    # 3/min bucket and the agent stayed limited for minutes).
    tw = Agent(fx, "twin-1")
    got = []
    for _ in range(3):
        got += [fx.token(tw.assertion(), audience="ledger", scope="read")[0] for _ in range(4)]
        time.sleep(1.1)
    check(got.count(200) == 3 and got[0] == 200 and got[4] == 200 and got[8] == 200,
          "test_refused_request_drains_no_other_bucket: 3/min is spent on issued tokens only",
          got)
    claims = jwt.decode(doc["access_token"], options={"verify_signature": False})
    check(claims.get("lim") == {"rps": 5}, "the rule's lim travels in the token")


def test_revocation(fx):
    ag = Agent(fx, "loop-1", ["analysts"])
    stop = threading.Event()
    results = []

    def loop():
        while not stop.is_set():
            results.append((time.time(), fx.token(ag.assertion())[0]))

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.5)
    fx.writ("agent", "revoke", ag.id, "--reason", "test")
    t_revoked = time.time()
    time.sleep(1.0)
    stop.set()
    t.join()
    after = [c for (ts, c) in results if ts > t_revoked]
    check(after and all(c == 400 for c in after),
          "every renewal started after revoke returned is refused", after[:5])
    ok_before = [c for (ts, c) in results if ts < t_revoked - 0.2]
    check(ok_before and all(c == 200 for c in ok_before), "renewals before revoke succeed")
    check(any(r.get("event") == "renewal_refused" and r.get("agent") == ag.id
              for r in fx.audit_records()), "the refused renewal is audited")
    time.sleep(1.2)
    recs = [r for r in fx.audit_records() if r.get("event") == "agent_revoked"
            and r.get("agent") == ag.id]
    check(len(recs) == 1 and recs[0].get("reason") == "test" and recs[0].get("actor"),
          "the CLI's revocation reaches the audit log with who and why")
    fx.stop()
    fx.start()
    check(err_of(fx.token(ag.assertion())) == (400, "invalid_grant"),
          "revocation survives an issuer restart")


def test_group_change(fx):
    """Scope by group follows the registry: `writ agent group add|remove`
    applies from the issuer's next request, no restart, and is audited."""
    ag = Agent(fx, "regrouped-1")
    check(err_of(fx.token(ag.assertion(), scope="db:read")) == (400, "invalid_target"),
          "an agent outside group analysts is refused the analysts' rule")
    fx.writ("agent", "group", "add", ag.id, "analysts")
    st, _, doc = fx.token(ag.assertion(), scope="db:read")
    check(st == 200 and doc.get("scope") == "db:read",
          "after writ agent group add, the next request is granted by the group's rule",
          (st, doc))
    fx.writ("agent", "group", "remove", ag.id, "analysts")
    check(err_of(fx.token(ag.assertion(), scope="db:read")) == (400, "invalid_target"),
          "after writ agent group remove, the next request is refused")
    time.sleep(1.2)  # the outbox moves into the audit log on the issuer's tick
    ev = [r.get("event") for r in fx.audit_records()
          if r.get("agent") == ag.id and r.get("group") == "analysts"]
    check(ev == ["agent_group_added", "agent_group_removed"],
          "both group changes reach the audit log, in order", ev)


def test_cli_change_precedes_decision(fx):
    """Attack on the trail: the CLI's records reached the log on the next
    tick, after the decisions they caused (a token issued to an agent the
    log did not have yet, a refusal before the revocation). The first
    request that sees an agent change moves the records first."""
    ag = Agent(fx, "ordered-1", ["analysts"])
    st = fx.token(ag.assertion())[0]
    fx.writ("agent", "revoke", ag.id, "--reason", "order test")
    refused = err_of(fx.token(ag.assertion()))
    check(st == 200 and refused == (400, "invalid_grant"), "issued, then refused after revoke",
          (st, refused))
    seq = {}
    for r in fx.audit_records():
        if r.get("agent") == ag.id:
            seq.setdefault(r.get("event"), r.get("seq"))
    order = [seq.get(k) for k in ("agent_added", "agent_key_added", "token_issued",
                                  "agent_revoked", "renewal_refused")]
    check(None not in order and order == sorted(order),
          "test_cli_change_precedes_decision: the log has each CLI change before the "
          "decisions it led to", seq)


def test_mint_is_audited(fx):
    """writ mint bypasses policy (break-glass), so it must not bypass the
    audit: its token_minted record reaches the issuer's log with who
    minted it."""
    tok = fx.writ("mint", "--sub", "breakglass-1", "--aud", "orders-db", "--scope",
                  "db:read").stdout.strip()
    jti = jwt.decode(tok, options={"verify_signature": False})["jti"]
    time.sleep(1.2)  # the outbox drains on the issuer's tick
    recs = [r for r in fx.audit_records() if r.get("event") == "token_minted"
            and r.get("jti") == jti]
    check(len(recs) == 1 and recs[0].get("agent") == "breakglass-1" and recs[0].get("actor")
          and recs[0].get("scope_granted") == "db:read",
          "a token from writ mint is in the audit log, with who minted it", recs)


def test_revocation_without_signal(fx):
    """A revocation committed without the store's change signal (here a raw
    SQLite write; in life a writer killed between its COMMIT and the signal)
    is still refused within the issuer's periodic re-read (0.25 s)."""
    ag = Agent(fx, "loop-2", ["analysts"])
    stop = threading.Event()
    results = []

    def loop():
        while not stop.is_set():
            t = time.time()
            results.append((t, fx.token(ag.assertion())[0]))

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.5)
    db = fx.raw_db()
    signal_file = os.path.join(fx.dir, "writ.db.agents-changed")
    size = os.path.getsize(signal_file)
    with db:
        db.execute("UPDATE agents SET status='revoked', status_reason='raw' WHERE id=?", (ag.id,))
    db.close()
    t_revoked = time.time()
    time.sleep(1.0)
    stop.set()
    t.join()
    check(os.path.getsize(signal_file) == size, "the raw write moved no signal")
    late = [c for (ts, c) in results if ts > t_revoked + 0.3]
    check(late and all(c == 400 for c in late),
          "renewals from 0.3 s after an unsignalled revocation are refused", late[:5])
    check(all(c == 200 for (ts, c) in results if ts < t_revoked - 0.2),
          "renewals before it succeed")


def test_http_abuse(fx, analyst):
    slow = socket.create_connection(("127.0.0.1", fx.port))
    slow.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nab")
    t0 = time.time()
    st = fx.token(analyst.assertion())[0]
    check(st == 200 and time.time() - t0 < 2, "a slow client does not block others")
    slow.close()
    # Attack: a body that never ends. A refused body is read and dropped
    # only up to a bound (256 KiB): declared bigger, it is refused unread;
    # chunked and endless, the connection is dropped, not read for ever.
    big = socket.create_connection(("127.0.0.1", fx.port))
    big.settimeout(10)
    big.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/x-www-form-urlencoded\r\nContent-Length: 10000000000\r\n\r\n")
    try:
        answer = big.recv(4096)
    except socket.timeout:
        answer = b"(no answer in 10 s)"
    check(answer.startswith(b"HTTP/1.1 413") and b"request body too large" in answer,
          "test_endless_body_refused_unread: a declared 10 GB body gets 413 before it is sent",
          answer[:60])
    big.close()
    for ctype in (b"application/x-www-form-urlencoded", b"application/json"):
        big = socket.create_connection(("127.0.0.1", fx.port))
        big.settimeout(10)
        big.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype +
                    b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk, sent, dropped = b"10000\r\n" + b"a" * 65536 + b"\r\n", 0, False
        try:
            while sent < 64 << 20:
                big.sendall(chunk)
                sent += len(chunk)
        except OSError:
            dropped = True
        big.close()
        check(dropped and sent < 16 << 20,
              "test_endless_chunked_body_dropped: the issuer stops reading (%s)" % ctype.decode(),
              sent)
    st, _ = fx.token(analyst.assertion())[:2]
    check(st == 200, "the issuer serves others after dropping endless bodies", st)
    st, _, _ = fx.request("/nope")
    check(st == 404, "unknown path: 404")
    st, hdr, body = fx.request("/metrics")
    check(st == 200 and "writ_tokens_issued_total" in body and
          'writ_tokens_denied_total{reason="invalid_grant"}' in body,
          "/metrics exposes issued and denied counters")
    m = dict(re.findall(r"^(writ_audit_\w+) (\d+)$", body, re.M))
    check(int(m.get("writ_audit_records_total", 0)) > 0 and
          0 < int(m.get("writ_audit_syncs_total", 0)) <=
          int(m["writ_audit_records_total"]) + int(m.get("writ_audit_checkpoints_total", 0)) and
          "writ_audit_commit_delays_total" in m and
          int(m["writ_audit_commit_delays_total"]) <= int(m["writ_audit_syncs_total"]),
          "/metrics exposes the audit log's records, syncs and commit delays", m)
    fs = [(le, int(n)) for le, n in re.findall(
        r'^writ_audit_fsync_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$', body, re.M)]
    fsum = re.search(r"^writ_audit_fsync_duration_seconds_sum ([0-9.]+)$", body, re.M)
    check(len(fs) == 10 and fs[-1] == ("+Inf", int(m["writ_audit_syncs_total"])) and
          all(a[1] <= b[1] for a, b in zip(fs, fs[1:])) and fsum and float(fsum.group(1)) > 0,
          "/metrics has the audit fdatasync histogram: one observation per sync, cumulative",
          fs)
    st, _, body = fx.request("/healthz")
    check(st == 200 and json.loads(body)["status"] == "ok", "/healthz is 200 when all is up")


def test_audit_verify(fx):
    p = subprocess.run([WRIT, "-c", fx.conf, "jwks"], capture_output=True, text=True)
    jw = os.path.join(fx.dir, "jwks.json")
    open(jw, "w").write(p.stdout)
    v = subprocess.run([WRIT, "audit", "verify", fx.audit, "--jwks", jw], capture_output=True,
                       text=True)
    check(v.returncode == 0, "writ audit verify passes on the issuer's log", v.stdout + v.stderr)
    lines = open(fx.audit).read().splitlines(True)
    edited = os.path.join(fx.dir, "edited.log")
    mid = len(lines) // 2
    lines2 = list(lines)
    lines2[mid] = lines2[mid].replace('"event":"', '"event":"x', 1)
    open(edited, "w").writelines(lines2)
    v = subprocess.run([WRIT, "audit", "verify", edited, "--jwks", jw], capture_output=True,
                       text=True)
    check(v.returncode == 1 and f":{mid + 1}: " in v.stdout, "an edited record is detected",
          v.stdout + v.stderr)
    # test_audit_verify_without_keys_is_no_pass: whoever can write the log
    # can recompute its hash chain, so with no key to check the checkpoint
    # signatures with, verify refuses instead of passing it.
    env = {k: v for k, v in os.environ.items() if k != "WRIT_CONFIG"}
    env["HOME"] = fx.dir  # no writ.conf there
    v = subprocess.run([WRIT, "audit", "verify", fx.audit], capture_output=True, text=True,
                       env=env)
    check(v.returncode != 0 and "--no-signatures" in v.stderr and not v.stdout,
          "test_audit_verify_without_keys_is_no_pass: verify without keys refuses",
          v.stdout + v.stderr)
    v = subprocess.run([WRIT, "audit", "verify", fx.audit, "--no-signatures"],
                       capture_output=True, text=True, env=env)
    check(v.returncode == 0 and "signatures not checked: --no-signatures" in v.stdout,
          "verify --no-signatures checks the chain only, and says so", v.stdout + v.stderr)
    lost = os.path.join(fx.dir, "lost-store.conf")  # the same, with a store that is not there
    with open(fx.conf) as f, open(lost, "w") as g:
        g.writelines(l for l in f if not l.startswith("state_db"))
        g.write("state_db = /nonexistent/writ.db\n")
    v = subprocess.run([WRIT, "-c", lost, "audit", "verify", fx.audit], capture_output=True,
                       text=True, env=env)
    check(v.returncode != 0 and "cannot read the signing keys" in v.stderr,
          "verify with a configuration whose store cannot be read refuses", v.stdout + v.stderr)
    q = subprocess.run([WRIT, "audit", "query", fx.audit, "--agent", "analyst-1"],
                       capture_output=True, text=True)
    check(q.returncode == 0 and "analyst-1" in q.stdout, "audit query finds the agent's records")


def test_disk_full(analyst_groups=("analysts",)):
    if os.geteuid() != 0:
        print("SKIP disk-full (needs root to mount tmpfs)")
        return
    fx = Issuer(POLICY)
    mnt = os.path.join(fx.dir, "small")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]).returncode != 0:
        print("SKIP disk-full (mount failed)")
        fx.close()
        return
    try:
        with open(fx.conf, "a") as f:
            f.write(f"audit_log = {mnt}/audit.log\n")
        fx.audit = f"{mnt}/audit.log"
        fx.start()
        a = Agent(fx, "df-1", ["analysts"])
        # The CLI's records are moved into the log first, so no append of
        # the issuer's own is pending once the disk is full.
        end = time.time() + 3
        while time.time() < end and not any(
                r.get("event") == "agent_key_added" for r in fx.audit_records()):
            time.sleep(0.1)
        codes = []
        for _ in range(400):
            st, _, doc = fx.token(a.assertion())
            codes.append(st)
            if st == 503:
                check(doc.get("error") == "temporarily_unavailable" and "access_token" not in doc,
                      "full audit disk: 503 temporarily_unavailable and no token")
                break
        check(503 in codes, "the audit log filled up within 400 requests", codes[-3:])
        st, _, body = fx.request("/healthz")
        check(st == 503 and json.loads(body)["audit"] is False, "/healthz reports the audit log down")
        issued = sum(1 for c in codes if c == 200)
        recs = [r for r in fx.audit_records() if r.get("event") == "token_issued"]
        check(len(recs) == issued, "every token a client received is in the log",
              f"{len(recs)} vs {issued}")
        # A policy reload the log cannot record must not take effect: the
        # new policy (analysts get nothing) is refused while the disk is
        # full, and once there is room again the old one is still deciding.
        strict = json.loads(json.dumps(POLICY))
        strict["rules"] = [r for r in strict["rules"] if r["id"] != "analysts-read"]
        fx.write_policy(strict)
        fx.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        subprocess.run(["mount", "-o", "remount,size=1m", mnt], check=True)
        # No traffic: the issuer itself tries to resume the failed log.
        st, doc = wait_health(fx, lambda st, doc: st == 200, 4.0)
        check(st == 200 and doc.get("audit") is True,
              "test_healthz_recovers_without_traffic: audit log back with room, no traffic: "
              "/healthz 200", (st, doc))
        st, _, doc = fx.token(a.assertion())
        check(st == 200 and doc.get("scope") == "db:read",
              "a policy reload that could not be audited left the old policy in force",
              (st, doc))
        check(not any(r.get("event") == "policy_loaded" for r in fx.audit_records()),
              "and no policy_loaded record claims otherwise")
        fx.write_policy(POLICY)
        # Exit 0 says the log was flushed and closed whole (found in review:
        # with no room for the last record it still exited 0).
        fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        # Until the log's own last page is full too.
        for _ in range(200):
            if fx.token(a.assertion())[0] == 503:
                break
        rc = fx.stop()
        check(rc not in (0, None), "test_sigterm_with_audit_disk_full_exits_nonzero", rc)
        check(any(r.get("event") == "token_issued" for r in fx.audit_records()),
              "and the log it leaves still holds the tokens it issued")
    finally:
        fx.stop()
        subprocess.run(["umount", mnt])
        fx.close()


def tls_handshake(port, version=None, ciphers=None):
    """The negotiated (protocol, cipher) of a handshake with the issuer, or
    None when it refuses. SECLEVEL=0 so this client offers what an old or
    downgraded client would; the server is what must refuse."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with ctx.wrap_socket(s) as t:
                return t.version(), t.cipher()[0]
    except (ssl.SSLError, OSError):
        return None


def test_https():
    import ssl
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 / TLSv1_1 on purpose
    fx = Issuer(POLICY, tls=True)
    try:
        fx.start()
        a = Agent(fx, "tls-1", ["analysts"])
        st, _, doc = fx.token(a.assertion())
        check(st == 200 and doc.get("scope") == "db:read",
              "HTTPS (tls_cert/tls_key): a token is exchanged over TLS")
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % fx.port, timeout=5)
            plain = True
        except Exception:
            plain = False
        check(not plain, "HTTPS: plain HTTP is not answered")
        # Attack: protocol downgrade and weak suites (microhttpd's default
        # GnuTLS priorities answered TLS 1.0 with CBC and SHA-1 MACs).
        old = [tls_handshake(fx.port, v) for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)]
        check(old == [None, None], "test_https_downgrade_to_tls10_refused: TLS 1.0 and 1.1 are "
              "refused", old)
        cbc = tls_handshake(fx.port, ssl.TLSVersion.TLSv1_2,
                            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256"
                            ":AES128-SHA:AES256-SHA:AES128-GCM-SHA256")
        check(cbc is None, "test_https_weak_suites_refused: CBC, SHA-1 MAC and static-RSA suites "
              "are refused", cbc)
        good = [tls_handshake(fx.port, v) for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
        check(good[0] is not None and "GCM" in good[0][1] and good[1] is not None and
              good[1][0] == "TLSv1.3", "HTTPS: TLS 1.2 (ECDHE, AEAD) and TLS 1.3 are served", good)
    finally:
        fx.close()
    fx = Issuer(POLICY, tls="rsa")
    try:
        fx.start()
        a = Agent(fx, "tls-rsa", ["analysts"])
        got = tls_handshake(fx.port, ssl.TLSVersion.TLSv1_2)
        check(fx.token(a.assertion())[0] == 200 and got is not None and "ECDHE-RSA" in got[1],
              "HTTPS with an RSA certificate: a token, and TLS 1.2 with ECDHE-RSA", got)
    finally:
        fx.close()


def test_plain_http_off_loopback_refused():
    """Attack: tokens sniffed off the wire. An issuer told to listen beyond
    loopback without TLS would carry assertions and access tokens in clear
    (RFC 6749 s.3.2 requires TLS); it refuses to start unless the operator
    says TLS ends in front of it. Checked with --check-config only: tests
    bind 127.0.0.1 alone."""
    fx = Issuer(POLICY)
    try:
        with open(fx.conf) as f:
            base = [l for l in f if not l.startswith("listen")]

        def check_config(*extra):
            with open(fx.conf, "w") as f:
                f.writelines(base + [l + "\n" for l in extra])
            return subprocess.run([ISSUER_BIN, "-c", fx.conf, "--check-config"],
                                  capture_output=True, text=True)
        for listen in ("0.0.0.0:%d" % fx.port, "[::]:%d" % fx.port, "10.1.2.3:%d" % fx.port):
            r = check_config("listen = " + listen)
            check(r.returncode != 0 and "not a loopback address" in r.stderr and
                  "tls_disable = yes" in r.stderr,
                  f"test_plain_http_off_loopback_refused: listen {listen} without TLS", r.stderr)
        r = check_config("listen = 0.0.0.0:%d" % fx.port, "tls_disable = yes")
        check(r.returncode == 0, "tls_disable = yes: plain HTTP behind a TLS proxy is allowed",
              r.stderr)
        r = check_config("listen = 0.0.0.0:%d" % fx.port, "tls_disable = maybe")
        check(r.returncode != 0 and re.search(r"writ\.conf:\d+: tls_disable must be yes or no",
                                               r.stderr), "tls_disable: a bad value names its line",
              r.stderr)
        r = check_config("listen = 127.0.0.1:%d" % fx.port, "tls_disable = yes",
                         "tls_cert = /nonexistent.crt", "tls_key = /nonexistent.key")
        check(r.returncode != 0 and "contradicts" in r.stderr,
              "tls_disable with a certificate is refused as a contradiction", r.stderr)
        r = check_config("listen = [::1]:%d" % fx.port)
        check(r.returncode == 0, "[::1] is loopback: plain HTTP allowed", r.stderr)
    finally:
        fx.close()


def test_replay_after_restart(fx, analyst):
    asr = analyst.assertion()
    check(fx.token(asr)[0] == 200, "fresh assertion accepted")
    fx.stop()
    fx.start()
    check(err_of(fx.token(asr)) == (400, "invalid_grant"),
          "replay_after_restart: an assertion used before a restart is refused after it")
    check(fx.token(analyst.assertion())[0] == 200, "a fresh assertion still works after restart")


def test_stale_signing_key_stops_signing():
    """The store stops listing the issuer's signing key as active while the
    key set cannot be rebuilt (here: the new active row names a key the
    HSM does not hold; in life an HSM outage during a revocation). Before,
    the issuer went on signing with the key the store had withdrawn; now
    it keeps publishing and refuses to sign (503) until a rebuild works."""
    fx = Issuer(POLICY)
    try:
        fx.start()
        a = Agent(fx, "stale-1", ["analysts"])
        check(fx.token(a.assertion())[0] == 200, "stale key: tokens before")
        db = fx.raw_db()
        now = int(time.time())
        with db:
            db.execute("UPDATE signing_keys SET state='retired', retired_at=?, "
                       "remove_after=? WHERE state='active'", (now, now + 3600))
            db.execute("INSERT INTO signing_keys(kid, alg, p11_id, state, created_at, "
                       "activated_at, actor) VALUES('not-in-the-hsm', 'ES256', 'ffff', "
                       "'active', ?, ?, 'test')", (now, now))
        db.close()
        time.sleep(1.0)
        st, _, doc = fx.token(a.assertion())
        check(st == 503 and doc.get("error") == "temporarily_unavailable",
              "test_withdrawn_signing_key_not_used: no token signed with a key the store "
              "no longer lists as active", (st, doc))
        check(fx.request("/.well-known/jwks.json")[0] == 200,
              "the JWKS is still served meanwhile")
    finally:
        fx.close()


def wait_health(fx, want, timeout=4.0):
    """Poll /healthz (no other traffic) until want(status, doc) holds or
    timeout seconds pass; the last (status, doc)."""
    end = time.time() + timeout
    while True:
        st, _, body = fx.request("/healthz")
        doc = json.loads(body)
        if want(st, doc) or time.time() > end:
            return st, doc
        time.sleep(0.1)


def writ_up(fx, component):
    body = fx.request("/metrics")[2]
    m = re.search(r'^writ_up\{component="%s"\} (\d+)$' % component, body, re.M)
    return int(m.group(1)) if m else None


def test_healthz_not_ok_while_signing_stale():
    """Defect: with signing switched off (the key set is stale: the store's
    active key is one the HSM lacks) every /token answered 503 while
    /healthz said 200 {"status":"ok"} and writ_up said all was up, so a load
    balancer kept sending traffic. Now /healthz is 503 and writ_up of
    "signing" is 0 while it lasts, and both come back with a rebuild."""
    fx = Issuer(POLICY)
    try:
        fx.start()
        a = Agent(fx, "stale-hz-1", ["analysts"])
        check(fx.token(a.assertion())[0] == 200 and fx.request("/healthz")[0] == 200 and
              writ_up(fx, "signing") == 1, "stale healthz: ready before")
        db = fx.raw_db()
        now = int(time.time())
        with db:
            active = db.execute("SELECT kid FROM signing_keys WHERE state='active'").fetchone()[0]
            db.execute("UPDATE signing_keys SET state='retired', retired_at=?, "
                       "remove_after=? WHERE state='active'", (now, now + 3600))
            db.execute("INSERT INTO signing_keys(kid, alg, p11_id, state, created_at, "
                       "activated_at, actor) VALUES('not-in-the-hsm', 'ES256', 'ffff', "
                       "'active', ?, ?, 'test')", (now, now))
        st, doc = wait_health(fx, lambda st, doc: st == 503, 3.0)
        check(fx.token(a.assertion())[0] == 503, "stale healthz: /token refuses (503)")
        check(st == 503 and doc.get("status") == "unavailable" and doc.get("signing") is False,
              "test_healthz_not_ok_while_signing_stale: /healthz is 503 while signing is off",
              (st, doc))
        check(writ_up(fx, "signing") == 0,
              "test_healthz_not_ok_while_signing_stale: writ_up{signing} is 0")
        # Put the real key back in force: the set rebuilds and signing resumes.
        with db:
            db.execute("DELETE FROM signing_keys WHERE kid='not-in-the-hsm'")
            db.execute("UPDATE signing_keys SET state='active', retired_at=NULL, "
                       "remove_after=NULL WHERE kid=?", (active,))
        db.close()
        st, doc = wait_health(fx, lambda st, doc: st == 200, 3.0)
        check(st == 200 and doc.get("signing") is True and writ_up(fx, "signing") == 1,
              "stale healthz: ready again after the key set is rebuilt", (st, doc))
    finally:
        fx.close()


def test_healthz_recovers_without_traffic():
    """Defect: hsm_ok changed only with /token: with the HSM gone and no
    traffic /healthz stayed 200, and after one failed signing it stayed 503
    until a /token succeeded, which a load balancer that stops sending
    traffic on 503 never lets happen. Now the issuer probes the HSM itself
    about once a second. The HSM 'goes away' as the token directory does."""
    fx = Issuer(POLICY)
    try:
        fx.start()
        a = Agent(fx, "hz-hsm-1", ["analysts"])
        check(fx.request("/healthz")[0] == 200, "hsm healthz: ready before")
        tokens = os.path.join(fx.dir, "tokens")
        away = tokens + ".away"
        os.rename(tokens, away)
        try:
            st, doc = wait_health(fx, lambda st, doc: st == 503, 4.0)
            check(st == 503 and doc.get("hsm") is False,
                  "test_healthz_recovers_without_traffic: HSM gone, no traffic: /healthz 503",
                  (st, doc))
            check(writ_up(fx, "hsm") == 0, "HSM gone: writ_up{hsm} is 0")
            check(fx.token(a.assertion())[0] == 503, "HSM gone: /token is 503")
        finally:
            os.rename(away, tokens)
        st, doc = wait_health(fx, lambda st, doc: st == 200, 4.0)
        check(st == 200 and doc.get("hsm") is True and writ_up(fx, "hsm") == 1,
              "test_healthz_recovers_without_traffic: HSM back, no traffic: /healthz 200",
              (st, doc))
        check(fx.token(a.assertion())[0] == 200, "HSM back: tokens again")
    finally:
        fx.close()


def test_sigterm_after_clients_vanish():
    """Clients that send a token request and reset the connection while its
    response is held for the audit sync: microhttpd then closes without
    calling the handler again, and the count of held responses leaked, so
    SIGTERM waited 10 s for responses nobody held and left the HTTP
    threads running while the rest was freed. Stop must be prompt."""
    import struct
    fx = Issuer(POLICY)
    try:
        fx.start()
        a = Agent(fx, "vanish-1", ["analysts"])

        def burst(n):
            for _ in range(n):
                body = urllib.parse.urlencode([
                    ("grant_type", GT), ("subject_token", a.assertion()),
                    ("subject_token_type", TT), ("audience", "orders-db"), ("scope", "db:read")])
                req = ("POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       "application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(body), body)).encode()
                s = socket.create_connection(("127.0.0.1", fx.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(req)
                time.sleep(0.002)  # into the handler, then gone (RST)
                s.close()
        ts = [threading.Thread(target=burst, args=(60,)) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        time.sleep(0.3)
        t0 = time.time()
        rc = fx.stop()
        took = time.time() - t0
        err = fx.stderr_text()
        check(rc == 0 and took < 3 and "still wait" not in err,
              f"SIGTERM after clients reset held requests: prompt clean stop "
              f"(rc {rc}, {took:.1f} s)", err[-300:])
    finally:
        fx.close()


def test_sigterm_under_load():
    # Responses are held while their audit record is synced: SIGTERM must
    # let those finish (microhttpd cannot stop with a connection suspended)
    # and exit 0, with every token a client got in the log.
    fx = Issuer(POLICY)
    try:
        fx.start()
        a = Agent(fx, "term-1", ["analysts"])
        got = []
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    st, _, doc = fx.token(a.assertion())
                except Exception:
                    return
                if st == 200:
                    got.append(jwt.decode(doc["access_token"],
                                          options={"verify_signature": False})["jti"])

        ts = [threading.Thread(target=loop) for _ in range(6)]
        for t in ts:
            t.start()
        time.sleep(1.5)
        t0 = time.time()
        rc = fx.stop()
        took = time.time() - t0
        stop.set()
        for t in ts:
            t.join()
        check(rc == 0 and took < 10, f"SIGTERM under load: exits 0 (rc {rc}, {took:.1f} s)")
        jtis = {r.get("jti") for r in fx.audit_records()}
        check(got and all(j in jtis for j in got),
              f"SIGTERM under load: all {len(got)} tokens clients received are in the log")
        v = fx.writ("audit", "verify", fx.audit, ok=False)
        check(v.returncode == 0 and "signatures verified" in v.stdout,
              "SIGTERM under load: the log verifies", v.stdout + v.stderr)
    finally:
        fx.close()


def test_slow_hsm_does_not_hold_the_http_thread():
    """Token requests are decided and signed on the worker pool, not on the
    HTTP thread that read them: one HTTP thread, an HSM whose C_Sign takes
    1.5 s (a PKCS#11 shim over SoftHSM2: a real token cannot be made slow
    on demand), two token requests and a JWKS GET at once. Decided on the
    HTTP thread, as before, the GET waited behind a signature and the two
    signatures ran one after the other (3 s); microhttpd had also bound
    each connection's work to whichever of its threads accepted it, which
    at full load left one core idle while the other thread's clients
    queued."""
    shim = os.environ.get("WRIT_P11_SHIM")
    if not shim or not os.path.exists(shim):
        print("skip slow-HSM test: WRIT_P11_SHIM not built")
        return
    fx = Issuer(POLICY, extra_conf="http_threads = 1\nworkers = 2\n")
    saved = {k: os.environ.get(k) for k in ("WRIT_SHIM_REAL", "WRIT_SHIM_SIGN_DELAY_MS")}
    try:
        a = Agent(fx, "slow-1", ["analysts"])
        with open(fx.conf) as f:
            conf = f.read()
        real = re.search(r"^pkcs11_module = (.*)$", conf, re.M).group(1)
        with open(fx.conf, "w") as f:
            f.write(re.sub(r"^pkcs11_module = .*$", "pkcs11_module = " + shim, conf,
                           flags=re.M))
        os.environ["WRIT_SHIM_REAL"] = real
        os.environ["WRIT_SHIM_SIGN_DELAY_MS"] = "1500"
        fx.start()
        done = {}

        def token(name):
            st, _, _ = fx.token(a.assertion())
            done[name] = (st, time.monotonic())
        t0 = time.monotonic()
        ts = [threading.Thread(target=token, args=(n,)) for n in ("t1", "t2")]
        for t in ts:
            t.start()
        time.sleep(0.3)  # both are signing now
        st, _, body = fx.request("/.well-known/jwks.json")
        got_jwks = time.monotonic()
        _, _, met = fx.request("/metrics")
        in_pool = re.search(r"^writ_token_requests_in_pool (\d+)$", met, re.M)
        for t in ts:
            t.join()
        check(st == 200 and "keys" in body and all(n in done for n in ("t1", "t2"))
              and got_jwks < min(d[1] for d in done.values()),
              "slow HSM, one HTTP thread: a JWKS GET is answered while token requests sign",
              f"jwks at {got_jwks - t0:.2f} s, tokens {[(d[0], round(d[1] - t0, 2)) for d in done.values()]}")
        check(in_pool is not None and in_pool.group(1) == "2",
              "slow HSM: /metrics shows the two token requests on the worker pool",
              in_pool.group(0) if in_pool else met[:200])
        # A worker counts a request until its handler returns, which can
        # be a moment after the client has the response.
        for _ in range(40):
            _, _, met = fx.request("/metrics")
            if re.search(r"^writ_token_requests_in_pool 0$", met, re.M):
                break
            time.sleep(0.05)
        check(re.search(r"^writ_token_requests_in_pool 0$", met, re.M) is not None,
              "slow HSM: /metrics shows the pool empty once they are answered")
        check(all(d[0] == 200 for d in done.values())
              and max(d[1] for d in done.values()) - t0 < 2.9,
              "slow HSM, one HTTP thread: two token requests sign at once on the worker pool",
              f"tokens {[(d[0], round(d[1] - t0, 2)) for d in done.values()]}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fx.close()


def test_replay_shared_sqlite():
    # replay_cache = sqlite: the set lives in the shared database, for
    # several issuers on one host.
    fx = Issuer(POLICY, extra_conf="replay_cache = sqlite\n")
    try:
        fx.start()
        a = Agent(fx, "sq-1", ["analysts"])
        asr = a.assertion()
        check(fx.token(asr)[0] == 200, "sqlite replay cache: fresh assertion accepted")
        check(err_of(fx.token(asr)) == (400, "invalid_grant"),
              "sqlite replay cache: replayed assertion refused")
        fx.stop()
        fx.start()
        check(err_of(fx.token(asr)) == (400, "invalid_grant"),
              "sqlite replay cache: replay_after_restart refused")
    finally:
        fx.close()


def test_outbox_two_issuers_one_store():
    """Attack on the trail: two issuers sharing one store (SPEC s.8) each
    moved the CLI's audit records into their own log without a claim, so
    records landed in both logs or were split between them. Now each record
    reaches exactly one log, and carries when the change was made (at)."""
    fx = Issuer(POLICY, extra_conf="replay_cache = sqlite\n")
    p2 = None
    try:
        fx.start()
        conf2 = os.path.join(fx.dir, "writ2.conf")
        port2 = free_port()
        with open(fx.conf) as f:
            txt = f.read().replace(f"listen = 127.0.0.1:{fx.port}", f"listen = 127.0.0.1:{port2}")
        with open(conf2, "w") as f:
            f.write(txt + f"audit_log = {fx.dir}/audit2.log\n")
        os.chmod(conf2, 0o600)
        with open(os.path.join(fx.dir, "issuer2.err"), "w") as err2:
            p2 = subprocess.Popen([ISSUER_BIN, "-c", conf2], stdout=subprocess.PIPE, stderr=err2,
                                  text=True)
        check("listening" in p2.stdout.readline(), "a second issuer starts on the same store")
        t0 = time.time()
        for i in range(30):
            Agent(fx, f"dup-{i}")
            time.sleep(0.02)
        time.sleep(1.5)  # both ticks have run several times

        def recs(path):
            with open(path) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        both = [r for path in (fx.audit, os.path.join(fx.dir, "audit2.log"))
                for r in recs(path) if str(r.get("agent", "")).startswith("dup-")]
        keys = [(r["event"], r["agent"]) for r in both]
        check(len(keys) == 60 and len(set(keys)) == 60,
              "test_outbox_two_issuers_one_store: each CLI record in exactly one log",
              (len(keys), len(set(keys))))
        ats = [r.get("at", "") for r in both]
        check(all(a.startswith(time.strftime("%Y-", time.gmtime(t0))) and a.endswith("Z")
                  for a in ats), "each moved record says when the change was made (at)", ats[:2])
    finally:
        if p2 is not None:
            p2.terminate()
            p2.wait()
        fx.close()


def test_kill9_under_load():
    fx = Issuer(POLICY)
    fx.start()
    a = Agent(fx, "k9-1", ["analysts"])
    got = []
    stop = threading.Event()

    used = []

    def loop():
        while not stop.is_set():
            asr = a.assertion()
            try:
                st, _, doc = fx.token(asr)
            except Exception:
                return
            if st == 200:
                got.append(jwt.decode(doc["access_token"], options={"verify_signature": False})["jti"])
                used.append(asr)

    ts = [threading.Thread(target=loop) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.5)
    fx.proc.kill()
    fx.proc.wait()
    stop.set()
    for t in ts:
        t.join()
    fx.proc = None
    # Simulate the torn write a crash can leave, then restart: recovered.
    with open(fx.audit, "a") as f:
        f.write('{"seq":999999,"event":"tok')
    fx.start()
    jtis = {r.get("jti") for r in fx.audit_records()}
    check(got and all(j in jtis for j in got),
          f"after kill -9, all {len(got)} tokens clients received are in the log")
    check(any(r["event"] == "log_recovered" for r in fx.audit_records()),
          "the torn last line is reported and recovered on restart")
    # replay_after_kill9: the replay cache is rebuilt from the audit log,
    # so no assertion a client got a token for is accepted again.
    replays = [err_of(fx.token(asr)) for asr in used[-100:]]
    check(used and all(r == (400, "invalid_grant") for r in replays),
          f"after kill -9, none of {len(replays)} used assertions is accepted again", replays[:3])
    fx.stop()
    v = fx.writ("audit", "verify", fx.audit, ok=False)
    check(v.returncode == 0 and "signatures verified" in v.stdout, "the recovered log verifies",
          v.stdout + v.stderr)
    fx.close()


def main():
    if not os.access("/usr/lib/softhsm/libsofthsm2.so", os.R_OK):
        print("SKIP: SoftHSM2 not installed")
        return 77
    fx = Issuer(POLICY)
    try:
        fx.start()
        analyst = Agent(fx, "analyst-1", ["analysts"])
        with open(f"/proc/{fx.proc.pid}/limits") as f:
            core = [l.split()[4:6] for l in f if l.startswith("Max core file size")]
        check(core == [["0", "0"]], "the issuer runs with core dumps off (it holds the TLS key "
              "and, with SoftHSM2, decrypted token keys)", core)
        test_success_and_pyjwkclient(fx, analyst)
        test_error_rows(fx, analyst)
        test_policy(fx)
        test_rate_limit(fx)
        test_request_bounds(fx)
        test_http_abuse(fx, analyst)
        test_revocation(fx)
        test_group_change(fx)
        test_cli_change_precedes_decision(fx)
        test_mint_is_audited(fx)
        test_revocation_without_signal(fx)
        test_replay_after_restart(fx, analyst)
        rc = fx.stop()
        check(rc == 0, "SIGTERM: the issuer exits 0")
        check(fx.audit_records()[-1]["event"] in ("issuer_stopped", "checkpoint"),
              "SIGTERM flushes the audit log")
        test_audit_verify(fx)
    finally:
        fx.close()
    test_disk_full()
    test_https()
    test_plain_http_off_loopback_refused()
    test_kill9_under_load()
    test_sigterm_under_load()
    test_sigterm_after_clients_vanish()
    test_stale_signing_key_stops_signing()
    test_healthz_not_ok_while_signing_stale()
    test_healthz_recovers_without_traffic()
    test_replay_shared_sqlite()
    test_outbox_two_issuers_one_store()
    test_slow_hsm_does_not_hold_the_http_thread()
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
