/*
 * http.c - libmicrohttpd glue for the issuer (see http.h).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "workq.h"
#include "writ_int.h"

struct http_server {
	struct MHD_Daemon *d;
	http_handler fn;
	void *arg;
	workq *pool; /* runs POST handlers (workq.h) */
	char *tls_cert, *tls_key;
	/* Held responses whose connection is (about to be) suspended, and
	 * whether http_stop has begun: microhttpd must not be stopped with a
	 * connection suspended, so once closing is set a held response is
	 * waited for on the HTTP thread instead. */
	atomic_int suspended;
	atomic_int closing;
};

/* Per-request state, from the first handler call to completion. */
typedef struct req_state {
	char *body;
	size_t len;
	uint64_t seen; /* body bytes received, kept or dropped */
	int too_large;
	int bad_type;
	int hopeless; /* declared over HTTP_DRAIN_MAX: refused unread */
	/* a held response (http_release) */
	http_server *srv;
	struct MHD_Connection *conn;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int hold_init, released, suspended;
	writ_rc rc;
	http_resp held;
	/* Handed to the pool (dispatch): the connection stays suspended
	 * until the handler has returned (have_resp) and, for a held
	 * response, http_release has been called too. */
	int dispatched, have_resp;
	http_req req;
	workq_job job;
} req_state;

static const char *const form_type = "application/x-www-form-urlencoded";

