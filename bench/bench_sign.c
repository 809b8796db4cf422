/*
 * bench_sign.c - ES256 signatures/s through writ's pkcs11 layer (p11_sign:
 * session pool, key-handle cache, local SHA-256, CKM_ECDSA, fault checks)
 * divided by a bare C_SignInit + C_Sign loop on the same token and key, in
 * the same run, with 1 and 2 threads and 2 processes. Target: >= 0.9.
 *
 * usage: bench_sign CONFIG   (a writ.conf whose token holds an ES256 key)
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "config.h"
#include "keyring.h"
#include "p11.h"
#include "writ_int.h"

#include <p11-kit/pkcs11.h> /* last: it defines short macros */

static p11_ctx *ctx;
static const keyring_entry *key;
static double secs;
static unsigned char msg[400];

typedef struct {
	int writ; /* 1: p11_sign, 0: bare C_Sign */
	double rate;
} job;

static double loop_raw(void)
{
	CK_FUNCTION_LIST *fl;
	CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
	unsigned char md[32], sig[128];
	double t0, t;
	long s, h, n = 0;

	/* In a forked child the first call re-initialises the module, which
	 * can fail while the other child does the same; writ's own path
	 * retries (p11_run), so the bare one does too, before the clock. */
	for (int tries = 0; (s = p11_raw_session_get(ctx)) < 0 && tries < 100; tries++)
		usleep(10000);
	fl = (CK_FUNCTION_LIST *)p11_raw_functions(ctx);
	h = s >= 0 ? p11_raw_find_private(ctx, s, key->id, key->id_len) : -1;
	if (fl == NULL || h < 0) {
		fprintf(stderr, "bench_sign: raw session or key not found\n");
		exit(1);
	}
	t0 = bench_now();
	do {
		for (int i = 0; i < 32; i++, n++) {
			CK_ULONG len = sizeof(sig);
			writ_sha256(msg, sizeof(msg), md);
			if (fl->C_SignInit((CK_SESSION_HANDLE)s, &mech, (CK_OBJECT_HANDLE)h) !=
			        CKR_OK ||
			    fl->C_Sign((CK_SESSION_HANDLE)s, md, sizeof(md), sig, &len) != CKR_OK) {
				fprintf(stderr, "bench_sign: bare C_Sign failed\n");
				exit(1);
			}
		}
	} while ((t = bench_now() - t0) < secs);
	p11_raw_session_put(ctx, s);
	return (double)n / t;
}

static double loop_writ(void)
{
	unsigned char sig[P11_SIG_MAX];
	writ_err err = {0};
	size_t len;
	double t0, t;
	long n = 0;

	/* One signature before the clock, as the bare loop gets its session
	 * before it: in a forked child this is the re-initialisation. */
	if (p11_sign(ctx, key->id, key->id_len, WRIT_ALG_ES256, msg, sizeof(msg), sig, &len,
	             &err) != WRIT_OK) {
		fprintf(stderr, "bench_sign: %s\n", err.msg);
		exit(1);
	}
	t0 = bench_now();
	do {
		for (int i = 0; i < 32; i++, n++) {
			if (p11_sign(ctx, key->id, key->id_len, WRIT_ALG_ES256, msg, sizeof(msg),
			             sig, &len, &err) != WRIT_OK) {
				fprintf(stderr, "bench_sign: %s\n", err.msg);
				exit(1);
			}
		}
	} while ((t = bench_now() - t0) < secs);
	return (double)n / t;
}

static void *thread_main(void *arg)
{
	job *j = arg;
	j->rate = j->writ ? loop_writ() : loop_raw();
	return NULL;
}

static double run_threads(int nthreads, int writ)
{
	pthread_t th[8];
	job jobs[8];
	double total = 0;

	for (int i = 0; i < nthreads; i++) {
		jobs[i].writ = writ;
		pthread_create(&th[i], NULL, thread_main, &jobs[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		total += jobs[i].rate;
	}
	return total;
}

/* Each child re-initialises PKCS#11 (writ does so on its first call after
 * fork) and reports its rate through a pipe. */
static double run_procs(int nprocs, int writ)
{
	int fds[2], st, failed = 0;
	double total = 0, r;

	if (pipe(fds) != 0)
		exit(1);
	fflush(stdout); /* or a child's exit(1) prints it again */
	for (int i = 0; i < nprocs; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			r = writ ? loop_writ() : loop_raw();
			if (write(fds[1], &r, sizeof(r)) != sizeof(r))
				_exit(1);
			_exit(0);
		}
	}
	close(fds[1]);
	while (read(fds[0], &r, sizeof(r)) == sizeof(r))
		total += r;
	close(fds[0]);
	/* A child that failed sent no rate: the total would be one child's. */
	while (wait(&st) > 0)
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed = 1;
	if (failed) {
		fprintf(stderr, "bench_sign: a child process failed\n");
		exit(1);
	}
	return total;
}

/* SIGN_PAIRS back-to-back pairs of (raw, writ) loops, the order
 * alternating, so a noisy stretch of the shared host lands on both sides
 * alike; the ratio is the median of the pairs' ratios. */
#define SIGN_PAIRS 6

static void measure(const char *name, double (*fn)(int, int), int n)
{
	double raw[SIGN_PAIRS], wr[SIGN_PAIRS], ratio[SIGN_PAIRS];

	for (int r = 0; r < SIGN_PAIRS; r++) {
		if (r % 2 == 0) {
			raw[r] = fn(n, 0);
			wr[r] = fn(n, 1);
		} else {
			wr[r] = fn(n, 1);
			raw[r] = fn(n, 0);
		}
		ratio[r] = wr[r] / raw[r];
	}
	printf("  %-12s raw C_Sign %8.0f /s   writ p11_sign %8.0f /s   ratio %.3f\n", name,
	       bench_median(raw, SIGN_PAIRS), bench_median(wr, SIGN_PAIRS),
	       bench_median(ratio, SIGN_PAIRS));
}

int main(int argc, char **argv)
{
	writ_config cfg;
	writ_err err = {0};
	keyring *kr = NULL;
	p11_cfg pc;

	if (argc != 2) {
		fprintf(stderr, "usage: bench_sign CONFIG\n");
		return 2;
	}
	secs = bench_seconds(2.0) / 2;
	memset(msg, 'x', sizeof(msg));
	if (config_load(argv[1], &cfg, &err) != WRIT_OK ||
	    (config_p11(&cfg, &pc), p11_open(&pc, &ctx, &err)) != WRIT_OK ||
	    keyring_load(ctx, &kr, &err) != WRIT_OK) {
		fprintf(stderr, "bench_sign: %s\n", err.msg);
		return 1;
	}
	key = keyring_newest(kr, WRIT_ALG_ES256);
	if (key == NULL) {
		fprintf(stderr, "bench_sign: no ES256 key in the token\n");
		return 1;
	}
	printf("sign ES256 on SoftHSM2 (median of %d alternating pairs of %.1fs)\n", SIGN_PAIRS,
	       secs);
	measure("1 thread", run_threads, 1);
	measure("2 threads", run_threads, 2);
	measure("2 processes", run_procs, 2);
	keyring_free(kr);
	p11_close(ctx);
	return 0;
}
