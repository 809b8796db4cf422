/*
 * policy_int.h - the policy's in-memory form, shared by policy.c (the
 * parser) and policy_match.c (decisions). Nothing outside those two files
 * includes this.
 */
#ifndef WRIT_POLICY_INT_H
#define WRIT_POLICY_INT_H

#include <stdatomic.h>

#include "policy.h"

/* How a pattern is matched; decided once at load so the hot path mostly
 * does strcmp and only calls fnmatch for real globs. */
typedef enum policy_pat_kind {
	POLICY_PAT_LITERAL = 0,
	POLICY_PAT_ANY, /* exactly "*" */
	POLICY_PAT_GLOB,
} policy_pat_kind;

typedef struct policy_pattern {
	char *s;             /* for a group pattern, NAME without "group:" */
	unsigned char kind;  /* policy_pat_kind */
	unsigned char group; /* subject pattern written "group:NAME" */
} policy_pattern;

typedef struct policy_rule {
	char id[POLICY_ID_MAX + 1];
	int deny;
	policy_pattern *subj, *aud, *act;
	size_t nsubj, naud, nact;
	unsigned ttl;         /* 0: not set */
	unsigned rate_n;      /* 0: no rate */
	unsigned rate_period; /* seconds */
	unsigned nlim;
	unsigned char lim_name[POLICY_LIM_MAX]; /* index into policy.lim_names */
	unsigned lim_value[POLICY_LIM_MAX];
	char *description;
} policy_rule;

struct policy {
	atomic_uint refs;
	char *name;
	char hash[65];
	size_t nrules;
	policy_rule *rules;
	/* Evaluation order: every deny rule, then every allow rule, each in
	 * file order. With the denials known first, an allow rule can tell at
	 * once whether it grants anything. */
	size_t *order;
	size_t nlim_names;
	char lim_names[POLICY_LIM_MAX][POLICY_LIM_KEY_MAX + 1];
};

#endif
