/*
 * main.c - the writ command: global options, then one subcommand from the
 * table (the wireguard-tools shape: <group>_main(argc, argv)).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
    {"token", token_main, "initialise a development SoftHSM2 token"},
    {"key", key_main, "generate and list signing keys in the HSM"},
    {"jwks", jwks_main, "print the public JWK Set"},
    {"mint", mint_main, "sign an access token (operator, tests, break-glass)"},
    {"verify", verify_main, "verify a token offline against a JWK Set"},
    {"assert", assert_main, "make an agent assertion from a private key file"},
    {"exchange", exchange_main, "exchange an assertion for a token at the issuer"},
    {"agent", agent_main, "register, list, disable, enable and revoke agents"},
    {"policy", policy_main, "check a policy file, explain a decision"},
    {"audit", audit_main, "verify the audit log's hash chain, query it"},
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: writ [-c CONFIG] COMMAND [ARGS]\n\n"
	           "Runtime credentials for AI agents: HSM-signed, short-lived, scoped JWTs.\n\n"
	           "commands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\nCONFIG defaults to $WRIT_CONFIG, else $WRIT_HOME/writ.conf "
	           "(WRIT_HOME defaults to ~/.local/share/writ).\n"
	           "Run 'writ COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
	size_t i;

	argv++, argc--;
	while (argc > 0 && argv[0][0] == '-') {
		if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if ((strcmp(argv[0], "-c") == 0 || strcmp(argv[0], "--config") == 0) && argc > 1) {
			cli_config_path = argv[1];
			argv += 2, argc -= 2;
			continue;
		}
		fprintf(stderr, "writ: unknown option %s\n", argv[0]);
		usage(stderr);
		return 2;
	}
	if (argc == 0) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[0], commands[i].name) == 0)
			return commands[i].fn(argc, argv);
	fprintf(stderr, "writ: unknown command \"%s\" (try writ --help)\n", argv[0]);
	return 2;
}
