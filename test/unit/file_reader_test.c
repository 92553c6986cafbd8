/*
 * file_reader_test.c: unit tests for src/file_reader.c, the streaming line
 * reader of a file source: local files, gzip, and HTTP against
 * test/scripts/file-server.pl (found next to this program, ../scripts, or
 * through FILE_SERVER), started with perl for each HTTP case.
 *
 * UNIT_NO_PERF (set under valgrind): the big file is 5 MB, not 50 MB, and
 * the maxrss bound is skipped (valgrind's own memory is counted there).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "file_reader.h"
#include "tap.h"

static char tmp_dir[512];
static char script[1024];

typedef struct Server
{
	pid_t		pid;
	int			port;
	char		port_file[600];
	char		log[600];
} Server;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static const char *
tmp_path(const char *name)
{
	static char paths[8][700];
	static int	next = 0;
	char	   *p = paths[next++ % 8];

	snprintf(p, sizeof(paths[0]), "%s/%s", tmp_dir, name);
	return p;
}

static int
write_file(const char *path, const char *data, size_t len)
{
	FILE	   *f = fopen(path, "wb");
	int			rc;

	if (f == NULL)
		return -1;
	rc = fwrite(data, 1, len, f) == len ? 0 : -1;
	return fclose(f) == 0 ? rc : -1;
}

/* A gzip file of data, written as members of at most member bytes each. */
static int
write_gz(const char *path, const char *data, size_t len, size_t member)
{
	size_t		done = 0;

	do
	{
		gzFile		gz = gzopen(path, done == 0 ? "wb" : "ab");
		size_t		n = len - done < member ? len - done : member;

		if (gz == NULL)
			return -1;
		if (n > 0 && gzwrite(gz, data + done, (unsigned) n) != (int) n)
		{
			gzclose(gz);
			return -1;
		}
		if (gzclose(gz) != Z_OK)
			return -1;
		done += n;
	} while (done < len);
	return 0;
}

/* ------------------------------------------------------------ generated */

/* Line k (from 1) of a generated file: NDJSON of varying length. */
static size_t
gen_line(uint64_t k, char *out, size_t cap)
{
	static const char pad[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy";
	int			n = snprintf(out, cap, "{\"id\":%llu,\"pad\":\"%.*s\"}",
							 (unsigned long long) k, (int) (k % 101), pad);

	return (size_t) n;
}

/* Write generated lines until the file holds at least bytes; the line count. */
static uint64_t
write_generated(const char *path, uint64_t bytes, int gz, uint64_t *size)
{
	FILE	   *f = gz ? NULL : fopen(path, "wb");
	gzFile		g = gz ? gzopen(path, "wb1") : NULL;
	char		line[256];
	uint64_t	k = 0;

	*size = 0;
	if (f == NULL && g == NULL)
		return 0;
	while (*size < bytes)
	{
		size_t		n = gen_line(++k, line, sizeof(line));

		line[n++] = '\n';
		if (f)
			fwrite(line, 1, n, f);
		else
			gzwrite(g, line, (unsigned) n);
		*size += n;
	}
	if (f)
		fclose(f);
	else
		gzclose(g);
	return k;
}

/* What a reader of a generated file should hand out next. */
typedef struct Expect
{
	uint64_t	next;			/* number of the next line */
	uint64_t	offset;			/* offset after the last line */
	int			bad;			/* lines that were not the expected ones */
	size_t		max_capacity;	/* largest ecp_file_buffer_capacity seen */
} Expect;

/* Read lines, checking each against the generator, until another status. */
static EcpFileStatus
read_checked(EcpFileReader *r, Expect *e, char *err, size_t errlen)
{
	for (;;)
	{
		const char *line;
		size_t		len;
		char		want[256];
		size_t		n;
		size_t		capacity = ecp_file_buffer_capacity(r);
		EcpFileStatus st = ecp_file_next(r, &line, &len, err, errlen);

		if (capacity > e->max_capacity)
			e->max_capacity = capacity;
		if (st != ECP_FILE_LINE)
			return st;
		n = gen_line(e->next, want, sizeof(want));
		e->offset += n + 1;
		if ((len != n || memcmp(line, want, n) != 0 || ecp_file_line_no(r) != e->next ||
			 ecp_file_offset(r) != e->offset) && e->bad++ < 3)
			diag("line %llu: got \"%.*s\" (no %llu, offset %llu), want \"%s\" (offset %llu)",
				 (unsigned long long) e->next, (int) (len > 80 ? 80 : len), line,
				 (unsigned long long) ecp_file_line_no(r),
				 (unsigned long long) ecp_file_offset(r), want,
				 (unsigned long long) e->offset);
		e->next++;
	}
}

/* ------------------------------------------------------------- helpers */

static void
default_config(EcpFileReaderConfig *cfg, const char *location)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->location = location;
	cfg->transport.connect_timeout_ms = 2000;
	cfg->idle_timeout_ms = 10000;
}

