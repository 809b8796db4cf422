/*
 * orders_service.c - a demo target service: a stand-in for a database
 * gateway that enforces writ tokens at the point of use (SPEC s.1).
 *
 *   GET  /orders   needs db:read    200 with a list of (fake) orders
 *   POST /orders   needs db:write   201 with the (fake) created order
 *
 * Tokens are verified offline with libwrit against the issuer's JWK Set;
 * the issuer is never called per request. The token's "lim" (e.g.
 * {"rps": 5}) caps the request rate per agent. Refusals follow RFC 6750
 * s.3: 401 for a missing or bad token, 403 insufficient_scope, 400 for a
 * malformed Authorization header, and 429 with Retry-After over the limit.
 * One JSON line per decision goes to stderr, carrying the token's jti so
 * it joins with the issuer's audit log.
 *
 * Only libwrit's public headers are used: this is what a service outside
 * this tree would write.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <writ/verifier.h>
#include <writ/writ.h>

#include "orders_http.h"

#define DEFAULT_LISTEN   "127.0.0.1:8081"
#define DEFAULT_AUDIENCE "orders-db"
#define JWKS_PATH        "/.well-known/jwks.json"
#define RETRY_AFTER_MAX  3600u

typedef struct service {
	writ_verifier *v;
	const char *audience; /* also the RFC 6750 realm */
	atomic_uint next_id;  /* fake order numbers for POST */
} service;

/* What the Authorization header holds (RFC 6750 s.2.1). */
typedef enum authz_kind {
	AUTHZ_NONE,      /* no credentials: 401 without an error code (s.3.1) */
	AUTHZ_OTHER,     /* another scheme (Basic, ...): likewise, no error code */
	AUTHZ_MALFORMED, /* Bearer but not "Bearer" SP b64token, or two headers */
	AUTHZ_BEARER,
} authz_kind;

static const char orders_json[] =
    "{\"orders\":["
    "{\"id\":\"ord-1001\",\"customer\":\"acme\",\"total\":\"129.90\",\"status\":\"shipped\"},"
    "{\"id\":\"ord-1002\",\"customer\":\"globex\",\"total\":\"42.00\",\"status\":\"pending\"},"
    "{\"id\":\"ord-1003\",\"customer\":\"initech\",\"total\":\"7.50\",\"status\":\"cancelled\"}"
    "]}";

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: orders-service --issuer URL [--audience NAME] [--jwks-url URL | --jwks FILE]\n"
	    "                      [--listen HOST:PORT] [--leeway SECONDS]\n\n"
	    "A demo database gateway that enforces writ tokens offline:\n"
	    "  GET /orders needs db:read, POST /orders needs db:write, and the token's\n"
	    "  \"lim\" (e.g. {\"rps\": 5}) caps the request rate per agent.\n\n"
	    "  --issuer URL       the exact \"iss\" of accepted tokens\n"
	    "  --audience NAME    this service's name, the exact \"aud\" (default %s)\n"
	    "  --jwks-url URL     the issuer's JWK Set (default ISSUER%s)\n"
	    "  --jwks FILE        a JWK Set file instead of a URL\n"
	    "  --listen HOST:PORT address to serve on (default %s; port 0 picks one)\n"
	    "  --leeway SECONDS   clock skew allowed, 1..%d (default 30)\n\n"
	    "One JSON line per decision goes to stderr (jti, sub, action, allowed, why).\n"
	    "SIGTERM or SIGINT stops it after the requests in flight.\n",
	    DEFAULT_AUDIENCE, JWKS_PATH, DEFAULT_LISTEN, WRIT_LEEWAY_MAX);
}

/* ---- the decision log ---------------------------------------------------- */

/* Append s as a JSON string; values may come from a token that failed to
 * verify, so everything outside printable ASCII is escaped. */
static void json_str(char *buf, size_t cap, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = *pos;

	if (s == NULL) {
		n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "null");
		*pos = n < cap ? n : cap - 1;
		return;
	}
	/* Leave room for the worst escape (6 bytes), the closing quote and NUL. */
	if (n + 1 < cap)
		buf[n++] = '"';
	for (; *s != '\0' && n + 8 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			memcpy(buf + n, "\\u00", 4);
			buf[n + 4] = hex[ch >> 4];
			buf[n + 5] = hex[ch & 0xf];
			n += 6;
		} else {
			buf[n++] = (char)ch;
		}
	}
	if (n + 1 < cap)
		buf[n++] = '"';
	buf[n < cap ? n : cap - 1] = '\0';
	*pos = n < cap ? n : cap - 1;
}

