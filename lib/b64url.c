/*
 * b64url.c - base64url without padding (RFC 7515 s.2, RFC 4648 s.5).
 *
 * OpenSSL's EVP_DecodeBlock speaks standard base64, tolerates whitespace
 * and ignores non-zero trailing bits, so one signature would have several
 * accepted spellings. JWS needs exactly one (a token is compared and cached
 * by its bytes), so the decoder here is strict and table-driven.
 */
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

static const char enc_tab[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63 for alphabet characters, 0xff otherwise. */
static const unsigned char dec_tab[256] = {
#define X 0xff
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  62, X,  X,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X,  X,  X,  X,  X,  X,  X,  0,  1,  2,  3,  4,  5,  6,
    7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X,  X,  X,  X,  63,
    X,  26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
#undef X
};

size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = enc_tab[v >> 18];
		out[o++] = enc_tab[(v >> 12) & 63];
		out[o++] = enc_tab[(v >> 6) & 63];
		out[o++] = enc_tab[v & 63];
	}
	if (n - i == 1) {
		unsigned v = (unsigned)in[i] << 16;
		out[o++] = enc_tab[v >> 18];
		out[o++] = enc_tab[(v >> 12) & 63];
	} else if (n - i == 2) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = enc_tab[v >> 18];
		out[o++] = enc_tab[(v >> 12) & 63];
		out[o++] = enc_tab[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

char *b64url_encode_alloc(const unsigned char *in, size_t n)
{
	char *out = malloc(B64URL_LEN(n) + 1);

	if (out != NULL)
		b64url_encode(in, n, out);
	return out;
}

int b64url_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i, o = 0, rem = n % 4;
	unsigned v;

	*outlen = 0;
	if (rem == 1)
		return -1; /* no byte string encodes to 4k+1 characters */
	for (i = 0; i + 4 <= n; i += 4) {
		unsigned a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
		unsigned c = dec_tab[s[i + 2]], d = dec_tab[s[i + 3]];
		if ((a | b | c | d) == 0xff)
			return -1;
		v = a << 18 | b << 12 | c << 6 | d;
		out[o++] = (unsigned char)(v >> 16);
		out[o++] = (unsigned char)(v >> 8);
		out[o++] = (unsigned char)v;
	}
	if (rem == 2) {
		unsigned a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
		if ((a | b) == 0xff || (b & 0x0f) != 0)
			return -1; /* non-zero trailing bits: a second spelling */
		out[o++] = (unsigned char)(a << 2 | b >> 4);
	} else if (rem == 3) {
		unsigned a = dec_tab[s[i]], b = dec_tab[s[i + 1]], c = dec_tab[s[i + 2]];
		if ((a | b | c) == 0xff || (c & 0x03) != 0)
			return -1;
		v = a << 18 | b << 12 | c << 6;
		out[o++] = (unsigned char)(v >> 16);
		out[o++] = (unsigned char)(v >> 8);
	}
	*outlen = o;
	return 0;
}
