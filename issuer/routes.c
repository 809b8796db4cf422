/*
 * routes.c - the issuer's HTTP routes other than POST /token (SPEC s.4):
 * discovery (RFC 8414), the JWK Set (RFC 7517), health and metrics.
 */
#include <string.h>
#include <time.h>

#include "issuer.h"
#include "metrics.h"
#include "writ_int.h"

void resp_error(http_resp *resp, int status, const char *error, const char *desc)
{
	json_t *o = json_pack("{s:s, s:s}", "error", error, "error_description", desc);

	free(resp->body);
	resp->status = status;
	resp->body = o != NULL ? wjson_dump(o) : NULL;
	json_decref(o);
}

static void static_json(http_resp *resp, const char *body, unsigned max_age, char *ccbuf,
                        size_t cclen)
{
	snprintf(ccbuf, cclen, "public, max-age=%u", max_age);
	resp->status = 200;
	resp->body = strdup(body);
	resp->cache_control = ccbuf;
}

static void jwks(issuer *is, const http_req *req, http_resp *resp)
{
	static __thread char cc[64];
	keyset *ks = keyset_get(&is->keys);

	if (ks == NULL) {
		resp_error(resp, 503, "temporarily_unavailable", "no keys published");
		return;
	}
	static_json(resp, ks->jwks_json, is->cfg.jwks_max_age, cc, sizeof(cc));
	memcpy(resp->etag, ks->etag, sizeof(resp->etag));
	/* RFC 9110 s.13.1.2: a matching If-None-Match gets 304, no body. */
	if (req->if_none_match != NULL &&
	    (strcmp(req->if_none_match, ks->etag) == 0 || strcmp(req->if_none_match, "*") == 0)) {
		resp->status = 304;
		free(resp->body);
		resp->body = strdup("");
	}
	keyset_put(&is->keys, ks);
}

static void discovery(issuer *is, http_resp *resp)
{
	static __thread char cc[64];
	keyset *ks = keyset_get(&is->keys);

	if (ks == NULL) {
		resp_error(resp, 503, "temporarily_unavailable", "no keys published");
		return;
	}
	static_json(resp, ks->discovery_json, is->cfg.jwks_max_age, cc, sizeof(cc));
	keyset_put(&is->keys, ks);
}

static void healthz(issuer *is, http_resp *resp)
{
	int audit_ok = audit_healthy(is->audit), hsm_ok = atomic_load(&is->hsm_ok);
	/* Signing switched off (a stale key set) fails every /token: not ready. */
	int signing_ok = !atomic_load(&is->signing_stale);
	writ_err e = {0};
	uint64_t gen;
	store *st = issuer_store(is, &e);
	int store_ok = st != NULL && store_agents_generation(st, &gen, &e) == WRIT_OK;
	int ok = audit_ok && hsm_ok && signing_ok && store_ok;
	json_t *o =
	    json_pack("{s:s, s:b, s:b, s:b, s:b}", "status", ok ? "ok" : "unavailable", "hsm",
	              hsm_ok, "signing", signing_ok, "store", store_ok, "audit", audit_ok);

	resp->status = ok ? 200 : 503;
	resp->body = o != NULL ? wjson_dump(o) : NULL;
	json_decref(o);
}

static void metrics(issuer *is, const http_req *req, http_resp *resp)
{
	keyset *ks = keyset_get(&is->keys);
	audit_stats au;
	int64_t now = (int64_t)time(NULL);
	size_t i, n = ks != NULL ? ks->nmetrics : 0;
	metrics_key *keys = calloc(n + 1, sizeof(*keys));

	if (keys == NULL) {
		keyset_put(&is->keys, ks);
		resp_error(resp, 500, "server_error", "out of memory");
		return;
	}
	/* Ages of the published keys (pending, active, retired) since they
	 * were generated, from the lifecycle store. */
	for (i = 0; i < n; i++) {
		keys[i] = ks->metrics[i];
		keys[i].state = ks->states[i];
		keys[i].age_seconds = (double)(now - ks->created[i]);
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	audit_get_stats(is->audit, &au);
	resp->body = metrics_render(keys, n, &au, atomic_load(&is->hsm_ok),
	                            !atomic_load(&is->signing_stale), req->in_pool);
	free(keys);
	keyset_put(&is->keys, ks);
}

void routes_handle(void *arg, const http_req *req, http_resp *resp)
{
	issuer *is = arg;
	int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;

	if (strcmp(req->path, "/token") == 0) {
		if (strcmp(req->method, "POST") != 0) {
			resp_error(resp, 405, "invalid_request", "use POST");
			resp->allow = "POST";
			return;
		}
		exchange_handle(is, req, resp); /* measures its own latency */
		return;
	}
	if (!get) {
		resp_error(resp, strcmp(req->path, "/") == 0 ? 404 : 405, "invalid_request",
		           "use GET");
		resp->allow = "GET";
		return;
	}
	if (strcmp(req->path, "/.well-known/jwks.json") == 0)
		jwks(is, req, resp);
	else if (strcmp(req->path, "/.well-known/oauth-authorization-server") == 0 ||
	         strcmp(req->path, "/.well-known/openid-configuration") == 0)
		discovery(is, resp);
	else if (strcmp(req->path, "/healthz") == 0)
		healthz(is, resp);
	else if (strcmp(req->path, "/metrics") == 0)
		metrics(is, req, resp);
	else
		resp_error(resp, 404, "invalid_request", "no such endpoint");
}
