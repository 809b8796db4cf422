/*
 * fuzz_config.c - the writ.conf parser. Invariant: a refusal always says
 * why; a success leaves values within their documented ranges.
 */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	writ_config cfg;
	writ_err err = {0};

	config_defaults(&cfg);
	if (config_parse((const char *)data, size, "fuzz.conf", "/etc/writ", &cfg, &err) ==
	    WRIT_OK) {
		if (cfg.token_ttl > cfg.token_ttl_max || cfg.token_ttl_max > WRIT_TTL_HARD_CAP ||
		    cfg.leeway > WRIT_LEEWAY_MAX || cfg.signing_alg == WRIT_ALG_NONE)
			abort();
	} else if (err.msg[0] == '\0') {
		abort();
	}
	return 0;
}