/* Open; diag and NULL on failure. */
static EcpFileReader *
open_at(const EcpFileReaderConfig *cfg, uint64_t offset, uint64_t line_no)
{
	EcpFileReader *r = NULL;
	char		err[ECP_FILE_ERROR_SIZE];
	EcpFileStatus st = ecp_file_open(cfg, offset, line_no, &r, err, sizeof(err));

	if (st != ECP_FILE_OK)
		diag("ecp_file_open(%s, %llu): status %d: %s", cfg->location,
			 (unsigned long long) offset, (int) st, err);
	return r;
}

/* The status of an open expected to fail, with its error text. */
static EcpFileStatus
open_fails(const EcpFileReaderConfig *cfg, uint64_t offset, char *err, size_t errlen)
{
	EcpFileReader *r = NULL;
	EcpFileStatus st;

	err[0] = '\0';
	st = ecp_file_open(cfg, offset, 0, &r, err, errlen);
	if (r)
	{
		diag("open of %s succeeded", cfg->location);
		ecp_file_close(r);
	}
	return st;
}

/* Expect a line; 1 when it is the one, with its number and offset. */
static int
next_is(EcpFileReader *r, EcpFileStatus want_st, const char *want, uint64_t line_no,
		uint64_t offset)
{
	const char *line;
	size_t		len;
	char		err[ECP_FILE_ERROR_SIZE] = "";
	EcpFileStatus st = ecp_file_next(r, &line, &len, err, sizeof(err));
	int			good = st == want_st && ecp_file_line_no(r) == line_no &&
		ecp_file_offset(r) == offset &&
		(want == NULL || (len == strlen(want) && memcmp(line, want, len) == 0));

	if (!good)
		diag("got status %d \"%.*s\" line %llu offset %llu (%s); want %d \"%s\" %llu %llu",
			 (int) st, (int) (len > 80 ? 80 : len), line ? line : "",
			 (unsigned long long) ecp_file_line_no(r), (unsigned long long) ecp_file_offset(r),
			 err, (int) want_st, want ? want : "(any)", (unsigned long long) line_no,
			 (unsigned long long) offset);
	return good;
}

static int
abort_now(void *arg)
{
	(void) arg;
	return 1;
}

/* Aborts once *(double *) arg (a now() deadline) has passed. */
static int
abort_after(void *arg)
{
	return now() >= *(double *) arg;
}

static int
refuse_all(const struct sockaddr *addr, socklen_t addrlen, const char *host, int port,
		   char *why, size_t whylen, void *arg)
{
	(void) addr;
	(void) addrlen;
	(void) arg;
	snprintf(why, whylen, "test policy refuses %s port %d", host, port);
	return 0;
}

/* ---------------------------------------------------------- file server */

static int
start_server(Server *s, const char *name, const char *opt1, const char *opt2)
{
	double		deadline;

	memset(s, 0, sizeof(*s));
	snprintf(s->port_file, sizeof(s->port_file), "%s/%s.port", tmp_dir, name);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmp_dir, name);
	s->pid = fork();
	if (s->pid < 0)
	{
		diag("fork: %s", strerror(errno));
		return -1;
	}
	if (s->pid == 0)
	{
		const char *argv[12];
		int			i = 0;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		argv[i++] = "perl";
		argv[i++] = script;
		argv[i++] = "--dir";
		argv[i++] = tmp_dir;
		argv[i++] = "--port-file";
		argv[i++] = s->port_file;
		argv[i++] = "--log";
		argv[i++] = s->log;
		argv[i++] = "--max-seconds";
		argv[i++] = "600";
		if (opt1)
			argv[i++] = opt1;
		if (opt2)
			argv[i++] = opt2;
		argv[i] = NULL;
		execvp("perl", (char *const *) argv);
		_exit(127);
	}
	deadline = now() + 10.0;
	while (now() < deadline)
	{
		FILE	   *f = fopen(s->port_file, "r");
		int			status;

		if (f)
		{
			if (fscanf(f, "%d", &s->port) != 1)
				s->port = 0;
			fclose(f);
			if (s->port > 0)
				return 0;
		}
		if (waitpid(s->pid, &status, WNOHANG) == s->pid)
		{
			diag("file-server.pl exited early (status %d)", status);
			s->pid = 0;
			return -1;
		}
		usleep(20 * 1000);
	}
	diag("file-server.pl wrote no port within 10 s");
	return -1;
}