/* One line per decision. Built whole and written with one call, so lines
 * from the worker threads never interleave (stdio locks the stream). */
static void log_line(const service *s, const char *jti, const char *sub, const char *action,
                     int allowed, const char *why)
{
	char line[1024], ts[32];
	struct tm tm;
	time_t now = time(NULL);
	size_t pos;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pos = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"service\":", ts);
	json_str(line, sizeof(line), &pos, s->audience);
	pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"jti\":");
	json_str(line, sizeof(line), &pos, jti);
	pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"sub\":");
	json_str(line, sizeof(line), &pos, sub);
	pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ",\"action\":");
	json_str(line, sizeof(line), &pos, action);
	pos += (size_t)snprintf(line + pos, sizeof(line) - pos,
	                        ",\"allowed\":%s,\"why\":", allowed ? "true" : "false");
	json_str(line, sizeof(line), &pos, why);
	fprintf(stderr, "%s}\n", line);
}

/* The verifier's callback: every verify/scope/admit decision. */
static void log_decision(void *arg, const writ_decision *d)
{
	log_line(arg, d->jti, d->sub, d->action, d->allowed,
	         d->allowed ? "ok" : writ_strerror(d->why));
}

/* ---- the Authorization header -------------------------------------------- */

static int b64token_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

/*
 * RFC 6750 s.2.1: credentials = "Bearer" 1*SP b64token, where the scheme
 * is case-insensitive (RFC 9110 s.11.1). We take exactly one SP and then
 * b64token to the end, nothing around it: a lenient parser is where two
 * components (a proxy and this service) start to disagree on the token.
 */
static authz_kind parse_authz(const orders_req *req, const char **tok, size_t *len)
{
	const char *h = req->authorization, *p;
	size_t n;

	*tok = NULL;
	*len = 0;
	if (req->n_authorization == 0 || h == NULL)
		return AUTHZ_NONE;
	if (req->n_authorization > 1)
		return AUTHZ_MALFORMED;
	if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\0'))
		return h[0] != '\0' && h[0] != ' ' ? AUTHZ_OTHER : AUTHZ_MALFORMED;
	if (h[6] == '\0')
		return AUTHZ_MALFORMED;
	p = h + 7;
	for (n = 0; b64token_char((unsigned char)p[n]); n++)
		;
	if (n == 0)
		return AUTHZ_MALFORMED;
	while (p[n] == '=')
		n++;
	if (p[n] != '\0')
		return AUTHZ_MALFORMED;
	*tok = p;
	*len = n;
	return AUTHZ_BEARER;
}

/* ---- responses ----------------------------------------------------------- */

static void set_body(orders_resp *r, int status, const char *error, const char *desc)
{
	char buf[256];

	r->status = status;
	snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"error_description\":\"%s\"}", error, desc);
	r->body = strdup(buf);
}

/*
 * RFC 6750 s.3 challenge. error and desc are NULL when the request carried
 * no Bearer credentials at all (s.3.1: then no error code is given). The
 * strings put here are ours (writ_strerror, constants), never token bytes,
 * and are within the quoted-string subset s.3 allows.
 */
static void challenge(const service *s, orders_resp *r, int status, const char *error,
                      const char *desc, const char *scope)
{
	size_t n;

	n = (size_t)snprintf(r->www_authenticate, sizeof(r->www_authenticate),
	                     "Bearer realm=\"%s\"", s->audience);
	if (error != NULL && n < sizeof(r->www_authenticate))
		n += (size_t)snprintf(r->www_authenticate + n, sizeof(r->www_authenticate) - n,
		                      ", error=\"%s\", error_description=\"%s\"", error, desc);
	if (scope != NULL && n < sizeof(r->www_authenticate))
		(void)snprintf(r->www_authenticate + n, sizeof(r->www_authenticate) - n,
		               ", scope=\"%s\"", scope);
	if (error != NULL)
		set_body(r, status, error, desc);
	else
		set_body(r, status, "unauthorized", "a Bearer token is required");
}

static unsigned retry_seconds(double ra)
{
	unsigned s;

	if (!(ra > 0)) /* also NaN */
		return 1;
	if (ra >= RETRY_AFTER_MAX)
		return RETRY_AFTER_MAX;
	/* Retry-After is whole seconds (RFC 9110 s.10.2.3): round up, so
	 * a client that waits exactly that long finds a token in the bucket. */
	s = (unsigned)ra;
	return (double)s < ra ? s + 1 : s;
}

