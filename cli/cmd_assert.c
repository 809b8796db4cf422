/*
 * cmd_assert.c - writ assert: an agent's attestation (SPEC s.5, RFC 7523
 * style): a short-lived JWT signed with the agent's own private key, with
 * iss = sub = agent id, aud = the issuer URL and a fresh jti.
 *
 * This runs on the agent's side with an ordinary key file, so libjwt does
 * the signing (it handles PEM keys and ES256/ES384/RS256 well; it cannot
 * do PS256 or EdDSA, which an agent then signs with its own tooling).
 */
#include <errno.h>
#include <getopt.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ assert --agent ID --key PRIVATE.pem --aud ISSUER_URL\n"
	           "                   [--alg ES256|ES384|RS256] [--kid KID] [--ttl SECONDS]\n\n"
	           "Print an agent assertion for POST /token: iss = sub = ID, aud = ISSUER_URL,\n"
	           "iat now, exp after TTL (default 60, max 300), a random 128-bit jti.\n"
	           "The key file holds the agent's private key (PEM); it is wiped from memory\n"
	           "after signing.\n");
}

static jwt_alg_t jwt_alg_of(writ_alg a)
{
	switch (a) {
	case WRIT_ALG_ES256: return JWT_ALG_ES256;
	case WRIT_ALG_ES384: return JWT_ALG_ES384;
	case WRIT_ALG_RS256: return JWT_ALG_RS256;
	default: return JWT_ALG_NONE;
	}
}

int assert_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"agent", required_argument, 0, 'a'}, {"key", required_argument, 0, 'k'},
	    {"aud", required_argument, 0, 'u'},   {"alg", required_argument, 0, 'A'},
	    {"kid", required_argument, 0, 'K'},   {"ttl", required_argument, 0, 't'},
	    {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
	const char *agent = NULL, *keyfile = NULL, *aud = NULL, *kid = NULL;
	writ_alg alg = WRIT_ALG_ES256;
	unsigned char rnd[16];
	char jti[32], *key, *out;
	size_t keylen;
	long ttl = 60;
	char *end;
	time_t now = time(NULL);
	jwt_t *jwt = NULL;
	int c, bad;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a': agent = optarg; break;
		case 'k': keyfile = optarg; break;
		case 'u': aud = optarg; break;
		case 'K': kid = optarg; break;
		case 'A': alg = writ_alg_from_name(optarg); break;
		case 't':
			/* Whole seconds only: "5m" is not 5 seconds, "1e2" not 1. */
			errno = 0;
			ttl = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0')
				cli_die("assert: --ttl \"%s\" is not a whole number of seconds",
				        optarg);
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (agent == NULL || keyfile == NULL || aud == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (jwt_alg_of(alg) == JWT_ALG_NONE)
		cli_die("assert: --alg must be ES256, ES384 or RS256");
	if (ttl < 1 || ttl > 300)
		cli_die("assert: --ttl must be 1..300 seconds (SPEC: at most 5 minutes)");
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		cli_die("assert: no randomness");
	b64url_encode(rnd, sizeof(rnd), jti);
	key = cli_read_input(keyfile, 64 * 1024, &keylen);
	bad = jwt_new(&jwt) != 0 ||
	      jwt_set_alg(jwt, jwt_alg_of(alg), (unsigned char *)key, (int)keylen) != 0;
	OPENSSL_cleanse(key, keylen);
	free(key);
	if (bad)
		cli_die("assert: %s is not a %s private key in PEM form", keyfile,
		        writ_alg_name(alg));
	bad = jwt_add_grant(jwt, "iss", agent) || jwt_add_grant(jwt, "sub", agent) ||
	      jwt_add_grant(jwt, "aud", aud) || jwt_add_grant(jwt, "jti", jti) ||
	      jwt_add_grant_int(jwt, "iat", (long)now) ||
	      jwt_add_grant_int(jwt, "exp", (long)now + ttl) ||
	      (kid != NULL && jwt_add_header(jwt, "kid", kid));
	out = bad ? NULL : jwt_encode_str(jwt);
	jwt_free(jwt); /* libjwt zeroes its key copy (jwt_scrub_key) */
	if (out == NULL)
		cli_die("assert: signing failed");
	printf("%s\n", out);
	OPENSSL_cleanse(out, strlen(out)); /* a bearer assertion until exp */
	free(out);
	return 0;
}