static void
stop_server(Server *s)
{
	if (s->pid > 0)
	{
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
}

static const char *
url(const Server *s, const char *path)
{
	static char urls[4][1024];
	static int	next = 0;
	char	   *u = urls[next++ % 4];

	snprintf(u, sizeof(urls[0]), "http://127.0.0.1:%d%s", s->port, path);
	return u;
}

/* Does the server's log hold a line containing text? */
static int
log_has(const Server *s, const char *text)
{
	FILE	   *f = fopen(s->log, "r");
	char		line[1024];
	int			found = 0;

	if (f == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, text) != NULL;
	fclose(f);
	return found;
}

/*
 * The server writes a request's log line after it has sent the answer, so
 * a line the test expects may come a moment after the reader is done:
 * wait for it (up to 10 s; a loaded machine may be slow).
 */
static int
log_shows(const Server *s, const char *text)
{
	for (int i = 0; i < 200; i++)
	{
		struct timespec pause = {0, 50 * 1000 * 1000};

		if (log_has(s, text))
			return 1;
		nanosleep(&pause, NULL);
	}
	return 0;
}

/* ----------------------------------------------------------- local files */

static const char sample[] = "first\n\nsecond\r\n{\"a\":1}\nlast-no-newline";

/* The sample's lines from the start, and from offset 7 (line 2 read). */
static void
check_sample(const char *location, EcpFileResumeKind kind_at_7, const char *what)
{
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	int			good;

	default_config(&cfg, location);
	r = open_at(&cfg, 0, 0);
	if (!ok(r != NULL, "%s: opens", what))
		return;
	good = ecp_file_resume_kind(r) == ECP_FILE_START &&
		next_is(r, ECP_FILE_LINE, "first", 1, 6) &&
		next_is(r, ECP_FILE_LINE, "", 2, 7) &&
		next_is(r, ECP_FILE_LINE, "second", 3, 15) &&
		next_is(r, ECP_FILE_LINE, "{\"a\":1}", 4, 23) &&
		next_is(r, ECP_FILE_LINE, "last-no-newline", 5, 38) &&
		next_is(r, ECP_FILE_EOF, NULL, 5, 38) &&
		next_is(r, ECP_FILE_EOF, NULL, 5, 38);
	ok(good, "%s: lines, an empty line, CRLF, a last line without newline, offsets, "
	   "numbers, EOF twice", what);
	ecp_file_close(r);

	r = open_at(&cfg, 7, 2);
	if (!ok(r != NULL, "%s: opens at offset 7", what))
		return;
	ok(ecp_file_resume_kind(r) == kind_at_7 && ecp_file_offset(r) == 7 &&
	   ecp_file_line_no(r) == 2 &&
	   next_is(r, ECP_FILE_LINE, "second", 3, 15) &&
	   next_is(r, ECP_FILE_LINE, "{\"a\":1}", 4, 23) &&
	   next_is(r, ECP_FILE_LINE, "last-no-newline", 5, 38) &&
	   next_is(r, ECP_FILE_EOF, NULL, 5, 38),
	   "%s: at offset 7 (resume kind %d) the lines from 3 on", what,
	   (int) ecp_file_resume_kind(r));
	ecp_file_close(r);
}

static void
test_local_lines(void)
{
	const char *path = tmp_path("sample.ndjson");
	EcpFileReaderConfig cfg;
	EcpFileReader *r;

	if (!ok(write_file(path, sample, strlen(sample)) == 0, "sample file written"))
		return;
	check_sample(path, ECP_FILE_RANGED, "local");

	default_config(&cfg, path);
	r = open_at(&cfg, strlen(sample), 5);
	ok(r && ecp_file_resume_kind(r) == ECP_FILE_RANGED &&
	   next_is(r, ECP_FILE_EOF, NULL, 5, 38), "local: open at the end: EOF");
	ecp_file_close(r);

	path = tmp_path("cr.txt");
	write_file(path, "a\r\r\n\r\n\r", 7);
	default_config(&cfg, path);
	r = open_at(&cfg, 0, 0);
	ok(r && next_is(r, ECP_FILE_LINE, "a\r", 1, 4) && next_is(r, ECP_FILE_LINE, "", 2, 6) &&
	   next_is(r, ECP_FILE_LINE, "", 3, 7) && next_is(r, ECP_FILE_EOF, NULL, 3, 7),
	   "only one trailing \\r is stripped; a lone \\r at the end is an empty line");
	ecp_file_close(r);

	path = tmp_path("empty.txt");
	write_file(path, "", 0);
	default_config(&cfg, path);
	r = open_at(&cfg, 0, 0);
	ok(r && next_is(r, ECP_FILE_EOF, NULL, 0, 0), "an empty file: EOF at once");
	ecp_file_close(r);
}

static void
test_local_too_long(void)
{
	const char *path = tmp_path("long.ndjson");
	size_t		big = 1 << 20;	/* over the 256 KiB buffer: dropped while it streams */
	char	   *data = malloc(big + 100);
	size_t		n = 0;
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	char		preview[ECP_FILE_PREVIEW_BYTES + 1];

	if (data == NULL)
		return;
	n += (size_t) sprintf(data + n, "short\n");
	memset(data + n, 'L', 30);	/* over max_line_bytes, inside the buffer */
	n += 30;
	data[n++] = '\n';
	n += (size_t) sprintf(data + n, "0123456789\r\n");	/* exactly the maximum */
	for (size_t i = 0; i < big; i++)
		data[n++] = (char) ('a' + i % 26);
	data[n++] = '\n';
	n += (size_t) sprintf(data + n, "after\n");
	memset(data + n, 'T', 40);	/* a too-long last line without newline */
	n += 40;
	write_file(path, data, n);
	for (size_t i = 0; i < ECP_FILE_PREVIEW_BYTES; i++)
		preview[i] = (char) ('a' + i % 26);
	preview[ECP_FILE_PREVIEW_BYTES] = '\0';

	default_config(&cfg, path);
	cfg.max_line_bytes = 10;
	r = open_at(&cfg, 0, 0);
	ok(r && next_is(r, ECP_FILE_LINE, "short", 1, 6) &&
	   next_is(r, ECP_FILE_TOO_LONG, "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLL", 2, 37) &&
	   next_is(r, ECP_FILE_LINE, "0123456789", 3, 49) &&
	   next_is(r, ECP_FILE_TOO_LONG, preview, 4, 49 + big + 1) &&
	   next_is(r, ECP_FILE_LINE, "after", 5, 49 + big + 7) &&
	   next_is(r, ECP_FILE_TOO_LONG, "TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT", 6, n) &&
	   next_is(r, ECP_FILE_EOF, NULL, 6, n),
	   "too-long lines (in the buffer, over it, last) are reported with their numbers, "
	   "offsets and first bytes; the lines after them come");
	ok(r && ecp_file_buffer_capacity(r) <= 2 * ECP_FILE_BUFFER_BYTES,
	   "a 1 MiB line over max_line_bytes was never buffered whole (capacity %zu)",
	   r ? ecp_file_buffer_capacity(r) : 0);
	ecp_file_close(r);

	/* a line longer than the buffer but within max_line_bytes: it grows */
	default_config(&cfg, path);
	cfg.max_line_bytes = big;
	r = open_at(&cfg, 49, 3);
	ok(r && next_is(r, ECP_FILE_LINE, NULL, 4, 49 + big + 1) &&
	   ecp_file_buffer_capacity(r) <= ECP_FILE_BUFFER_BYTES + big + 2 &&
	   next_is(r, ECP_FILE_LINE, "after", 5, 49 + big + 7),
	   "a 1 MiB line within max_line_bytes comes whole (capacity %zu)",
	   r ? ecp_file_buffer_capacity(r) : 0);
	ecp_file_close(r);
	free(data);
}

static void
test_local_errors(void)
{
	EcpFileReaderConfig cfg;
	char		err[ECP_FILE_ERROR_SIZE];
	const char *missing = tmp_path("missing.ndjson");
	const char *locked = tmp_path("locked.ndjson");
	EcpFileStatus st;
	EcpFileReader *r;

	default_config(&cfg, missing);
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, missing) && contains(err, "No such file"),
	   "missing file: FATAL naming the path: %s", err);

	default_config(&cfg, tmp_dir);
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "directory"), "a directory: FATAL: %s", err);

	default_config(&cfg, "relative/path.ndjson");
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "absolute path"), "a relative path: FATAL: %s",
	   err);

	default_config(&cfg, "ftp://host/file?token=secret");
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && !contains(err, "secret"),
	   "another scheme: FATAL, without the query: %s", err);

	default_config(&cfg, "http://bad host/x.ndjson?sig=secret");
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "not a valid URL") && !contains(err, "secret"),
	   "an unparseable URL: FATAL, without the query: %s", err);

	default_config(&cfg, tmp_path("sample.ndjson"));
	st = open_fails(&cfg, 100, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "shorter than the resume offset"),
	   "an offset beyond the end: FATAL: %s", err);

	default_config(&cfg, tmp_path("sample.ndjson"));
	cfg.transport.should_abort = abort_now;
	r = open_at(&cfg, 0, 0);
	{
		const char *line;
		size_t		len;

		st = r ? ecp_file_next(r, &line, &len, err, sizeof(err)) : ECP_FILE_FATAL;
	}
	ok(st == ECP_FILE_ABORTED, "should_abort: ABORTED at the first read: %s", err);
	ecp_file_close(r);

	if (geteuid() == 0)
	{
		ok(1, "# SKIP unreadable file: running as root");
		return;
	}
	write_file(locked, "x\n", 2);
	chmod(locked, 0);
	default_config(&cfg, locked);
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, locked) && contains(err, "ermission denied"),
	   "unreadable file: FATAL naming the path: %s", err);
	chmod(locked, 0600);
}