/* Map the verifier's answer to HTTP. Anything the token could cause is a
 * 401: the service fails closed on what it does not recognise. */
static void refuse(const service *s, orders_resp *r, writ_rc rc, const char *action,
                   double retry_after)
{
	switch (rc) {
	case WRIT_ERR_SCOPE:
		challenge(s, r, 403, "insufficient_scope", "the token does not grant this action",
		          action);
		break;
	case WRIT_ERR_RATE_LIMITED:
		r->retry_after = retry_seconds(retry_after);
		set_body(r, 429, "rate_limited", "over the token's request limit");
		break;
	case WRIT_ERR_UNAVAILABLE:
	case WRIT_ERR_IO:
		/* No usable key set (issuer down past max_stale): not the
		 * client's fault, and no token is accepted meanwhile. */
		set_body(r, 503, "temporarily_unavailable", "signing keys unavailable");
		break;
	case WRIT_ERR_NOMEM: set_body(r, 500, "server_error", "out of memory"); break;
	default: challenge(s, r, 401, "invalid_token", writ_strerror(rc), NULL); break;
	}
}

static void ok_response(service *s, const orders_req *req, orders_resp *r)
{
	char buf[128];

	if (req->body_too_large) {
		set_body(r, 413, "invalid_request", "request body too large");
		return;
	}
	if (strcmp(req->method, "POST") == 0) {
		snprintf(buf, sizeof(buf),
		         "{\"created\":{\"id\":\"ord-%u\",\"status\":\"pending\"}}",
		         atomic_fetch_add(&s->next_id, 1));
		r->status = 201;
		r->body = strdup(buf);
		return;
	}
	r->status = 200;
	r->body = strdup(orders_json);
}

static void handle(void *arg, const orders_req *req, orders_resp *r)
{
	service *s = arg;
	const char *action, *tok;
	double retry_after = 0;
	size_t len;
	authz_kind k;
	writ_rc rc;

	if (strcmp(req->path, "/orders") != 0) {
		set_body(r, 404, "not_found", "no such resource (try /orders)");
		return;
	}
	if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
		action = "db:read";
	else if (strcmp(req->method, "POST") == 0)
		action = "db:write";
	else {
		r->allow = "GET, HEAD, POST";
		set_body(r, 405, "invalid_request", "method not allowed");
		return;
	}
	k = parse_authz(req, &tok, &len);
	if (k != AUTHZ_BEARER) {
		/* Refused before the verifier sees anything: log it here, in
		 * the same shape as the verifier's decisions. */
		log_line(s, NULL, NULL, action, 0,
		         k == AUTHZ_MALFORMED ? "malformed Authorization header"
		         : k == AUTHZ_OTHER   ? "no Bearer token (other scheme)"
		                              : "no token");
		if (k == AUTHZ_MALFORMED)
			/* RFC 6750 s.3.1: a malformed request is 400. */
			challenge(s, r, 400, "invalid_request",
			          "Authorization must be exactly one \"Bearer <token>\" header",
			          NULL);
		else
			challenge(s, r, 401, NULL, NULL, NULL);
		return;
	}
	/* Verify, scope, admit; the verifier reports to log_decision. */
	rc = writ_verifier_check(s->v, tok, len, action, NULL, &retry_after, NULL);
	if (rc != WRIT_OK) {
		refuse(s, r, rc, action, retry_after);
		return;
	}
	ok_response(s, req, r);
}

/* ---- start and stop ------------------------------------------------------ */

/* The audience is also the realm, sent inside a quoted-string. */
static int audience_ok(const char *a)
{
	size_t i, n = strlen(a);

	if (n == 0 || n > 128)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)a[i] <= 0x20 || (unsigned char)a[i] >= 0x7f || a[i] == '"' ||
		    a[i] == '\\')
			return 0;
	return 1;
}

static int wait_for_stop(void)
{
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigwait(&set, &sig) != 0)
		return -1;
	return sig;
}

/* Command-line options into vc, svc and *listen. Returns -1 to go on, or
 * the exit code (0 after --help, 2 for a usage error). */
