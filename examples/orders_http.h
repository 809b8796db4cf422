/*
 * orders_http.h - the demo orders service's HTTP front (libmicrohttpd),
 * kept to one file so the service logic never sees microhttpd types.
 *
 * The front enforces what holds for every request: a body cap (413), a
 * connection timeout, a connection limit and a per-connection memory cap;
 * it collects the Authorization header(s) and hands a complete request to
 * one handler. Deciding what the request may do is the handler's job.
 */
#ifndef ORDERS_HTTP_H
#define ORDERS_HTTP_H

#include <stddef.h>

#include <writ/writ.h>

#define ORDERS_BODY_MAX (16 * 1024)

typedef struct orders_req {
	const char *method; /* as sent: "GET", "POST", ... */
	const char *path;
	/* The first Authorization header (NULL if none) and how many were
	 * sent: a request with two is refused, not resolved by picking one. */
	const char *authorization;
	unsigned n_authorization;
	size_t body_len;
	int body_too_large; /* body over ORDERS_BODY_MAX (it was discarded) */
} orders_req;

typedef struct orders_resp {
	int status;
	char *body;                 /* malloc'd JSON, taken by the front; NULL: empty */
	char www_authenticate[512]; /* sent when non-empty (RFC 6750 s.3) */
	unsigned retry_after;       /* seconds, sent when non-zero */
	const char *allow;          /* sent with 405 */
} orders_resp;

/* Called once per complete request, from the front's worker threads. */
typedef void (*orders_handler)(void *arg, const orders_req *req, orders_resp *resp);

typedef struct orders_http orders_http;

/*
 * Listen on `listen` ("IPv4:PORT" or "[IPv6]:PORT"; port 0 picks one) with
 * `threads` worker threads. *out is the caller's (orders_http_stop).
 * Returns WRIT_ERR_CONFIG for a bad address, WRIT_ERR_IO if it cannot bind.
 */
WRIT_MUST_CHECK writ_rc orders_http_start(const char *listen, unsigned threads, orders_handler fn,
                                          void *arg, orders_http **out, writ_err *err);
/* The port actually bound. */
unsigned orders_http_port(const orders_http *h);
/* Stop accepting, finish requests in flight, free. NULL is fine. */
void orders_http_stop(orders_http *h);

#endif
