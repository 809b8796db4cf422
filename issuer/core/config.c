/*
 * config.c - strict "key = value" configuration (see config.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "writ_int.h"

typedef enum { T_STR, T_PATH, T_UINT, T_ALG, T_URL, T_LABEL, T_REPLAY, T_YESNO, T_LISTEN } ctype;

typedef struct ckey {
	const char *name;
	ctype type;
	size_t off;  /* offset in writ_config */
	size_t size; /* buffer size for strings */
	unsigned min, max;
} ckey;

writ_rc config_listen_addr(const char *s, struct sockaddr_storage *ss, int *v6, writ_err *err)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;
	size_t hl;

	memset(ss, 0, sizeof(*ss));
	if (colon == NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG, "listen \"%s\": want HOST:PORT", s);
	port = strtoul(colon + 1, &end, 10);
	hl = (size_t)(colon - s);
	if (*end != '\0' || colon[1] == '\0' || port > 65535 || hl == 0 || hl >= sizeof(host))
		return writ_err_set(err, WRIT_ERR_CONFIG, "listen \"%s\": bad port", s);
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		host[hl - 1] = '\0';
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		*v6 = 1;
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) == 1)
			return WRIT_OK;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		*v6 = 0;
		if (inet_pton(AF_INET, host, &a->sin_addr) == 1)
			return WRIT_OK;
	}
	return writ_err_set(err, WRIT_ERR_CONFIG,
	                    "listen \"%s\": host must be an IPv4 address or [IPv6]", s);
}

#define S(f, t) #f, t, offsetof(writ_config, f), sizeof(((writ_config *)0)->f)
static const ckey keys[] = {
    {S(pkcs11_module, T_PATH), 0, 0},
    {S(token_label, T_LABEL), 0, 0},
    {S(pin_file, T_PATH), 0, 0},
    {S(pin_env, T_STR), 0, 0},
    {S(softhsm_conf, T_PATH), 0, 0},
    {S(signing_alg, T_ALG), 0, 0},
    {S(issuer, T_URL), 0, 0},
    {S(token_ttl, T_UINT), 1, WRIT_TTL_HARD_CAP},
    {S(token_ttl_max, T_UINT), 1, WRIT_TTL_HARD_CAP},
    {S(leeway, T_UINT), 0, WRIT_LEEWAY_MAX},
    {S(listen, T_LISTEN), 0, 0},
    {S(state_db, T_PATH), 0, 0},
    {S(policy, T_PATH), 0, 0},
    {S(audit_log, T_PATH), 0, 0},
    {S(tls_cert, T_PATH), 0, 0},
    {S(tls_key, T_PATH), 0, 0},
    {"tls_disable", T_YESNO, offsetof(writ_config, tls_disable), sizeof(int), 0, 0},
    {S(http_threads, T_UINT), 1, 64},
    {S(workers, T_UINT), 0, 256},
    {S(max_connections, T_UINT), 1, 65536},
    {S(conn_timeout, T_UINT), 1, 3600},
    {S(jwks_max_age, T_UINT), 0, 86400},
    {S(checkpoint_every, T_UINT), 1, 1000000},
    {"replay_cache", T_REPLAY, offsetof(writ_config, replay_sqlite), sizeof(int), 0, 0},
    {S(rotation_period, T_UINT), 0, 10u * 366 * 86400},
    {S(key_pending_secs, T_UINT), 0, 30u * 86400},
    {S(key_retired_secs, T_UINT), 0, 30u * 86400},
};
#undef S
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* "127.x.y.z:PORT" or "[::1]:PORT"; anything else (other addresses,
 * names, what the HTTP layer will refuse to parse) counts as not. */
