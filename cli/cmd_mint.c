/*
 * cmd_mint.c - writ mint: sign an access token directly with the HSM key.
 * For operators, tests and break-glass; agents use the issuer's /token.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mint.h"
#include "store.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ mint --sub AGENT --aud SERVICE --scope \"A B\" [--ttl SECONDS]\n"
	           "                 [--alg ALG | --kid KID]\n\n"
	           "Sign a writ access token (typ at+jwt) with the active key of ALG (default:\n"
	           "the config's signing_alg), or --kid if that key is active, and print it.\n"
	           "TTL defaults to token_ttl and may not exceed token_ttl_max. Bypasses policy:\n"
	           "the token is recorded (token_minted, with who minted it) in the store's\n"
	           "audit outbox before it is printed, and reaches the audit log through the\n"
	           "issuer.\n");
}

/* The store's active key: kid's if kid is given, else alg's (SPEC s.2:
 * pending, retired, removed and revoked keys never sign). */
static const keyring_entry *active_key(store *st, const keyring *kr, const char *kid, writ_alg alg)
{
	const keyring_entry *key = NULL;
	store_sk *rows = NULL;
	writ_err err = {0};
	size_t n = 0, i;
	writ_rc rc = store_sk_list(st, &rows, &n, &err);

	if (rc != WRIT_OK)
		cli_die_err("mint", rc, &err);
	for (i = 0; i < n; i++) {
		if (kid != NULL && strcmp(rows[i].kid, kid) == 0 &&
		    rows[i].state != STORE_SK_ACTIVE)
			cli_die("mint: key %s is %s: only an active key signs", kid,
			        store_sk_state_name(rows[i].state));
		if (rows[i].state == STORE_SK_ACTIVE &&
		    (kid != NULL ? strcmp(rows[i].kid, kid) == 0 : rows[i].alg == alg))
			key = keyring_find(kr, rows[i].kid);
	}
	free(rows);
	return key;
}

int mint_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"sub", required_argument, 0, 's'},   {"aud", required_argument, 0, 'a'},
	    {"scope", required_argument, 0, 'S'}, {"ttl", required_argument, 0, 't'},
	    {"alg", required_argument, 0, 'A'},   {"kid", required_argument, 0, 'k'},
	    {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
	const char *kid = NULL, *alg_s = NULL;
	mint_req req = {0};
	mint_out out;
	writ_config cfg;
	writ_err err = {0};
	keyring *kr = NULL;
	const keyring_entry *key;
	store *st = NULL;
	writ_alg alg;
	p11_ctx *p11;
	writ_rc rc;
	long ttl = -1;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': req.sub = optarg; break;
		case 'a': req.aud = optarg; break;
		case 'S': req.scope = optarg; break;
		case 'A': alg_s = optarg; break;
		case 'k': kid = optarg; break;
		case 't':
			ttl = strtol(optarg, &end, 10);
			if (*end != '\0' || ttl <= 0)
				cli_die("mint: --ttl must be a positive number of seconds");
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (req.sub == NULL || req.aud == NULL || req.scope == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	cli_load_config(&cfg);
	/* The store says which key is active and takes the audit record: no
	 * store, no token (it would be unaccounted for). */
	rc = store_open(cfg.state_db, 0, &st, &err);
	if (rc != WRIT_OK)
		cli_die_err("mint: state database", rc, &err);
	if (ttl < 0)
		ttl = cfg.token_ttl;
	if (ttl > (long)cfg.token_ttl_max)
		cli_die("mint: --ttl %ld is above token_ttl_max (%u s)", ttl, cfg.token_ttl_max);
	req.ttl = (unsigned)ttl;
	req.iss = cfg.issuer;
	p11 = cli_open_hsm(&cfg);
	rc = keyring_load(p11, &kr, &err);
	if (rc != WRIT_OK)
		cli_die_err("mint", rc, &err);
	alg = alg_s != NULL ? writ_alg_from_name(alg_s) : cfg.signing_alg;
	if (alg == WRIT_ALG_NONE)
		cli_die("mint: unknown algorithm \"%s\"", alg_s);
	key = active_key(st, kr, kid, alg);
	if (key == NULL)
		cli_die("mint: no active %s key in the token and the store (writ key list)",
		        kid != NULL ? kid : writ_alg_name(alg));
	rc = mint_token(p11, key, &req, &out, &err);
	if (rc == WRIT_OK)
		rc = store_outbox_minted(st, req.sub, req.aud, req.scope, out.jti,
		                         writ_jwk_kid(key->jwk), out.exp, &err);
	if (rc != WRIT_OK) {
		if (out.token != NULL)
			OPENSSL_cleanse(out.token, strlen(out.token));
		free(out.token);
		cli_die_err("mint", rc, &err);
	}
	printf("%s\n", out.token);
	free(out.token);
	keyring_free(kr);
	store_close(st);
	p11_close(p11);
	return 0;
}
