/* Small helpers shared by every part of esd. */
#include "esd.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "esd: out of memory\n");
        abort();
    }
    return p;
}

void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) {
        fprintf(stderr, "esd: out of memory\n");
        abort();
    }
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "esd: out of memory\n");
        abort();
    }
    return q;
}

char *xstrndup(const char *p, size_t n)
{
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

char *xstrdup(const char *p)
{
    return xstrndup(p, strlen(p));
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps in short slices so that shutdown is never held up by a delay fault. */
void sleep_ms_interruptible(int64_t ms)
{
    int64_t end = mono_ms() + ms;
    while (!g_stopping) {
        int64_t left = end - mono_ms();
        if (left <= 0)
            break;
        if (left > 50)
            left = 50;
        struct timespec ts = {left / 1000, (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static uint64_t g_id_state;
static pthread_mutex_t g_id_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t next_rand(void)
{
    pthread_mutex_lock(&g_id_lock);
    if (!g_id_state)
        g_id_state = (uint64_t)now_ms() ^ ((uint64_t)mono_ms() << 20);
    uint64_t v = splitmix64(&g_id_state);
    pthread_mutex_unlock(&g_id_lock);
    return v;
}

static void rand_chars(char *out, size_t n)
{
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0)
            r = next_rand();
        out[i] = b64url[r & 63];
        r >>= 6;
    }
    out[n] = '\0';
}

/* 22 url-safe base64 characters, like ES index uuids. */
void gen_uuid(char out[23])
{
    rand_chars(out, 22);
}

/* 20 url-safe characters, the length of ES auto-generated ids. */
void gen_doc_id(char out[21])
{
    rand_chars(out, 20);
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Returns decoded length or -1 on invalid input / overflow. */
int b64_decode(const char *in, size_t n, char *out, size_t outcap)
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '=')
            break;
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= outcap)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return (int)o;
}

void b64_encode(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* '*' matches any run of characters (ES "simple match"). */
bool glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

bool parse_long_strict(const char *s, long long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ES time values: "-1", "500ms", "1s", "2m", "1h", "1d", "100micros", "0". */
int64_t parse_time_value_ms(const char *s, bool *ok)
{
    *ok = false;
    if (!s || !*s)
        return 0;
    if (strcmp(s, "-1") == 0) {
        *ok = true;
        return -1;
    }
    if (strcmp(s, "0") == 0) {
        *ok = true;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return 0;
    static const struct { const char *u; double mul; } units[] = {
        {"nanos", 1e-6}, {"micros", 1e-3}, {"ms", 1}, {"s", 1000},
        {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].u) == 0) {
            *ok = true;
            return (int64_t)(v * units[i].mul);
        }
    }
    return 0;
}

/* jansson refuses integers beyond int64; retry as reals so such documents are
 * still accepted (their exact bytes are kept separately). */
json_t *json_parse_precise(const char *buf, size_t len, size_t flags, json_error_t *err)
{
    json_t *j = json_loadb(buf, len, flags, err);
    if (!j && strstr(err->text, "too big"))
        j = json_loadb(buf, len, flags | JSON_DECODE_INT_AS_REAL, err);
    return j;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void url_unescape_inplace(char *s, bool plus_is_space)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%' && hexval((unsigned char)r[1]) >= 0 && hexval((unsigned char)r[2]) >= 0) {
            *w++ = (char)(hexval((unsigned char)r[1]) * 16 + hexval((unsigned char)r[2]));
            r += 2;
        } else if (*r == '+' && plus_is_space) {
            *w++ = ' ';
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* ES index name rules (MetadataCreateIndexService.validateIndexOrAliasName). */
const char *index_name_invalid(const char *name, char *buf, size_t bufsz)
{
    if (!*name)
        return "must not be empty";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return "must not be '.' or '..'";
    if (name[0] == '-' || name[0] == '_' || name[0] == '+')
        return "must not start with '_', '-', or '+'";
    if (strlen(name) > 255)
        return "index name is too long, (> 255)";
    for (const char *p = name; *p; p++) {
        if (strchr("\\/*?\"<>| ,#:", *p)) {
            snprintf(buf, bufsz, "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?]");
            return buf;
        }
        if (isupper((unsigned char)*p))
            return "must be lowercase";
    }
    return NULL;
}
