/*
 * cmd_verify.c - writ verify: check a token offline against a JWK Set, as
 * a target service would. Prints the claims on success; on failure exits 1
 * with one line naming the reason. With --jwks-url it goes through
 * libwrit's verifier (verifier.h), exactly as a service linking it does.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "writ/verifier.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: writ verify --jwks FILE|- --iss ISSUER --aud AUDIENCE [--typ TYP]\n"
	    "                   [--leeway SECONDS] [--max-ttl SECONDS] [TOKEN|-]\n"
	    "       writ verify --jwks-url URL --iss ISSUER --aud AUDIENCE [--ca-file FILE]\n"
	    "                   [--allow-http] [--leeway SECONDS] [--max-ttl SECONDS] [TOKEN|-]\n\n"
	    "Verify a writ access token offline. TOKEN defaults to - (stdin): prefer it,\n"
	    "since a bearer token on a command line is visible to other local users.\n"
	    "--iss and --aud are required: a token is valid only for the issuer and the\n"
	    "audience that expect it (RFC 9068 s.4), and \"sub\" must be present.\n"
	    "--typ defaults to at+jwt; --leeway to 30 (max 60); --max-ttl to 3600.\n"
	    "--jwks-url fetches the issuer's JWK Set through libwrit's verifier, as a\n"
	    "target service does; it needs --iss and --aud, and the token type is always\n"
	    "at+jwt. The URL is https://, or http:// to a loopback host; --allow-http lets\n"
	    "plain http:// reach another host (only where something else protects the hop).\n");
}

static unsigned parse_uint(const char *s, const char *what, unsigned max)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*end != '\0' || s[0] == '\0' || s[0] == '-' || v > max)
		cli_die("verify: %s must be an integer 0..%u", what, max);
	return (unsigned)v;
}

static char *read_token(const char *tok_path, size_t *tlen)
{
	char *tok;

	if (strcmp(tok_path, "-") == 0) {
		tok = cli_read_input("-", WRIT_TOKEN_MAX_BYTES + 2, tlen);
		while (*tlen > 0 && (tok[*tlen - 1] == '\n' || tok[*tlen - 1] == '\r'))
			tok[--*tlen] = '\0';
	} else {
		tok = strdup(tok_path);
		*tlen = tok != NULL ? strlen(tok) : 0;
	}
	if (tok == NULL)
		cli_die("out of memory");
	return tok;
}

/* The library path: fetch the JWK Set from url, then verify. */
static writ_rc verify_url(const char *url, const char *ca_file, int allow_http,
                          const writ_verify_opts *vo, const char *tok, size_t tlen,
                          writ_claims **claims, writ_err *err)
{
	writ_verifier_cfg cfg = {.issuer = vo->iss,
	                         .audience = vo->aud,
	                         .jwks_url = url,
	                         .ca_file = ca_file,
	                         .leeway = vo->leeway,
	                         .max_ttl = vo->max_ttl,
	                         .allow_http = allow_http};
	writ_verifier *v = NULL;
	writ_rc rc;

	if (strcmp(vo->typ, "at+jwt") != 0)
		cli_die("verify: --jwks-url verifies access tokens only (typ at+jwt)");
	/* The library maps leeway 0 to its default; --leeway 0 is kept as
	 * the smallest it allows rather than silently widened. */
	if (cfg.leeway == 0)
		cfg.leeway = 1;
	if ((rc = writ_verifier_new(&cfg, &v, err)) != WRIT_OK)
		cli_die_err("verify: JWK Set", rc, err);
	rc = writ_verifier_verify(v, tok, tlen, claims, err);
	writ_verifier_free(v);
	return rc;
}

int verify_main(int argc, char **argv)
{
	static const struct option opts[] = {{"jwks", required_argument, 0, 'j'},
	                                     {"iss", required_argument, 0, 'i'},
	                                     {"aud", required_argument, 0, 'a'},
	                                     {"typ", required_argument, 0, 't'},
	                                     {"leeway", required_argument, 0, 'l'},
	                                     {"max-ttl", required_argument, 0, 'm'},
	                                     {"jwks-url", required_argument, 0, 'u'},
	                                     {"ca-file", required_argument, 0, 'C'},
	                                     {"allow-http", no_argument, 0, 'H'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	writ_verify_opts vo = {
	    .typ = "at+jwt", .leeway = 30, .max_ttl = WRIT_TTL_HARD_CAP, .require_sub = 1};
	const char *jwks_path = NULL, *jwks_url = NULL, *ca_file = NULL, *tok_path = "-";
	char *jwks_buf, *tok, *claims_json;
	size_t jlen, tlen;
	writ_jwks *set = NULL;
	writ_claims *claims = NULL;
	writ_err err = {0};
	writ_rc rc;
	int c, allow_http = 0;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': jwks_path = optarg; break;
		case 'H': allow_http = 1; break;
		case 'u': jwks_url = optarg; break;
		case 'C': ca_file = optarg; break;
		case 'i': vo.iss = optarg; break;
		case 'a': vo.aud = optarg; break;
		case 't': vo.typ = optarg; break;
		case 'l': vo.leeway = parse_uint(optarg, "--leeway", WRIT_LEEWAY_MAX); break;
		case 'm': vo.max_ttl = parse_uint(optarg, "--max-ttl", WRIT_TTL_HARD_CAP); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if ((jwks_path == NULL) == (jwks_url == NULL) || argc - optind > 1) {
		usage(stderr);
		return 2;
	}
	if (optind < argc)
		tok_path = argv[optind];
	/* Without them any token the key set signed would pass, whoever it
	 * was made for: another issuer's, another service's. */
	if (vo.iss == NULL || vo.aud == NULL)
		cli_die("verify: --iss and --aud are required (the issuer and audience the token "
		        "must name)");
	if (jwks_url != NULL) {
		tok = read_token(tok_path, &tlen);
		rc = verify_url(jwks_url, ca_file, allow_http, &vo, tok, tlen, &claims, &err);
		OPENSSL_cleanse(tok, tlen);
		free(tok);
		goto done;
	}
	if (strcmp(jwks_path, "-") == 0 && strcmp(tok_path, "-") == 0)
		cli_die("verify: --jwks - and a token on stdin cannot both be read from stdin");
	jwks_buf = cli_read_input(jwks_path, WRIT_JWKS_MAX_BYTES, &jlen);
	rc = writ_jwks_parse(jwks_buf, jlen, WRIT_JWKS_KID_IS_THUMBPRINT, &set, &err);
	free(jwks_buf);
	if (rc != WRIT_OK)
		cli_die_err("verify: JWK Set", rc, &err);
	tok = read_token(tok_path, &tlen);
	rc = writ_verify(set, tok, tlen, &vo, &claims, &err);
	OPENSSL_cleanse(tok, tlen);
	free(tok);
	writ_jwks_free(set);
done:
	if (rc != WRIT_OK)
		cli_die("verify: %s: %s", writ_strerror(rc), err.msg);
	claims_json = writ_claims_json(claims);
	printf("%s\n", claims_json != NULL ? claims_json : "{}");
	free(claims_json);
	writ_claims_free(claims);
	return 0;
}