static void
test_local_gzip(void)
{
	const char *path = tmp_path("sample.ndjson.gz");
	const char *bad = tmp_path("bad.ndjson.gz");
	const char *cut = tmp_path("cut.ndjson.gz");
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	char		err[ECP_FILE_ERROR_SIZE];
	const char *line;
	size_t		len;
	EcpFileStatus st;
	FILE	   *f;
	char		gz[4096];
	size_t		gzlen;

	if (!ok(write_gz(path, sample, strlen(sample), 10) == 0,
			"sample.ndjson.gz written as 4 gzip members"))
		return;
	check_sample(path, ECP_FILE_SKIPPED, "local .gz (concatenated members)");

	write_file(bad, "this is not gzip\n", 17);
	default_config(&cfg, bad);
	r = open_at(&cfg, 0, 0);
	st = r ? ecp_file_next(r, &line, &len, err, sizeof(err)) : ECP_FILE_OK;
	ok(st == ECP_FILE_FATAL && contains(err, "bad gzip data") && contains(err, bad),
	   "not gzip data: FATAL: %s", err);
	ecp_file_close(r);

	/* the first member whole, the second cut short */
	f = fopen(path, "rb");
	gzlen = f ? fread(gz, 1, sizeof(gz), f) : 0;
	if (f)
		fclose(f);
	write_file(cut, gz, gzlen > 40 ? gzlen - 12 : gzlen);
	default_config(&cfg, cut);
	r = open_at(&cfg, 0, 0);
	do
		st = r ? ecp_file_next(r, &line, &len, err, sizeof(err)) : ECP_FILE_OK;
	while (st == ECP_FILE_LINE);
	ok(st == ECP_FILE_FATAL && contains(err, "truncated gzip"), "truncated gzip: FATAL: %s",
	   err);
	ecp_file_close(r);

	default_config(&cfg, path);
	st = open_fails(&cfg, 100, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "before the resume offset"),
	   ".gz: an offset beyond the content: FATAL: %s", err);
}

