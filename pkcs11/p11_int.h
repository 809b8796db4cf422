/*
 * p11_int.h - private to pkcs11/: the context, the session pool, the
 * recovery runner and the helpers the files share.
 *
 * Include this header LAST in every .c file: it pulls in p11-kit's
 * pkcs11.h, which defines short macros (value, parameter, count) that
 * would rename identifiers in any header included after it.
 */
#ifndef WRIT_P11_INT_H
#define WRIT_P11_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "p11.h"
#include "writ_int.h"

#include <p11-kit/pkcs11.h>

#define P11_POOL_MAX  32   /* sessions per context, the anchor not counted */
#define P11_CACHE_MAX 64   /* private key handles remembered per context */
#define P11_KEYS_MAX  1024 /* private keys listed at most (more: an error) */

/* One remembered private key handle; valid while gen == ctx->gen. */
typedef struct p11_cached {
	unsigned char id[P11_ID_MAX];
	size_t id_len;
	CK_OBJECT_HANDLE h;
	writ_alg alg; /* from the label, WRIT_ALG_NONE if it or the type is off */
	unsigned long gen;
} p11_cached;

/* A PIN held for re-login (pin_env): mmap'd, mlock'd, not in core dumps. */
typedef struct p11_pin_mem {
	char *buf;
	size_t len;  /* PIN bytes */
	size_t size; /* mapping size */
} p11_pin_mem;

struct p11_ctx {
	void *dl;
	CK_FUNCTION_LIST *f;
	char *module, *label, *pin_file, *softhsm_conf;
	p11_pin_mem pin;

	/*
	 * lock: every operation holds it shared; re-initialisation (fault
	 * recovery, first call after fork) holds it exclusive, so no thread
	 * is inside the module while C_Finalize runs. Writer-preferring, so
	 * a busy signer cannot starve recovery.
	 */
	pthread_rwlock_t lock;
	unsigned long gen; /* bumped by every re-initialisation; under lock */
	int broken;        /* last re-initialisation failed: next call retries */
	time_t reinit_at;  /* when the last one for a fault was attempted */
	pid_t pid;         /* process that initialised the module */
	CK_SLOT_ID slot;
	/* Keeps the login alive: PKCS#11 logs the user out when the last
	 * session of the application closes, and pool sessions come and go. */
	CK_SESSION_HANDLE anchor;

	pthread_mutex_t pool_mu; /* guards everything below */
	pthread_cond_t pool_cv;
	CK_SESSION_HANDLE pool[P11_POOL_MAX];
	size_t pool_free; /* idle sessions in pool[0..pool_free) */
	size_t pool_open; /* sessions open, idle or lent */
	p11_cached cache[P11_CACHE_MAX];
	size_t cache_next;
	/* CLOCK_MONOTONIC seconds of the last re-initialisation claimed for a
	 * key not found (0: none yet): the rate limit of p11_run. */
	time_t missing_at;
};

/* The failing PKCS#11 call of an operation, for recovery and messages. */
typedef struct p11_op {
	const char *call;
	CK_RV rv;
	/* p11_find_private found no private key with the id (rv is CKR_OK):
	 * p11_run may re-initialise and look again, rate-limited. */
	int key_missing;
} p11_op;

/* A key named by its CKA_ID: the argument of operations on one key. */
typedef struct p11_id_arg {
	const unsigned char *id;
	size_t id_len;
} p11_id_arg;

/* Record a PKCS#11 failure in op; returns WRIT_ERR_HSM. */
writ_rc p11_fail(p11_op *op, const char *call, CK_RV rv);
/* "CKR_PIN_INCORRECT" etc., or NULL when the code has no name here. */
const char *p11_rv_name(CK_RV rv);
/* Fill err with "<call>: <name> (0x..)" and lib_code = rv. */
writ_rc p11_err_rv(writ_err *err, writ_rc rc, const char *call, CK_RV rv);
/* Does rv mean a lost object, session, login, token or module? */
int p11_rv_recoverable(CK_RV rv);

/* ---- module.c ---- */
writ_rc p11_module_load(const char *path, const char *softhsm_conf, void **dl, CK_FUNCTION_LIST **f,
                        writ_err *err);
