/*
 * util.c - helpers shared by the writ subcommands.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char *cli_config_path;

void cli_die(const char *fmt, ...)
{
	va_list ap;

	fputs("writ: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void cli_die_err(const char *what, writ_rc rc, const writ_err *err)
{
	if (err != NULL && err->msg[0] != '\0')
		cli_die("%s: %s", what, err->msg);
	cli_die("%s: %s", what, writ_strerror(rc));
}

const char *cli_home(void)
{
	static char buf[1024];
	const char *h = getenv("WRIT_HOME");

	if (h != NULL && h[0] != '\0')
		return h;
	h = getenv("HOME");
	snprintf(buf, sizeof(buf), "%s/.local/share/writ", h != NULL ? h : ".");
	return buf;
}

int cli_config_available(void)
{
	char path[1100];

	if (cli_config_path != NULL || getenv("WRIT_CONFIG") != NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/writ.conf", cli_home());
	return access(path, F_OK) == 0;
}

void cli_load_config(writ_config *cfg)
{
	static char path[1100];
	writ_err err = {0};
	writ_rc rc;

	if (cli_config_path == NULL)
		cli_config_path = getenv("WRIT_CONFIG");
	if (cli_config_path == NULL || cli_config_path[0] == '\0') {
		snprintf(path, sizeof(path), "%s/writ.conf", cli_home());
		cli_config_path = path;
		if (access(path, F_OK) != 0)
			cli_die("no configuration at %s: run 'writ token init' or pass -c FILE",
			        path);
	}
	rc = config_load(cli_config_path, cfg, &err);
	if (rc != WRIT_OK)
		cli_die_err("config", rc, &err);
}

p11_ctx *cli_open_hsm(const writ_config *cfg)
{
	p11_cfg pc;
	p11_ctx *ctx = NULL;
	writ_err err = {0};
	writ_rc rc;

	config_p11(cfg, &pc);
	if (pc.pin_file == NULL && pc.pin_env == NULL)
		cli_die("%s: set pin_file or pin_env to log in to the token", cfg->path);
	rc = p11_open(&pc, &ctx, &err);
	if (rc != WRIT_OK)
		cli_die_err("hsm", rc, &err);
	return ctx;
}

char *cli_read_input(const char *path, size_t max, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL)
		cli_die("%s: %s", path, strerror(errno));
	buf = malloc(max + 1);
	if (buf == NULL)
		cli_die("out of memory");
	n = fread(buf, 1, max + 1, f);
	if (ferror(f))
		cli_die("%s: read error", path);
	if (f != stdin)
		fclose(f);
	if (n > max)
		cli_die("%s: larger than %zu bytes", path, max);
	buf[n] = '\0';
	*len = n;
	return buf;
}

int cli_wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	return 0;
}

/* A kid as writ makes them: an RFC 7638 SHA-256 thumbprint, 43 base64url
 * characters. */
static int kid_shaped(const char *a)
{
	size_t i;

	for (i = 0; a[i] != '\0'; i++)
		if (!isalnum((unsigned char)a[i]) && a[i] != '-' && a[i] != '_')
			return 0;
	return i == 43;
}

int cli_kid_args(int argc, char **argv, char **out, int cap)
{
	int i, n = 0, nd = 0;

	if (argc + 2 > cap)
		cli_die("too many arguments");
	for (i = 0; i < argc; i++)
		if (i == 0 || argv[i][0] != '-' || !kid_shaped(argv[i]))
			out[n++] = argv[i];
	for (i = 1; i < argc; i++)
		if (argv[i][0] == '-' && kid_shaped(argv[i])) {
			if (nd++ == 0)
				out[n++] = (char *)"--";
			out[n++] = argv[i];
		}
	out[n] = NULL;
	return n;
}