/* ----------------------------------------------------------------- HTTP */

/* A generated file served, read whole in one go. */
static void
test_http_basic(const Server *s)
{
	static const struct
	{
		int			code;
		EcpFileStatus st;
		const char *text;
	}			statuses[] = {
		{401, ECP_FILE_FATAL, "unauthorized"},
		{403, ECP_FILE_FATAL, "forbidden"},
		{410, ECP_FILE_FATAL, "gone"},
		{400, ECP_FILE_FATAL, "client error"},
		{301, ECP_FILE_FATAL, "redirect"},
		{408, ECP_FILE_TRANSIENT, "request timeout"},
		{429, ECP_FILE_TRANSIENT, "too many requests"},
		{500, ECP_FILE_TRANSIENT, "server error"},
		{503, ECP_FILE_TRANSIENT, "server error"},
		{0, ECP_FILE_OK, NULL}
	};
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	char		err[ECP_FILE_ERROR_SIZE];
	EcpFileStatus st;

	check_sample(url(s, "/sample.ndjson"), ECP_FILE_RANGED, "HTTP");
	ok(log_shows(s, "GET /sample.ndjson range=bytes=7- status=206"),
	   "HTTP: the resume sent Range: bytes=7- and got 206");
	check_sample(url(s, "/sample.ndjson.gz"), ECP_FILE_SKIPPED, "HTTP .gz");
	ok(!log_has(s, "GET /sample.ndjson.gz range=bytes"), "HTTP .gz: no Range asked");
	check_sample(url(s, "/sample.ndjson.gz?X-Amz-Signature=abc"), ECP_FILE_SKIPPED,
				 "HTTP .gz with a query string");

	default_config(&cfg, url(s, "/sample.ndjson"));
	r = open_at(&cfg, strlen(sample), 5);
	ok(r && ecp_file_resume_kind(r) == ECP_FILE_RANGED && next_is(r, ECP_FILE_EOF, NULL, 5, 38),
	   "HTTP: 416 at an offset equal to the size: EOF");
	ecp_file_close(r);

	st = open_fails(&cfg, 100, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "416") && contains(err, "/sample.ndjson"),
	   "HTTP: an offset beyond the size: FATAL: %s", err);

	default_config(&cfg, url(s, "/missing.ndjson"));
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "/missing.ndjson") && contains(err, "404") &&
	   contains(err, "not found") && contains(err, "http://127.0.0.1:"),
	   "HTTP 404: FATAL naming the URL: %s", err);

	default_config(&cfg, url(s, "/missing.ndjson?X-Amz-Signature=secret&X-Amz-Credential=key"));
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "/missing.ndjson") && !contains(err, "secret") &&
	   !contains(err, "X-Amz"), "presigned URL: the error hides the query: %s", err);

	{
		char		with_user[1024];

		snprintf(with_user, sizeof(with_user), "http://user:hunter2@127.0.0.1:%d/missing",
				 s->port);
		default_config(&cfg, with_user);
		st = open_fails(&cfg, 0, err, sizeof(err));
		ok(st == ECP_FILE_FATAL && !contains(err, "hunter2") && !contains(err, "user"),
		   "user info is not shown: %s", err);
	}

	for (int i = 0; statuses[i].code; i++)
	{
		char		path[64];
		char		code[16];

		snprintf(path, sizeof(path), "/__status/%d", statuses[i].code);
		snprintf(code, sizeof(code), "HTTP %d", statuses[i].code);
		default_config(&cfg, url(s, path));
		st = open_fails(&cfg, 0, err, sizeof(err));
		ok(st == statuses[i].st && contains(err, code) && contains(err, statuses[i].text),
		   "HTTP %d: %s: %s", statuses[i].code,
		   statuses[i].st == ECP_FILE_TRANSIENT ? "TRANSIENT" : "FATAL", err);
	}

	default_config(&cfg, url(s, "/sample.ndjson?token=secret"));
	cfg.transport.allow_address = refuse_all;
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_FATAL && contains(err, "test policy refuses 127.0.0.1 port") &&
	   !contains(err, "secret"), "allow_address refusal: FATAL with its reason: %s", err);
}

