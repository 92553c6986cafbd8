/*
 * esd entry point: command line, start-up, port file, signal handling.
 */
#include "esd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

config_t g_cfg = {
    .flavor = FLAVOR_ES8,
    .auto_create_index = true,
    .refresh_timer = true,
    .control = true,
    .max_content_length = 104857600,
    .max_open_pits = 300,
    .log_body_max = 16384,
};
volatile int g_stopping;

const char *flavor_parse_error_type(void)
{
    return g_cfg.flavor == FLAVOR_ES8 ? "document_parsing_exception" : "mapper_parsing_exception";
}

const char *flavor_rejected_type(void)
{
    return g_cfg.flavor == FLAVOR_OPENSEARCH ? "rejected_execution_exception" : "es_rejected_execution_exception";
}

bool flavor_has_type(int compat)
{
    return g_cfg.flavor == FLAVOR_ES7 || compat == 7;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: esd [--port N] [--port-file PATH] [--discard] [--max-content-length BYTES]\n"
            "           [--flavor es8|es7|opensearch] [--auth basic:USER:PASS|apikey:ENCODED]\n"
            "           [--faults JSON] [--no-refresh-timer] [--no-control]\n");
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static bool parse_auth(const char *v)
{
    if (!strncmp(v, "basic:", 6) && strchr(v + 6, ':')) {
        g_cfg.auth_basic = xstrdup(v + 6);
        return true;
    }
    if (!strncmp(v, "apikey:", 7) && v[7]) {
        g_cfg.auth_apikey = xstrdup(v + 7);
        return true;
    }
    return false;
}

static int parse_args(int argc, char **argv, int *port, const char **port_file, const char **faults)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
        if (!strcmp(a, "--discard")) {
            g_cfg.discard = true;
        } else if (!strcmp(a, "--no-refresh-timer")) {
            g_cfg.refresh_timer = false;
        } else if (!strcmp(a, "--no-control")) {
            g_cfg.control = false;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!v) {
            fprintf(stderr, "esd: %s needs a value\n", a);
            return -1;
        } else if (!strcmp(a, "--port") && parse_long_strict(v, &n) && n >= 0 && n < 65536) {
            *port = (int)n;
            i++;
        } else if (!strcmp(a, "--port-file")) {
            *port_file = v;
            i++;
        } else if (!strcmp(a, "--max-content-length") && parse_long_strict(v, &n) && n > 0) {
            g_cfg.max_content_length = (size_t)n;
            i++;
        } else if (!strcmp(a, "--flavor") && (!strcmp(v, "es8") || !strcmp(v, "es7") || !strcmp(v, "opensearch"))) {
            g_cfg.flavor = !strcmp(v, "es8") ? FLAVOR_ES8 : !strcmp(v, "es7") ? FLAVOR_ES7 : FLAVOR_OPENSEARCH;
            i++;
        } else if (!strcmp(a, "--auth") && parse_auth(v)) {
            i++;
        } else if (!strcmp(a, "--faults")) {
            *faults = v;
            i++;
        } else {
            fprintf(stderr, "esd: bad argument %s %s\n", a, v);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int port = 9200;
    const char *port_file = NULL, *faults = NULL;
    if (parse_args(argc, argv, &port, &port_file, &faults) != 0) {
        usage(stderr);
        return 2;
    }
    if (faults) {
        json_error_t e;
        json_t *j = json_loads(faults, 0, &e);
        char err[512];
        if (!j || !faults_set(j, err, sizeof err)) {
            fprintf(stderr, "esd: bad --faults: %s\n", j ? err : e.text);
            if (j) json_decref(j);
            return 2;
        }
        json_decref(j);
    }
    /* signals are taken synchronously by the main thread only */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    store_init();
    stats_init();
    refresh_thread_start();
    int bound = http_start(port);
    if (bound < 0) {
        fprintf(stderr, "esd: cannot listen on 127.0.0.1:%d\n", port);
        refresh_thread_stop();
        return 1;
    }
    if (port_file && write_port_file(port_file, bound) != 0) {
        fprintf(stderr, "esd: cannot write port file %s\n", port_file);
        http_stop();
        refresh_thread_stop();
        return 1;
    }
    printf("esd listening on 127.0.0.1:%d\n", bound);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    g_stopping = 1;
    http_stop();
    refresh_thread_stop();
    pthread_mutex_lock(&g_store.lock);
    pits_clear();
    store_clear();
    pipelines_clear();
    free(g_store.idx);
    pthread_mutex_unlock(&g_store.lock);
    faults_clear();
    reqlog_clear();
    free(g_cfg.auth_basic);
    free(g_cfg.auth_apikey);
    return 0;
}
