/*
 * module.c - loading the PKCS#11 module, initialising it, and the one
 * cure for a lost token: C_Finalize, C_Initialize, log in again.
 *
 * Fork: see the comment at fork_reinit (measured with SoftHSM2 2.6.1).
 */
/* pthread_rwlockattr_setkind_np: writer preference, see p11_int.h. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include "p11_int.h"

writ_rc p11_module_load(const char *path, const char *softhsm_conf, void **dl, CK_FUNCTION_LIST **f,
                        writ_err *err)
{
	CK_C_GetFunctionList get;
	CK_RV rv;

	*dl = NULL;
	*f = NULL;
	/* SoftHSM reads SOFTHSM2_CONF in C_Initialize; set it before. */
	if (softhsm_conf != NULL && setenv("SOFTHSM2_CONF", softhsm_conf, 1) != 0)
		return writ_err_set(err, WRIT_ERR_CONFIG, "cannot set SOFTHSM2_CONF");
	/* RTLD_LOCAL: the module's symbols must not satisfy anyone else's. */
	/* RTLD_NODELETE: a module's atexit handlers and thread-local data must
	 * not outlive its code (some modules register them), and leak reports
	 * and profiles can still name the module's frames after p11_close. */
	*dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (*dl == NULL)
		return writ_err_set(err, WRIT_ERR_HSM, "cannot load PKCS#11 module %s: %s", path,
		                    dlerror());
	*(void **)&get = dlsym(*dl, "C_GetFunctionList");
	if (get == NULL) {
		dlclose(*dl);
		*dl = NULL;
		return writ_err_set(err, WRIT_ERR_HSM, "%s is not a PKCS#11 module", path);
	}
	rv = get(f);
	if (rv != CKR_OK || *f == NULL) {
		dlclose(*dl);
		*dl = NULL;
		*f = NULL;
		return p11_err_rv(err, WRIT_ERR_HSM, "C_GetFunctionList", rv);
	}
	return WRIT_OK;
}

/* We call from many threads: the module must lock, with the OS's own
 * primitives (CKF_OS_LOCKING_OK, no callbacks). */
CK_RV p11_module_initialize(CK_FUNCTION_LIST *f)
{
	CK_C_INITIALIZE_ARGS args = {0};

	args.flags = CKF_OS_LOCKING_OK;
	return f->C_Initialize(&args);
}

/* Under the exclusive lock: drop everything and connect afresh. */
static writ_rc reinit(p11_ctx *ctx, writ_err *err)
{
	CK_RV rv;
	writ_rc rc;

	p11_pool_forget(ctx);
	ctx->anchor = CK_INVALID_HANDLE;
	ctx->gen++;
	ctx->broken = 1;
	/* Not initialised is fine here: an earlier attempt may have failed. */
	(void)ctx->f->C_Finalize(NULL);
	rv = p11_module_initialize(ctx->f);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_Initialize", rv);
	rc = p11_connect(ctx, err);
	if (rc == WRIT_OK)
		ctx->broken = 0;
	return rc;
}

writ_rc p11_recover(p11_ctx *ctx, unsigned long seen_gen, int fault, writ_err *err)
{
	writ_rc rc = WRIT_OK;

	pthread_rwlock_wrlock(&ctx->lock);
	/* Another thread re-initialised after we saw the fault: retry on its
	 * work instead of tearing it down again (no thundering re-inits). */
	if (ctx->gen == seen_gen) {
		if (fault)
			ctx->reinit_at = time(NULL);
		rc = reinit(ctx, err);
	}
	pthread_rwlock_unlock(&ctx->lock);
	return rc;
}

static void locks_init(p11_ctx *ctx)
{
	pthread_rwlockattr_t attr;

	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ctx->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&ctx->pool_mu, NULL);
	pthread_cond_init(&ctx->pool_cv, NULL);
}

void p11_locks_init(p11_ctx *ctx)
{
	locks_init(ctx);
}

void p11_locks_destroy(p11_ctx *ctx)
{
	pthread_cond_destroy(&ctx->pool_cv);
	pthread_mutex_destroy(&ctx->pool_mu);
	pthread_rwlock_destroy(&ctx->lock);
}

/*
 * First call in a child of fork(). PKCS#11 v2.40 s.6.7.7: the child must
 * C_Initialize before use, and it must not use the parent's sessions or
 * handles. We try C_Initialize first, as the standard says, because on a
 * module that talks to a device or daemon a C_Finalize in the child could
 * tear down state it shares with the parent.
 *
 * SoftHSM2 2.6.1 (measured): it has no fork detection. In the child the
 * copied state still answers (C_OpenSession on the parent's slot works
 * without any C_Initialize), and C_Initialize returns
 * CKR_CRYPTOKI_ALREADY_INITIALIZED (0x191). C_Finalize + C_Initialize in
 * the child then works, and the parent's sessions and login are not
 * affected (its state lives in its own memory; the token files are only
 * read). So: C_Initialize, and on 0x191 C_Finalize and C_Initialize again.
 *
 * The parent's lock holders do not exist in the child, so the locks are
 * made afresh; this assumes the child's first p11 call is not made from
 * several threads at once (it starts with one thread).
 */
static writ_rc fork_reinit(p11_ctx *ctx, writ_err *err)
{
	CK_RV rv;
	writ_rc rc;

	locks_init(ctx);
	p11_pool_forget(ctx);
	ctx->anchor = CK_INVALID_HANDLE;
	ctx->gen++;
	ctx->broken = 1;
	ctx->pid = getpid();
	rv = p11_module_initialize(ctx->f);
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		(void)ctx->f->C_Finalize(NULL);
		rv = p11_module_initialize(ctx->f);
	}
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_Initialize (after fork)", rv);
	rc = p11_connect(ctx, err);
	if (rc == WRIT_OK)
		ctx->broken = 0;
	return rc;
}

writ_rc p11_fork_check(p11_ctx *ctx, writ_err *err)
{
	if (ctx->pid == getpid())
		return WRIT_OK;
	return fork_reinit(ctx, err);
}
