/*
 * footprint.c: what libkvs_signaling adds to an idle C process. The library is
 * loaded with dlopen so that the first reading is taken before any of it is
 * mapped; every later reading is VmRSS of /proc/self/status and the number of
 * entries in /proc/self/task. Prints one JSON line.
 *
 *   footprint --lib PATH --mode clients --endpoint URL --arns-file FILE [--steps 1,10,100]
 *       connects masters (one per channel ARN of FILE) up to each step, waits
 *       until the process is idle, and reads RSS and threads at every step.
 *   footprint --lib PATH --mode queue --data DIR [--messages N] [--kind sdp|ice]
 *       starts one client against a closed port (kvs_client_start: sends
 *       queue while it retries) and queues N messages; RSS delta / N.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvs_signaling.h"

#define SYM(name) static __typeof__(name) *p_##name
SYM(kvs_client_config_default);
SYM(kvs_client_new);
SYM(kvs_client_connect);
SYM(kvs_client_start);
SYM(kvs_client_free);
SYM(kvs_send_sdp_offer);
SYM(kvs_send_ice_candidate);
SYM(kvs_result_str);
SYM(kvs_last_error_message);
SYM(kvs_shutdown);

/* One line of /proc/self/status in kB ("VmRSS", "RssAnon", "RssFile"). */
static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    size_t n = strlen(field);
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static long rss_kb(void) {
    return status_kb("VmRSS");
}

/* Prints `"<prefix>rss_kb":N,"<prefix>anon_kb":N,"<prefix>file_kb":N` (RSS,
 * its anonymous part - heap, stacks - and its file-backed part - code and
 * read-only data of the loaded libraries, shared and clean). */
static void print_rss(const char *prefix) {
    long rss = rss_kb(), anon = status_kb("RssAnon"), file = status_kb("RssFile");
    printf("\"%srss_kb\":%ld,\"%sanon_kb\":%ld,\"%sfile_kb\":%ld", prefix, rss, prefix, anon, prefix, file);
}

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void load(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "footprint: dlopen %s: %s\n", path, dlerror());
        exit(1);
    }
