/*
 * bench_issuer.c - load generator and crypto-limit probe for writ-issuer.
 *
 *   bench_issuer gen N AGENT KEY.pem AUD > assertions
 *       N unique agent assertions (ES256, valid 60 s like `writ assert`'s
 *       default), one per line.
 *   bench_issuer load HOST:PORT FILE CONNS SECONDS [RATE]
 *       POST /token over CONNS keep-alive connections with the assertions
 *       of FILE (until they or SECONDS run out), closed loop, or paced at
 *       RATE tokens/s in total (0: closed loop); prints tokens/s, p50,
 *       p99, errors. One client thread drives all connections (epoll).
 *   bench_issuer limit CONFIG AGENT_PUB.pem ASSERTIONS SECONDS
 *       The crypto limit of one token on this machine: two threads, each
 *       verifying an ES256 assertion (OpenSSL) and signing with a bare
 *       C_Sign on the issuer's token; prints operations/s and CPU time
 *       per operation.
 *   bench_issuer jwks HOST:PORT CONNS SECONDS
 *       GET /.well-known/jwks.json requests/s (two client threads).
 *   bench_issuer fsync DIR N
 *       The disk's own floor under the audit log: p50/p99 of N appends of
 *       one audit-sized line each followed by fdatasync, in DIR.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_token.h"
#include "config.h"
#include "keyring.h"
#include "p11.h"
#include "writ_int.h"

#include <p11-kit/pkcs11.h> /* last: it defines short macros */

/* A whole number argument, or exit. */
static long num(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0) {
		fprintf(stderr, "bench_issuer: not a number: %s\n", s);
		exit(2);
	}
	return v;
}

/* ---- gen ---- */

static int gen(long n, const char *agent, const char *keyfile, const char *aud)
{
	FILE *f = fopen(keyfile, "r");
	EVP_PKEY *k = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	json_t *h = json_pack("{s:s,s:s}", "alg", "ES256", "typ", "JWT");
	time_t now = time(NULL);

	if (f != NULL)
		fclose(f);
	if (k == NULL || h == NULL)
		return fprintf(stderr, "gen: cannot read %s\n", keyfile), 1;
	for (long i = 0; i < n; i++) {
		unsigned char rnd[16], der[80], raw[64];
		char jti[32], tok[2048];
		size_t inlen, derlen = sizeof(der);
		json_t *p;
		char *in;

		RAND_bytes(rnd, sizeof(rnd));
		b64url_encode(rnd, sizeof(rnd), jti);
		p = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "iss", agent, "sub", agent, "aud", aud,
		              "iat", (json_int_t)now, "exp", (json_int_t)now + 60, "jti", jti);
		in = p != NULL ? writ_jws_signing_input(h, p, &inlen) : NULL;
		if (in == NULL || inlen + 100 > sizeof(tok))
			return 1;
		bench_es256_sign(k, in, inlen, raw, der, &derlen);
		memcpy(tok, in, inlen);
		tok[inlen] = '.';
		b64url_encode(raw, 64, tok + inlen + 1);
		puts(tok);
		free(in);
		json_decref(p);
	}
	json_decref(h);
	EVP_PKEY_free(k);
	return 0;
}

/* ---- load ---- */

/* The client is event-driven, as wrk2 is: one thread per CPU at most,
 * each driving its share of the connections through epoll, with a timerfd
 * for paced sends. It shares the machine's two cores with the issuer, so
 * its own CPU and wake-ups are kept small: one thread per connection
 * spent ~7-13% of the machine and added its own scheduling delays to the
 * latencies it measured. */

enum { REQ_MAX = 8192, RESP_MAX = 16384 };

typedef struct conn {
	int fd;
	int busy;     /* a request is in flight */
	int done;     /* no assertions left for it */
	double next;  /* paced: when its next request is due */
	double start; /* latency clock of the request in flight */
	double lag;   /* paced: how late this client sent it */
	size_t got;
	char resp[RESP_MAX];
} conn;

