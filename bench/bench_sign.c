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
	CK_FUNCTION_LIST *fl = (CK_FUNCTION_LIST *)p11_raw_functions(ctx);
	long s = p11_raw_session_get(ctx);
	long h = s >= 0 ? p11_raw_find_private(ctx, s, key->id, key->id_len) : -1;
	CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
	unsigned char md[32], sig[128];
	double t0 = bench_now(), t;
	long n = 0;

	if (fl == NULL || h < 0) {
		fprintf(stderr, "bench_sign: raw session or key not found\n");
		exit(1);
	}
	do {
		for (int i = 0; i < 32; i++, n++) {
			CK_ULONG len = sizeof(sig);
			writ_sha256(msg, sizeof(msg), md);
			if (fl->C_SignInit((CK_SESSION_HANDLE)s, &mech, (CK_OBJECT_HANDLE)h) !=
			        CKR_OK ||
			    fl->C_Sign((CK_SESSION_HANDLE)s, md, sizeof(md), sig, &len) != CKR_OK)
				exit(1);
		}
	} while ((t = bench_now() - t0) < secs);
	p11_raw_session_put(ctx, s);
	return (double)n / t;
}

static double loop_writ(void)
{
	unsigned char sig[P11_SIG_MAX];
	double t0 = bench_now(), t;
	long n = 0;

	do {
		for (int i = 0; i < 32; i++, n++) {
			size_t len;
			if (p11_sign(ctx, key->id, key->id_len, WRIT_ALG_ES256, msg, sizeof(msg),
			             sig, &len, NULL) != WRIT_OK)
				exit(1);
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
	int fds[2];
	double total = 0, r;

	if (pipe(fds) != 0)
		exit(1);
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
	while (wait(NULL) > 0)
		;
	return total;
}

static void measure(const char *name, double (*fn)(int, int), int n)
{
	double raw[BENCH_REPEATS], wr[BENCH_REPEATS], ratio[BENCH_REPEATS];

	for (int r = 0; r < BENCH_REPEATS; r++) {
		raw[r] = fn(n, 0);
		wr[r] = fn(n, 1);
		ratio[r] = wr[r] / raw[r];
	}
	printf("  %-12s raw C_Sign %8.0f /s   writ p11_sign %8.0f /s   ratio %.3f\n", name,
	       bench_median(raw, BENCH_REPEATS), bench_median(wr, BENCH_REPEATS),
	       bench_median(ratio, BENCH_REPEATS));
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
	secs = bench_seconds(2.0);
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
	printf("sign ES256 on SoftHSM2 (median of %d x %.1fs)\n", BENCH_REPEATS, secs);
	measure("1 thread", run_threads, 1);
	measure("2 threads", run_threads, 2);
	measure("2 processes", run_procs, 2);
	keyring_free(kr);
	p11_close(ctx);
	return 0;
}