/* Lines up to a TRANSIENT, then a reopen at the checkpoint: each line once. */
static void
test_http_cut(const char *name, const char *opt, EcpFileResumeKind kind, uint64_t lines,
			  uint64_t size)
{
	Server		s;
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	Expect		e = {1, 0, 0, 0};
	char		err[ECP_FILE_ERROR_SIZE] = "";
	EcpFileStatus st;
	char		cut_at[64];

	snprintf(cut_at, sizeof(cut_at), "--cut-once-at=%llu", (unsigned long long) (size / 2 + 7));
	if (!ok(start_server(&s, name, cut_at, opt) == 0, "%s: file-server.pl started", name))
		return;
	default_config(&cfg, url(&s, "/gen.ndjson?X-Amz-Signature=secret"));
	r = open_at(&cfg, 0, 0);
	st = r ? read_checked(r, &e, err, sizeof(err)) : ECP_FILE_FATAL;
	ok(st == ECP_FILE_TRANSIENT && e.bad == 0 && e.next > 1 && e.offset < size / 2 + 7 &&
	   !contains(err, "secret"),
	   "%s: the cut is TRANSIENT after %llu good lines: %s", name,
	   (unsigned long long) (e.next - 1), err);
	ecp_file_close(r);

	err[0] = '\0';
	r = open_at(&cfg, e.offset, e.next - 1);
	ok(r && ecp_file_resume_kind(r) == kind, "%s: reopen at offset %llu: resume kind %d",
	   name, (unsigned long long) e.offset, r ? (int) ecp_file_resume_kind(r) : -1);
	st = r ? read_checked(r, &e, err, sizeof(err)) : ECP_FILE_FATAL;
	ok(st == ECP_FILE_EOF && e.bad == 0 && e.next == lines + 1 && e.offset == size,
	   "%s: the rest of the lines, each once (%llu of %llu, offset %llu of %llu) %s", name,
	   (unsigned long long) (e.next - 1), (unsigned long long) lines,
	   (unsigned long long) e.offset, (unsigned long long) size, err);
	ecp_file_close(r);
	stop_server(&s);
}