static int listen_is_loopback(const char *listen)
{
	const char *colon = strrchr(listen, ':');
	char host[64];
	struct in_addr a4;
	size_t n;

	if (strncmp(listen, "[::1]:", 6) == 0)
		return 1;
	if (colon == NULL || (n = (size_t)(colon - listen)) >= sizeof(host))
		return 0;
	memcpy(host, listen, n);
	host[n] = '\0';
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

void config_defaults(writ_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->pkcs11_module, sizeof(cfg->pkcs11_module), "%s",
	         "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(cfg->token_label, sizeof(cfg->token_label), "%s", "writ");
	snprintf(cfg->issuer, sizeof(cfg->issuer), "%s", "http://127.0.0.1:8080");
	cfg->signing_alg = WRIT_ALG_ES256;
	cfg->token_ttl = 300;
	cfg->token_ttl_max = WRIT_TTL_HARD_CAP;
	cfg->leeway = 30;
	snprintf(cfg->listen, sizeof(cfg->listen), "%s", "127.0.0.1:8080");
	/* HTTP threads only read requests and write responses: token
	 * requests are decided on the worker pool (workers, default one per
	 * CPU), and a response waiting for its audit record is held while
	 * the thread serves others. Two kept the issuer's throughput with 64
	 * clients (bench/issuer.sh) and JWKS GETs above 80k/s on two cores. */
	cfg->http_threads = 2;
	cfg->max_connections = 1024;
	cfg->conn_timeout = 10;
	cfg->jwks_max_age = 300;
	cfg->checkpoint_every = 1000;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static writ_rc set_value(const ckey *k, const char *v, const char *basedir, writ_config *cfg,
                         const char *where, writ_err *err)
{
	char *dst = (char *)cfg + k->off;
	char *end;
	unsigned long n;
	size_t i;

	switch (k->type) {
	case T_UINT:
		errno = 0;
		n = strtoul(v, &end, 10);
		if (!isdigit((unsigned char)v[0]) || *end != '\0' || errno != 0 || n < k->min ||
		    n > k->max)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: %s must be an integer in %u..%u, got \"%.40s\"",
			                    where, k->name, k->min, k->max, v);
		*(unsigned *)(void *)dst = (unsigned)n;
		return WRIT_OK;
	case T_ALG:
		*(writ_alg *)(void *)dst = writ_alg_from_name(v);
		if (*(writ_alg *)(void *)dst == WRIT_ALG_NONE)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: unknown algorithm \"%.40s\" (ES256, ES384, RS256, "
			                    "PS256, EdDSA)",
			                    where, v);
		return WRIT_OK;
	case T_REPLAY:
		if (strcmp(v, "memory") != 0 && strcmp(v, "sqlite") != 0)
			return writ_err_set(
			    err, WRIT_ERR_CONFIG,
			    "%s: replay_cache must be memory or sqlite, got \"%.40s\"", where, v);
		*(int *)(void *)dst = strcmp(v, "sqlite") == 0;
		return WRIT_OK;
	case T_YESNO:
		if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: %s must be yes or no, got \"%.40s\"", where,
			                    k->name, v);
		*(int *)(void *)dst = strcmp(v, "yes") == 0;
		return WRIT_OK;
	case T_URL: {
		/* The issuer URL goes into every token's iss and is compared
		 * byte for byte by verifiers: a host, and nothing a client
		 * could normalise differently (RFC 8414 s.2: no query or
		 * fragment). */
		size_t skip = strncmp(v, "https://", 8) == 0  ? 8
		              : strncmp(v, "http://", 7) == 0 ? 7
		                                              : 0;
		if (skip == 0)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: %s must be an http:// or https:// URL", where,
			                    k->name);
		if (v[skip] == '\0' || v[skip] == '/' || v[skip] == ':')
			return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s has no host: \"%.60s\"",
			                    where, k->name, v);
		if (strpbrk(v, " ?#\\") != NULL)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: %s may not hold a space, '?', '#' or '\\'", where,
			                    k->name);
		break;
	}
	case T_LISTEN: {
		struct sockaddr_storage ss;
		writ_err le = {0};
		int v6;

		if (config_listen_addr(v, &ss, &v6, &le) != WRIT_OK)
			return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s", where, le.msg);
		break;
	}
	case T_LABEL:
		if (strlen(v) > 32)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: %s is longer than 32 bytes (PKCS#11 limit)", where,
			                    k->name);
		break;
	default: break;
	}
	for (i = 0; v[i] != '\0'; i++)
		if ((unsigned char)v[i] < 0x20)
			return writ_err_set(err, WRIT_ERR_CONFIG, "%s: control character in %s",
			                    where, k->name);
	if (k->type == T_PATH && v[0] != '/' && basedir != NULL) {
		if ((size_t)snprintf(dst, k->size, "%s/%s", basedir, v) >= k->size)
			return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s is too long", where,
			                    k->name);
		return WRIT_OK;
	}
	if ((size_t)snprintf(dst, k->size, "%s", v) >= k->size)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s is too long", where, k->name);
	return WRIT_OK;
}

