/* cmd_policy.c - placeholder until the policy module lands. */
#include <stdio.h>

#include "cli.h"

int policy_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "writ: policy: not built yet\n");
	return 1;
}
