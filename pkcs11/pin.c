/*
 * pin.c - where the user PIN comes from, and logging in with it.
 *
 * SPEC s.2: the PIN comes from an environment variable or from a file
 * only its owner can read; never from the config or the command line.
 * Every copy is wiped as soon as C_Login has returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "p11_int.h"

/* Read all of fd into buf (cap bytes); *n set. -1 on a read error. */
static int read_all(int fd, char *buf, size_t cap, size_t *n)
{
	ssize_t r;

	*n = 0;
	while (*n < cap) {
		r = read(fd, buf + *n, cap - *n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		*n += (size_t)r;
	}
	return 0;
}

/* The file must be ours alone: another user or a group member who can
 * read it can log in to the token as us. */
static writ_rc pin_file_check(int fd, const char *path, writ_err *err)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return writ_err_set(err, WRIT_ERR_PIN, "PIN file %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return writ_err_set(err, WRIT_ERR_PIN, "PIN file %s is not a regular file", path);
	if (st.st_uid != geteuid())
		return writ_err_set(err, WRIT_ERR_PIN,
		                    "PIN file %s is owned by uid %lu, not by us (uid %lu)", path,
		                    (unsigned long)st.st_uid, (unsigned long)geteuid());
	if ((st.st_mode & 077) != 0)
		return writ_err_set(err, WRIT_ERR_PIN,
		                    "PIN file %s is accessible by group or others (mode 0%03o): "
		                    "chmod 600 it",
		                    path, (unsigned)(st.st_mode & 07777));
	return WRIT_OK;
}

writ_rc p11_pin_read_file(const char *path, char *buf, size_t *len, writ_err *err)
{
	char extra;
	size_t n = 0, more = 0;
	writ_rc rc;
	int fd;

	*len = 0;
	/* O_NOFOLLOW: a symlink planted in place of the file is refused. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return writ_err_set(err, WRIT_ERR_PIN, "cannot open PIN file %s: %s", path,
		                    strerror(errno));
	rc = pin_file_check(fd, path, err);
	if (rc != WRIT_OK)
		goto out;
	if (read_all(fd, buf, P11_PIN_MAX + 1, &n) != 0 || read_all(fd, &extra, 1, &more) != 0) {
		rc = writ_err_set(err, WRIT_ERR_PIN, "cannot read PIN file %s: %s", path,
		                  strerror(errno));
		goto out;
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (more != 0 || n > P11_PIN_MAX) {
		rc = writ_err_set(err, WRIT_ERR_PIN, "PIN file %s is over %d bytes", path,
		                  P11_PIN_MAX);
		goto out;
	}
	if (n == 0 || memchr(buf, '\n', n) != NULL || memchr(buf, '\0', n) != NULL) {
		rc = writ_err_set(err, WRIT_ERR_PIN, "PIN file %s must hold one non-empty line",
		                  path);
		goto out;
	}
	buf[n] = '\0';
	*len = n;
out:
	OPENSSL_cleanse(&extra, sizeof(extra));
	if (rc != WRIT_OK)
		OPENSSL_cleanse(buf, P11_PIN_MAX + 1);
	close(fd);
	return rc;
}

/*
 * Take the PIN out of the environment into memory that is locked (never
 * swapped) and left out of core dumps, then zero and remove the variable,
 * so that /proc/<pid>/environ and a crash dump no longer hold it. mlock
 * may fail under a tight RLIMIT_MEMLOCK: the copy is still kept out of
 * dumps, so that is not fatal.
 */
writ_rc p11_pin_env_take(const char *name, p11_pin_mem *pin, writ_err *err)
{
	char *v = getenv(name);
	size_t n, size;
	void *p;

	memset(pin, 0, sizeof(*pin));
	if (v == NULL || *v == '\0')
		return writ_err_set(err, WRIT_ERR_PIN,
		                    "environment variable %s (the token PIN) is not set", name);
	n = strlen(v);
	if (n > P11_PIN_MAX) {
		OPENSSL_cleanse(v, n);
		unsetenv(name);
		return writ_err_set(err, WRIT_ERR_PIN, "%s is over %d bytes", name, P11_PIN_MAX);
	}
	size = (size_t)sysconf(_SC_PAGESIZE);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return writ_err_set(err, WRIT_ERR_NOMEM, "cannot map memory for the PIN");
	(void)mlock(p, size);
	(void)madvise(p, size, MADV_DONTDUMP);
	memcpy(p, v, n);
	OPENSSL_cleanse(v, n);
	unsetenv(name);
	pin->buf = p;
	pin->len = n;
	pin->size = size;
	return WRIT_OK;
}

void p11_pin_mem_wipe(p11_pin_mem *pin)
{
	if (pin->buf == NULL)
		return;
	OPENSSL_cleanse(pin->buf, pin->size);
	munlock(pin->buf, pin->size);
	munmap(pin->buf, pin->size);
	memset(pin, 0, sizeof(*pin));
}

/* SoftHSM never locks a PIN (FACTS.md), so we stop before the last try
 * on tokens that count: one more wrong PIN would lock the token. */
static writ_rc token_pin_state(p11_ctx *ctx, writ_err *err)
{
	CK_TOKEN_INFO ti;
	CK_RV rv;

	rv = ctx->f->C_GetTokenInfo(ctx->slot, &ti);
	if (rv != CKR_OK)
		return p11_err_rv(err, WRIT_ERR_HSM, "C_GetTokenInfo", rv);
	if (ti.flags & CKF_USER_PIN_LOCKED)
		return writ_err_set(err, WRIT_ERR_PIN, "the token's user PIN is locked");
	if (ti.flags & CKF_USER_PIN_FINAL_TRY)
		return writ_err_set(err, WRIT_ERR_PIN,
		                    "the token's user PIN is at its final try: not logging in "
		                    "(fix the PIN, then log in by hand)");
	return WRIT_OK;
}

static writ_rc login_with(p11_ctx *ctx, CK_SESSION_HANDLE s, const char *pin, size_t len,
                          writ_err *err)
{
	CK_RV rv = ctx->f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, len);

	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return WRIT_OK;
	/* Never retried: each wrong try brings a counting token nearer lockout. */
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED ||
	    rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE) {
		writ_err_set(err, WRIT_ERR_PIN, "token refused the PIN (%s, 0x%lx)",
		             p11_rv_name(rv), (unsigned long)rv);
		if (err != NULL)
			err->lib_code = rv;
		return WRIT_ERR_PIN;
	}
	return p11_err_rv(err, WRIT_ERR_HSM, "C_Login", rv);
}

writ_rc p11_login(p11_ctx *ctx, CK_SESSION_HANDLE s, writ_err *err)
{
	char buf[P11_PIN_MAX + 1];
	size_t len = 0;
	writ_rc rc;

	rc = token_pin_state(ctx, err);
	if (rc != WRIT_OK)
		return rc;
	if (ctx->pin.buf != NULL)
		return login_with(ctx, s, ctx->pin.buf, ctx->pin.len, err);
	/* Re-read at every login: the file may have been rotated. */
	rc = p11_pin_read_file(ctx->pin_file, buf, &len, err);
	if (rc == WRIT_OK)
		rc = login_with(ctx, s, buf, len, err);
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}