typedef struct worker {
	pthread_t th;
	int first, n; /* its connections: first .. first + n - 1 of the run */
	long ok, errors;
	double *lat, *lag; /* per answered request: latency, the client's lateness */
	long nlat, caplat;
} worker;

static struct sockaddr_in target;
static char **lines;
static long nlines;
static atomic_long next_line;
static double run_secs, rate_per_conn;
static int nconns;
static const char *req_path = "/token";
static int post = 1;

static int connect_target(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0 || connect(fd, (struct sockaddr *)&target, sizeof(target)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int conn_open(int ep, conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

	c->fd = connect_target();
	c->busy = 0;
	c->got = 0;
	if (c->fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

/* Send c's next request: headers and body in one write, as curl and
 * Python's http.client send a small request (two writes would be two
 * segments and two wake-ups on each side). The socket stays blocking for
 * writes: a request is far smaller than an idle connection's send buffer. */
static int conn_send(conn *c, double now)
{
	static const char *const fmt =
	    "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\n"
	    "Content-Length: %zu\r\n\r\n%s";
	static const char *const form =
	    "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Atoken-exchange"
	    "&subject_token=%s&subject_token_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Atoken-type%%"
	    "3Ajwt&audience=bench-db&scope=read";
	char req[REQ_MAX], body[REQ_MAX / 2];
	int n;

	if (post) {
		long i = atomic_fetch_add(&next_line, 1);

		if (i >= nlines) {
			c->done = 1;
			return 0;
		}
		n = snprintf(body, sizeof(body), form, lines[i]);
		if (n < 0 || (size_t)n >= sizeof(body))
			return -1;
		n = snprintf(req, sizeof(req), fmt, req_path, strlen(body), body);
	} else {
		n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", req_path);
	}
	if (n < 0 || (size_t)n >= sizeof(req) || send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		return -1;
	/* Paced: latency from the intended send time, so a request the
	 * server (or this client) made late counts its wait: no coordinated
	 * omission. */
	c->start = rate_per_conn > 0 && c->next < now ? c->next : now;
	c->lag = now - c->start;
	if (rate_per_conn > 0)
		c->next += 1.0 / rate_per_conn;
	c->busy = 1;
	c->got = 0;
	return 0;
}

/* Read what has arrived on c: 1 with a whole response (status in *status),
 * 0 for more to come, -1 when the connection failed. */
static int conn_read(conn *c, int *status)
{
	for (;;) {
		ssize_t r =
		    recv(c->fd, c->resp + c->got, sizeof(c->resp) - 1 - c->got, MSG_DONTWAIT);
		char *hdr_end, *cl;
		size_t need;

		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (r <= 0)
			return -1;
		c->got += (size_t)r;
		c->resp[c->got] = '\0';
		if ((hdr_end = strstr(c->resp, "\r\n\r\n")) == NULL) {
			if (c->got == sizeof(c->resp) - 1)
				return -1;
			continue;
		}
		cl = strstr(c->resp, "Content-Length:"); /* microhttpd spells it so */
		need =
		    (size_t)(hdr_end + 4 - c->resp) + (cl != NULL ? strtoul(cl + 15, NULL, 10) : 0);
		if (need >= sizeof(c->resp))
			return -1;
		if (c->got < need)
			continue;
		return sscanf(c->resp, "HTTP/1.1 %d", status) == 1 ? 1 : -1;
	}
}

static void record(worker *w, int status, double lat, double lag)
{
	if (status != 200) {
		w->errors++;
		return;
	}
	w->ok++;
	if (w->nlat == w->caplat) {
		w->caplat = w->caplat ? 2 * w->caplat : 4096;
		w->lat = realloc(w->lat, (size_t)w->caplat * sizeof(double));
		w->lag = realloc(w->lag, (size_t)w->caplat * sizeof(double));
		if (w->lat == NULL || w->lag == NULL)
			exit(1);
	}
	w->lag[w->nlat] = lag;
	w->lat[w->nlat++] = lat;
}

/* Arm the timer for the earliest paced send, or disarm it. */
static void arm(int tfd, double when)
{
	struct itimerspec its = {0};

	if (when > 0) {
		its.it_value.tv_sec = (time_t)when;
		/* rounded up: firing early would find nothing due */
		its.it_value.tv_nsec = (long)((when - (double)(time_t)when) * 1e9) + 1;
		if (its.it_value.tv_nsec >= 1000000000L) {
			its.it_value.tv_sec++;
			its.it_value.tv_nsec -= 1000000000L;
		}
	}
	timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *load_main(void *arg)
{
	worker *w = arg;
	conn *cs = calloc((size_t)w->n, sizeof(*cs));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[64];
	double t0 = bench_now(), armed = 0;

	if (cs == NULL || ep < 0 || tfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0)
		exit(1);
	for (int i = 0; i < w->n; i++) {
		/* Paced: connection k sends at t0 + (k + j * conns) / rate, so
		 * arrivals are evenly spaced in total instead of every
		 * connection firing together once per period. */
		cs[i].next =
		    t0 + (rate_per_conn > 0 ? (w->first + i) / (rate_per_conn * nconns) : 0);
		if (conn_open(ep, &cs[i]) != 0)
			w->errors++, cs[i].done = 1;
	}
	for (;;) {
		double now = bench_now(), due = 0;
		int running = now - t0 < run_secs, busy = 0, n;

		/* After the run time no request starts; those in flight finish
		 * (for at most 10 s more). */
		for (int i = 0; i < w->n; i++) {
			conn *c = &cs[i];

			if (running && !c->busy && !c->done) {
				if (rate_per_conn > 0 && c->next > now) {
					due = due == 0 || c->next < due ? c->next : due;
				} else if (conn_send(c, now) != 0) {
					w->errors++;
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
					close(c->fd);
					if (conn_open(ep, c) != 0)
						c->done = 1;
				}
			}
			busy += c->busy;
		}
		if (busy == 0 && (!running || due == 0))
			break;
		if (!running && now - t0 > run_secs + 10)
			break;
		if (due != armed)
			arm(tfd, armed = due);
		/* Wake for the end of the run too (closed loop, or paced with
		 * nothing in flight). */
		n = epoll_wait(ep, evs, 64, running ? (int)((t0 + run_secs - now) * 1e3) + 1 : 100);
		now = bench_now();
		for (int k = 0; k < n; k++) {
			conn *c = evs[k].data.ptr;
			uint64_t ticks;
			int st = 0, r;

			if (c == NULL) { /* fired: re-arm on the next pass */
				(void)!read(tfd, &ticks, sizeof(ticks));
				armed = 0;
				continue;
			}
			if (!c->busy || (r = conn_read(c, &st)) < 0) {
				/* An unasked-for byte or a closed connection. */
				w->errors += c->busy;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				if (conn_open(ep, c) != 0)
					c->done = 1;
				continue;
			}
			if (r == 1) {
				record(w, st, now - c->start, c->lag);
				c->busy = 0;
			}
		}
	}
	for (int i = 0; i < w->n; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	close(tfd);
	close(ep);
	free(cs);
	return NULL;
}

static int parse_target(const char *hp)
{
	char host[64];
	const char *c = strrchr(hp, ':');

	if (c == NULL || (size_t)(c - hp) >= sizeof(host))
		return -1;
	memcpy(host, hp, (size_t)(c - hp));
	host[c - hp] = '\0';
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)num(c + 1));
	return inet_pton(AF_INET, host, &target.sin_addr) == 1 ? 0 : -1;
}

static void read_lines(const char *path, long skip)
{
	nlines = 0;
	FILE *f = fopen(path, "r");
	char buf[4096];
	long cap = 0, i = 0;

	if (f == NULL)
		exit(1);
	while (fgets(buf, sizeof(buf), f) != NULL) {
		if (i++ < skip)
			continue;
		buf[strcspn(buf, "\n")] = '\0';
		if (nlines == cap) {
			cap = cap ? cap * 2 : 65536;
			lines = realloc(lines, (size_t)cap * sizeof(*lines));
		}
		lines[nlines++] = strdup(buf);
	}
	fclose(f);
}

/* CONNS connections over THREADS client threads. */
static int load(int conns, int threads, double secs, double rate)
{
	worker *w;
	double t0, el, *all, *lag, *sent;
	long ok = 0, errors = 0, n = 0;

	if (conns < 1)
		return fprintf(stderr, "load: need at least one connection\n"), 2;
	threads = threads < 1 ? 1 : threads > conns ? conns : threads;
	w = calloc((size_t)threads, sizeof(*w));
	if (w == NULL)
		return 1;
	run_secs = secs;
	rate_per_conn = rate > 0 ? rate / conns : 0;
	nconns = conns;
	t0 = bench_now();
	for (int i = 0, first = 0; i < threads; i++) {
		w[i].first = first;
		w[i].n = conns / threads + (i < conns % threads);
		first += w[i].n;
		pthread_create(&w[i].th, NULL, load_main, &w[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].th, NULL);
		ok += w[i].ok;
		errors += w[i].errors;
		n += w[i].nlat;
	}
	el = bench_now() - t0;
	/* all: latency from the intended send time; lag: how late this client
	 * sent; sent: latency from the actual send. */
	all = malloc((size_t)(3 * n + 1) * sizeof(double));
	if (all == NULL)
		return 1;
	lag = all + n;
	sent = lag + n;
	n = 0;
	for (int i = 0; i < threads; i++) {
		for (long j = 0; j < w[i].nlat; j++, n++) {
			all[n] = w[i].lat[j];
			lag[n] = w[i].lag[j];
			sent[n] = w[i].lat[j] - w[i].lag[j];
		}
		free(w[i].lat);
		free(w[i].lag);
	}
	qsort(all, (size_t)n, sizeof(double), bench_cmp_double);
	qsort(lag, (size_t)n, sizeof(double), bench_cmp_double);
	qsort(sent, (size_t)n, sizeof(double), bench_cmp_double);
#define PCT(a, q) (n ? (a)[(long)((double)n * (q))] * 1e3 : 0)
	printf("ok %ld errors %ld seconds %.2f rate %.0f p50_ms %.3f p90_ms %.3f p99_ms %.3f "
	       "p999_ms %.3f",
	       ok, errors, el, (double)ok / el, PCT(all, 0.5), PCT(all, 0.9), PCT(all, 0.99),
	       PCT(all, 0.999));
	if (rate > 0) /* paced: how much of that was this client sending late */
		printf(" client_late_p99_ms %.3f from_send_p99_ms %.3f", PCT(lag, 0.99),
		       PCT(sent, 0.99));
	printf("\n");
#undef PCT
	free(all);
	free(w);
	return errors > ok / 100 ? 1 : 0;
}

/* ---- limit ---- */

static p11_ctx *lim_p11;
static const keyring_entry *lim_key;
static writ_jwk *lim_agent;
static char lim_tok[2048];

typedef struct lim_result {
	double rate, cpu; /* ops/s, CPU seconds of the thread */
	long ops;
} lim_result;

static void *limit_main(void *arg)
{
	CK_FUNCTION_LIST *fl = (CK_FUNCTION_LIST *)p11_raw_functions(lim_p11);
	long s = p11_raw_session_get(lim_p11);
	long h = p11_raw_find_private(lim_p11, s, lim_key->id, lim_key->id_len);
	CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
	lim_result *res = arg;
	double t0 = bench_now(), t;
	struct timespec c0, c1;
	unsigned char md[32], sig[128];
	long n = 0;
	writ_jws j;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	do {
		CK_ULONG len = sizeof(sig);
		/* Verify one assertion: what attestation costs at least. */
		if (writ_jws_parse(lim_tok, strlen(lim_tok), &j, NULL) != WRIT_OK ||
		    writ_sig_verify(lim_agent, (unsigned char *)lim_tok, j.signing_input_len, j.sig,
		                    j.sig_len, NULL) != WRIT_OK)
			exit(1);
		writ_jws_clear(&j);
		/* Sign one token: a bare C_Sign over a SHA-256 digest. */
		writ_sha256((unsigned char *)lim_tok, 400, md);
		if (fl->C_SignInit((CK_SESSION_HANDLE)s, &mech, (CK_OBJECT_HANDLE)h) != CKR_OK ||
		    fl->C_Sign((CK_SESSION_HANDLE)s, md, 32, sig, &len) != CKR_OK)
			exit(1);
		n++;
	} while ((t = bench_now() - t0) < run_secs);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	p11_raw_session_put(lim_p11, s);
	res->rate = (double)n / t;
	res->ops = n;
	res->cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
	return NULL;
}

static int limit(const char *conf, const char *pubfile, const char *tokfile, double secs)
{
	writ_config cfg;
	writ_err e = {0};
	keyring *kr = NULL;
	p11_cfg pc;
	pthread_t th[2];
	lim_result r[2];
	FILE *f = fopen(pubfile, "r");
	EVP_PKEY *pub = f != NULL ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;

	if (f != NULL)
		fclose(f);
	f = fopen(tokfile, "r");
	if (pub == NULL || f == NULL || fgets(lim_tok, sizeof(lim_tok), f) == NULL)
		return fprintf(stderr, "limit: cannot read inputs\n"), 1;
	fclose(f);
	lim_tok[strcspn(lim_tok, "\n")] = '\0';
	if (config_load(conf, &cfg, &e) != WRIT_OK || (config_p11(&cfg, &pc), 0) ||
	    p11_open(&pc, &lim_p11, &e) != WRIT_OK || keyring_load(lim_p11, &kr, &e) != WRIT_OK ||
	    writ_jwk_from_pkey(pub, WRIT_ALG_ES256, &lim_agent, &e) != WRIT_OK)
		return fprintf(stderr, "limit: %s\n", e.msg), 1;
	lim_key = keyring_newest(kr, WRIT_ALG_ES256);
	run_secs = secs;
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, limit_main, &r[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* CPU per operation as well: unlike rates, it hardly moves with the
	 * rest of the machine's load. */
	printf("limit %.0f cpu_us_per_op %.1f\n", r[0].rate + r[1].rate,
	       1e6 * (r[0].cpu + r[1].cpu) / (double)(r[0].ops + r[1].ops));
	return 0;
}

/* ---- fsync ---- */

static int fsync_floor(const char *dir, long n)
{
	char path[4096], line[600];
	double *lat = calloc((size_t)n + 1, sizeof(double));
	int fd;

	snprintf(path, sizeof(path), "%s/fsync-probe", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || lat == NULL)
		return fprintf(stderr, "fsync: cannot open %s\n", path), 1;
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	for (long i = 0; i < n; i++) {
		double t0 = bench_now();

		if (write(fd, line, sizeof(line)) != (ssize_t)sizeof(line) || fdatasync(fd) != 0)
			return fprintf(stderr, "fsync: write or fdatasync failed\n"), 1;
		lat[i] = bench_now() - t0;
	}
	close(fd);
	unlink(path);
	qsort(lat, (size_t)n, sizeof(double), bench_cmp_double);
	printf("p50_ms %.3f p99_ms %.3f\n", lat[n / 2] * 1e3, lat[(long)((double)n * 0.99)] * 1e3);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "gen") == 0)
		return gen(num(argv[2]), argv[3], argv[4], argv[5]);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "load") == 0) {
		if (parse_target(argv[2]) != 0)
			return 2;
		read_lines(argv[3], 0);
		return load((int)num(argv[4]), 1, atof(argv[5]), argc >= 7 ? atof(argv[6]) : 0);
	}
	if (argc == 6 && strcmp(argv[1], "limit") == 0)
		return limit(argv[2], argv[3], argv[4], atof(argv[5]));
	if (argc == 4 && strcmp(argv[1], "fsync") == 0)
		return fsync_floor(argv[2], num(argv[3]));
	if (argc == 5 && strcmp(argv[1], "jwks") == 0) {
		if (parse_target(argv[2]) != 0)
			return 2;
		post = 0;
		req_path = "/.well-known/jwks.json";
		return load((int)num(argv[3]), 2, atof(argv[4]), 0);
	}
	fprintf(stderr, "usage: see the comment at the top of bench/bench_issuer.c\n");
	return 2;
}
