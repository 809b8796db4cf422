/*
 * testutil.h - a tiny test harness and fixtures shared by writ's C tests.
 *
 * CHECK records a failure and continues; REQUIRE stops the test. Each test
 * file's main() runs its cases with RUN(fn) and returns tu_finish().
 */
#ifndef WRIT_TESTUTIL_H
#define WRIT_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writ/writ.h"

extern int tu_failures;
extern int tu_checks;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		tu_checks++;                                                                       \
		if (!(cond)) {                                                                     \
			tu_failures++;                                                             \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
		}                                                                                  \
	} while (0)

#define CHECK_RC(expr, want)                                                                       \
	do {                                                                                       \
		writ_rc rc_ = (expr);                                                              \
		tu_checks++;                                                                       \
		if (rc_ != (want)) {                                                               \
			tu_failures++;                                                             \
			fprintf(stderr, "%s:%d: %s = %s (%d), want %s\n", __FILE__, __LINE__,      \
			        #expr, writ_strerror(rc_), rc_, #want);                            \
		}                                                                                  \
	} while (0)

#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		tu_checks++;                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		int before_ = tu_failures;                                                         \
		fn();                                                                              \
		fprintf(stderr, "%s %s\n", tu_failures == before_ ? "ok  " : "FAIL", #fn);         \
	} while (0)

int tu_finish(void);

/* Read a whole file (malloc'd, NUL-terminated); exits the test on error. */
char *tu_read_file(const char *path, size_t *len);
/* $WRIT_TESTDATA/name, in a static buffer. */
const char *tu_data(const char *name);

/*
 * A fresh SoftHSM2 token in a new temporary directory: writes
 * dir/softhsm2.conf and dir/tokens/, initialises a token labelled
 * "writ-test" with a random PIN in dir/user.pin (0600). Returns 77 (skip)
 * if SoftHSM2 is not installed, 0 on success. The fields point into the
 * struct.
 */
typedef struct tu_token {
	char dir[256];
	char conf[300];
	char pin_file[300];
	char tokens[300];
	const char *module;
	const char *label;
} tu_token;
int tu_token_new(tu_token *t);
/* rm -rf the directory. */
void tu_token_destroy(tu_token *t);

#endif