/* The generated .gz over HTTP, and a resume in it. */
static void
test_http_gzip(const Server *s, uint64_t lines)
{
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	Expect		e = {1, 0, 0, 0};
	char		err[ECP_FILE_ERROR_SIZE] = "";
	EcpFileStatus st;
	uint64_t	half_lines;

	default_config(&cfg, url(s, "/gen.ndjson.gz"));
	r = open_at(&cfg, 0, 0);
	st = r ? read_checked(r, &e, err, sizeof(err)) : ECP_FILE_FATAL;
	ok(st == ECP_FILE_EOF && e.bad == 0 && e.next == lines + 1,
	   "HTTP .gz: every line (%llu) %s", (unsigned long long) (e.next - 1), err);
	ecp_file_close(r);

	/* resume at the start of line lines/2 + 1 */
	half_lines = lines / 2;
	e.next = 1;
	e.offset = 0;
	for (uint64_t k = 1; k <= half_lines; k++)
	{
		char		line[256];

		e.offset += gen_line(k, line, sizeof(line)) + 1;
	}
	e.next = half_lines + 1;
	r = open_at(&cfg, e.offset, half_lines);
	st = r ? read_checked(r, &e, err, sizeof(err)) : ECP_FILE_FATAL;
	ok(r && ecp_file_resume_kind(r) == ECP_FILE_SKIPPED && st == ECP_FILE_EOF && e.bad == 0 &&
	   e.next == lines + 1, "HTTP .gz: resumed mid-file (SKIPPED), the rest of the lines %s",
	   err);
	ecp_file_close(r);
}

/* A listener that never accepts: connect works, no answer ever comes. */
static int
silent_listener(int *port)
{
	struct sockaddr_in a;
	socklen_t	alen = sizeof(a);
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) != 0 || listen(fd, 4) != 0 ||
		getsockname(fd, (struct sockaddr *) &a, &alen) != 0)
	{
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static void
test_http_silent(void)
{
	int			port = 0;
	int			fd = silent_listener(&port);
	char		location[128];
	EcpFileReaderConfig cfg;
	char		err[ECP_FILE_ERROR_SIZE];
	EcpFileStatus st;
	double		t0;
	double		deadline;

	if (!ok(fd >= 0, "a silent listener"))
		return;
	snprintf(location, sizeof(location), "http://127.0.0.1:%d/x.ndjson", port);
	default_config(&cfg, location);
	cfg.idle_timeout_ms = 300;
	t0 = now();
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_TRANSIENT && contains(err, "no data for 300 ms") && now() - t0 < 10.0,
	   "a silent server: TRANSIENT after the idle timeout (%.2f s): %s", now() - t0, err);

	default_config(&cfg, location);
	deadline = now() + 0.3;
	cfg.transport.should_abort = abort_after;
	cfg.transport.abort_arg = &deadline;
	t0 = now();
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_ABORTED && now() - t0 < 0.3 + 3.0,
	   "should_abort is polled while the server is silent: ABORTED in %.2f s: %s",
	   now() - t0, err);
	close(fd);

	/* the port is closed now: refused */
	cfg.transport.should_abort = NULL;
	st = open_fails(&cfg, 0, err, sizeof(err));
	ok(st == ECP_FILE_TRANSIENT && contains(err, location),
	   "connection refused: TRANSIENT: %s", err);
}