static int parse_args(int argc, char **argv, writ_verifier_cfg *vc, service *svc,
                      const char **listen)
{
	static const struct option opts[] = {
	    {"issuer", required_argument, 0, 'i'},   {"audience", required_argument, 0, 'a'},
	    {"jwks-url", required_argument, 0, 'u'}, {"jwks", required_argument, 0, 'f'},
	    {"listen", required_argument, 0, 'l'},   {"leeway", required_argument, 0, 'w'},
	    {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
	char *end;
	long leeway;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'i': vc->issuer = optarg; break;
		case 'a': svc->audience = optarg; break;
		case 'u': vc->jwks_url = optarg; break;
		case 'f': vc->jwks_file = optarg; break;
		case 'l': *listen = optarg; break;
		case 'w':
			leeway = strtol(optarg, &end, 10);
			if (*end != '\0' || leeway < 1 || leeway > WRIT_LEEWAY_MAX) {
				fprintf(stderr, "orders-service: --leeway must be 1..%d seconds\n",
				        WRIT_LEEWAY_MAX);
				return 2;
			}
			vc->leeway = (unsigned)leeway;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (vc->issuer == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (vc->jwks_url != NULL && vc->jwks_file != NULL) {
		fprintf(stderr, "orders-service: give --jwks-url or --jwks, not both\n");
		return 2;
	}
	if (!audience_ok(svc->audience)) {
		fprintf(stderr, "orders-service: --audience must be 1..128 printable characters "
		                "without spaces, quotes or backslashes\n");
		return 2;
	}
	vc->audience = svc->audience;
	return -1;
}

/* The issuer publishes its keys at a fixed path (SPEC s.4); caller frees. */
static char *default_jwks_url(const char *issuer)
{
	size_t n = strlen(issuer) + sizeof(JWKS_PATH);
	char *url = malloc(n);

	if (url == NULL)
		return NULL;
	/* An issuer URL ending in '/' must not give "//.well-known". */
	snprintf(url, n, "%s%s", issuer,
	         n > sizeof(JWKS_PATH) && issuer[n - sizeof(JWKS_PATH) - 1] == '/' ? JWKS_PATH + 1
	                                                                           : JWKS_PATH);
	return url;
}

int main(int argc, char **argv)
{
	static service svc;
	writ_verifier_cfg vc = {0};
	const char *listen = DEFAULT_LISTEN;
	char *jwks_url = NULL;
	orders_http *h = NULL;
	writ_err err = {0};
	sigset_t set;
	int ret, sig;

	svc.audience = DEFAULT_AUDIENCE;
	atomic_init(&svc.next_id, 1004u);
	ret = parse_args(argc, argv, &vc, &svc, &listen);
	if (ret >= 0)
		return ret;
	ret = 1;
	if (vc.jwks_url == NULL && vc.jwks_file == NULL) {
		vc.jwks_url = jwks_url = default_jwks_url(vc.issuer);
		if (jwks_url == NULL) {
			fprintf(stderr, "orders-service: out of memory\n");
			goto out;
		}
	}

	/* Block the stop signals before any thread starts (the verifier's and
	 * microhttpd's inherit the mask), so only sigwait below sees them;
	 * SIGPIPE from a vanished client must not kill the service. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Fetches the key set now: a service does not start blind. */
	if (writ_verifier_new(&vc, &svc.v, &err) != WRIT_OK) {
		fprintf(stderr, "orders-service: %s: %s\n",
		        vc.jwks_url != NULL ? vc.jwks_url : vc.jwks_file,
		        err.msg[0] != '\0' ? err.msg : writ_strerror(err.rc));
		goto out;
	}
	writ_verifier_on_decision(svc.v, log_decision, &svc);
	if (orders_http_start(listen, 2, handle, &svc, &h, &err) != WRIT_OK) {
		fprintf(stderr, "orders-service: %s\n", err.msg);
		goto out;
	}
	/* The bound port, not the asked one: --listen HOST:0 picks it. */
	printf("orders-service: listening on http://%.*s:%u/orders (audience %s, issuer %s, "
	       "keys %s)\n",
	       (int)(strrchr(listen, ':') - listen), listen, orders_http_port(h), svc.audience,
	       vc.issuer, vc.jwks_url != NULL ? vc.jwks_url : vc.jwks_file);
	fflush(stdout);
	sig = wait_for_stop();
	fprintf(stderr, "orders-service: %s: finishing requests in flight\n",
	        sig == SIGINT ? "SIGINT" : "SIGTERM");
	ret = 0;
out:
	orders_http_stop(h);
	writ_verifier_free(svc.v);
	free(jwks_url);
	if (ret == 0)
		fprintf(stderr, "orders-service: stopped\n");
	return ret;
}
