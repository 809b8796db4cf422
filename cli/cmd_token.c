/*
 * cmd_token.c - writ token init: a development SoftHSM2 token in writ's
 * own directory, with random PINs in 0600 files (never on a command line:
 * softhsm2-util would need them as arguments, so this goes through
 * PKCS#11 C_InitToken / C_InitPIN instead).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ token init [--dir DIR] [--label LABEL] [--issuer URL]\n\n"
	           "Create a SoftHSM2 token for development in DIR (default $WRIT_HOME,\n"
	           "else ~/.local/share/writ): DIR/softhsm2.conf, DIR/tokens/, random PINs in\n"
	           "DIR/user.pin and DIR/so.pin (mode 0600), and DIR/writ.conf pointing at them.\n"
	           "Production deployments configure their own PKCS#11 module (keys.example).\n");
}

/* What this run has made so far, so that a failure part-way takes all of
 * it back: a token half made (SoftHSM's files written, the PINs or
 * writ.conf not) would otherwise block the next try ("a token labelled
 * writ already exists", "softhsm2.conf: File exists") until someone
 * cleaned up by hand. Only what this run created is removed. */
enum { MADE_CONF, MADE_PIN, MADE_SO, MADE_WRIT, MADE_FILES };
enum { PIN_BUF = 33 }; /* 32 hex digits and the NUL */

typedef struct init_undo {
	const char *dir, *tokens;
	const char *files[MADE_FILES];
	int made_dir, made_tokens, made[MADE_FILES];
	char **before; /* tokens/ entries there before C_InitToken */
	size_t nbefore;
	int listed;
	char *pin, *so; /* the PINs in memory: wiped on every way out */
} init_undo;

static init_undo undo;

static void __attribute__((format(printf, 1, 2), noreturn)) init_die(const char *fmt, ...);

static int listed_before(const char *name)
{
	for (size_t i = 0; i < undo.nbefore; i++)
		if (strcmp(undo.before[i], name) == 0)
			return 1;
	return 0;
}

/* Note tokens/'s entries, so the undo can tell which token directory
 * C_InitToken made. */
static void list_tokens_before(void)
{
	DIR *d = opendir(undo.tokens);
	struct dirent *e;

	if (d == NULL)
		init_die("%s: %s", undo.tokens, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		char **nb = realloc(undo.before, (undo.nbefore + 1) * sizeof(*nb));

		if (nb == NULL || (nb[undo.nbefore] = strdup(e->d_name)) == NULL)
			init_die("out of memory");
		undo.before = nb;
		undo.nbefore++;
	}
	closedir(d);
	undo.listed = 1;
}

/* Remove one token directory SoftHSM made: its files (it keeps no
 * subdirectories), then itself. Nothing is followed through a link. */
static int remove_token_dir(int tfd, const char *name)
{
	int fd = openat(tfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	int rc = 0;

	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    unlinkat(fd, e->d_name, 0) != 0)
			rc = -1;
	closedir(d);
	return unlinkat(tfd, name, AT_REMOVEDIR) != 0 ? -1 : rc;
}

/* Take back what this run made; say what could not be. */
static void undo_all(void)
{
	DIR *d;
	struct dirent *e;

	if (undo.pin != NULL)
		OPENSSL_cleanse(undo.pin, PIN_BUF);
	if (undo.so != NULL)
		OPENSSL_cleanse(undo.so, PIN_BUF);
	if (undo.listed && (d = opendir(undo.tokens)) != NULL) {
		while ((e = readdir(d)) != NULL)
			if (!listed_before(e->d_name) && remove_token_dir(dirfd(d), e->d_name) != 0)
				fprintf(stderr, "writ: token init: could not remove %s/%s: %s\n",
				        undo.tokens, e->d_name, strerror(errno));
		closedir(d);
	}
	for (int i = 0; i < MADE_FILES; i++)
		if (undo.made[i] && unlink(undo.files[i]) != 0)
			fprintf(stderr, "writ: token init: could not remove %s: %s\n",
			        undo.files[i], strerror(errno));
	if (undo.made_tokens)
		(void)rmdir(undo.tokens);
	if (undo.made_dir)
		(void)rmdir(undo.dir);
}

/* cli_die, after taking back what this run made. */
static void __attribute__((format(printf, 1, 2), noreturn)) init_die(const char *fmt, ...)
{
	char msg[PATH_MAX + 512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	undo_all();
	cli_die("%s", msg);
}

/* Create path exclusively, mode 0600, never through a symlink; a partial
 * file is removed again by the undo. */
static void write_new_file(int which, const char *path, const char *data, mode_t mode)
{
	size_t n = strlen(data);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);

	if (fd < 0)
		init_die("%s: %s", path, strerror(errno));
	undo.files[which] = path;
	undo.made[which] = 1;
	if (write(fd, data, n) != (ssize_t)n || fsync(fd) != 0) {
		int e = errno;

		close(fd);
		init_die("%s: write failed: %s", path, e != 0 ? strerror(e) : "short write");
	}
	if (close(fd) != 0)
		init_die("%s: write failed: %s", path, strerror(errno));
}

