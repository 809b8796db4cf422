/*
 * cmd_jwks.c - writ jwks: the public JWK Set of the token's writ keys.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int jwks_main(int argc, char **argv)
{
	writ_config cfg;
	writ_err err = {0};
	keyring *kr = NULL;
	p11_ctx *p11;
	writ_rc rc;
	char *s;

	if (cli_wants_help(argc, argv)) {
		printf("usage: writ jwks\n\nPrint the RFC 7517 JWK Set of the token's writ keys "
		       "(kid = RFC 7638 thumbprint, alg pinned, use \"sig\").\n");
		return 0;
	}
	if (argc > 1)
		cli_die("jwks: unexpected argument \"%s\"", argv[1]);
	cli_load_config(&cfg);
	p11 = cli_open_hsm(&cfg);
	rc = keyring_load(p11, &kr, &err);
	if (rc != WRIT_OK)
		cli_die_err("jwks", rc, &err);
	if (keyring_count(kr) == 0)
		cli_die("jwks: the token holds no writ keys (writ key generate)");
	s = keyring_jwks_json(kr);
	if (s == NULL)
		cli_die("jwks: out of memory");
	printf("%s\n", s);
	free(s);
	keyring_free(kr);
	p11_close(p11);
	return 0;
}
