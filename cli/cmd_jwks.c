/*
 * cmd_jwks.c - writ jwks: the JWK Set the issuer publishes (pending,
 * active and retired keys, SPEC s.2), or with --hsm every writ key the
 * token holds, whatever its state (for operators and tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "store.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ jwks [--hsm]\n\n"
	           "Print the RFC 7517 JWK Set the issuer publishes: the pending, active and\n"
	           "retired keys (kid = RFC 7638 thumbprint, alg pinned, use \"sig\").\n"
	           "--hsm: every writ key in the token instead, whatever its state.\n");
}

/* Is kid published (pending, active or retired in the store)? */
static int published(const store_sk *rows, size_t n, const char *kid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(rows[i].kid, kid) == 0)
			return rows[i].state == STORE_SK_PENDING ||
			       rows[i].state == STORE_SK_ACTIVE ||
			       rows[i].state == STORE_SK_RETIRED;
	return 0;
}

int jwks_main(int argc, char **argv)
{
	int all = argc == 2 && strcmp(argv[1], "--hsm") == 0;
	json_t *set, *arr;
	store_sk *rows = NULL;
	size_t nrows = 0, i;
	writ_config cfg;
	writ_err err = {0};
	keyring *kr = NULL;
	store *st = NULL;
	p11_ctx *p11;
	writ_rc rc;
	char *s;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	if (argc > 1 + all)
		cli_die("jwks: unexpected argument \"%s\" (try --help)", argv[1]);
	cli_load_config(&cfg);
	set = json_object();
	arr = json_array();
	if (set == NULL || arr == NULL)
		cli_die("jwks: out of memory");
	if (!all && ((rc = store_open(cfg.state_db, 0, &st, &err)) != WRIT_OK ||
	             (rc = store_sk_list(st, &rows, &nrows, &err)) != WRIT_OK))
		cli_die_err("jwks: key states", rc, &err);
	store_close(st);
	p11 = cli_open_hsm(&cfg);
	rc = keyring_load(p11, &kr, &err);
	if (rc != WRIT_OK)
		cli_die_err("jwks", rc, &err);
	for (i = 0; i < keyring_count(kr); i++) {
		const keyring_entry *e = keyring_get(kr, i);
		if (all || published(rows, nrows, writ_jwk_kid(e->jwk)))
			json_array_append_new(arr, writ_jwk_to_jansson(e->jwk));
	}
	if (json_array_size(arr) == 0)
		cli_die("jwks: no published keys (writ key generate)");
	json_object_set(set, "keys", arr);
	s = json_dumps(set, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (s == NULL)
		cli_die("jwks: out of memory");
	printf("%s\n", s);
	free(s);
	free(rows);
	json_decref(arr);
	json_decref(set);
	keyring_free(kr);
	p11_close(p11);
	return 0;
}