#define LOAD(name)                                                                              \
    do {                                                                                        \
        *(void **)(&p_##name) = dlsym(lib, #name);                                              \
        if (p_##name == NULL) {                                                                 \
            fprintf(stderr, "footprint: no symbol %s\n", #name);                                \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)
    LOAD(kvs_client_config_default);
    LOAD(kvs_client_new);
    LOAD(kvs_client_connect);
    LOAD(kvs_client_start);
    LOAD(kvs_client_free);
    LOAD(kvs_send_sdp_offer);
    LOAD(kvs_send_ice_candidate);
    LOAD(kvs_result_str);
    LOAD(kvs_last_error_message);
    LOAD(kvs_shutdown);
}

static void fail(const char *what, kvs_result rc) {
    fprintf(stderr, "footprint: %s: %s: %s\n", what, p_kvs_result_str(rc), p_kvs_last_error_message());
    exit(1);
}

static int mode_clients(const char *lib, const char *endpoint, const char *arns_file, const char *steps_text) {
    /* Everything this program needs is allocated before the first reading. */
    static char arns[1000][300];
    int narns = 0;
    FILE *f = fopen(arns_file, "r");
    if (f == NULL) {
        fprintf(stderr, "footprint: %s: %s\n", arns_file, strerror(errno));
        return 1;
    }
    while (narns < 1000 && fgets(arns[narns], sizeof arns[narns], f) != NULL) {
        arns[narns][strcspn(arns[narns], "\r\n")] = '\0';
        if (arns[narns][0] != '\0') {
            narns++;
        }
    }
    fclose(f);
    long steps[16];
    int nsteps = 0;
    char steps_copy[256];
    snprintf(steps_copy, sizeof steps_copy, "%s", steps_text);
    for (char *s = strtok(steps_copy, ","); s != NULL && nsteps < 16; s = strtok(NULL, ",")) {
        steps[nsteps++] = strtol(s, NULL, 10);
    }
    long max = steps[nsteps - 1];
    if (max > narns) {
        fprintf(stderr, "footprint: %ld clients need %ld channel ARNs; %d given\n", max, max, narns);
        return 1;
    }
    static kvs_client *clients[1000];
    (void)rss_kb();
    (void)thread_count();
    long rss0 = rss_kb(), anon0 = status_kb("RssAnon"), file0 = status_kb("RssFile");
    int threads0 = thread_count();
    load(lib);
    long rss_loaded = rss_kb(), anon_loaded = status_kb("RssAnon"), file_loaded = status_kb("RssFile");
    printf("{\"bench\":\"footprint\",\"mode\":\"clients\",\"rss_kb_before\":%ld,\"anon_kb_before\":%ld,"
           "\"file_kb_before\":%ld,\"threads_before\":%d,\"rss_kb_loaded\":%ld,\"anon_kb_loaded\":%ld,"
           "\"file_kb_loaded\":%ld,",
           rss0, anon0, file0, threads0, rss_loaded, anon_loaded, file_loaded);
    long connected = 0;
    for (int s = 0; s < nsteps; s++) {
        for (; connected < steps[s]; connected++) {
            kvs_client_config config = p_kvs_client_config_default();
            config.role = KVS_ROLE_MASTER;
            config.channel_arn = arns[connected];
            config.endpoint = endpoint;
            kvs_result rc = p_kvs_client_new(&config, &clients[connected]);
            if (rc != KVS_OK) {
                fail("kvs_client_new", rc);
            }
            if (connected == 0) {
                /* The runtime starts with the first client, before any socket. */
                print_rss("first_new_");
                printf(",\"threads_first_new\":%d,", thread_count());
            }
            rc = p_kvs_client_connect(clients[connected]);
            if (rc != KVS_OK) {
                fail("kvs_client_connect", rc);
            }
        }
        sleep_ms(500); /* idle: let the runtime settle */
        if (s == 0) {
            printf("\"steps\":[");
        }
        printf("%s{\"clients\":%ld,\"threads\":%d,", s ? "," : "", connected, thread_count());
        print_rss("");
        printf("}");
    }
    printf("]}\n");
    fflush(stdout);
    for (long i = 0; i < connected; i++) {
        p_kvs_client_free(clients[i]);
    }
    p_kvs_shutdown(2000);
    return 0;
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("footprint: closed port");
        exit(1);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

static char *read_text(const char *dir, const char *name, int crlf) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "footprint: cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    char *out = (char *)calloc(1, 65536);
    size_t n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL && n < 60000) {
        size_t len = strcspn(line, "\r\n");
        memcpy(out + n, line, len);
        n += len;
        if (crlf) {
            memcpy(out + n, "\r\n", 2);
            n += 2;
        }
    }
    fclose(f);
    out[n] = '\0';
    return out;
}

static int mode_queue(const char *lib, const char *data, long messages, const char *kind) {
    char *offer = read_text(data, "offer.sdp", 1);
    char *candidate = read_text(data, "candidate.txt", 0);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "ws://127.0.0.1:%d", closed_port());
    load(lib);
    kvs_client_config config = p_kvs_client_config_default();
    config.role = KVS_ROLE_VIEWER;
    config.channel_arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/footprint/1700000000000";
    config.client_id = "footprint-viewer";
    config.endpoint = endpoint;
    config.send_queue_capacity = (uint32_t)messages + 16;
    config.send_queue_timeout_ms = 600000;
    config.backoff_initial_ms = 5000;
    config.backoff_max_ms = 60000;
    kvs_client *client = NULL;
    kvs_result rc = p_kvs_client_new(&config, &client);
    if (rc == KVS_OK) {
        rc = p_kvs_client_start(client);
    }
    if (rc != KVS_OK) {
        fail("start", rc);
    }
    kvs_ice_candidate ice;
    ice.candidate = candidate;
    ice.sdp_mid = "0";
    ice.sdp_mline_index = 0;
    ice.username_fragment = NULL;
    /* One message first so that every lazily made structure exists. */
    rc = strcmp(kind, "ice") == 0 ? p_kvs_send_ice_candidate(client, NULL, &ice, NULL, NULL, 0, NULL)
                                  : p_kvs_send_sdp_offer(client, NULL, offer, NULL, NULL, 0, NULL);
    if (rc != KVS_OK) {
        fail("first send", rc);
    }
    sleep_ms(300);
    long before = rss_kb();
    for (long i = 0; i < messages; i++) {
        rc = strcmp(kind, "ice") == 0 ? p_kvs_send_ice_candidate(client, NULL, &ice, NULL, NULL, 0, NULL)
                                      : p_kvs_send_sdp_offer(client, NULL, offer, NULL, NULL, 0, NULL);
        if (rc != KVS_OK) {
            fail("send", rc);
        }
    }
    sleep_ms(100);
    long after = rss_kb();
    printf("{\"bench\":\"footprint\",\"mode\":\"queue\",\"kind\":\"%s\",\"messages\":%ld,"
           "\"payload_bytes\":%zu,\"rss_kb_before\":%ld,\"rss_kb_after\":%ld,\"bytes_per_message\":%.1f}\n",
           kind, messages, strlen(strcmp(kind, "ice") == 0 ? candidate : offer), before, after,
           (double)(after - before) * 1024.0 / (double)messages);
    fflush(stdout);
    p_kvs_client_free(client);
    p_kvs_shutdown(2000);
    free(offer);
    free(candidate);
    return 0;
}

int main(int argc, char **argv) {
    const char *lib = NULL, *mode = "clients", *endpoint = NULL, *arns = NULL, *data = "bench/data";
    const char *steps = "1,10,100", *kind = "sdp";
    long messages = 10000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--lib") == 0) {
            lib = v;
        } else if (strcmp(a, "--mode") == 0) {
            mode = v;
        } else if (strcmp(a, "--endpoint") == 0) {
            endpoint = v;
        } else if (strcmp(a, "--arns-file") == 0) {
            arns = v;
        } else if (strcmp(a, "--steps") == 0) {
            steps = v;
        } else if (strcmp(a, "--data") == 0) {
            data = v;
        } else if (strcmp(a, "--messages") == 0) {
            messages = strtol(v, NULL, 10);
        } else if (strcmp(a, "--kind") == 0) {
            kind = v;
        } else {
            fprintf(stderr, "footprint: unknown argument %s\n", a);
            return 2;
        }
    }
    if (lib == NULL || messages < 1) {
        fprintf(stderr, "usage: footprint --lib PATH --mode clients|queue ...\n");
        return 2;
    }
    if (strcmp(mode, "clients") == 0) {
        if (endpoint == NULL || arns == NULL) {
            fprintf(stderr, "footprint: --endpoint and --arns-file are required\n");
            return 2;
        }
        return mode_clients(lib, endpoint, arns, steps);
    }
    return mode_queue(lib, data, messages, kind);
}
