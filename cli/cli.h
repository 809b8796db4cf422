/*
 * cli.h - what the writ subcommands share: one file per command group,
 * each a thin layer over the library code the issuer daemon also uses.
 */
#ifndef WRIT_CLI_H
#define WRIT_CLI_H

#include <stddef.h>

#include "config.h"
#include "keyring.h"
#include "p11.h"

/* Global options, set by main() before a command runs. */
extern const char *cli_config_path; /* -c FILE, $WRIT_CONFIG, or default */

/* Print "writ: <msg>" on stderr and exit 1. */
void cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Die with the error detail (or writ_strerror) after a prefix. */
void cli_die_err(const char *what, writ_rc rc, const writ_err *err) __attribute__((noreturn));

/* writ's own directory: $WRIT_HOME or ~/.local/share/writ (static buffer). */
const char *cli_home(void);
/* Is there a configuration to load (-c, $WRIT_CONFIG or the default)? */
int cli_config_available(void);
/* Load the configuration or die. */
void cli_load_config(writ_config *cfg);
/* Open the HSM from the configuration or die. */
p11_ctx *cli_open_hsm(const writ_config *cfg);
/* Read a file or "-" (stdin), at most max bytes, or die. Caller frees. */
char *cli_read_input(const char *path, size_t max, size_t *len);
/* Does argv hold -h or --help? */
int cli_wants_help(int argc, char **argv);

int token_main(int argc, char **argv);
int key_main(int argc, char **argv);
int jwks_main(int argc, char **argv);
int mint_main(int argc, char **argv);
int verify_main(int argc, char **argv);
int agent_main(int argc, char **argv);
int assert_main(int argc, char **argv);
int exchange_main(int argc, char **argv);
int policy_main(int argc, char **argv);
int audit_main(int argc, char **argv);

/*
 * Kids are base64url, so one in 64 begins with '-' and getopt would read it
 * as options. Copy argv (argc elements) to out (room for cap pointers) with
 * every kid-shaped argument that begins with '-' moved behind a "--", so it
 * stays a positional argument; returns the new argc (out[argc] is NULL).
 */
int cli_kid_args(int argc, char **argv, char **out, int cap);

#endif
