/* cmd_agent.c - placeholder until the agent module lands. */
#include <stdio.h>

#include "cli.h"

int agent_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "writ: agent: not built yet\n");
	return 1;
}
