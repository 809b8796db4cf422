/*
 * ctx.c - opening and closing a p11_ctx, mechanism checks, and the raw
 * accessors for benchmarks and tests.
 */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11_int.h"

static char *dup_or_null(const char *s, int *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = 1;
	return d;
}

static writ_rc ctx_new(const p11_cfg *cfg, p11_ctx **out, writ_err *err)
{
	p11_ctx *ctx;
	int failed = 0;

	if (cfg == NULL || cfg->module == NULL || cfg->token_label == NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "PKCS#11 module and token label are required");
	if ((cfg->pin_file == NULL) == (cfg->pin_env == NULL))
		return writ_err_set(
		    err, WRIT_ERR_PIN,
		    "give exactly one PIN source: a PIN file or an environment variable");
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	ctx->module = dup_or_null(cfg->module, &failed);
	ctx->label = dup_or_null(cfg->token_label, &failed);
	ctx->pin_file = dup_or_null(cfg->pin_file, &failed);
	ctx->softhsm_conf = dup_or_null(cfg->softhsm_conf, &failed);
	ctx->anchor = CK_INVALID_HANDLE;
	ctx->gen = 1; /* cache entries of generation 0 are empty */
	ctx->pid = getpid();
	p11_locks_init(ctx);
	*out = ctx;
	if (failed)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	return WRIT_OK;
}

writ_rc p11_open(const p11_cfg *cfg, p11_ctx **out, writ_err *err)
{
	p11_ctx *ctx = NULL;
	writ_rc rc;
	CK_RV rv;

	*out = NULL;
	rc = ctx_new(cfg, &ctx, err);
	if (rc != WRIT_OK)
		goto out;
	if (cfg->pin_env != NULL) {
		rc = p11_pin_env_take(cfg->pin_env, &ctx->pin, err);
		if (rc != WRIT_OK)
			goto out;
	}
	rc = p11_module_load(ctx->module, ctx->softhsm_conf, &ctx->dl, &ctx->f, err);
	if (rc != WRIT_OK)
		goto out;
	rv = p11_module_initialize(ctx->f);
	/* Someone else in this process owns the module's state: our fault
	 * recovery (C_Finalize) would pull it from under them. */
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		rc = writ_err_set(
		    err, WRIT_ERR_HSM,
		    "%s is already initialised in this process (one p11_ctx per module)",
		    ctx->module);
		ctx->f = NULL;
		goto out;
	}
	if (rv != CKR_OK) {
		rc = p11_err_rv(err, WRIT_ERR_HSM, "C_Initialize", rv);
		ctx->f = NULL;
		goto out;
	}
	rc = p11_connect(ctx, err);
out:
	if (rc != WRIT_OK) {
		p11_close(ctx);
		return rc;
	}
	*out = ctx;
	return WRIT_OK;
}

void p11_close(p11_ctx *ctx)
{
	if (ctx == NULL)
		return;
	/* In a child that never called us, the module state is the parent's:
	 * leave it alone rather than log the parent out. */
	if (ctx->f != NULL && ctx->pid == getpid()) {
		if (ctx->anchor != CK_INVALID_HANDLE)
			(void)ctx->f->C_Logout(ctx->anchor);
		(void)ctx->f->C_CloseAllSessions(ctx->slot);
		(void)ctx->f->C_Finalize(NULL);
	}
	if (ctx->dl != NULL)
		dlclose(ctx->dl);
	p11_pin_mem_wipe(&ctx->pin);
	p11_locks_destroy(ctx);
	free(ctx->module);
	free(ctx->label);
	free(ctx->pin_file);
	free(ctx->softhsm_conf);
	OPENSSL_cleanse(ctx, sizeof(*ctx));
	free(ctx);
}

static int mech_ok(p11_ctx *ctx, CK_MECHANISM_TYPE m, CK_FLAGS need)
{
	CK_MECHANISM_INFO mi;

	return ctx->f->C_GetMechanismInfo(ctx->slot, m, &mi) == CKR_OK && (mi.flags & need) == need;
}

int p11_alg_supported(p11_ctx *ctx, writ_alg alg)
{
	CK_MECHANISM_TYPE gen, sign;
	int ok;

	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384: gen = CKM_EC_KEY_PAIR_GEN, sign = CKM_ECDSA; break;
	case WRIT_ALG_RS256: gen = CKM_RSA_PKCS_KEY_PAIR_GEN, sign = CKM_SHA256_RSA_PKCS; break;
	case WRIT_ALG_PS256: gen = CKM_RSA_PKCS_KEY_PAIR_GEN, sign = CKM_SHA256_RSA_PKCS_PSS; break;
	case WRIT_ALG_EDDSA: gen = CKM_EC_EDWARDS_KEY_PAIR_GEN, sign = CKM_EDDSA; break;
	default: return 0;
	}
	if (ctx == NULL || p11_fork_check(ctx, NULL) != WRIT_OK)
		return 0;
	pthread_rwlock_rdlock(&ctx->lock);
	ok = !ctx->broken && mech_ok(ctx, gen, CKF_GENERATE_KEY_PAIR) &&
	     mech_ok(ctx, sign, CKF_SIGN);
	pthread_rwlock_unlock(&ctx->lock);
	return ok;
}

/* ---- raw access: benchmarks and tests only ---- */

const void *p11_raw_functions(p11_ctx *ctx)
{
	return ctx != NULL ? ctx->f : NULL;
}

/*
 * A session of its own (not from the pool), logged in through the anchor.
 * Not for use across a fault: after a re-initialisation the handle is
 * stale, and p11_raw_session_put would close whatever now has its number.
 */
long p11_raw_session_get(p11_ctx *ctx)
{
	CK_SESSION_HANDLE s;
	CK_RV rv;

	if (ctx == NULL || p11_fork_check(ctx, NULL) != WRIT_OK)
		return -1;
	pthread_rwlock_rdlock(&ctx->lock);
	rv = ctx->broken ? CKR_CRYPTOKI_NOT_INITIALIZED
	                 : ctx->f->C_OpenSession(ctx->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	                                         NULL, NULL, &s);
	pthread_rwlock_unlock(&ctx->lock);
	return rv == CKR_OK ? (long)s : -1;
}

void p11_raw_session_put(p11_ctx *ctx, long session)
{
	if (ctx != NULL && session >= 0)
		(void)ctx->f->C_CloseSession((CK_SESSION_HANDLE)session);
}

long p11_raw_find_private(p11_ctx *ctx, long session, const unsigned char *id, size_t id_len)
{
	CK_OBJECT_HANDLE h;
	writ_alg alg;
	p11_op op = {NULL, CKR_OK};

	if (ctx == NULL || session < 0)
		return -1;
	if (p11_find_private(ctx, (CK_SESSION_HANDLE)session, id, id_len, &h, &alg, &op, NULL) !=
	    WRIT_OK)
		return -1;
	return (long)h;
}

unsigned long p11_generation(p11_ctx *ctx)
{
	unsigned long gen;

	if (ctx == NULL)
		return 0;
	pthread_rwlock_rdlock(&ctx->lock);
	gen = ctx->gen;
	pthread_rwlock_unlock(&ctx->lock);
	return gen;
}
