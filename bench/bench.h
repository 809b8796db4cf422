/*
 * bench.h - timing helpers for writ's benchmarks: each measurement runs a
 * loop for a fixed wall-clock time, is repeated, and the median is quoted
 * (the machines are shared and noisy).
 */
#ifndef WRIT_BENCH_H
#define WRIT_BENCH_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_REPEATS 3

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Seconds each timed loop runs: $WRIT_BENCH_SECONDS or the default. */
static inline double bench_seconds(double dflt)
{
	const char *s = getenv("WRIT_BENCH_SECONDS");
	double v = s != NULL ? atof(s) : 0;
	return v > 0 ? v : dflt;
}

#endif