static void random_pin(char out[PIN_BUF])
{
	unsigned char rnd[16];
	int i;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		init_die("no randomness for the PIN");
	for (i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
	OPENSSL_cleanse(rnd, sizeof(rnd));
}

/* A directory of ours: made 0700 (1), or one that exists (0), is no
 * symlink, is owned by this user and writable by no one else (who could
 * write it could swap the configuration or the token's files). */
static int mkdir_private(const char *path)
{
	struct stat sb;

	if (mkdir(path, 0700) == 0)
		return 1;
	if (errno != EEXIST)
		init_die("%s: %s", path, strerror(errno));
	if (lstat(path, &sb) != 0)
		init_die("%s: %s", path, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		init_die("token init: %s is not a directory (a symlink is not taken)", path);
	if (sb.st_uid != geteuid() || (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		init_die("token init: %s exists, owned by uid %u with mode %04o: it must be this "
		         "user's (%u) and writable by no one else",
		         path, (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777),
		         (unsigned)geteuid());
	return 0;
}

static int token_init(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	                                     {"label", required_argument, 0, 'l'},
	                                     {"issuer", required_argument, 0, 'i'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	const char *dir = cli_home(), *label = "writ", *issuer = "http://127.0.0.1:8080";
	char p_conf[PATH_MAX + 32], p_tok[PATH_MAX + 32], p_pin[PATH_MAX + 32], p_so[PATH_MAX + 32];
	char p_writ[PATH_MAX + 32], buf[PATH_MAX + 256];
	char pin[PIN_BUF], so[PIN_BUF], cfgtext[4096], absdir[PATH_MAX];
	writ_config defaults, check;
	writ_err err = {0};
	writ_rc rc;
	int c, n;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'l': label = optarg; break;
		case 'i': issuer = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || strlen(label) > 32)
		cli_die("token init: unexpected argument or label longer than 32 bytes");
	if (strlen(dir) > 1000)
		cli_die("token init: --dir is over 1000 bytes");
	config_defaults(&defaults);
	/* The configuration this will write, checked by the parser every
	 * command uses, before anything is touched: a label or issuer it
	 * would refuse must not leave an initialised token behind. */
	n = snprintf(cfgtext, sizeof(cfgtext),
	             "# writ configuration written by writ token init (see keys.example).\n"
	             "pkcs11_module = %s\nsofthsm_conf = softhsm2.conf\ntoken_label = %s\n"
	             "pin_file = user.pin\nsigning_alg = ES256\nissuer = %s\n",
	             defaults.pkcs11_module, label, issuer);
	if (n < 0 || (size_t)n >= sizeof(cfgtext))
		cli_die("token init: --issuer is too long");
	for (const char *q = label; *q != '\0'; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			cli_die("token init: --label holds a control character");
	for (const char *q = issuer; *q != '\0'; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f)
			cli_die("token init: --issuer holds a blank or control character");
	config_defaults(&check);
	if (config_parse(cfgtext, strlen(cfgtext), "--label/--issuer", ".", &check, &err) !=
	    WRIT_OK)
		cli_die_err("token init", WRIT_ERR_CONFIG, &err);
	snprintf(p_writ, sizeof(p_writ), "%s/writ.conf", dir);
	if (access(p_writ, F_OK) == 0)
		cli_die("token init: %s exists: this directory is already initialised", p_writ);
	undo.made_dir = mkdir_private(dir);
	undo.dir = dir;
	/* SoftHSM resolves its tokendir against its working directory, which
	 * for a service is not this one. */
	if (realpath(dir, absdir) == NULL)
		init_die("%s: %s", dir, strerror(errno));
	if (strlen(absdir) > 1000)
		init_die("token init: %s is over 1000 bytes", absdir);
	dir = undo.dir = absdir;
	snprintf(p_conf, sizeof(p_conf), "%s/softhsm2.conf", dir);
	snprintf(p_tok, sizeof(p_tok), "%s/tokens", dir);
	snprintf(p_pin, sizeof(p_pin), "%s/user.pin", dir);
	snprintf(p_so, sizeof(p_so), "%s/so.pin", dir);
	snprintf(p_writ, sizeof(p_writ), "%s/writ.conf", dir);
	undo.tokens = p_tok;
	undo.made_tokens = mkdir_private(p_tok);
	snprintf(buf, sizeof(buf),
	         "# SoftHSM2 configuration written by writ token init (development).\n"
	         "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
	         "slots.removable = false\n",
	         p_tok);
	write_new_file(MADE_CONF, p_conf, buf, 0600);
	undo.pin = pin;
	undo.so = so;
	random_pin(pin);
	random_pin(so);
	write_new_file(MADE_PIN, p_pin, pin, 0600);
	write_new_file(MADE_SO, p_so, so, 0600);
	list_tokens_before();
	rc = p11_token_init(defaults.pkcs11_module, p_conf, label, so, pin, &err);
	OPENSSL_cleanse(pin, sizeof(pin));
	OPENSSL_cleanse(so, sizeof(so));
	if (rc != WRIT_OK) {
		/* Nothing half-made stays: the next try starts clean. */
		undo_all();
		cli_die_err("token init", rc, &err);
	}
	/* writ.conf last: while it is missing the directory is not in use, and
	 * a failure to write it takes the token back with everything else. */
	write_new_file(MADE_WRIT, p_writ, cfgtext, 0644);
	for (size_t i = 0; i < undo.nbefore; i++)
		free(undo.before[i]);
	free(undo.before);
	printf("initialised SoftHSM2 token \"%s\" in %s\n"
	       "  config:      %s\n  user PIN:    %s (mode 0600)\n  SO PIN:      %s (mode "
	       "0600)\n"
	       "next: writ -c %s key generate --alg ES256\n",
	       label, dir, p_writ, p_pin, p_so, p_writ);
	return 0;
}

int token_main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "init") == 0)
		return token_init(argc - 1, argv + 1);
	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
