/*
 * token.c - finding the token by label, connecting to it, and creating a
 * development token (writ token init).
 *
 * Tokens are found by label, never by slot id: SoftHSM2 renumbers its
 * slots when a token is initialised (FACTS.md).
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11_int.h"

#define LABEL_LEN 32 /* CK_TOKEN_INFO.label: blank padded, not terminated */

static int label_pad(const char *label, unsigned char out[LABEL_LEN])
{
	size_t n = strlen(label);

	if (n == 0 || n > LABEL_LEN)
		return -1;
	memset(out, ' ', LABEL_LEN);
	memcpy(out, label, n);
	return 0;
}

/* Slots with a token, malloc'd; *n set. */
static CK_RV slot_list(CK_FUNCTION_LIST *f, CK_SLOT_ID **slots, CK_ULONG *n)
{
	CK_RV rv;

	*slots = NULL;
	rv = f->C_GetSlotList(CK_TRUE, NULL, n);
	if (rv != CKR_OK || *n == 0)
		return rv;
	*slots = calloc(*n, sizeof(**slots));
	if (*slots == NULL)
		return CKR_HOST_MEMORY;
	rv = f->C_GetSlotList(CK_TRUE, *slots, n);
	if (rv != CKR_OK) {
		free(*slots);
		*slots = NULL;
	}
	return rv;
}

/*
 * Find the initialised token labelled label (found = 1, *slot set), and
 * the first uninitialised token (*free_slot, free_found = 1) on the way.
 */
static CK_RV token_scan(CK_FUNCTION_LIST *f, const unsigned char want[LABEL_LEN], int *found,
                        CK_SLOT_ID *slot, int *free_found, CK_SLOT_ID *free_slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_TOKEN_INFO ti;
	CK_ULONG n = 0, i;
	CK_RV rv;

	*found = 0;
	*free_found = 0;
	rv = slot_list(f, &slots, &n);
	for (i = 0; rv == CKR_OK && i < n; i++) {
		/* A slot that fails to answer is not ours: keep looking. */
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
			if (!*free_found) {
				*free_found = 1;
				*free_slot = slots[i];
			}
		} else if (!*found && memcmp(ti.label, want, LABEL_LEN) == 0) {
			*found = 1;
			*slot = slots[i];
		}
	}
	free(slots);
	return rv;
}

writ_rc p11_token_find(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *slot, writ_err *err)
{
	unsigned char want[LABEL_LEN];
	CK_SLOT_ID free_slot;
	int found, free_found;
	CK_RV rv;

	if (label_pad(label, want) != 0)
		return writ_err_set(err, WRIT_ERR_CONFIG, "token label \"%s\" must be 1..32 bytes",
		                    label);
	rv = token_scan(f, want, &found, slot, &free_found, &free_slot);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_GetSlotList", rv);
	if (!found)
		return writ_err_set(err, WRIT_ERR_NOT_FOUND, "no token labelled \"%s\"", label);
	return WRIT_OK;
}

