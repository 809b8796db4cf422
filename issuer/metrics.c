/*
 * metrics.c - Prometheus text exposition format 0.0.4.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static const double bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
#define NB (sizeof(bounds) / sizeof(bounds[0]))

static atomic_ulong issued;
static atomic_ulong denied[DENY__COUNT];
static atomic_ulong hsm_errors;
static atomic_ulong lat_bucket[NB + 1];
static atomic_ulong lat_count;
static atomic_ulong lat_sum_us;

static const char *const deny_names[DENY__COUNT] = {
    "invalid_request", "unsupported_grant_type", "invalid_grant",          "invalid_scope",
    "invalid_target",  "rate_limited",           "temporarily_unavailable"};

void metrics_issued(void)
{
	atomic_fetch_add_explicit(&issued, 1, memory_order_relaxed);
}

void metrics_denied(metric_deny why)
{
	if (why < DENY__COUNT)
		atomic_fetch_add_explicit(&denied[why], 1, memory_order_relaxed);
}

void metrics_hsm_error(void)
{
	atomic_fetch_add_explicit(&hsm_errors, 1, memory_order_relaxed);
}

void metrics_latency(double s)
{
	size_t i;

	for (i = 0; i < NB && s > bounds[i]; i++)
		;
	atomic_fetch_add_explicit(&lat_bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&lat_count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&lat_sum_us, (unsigned long)(s * 1e6), memory_order_relaxed);
}

/* The audit log's fdatasync durations, a Prometheus histogram. */
static void render_fsync(FILE *f, const audit_stats *au)
{
	uint64_t cum = 0;

	fprintf(f, "# HELP writ_audit_fsync_duration_seconds fdatasync of the audit log: the "
	           "disk's latency, under every token's.\n"
	           "# TYPE writ_audit_fsync_duration_seconds histogram\n");
	for (size_t i = 0; i < AUDIT_SYNC_BUCKETS; i++) {
		cum += au->sync_buckets[i];
		fprintf(f, "writ_audit_fsync_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
		        (double)audit_sync_bounds_us[i] / 1e6, cum);
	}
	cum += au->sync_buckets[AUDIT_SYNC_BUCKETS];
	fprintf(f,
	        "writ_audit_fsync_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
	        "writ_audit_fsync_duration_seconds_sum %.6f\n"
	        "writ_audit_fsync_duration_seconds_count %" PRIu64 "\n",
	        cum, (double)au->sync_ns / 1e9, cum);
}

char *metrics_render(const metrics_key *keys, size_t nkeys, const audit_stats *au, int hsm_ok,
                     int signing_ok, unsigned in_pool)
{
	char *buf = NULL;
	size_t len = 0, i;
	unsigned long cum = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		return NULL;
	fprintf(f,
	        "# HELP writ_tokens_issued_total Access tokens issued.\n"
	        "# TYPE writ_tokens_issued_total counter\nwrit_tokens_issued_total %lu\n",
	        atomic_load(&issued));
	fprintf(f, "# HELP writ_tokens_denied_total Token requests refused, by reason.\n"
	           "# TYPE writ_tokens_denied_total counter\n");
	for (i = 0; i < DENY__COUNT; i++)
		fprintf(f, "writ_tokens_denied_total{reason=\"%s\"} %lu\n", deny_names[i],
		        atomic_load(&denied[i]));
	fprintf(f,
	        "# HELP writ_hsm_errors_total PKCS#11 operations that failed.\n"
	        "# TYPE writ_hsm_errors_total counter\nwrit_hsm_errors_total %lu\n",
	        atomic_load(&hsm_errors));
	fprintf(f, "# HELP writ_token_request_duration_seconds POST /token latency.\n"
	           "# TYPE writ_token_request_duration_seconds histogram\n");
	for (i = 0; i < NB; i++) {
		cum += atomic_load(&lat_bucket[i]);
		fprintf(f, "writ_token_request_duration_seconds_bucket{le=\"%g\"} %lu\n", bounds[i],
		        cum);
	}
	cum += atomic_load(&lat_bucket[NB]);
	fprintf(f, "writ_token_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n", cum);
	fprintf(f, "writ_token_request_duration_seconds_sum %.6f\n",
	        (double)atomic_load(&lat_sum_us) / 1e6);
	fprintf(f, "writ_token_request_duration_seconds_count %lu\n", atomic_load(&lat_count));
	/* Saturation: near the client count, requests wait for a worker. */
	fprintf(f,
	        "# HELP writ_token_requests_in_pool Token requests queued or being decided on "
	        "the worker pool.\n"
	        "# TYPE writ_token_requests_in_pool gauge\nwrit_token_requests_in_pool %u\n",
	        in_pool);
	fprintf(f, "# HELP writ_signing_key_age_seconds Age of each published signing key.\n"
	           "# TYPE writ_signing_key_age_seconds gauge\n");
	for (i = 0; i < nkeys; i++)
		fprintf(f,
		        "writ_signing_key_age_seconds{kid=\"%s\",alg=\"%s\",state=\"%s\"} %.0f\n",
		        keys[i].kid, keys[i].alg, keys[i].state != NULL ? keys[i].state : "",
		        keys[i].age_seconds);
	/* Records per sync is the group commit at work. */
	fprintf(f,
	        "# HELP writ_audit_records_total Audit records appended (checkpoints apart).\n"
	        "# TYPE writ_audit_records_total counter\nwrit_audit_records_total %" PRIu64 "\n"
	        "# HELP writ_audit_syncs_total fdatasync calls on the audit log.\n"
	        "# TYPE writ_audit_syncs_total counter\nwrit_audit_syncs_total %" PRIu64 "\n"
	        "# HELP writ_audit_commit_delays_total Syncs that first waited for records of "
	        "requests still being decided.\n"
	        "# TYPE writ_audit_commit_delays_total counter\n"
	        "writ_audit_commit_delays_total %" PRIu64 "\n"
	        "# HELP writ_audit_commit_delays_busy_total Of those, the longer waits after a "
	        "sync that covered many lines.\n"
	        "# TYPE writ_audit_commit_delays_busy_total counter\n"
	        "writ_audit_commit_delays_busy_total %" PRIu64 "\n"
	        "# HELP writ_audit_checkpoints_total Signed checkpoints written.\n"
	        "# TYPE writ_audit_checkpoints_total counter\n"
	        "writ_audit_checkpoints_total %" PRIu64 "\n"
	        "# HELP writ_audit_failures_total Appends refused for a write or sync error.\n"
	        "# TYPE writ_audit_failures_total counter\nwrit_audit_failures_total %" PRIu64 "\n",
	        au->appends, au->syncs, au->delays, au->busy_delays, au->checkpoints, au->failures);
	render_fsync(f, au);
	fprintf(f,
	        "# HELP writ_up Dependencies usable (1) or not (0).\n"
	        "# TYPE writ_up gauge\nwrit_up{component=\"audit\"} %d\n"
	        "writ_up{component=\"hsm\"} %d\n"
	        "writ_up{component=\"signing\"} %d\n",
	        au->healthy, hsm_ok, signing_ok);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
