/*
 * orders_http.c - libmicrohttpd glue for the demo orders service (see
 * orders_http.h). Modelled on the issuer's front (issuer/http.c), but it
 * uses only libwrit's public headers, as any target service would.
 */
#include "orders_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* Limits that keep one client from holding the service: a slow client is
 * dropped after CONN_TIMEOUT seconds (microhttpd's 0 would mean never), at
 * most CONN_MAX connections are open, and each has a fixed memory pool,
 * which also caps the request line and headers (an oversized token). */
#define CONN_TIMEOUT 10
#define CONN_MAX     256
#define CONN_MEMORY  (64 * 1024)

struct orders_http {
	struct MHD_Daemon *d;
	orders_handler fn;
	void *arg;
};

/* Per-request state, from the first handler call to completion. */
typedef struct req_state {
	size_t len;
	int too_large;
} req_state;

__attribute__((format(printf, 3, 4))) static writ_rc fail(writ_err *err, writ_rc rc,
                                                          const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return rc;
	err->rc = rc;
	err->lib_code = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return rc;
}

static enum MHD_Result send_resp(struct MHD_Connection *c, orders_resp *r)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;
	char ra[24];
	size_t len = r->body != NULL ? strlen(r->body) : 0;

	mr = MHD_create_response_from_buffer(len, r->body != NULL ? r->body : (void *)"",
	                                     r->body != NULL ? MHD_RESPMEM_MUST_FREE
	                                                     : MHD_RESPMEM_PERSISTENT);
	if (mr == NULL) {
		free(r->body);
		return MHD_NO;
	}
	r->body = NULL; /* microhttpd's now */
	MHD_add_response_header(mr, "Content-Type", "application/json");
	/* Answers depend on who asks: no shared cache may keep them. */
	MHD_add_response_header(mr, "Cache-Control", "no-store");
	MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
	if (r->www_authenticate[0] != '\0')
		MHD_add_response_header(mr, "WWW-Authenticate", r->www_authenticate);
	if (r->retry_after != 0) {
		snprintf(ra, sizeof(ra), "%u", r->retry_after);
		MHD_add_response_header(mr, "Retry-After", ra);
	}
	if (r->allow != NULL)
		MHD_add_response_header(mr, "Allow", r->allow);
	ret = MHD_queue_response(c, (unsigned)r->status, mr);
	MHD_destroy_response(mr);
	return ret;
}

/* Count Authorization headers: microhttpd's lookup returns only the first,
 * and a request carrying two must not be judged on whichever comes first
 * (RFC 6750 s.3.1: more than one method/credential is invalid_request). */
static enum MHD_Result count_authz(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
	unsigned *n = cls;

	(void)kind, (void)value;
	if (key != NULL && strcasecmp(key, "Authorization") == 0)
		(*n)++;
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	orders_http *h = cls;
	req_state *st = *con_cls;
	orders_req req = {0};
	orders_resp resp = {0};
	const char *cl;

	(void)version, (void)upload_data; /* the body is counted, not read */
	if (st == NULL) {
		/* Queue nothing on the first call: doing so forces
		 * Connection: close on every reply (FACTS.md). */
		st = calloc(1, sizeof(*st));
		if (st == NULL)
			return MHD_NO;
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (cl != NULL && strtoull(cl, NULL, 10) > ORDERS_BODY_MAX)
			st->too_large = 1;
		*con_cls = st;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		/* The service reads no body content; count it against the cap
		 * and drop it, so a refusal is a clean answer, not a reset. */
		if (st->len + *upload_data_size > ORDERS_BODY_MAX)
			st->too_large = 1;
		else
			st->len += *upload_data_size;
		*upload_data_size = 0;
		return MHD_YES;
	}
	req.method = method;
	req.path = url;
	req.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	(void)MHD_get_connection_values(c, MHD_HEADER_KIND, count_authz, &req.n_authorization);
	req.body_len = st->len;
	req.body_too_large = st->too_large;
	h->fn(h->arg, &req, &resp);
	return send_resp(c, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls, (void)c, (void)toe;
	free(*con_cls);
	*con_cls = NULL;
}

static writ_rc parse_listen(const char *s, struct sockaddr_storage *ss, int *v6, writ_err *err)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;
	size_t hl;

	memset(ss, 0, sizeof(*ss));
	if (colon == NULL)
		return fail(err, WRIT_ERR_CONFIG, "--listen \"%s\": want HOST:PORT", s);
	port = strtoul(colon + 1, &end, 10);
	hl = (size_t)(colon - s);
	if (*end != '\0' || colon[1] == '\0' || colon[1] == '-' || port > 65535 || hl == 0 ||
	    hl >= sizeof(host))
		return fail(err, WRIT_ERR_CONFIG, "--listen \"%s\": bad port", s);
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		host[hl - 1] = '\0';
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		*v6 = 1;
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) == 1)
			return WRIT_OK;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		*v6 = 0;
		if (inet_pton(AF_INET, host, &a->sin_addr) == 1)
			return WRIT_OK;
	}
	return fail(err, WRIT_ERR_CONFIG, "--listen \"%s\": host must be an IPv4 address or [IPv6]",
	            s);
}

writ_rc orders_http_start(const char *listen, unsigned threads, orders_handler fn, void *arg,
                          orders_http **out, writ_err *err)
{
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY | MHD_USE_ITC;
	orders_http *h = NULL;
	writ_rc rc;
	int v6 = 0;

	*out = NULL;
	rc = parse_listen(listen, &ss, &v6, err);
	if (rc != WRIT_OK)
		goto out;
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		rc = fail(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	h->fn = fn;
	h->arg = arg;
	if (v6)
		flags |= MHD_USE_IPv6;
	h->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_THREAD_POOL_SIZE, threads != 0 ? threads : 2u, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)CONN_TIMEOUT, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_MAX,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
	    on_completed, h, MHD_OPTION_END);
	if (h->d == NULL) {
		rc = fail(err, WRIT_ERR_IO, "cannot listen on %s", listen);
		goto out;
	}
	*out = h;
	h = NULL;
	rc = WRIT_OK;
out:
	orders_http_stop(h);
	return rc;
}

unsigned orders_http_port(const orders_http *h)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);

	return di != NULL ? di->port : 0;
}

void orders_http_stop(orders_http *h)
{
	if (h == NULL)
		return;
	if (h->d != NULL) {
		/* Refuse new connections first, then let requests in flight
		 * finish before the daemon's threads are joined. A quiesced
		 * daemon hands the listening socket back for us to close. */
		MHD_socket ls = MHD_quiesce_daemon(h->d);

		MHD_stop_daemon(h->d);
		if (ls != MHD_INVALID_SOCKET)
			close(ls);
	}
	free(h);
}