static writ_rc parse_line(char *line, const char *where, const char *basedir, writ_config *cfg,
                          unsigned char *seen, writ_err *err)
{
	char *eq, *k, *v;
	size_t i;

	line = trim(line);
	if (line[0] == '\0' || line[0] == '#')
		return WRIT_OK;
	eq = strchr(line, '=');
	if (eq == NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: expected \"key = value\"", where);
	*eq = '\0';
	k = trim(line);
	v = trim(eq + 1);
	if (strcmp(k, "pin") == 0 || strcmp(k, "so_pin") == 0)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: a PIN may not be written in the config; use pin_file "
		                    "(mode 0600) or pin_env",
		                    where);
	for (i = 0; i < NKEYS; i++)
		if (strcmp(k, keys[i].name) == 0)
			break;
	if (i == NKEYS)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: unknown key \"%.40s\"", where, k);
	if (seen[i])
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s set twice", where, k);
	seen[i] = 1;
	if (v[0] == '\0')
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s has no value", where, k);
	return set_value(&keys[i], v, basedir, cfg, where, err);
}

/* Index of key name in keys[]. */
static size_t key_index(const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS && strcmp(keys[i].name, name) != 0; i++)
		;
	return i;
}

/*
 * SPEC s.2's publication rule as arithmetic on the settings. A pending key
 * must be in the JWKS for a whole cache lifetime plus clock leeway before
 * it signs, a retired key until every token it signed has expired, and a
 * scheduled rotation must leave room to prepare the next key. Unset
 * windows take the smallest value that satisfies the rule.
 */
static writ_rc check_lifecycle(writ_config *cfg, const unsigned char *seen, const char *name,
                               writ_err *err)
{
	unsigned need_p = cfg->jwks_max_age + cfg->leeway,
	         need_r = cfg->token_ttl_max + cfg->leeway;

	if (!seen[key_index("key_pending_secs")])
		cfg->key_pending_secs = need_p;
	if (!seen[key_index("key_retired_secs")])
		cfg->key_retired_secs = need_r;
	if (cfg->key_pending_secs < need_p)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: key_pending_secs (%u) is below jwks_max_age (%u) + leeway "
		                    "(%u): verifiers could meet a token before its key",
		                    name, cfg->key_pending_secs, cfg->jwks_max_age, cfg->leeway);
	if (cfg->key_retired_secs < need_r)
		return writ_err_set(
		    err, WRIT_ERR_CONFIG,
		    "%s: key_retired_secs (%u) is below token_ttl_max (%u) + leeway "
		    "(%u): a retired key could leave the JWKS before its tokens expire",
		    name, cfg->key_retired_secs, cfg->token_ttl_max, cfg->leeway);
	if (cfg->rotation_period != 0 && cfg->rotation_period <= cfg->key_pending_secs)
		return writ_err_set(
		    err, WRIT_ERR_CONFIG,
		    "%s: rotation_period (%u) must be above key_pending_secs (%u) "
		    "(jwks_max_age %u + leeway %u at least): the next key is published "
		    "key_pending_secs before it signs",
		    name, cfg->rotation_period, cfg->key_pending_secs, cfg->jwks_max_age,
		    cfg->leeway);
	return WRIT_OK;
}

writ_rc config_parse(const char *buf, size_t len, const char *name, const char *basedir,
                     writ_config *cfg, writ_err *err)
{
	unsigned char seen[NKEYS] = {0};
	char line[CONFIG_VALUE_MAX + 128], where[1100];
	size_t pos = 0, lineno = 0;
	writ_rc rc;

	if (len > CONFIG_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: larger than %d bytes", name,
		                    CONFIG_MAX_BYTES);
	if (memchr(buf, '\0', len) != NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: contains a NUL byte", name);
	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - (buf + pos)) : len - pos;

		lineno++;
		snprintf(where, sizeof(where), "%s:%zu", name, lineno);
		if (n >= sizeof(line))
			return writ_err_set(err, WRIT_ERR_CONFIG, "%s: line too long", where);
		memcpy(line, buf + pos, n);
		line[n] = '\0';
		rc = parse_line(line, where, basedir, cfg, seen, err);
		if (rc != WRIT_OK)
			return rc;
		pos += n + 1;
	}
	if (cfg->token_ttl > cfg->token_ttl_max)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: token_ttl (%u) is above token_ttl_max (%u)", name,
		                    cfg->token_ttl, cfg->token_ttl_max);
	rc = check_lifecycle(cfg, seen, name, err);
	if (rc != WRIT_OK)
		return rc;
	if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0'))
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: set both tls_cert and tls_key, or neither", name);
	/* RFC 6749 s.3.2: the token endpoint requires TLS. Plain HTTP is the
	 * development default on loopback; anywhere else it must be asked for. */
	if (cfg->tls_cert[0] == '\0' && !cfg->tls_disable && !listen_is_loopback(cfg->listen))
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: listen %.100s is not a loopback address, and plain HTTP "
		                    "there would carry assertions and tokens in clear: set "
		                    "tls_cert and tls_key, or tls_disable = yes when a proxy in "
		                    "front terminates TLS",
		                    name, cfg->listen);
	if (cfg->tls_cert[0] != '\0' && cfg->tls_disable)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: tls_disable = yes contradicts tls_cert/tls_key", name);
	if (cfg->pin_file[0] != '\0' && cfg->pin_env[0] != '\0')
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: set pin_file or pin_env, not both",
		                    name);
	return WRIT_OK;
}

