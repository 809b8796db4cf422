/*
 * fuzz_form.c - the strict x-www-form-urlencoded parser of POST /token
 * bodies. Invariants: success means every name is unique and every value
 * is printable ASCII; form_clear always leaves f empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	form f;
	writ_err err = {0};
	size_t i, j;

	if (form_parse((const char *)data, size, &f, &err) == WRIT_OK) {
		for (i = 0; i < f.n; i++) {
			for (j = 0; f.p[i].value[j] != '\0'; j++)
				if ((unsigned char)f.p[i].value[j] < 0x20 ||
				    (unsigned char)f.p[i].value[j] >= 0x7f)
					abort();
			for (j = 0; j < i; j++)
				if (strcmp(f.p[i].name, f.p[j].name) == 0)
					abort();
		}
		(void)form_get(&f, "scope");
	} else if (err.msg[0] == '\0') {
		abort(); /* every refusal names its reason */
	}
	form_clear(&f);
	return 0;
}
