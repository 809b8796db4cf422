/*
 * cmd_mint.c - writ mint: sign an access token directly with the HSM key.
 * For operators, tests and break-glass; agents use the issuer's /token.
 */
#include <getopt.h>
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
	           "Sign a writ access token (typ at+jwt) with the newest key of ALG (default:\n"
	           "the config's signing_alg) and print it. TTL defaults to token_ttl and may\n"
	           "not exceed token_ttl_max.\n");
}

/* The store's active key for alg (SPEC s.2: pending and retired keys never
 * sign); the newest HSM key only when there is no state database yet. */
static const keyring_entry *active_key(const writ_config *cfg, const keyring *kr, writ_alg alg)
{
	const keyring_entry *key = NULL;
	store_sk *rows = NULL;
	store *st = NULL;
	size_t n = 0, i;

	if (store_open(cfg->state_db, 0, &st, NULL) != WRIT_OK)
		return keyring_newest(kr, alg);
	if (store_sk_list(st, &rows, &n, NULL) == WRIT_OK)
		for (i = 0; i < n; i++)
			if (rows[i].alg == alg && rows[i].state == STORE_SK_ACTIVE)
				key = keyring_find(kr, rows[i].kid);
	free(rows);
	store_close(st);
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
	if (kid != NULL)
		key = keyring_find(kr, kid);
	else {
		writ_alg alg = alg_s != NULL ? writ_alg_from_name(alg_s) : cfg.signing_alg;
		if (alg == WRIT_ALG_NONE)
			cli_die("mint: unknown algorithm \"%s\"", alg_s);
		key = active_key(&cfg, kr, alg);
	}
	if (key == NULL)
		cli_die("mint: no such signing key in the token (writ key list)");
	rc = mint_token(p11, key, &req, &out, &err);
	if (rc != WRIT_OK)
		cli_die_err("mint", rc, &err);
	printf("%s\n", out.token);
	free(out.token);
	keyring_free(kr);
	p11_close(p11);
	return 0;
}