/* Whoever can write the configuration chooses the PKCS#11 module writ
 * dlopens into a process holding the HSM session, and where its keys and
 * audit log live: like sshd's StrictModes, the file must be a regular
 * file owned by this user or root and writable by nobody else. */
static writ_rc config_file_ok(const char *path, int fd, writ_err *err)
{
	struct stat sb;

	if (fstat(fd, &sb) != 0)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: not a regular file", path);
	if (sb.st_uid != geteuid() && sb.st_uid != 0)
		return writ_err_set(
		    err, WRIT_ERR_CONFIG,
		    "%s: owned by uid %u, neither this user (%u) nor root: whoever owns "
		    "it chooses the PKCS#11 module writ loads",
		    path, (unsigned)sb.st_uid, (unsigned)geteuid());
	if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		return writ_err_set(
		    err, WRIT_ERR_CONFIG,
		    "%s: writable by group or others (mode %04o): whoever can write it "
		    "chooses the PKCS#11 module writ loads (chmod go-w)",
		    path, (unsigned)(sb.st_mode & 07777));
	return WRIT_OK;
}

/* dir/name into out, or an error: a path cut short names another file. */
static writ_rc sibling(char *out, size_t outlen, const char *dir, const char *name, writ_err *err)
{
	int n = snprintf(out, outlen, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= outlen)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "the configuration's directory path is too long for %s", name);
	return WRIT_OK;
}

writ_rc config_load(const char *path, writ_config *cfg, writ_err *err)
{
	char buf[CONFIG_MAX_BYTES + 1], dir[sizeof(cfg->path)], *slash;
	ssize_t n;
	int fd;
	writ_rc rc;

	config_defaults(cfg);
	if (strlen(path) >= sizeof(cfg->path))
		return writ_err_set(err, WRIT_ERR_CONFIG, "configuration path is over %zu bytes",
		                    sizeof(cfg->path) - 1);
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s", path, strerror(errno));
	rc = config_file_ok(path, fd, err);
	n = rc == WRIT_OK ? read(fd, buf, sizeof(buf)) : 0;
	if (n < 0)
		rc = writ_err_set(err, WRIT_ERR_CONFIG, "%s: %s", path, strerror(errno));
	close(fd);
	if (rc != WRIT_OK)
		return rc;
	snprintf(dir, sizeof(dir), "%s", path); /* fits: checked above */
	slash = strrchr(dir, '/');
	if (slash != NULL)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	rc = config_parse(buf, (size_t)n, path, dir, cfg, err);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (rc != WRIT_OK)
		return rc;
	/* The daemon's files default to siblings of the configuration. */
	if (cfg->state_db[0] == '\0')
		rc = sibling(cfg->state_db, sizeof(cfg->state_db), dir, "writ.db", err);
	if (rc == WRIT_OK && cfg->policy[0] == '\0')
		rc = sibling(cfg->policy, sizeof(cfg->policy), dir, "policy.json", err);
	if (rc == WRIT_OK && cfg->audit_log[0] == '\0')
		rc = sibling(cfg->audit_log, sizeof(cfg->audit_log), dir, "audit.log", err);
	return rc;
}

void config_p11(const writ_config *cfg, p11_cfg *out)
{
	memset(out, 0, sizeof(*out));
	out->module = cfg->pkcs11_module;
	out->token_label = cfg->token_label;
	out->pin_file = cfg->pin_file[0] != '\0' ? cfg->pin_file : NULL;
	out->pin_env = cfg->pin_env[0] != '\0' ? cfg->pin_env : NULL;
	out->softhsm_conf = cfg->softhsm_conf[0] != '\0' ? cfg->softhsm_conf : NULL;
}