CK_RV p11_module_initialize(CK_FUNCTION_LIST *f);
/* Re-initialise after a fault seen under generation seen_gen (or after
 * fork). Takes the lock exclusive; a no-op if someone else already did.
 * fault 0: for a key not found, not a PKCS#11 fault (reinit_at is kept). */
writ_rc p11_recover(p11_ctx *ctx, unsigned long seen_gen, int fault, writ_err *err);
/* Called first by every public entry point: re-initialises in a child. */
writ_rc p11_fork_check(p11_ctx *ctx, writ_err *err);
void p11_locks_init(p11_ctx *ctx);
void p11_locks_destroy(p11_ctx *ctx);

/* ---- token.c ---- */
/* Slot of the initialised token labelled label, found fresh each time. */
writ_rc p11_token_find(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *slot, writ_err *err);
/* C_Initialize done: find the token, open the anchor session, log in. */
writ_rc p11_connect(p11_ctx *ctx, writ_err *err);

/* ---- pin.c ---- */
/* Log in on session s with the configured PIN; wipes every copy it makes. */
writ_rc p11_login(p11_ctx *ctx, CK_SESSION_HANDLE s, writ_err *err);
writ_rc p11_pin_env_take(const char *name, p11_pin_mem *pin, writ_err *err);
void p11_pin_mem_wipe(p11_pin_mem *pin);

/* ---- session.c ---- */
typedef writ_rc (*p11_op_fn)(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op,
                             writ_err *err);
/*
 * Run fn on a pooled session under the shared lock. If it fails with a
 * recoverable CK_RV, re-initialise and run it once more; a PKCS#11
 * failure that remains is reported as WRIT_ERR_HSM naming the call.
 * A WRIT_ERR_NOT_FOUND with op->key_missing set (or any WRIT_ERR_NOT_FOUND
 * shortly after a re-initialisation) also re-initialises and runs once
 * more, but at most once per P11_MISSING_REINIT_SECS per context; when
 * that limit holds it runs once more only if another thread has
 * re-initialised since fn ran.
 */
writ_rc p11_run(p11_ctx *ctx, p11_op_fn fn, void *arg, writ_err *err);
CK_RV p11_session_get(p11_ctx *ctx, CK_SESSION_HANDLE *s);
/* Return s; a session whose operation failed is closed, not reused. */
void p11_session_put(p11_ctx *ctx, CK_SESSION_HANDLE s, int ok);
/* Forget every session (they die with C_Finalize) and cached handle. */
void p11_pool_forget(p11_ctx *ctx);

/* ---- keys.c ---- */
/* Up to max objects matching tmpl, over as many C_FindObjects calls as the
 * module needs; *found == max may mean there are more. op names the
 * failing call. */
CK_RV p11_find(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
               CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *found, p11_op *op);
/* alg named by a "writ:<ALG>:" label of len bytes; WRIT_ALG_NONE if not ours. */
writ_alg p11_label_alg(const unsigned char *label, size_t len);
/* Find the private key with CKA_ID id (cached per generation); *alg is
 * the one its writ label pins, checked against its key type. */
writ_rc p11_find_private(p11_ctx *ctx, CK_SESSION_HANDLE s, const unsigned char *id, size_t id_len,
                         CK_OBJECT_HANDLE *h, writ_alg *alg, p11_op *op, writ_err *err);
void p11_cache_drop(p11_ctx *ctx, const unsigned char *id, size_t id_len);
/* Public key of the pair from the public object h, checked against alg. */
writ_rc p11_pub_export(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, writ_alg alg,
                       EVP_PKEY **out, p11_op *op, writ_err *err);

/* ---- sign.c ---- */
/* Sign data (the message, or its digest for ECDSA) with the private key
 * object h by alg's mechanism; the JWS form into sig (P11_SIG_MAX bytes). */
writ_rc p11_sign_handle(p11_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, writ_alg alg,
                        const unsigned char *data, size_t data_len, unsigned char *sig,
                        size_t *siglen, p11_op *op, writ_err *err);

/* ---- keygen.c ---- */
/* DER CKA_EC_PARAMS naming alg's curve; n set; NULL if alg is not EC. */
const unsigned char *p11_ec_params(writ_alg alg, size_t *n);
/* The other accepted encoding of Ed25519's params (PrintableString). */
extern const unsigned char p11_ed25519_name[14];

#endif
