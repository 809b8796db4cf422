/* cmd_audit.c - placeholder until the audit module lands. */
#include <stdio.h>

#include "cli.h"

int audit_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "writ: audit: not built yet\n");
	return 1;
}
