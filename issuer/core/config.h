/*
 * config.h - writ's configuration file: one "key = value" per line.
 *
 * The same file serves the CLI and the issuer daemon. Parsing is strict:
 * an unknown key, a repeated key, a value out of range or a line without
 * "=" is an error naming the file and line. The PIN is never a config
 * value (SPEC s.2): only where to find it (pin_file or pin_env).
 */
#ifndef WRIT_CONFIG_H
#define WRIT_CONFIG_H

#include "p11.h"
#include "writ/writ.h"

#define CONFIG_MAX_BYTES (64 * 1024)
#define CONFIG_VALUE_MAX 1024

typedef struct writ_config {
	char path[1024]; /* the file this came from */
	/* HSM (see keys.example) */
	char pkcs11_module[CONFIG_VALUE_MAX];
	char token_label[33];
	char pin_file[CONFIG_VALUE_MAX];
	char pin_env[128];
	char softhsm_conf[CONFIG_VALUE_MAX];
	writ_alg signing_alg;
	/* tokens */
	char issuer[CONFIG_VALUE_MAX];
	unsigned token_ttl;     /* default lifetime, s */
	unsigned token_ttl_max; /* cap, s; <= WRIT_TTL_HARD_CAP */
	unsigned leeway;        /* clock skew, s; <= WRIT_LEEWAY_MAX */
	/* the issuer daemon */
	char listen[256];                 /* "127.0.0.1:8080", "[::1]:8080" */
	char state_db[CONFIG_VALUE_MAX];  /* SQLite file */
	char policy[CONFIG_VALUE_MAX];    /* policy file (JSON) */
	char audit_log[CONFIG_VALUE_MAX]; /* JSON-lines audit file */
	char tls_cert[CONFIG_VALUE_MAX];  /* PEM; HTTPS when set with tls_key */
	char tls_key[CONFIG_VALUE_MAX];
	int tls_disable;           /* plain HTTP on a non-loopback listen (TLS ends in front) */
	unsigned http_threads;     /* microhttpd's threads: read requests, write responses */
	unsigned workers;          /* threads deciding token requests; 0: one per CPU */
	unsigned max_connections;  /* concurrent connections */
	unsigned conn_timeout;     /* idle seconds before a connection is dropped */
	unsigned jwks_max_age;     /* Cache-Control max-age of the JWKS, s */
	unsigned checkpoint_every; /* audit records between signed checkpoints */
	int replay_sqlite;         /* replay_cache = sqlite (shared) rather than memory */
	/* key lifecycle (SPEC s.2); 0 in the file's absence = the minimum */
	unsigned rotation_period;  /* s between scheduled rotations; 0 = none */
	unsigned key_pending_secs; /* published before signing: >= jwks_max_age + leeway */
	unsigned key_retired_secs; /* published after retiring: >= token_ttl_max + leeway */
} writ_config;

/* Fill cfg with defaults (SoftHSM2 module, ES256, TTL 300 s, cap 3600 s,
 * leeway 30 s, issuer http://127.0.0.1:8080). */
void config_defaults(writ_config *cfg);

/* Parse path over the defaults. Relative paths inside the file are taken
 * relative to the file's directory. err->msg reads "FILE:LINE: problem". */
WRIT_MUST_CHECK writ_rc config_load(const char *path, writ_config *cfg, writ_err *err);
/* listen = HOST:PORT, HOST an IPv4 address or [IPv6], PORT 0..65535:
 * parsed into *ss (*v6 set for IPv6). Checked by config_parse too, so
 * --check-config refuses what the issuer could not bind. */
struct sockaddr_storage;
WRIT_MUST_CHECK writ_rc config_listen_addr(const char *s, struct sockaddr_storage *ss, int *v6,
                                           writ_err *err);

/* Parse a buffer (for tests and fuzzing); `name` is used in messages. */
WRIT_MUST_CHECK writ_rc config_parse(const char *buf, size_t len, const char *name,
                                     const char *basedir, writ_config *cfg, writ_err *err);

/* The HSM part of cfg as the pkcs11 layer wants it; pointers into cfg. */
void config_p11(const writ_config *cfg, p11_cfg *out);

#endif