static int content_type_ok(const char *ct)
{
	size_t n = strlen(form_type);

	/* Allow a parameter (charset) after ';', nothing else. */
	return ct != NULL && strncasecmp(ct, form_type, n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

/* microhttpd frees a response's body once sent: wiped first, since a
 * token response's body is a bearer credential. Bodies are strings
 * (http.h), so strlen covers them. */
static void wipe_free(void *body)
{
	if (body != NULL) {
		OPENSSL_cleanse(body, strlen(body));
		free(body);
	}
}

static enum MHD_Result send_resp(struct MHD_Connection *c, http_resp *r)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;
	char ra[24];

	if (r->body == NULL)
		r->body = strdup("");
	if (r->body_len == 0 && r->body != NULL)
		r->body_len = strlen(r->body);
	mr = MHD_create_response_from_buffer_with_free_callback_cls(r->body_len, r->body, wipe_free,
	                                                            r->body);
	if (mr == NULL) {
		wipe_free(r->body);
		return MHD_NO;
	}
	MHD_add_response_header(mr, "Content-Type",
	                        r->content_type != NULL ? r->content_type : "application/json");
	MHD_add_response_header(mr, "Cache-Control",
	                        r->cache_control != NULL ? r->cache_control : "no-store");
	MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
	if (r->etag[0] != '\0')
		MHD_add_response_header(mr, "ETag", r->etag);
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

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *error,
                                  const char *desc)
{
	http_resp r = {.status = status};
	json_t *o = json_pack("{s:s, s:s}", "error", error, "error_description", desc);

	r.body = o != NULL ? wjson_dump(o) : NULL;
	json_decref(o);
	return send_resp(c, &r);
}

static void client_addr(struct MHD_Connection *c, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

	snprintf(buf, len, "unknown");
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
		          (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		          buf, (socklen_t)len);
}

/* First call for a request: decide early what can be decided from the
 * headers alone. Returning without a response here keeps keep-alive
 * (queuing on the first call forces Connection: close: FACTS.md). */
static req_state *req_begin(http_server *s, struct MHD_Connection *c, const char *method)
{
	req_state *st = calloc(1, sizeof(*st));
	const char *cl;

	if (st == NULL)
		return NULL;
	st->srv = s;
	st->conn = c;
	if (strcmp(method, "POST") == 0) {
		st->bad_type = !content_type_ok(
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"));
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (cl != NULL && strtoull(cl, NULL, 10) > HTTP_BODY_MAX)
			st->too_large = 1;
		if (cl != NULL && strtoull(cl, NULL, 10) > HTTP_DRAIN_MAX)
			st->hopeless = 1;
	}
	return st;
}

/* Returns 0 once the body has run past HTTP_DRAIN_MAX: drop the
 * connection. */
static int req_body(req_state *st, const char *data, size_t n)
{
	char *nb;

	st->seen += n;
	if (st->seen > HTTP_DRAIN_MAX)
		return 0;
	/* Keep reading past a refusal (and drop the bytes) so the answer is
	 * a clean 413/415 rather than a reset connection. */
	if (st->too_large || st->bad_type)
		return 1;
	if (st->len + n > HTTP_BODY_MAX) {
		st->too_large = 1;
		return 1;
	}
	nb = realloc(st->body, st->len + n + 1);
	if (nb == NULL) {
		st->too_large = 1;
		return 1;
	}
	st->body = nb;
	memcpy(st->body + st->len, data, n);
	st->len += n;
	st->body[st->len] = '\0';
	return 1;
}

/* Send the held response, or a 503 in its place if its release failed
 * (its body may hold a token: wiped, never sent). */
static enum MHD_Result send_held(struct MHD_Connection *c, req_state *st)
{
	http_resp r = st->held;

	st->held.body = NULL; /* sent or wiped here, never again */
	if (st->rc == WRIT_OK)
		return send_resp(c, &r);
	if (r.body != NULL) {
		OPENSSL_cleanse(r.body, r.body_len != 0 ? r.body_len : strlen(r.body));
		free(r.body);
	}
	return send_error(c, 503, "temporarily_unavailable", "the audit log is unavailable");
}

/* The handler held its response: suspend the connection until
 * http_release, unless that already happened or the server is closing. */
static enum MHD_Result hold(http_server *s, struct MHD_Connection *c, req_state *st,
                            http_resp *resp)
{
	pthread_mutex_lock(&st->mu);
	st->held = *resp;
	if (!st->released) {
		/* Count first, then look at closing; http_stop sets closing,
		 * then waits for the count: one of the two sees the other. */
		atomic_fetch_add(&s->suspended, 1);
		if (!atomic_load(&s->closing)) {
			st->suspended = 1;
			MHD_suspend_connection(c);
			pthread_mutex_unlock(&st->mu);
			return MHD_YES;
		}
		atomic_fetch_sub(&s->suspended, 1);
		while (!st->released)
			pthread_cond_wait(&st->cv, &st->mu);
	}
	pthread_mutex_unlock(&st->mu);
	return send_held(c, st);
}

void http_release(void *hold, writ_rc rc)
{
	req_state *st = hold;

	pthread_mutex_lock(&st->mu);
	st->released = 1;
	st->rc = rc;
	if (st->dispatched) {
		if (st->have_resp) /* else the pool thread resumes it */
			MHD_resume_connection(st->conn);
	} else if (st->suspended) {
		MHD_resume_connection(st->conn);
	} else {
		pthread_cond_signal(&st->cv);
	}
	pthread_mutex_unlock(&st->mu);
}

/* On a pool thread: run the handler, keep its response, and resume the
 * connection once the response may leave. The response is sent by the
 * connection's own HTTP thread (on_request, resumed). */
static void work(workq_job *job)
{
	req_state *st = (req_state *)(void *)((char *)job - offsetof(req_state, job));
	http_resp resp = {0};

	st->srv->fn(st->srv->arg, &st->req, &resp);
	pthread_mutex_lock(&st->mu);
	st->held = resp;
	st->have_resp = 1;
	if (!resp.held) {
		st->released = 1;
		st->rc = WRIT_OK;
	}
	if (st->released)
		MHD_resume_connection(st->conn);
	pthread_mutex_unlock(&st->mu);
}

/* Hand a complete request to the pool with its connection suspended; 0
 * when the server is closing (the caller answers it inline then). */
static int dispatch(http_server *s, struct MHD_Connection *c, req_state *st, const http_req *req)
{
	/* Count first, then look at closing: as in hold(). */
	atomic_fetch_add(&s->suspended, 1);
	if (atomic_load(&s->closing)) {
		atomic_fetch_sub(&s->suspended, 1);
		return 0;
	}
	st->req = *req;
	st->req.hold = st;
	st->job.run = work;
	pthread_mutex_lock(&st->mu);
	st->dispatched = 1;
	st->suspended = 1;
	MHD_suspend_connection(c);
	pthread_mutex_unlock(&st->mu);
	workq_push(s->pool, &st->job);
	return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	http_server *s = cls;
	req_state *st = *con_cls;
	http_req req = {0};
	http_resp resp = {0};

	(void)version;
	if (st == NULL) {
		if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
		    strcmp(method, "HEAD") != 0) {
			http_resp r = {.status = 405, .allow = "GET, POST"};
			r.body = strdup("{\"error\":\"invalid_request\",\"error_description\":"
			                "\"method not allowed\"}");
			return send_resp(c, &r);
		}
		*con_cls = st = req_begin(s, c, method);
		if (st != NULL && st->hopeless) /* answered unread: the connection closes */
			return send_error(c, 413, "invalid_request", "request body too large");
		return st != NULL ? MHD_YES : MHD_NO;
	}
	if (st->hold_init) {
		int resumed;

		pthread_mutex_lock(&st->mu);
		resumed = st->suspended;
		st->suspended = 0;
		pthread_mutex_unlock(&st->mu);
		if (resumed) { /* by http_release */
			atomic_fetch_sub(&s->suspended, 1);
			return send_held(c, st);
		}
	}
	if (*upload_data_size != 0) {
		if (!req_body(st, upload_data, *upload_data_size))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (st->bad_type)
		return send_error(c, 415, "invalid_request",
		                  "Content-Type must be application/x-www-form-urlencoded");
	if (st->too_large)
		return send_error(c, 413, "invalid_request", "request body too large");
	req.hold = st;
	req.method = method;
	req.path = url;
	req.body = st->body;
	req.body_len = st->len;
	req.if_none_match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
	client_addr(c, req.client, sizeof(req.client));
	req.t_read_ns = writ_mono_ns();
	req.in_pool = workq_depth(s->pool);
	/* Any handler may hold its response (http_release). */
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	st->hold_init = 1;
	/* A POST (a token request) is decided and signed on the pool: see
	 * workq.h for why not on this thread. */
	if (strcmp(method, "POST") == 0 && dispatch(s, c, st, &req))
		return MHD_YES;
	s->fn(s->arg, &req, &resp);
	if (!resp.held)
		return send_resp(c, &resp);
	return hold(s, c, st, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	req_state *st = *con_cls;

	(void)cls, (void)c, (void)toe;
	if (st == NULL)
		return;
	if (st->hold_init) {
		int gone;

		/* Resumed after http_release, but the client had gone: microhttpd
		 * closes without calling on_request again, so the count of held
		 * responses drops here (else http_stop waits for it in vain). */
		pthread_mutex_lock(&st->mu);
		gone = st->suspended;
		st->suspended = 0;
		pthread_mutex_unlock(&st->mu);
		if (gone)
			atomic_fetch_sub(&st->srv->suspended, 1);
		pthread_cond_destroy(&st->cv);
		pthread_mutex_destroy(&st->mu);
	}
	if (st->held.body != NULL) { /* never sent (connection gone) */
		OPENSSL_cleanse(st->held.body, strlen(st->held.body));
		free(st->held.body);
	}
	if (st->body != NULL) {
		OPENSSL_cleanse(st->body, st->len); /* held an assertion */
		free(st->body);
	}
	free(st);
	*con_cls = NULL;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;

	if (f == NULL)
		return NULL;
	buf = malloc(64 * 1024 + 1);
	if (buf != NULL) {
		n = fread(buf, 1, 64 * 1024, f);
		buf[n] = '\0';
	}
	fclose(f);
	return buf;
}

writ_rc http_start(const writ_config *cfg, http_handler fn, void *arg, http_server **out,
                   writ_err *err)
{
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY | MHD_USE_ITC |
	                 MHD_ALLOW_SUSPEND_RESUME;
	http_server *s;
	writ_rc rc;
	int v6 = 0;

	*out = NULL;
	rc = config_listen_addr(cfg->listen, &ss, &v6, err);
	if (rc != WRIT_OK)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	s->fn = fn;
	s->arg = arg;
	rc = workq_start(cfg->workers != 0 ? cfg->workers : workq_default_size(), &s->pool, err);
	if (rc != WRIT_OK) {
		free(s);
		return rc;
	}
	if (v6)
		flags |= MHD_USE_IPv6;
	if (cfg->tls_cert[0] != '\0') {
		s->tls_cert = slurp(cfg->tls_cert);
		s->tls_key = slurp(cfg->tls_key);
		if (s->tls_cert == NULL || s->tls_key == NULL) {
			(void)http_stop(s);
			return writ_err_set(err, WRIT_ERR_CONFIG, "cannot read tls_cert/tls_key");
		}
		flags |= MHD_USE_TLS;
	}
	s->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
	    cfg->conn_timeout, MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)HTTP_CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
	    s->tls_cert != NULL ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, s->tls_cert,
	    MHD_OPTION_HTTPS_MEM_KEY, s->tls_key, MHD_OPTION_HTTPS_PRIORITIES, HTTP_TLS_PRIORITIES,
	    MHD_OPTION_END);
	if (s->d == NULL) {
		(void)http_stop(s);
		return writ_err_set(err, WRIT_ERR_IO, "cannot listen on %s", cfg->listen);
	}
	*out = s;
	return WRIT_OK;
}

void http_quiesce(http_server *s)
{
	if (s != NULL && s->d != NULL)
		(void)MHD_quiesce_daemon(s->d);
}

int http_stop(http_server *s)
{
	int i;

	if (s == NULL)
		return 0;
	/* Let every held response be released and its connection resumed
	 * (the audit syncs in flight take milliseconds) before microhttpd
	 * stops: it refuses to stop with a connection suspended. */
	atomic_store(&s->closing, 1);
	for (i = 0; i < 10000 && atomic_load(&s->suspended) > 0; i++)
		usleep(1000);
	if (atomic_load(&s->suspended) > 0) {
		/* The audit log has not synced for 10 s (a hung disk): those
		 * tokens must not leave, and microhttpd would abort if stopped
		 * now. Its threads, and s, which they use, are left to the
		 * process's exit. */
		fprintf(stderr,
		        "writ-issuer: %d responses still wait for the audit log; "
		        "not stopping the HTTP threads\n",
		        atomic_load(&s->suspended));
		return -1;
	}
	if (s->d != NULL)
		MHD_stop_daemon(s->d);
	workq_stop(s->pool); /* idle: every dispatched request was answered */
	if (s->tls_key != NULL) {
		OPENSSL_cleanse(s->tls_key, strlen(s->tls_key));
		free(s->tls_key);
	}
	free(s->tls_cert);
	free(s);
	return 0;
}

unsigned http_port(const http_server *s)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	return di != NULL ? di->port : 0;
}