/* Find the token, open the anchor session and log in, once. */
static writ_rc connect_once(p11_ctx *ctx, writ_err *err)
{
	CK_SESSION_HANDLE s;
	writ_rc rc;
	CK_RV rv;

	rc = p11_token_find(ctx->f, ctx->label, &ctx->slot, err);
	if (rc != WRIT_OK)
		return rc;
	rv = ctx->f->C_OpenSession(ctx->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_OpenSession", rv);
	rc = p11_login(ctx, s, err);
	if (rc != WRIT_OK) {
		(void)ctx->f->C_CloseSession(s);
		return rc;
	}
	ctx->anchor = s;
	return WRIT_OK;
}

/*
 * SoftHSM2 reads a token's files in C_Initialize and C_Login while other
 * processes may be reading and writing them (a login rewrites them), and
 * when it catches one half-written it leaves the token out of its slot
 * list or fails the login, with CKR_GENERAL_ERROR or even
 * CKR_USER_PIN_NOT_INITIALIZED ("Token integrity check failed", SoftHSMv2
 * issue #757). Measured here: one in ~120 `writ key list` runs, three at
 * a time, said the token was missing. So those outcomes are tried
 * again, from a fresh C_Initialize, up to 8 times 10 to 160 ms apart. A
 * refused PIN is never retried (each try nears a lockout), nor is any
 * other error. Called right after C_Initialize, with no sessions open.
 */
#define CONNECT_TRIES 8

/* What a half-written token file has made SoftHSM2 say (seen here: the
 * token missing, C_Login failing with 0x5 or 0x102). */
static int torn_read(writ_rc rc, const writ_err *e)
{
	if (rc == WRIT_ERR_NOT_FOUND)
		return 1;
	return rc == WRIT_ERR_HSM &&
	       (e->lib_code == CKR_GENERAL_ERROR || e->lib_code == CKR_USER_PIN_NOT_INITIALIZED ||
	        e->lib_code == CKR_TOKEN_NOT_RECOGNIZED || e->lib_code == CKR_TOKEN_NOT_PRESENT);
}

writ_rc p11_connect(p11_ctx *ctx, writ_err *err)
{
	writ_err e = {0};
	writ_rc rc;
	CK_RV rv;
	int i;

	for (i = 0;; i++) {
		rc = connect_once(ctx, &e);
		if (rc == WRIT_OK || i + 1 == CONNECT_TRIES || !torn_read(rc, &e))
			break;
		usleep(10000u << (i < 4 ? i : 4));
		(void)ctx->f->C_Finalize(NULL);
		rv = p11_module_initialize(ctx->f);
		if (rv != CKR_OK)
			return p11_err_rv(err, WRIT_ERR_HSM, "C_Initialize", rv);
	}
	if (rc != WRIT_OK && err != NULL)
		*err = e;
	return rc;
}

/* ---- writ token init ---- */

/* Module loaded and initialised: make the token in the first free slot. */
static writ_rc token_create(CK_FUNCTION_LIST *f, const char *label, const char *so_pin,
                            const char *user_pin, writ_err *err)
{
	unsigned char lab[LABEL_LEN];
	CK_SLOT_ID slot = 0, free_slot = 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	int found, free_found;
	const char *call;
	CK_RV rv;

	if (label_pad(label, lab) != 0)
		return writ_err_set(err, WRIT_ERR_ARG, "token label must be 1..32 bytes");
	rv = token_scan(f, lab, &found, &slot, &free_found, &free_slot);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_GetSlotList", rv);
	if (found)
		return writ_err_set(err, WRIT_ERR_ARG, "a token labelled \"%s\" already exists",
		                    label);
	if (!free_found)
		return writ_err_set(err, WRIT_ERR_HSM, "no uninitialised token slot left");
	call = "C_InitToken";
	rv = f->C_InitToken(free_slot, (CK_UTF8CHAR *)so_pin, strlen(so_pin), lab);
	if (rv != CKR_OK)
		goto out;
	/* SoftHSM gives the new token a new slot id: look it up again. */
	call = "C_GetSlotList";
	rv = token_scan(f, lab, &found, &slot, &free_found, &free_slot);
	if (rv == CKR_OK && !found)
		rv = CKR_TOKEN_NOT_RECOGNIZED;
	if (rv != CKR_OK)
		goto out;
	call = "C_OpenSession";
	rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		goto out;
	call = "C_Login (SO)";
	rv = f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin));
	if (rv != CKR_OK)
		goto out;
	call = "C_InitPIN";
	rv = f->C_InitPIN(s, (CK_UTF8CHAR *)user_pin, strlen(user_pin));
	(void)f->C_Logout(s);
out:
	if (s != CK_INVALID_HANDLE)
		(void)f->C_CloseSession(s);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, call, rv);
	return WRIT_OK;
}

writ_rc p11_token_init(const char *module, const char *softhsm_conf, const char *label,
                       const char *so_pin, const char *user_pin, writ_err *err)
{
	CK_FUNCTION_LIST *f = NULL;
	void *dl = NULL;
	writ_rc rc;
	CK_RV rv;

	if (module == NULL || label == NULL || so_pin == NULL || user_pin == NULL ||
	    *so_pin == '\0' || *user_pin == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "token init needs a module, label and PINs");
	rc = p11_module_load(module, softhsm_conf, &dl, &f, err);
	if (rc != WRIT_OK)
		return rc;
	rv = p11_module_initialize(f);
	if (rv != CKR_OK) {
		rc = p11_err_rv(err, WRIT_ERR_HSM, "C_Initialize", rv);
		goto out;
	}
	rc = token_create(f, label, so_pin, user_pin, err);
	(void)f->C_Finalize(NULL);
out:
	dlclose(dl);
	return rc;
}
