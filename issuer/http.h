/*
 * http.h - the issuer's HTTP front (libmicrohttpd), kept to one file so
 * nothing else in the daemon sees microhttpd types.
 *
 * The front enforces what holds for every route: methods, a body cap
 * (413), form content type for POST (415), a connection timeout and a
 * connection limit; then hands a complete request to one handler. A GET
 * or HEAD is handled on the HTTP thread that read it; a POST (a token
 * request) is handed, its connection suspended, to a pool of cfg->workers
 * threads (workq.h), so the handler must be thread-safe and must not
 * assume which thread it runs on.
 */
#ifndef WRIT_HTTP_H
#define WRIT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define HTTP_BODY_MAX (32 * 1024)
/* A refused body (413, 415) is read and dropped up to this many bytes so
 * the refusal reaches the client rather than a reset; a body declared
 * larger is refused before it is read, and one that runs past this
 * (chunked) loses its connection: a client cannot keep a worker reading
 * gigabytes it will refuse anyway. */
#define HTTP_DRAIN_MAX (256 * 1024)
/* microhttpd's per-connection pool: request line, headers and the read
 * buffer (the body is copied out as it arrives, so it need not fit). The
 * pool is zeroed for every request on a kept-alive connection, so it is
 * kept at microhttpd's own default rather than larger. */
#define HTTP_CONN_MEMORY (32 * 1024)
/*
 * HTTPS (GnuTLS, through microhttpd): TLS 1.2 and 1.3 only, forward-secret
 * ECDHE key exchange and AEAD ciphers only. microhttpd's default
 * ("NORMAL") also answered TLS 1.0 and CBC suites with SHA-1 MACs.
 */
#define HTTP_TLS_PRIORITIES                                                                        \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"        \
	"+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA"

typedef struct http_req {
	void *hold;         /* for a held response: see http_release */
	const char *method; /* "GET", "POST" */
	const char *path;
	const char *body; /* NUL-terminated; NULL for GET */
	size_t body_len;
	const char *if_none_match; /* may be NULL */
	char client[64];           /* peer address */
	int64_t t_read_ns;         /* writ_mono_ns() when the whole request was read */
	unsigned in_pool;          /* POST requests queued or running on the pool now */
} http_req;

typedef struct http_resp {
	int status;
	const char *content_type;  /* default application/json */
	char *body;                /* malloc'd, taken by the front */
	size_t body_len;           /* 0: strlen(body) */
	const char *cache_control; /* default "no-store" */
	char etag[72];             /* sent when non-empty */
	unsigned retry_after;      /* sent when non-zero */
	const char *allow;         /* sent with 405 */
	/* Held: the response leaves only once http_release(req->hold, WRIT_OK)
	 * is called; http_release(req->hold, other) replaces it with a 503.
	 * The handler that sets it must have arranged exactly one release,
	 * and the strings it points to (content_type, cache_control, allow)
	 * must outlive the handler: they are read when it is sent. */
	int held;
} http_resp;

typedef void (*http_handler)(void *arg, const http_req *req, http_resp *resp);

typedef struct http_server http_server;

/* Start listening on cfg->listen with cfg's limits; TLS when configured. */
WRIT_MUST_CHECK writ_rc http_start(const writ_config *cfg, http_handler fn, void *arg,
                                   http_server **out, writ_err *err);
/* Stop accepting new connections; requests in flight go on. */
void http_quiesce(http_server *s);
/* Finish requests in flight, close everything, free; 0. NULL is fine.
 * -1 when held responses still wait for the audit log after 10 s (a hung
 * disk): the HTTP threads are left running, and so is everything they
 * use, so the caller must exit without tearing anything down. */
int http_stop(http_server *s);
/*
 * Let a held response leave (rc WRIT_OK) or turn it into a 503 "the audit
 * log is unavailable" (anything else). Any thread, exactly once per held
 * response, possibly before the handler has returned. The connection is
 * suspended meanwhile, so the HTTP thread serves other connections
 * instead of waiting (the issuer: on its audit record's fdatasync).
 */
void http_release(void *hold, writ_rc rc);

/* The port actually bound (for listen = ...:0 in tests). */
unsigned http_port(const http_server *s);

#endif
