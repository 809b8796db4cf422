/*
 * cmd_key.c - writ key generate | list: signing keys inside the HSM.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ key generate [--alg ALG] [--json]\n"
		   "       writ key list [--json]\n\n"
		   "generate: make a key pair inside the token (non-extractable, sensitive).\n"
		   "          ALG: ES256 (default from config), ES384, RS256, PS256, EdDSA.\n"
		   "list:     the token's writ keys: kid (RFC 7638 thumbprint), alg, label.\n");
}

static int key_generate(int argc, char **argv, const writ_config *cfg)
{
	static const struct option opts[] = {{"alg", required_argument, 0, 'a'},
					     {"json", no_argument, 0, 'j'},
					     {0, 0, 0, 0}};
	writ_alg alg = cfg->signing_alg;
	writ_jwk *jwk = NULL;
	writ_err err = {0};
	p11_key key;
	p11_ctx *p11;
	writ_rc rc;
	int c, json = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'a' && (alg = writ_alg_from_name(optarg)) == WRIT_ALG_NONE)
			cli_die("key generate: unknown algorithm \"%s\" (ES256, ES384, RS256, "
				"PS256, EdDSA)",
				optarg);
		else if (c == 'j')
			json = 1;
		else if (c != 'a')
			return 2;
	}
	p11 = cli_open_hsm(cfg);
	rc = p11_key_generate(p11, alg, &key, &err);
	if (rc != WRIT_OK)
		cli_die_err("key generate", rc, &err);
	rc = writ_jwk_from_pkey(key.pub, alg, &jwk, &err);
	if (rc != WRIT_OK)
		cli_die_err("key generate", rc, &err);
	if (json)
		printf("{\"kid\":\"%s\",\"alg\":\"%s\",\"label\":\"%s\"}\n", writ_jwk_kid(jwk),
		       writ_alg_name(alg), key.label);
	else
		printf("%s %s %s\n", writ_jwk_kid(jwk), writ_alg_name(alg), key.label);
	writ_jwk_free(jwk);
	EVP_PKEY_free(key.pub);
	p11_close(p11);
	return 0;
}

static int key_list(int argc, char **argv, const writ_config *cfg)
{
	int json = argc > 1 && strcmp(argv[1], "--json") == 0;
	writ_err err = {0};
	keyring *kr = NULL;
	json_t *arr;
	p11_ctx *p11;
	writ_rc rc;
	size_t i;

	if (argc > 1 + json)
		cli_die("key list: unexpected argument \"%s\"", argv[1 + json]);
	p11 = cli_open_hsm(cfg);
	rc = keyring_load(p11, &kr, &err);
	if (rc != WRIT_OK)
		cli_die_err("key list", rc, &err);
	arr = json_array();
	for (i = 0; i < keyring_count(kr); i++) {
		const keyring_entry *e = keyring_get(kr, i);
		if (json)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "kid",
							     writ_jwk_kid(e->jwk), "alg",
							     writ_alg_name(writ_jwk_alg(e->jwk)),
							     "label", e->label));
		else
			printf("%s %-5s %s\n", writ_jwk_kid(e->jwk),
			       writ_alg_name(writ_jwk_alg(e->jwk)), e->label);
	}
	if (json) {
		char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("%s\n", s != NULL ? s : "[]");
		free(s);
	}
	json_decref(arr);
	keyring_free(kr);
	p11_close(p11);
	return 0;
}

int key_main(int argc, char **argv)
{
	writ_config cfg;

	if (argc < 2 || cli_wants_help(argc, argv)) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	cli_load_config(&cfg);
	if (strcmp(argv[1], "generate") == 0)
		return key_generate(argc - 1, argv + 1, &cfg);
	if (strcmp(argv[1], "list") == 0)
		return key_list(argc - 1, argv + 1, &cfg);
	cli_die("key: unknown subcommand \"%s\" (generate, list)", argv[1]);
}