static long
maxrss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* A big file over HTTP: every line right, and memory stays bounded. */
static void
test_http_big(const Server *s, int no_perf)
{
	uint64_t	size;
	uint64_t	lines = write_generated(tmp_path("big.ndjson"),
										no_perf ? 5000000 : 50000000, 0, &size);
	EcpFileReaderConfig cfg;
	EcpFileReader *r;
	Expect		e = {1, 0, 0, 0};
	char		err[ECP_FILE_ERROR_SIZE] = "";
	EcpFileStatus st;
	long		rss_before = maxrss_kb();
	double		t0 = now();

	default_config(&cfg, url(s, "/big.ndjson"));
	r = open_at(&cfg, 0, 0);
	st = r ? read_checked(r, &e, err, sizeof(err)) : ECP_FILE_FATAL;
	ok(st == ECP_FILE_EOF && e.bad == 0 && e.next == lines + 1 && e.offset == size,
	   "big file over HTTP: %llu lines, %llu bytes, each right (%.1f s) %s",
	   (unsigned long long) lines, (unsigned long long) size, now() - t0, err);
	ok(e.max_capacity <= 2 * ECP_FILE_BUFFER_BYTES,
	   "big file: the buffers never grew (at most %zu bytes)", e.max_capacity);
	ecp_file_close(r);
	if (no_perf)
		ok(1, "# SKIP maxrss under valgrind");
	else
		ok(maxrss_kb() - rss_before < 16 * 1024,
		   "big file: maxrss grew by %ld kB reading %llu MB", maxrss_kb() - rss_before,
		   (unsigned long long) (size >> 20));
	unlink(tmp_path("big.ndjson"));
}

static void
test_http(int no_perf)
{
	Server		s;
	uint64_t	size;
	uint64_t	gz_size;
	uint64_t	lines = write_generated(tmp_path("gen.ndjson"), 2000000, 0, &size);

	write_generated(tmp_path("gen.ndjson.gz"), 2000000, 1, &gz_size);
	if (!ok(start_server(&s, "main", NULL, NULL) == 0, "file-server.pl started (%s)", script))
		return;
	test_http_basic(&s);
	test_http_gzip(&s, lines);
	test_http_big(&s, no_perf);
	stop_server(&s);

	test_http_cut("cut", NULL, ECP_FILE_RANGED, lines, size);
	test_http_cut("cut-ignore-range", "--ignore-range", ECP_FILE_SKIPPED, lines, size);
	test_http_cut("cut-reset", "--reset-at-cut", ECP_FILE_RANGED, lines, size);
	test_http_silent();
}

/* ---------------------------------------------------------------- setup */

static void
find_script(const char *argv0)
{
	const char *env = getenv("FILE_SERVER");
	const char *slash = strrchr(argv0, '/');

	if (env && env[0])
		snprintf(script, sizeof(script), "%s", env);
	else if (slash)
		snprintf(script, sizeof(script), "%.*s/../scripts/file-server.pl",
				 (int) (slash - argv0), argv0);
	else
		snprintf(script, sizeof(script), "../scripts/file-server.pl");
}

static void
remove_tmp_dir(void)
{
	static const char *const names[] = {
		"sample.ndjson", "cr.txt", "empty.txt", "long.ndjson", "locked.ndjson",
		"sample.ndjson.gz", "bad.ndjson.gz", "cut.ndjson.gz", "gen.ndjson", "gen.ndjson.gz",
		"big.ndjson", "main.port", "main.log", "cut.port", "cut.log",
		"cut-ignore-range.port", "cut-ignore-range.log", "cut-reset.port", "cut-reset.log", NULL
	};

	for (int i = 0; names[i]; i++)
		unlink(tmp_path(names[i]));
	if (rmdir(tmp_dir) != 0)
		diag("rmdir %s: %s", tmp_dir, strerror(errno));
}

int
main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	int			no_perf = getenv("UNIT_NO_PERF") != NULL;

	(void) argc;
	signal(SIGPIPE, SIG_IGN);
	find_script(argv[0]);
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/ecp-file-reader-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(tmp_dir) == NULL)
	{
		ok(0, "mkdtemp(%s): %s", tmp_dir, strerror(errno));
		return tap_done();
	}
	test_local_lines();
	test_local_too_long();
	test_local_errors();
	test_local_gzip();
	if (access(script, R_OK) != 0)
		ok(0, "file-server.pl not found at %s (set FILE_SERVER)", script);
	else
		test_http(no_perf);
	remove_tmp_dir();
	return tap_done();
}
