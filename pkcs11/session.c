/*
 * session.c - the session pool and the run-and-recover loop.
 *
 * PKCS#11 sessions are not to be shared between threads mid-operation,
 * so each operation borrows one. Sessions are opened on demand up to
 * P11_POOL_MAX and kept; one that saw a PKCS#11 failure is closed rather
 * than reused, since a failed C_Sign can leave an operation active.
 */
#include <stdio.h>
#include <string.h>

#include "p11_int.h"

CK_RV p11_session_get(p11_ctx *ctx, CK_SESSION_HANDLE *s)
{
	CK_RV rv;

	pthread_mutex_lock(&ctx->pool_mu);
	for (;;) {
		if (ctx->broken) {
			pthread_mutex_unlock(&ctx->pool_mu);
			return CKR_CRYPTOKI_NOT_INITIALIZED;
		}
		if (ctx->pool_free > 0) {
			*s = ctx->pool[--ctx->pool_free];
			pthread_mutex_unlock(&ctx->pool_mu);
			return CKR_OK;
		}
		if (ctx->pool_open < P11_POOL_MAX)
			break;
		pthread_cond_wait(&ctx->pool_cv, &ctx->pool_mu);
	}
	ctx->pool_open++;
	pthread_mutex_unlock(&ctx->pool_mu);
	/* R/W: key generation and destruction need it (FACTS.md). The login
	 * is the application's, held by the anchor session. */
	rv = ctx->f->C_OpenSession(ctx->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
	if (rv != CKR_OK) {
		pthread_mutex_lock(&ctx->pool_mu);
		ctx->pool_open--;
		pthread_cond_signal(&ctx->pool_cv);
		pthread_mutex_unlock(&ctx->pool_mu);
	}
	return rv;
}

void p11_session_put(p11_ctx *ctx, CK_SESSION_HANDLE s, int ok)
{
	pthread_mutex_lock(&ctx->pool_mu);
	if (ok)
		ctx->pool[ctx->pool_free++] = s;
	else
		ctx->pool_open--;
	pthread_cond_signal(&ctx->pool_cv);
	pthread_mutex_unlock(&ctx->pool_mu);
	if (!ok)
		(void)ctx->f->C_CloseSession(s);
}

void p11_pool_forget(p11_ctx *ctx)
{
	pthread_mutex_lock(&ctx->pool_mu);
	ctx->pool_free = 0;
	ctx->pool_open = 0;
	memset(ctx->cache, 0, sizeof(ctx->cache));
	ctx->cache_next = 0;
	pthread_cond_broadcast(&ctx->pool_cv);
	pthread_mutex_unlock(&ctx->pool_mu);
}

/* One attempt under the shared lock; *gen is the generation it ran in. */
static writ_rc run_once(p11_ctx *ctx, p11_op_fn fn, void *arg, p11_op *op, unsigned long *gen,
                        writ_err *err)
{
	CK_SESSION_HANDLE s;
	CK_RV rv;
	writ_rc rc;

	pthread_rwlock_rdlock(&ctx->lock);
	*gen = ctx->gen;
	rv = p11_session_get(ctx, &s);
	if (rv != CKR_OK) {
		rc = p11_fail(
		    op, ctx->broken ? "token (re-initialisation failed earlier)" : "C_OpenSession",
		    rv);
	} else {
		rc = fn(ctx, s, arg, op, err);
		p11_session_put(ctx, s, op->rv == CKR_OK);
	}
	pthread_rwlock_unlock(&ctx->lock);
	return rc;
}

/* Did a re-initialisation happen in the last few seconds? */
static int recent_reinit(p11_ctx *ctx)
{
	time_t at;

	pthread_rwlock_rdlock(&ctx->lock);
	at = ctx->reinit_at;
	pthread_rwlock_unlock(&ctx->lock);
	return at != 0 && time(NULL) - at < 10;
}

writ_rc p11_run(p11_ctx *ctx, p11_op_fn fn, void *arg, writ_err *err)
{
	p11_op op = {NULL, CKR_OK};
	unsigned long gen;
	writ_err rerr = {0};
	writ_rc rc;

	rc = p11_fork_check(ctx, err);
	if (rc != WRIT_OK)
		return rc;
	rc = run_once(ctx, fn, arg, &op, &gen, err);
	if (rc == WRIT_ERR_NOT_FOUND && op.rv == CKR_OK && recent_reinit(ctx)) {
		/* A re-initialisation that raced with the token's files coming
		 * back can leave a view of the token without its objects; a key
		 * that "vanished" right after one gets one more fresh start. */
		op.rv = CKR_OBJECT_HANDLE_INVALID;
		op.call = "find key after re-initialisation";
	}
	if (rc == WRIT_OK || op.rv == CKR_OK)
		return rc;
	if (!p11_rv_recoverable(op.rv))
		return p11_err_rv(err, rc, op.call, op.rv);
	rc = p11_recover(ctx, gen, &rerr);
	if (rc != WRIT_OK) {
		const char *name = p11_rv_name(op.rv);

		writ_err_set(err, rc, "%s: %s (0x%lx); re-initialising the token failed: %s",
		             op.call, name != NULL ? name : "CKR_?", (unsigned long)op.rv,
		             rerr.msg);
		if (err != NULL)
			err->lib_code = op.rv;
		return rc;
	}
	/* Once only: a fault that survives a fresh start is the token's. */
	op.call = NULL;
	op.rv = CKR_OK;
	rc = run_once(ctx, fn, arg, &op, &gen, err);
	if (rc != WRIT_OK && op.rv != CKR_OK)
		return p11_err_rv(err, rc, op.call, op.rv);
	return rc;
}
