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

/* Did a re-initialisation for a fault happen in the last few seconds? */
static int recent_reinit(p11_ctx *ctx)
{
	time_t at;

	pthread_rwlock_rdlock(&ctx->lock);
	at = ctx->reinit_at;
	pthread_rwlock_unlock(&ctx->lock);
	return at != 0 && time(NULL) - at < 10;
}

static unsigned long current_gen(p11_ctx *ctx)
{
	unsigned long gen;

	pthread_rwlock_rdlock(&ctx->lock);
	gen = ctx->gen;
	pthread_rwlock_unlock(&ctx->lock);
	return gen;
}

/*
 * May a key not found re-initialise the module now? At most once per
 * P11_MISSING_REINIT_SECS per context, whichever thread asks: the caller
 * that gets 1 has claimed the window. Monotonic time, so a clock step
 * neither blocks recovery nor allows a burst.
 */
static int missing_reinit_claim(p11_ctx *ctx)
{
	struct timespec ts;
	time_t now;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = ts.tv_sec + 1; /* never 0, which means "not yet" */
	pthread_mutex_lock(&ctx->pool_mu);
	ok = ctx->missing_at == 0 || now - ctx->missing_at >= P11_MISSING_REINIT_SECS;
	if (ok)
		ctx->missing_at = now;
	pthread_mutex_unlock(&ctx->pool_mu);
	return ok;
}

writ_rc p11_run(p11_ctx *ctx, p11_op_fn fn, void *arg, writ_err *err)
{
	p11_op op = {NULL, CKR_OK, 0};
	unsigned long gen;
	writ_err rerr = {0};
	writ_rc rc;
	int miss = 0;

	rc = p11_fork_check(ctx, err);
	if (rc != WRIT_OK)
		return rc;
	rc = run_once(ctx, fn, arg, &op, &gen, err);
	/*
	 * Nothing found, and no PKCS#11 error to say why. SoftHSM2 loads a
	 * token's objects at C_Initialize: after its token directory vanished
	 * and came back it answers every search with nothing until it is
	 * re-initialised, and a key whose handle was never cached would stay
	 * "missing" until a restart. So a sign's missing key, or any miss
	 * right after a fault's re-initialisation (one that may have raced
	 * with the token's files coming back: p11_key_present must not call
	 * a key gone from such a view), re-initialises and looks again. A
	 * sign's key that is really gone would do that on every request,
	 * hence the rate limit. The hot path (a cached handle) never gets
	 * here.
	 */
	if (rc == WRIT_ERR_NOT_FOUND && op.rv == CKR_OK) {
		if (op.key_missing ? !missing_reinit_claim(ctx) : !recent_reinit(ctx)) {
			/* Within the window: look again only in a view newer
			 * than the one that missed (another thread's fresh
			 * start), never re-initialise. */
			if (!op.key_missing || current_gen(ctx) == gen)
				return rc;
			goto again;
		}
		miss = 1;
		op.rv = CKR_OBJECT_HANDLE_INVALID;
		op.call = op.key_missing ? "find key (not found; re-initialising to look again)"
		                         : "find key after re-initialisation";
	}
	if (rc == WRIT_OK || op.rv == CKR_OK)
		return rc;
	if (!p11_rv_recoverable(op.rv))
		return p11_err_rv(err, rc, op.call, op.rv);
	/* A re-initialisation for a miss does not count as a fault's for
	 * recent_reinit, or misses would extend its window forever. */
	rc = p11_recover(ctx, gen, !miss, &rerr);
	if (rc != WRIT_OK) {
		const char *name = p11_rv_name(op.rv);

		writ_err_set(err, rc, "%s: %s (0x%lx); re-initialising the token failed: %s",
		             op.call, name != NULL ? name : "CKR_?", (unsigned long)op.rv,
		             rerr.msg);
		if (err != NULL)
			err->lib_code = op.rv;
		return rc;
	}
again:
	/* Once only: a fault that survives a fresh start is the token's. */
	op = (p11_op){NULL, CKR_OK, 0};
	rc = run_once(ctx, fn, arg, &op, &gen, err);
	if (rc != WRIT_OK && op.rv != CKR_OK)
		return p11_err_rv(err, rc, op.call, op.rv);
	return rc;
}
