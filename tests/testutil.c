/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include "p11.h"

int tu_failures;
int tu_checks;

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

int tu_finish(void)
{
	fprintf(stderr, "%d checks, %d failed\n", tu_checks, tu_failures);
	return tu_failures == 0 ? 0 : 1;
}

char *tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(1);
	}
	buf = malloc((size_t)n + 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(1);
	}
	buf[n] = '\0';
	fclose(f);
	if (len != NULL)
		*len = (size_t)n;
	return buf;
}

const char *tu_data(const char *name)
{
	static char path[1024];
	const char *d = getenv("WRIT_TESTDATA");

	snprintf(path, sizeof(path), "%s/%s", d != NULL ? d : "tests/data", name);
	return path;
}

int tu_token_new(tu_token *t)
{
	unsigned char rnd[12];
	char pin[25], so[25];
	FILE *f;
	writ_err err = {0};
	int fd, i;

	memset(t, 0, sizeof(*t));
	t->module =
	    getenv("WRIT_TEST_MODULE") != NULL ? getenv("WRIT_TEST_MODULE") : SOFTHSM_MODULE;
	t->label = "writ-test";
	if (access(t->module, R_OK) != 0) {
		fprintf(stderr, "SKIP: no PKCS#11 module at %s\n", t->module);
		return 77;
	}
	snprintf(t->dir, sizeof(t->dir), "/tmp/writ-test-XXXXXX");
	if (mkdtemp(t->dir) == NULL)
		return 1;
	snprintf(t->tokens, sizeof(t->tokens), "%s/tokens", t->dir);
	snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir);
	snprintf(t->pin_file, sizeof(t->pin_file), "%s/user.pin", t->dir);
	if (mkdir(t->tokens, 0700) != 0 || (f = fopen(t->conf, "w")) == NULL)
		return 1;
	fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
	        t->tokens);
	fclose(f);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return 1;
	for (i = 0; i < 12; i++) {
		snprintf(pin + 2 * i, 3, "%02x", rnd[i]);
		snprintf(so + 2 * i, 3, "%02x", rnd[11 - i]);
	}
	fd = open(t->pin_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, pin, strlen(pin)) != (ssize_t)strlen(pin) || close(fd) != 0)
		return 1;
	if (p11_token_init(t->module, t->conf, t->label, so, pin, &err) != WRIT_OK) {
		fprintf(stderr, "token init: %s\n", err.msg);
		return 1;
	}
	return 0;
}

void tu_token_destroy(tu_token *t)
{
	char cmd[400];

	if (t->dir[0] == '\0' || strncmp(t->dir, "/tmp/writ-test-", 15) != 0)
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", t->dir);
}
