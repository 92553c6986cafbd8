/*
 * String builder and a compact JSON writer.
 *
 * Responses are rendered with these helpers rather than json_dumps() for two
 * reasons: the hot bulk path must not allocate a jansson tree per item, and
 * document sources are spliced in as the raw bytes the client sent (so big or
 * precise numbers round-trip exactly).
 */
#include "esd.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(sb_t *s, size_t cap)
{
    s->len = 0;
    s->cap = cap < 64 ? 64 : cap;
    s->buf = xmalloc(s->cap);
    s->buf[0] = '\0';
}

void sb_grow(sb_t *s, size_t add)
{
    if (!s->buf)
        sb_init(s, add + 64);
    if (s->len + add + 1 <= s->cap)
        return;
    size_t nc = s->cap * 2;
    while (nc < s->len + add + 1)
        nc *= 2;
    s->buf = xrealloc(s->buf, nc);
    s->cap = nc;
}

void sb_append(sb_t *s, const char *p, size_t n)
{
    sb_grow(s, n);
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

void sb_puts(sb_t *s, const char *p)
{
    sb_append(s, p, strlen(p));
}

void sb_printf(sb_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_append(s, tmp, (size_t)n);
        return;
    }
    sb_grow(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->buf + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* Escapes like Jackson: control characters, quote and backslash only;
 * non-ASCII UTF-8 passes through untouched. */
void sb_json_str(sb_t *s, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_grow(s, n + 2);
    s->buf[s->len++] = '"';
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_append(s, p + start, i - start);
        start = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            el = 6;
        }
        sb_append(s, esc, el);
    }
    sb_append(s, p + start, n - start);
    sb_putc(s, '"');
    s->buf[s->len] = '\0';
}

void sb_json_cstr(sb_t *s, const char *p)
{
    sb_json_str(s, p, strlen(p));
}

/* without printf: bulk responses write several integers per item */
void sb_json_int(sb_t *s, long long v)
{
    char tmp[24];
    int i = 24;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    sb_append(s, tmp + i, (size_t)(24 - i));
}

/* Shortest representation that parses back to the same double, always with
 * a '.' or exponent so that it stays a floating point number. */
static void sb_json_real(sb_t *s, double d)
{
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    if (!strpbrk(tmp, ".eEn"))
        strcat(tmp, ".0");
    sb_puts(s, tmp);
}

void sb_json_value(sb_t *s, const json_t *v)
{
    if (!v) {
        sb_puts(s, "null");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        sb_putc(s, '{');
        json_object_foreach((json_t *)v, k, x) {
            if (!first)
                sb_putc(s, ',');
            first = false;
            sb_json_cstr(s, k);
            sb_putc(s, ':');
            sb_json_value(s, x);
        }
        sb_putc(s, '}');
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        sb_putc(s, '[');
        json_array_foreach((json_t *)v, i, x) {
            if (i)
                sb_putc(s, ',');
            sb_json_value(s, x);
        }
        sb_putc(s, ']');
        break;
    }
    case JSON_STRING:
        sb_json_str(s, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sb_json_int(s, (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        sb_json_real(s, json_real_value(v));
        break;
    case JSON_TRUE:
        sb_puts(s, "true");
        break;
    case JSON_FALSE:
        sb_puts(s, "false");
        break;
    case JSON_NULL:
        sb_puts(s, "null");
        break;
    }
    s->buf[s->len] = '\0';
}

char *sb_detach(sb_t *s, size_t *len)
{
    if (!s->buf)
        sb_init(s, 16);
    char *b = s->buf;
    if (len)
        *len = s->len;
    s->buf = NULL;
    s->len = s->cap = 0;
    return b;
}

void sb_free(sb_t *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}
