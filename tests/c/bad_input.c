/*
 * bad_input.c: calls every entry point of kvs_signaling.h with bad input and
 * checks the exact kvs_result and a last-error text set by that very call.
 *
 *   bad_input --endpoint ws://127.0.0.1:PORT --channel-arn ARN   (emulator)
 *   bad_input --offline                                           (no emulator)
 *
 * KVS_ENDPOINT / KVS_CHANNEL_ARN are used when the flags are absent. With an
 * emulator it also checks the callback rules: connect/disconnect/shutdown from
 * a callback return KVS_ERR_WOULD_DEADLOCK, kvs_client_free from a callback
 * returns KVS_ERR_IN_CALLBACK, and sends from a callback work. Give it a
 * channel no other master is using (it connects as the channel's master).
 *
 * Last line: "N passed, M failed"; the exit status is 1 on any failure.
 * Meant to run clean under
 *   valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1
 * Compiles as C11 and as C++ (see examples_c/Makefile).
 *
 * How "the last error was set by this call" is checked: before each call a
 * known failing call (kvs_set_log_callback with level 77, which has no other
 * effect) plants a marker text; after the call the last error must be
 * non-empty and differ from the marker.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvs_signaling.h"
#include "silent_listener.h"

/* ------------------------------------------------------------------------ */
/* Check bookkeeping.                                                       */

static int g_passed = 0;
static int g_failed = 0;
static pthread_t g_main_thread;

static const char *rc_name(uint32_t rc) { return kvs_result_name(rc); }
/* Codes 0 .. the last one of this header. */
#define RESULT_COUNT ((uint32_t)KVS_ERR_IOT_FORBIDDEN + 1u)

static void print_line(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static void print_line(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    flockfile(stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
    va_end(ap);
}

static void pass(int line, const char *what, const char *detail) {
    g_passed++;
    print_line("ok    %4d  %s%s%s", line, what, detail[0] != '\0' ? "  -- " : "", detail);
}

static void fail(int line, const char *what, const char *detail) {
    g_failed++;
    print_line("FAIL  %4d  %s  -- %s", line, what, detail);
}

/* Plants the marker text as this thread's last error and copies it out. */
static void prime_marker(char *marker, size_t cap) {
    kvs_result rc = kvs_set_log_callback(77, NULL, NULL, NULL);
    snprintf(marker, cap, "%s", rc == KVS_ERR_INVALID_ARGUMENT ? kvs_last_error_message() : "");
}

/* Judges one call: `got` against `want`, and for errors the last-error text
 * `msg` (read right after the call) against the marker planted before it. */
static void judge(int line, const char *what, uint32_t got, uint32_t want, const char *msg,
                  const char *marker) {
    char detail[768];
    if (got != want) {
        snprintf(detail, sizeof detail, "got %s (%u), want %s (%u); last error: \"%s\"",
                 rc_name(got), (unsigned)got, rc_name(want), (unsigned)want,
                 msg != NULL ? msg : "(NULL)");
        fail(line, what, detail);
        return;
    }
    if (want == KVS_OK) {
        pass(line, what, "KVS_OK");
        return;
    }
    if (msg == NULL || msg[0] == '\0') {
        snprintf(detail, sizeof detail, "%s but kvs_last_error_message() is empty", rc_name(got));
        fail(line, what, detail);
        return;
    }
    if (marker[0] != '\0' && strcmp(msg, marker) == 0) {
        snprintf(detail, sizeof detail, "%s but the call did not set the last error (still \"%s\")",
                 rc_name(got), msg);
        fail(line, what, detail);
        return;
    }
    snprintf(detail, sizeof detail, "%s: %s", rc_name(got), msg);
    pass(line, what, detail);
}

static char g_marker[512];

static uint32_t primed(void) {
    prime_marker(g_marker, sizeof g_marker);
    return 0;
}

/* EXPECT_RC(want, call): plants the marker, makes the call, judges it. */
#define EXPECT_RC(want, call)                                                                  \
    do {                                                                                       \
        uint32_t got_ = (primed(), (uint32_t)(call));                                          \
        judge(__LINE__, #call, got_, (uint32_t)(want), kvs_last_error_message(), g_marker);    \
    } while (0)

/* EXPECT_RC2(want_a, want_b, call): either code is right. */
#define EXPECT_RC2(want_a, want_b, call)                                                       \
    do {                                                                                       \
        uint32_t got_ = (primed(), (uint32_t)(call));                                          \
        uint32_t want_ = got_ == (uint32_t)(want_b) ? (uint32_t)(want_b) : (uint32_t)(want_a); \
        judge(__LINE__, #call, got_, want_, kvs_last_error_message(), g_marker);               \
    } while (0)

/* EXPECT_RC_KEEP(want, call): as EXPECT_RC without planting the marker, for
 * calls that read the last error themselves (kvs_last_error). */
#define EXPECT_RC_KEEP(want, call)                                                             \
    do {                                                                                       \
        uint32_t got_ = (uint32_t)(call);                                                      \
        judge(__LINE__, #call, got_, (uint32_t)(want), kvs_last_error_message(), "");          \
    } while (0)

static void expect_true(int line, int cond, const char *what, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void expect_true(int line, int cond, const char *what, const char *fmt, ...) {
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (cond) {
        pass(line, what, detail);
    } else {
        fail(line, what, detail);
    }
}

#define EXPECT_TRUE(cond, ...) expect_true(__LINE__, (cond) ? 1 : 0, #cond, __VA_ARGS__)

static void section(const char *name) {
    print_line("== %s", name);
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* kvs_client_connect, retried while the emulator's connect quota (3 per
 * second per channel and role, like the service) refuses it: the tests below
 * connect the same channel and role in quick succession, and scripts run this
 * program several times against one emulator. */
static kvs_result connect_paced(const kvs_client *client) {
    kvs_result rc = KVS_OK;
    for (int attempt = 0; attempt < 10; attempt++) {
        rc = kvs_client_connect(client);
        if (rc != KVS_ERR_LIMIT_EXCEEDED) {
            break;
        }
        print_line("      (the emulator's connect quota refused it; again in 400 ms)");
        sleep_ms(400);
    }
    return rc;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* kvs_client_connect on a thread of its own, for the calls that interrupt a
 * connect in progress (kvs_client_disconnect, kvs_shutdown). The last error
 * is per thread: it is copied out there. */
struct connect_job {
    const kvs_client *client;
    pthread_t thread;
    uint32_t rc;
    double ended_ms;
    char msg[256];
};

static void *connect_job_run(void *arg) {
    struct connect_job *job = (struct connect_job *)arg;
    job->rc = (uint32_t)kvs_client_connect(job->client);
    snprintf(job->msg, sizeof job->msg, "%s", kvs_last_error_message());
    job->ended_ms = now_ms();
    return NULL;
}

static int connect_job_start(struct connect_job *job, const kvs_client *client) {
    memset(job, 0, sizeof *job);
    job->client = client;
    return pthread_create(&job->thread, NULL, connect_job_run, job) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Userdata probes: count free_userdata, see which thread ran it, and catch */
/* callbacks that arrive after it.                                          */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

struct probe {
    const char *name;
    int free_calls;
    int freed_on_main_thread;
    int callbacks_after_free;
    int states_seen[8];
    int state_count;
    int status_reports;
};

static void probe_init(struct probe *p, const char *name) {
    memset(p, 0, sizeof *p);
    p->name = name;
}

static void probe_free(void *userdata) {
    struct probe *p = (struct probe *)userdata;
    pthread_mutex_lock(&g_lock);
    p->free_calls++;
    p->freed_on_main_thread = pthread_equal(pthread_self(), g_main_thread) ? 1 : 0;
    pthread_mutex_unlock(&g_lock);
}

static int probe_free_calls(struct probe *p) {
    pthread_mutex_lock(&g_lock);
    int n = p->free_calls;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* Waits up to `ms` for free_userdata to have run at least once; returns the count. */
static int probe_wait_freed(struct probe *p, long ms) {
    for (long waited = 0; waited < ms && probe_free_calls(p) == 0; waited += 5) {
        sleep_ms(5);
    }
    sleep_ms(20); /* a second, wrong call would show up here */
    return probe_free_calls(p);
}

/* Checks that free_userdata of `p` has already run exactly once, on the
 * calling thread, then that no second call follows. For kvs_client_new
 * failures and kvs_client_free, which run it on the calling thread before
 * they return (kvs_signaling.h, `free_userdata`). */
#define EXPECT_FREED_NOW(p)                                                                    \
    do {                                                                                       \
        int n_ = probe_free_calls(p);                                                          \
        sleep_ms(20);                                                                          \
        int later_ = probe_free_calls(p);                                                      \
        int main_ = (p)->freed_on_main_thread;                                                 \
        expect_true(__LINE__, n_ == 1 && later_ == 1 && main_,                                 \
                    "free_userdata ran once before returning, on the calling thread",          \
                    "%s: %d times on return, %d later%s", (p)->name, n_, later_,               \
                    n_ == 0 ? "" : main_ ? ", on the calling thread" : ", on another thread"); \
    } while (0)

/* Waits up to 3 s for free_userdata of `p`, then checks it ran exactly once
 * (the log callback's userdata may be released later, on another thread). */
#define EXPECT_FREED_EVENTUALLY(p)                                                             \
    do {                                                                                       \
        int n_ = probe_wait_freed((p), 3000);                                                  \
        expect_true(__LINE__, n_ == 1, "free_userdata ran once", "%s: %d times", (p)->name,    \
                    n_);                                                                       \
    } while (0)

static void probe_on_state(void *userdata, uint32_t state, const char *reason) {
    struct probe *p = (struct probe *)userdata;
    (void)reason;
    pthread_mutex_lock(&g_lock);
    if (p->free_calls > 0) {
        p->callbacks_after_free++;
    }
    if (p->state_count < (int)(sizeof p->states_seen / sizeof p->states_seen[0])) {
        p->states_seen[p->state_count++] = (int)state;
    }
    pthread_mutex_unlock(&g_lock);
}

static void probe_on_status(void *userdata, const kvs_status *status) {
    struct probe *p = (struct probe *)userdata;
    pthread_mutex_lock(&g_lock);
    if (p->free_calls > 0) {
        p->callbacks_after_free++;
    }
    p->status_reports++;
    pthread_mutex_unlock(&g_lock);
    print_line("      (%s: status report: %s %s: %s)", p->name,
               status->correlation_id != NULL ? status->correlation_id : "-",
               status->error_type != NULL ? status->error_type : "-",
               status->description != NULL ? status->description : "-");
}

static void probe_on_message(void *userdata, const kvs_message *message) {
    struct probe *p = (struct probe *)userdata;
    (void)message;
    pthread_mutex_lock(&g_lock);
    if (p->free_calls > 0) {
        p->callbacks_after_free++;
    }
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------------ */
/* Test data.                                                               */

static const char *const NON_UTF8 = "\xff\xfe";
static const char *const SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
static const char *const CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host";
static const char *const OFFLINE_ARN =
    "arn:aws:kinesisvideo:us-west-2:123456789012:channel/bad-input/1234567890123";

static char g_id256[257];     /* 256 'a': the longest valid id */
static char g_id257[258];     /* 257 'a': one too long */
static char g_sdp10001[10002]; /* over KVS_MAX_SDP_LEN */
static char g_sdp8000[8001];   /* under KVS_MAX_SDP_LEN, over the payload limit once encoded */
static uint8_t g_payload[7501];

static void fill_test_data(void) {
    memset(g_id256, 'a', 256);
    g_id256[256] = '\0';
    memset(g_id257, 'a', 257);
    g_id257[257] = '\0';
    memset(g_sdp10001, 's', 10001);
    g_sdp10001[10001] = '\0';
    memset(g_sdp8000, 's', 8000);
    g_sdp8000[8000] = '\0';
    memset(g_payload, 'p', sizeof g_payload);
}

/* Endpoint of a 127.0.0.1 port nobody listens on (bound, then closed). */
static int closed_port_endpoint(char *out, size_t cap) {
    int fd = loopback_socket(0, out, cap);
    if (fd < 0) {
        return -1;
    }
    close(fd);
    return 0;
}


/* ------------------------------------------------------------------------ */
/* Global functions.                                                        */

static int g_log_lines = 0;

static void count_log_line(void *userdata, uint32_t level, const char *target,
                           const char *message, size_t message_len) {
    (void)userdata;
    (void)level;
    (void)target;
    (void)message;
    (void)message_len;
    pthread_mutex_lock(&g_lock);
    g_log_lines++;
    pthread_mutex_unlock(&g_lock);
}

static void test_version(void) {
    section("kvs_version, KVS_VERSION_* macros");
    const char *version = kvs_version();
    EXPECT_TRUE(version != NULL, "kvs_version() is not NULL");
    if (version == NULL) {
        return;
    }
    char expected[64];
    snprintf(expected, sizeof expected, "kvs-signaling %d.%d.%d", KVS_VERSION_MAJOR,
             KVS_VERSION_MINOR, KVS_VERSION_PATCH);
    size_t n = strlen(expected);
    EXPECT_TRUE(strncmp(version, expected, n) == 0 && (version[n] == '\0' || version[n] == ' '),
                "\"%s\" starts with \"%s\"", version, expected);
    EXPECT_TRUE(KVS_VERSION_NUMBER ==
                    ((KVS_VERSION_MAJOR << 16) | (KVS_VERSION_MINOR << 8) | KVS_VERSION_PATCH),
                "KVS_VERSION_NUMBER 0x%06x", (unsigned)KVS_VERSION_NUMBER);
    EXPECT_TRUE(kvs_version() == version, "the same static string every time");
}

static void test_result_str(void) {
    section("kvs_result_str");
    int all_ok = 1;
    int distinct = 1;
    char bad[128] = "";
    for (uint32_t code = 0; code < RESULT_COUNT; code++) {
        const char *text = kvs_result_str(code);
        if (text == NULL || text[0] == '\0' || strcmp(text, "unknown result code") == 0) {
            all_ok = 0;
            snprintf(bad, sizeof bad, "code %u (%s) -> \"%s\"", (unsigned)code, rc_name(code),
                     text != NULL ? text : "(NULL)");
        }
        for (uint32_t other = 0; text != NULL && other < code; other++) {
            const char *other_text = kvs_result_str(other);
            if (other_text != NULL && strcmp(text, other_text) == 0) {
                distinct = 0;
            }
        }
    }
    EXPECT_TRUE(all_ok, "codes 0..%u all have their own text %s", (unsigned)RESULT_COUNT - 1, bad);
    EXPECT_TRUE(distinct, "no two codes share a text");
    EXPECT_TRUE(strcmp(kvs_result_str(KVS_OK), kvs_result_str(KVS_ERR_RUNTIME)) != 0,
                "\"%s\"", kvs_result_str(KVS_OK));
    const uint32_t unknown[] = {(uint32_t)RESULT_COUNT, 9999u, 0x7fffffffu, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *text = kvs_result_str(unknown[i]);
        EXPECT_TRUE(text != NULL && strcmp(text, "unknown result code") == 0,
                    "kvs_result_str(%u) -> \"%s\"", (unsigned)unknown[i],
                    text != NULL ? text : "(NULL)");
        const char *name = kvs_result_name(unknown[i]);
        EXPECT_TRUE(name != NULL && strcmp(name, "KVS_ERR_UNKNOWN") == 0, "kvs_result_name(%u) -> \"%s\"",
                    (unsigned)unknown[i], name != NULL ? name : "(NULL)");
    }
    section("kvs_result_name");
    int names_ok = 1;
    for (uint32_t code = 0; code < RESULT_COUNT; code++) {
        const char *name = kvs_result_name(code);
        if (name == NULL || strncmp(name, "KVS_", 4) != 0 || strcmp(name, "KVS_ERR_UNKNOWN") == 0) {
            names_ok = 0;
        }
        for (uint32_t other = 0; name != NULL && other < code; other++) {
            names_ok &= strcmp(name, kvs_result_name(other)) != 0;
        }
    }
    EXPECT_TRUE(names_ok, "codes 0..%u all have their own KVS_ name", (unsigned)RESULT_COUNT - 1);
    EXPECT_TRUE(strcmp(kvs_result_name(KVS_OK), "KVS_OK") == 0 &&
                    strcmp(kvs_result_name(KVS_ERR_PROXY_CLOSED), "KVS_ERR_PROXY_CLOSED") == 0 &&
                    strcmp(kvs_result_name(KVS_ERR_IOT_FORBIDDEN), "KVS_ERR_IOT_FORBIDDEN") == 0,
                "names match the header: %s %s %s", kvs_result_name(KVS_OK),
                kvs_result_name(KVS_ERR_PROXY_CLOSED), kvs_result_name(KVS_ERR_IOT_FORBIDDEN));
}

/* Makes this thread's last error a known text (a NULL-config failure) and
 * copies it into `out`. */
static void plant_known_error(char *out, size_t cap) {
    kvs_client *client = NULL;
    (void)kvs_client_new(NULL, &client);
    snprintf(out, cap, "%s", kvs_last_error_message());
}

/* A pthread key's destructor runs after the thread's other storage (the
 * library's last-error text included) is gone: calls there still return
 * their codes, and the last-error text is "" rather than an abort. */
static pthread_key_t g_late_key;
static uint32_t g_late_rc = KVS_OK;
static int g_late_message = -1; /* 1: a string, 0: NULL */

static void late_destructor(void *value) {
    (void)value;
    g_late_rc = (uint32_t)kvs_client_connect(NULL);
    g_late_message = kvs_last_error_message() != NULL;
}

static void *late_thread(void *arg) {
    (void)arg;
    (void)kvs_client_connect(NULL); /* the library's thread storage exists now */
    (void)pthread_setspecific(g_late_key, &g_late_key);
    return NULL;
}

static void test_last_error_in_a_key_destructor(void) {
    pthread_t thread;
    if (pthread_key_create(&g_late_key, late_destructor) != 0 ||
        pthread_create(&thread, NULL, late_thread, NULL) != 0) {
        fail(__LINE__, "pthread", "could not start the thread");
        return;
    }
    pthread_join(thread, NULL);
    (void)pthread_key_delete(g_late_key);
    EXPECT_TRUE(g_late_rc == KVS_ERR_NULL_PARAMETER && g_late_message == 1,
                "in a key destructor after the thread's storage is gone: %s, message %s",
                rc_name(g_late_rc), g_late_message == 1 ? "a string" : "NULL or not called");
}

static void test_last_error(void) {
    section("kvs_last_error, kvs_last_error_message");
    EXPECT_TRUE(kvs_last_error_message() != NULL, "never NULL");

    char known[512];
    char buf[512];
    /* kvs_last_error never replaces the text it reports, even when it fails. */
    plant_known_error(known, sizeof known);
    EXPECT_TRUE(kvs_last_error(NULL, 0, NULL) == KVS_ERR_NULL_PARAMETER &&
                    strcmp(kvs_last_error_message(), known) == 0,
                "kvs_last_error(NULL, 0, NULL) -> NULL_PARAMETER, text kept: \"%s\"", kvs_last_error_message());
    EXPECT_TRUE(kvs_last_error(NULL, 100, NULL) == KVS_ERR_NULL_PARAMETER &&
                    strcmp(kvs_last_error_message(), known) == 0,
                "kvs_last_error(NULL, 100, NULL) -> NULL_PARAMETER, text kept: \"%s\"", kvs_last_error_message());
    size_t n = 0;
    plant_known_error(known, sizeof known);
    EXPECT_TRUE(known[0] != '\0', "a NULL config leaves a text: \"%s\"", known);
    size_t known_len = strlen(known);

    /* Big enough. */
    plant_known_error(known, sizeof known);
    n = 0;
    EXPECT_RC_KEEP(KVS_OK, kvs_last_error(buf, sizeof buf, &n));
    EXPECT_TRUE(strcmp(buf, known) == 0 && n == known_len, "copied \"%s\" (%zu bytes)", buf, n);

    /* Exactly big enough, out_len NULL. */
    plant_known_error(known, sizeof known);
    memset(buf, 'Z', sizeof buf);
    EXPECT_RC_KEEP(KVS_OK, kvs_last_error(buf, known_len + 1, NULL));
    EXPECT_TRUE(strcmp(buf, known) == 0, "copied into exactly strlen+1 bytes");

    /* The documented size query: buf NULL, then a buffer of that size. */
    plant_known_error(known, sizeof known);
    n = 12345;
    EXPECT_RC_KEEP(KVS_OK, kvs_last_error(NULL, 0, &n));
    EXPECT_TRUE(n == known_len, "size query: %zu (want %zu)", n, known_len);
    char *exact = (char *)malloc(n + 1);
    if (exact != NULL) {
        size_t n2 = 0;
        memset(exact, 'Z', n + 1);
        EXPECT_RC_KEEP(KVS_OK, kvs_last_error(exact, n + 1, &n2));
        EXPECT_TRUE(strcmp(exact, known) == 0 && n2 == known_len,
                    "after the size query: \"%s\" (want \"%s\")", exact, known);
        free(exact);
    }

    /* One byte short: KVS_ERR_BUFFER_TOO_SMALL, out_len = the length needed,
     * "nothing else is written". */
    plant_known_error(known, sizeof known);
    memset(buf, 'Z', sizeof buf);
    n = 12345;
    EXPECT_RC_KEEP(KVS_ERR_BUFFER_TOO_SMALL, kvs_last_error(buf, known_len, &n));
    EXPECT_TRUE(n == known_len, "out_len = needed length without the NUL (%zu, want %zu)", n,
                known_len);
    EXPECT_TRUE(buf[0] == 'Z' && buf[known_len - 1] == 'Z', "buffer untouched");

    /* Capacity 0. */
    plant_known_error(known, sizeof known);
    EXPECT_RC_KEEP(KVS_ERR_BUFFER_TOO_SMALL, kvs_last_error(buf, 0, &n));

    /* Too small, then a retry with the length reported: the retry must get the
     * text the caller asked about. (A getter that fails must not replace the
     * text it reports on; otherwise the reported length is stale at once.) */
    plant_known_error(known, sizeof known);
    char small[4];
    n = 0;
    kvs_result rc = kvs_last_error(small, sizeof small, &n);
    EXPECT_TRUE(rc == KVS_ERR_BUFFER_TOO_SMALL && n == known_len, "first call: %s, needed %zu",
                rc_name(rc), n);
    exact = (char *)malloc(n + 1);
    if (exact != NULL) {
        size_t n2 = 0;
        rc = kvs_last_error(exact, n + 1, &n2);
        EXPECT_TRUE(rc == KVS_OK && strcmp(exact, known) == 0,
                    "retry with the reported length: %s, \"%s\" (want KVS_OK, \"%s\")",
                    rc_name(rc), rc == KVS_OK ? exact : kvs_last_error_message(), known);
        free(exact);
    }
    test_last_error_in_a_key_destructor();
}

static struct probe g_log_probe_a;
static struct probe g_log_probe_b;

static void test_set_log_callback(void) {
    section("kvs_set_log_callback");
    struct probe p;

    probe_init(&p, "log-invalid-level");
    EXPECT_RC(KVS_ERR_INVALID_ARGUMENT, kvs_set_log_callback(6, count_log_line, &p, probe_free));
    EXPECT_TRUE(probe_free_calls(&p) == 1, "free_userdata ran %d times before returning (want 1)",
                probe_free_calls(&p));

    probe_init(&p, "log-invalid-level-null-cb");
    EXPECT_RC(KVS_ERR_INVALID_ARGUMENT, kvs_set_log_callback(9999, NULL, &p, probe_free));
    EXPECT_TRUE(probe_free_calls(&p) == 1, "free_userdata ran %d times before returning (want 1)",
                probe_free_calls(&p));

    probe_init(&p, "log-null-cb");
    EXPECT_RC(KVS_OK, kvs_set_log_callback(KVS_LOG_LEVEL_WARN, NULL, &p, probe_free));
    EXPECT_TRUE(probe_free_calls(&p) == 1,
                "NULL callback: userdata is not kept, free_userdata ran %d times (want 1)",
                probe_free_calls(&p));

    probe_init(&p, "log-off");
    EXPECT_RC(KVS_OK, kvs_set_log_callback(KVS_LOG_LEVEL_OFF, count_log_line, &p, probe_free));
    EXPECT_TRUE(probe_free_calls(&p) == 1,
                "KVS_LOG_LEVEL_OFF: userdata is not kept, free_userdata ran %d times (want 1)",
                probe_free_calls(&p));

    /* Install A, replace it with B: A is released exactly once. B stays for the
     * rest of the run (at TRACE, so the log path runs under valgrind). */
    probe_init(&g_log_probe_a, "log-a");
    probe_init(&g_log_probe_b, "log-b");
    EXPECT_RC(KVS_OK,
              kvs_set_log_callback(KVS_LOG_LEVEL_DEBUG, count_log_line, &g_log_probe_a, probe_free));
    EXPECT_TRUE(probe_free_calls(&g_log_probe_a) == 0, "A kept while installed");
    EXPECT_RC(KVS_OK,
              kvs_set_log_callback(KVS_LOG_LEVEL_TRACE, count_log_line, &g_log_probe_b, probe_free));
    EXPECT_FREED_EVENTUALLY(&g_log_probe_a);
    EXPECT_TRUE(probe_free_calls(&g_log_probe_b) == 0, "B kept while installed");
}

static void finish_log_callback(void) {
    section("kvs_set_log_callback (restore the default)");
    EXPECT_RC(KVS_OK, kvs_set_log_callback(KVS_LOG_LEVEL_WARN, NULL, NULL, NULL));
    EXPECT_FREED_EVENTUALLY(&g_log_probe_b);
    pthread_mutex_lock(&g_lock);
    int lines = g_log_lines;
    pthread_mutex_unlock(&g_lock);
    print_line("      (the log callback received %d lines)", lines);
}

/* ------------------------------------------------------------------------ */
/* kvs_client_config_default, kvs_client_new.                               */

static void test_config_default(void) {
    section("kvs_client_config_default");
    kvs_client_config c = kvs_client_config_default();
    EXPECT_TRUE(c.role == KVS_ROLE_MASTER && c.channel_arn == NULL && c.client_id == NULL &&
                    c.endpoint == NULL && c.region == NULL && c.connect_timeout_ms == 0 &&
                    c.send_queue_capacity == 0 && c.on_message == NULL && c.on_status == NULL &&
                    c.on_state == NULL && c.userdata == NULL && c.free_userdata == NULL,
                "every field at its documented default");
    EXPECT_TRUE(!c.use_control_plane && c.channel_name == NULL && c.control_plane_url == NULL &&
                    !c.use_fips && !c.use_dual_stack && c.ca_bundle_path == NULL &&
                    c.access_key_id == NULL && c.secret_access_key == NULL &&
                    c.session_token == NULL && !c.credentials_from_env &&
                    c.credentials_callback == NULL && !c.create_channel &&
                    c.message_ttl_s == 0 && c.endpoint_cache_path == NULL &&
                    c.endpoint_cache_ttl_s == 0 && !c.skip_ice_servers &&
                    c.on_ice_servers == NULL,
                "the control-plane fields at their defaults (off, NULL, 0)");
}

static kvs_client_config base_config(uint32_t role, struct probe *p) {
    kvs_client_config c = kvs_client_config_default();
    c.role = role;
    c.channel_arn = OFFLINE_ARN;
    c.endpoint = "ws://127.0.0.1:9";
    c.client_id = role == KVS_ROLE_VIEWER ? "viewer-1" : NULL;
    c.on_message = probe_on_message;
    c.on_status = probe_on_status;
    c.on_state = probe_on_state;
    c.userdata = p;
    c.free_userdata = probe_free;
    return c;
}

/* kvs_client_new must fail with `want`, leave *out_client alone and call
 * free_userdata exactly once on this thread before returning. */
static void expect_new_fails(int line, const char *what, kvs_client_config *c, uint32_t want) {
    struct probe p;
    probe_init(&p, what);
    c->userdata = &p;
    c->free_userdata = probe_free;
    static int sentinel_object;
    kvs_client *sentinel = (kvs_client *)(void *)&sentinel_object;
    kvs_client *out = sentinel;
    primed();
    uint32_t got = (uint32_t)kvs_client_new(c, &out);
    judge(line, what, got, want, kvs_last_error_message(), g_marker);
    if (out != sentinel) {
        fail(line, what, "*out_client was written on failure");
        if (got == KVS_OK) {
            (void)kvs_client_free(out);
        }
        return;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "free_userdata ran %d times%s", p.free_calls,
             p.free_calls == 1 && !p.freed_on_main_thread ? " but not on the calling thread" : "");
    if (p.free_calls == 1 && p.freed_on_main_thread) {
        pass(line, "  ...userdata released once, before returning", detail);
    } else {
        fail(line, "  ...userdata released once, before returning", detail);
    }
}

#define EXPECT_NEW_FAILS(config_expr, want, label)                                             \
    do {                                                                                       \
        kvs_client_config c_ = (config_expr);                                                  \
        expect_new_fails(__LINE__, label, &c_, (uint32_t)(want));                              \
    } while (0)

static kvs_client_config with_arn(kvs_client_config c, const char *v) {
    c.channel_arn = v;
    return c;
}
static kvs_client_config with_endpoint(kvs_client_config c, const char *v) {
    c.endpoint = v;
    return c;
}
static kvs_client_config with_client_id(kvs_client_config c, const char *v) {
    c.client_id = v;
    return c;
}
static kvs_client_config with_region(kvs_client_config c, const char *v) {
    c.region = v;
    return c;
}
static kvs_client_config with_role(kvs_client_config c, uint32_t v) {
    c.role = v;
    return c;
}

static void test_client_new(void) {
    section("kvs_client_new");
    struct probe unused;
    probe_init(&unused, "unused");
    const kvs_client_config master = base_config(KVS_ROLE_MASTER, &unused);
    const kvs_client_config viewer = base_config(KVS_ROLE_VIEWER, &unused);

    {
        static int sentinel_object;
        kvs_client *sentinel = (kvs_client *)(void *)&sentinel_object;
        kvs_client *out = sentinel;
        EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_new(NULL, &out));
        EXPECT_TRUE(out == sentinel, "*out_client untouched");
    }
    {
        struct probe p;
        probe_init(&p, "null-out");
        kvs_client_config c = base_config(KVS_ROLE_MASTER, &p);
        EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_new(&c, NULL));
        EXPECT_TRUE(p.free_calls == 1 && p.freed_on_main_thread,
                    "free_userdata ran %d times (want 1, on this thread)", p.free_calls);
    }

    EXPECT_NEW_FAILS(with_arn(master, NULL), KVS_ERR_NULL_PARAMETER, "channel_arn NULL");
    EXPECT_NEW_FAILS(with_endpoint(master, NULL), KVS_ERR_NULL_PARAMETER, "endpoint NULL");
    EXPECT_NEW_FAILS(with_client_id(viewer, NULL), KVS_ERR_NULL_PARAMETER,
                     "viewer without client_id");

    EXPECT_NEW_FAILS(with_arn(master, NON_UTF8), KVS_ERR_INVALID_UTF8, "channel_arn not UTF-8");
    EXPECT_NEW_FAILS(with_endpoint(master, NON_UTF8), KVS_ERR_INVALID_UTF8, "endpoint not UTF-8");
    EXPECT_NEW_FAILS(with_client_id(viewer, NON_UTF8), KVS_ERR_INVALID_UTF8,
                     "client_id not UTF-8");
    EXPECT_NEW_FAILS(with_region(master, NON_UTF8), KVS_ERR_INVALID_UTF8, "region not UTF-8");

    EXPECT_NEW_FAILS(with_client_id(viewer, g_id257), KVS_ERR_INVALID_CONFIG,
                     "client_id of 257 characters");
    EXPECT_NEW_FAILS(with_client_id(viewer, ""), KVS_ERR_INVALID_CONFIG, "client_id empty");
    EXPECT_NEW_FAILS(with_client_id(viewer, "a b"), KVS_ERR_INVALID_CONFIG, "client_id \"a b\"");
    EXPECT_NEW_FAILS(with_client_id(viewer, "a/b"), KVS_ERR_INVALID_CONFIG, "client_id \"a/b\"");
    EXPECT_NEW_FAILS(with_client_id(viewer, "AWS_viewer"), KVS_ERR_INVALID_CONFIG,
                     "client_id \"AWS_viewer\"");
    EXPECT_NEW_FAILS(with_client_id(viewer, "aws_viewer"), KVS_ERR_INVALID_CONFIG,
                     "client_id \"aws_viewer\"");
    EXPECT_NEW_FAILS(with_client_id(master, "m"), KVS_ERR_INVALID_CONFIG,
                     "master with a client_id");

    EXPECT_NEW_FAILS(with_role(master, 2), KVS_ERR_INVALID_CONFIG, "role 2");
    EXPECT_NEW_FAILS(with_role(master, 0xffffffffu), KVS_ERR_INVALID_CONFIG, "role 0xffffffff");

    EXPECT_NEW_FAILS(with_arn(master, ""), KVS_ERR_INVALID_CONFIG, "channel_arn empty");
    EXPECT_NEW_FAILS(with_arn(master, "arn:bad"), KVS_ERR_INVALID_CONFIG,
                     "channel_arn \"arn:bad\"");
    EXPECT_NEW_FAILS(with_endpoint(master, ""), KVS_ERR_INVALID_CONFIG, "endpoint empty");
    EXPECT_NEW_FAILS(with_endpoint(master, "http://127.0.0.1:9"), KVS_ERR_INVALID_CONFIG,
                     "endpoint http://");
    EXPECT_NEW_FAILS(with_endpoint(master, "ws://127.0.0.1:9/?X-Amz-ChannelARN=x"),
                     KVS_ERR_INVALID_CONFIG, "endpoint with a query string");
    EXPECT_NEW_FAILS(with_region(master, ""), KVS_ERR_INVALID_CONFIG, "region empty");
    EXPECT_NEW_FAILS(with_region(master, "US-WEST-2"), KVS_ERR_INVALID_CONFIG,
                     "region upper case");

    /* Boundaries that must work: a 256-character client id; no callbacks at all. */
    {
        struct probe p;
        probe_init(&p, "id256");
        kvs_client_config c = base_config(KVS_ROLE_VIEWER, &p);
        c.client_id = g_id256;
        kvs_client *client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        EXPECT_TRUE(client != NULL && p.free_calls == 0, "client made, userdata kept");
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    }
    {
        kvs_client_config c = kvs_client_config_default();
        c.channel_arn = OFFLINE_ARN;
        c.endpoint = "ws://127.0.0.1:9";
        kvs_client *client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        EXPECT_RC(KVS_OK, kvs_client_free(client));
    }
}

/* ------------------------------------------------------------------------ */
/* Sends on clients that are not connected.                                 */

typedef kvs_result (*sdp_send_fn)(const struct kvs_client *, const char *, const char *,
                                  const char *, char *, size_t, size_t *);

static void test_sdp_send(const char *name, sdp_send_fn send, kvs_client *master,
                          kvs_client *viewer) {
    char title[96];
    snprintf(title, sizeof title, "%s (not connected)", name);
    section(title);
    char out[KVS_CORRELATION_ID_CAPACITY];
    size_t out_len = 0;

    EXPECT_RC(KVS_ERR_NULL_PARAMETER, send(NULL, "v1", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, send(master, "v1", NULL, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_PAYLOAD_EMPTY, send(master, "v1", "", NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8, send(master, "v1", NON_UTF8, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE, send(master, "v1", g_sdp10001, NULL, NULL, 0, NULL));
    /* Within KVS_MAX_SDP_LEN, yet over 10,000 characters once wrapped and encoded. */
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE, send(master, "v1", g_sdp8000, NULL, NULL, 0, NULL));

    EXPECT_RC(KVS_ERR_RECIPIENT_REQUIRED, send(master, NULL, SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_RECIPIENT_NOT_ALLOWED, send(viewer, "master", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_EMPTY, send(master, "", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_TOO_LONG, send(master, g_id257, SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, send(master, "a b", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, send(master, "a/b", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8, send(master, NON_UTF8, SDP, NULL, NULL, 0, NULL));

    EXPECT_RC(KVS_ERR_ID_EMPTY, send(master, "v1", SDP, "", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_TOO_LONG, send(master, "v1", SDP, g_id257, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, send(master, "v1", SDP, "a b", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, send(viewer, NULL, SDP, "a/b", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8, send(viewer, NULL, SDP, NON_UTF8, NULL, 0, NULL));

    memset(out, 'Z', sizeof out);
    out_len = 12345;
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
              send(master, "v1", SDP, NULL, out, KVS_CORRELATION_ID_CAPACITY - 1, &out_len));
    EXPECT_TRUE(out[0] == 'Z' && out_len == KVS_CORRELATION_ID_CAPACITY - 1,
                "the buffer untouched, out_len the length needed (%zu)", out_len);
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL, send(viewer, NULL, SDP, "c1", out, 1, &out_len));

    /* Valid calls: refused only because nothing is connected. */
    out_len = 12345;
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, send(master, "v1", SDP, NULL, out, sizeof out, &out_len));
    EXPECT_TRUE(out[0] == 'Z' && out_len == 12345, "outputs untouched on failure");
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, send(master, g_id256, SDP, g_id256, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, send(viewer, NULL, SDP, "c.1-_X", NULL, 0, &out_len));
}

static void test_ice_send(kvs_client *master, kvs_client *viewer) {
    section("kvs_send_ice_candidate (not connected)");
    kvs_ice_candidate c;
    c.candidate = CANDIDATE;
    c.sdp_mid = "0";
    c.sdp_mline_index = 0;
    c.username_fragment = "frag";
    kvs_ice_candidate bad = c;
    char out[KVS_CORRELATION_ID_CAPACITY];
    size_t out_len = 0;

    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_send_ice_candidate(NULL, "v1", &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_send_ice_candidate(master, "v1", NULL, NULL, NULL, 0, NULL));
    bad = c;
    bad.candidate = NULL;
    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.candidate = "";
    EXPECT_RC(KVS_ERR_PAYLOAD_EMPTY,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.candidate = NON_UTF8;
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.candidate = g_sdp10001;
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.candidate = g_sdp8000;
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad = c;
    bad.sdp_mid = NON_UTF8;
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.sdp_mid = g_id257;
    EXPECT_RC(KVS_ERR_INVALID_ARGUMENT,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad = c;
    bad.username_fragment = NON_UTF8;
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.username_fragment = g_id257;
    EXPECT_RC(KVS_ERR_INVALID_ARGUMENT,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad = c;
    bad.sdp_mline_index = 65536;
    EXPECT_RC(KVS_ERR_INVALID_ARGUMENT,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));

    EXPECT_RC(KVS_ERR_RECIPIENT_REQUIRED,
              kvs_send_ice_candidate(master, NULL, &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_RECIPIENT_NOT_ALLOWED,
              kvs_send_ice_candidate(viewer, "m", &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_EMPTY, kvs_send_ice_candidate(master, "", &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_TOO_LONG,
              kvs_send_ice_candidate(master, g_id257, &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, kvs_send_ice_candidate(master, "a b", &c, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN, kvs_send_ice_candidate(viewer, NULL, &c, "a/b", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_EMPTY, kvs_send_ice_candidate(viewer, NULL, &c, "", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_ice_candidate(viewer, NULL, &c, NON_UTF8, NULL, 0, NULL));
    memset(out, 'Z', sizeof out);
    out_len = 12345;
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
              kvs_send_ice_candidate(viewer, NULL, &c, NULL, out, sizeof out - 1, &out_len));
    EXPECT_TRUE(out[0] == 'Z' && out_len == KVS_CORRELATION_ID_CAPACITY - 1,
                "the buffer untouched, out_len the length needed (%zu)", out_len);

    EXPECT_RC(KVS_ERR_NOT_CONNECTED,
              kvs_send_ice_candidate(viewer, NULL, &c, NULL, out, sizeof out, &out_len));
    bad = c;
    bad.sdp_mid = NULL;
    bad.username_fragment = NULL;
    bad.sdp_mline_index = -1; /* all optional fields left out */
    EXPECT_RC(KVS_ERR_NOT_CONNECTED,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
    bad.sdp_mline_index = 65535;
    EXPECT_RC(KVS_ERR_NOT_CONNECTED,
              kvs_send_ice_candidate(master, "v1", &bad, NULL, NULL, 0, NULL));
}

static void test_message_send(kvs_client *master, kvs_client *viewer) {
    section("kvs_send_message (not connected)");
    const uint8_t *json = (const uint8_t *)"{\"type\":\"offer\",\"sdp\":\"v=0\"}";
    size_t json_len = strlen((const char *)json);
    char out[KVS_CORRELATION_ID_CAPACITY];
    size_t out_len = 0;
    const uint32_t offer = KVS_MESSAGE_TYPE_SDP_OFFER;

    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_send_message(NULL, offer, "v1", json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_send_message(master, offer, "v1", NULL, 10, NULL, NULL, 0, NULL));
    /* NULL with length 0 is an empty payload, not a NULL pointer. */
    EXPECT_RC(KVS_ERR_PAYLOAD_EMPTY,
              kvs_send_message(master, offer, "v1", NULL, 0, NULL, NULL, 0, NULL));
    const uint32_t bad_actions[] = {0, KVS_MESSAGE_TYPE_GO_AWAY,
                                    KVS_MESSAGE_TYPE_RECONNECT_ICE_SERVER, 99, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_actions / sizeof bad_actions[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "kvs_send_message(master, action %u, ...)",
                 (unsigned)bad_actions[i]);
        primed();
        uint32_t got = (uint32_t)kvs_send_message(master, bad_actions[i], "v1", json, json_len,
                                                  NULL, NULL, 0, NULL);
        judge(__LINE__, what, got, KVS_ERR_INVALID_ARGUMENT, kvs_last_error_message(), g_marker);
    }
    EXPECT_RC(KVS_ERR_PAYLOAD_EMPTY,
              kvs_send_message(master, offer, "v1", json, 0, NULL, NULL, 0, NULL));
    /* 7,500 bytes encode to exactly 10,000 base64 characters; 7,501 do not fit. */
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE,
              kvs_send_message(master, offer, "v1", g_payload, 7501, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NOT_CONNECTED,
              kvs_send_message(master, offer, "v1", g_payload, 7500, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_RECIPIENT_REQUIRED,
              kvs_send_message(master, offer, NULL, json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_RECIPIENT_NOT_ALLOWED,
              kvs_send_message(viewer, offer, "m", json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_EMPTY,
              kvs_send_message(master, offer, "", json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_TOO_LONG,
              kvs_send_message(master, offer, g_id257, json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN,
              kvs_send_message(master, offer, "a/b", json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_message(master, offer, NON_UTF8, json, json_len, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_PATTERN,
              kvs_send_message(viewer, offer, NULL, json, json_len, "a b", NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_ID_TOO_LONG,
              kvs_send_message(viewer, offer, NULL, json, json_len, g_id257, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8,
              kvs_send_message(viewer, offer, NULL, json, json_len, NON_UTF8, NULL, 0, NULL));
    memset(out, 'Z', sizeof out);
    out_len = 12345;
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL, kvs_send_message(viewer, offer, NULL, json, json_len, NULL,
                                                         out, 16, &out_len));
    EXPECT_TRUE(out[0] == 'Z' && out_len == KVS_CORRELATION_ID_CAPACITY - 1,
                "the buffer untouched, out_len the length needed (%zu)", out_len);
    /* The payload is raw bytes: not UTF-8 is fine. */
    EXPECT_RC(KVS_ERR_NOT_CONNECTED,
              kvs_send_message(viewer, KVS_MESSAGE_TYPE_ICE_CANDIDATE, NULL,
                               (const uint8_t *)NON_UTF8, 2, NULL, out, sizeof out, &out_len));
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, kvs_send_message(viewer, KVS_MESSAGE_TYPE_SDP_ANSWER, NULL,
                                                      json, json_len, NULL, NULL, 0, NULL));
}

static void test_unconnected_clients(void) {
    section("client lifecycle without a service");
    struct probe pm, pv;
    probe_init(&pm, "offline-master");
    probe_init(&pv, "offline-viewer");
    kvs_client_config cm = base_config(KVS_ROLE_MASTER, &pm);
    kvs_client_config cv = base_config(KVS_ROLE_VIEWER, &pv);
    kvs_client *master = NULL;
    kvs_client *viewer = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&cm, &master));
    EXPECT_RC(KVS_OK, kvs_client_new(&cv, &viewer));
    if (master == NULL || viewer == NULL) {
        fail(__LINE__, "offline clients", "cannot go on without them");
        (void)kvs_client_free(master);
        (void)kvs_client_free(viewer);
        return;
    }

    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_connect(NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_disconnect(NULL));
    EXPECT_RC(KVS_OK, kvs_client_disconnect(master)); /* not connected: a no-op */
    EXPECT_RC(KVS_OK, kvs_client_free(NULL));
    EXPECT_TRUE(kvs_client_state(NULL) == KVS_STATE_DISCONNECTED, "kvs_client_state(NULL)");
    EXPECT_TRUE(kvs_client_state(master) == KVS_STATE_DISCONNECTED, "a new client");

    test_sdp_send("kvs_send_sdp_offer", kvs_send_sdp_offer, master, viewer);
    test_sdp_send("kvs_send_sdp_answer", kvs_send_sdp_answer, master, viewer);
    test_ice_send(master, viewer);
    test_message_send(master, viewer);

    section("client lifecycle without a service (free)");
    EXPECT_RC(KVS_OK, kvs_client_free(master));
    EXPECT_RC(KVS_OK, kvs_client_free(viewer));
    EXPECT_FREED_NOW(&pm);
    EXPECT_FREED_NOW(&pv);
    EXPECT_TRUE(pm.state_count == 0 && pm.status_reports == 0,
                "no callbacks for a client that never connected");
}

static void test_connect_failures(void) {
    section("kvs_client_connect to a closed port and to a silent one");
    char endpoint[64];
    if (closed_port_endpoint(endpoint, sizeof endpoint) != 0) {
        fail(__LINE__, "closed_port_endpoint", "could not find a closed port");
        return;
    }
    struct probe p;
    probe_init(&p, "closed-port");
    kvs_client_config c = base_config(KVS_ROLE_VIEWER, &p);
    c.endpoint = endpoint;
    c.connect_timeout_ms = 3000;
    kvs_client *client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    if (client == NULL) {
        return;
    }
    print_line("      (connecting to %s)", endpoint);
    EXPECT_RC2(KVS_ERR_NETWORK, KVS_ERR_TIMEOUT, kvs_client_connect(client));
    EXPECT_TRUE(kvs_client_state(client) == KVS_STATE_DISCONNECTED, "state after the failure");
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, kvs_send_sdp_offer(client, NULL, SDP, NULL, NULL, 0, NULL));
    /* A failed connect can be retried: same answer, no ALREADY_CONNECTED. */
    EXPECT_RC2(KVS_ERR_NETWORK, KVS_ERR_TIMEOUT, kvs_client_connect(client));
    EXPECT_RC(KVS_OK, kvs_client_free(client));
    EXPECT_FREED_NOW(&p);
    pthread_mutex_lock(&g_lock);
    int seen_connecting = p.state_count >= 2 && p.states_seen[0] == KVS_STATE_CONNECTING &&
                          p.states_seen[1] == KVS_STATE_DISCONNECTED;
    int late = p.callbacks_after_free;
    pthread_mutex_unlock(&g_lock);
    EXPECT_TRUE(seen_connecting, "on_state saw CONNECTING then DISCONNECTED (%d states)",
                p.state_count);
    EXPECT_TRUE(late == 0, "no callback after free_userdata (%d)", late);

    /* TCP connects but the handshake never completes: the connect timeout. */
    int fd = silent_listener(endpoint, sizeof endpoint);
    if (fd < 0) {
        fail(__LINE__, "silent_listener", "could not listen on 127.0.0.1");
        return;
    }
    probe_init(&p, "silent-port");
    c = base_config(KVS_ROLE_VIEWER, &p);
    c.endpoint = endpoint;
    c.connect_timeout_ms = 300;
    client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    if (client != NULL) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        EXPECT_RC(KVS_ERR_TIMEOUT, kvs_client_connect(client));
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        EXPECT_TRUE(ms >= 250 && ms < 5000, "gave up after %.0f ms (connect_timeout_ms 300)", ms);
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    }

    /* The same silent port with a long timeout: kvs_client_disconnect from
     * another thread abandons the connect, which returns KVS_ERR_CANCELLED. */
    section("kvs_client_connect abandoned by kvs_client_disconnect -> KVS_ERR_CANCELLED");
    probe_init(&p, "cancelled-connect");
    c = base_config(KVS_ROLE_VIEWER, &p);
    c.endpoint = endpoint;
    c.connect_timeout_ms = 20000;
    client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    struct connect_job job;
    if (client != NULL && connect_job_start(&job, client) == 0) {
        sleep_ms(300); /* the connect is waiting for the handshake by now */
        double asked = now_ms();
        EXPECT_RC(KVS_OK, kvs_client_disconnect(client));
        pthread_join(job.thread, NULL);
        judge(__LINE__, "kvs_client_connect (on another thread) while disconnected", job.rc,
              KVS_ERR_CANCELLED, job.msg, "");
        EXPECT_TRUE(job.ended_ms - asked < 3000,
                    "the connect returned %.0f ms after kvs_client_disconnect (timeout 20 s)",
                    job.ended_ms - asked);
        EXPECT_TRUE(kvs_client_state(client) == KVS_STATE_DISCONNECTED, "DISCONNECTED after it");
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    } else if (client != NULL) {
        fail(__LINE__, "pthread_create", "no connect thread");
        (void)kvs_client_free(client);
    }
    close(fd);
}

/* ------------------------------------------------------------------------ */
/* The control-plane entry points without a service.                        */

static void test_new_result_codes(void) {
    section("result codes added later: control plane, client lifecycle, proxy");
    const uint32_t codes[] = {KVS_ERR_TLS,          KVS_ERR_SERVICE_INVALID_ARGUMENT,
                              KVS_ERR_RESOURCE_IN_USE, KVS_ERR_SERVICE,
                              KVS_ERR_BAD_RESPONSE, KVS_ERR_CREDENTIALS,
                              KVS_ERR_CLOSED,       KVS_ERR_CANCELLED,
                              KVS_ERR_PROXY_UNREACHABLE, KVS_ERR_PROXY_AUTH_REQUIRED,
                              KVS_ERR_PROXY_REFUSED, KVS_ERR_PROXY_CLOSED};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *text = kvs_result_str(codes[i]);
        EXPECT_TRUE(text != NULL && text[0] != '\0' && strcmp(text, "unknown result code") != 0,
                    "%s (%u) -> \"%s\"", rc_name(codes[i]), (unsigned)codes[i],
                    text != NULL ? text : "(NULL)");
    }
    EXPECT_TRUE(KVS_ERR_CREDENTIALS == 34 && KVS_ERR_SERVICE_INVALID_ARGUMENT == 30,
                "stable values: KVS_ERR_SERVICE_INVALID_ARGUMENT 30 .. KVS_ERR_CREDENTIALS 34");
    EXPECT_TRUE(KVS_ERR_CLOSED == 35 && KVS_ERR_CANCELLED == 36,
                "stable values: KVS_ERR_CLOSED 35, KVS_ERR_CANCELLED 36");
    EXPECT_TRUE(KVS_ERR_SIGNER_FAILED == 37 && KVS_ERR_PRESIGNED_URL_EXPIRED == 41,
                "stable values: KVS_ERR_SIGNER_FAILED 37 .. KVS_ERR_PRESIGNED_URL_EXPIRED 41");
    EXPECT_TRUE(KVS_ERR_PROXY_UNREACHABLE == 42 && KVS_ERR_PROXY_CLOSED == 45,
                "stable values: KVS_ERR_PROXY_UNREACHABLE 42 .. KVS_ERR_PROXY_CLOSED 45");
    EXPECT_TRUE(KVS_ERR_IOT_CERTIFICATE_REFUSED == 46 && KVS_ERR_IOT_FORBIDDEN == 48,
                "stable values: KVS_ERR_IOT_CERTIFICATE_REFUSED 46 .. KVS_ERR_IOT_FORBIDDEN 48");
}

static void test_stun_url(void) {
    section("kvs_stun_url");
    char buf[256];
    size_t n = 0;
    const char *want = "stun:stun.kinesisvideo.us-west-2.amazonaws.com:443";
    const size_t want_len = strlen(want);

    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_stun_url(NULL, false, false, buf, sizeof buf, &n));
    /* A NULL buf is a size query; NULL buf and NULL out_len is an error. */
    n = 12345;
    EXPECT_RC(KVS_OK, kvs_stun_url("us-west-2", false, false, NULL, 0, &n));
    EXPECT_TRUE(n == want_len, "size query: %zu (want %zu)", n, want_len);
    n = 12345;
    EXPECT_RC(KVS_OK, kvs_stun_url("us-west-2", false, false, NULL, 100, &n));
    EXPECT_TRUE(n == want_len, "size query with a capacity: %zu (want %zu)", n, want_len);
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_stun_url("us-west-2", false, false, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_stun_url("us-west-2", false, false, NULL, 100, NULL));
    EXPECT_RC(KVS_ERR_INVALID_UTF8, kvs_stun_url(NON_UTF8, false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG, kvs_stun_url("", false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG, kvs_stun_url("US-WEST-2", false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG, kvs_stun_url("us west 2", false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG, kvs_stun_url("us_west_2", false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG,
              kvs_stun_url("us-west-2/../x", false, false, buf, sizeof buf, &n));
    EXPECT_RC(KVS_ERR_INVALID_CONFIG, kvs_stun_url(g_id257, false, false, buf, sizeof buf, &n));
    /* The iso partitions have no dual-stack endpoints. */
    EXPECT_RC(KVS_ERR_INVALID_CONFIG,
              kvs_stun_url("us-iso-east-1", false, true, buf, sizeof buf, &n));

    /* Too small, by one byte and entirely: nothing written into buf. */
    memset(buf, 'Z', sizeof buf);
    n = 12345;
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL, kvs_stun_url("us-west-2", false, false, buf, want_len, &n));
    EXPECT_TRUE(buf[0] == 'Z' && buf[want_len - 1] == 'Z', "buffer untouched");
    EXPECT_TRUE(n == 12345 || n == want_len,
                "out_len %s (%zu; the header does not say which)",
                n == 12345 ? "untouched" : "= the length needed", n);
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL, kvs_stun_url("us-west-2", false, false, buf, 0, &n));
    EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL, kvs_stun_url("us-west-2", false, false, buf, 1, NULL));

    /* Exactly big enough; out_len NULL. */
    memset(buf, 'Z', sizeof buf);
    n = 0;
    EXPECT_RC(KVS_OK, kvs_stun_url("us-west-2", false, false, buf, want_len + 1, &n));
    EXPECT_TRUE(strcmp(buf, want) == 0 && n == want_len, "\"%s\" (%zu)", buf, n);
    EXPECT_RC(KVS_OK, kvs_stun_url("us-west-2", false, false, buf, sizeof buf, NULL));
    EXPECT_RC(KVS_OK, kvs_stun_url("us-gov-east-1", true, false, buf, sizeof buf, &n));
    EXPECT_TRUE(strcmp(buf, "stuns:stun.kinesisvideo-fips.us-gov-east-1.amazonaws.com:443") == 0,
                "FIPS: \"%s\"", buf);
    EXPECT_RC(KVS_OK, kvs_stun_url("cn-north-1", false, false, buf, sizeof buf, &n));
    EXPECT_TRUE(strcmp(buf, "stun:stun.kinesisvideo.cn-north-1.amazonaws.com.cn:443") == 0,
                "China: \"%s\"", buf);
    EXPECT_RC(KVS_OK, kvs_stun_url("us-west-1", false, true, buf, sizeof buf, &n));
    EXPECT_TRUE(strcmp(buf, "stun:stun.kinesisvideo.us-west-1.api.aws:443") == 0,
                "dual-stack: \"%s\"", buf);
}

/* A control-plane config with static keys, aimed at `control_plane_url`. */
static kvs_client_config cp_config(uint32_t role, struct probe *p, const char *control_plane_url) {
    kvs_client_config c = base_config(role, p);
    c.use_control_plane = true;
    c.channel_arn = NULL;
    c.endpoint = NULL;
    c.channel_name = "bad-input";
    c.control_plane_url = control_plane_url;
    c.access_key_id = "AKIDBADINPUTEXAMPLE";
    c.secret_access_key = "bad-input-secret-bad-input-secret";
    c.connect_timeout_ms = 3000;
    return c;
}

static kvs_client_config with_channel_name(kvs_client_config c, const char *v) {
    c.channel_name = v;
    return c;
}
static kvs_client_config with_keys(kvs_client_config c, const char *key, const char *secret) {
    c.access_key_id = key;
    c.secret_access_key = secret;
    return c;
}
static kvs_client_config with_control_plane_url(kvs_client_config c, const char *v) {
    c.control_plane_url = v;
    return c;
}
static kvs_client_config with_fips(kvs_client_config c) {
    c.use_fips = true;
    return c;
}
static kvs_client_config with_ca_bundle(kvs_client_config c, const char *v) {
    c.ca_bundle_path = v;
    return c;
}
static kvs_client_config with_session_token(kvs_client_config c, const char *v) {
    c.session_token = v;
    return c;
}

/* What the credentials callback does, and what it saw. */
enum cred_mode { CRED_FAIL, CRED_OK_WITHOUT_SET, CRED_MISUSE_THEN_SET };

struct recorded_rc {
    int done;
    uint32_t rc;
    char msg[256];
};

struct cred_probe {
    enum cred_mode mode;
    int calls;
    int on_main_thread;
    struct recorded_rc null_sink, null_key, null_secret, empty_key, empty_secret, bad_utf8, huge_expiry, good;
    kvs_credentials_sink *kept; /* the sink, wrongly kept past the callback */
};
static struct cred_probe g_cred;

static void record_rc(struct recorded_rc *r, uint32_t rc) {
    r->done = 1;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", kvs_last_error_message());
}

static uint32_t cred_callback(void *userdata, kvs_credentials_sink *sink) {
    (void)userdata;
    struct cred_probe *c = &g_cred;
    pthread_mutex_lock(&g_lock);
    c->calls++;
    c->on_main_thread = pthread_equal(pthread_self(), g_main_thread) ? 1 : 0;
    enum cred_mode mode = c->mode;
    pthread_mutex_unlock(&g_lock);
    if (mode == CRED_FAIL) {
        return KVS_ERR_CREDENTIALS;
    }
    if (mode == CRED_OK_WITHOUT_SET) {
        return KVS_OK;
    }
    struct cred_probe r;
    memset(&r, 0, sizeof r);
    record_rc(&r.null_sink, kvs_credentials_sink_set(NULL, "AKIDX", "secret", NULL, 0));
    record_rc(&r.null_key, kvs_credentials_sink_set(sink, NULL, "secret", NULL, 0));
    record_rc(&r.null_secret, kvs_credentials_sink_set(sink, "AKIDX", NULL, NULL, 0));
    record_rc(&r.empty_key, kvs_credentials_sink_set(sink, "", "secret", NULL, 0));
    record_rc(&r.empty_secret, kvs_credentials_sink_set(sink, "AKIDX", "", NULL, 0));
    record_rc(&r.bad_utf8, kvs_credentials_sink_set(sink, NON_UTF8, "secret", NULL, 0));
    record_rc(&r.huge_expiry, kvs_credentials_sink_set(sink, "AKIDX", "secret", NULL, UINT64_MAX));
    record_rc(&r.good, kvs_credentials_sink_set(sink, "AKIDX", "secret", "token", 4102444800u));
    pthread_mutex_lock(&g_lock);
    c->null_sink = r.null_sink;
    c->null_key = r.null_key;
    c->null_secret = r.null_secret;
    c->empty_key = r.empty_key;
    c->empty_secret = r.empty_secret;
    c->bad_utf8 = r.bad_utf8;
    c->huge_expiry = r.huge_expiry;
    c->good = r.good;
    c->kept = sink;
    pthread_mutex_unlock(&g_lock);
    return KVS_OK;
}

static void judge_rc(int line, const char *what, const struct recorded_rc *r, uint32_t want) {
    if (!r->done) {
        fail(line, what, "the credentials callback did not make this call");
        return;
    }
    judge(line, what, r->rc, want, r->msg, "");
}

/* A config mistake of the control-plane fields: refused with
 * KVS_ERR_INVALID_CONFIG by kvs_client_new (where the header puts config
 * errors) or, at the latest, by kvs_client_connect, before anything is sent.
 * The second case passes with a NOTE: the header does not say when these
 * fields are checked. */
static void expect_config_refused(int line, const char *what, kvs_client_config c) {
    struct probe p;
    probe_init(&p, what);
    c.userdata = &p;
    c.free_userdata = probe_free;
    kvs_client *client = NULL;
    primed();
    uint32_t got = (uint32_t)kvs_client_new(&c, &client);
    if (got != KVS_OK) {
        judge(line, what, got, KVS_ERR_INVALID_CONFIG, kvs_last_error_message(), g_marker);
        return;
    }
    /* A configuration error must surface at kvs_client_new, not later. */
    judge(line, what, got, KVS_ERR_INVALID_CONFIG, kvs_last_error_message(), g_marker);
    (void)kvs_client_free(client);
}

static void test_control_plane_offline(void) {
    section("kvs_client_new with use_control_plane");
    struct probe unused;
    probe_init(&unused, "unused");
    const kvs_client_config cp = cp_config(KVS_ROLE_VIEWER, &unused, "http://127.0.0.1:9");

    EXPECT_NEW_FAILS(with_keys(cp, NULL, NULL), KVS_ERR_CREDENTIALS,
                     "use_control_plane without any credentials");
    EXPECT_NEW_FAILS(with_keys(cp, "AKIDX", NULL), KVS_ERR_CREDENTIALS,
                     "access_key_id without secret_access_key");
    EXPECT_NEW_FAILS(with_keys(cp, NULL, "secret"), KVS_ERR_CREDENTIALS,
                     "secret_access_key without access_key_id");
    EXPECT_NEW_FAILS(with_keys(cp, "", "secret"), KVS_ERR_CREDENTIALS, "access_key_id empty");
    EXPECT_NEW_FAILS(with_keys(cp, "AKIDX", ""), KVS_ERR_CREDENTIALS, "secret_access_key empty");
    EXPECT_NEW_FAILS(with_keys(cp, NON_UTF8, "secret"), KVS_ERR_INVALID_UTF8,
                     "access_key_id not UTF-8");
    EXPECT_NEW_FAILS(with_session_token(cp, NON_UTF8), KVS_ERR_INVALID_UTF8,
                     "session_token not UTF-8");
    EXPECT_NEW_FAILS(with_channel_name(cp, NULL), KVS_ERR_NULL_PARAMETER,
                     "use_control_plane without channel_name or channel_arn");
    EXPECT_NEW_FAILS(with_channel_name(cp, NON_UTF8), KVS_ERR_INVALID_UTF8,
                     "channel_name not UTF-8");
    EXPECT_NEW_FAILS(with_channel_name(cp, ""), KVS_ERR_INVALID_CONFIG, "channel_name empty");
    EXPECT_NEW_FAILS(with_channel_name(cp, "a b"), KVS_ERR_INVALID_CONFIG,
                     "channel_name \"a b\"");
    EXPECT_NEW_FAILS(with_channel_name(cp, g_id257), KVS_ERR_INVALID_CONFIG,
                     "channel_name of 257 characters");
    EXPECT_NEW_FAILS(with_control_plane_url(cp, NON_UTF8), KVS_ERR_INVALID_UTF8,
                     "control_plane_url not UTF-8");
    expect_config_refused(__LINE__, "control_plane_url ftp://",
                          with_control_plane_url(cp, "ftp://127.0.0.1:9"));
    expect_config_refused(__LINE__, "control_plane_url without a scheme",
                          with_control_plane_url(cp, "127.0.0.1:9"));
    expect_config_refused(__LINE__, "control_plane_url with a query string",
                          with_control_plane_url(cp, "http://127.0.0.1:9/?a=b"));
    expect_config_refused(__LINE__, "control_plane_url with use_fips", with_fips(cp));
    {
        kvs_client_config c = cp;
        c.control_plane_url = NULL;
        c.use_dual_stack = true;
        c.region = "us-iso-east-1";
        expect_config_refused(__LINE__, "use_dual_stack in a region without dual-stack", c);
    }
    EXPECT_NEW_FAILS(with_ca_bundle(cp, NON_UTF8), KVS_ERR_INVALID_UTF8,
                     "ca_bundle_path not UTF-8");
    {
        kvs_client_config c = cp;
        c.channel_name = NULL;
        c.channel_arn = "arn:bad";
        EXPECT_NEW_FAILS(c, KVS_ERR_INVALID_CONFIG, "use_control_plane with channel_arn \"arn:bad\"");
    }
    {
        /* Without use_control_plane the control-plane fields do not make a
         * client: channel_name alone is not enough. */
        kvs_client_config c = base_config(KVS_ROLE_VIEWER, &unused);
        c.channel_arn = NULL;
        c.channel_name = "bad-input";
        EXPECT_NEW_FAILS(c, KVS_ERR_NULL_PARAMETER, "channel_name without use_control_plane");
    }

    /* What must work: endpoint NULL (unused), environment credentials (read
     * at connect time, so unset ones are no kvs_client_new error), a callback. */
    {
        struct probe p;
        probe_init(&p, "cp-static-keys");
        kvs_client_config c = cp_config(KVS_ROLE_MASTER, &p, "http://127.0.0.1:9");
        kvs_client *client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);

        probe_init(&p, "cp-env");
        c = cp_config(KVS_ROLE_MASTER, &p, NULL); /* the real regional endpoint, never contacted */
        c.access_key_id = NULL;
        c.secret_access_key = NULL;
        c.credentials_from_env = true;
        c.region = "eu-west-1";
        client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    }

    section("kvs_client_get_metrics, kvs_client_get_ice_servers, kvs_client_start (no service)");
    struct probe p;
    probe_init(&p, "entry-points");
    kvs_client_config c = base_config(KVS_ROLE_VIEWER, &p);
    char closed[64];
    if (closed_port_endpoint(closed, sizeof closed) != 0) {
        fail(__LINE__, "closed_port_endpoint", "could not find a closed port");
        return;
    }
    c.endpoint = closed;
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 50;
    kvs_client *client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    if (client == NULL) {
        return;
    }

    kvs_client_metrics m;
    memset(&m, 0xAB, sizeof m);
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_get_metrics(NULL, &m));
    EXPECT_TRUE(m.connects == 0xABABABABABABABABull, "*out_metrics untouched on failure");
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_get_metrics(client, NULL));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_get_metrics(NULL, NULL));
    EXPECT_RC(KVS_OK, kvs_client_get_metrics(client, &m));
    EXPECT_TRUE(m.state == KVS_STATE_DISCONNECTED && m.connects == 0 && m.reconnects == 0 &&
                    m.connect_failures == 0 && m.last_connect_unix_ms == 0 &&
                    m.messages_sent == 0 && m.messages_queued == 0 && m.clock_skew_ms == 0,
                "a new client's metrics are zero (state %u, connects %llu)", (unsigned)m.state,
                (unsigned long long)m.connects);

    kvs_ice_server servers[2];
    char strings[512];
    size_t count = 12345, len = 12345;
    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_client_get_ice_servers(NULL, servers, 2, strings, sizeof strings, &count, &len));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER,
              kvs_client_get_ice_servers(client, servers, 2, strings, sizeof strings, NULL, &len));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_get_ice_servers(client, servers, 2, strings,
                                                                 sizeof strings, &count, NULL));
    EXPECT_TRUE(count == 12345 && len == 12345, "outputs untouched on NULL_PARAMETER");
    EXPECT_RC(KVS_OK, kvs_client_get_ice_servers(client, servers, 2, strings, sizeof strings,
                                                 &count, &len));
    EXPECT_TRUE(count == 0 && len == 0, "no control plane: an empty list (count %zu, %zu bytes)",
                count, len);
    count = len = 12345;
    EXPECT_RC(KVS_OK, kvs_client_get_ice_servers(client, NULL, 0, NULL, 0, &count, &len));
    EXPECT_TRUE(count == 0 && len == 0, "an empty list fits in no buffer at all (%zu, %zu)", count,
                len);

    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_client_start(NULL));
    EXPECT_RC(KVS_OK, kvs_client_start(client));
    EXPECT_RC(KVS_ERR_ALREADY_CONNECTED, kvs_client_start(client));
    EXPECT_RC(KVS_ERR_ALREADY_CONNECTED, kvs_client_connect(client));
    /* "Sends are accepted from now on and wait in the queue." */
    EXPECT_RC(KVS_OK, kvs_send_sdp_offer(client, NULL, SDP, "queued-offer", NULL, 0, NULL));
    int failures = 0;
    for (int waited = 0; waited < 3000; waited += 10) {
        if (kvs_client_get_metrics(client, &m) == KVS_OK && m.connect_failures >= 2) {
            failures = 1;
            break;
        }
        sleep_ms(10);
    }
    uint32_t state = kvs_client_state(client);
    EXPECT_TRUE(failures && m.messages_queued == 1 && m.connects == 0,
                "retrying a closed port: %llu failed attempts, %llu queued, state %u",
                (unsigned long long)m.connect_failures, (unsigned long long)m.messages_queued,
                (unsigned)state);
    EXPECT_TRUE(state == KVS_STATE_RECONNECTING || state == KVS_STATE_CONNECTING,
                "state while retrying: %u (RECONNECTING or CONNECTING)", (unsigned)state);
    EXPECT_RC(KVS_OK, kvs_client_disconnect(client));
    EXPECT_TRUE(kvs_client_state(client) == KVS_STATE_DISCONNECTED, "DISCONNECTED after disconnect");
    int reports = 0;
    for (int waited = 0; waited < 2000; waited += 10) { /* on_status runs on the dispatcher */
        pthread_mutex_lock(&g_lock);
        reports = p.status_reports;
        pthread_mutex_unlock(&g_lock);
        if (reports > 0) {
            break;
        }
        sleep_ms(10);
    }
    EXPECT_TRUE(reports == 1, "the queued offer was reported failed through on_status (%d)",
                reports);
    EXPECT_RC(KVS_OK, kvs_client_start(client)); /* startable again */
    EXPECT_RC(KVS_OK, kvs_client_free(client));
    EXPECT_FREED_NOW(&p);

    section("kvs_credentials_sink_set, credentials_callback (no service)");
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_credentials_sink_set(NULL, "AKIDX", "secret", NULL, 0));
    EXPECT_RC(KVS_ERR_NULL_PARAMETER, kvs_credentials_sink_set(NULL, NULL, NULL, NULL, 0));
    char cp_url[80];
    {
        /* ws://127.0.0.1:PORT -> http://127.0.0.1:PORT */
        char ws[64];
        if (closed_port_endpoint(ws, sizeof ws) != 0) {
            fail(__LINE__, "closed_port_endpoint", "could not find a closed port");
            return;
        }
        snprintf(cp_url, sizeof cp_url, "http://%s", ws + strlen("ws://"));
    }
    const enum cred_mode modes[] = {CRED_FAIL, CRED_OK_WITHOUT_SET, CRED_MISUSE_THEN_SET};
    const char *const labels[] = {"callback returns KVS_ERR_CREDENTIALS",
                                  "callback returns KVS_OK without kvs_credentials_sink_set",
                                  "callback misuses the sink, then sets it"};
    for (size_t i = 0; i < 3; i++) {
        pthread_mutex_lock(&g_lock);
        memset(&g_cred, 0, sizeof g_cred);
        g_cred.mode = modes[i];
        pthread_mutex_unlock(&g_lock);
        probe_init(&p, labels[i]);
        c = cp_config(KVS_ROLE_VIEWER, &p, cp_url);
        c.credentials_callback = cred_callback; /* takes precedence over the static keys */
        client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        if (client == NULL) {
            continue;
        }
        print_line("      (%s; control plane %s)", labels[i], cp_url);
        if (modes[i] == CRED_MISUSE_THEN_SET) {
            /* Credentials accepted; then the closed port. */
            EXPECT_RC2(KVS_ERR_NETWORK, KVS_ERR_TIMEOUT, kvs_client_connect(client));
        } else {
            EXPECT_RC(KVS_ERR_CREDENTIALS, kvs_client_connect(client));
        }
        pthread_mutex_lock(&g_lock);
        struct cred_probe seen = g_cred;
        pthread_mutex_unlock(&g_lock);
        EXPECT_TRUE(seen.calls >= 1 && !seen.on_main_thread,
                    "the callback ran %d times, on a library thread", seen.calls);
        if (modes[i] == CRED_MISUSE_THEN_SET) {
            judge_rc(__LINE__, "kvs_credentials_sink_set(NULL sink) in the callback",
                     &seen.null_sink, KVS_ERR_NULL_PARAMETER);
            judge_rc(__LINE__, "kvs_credentials_sink_set(access_key_id NULL)", &seen.null_key,
                     KVS_ERR_NULL_PARAMETER);
            judge_rc(__LINE__, "kvs_credentials_sink_set(secret_access_key NULL)",
                     &seen.null_secret, KVS_ERR_NULL_PARAMETER);
            judge_rc(__LINE__, "kvs_credentials_sink_set(access_key_id \"\")", &seen.empty_key,
                     KVS_ERR_CREDENTIALS);
            judge_rc(__LINE__, "kvs_credentials_sink_set(secret_access_key \"\")",
                     &seen.empty_secret, KVS_ERR_CREDENTIALS);
            judge_rc(__LINE__, "kvs_credentials_sink_set(access_key_id not UTF-8)",
                     &seen.bad_utf8, KVS_ERR_INVALID_UTF8);
            judge_rc(__LINE__, "kvs_credentials_sink_set(expiry UINT64_MAX)", &seen.huge_expiry,
                     KVS_ERR_CREDENTIALS);
            judge_rc(__LINE__, "kvs_credentials_sink_set(valid, with token and expiry)",
                     &seen.good, KVS_OK);
            /* The callback has returned: its sink is refused, never written. */
            EXPECT_RC(KVS_ERR_INVALID_ARGUMENT,
                      kvs_credentials_sink_set(seen.kept, "AKIDX", "secret", NULL, 0));
        }
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* With the emulator: callbacks calling back into the library.              */

struct recorded {
    int done;
    uint32_t rc;
    char msg[512];
    char marker[512];
};

/* Runs `call` on the current (callback) thread and records its result. */
#define RECORD(slot, call)                                                                     \
    do {                                                                                       \
        prime_marker((slot)->marker, sizeof (slot)->marker);                                   \
        (slot)->rc = (uint32_t)(call);                                                         \
        snprintf((slot)->msg, sizeof (slot)->msg, "%s", kvs_last_error_message());             \
        (slot)->done = 1;                                                                      \
    } while (0)

struct online {
    struct probe master_probe;
    struct probe viewer_probe;
    kvs_client *master;
    kvs_client *viewer;
    char viewer_id[64];
    const char *endpoint;
    const char *arn;

    /* A client made inside a callback (allowed), freed by main. */
    struct probe made_probe;
    kvs_client *made_in_callback;
    struct recorded new_in_cb;
    struct recorded free_made_in_cb;

    /* Recorded inside the master's on_message for the first offer. */
    int offers;
    char offer_sender[300];
    uint32_t state_in_callback;
    struct recorded connect_in_cb;
    struct recorded disconnect_in_cb;
    struct recorded free_in_cb;
    struct recorded free_other_in_cb;
    struct recorded shutdown_in_cb;
    struct recorded bad_send_in_cb;
    struct recorded answer_in_cb;
    char answer_correlation[KVS_CORRELATION_ID_CAPACITY];
    int on_dispatcher_thread;

    /* Recorded inside the viewer's on_message. */
    int answers;
    struct recorded candidate_in_cb;
    struct recorded echo_in_cb; /* the master echoing the candidate back */
    int echoes;
    char echoed_candidate[256];
    char echoed_mid[16];
    int echoed_mline;
    int unexpected;
};

static struct online g_on;

static void online_master_message(void *userdata, const kvs_message *m) {
    probe_on_message(userdata, m);
    struct online *o = &g_on;
    if (m->message_type == KVS_MESSAGE_TYPE_SDP_OFFER) {
        pthread_mutex_lock(&g_lock);
        int first = o->offers++ == 0;
        pthread_mutex_unlock(&g_lock);
        if (!first) {
            return;
        }
        /* Everything below runs on the dispatcher thread, inside a callback. */
        struct recorded r_connect, r_disconnect, r_free, r_free_other, r_shutdown, r_bad, r_answer;
        memset(&r_connect, 0, sizeof r_connect);
        memset(&r_disconnect, 0, sizeof r_disconnect);
        memset(&r_free, 0, sizeof r_free);
        memset(&r_free_other, 0, sizeof r_free_other);
        memset(&r_shutdown, 0, sizeof r_shutdown);
        memset(&r_bad, 0, sizeof r_bad);
        memset(&r_answer, 0, sizeof r_answer);
        char correlation[KVS_CORRELATION_ID_CAPACITY] = "";
        size_t correlation_len = 0;
        uint32_t state = kvs_client_state(o->master);
        struct recorded r_new, r_free_made;
        memset(&r_new, 0, sizeof r_new);
        memset(&r_free_made, 0, sizeof r_free_made);
        kvs_client_config nc = kvs_client_config_default();
        nc.role = KVS_ROLE_VIEWER;
        nc.channel_arn = o->arn;
        nc.endpoint = o->endpoint;
        nc.client_id = "made-in-callback";
        nc.on_state = probe_on_state;
        nc.userdata = &o->made_probe;
        nc.free_userdata = probe_free;
        kvs_client *made = NULL;
        RECORD(&r_new, kvs_client_new(&nc, &made));
        if (made != NULL) {
            RECORD(&r_free_made, kvs_client_free(made));
        }
        RECORD(&r_connect, kvs_client_connect(o->master));
        RECORD(&r_disconnect, kvs_client_disconnect(o->master));
        RECORD(&r_free, kvs_client_free(o->master));
        RECORD(&r_free_other, kvs_client_free(o->viewer));
        RECORD(&r_shutdown, kvs_shutdown(100));
        RECORD(&r_bad, kvs_send_sdp_answer(o->master, NULL, SDP, NULL, NULL, 0, NULL));
        RECORD(&r_answer, kvs_send_sdp_answer(o->master, m->sender_client_id, SDP,
                                              "answer-from-callback", correlation,
                                              sizeof correlation, &correlation_len));
        pthread_mutex_lock(&g_lock);
        snprintf(o->offer_sender, sizeof o->offer_sender, "%s",
                 m->sender_client_id != NULL ? m->sender_client_id : "(NULL)");
        o->state_in_callback = state;
        o->connect_in_cb = r_connect;
        o->disconnect_in_cb = r_disconnect;
        o->free_in_cb = r_free;
        o->free_other_in_cb = r_free_other;
        o->shutdown_in_cb = r_shutdown;
        o->bad_send_in_cb = r_bad;
        o->answer_in_cb = r_answer;
        o->new_in_cb = r_new;
        o->free_made_in_cb = r_free_made;
        o->made_in_callback = made;
        snprintf(o->answer_correlation, sizeof o->answer_correlation, "%s", correlation);
        o->on_dispatcher_thread = pthread_equal(pthread_self(), g_main_thread) ? 0 : 1;
        pthread_mutex_unlock(&g_lock);
    } else if (m->message_type == KVS_MESSAGE_TYPE_ICE_CANDIDATE && m->candidate != NULL) {
        /* Echo it back from inside the callback. */
        kvs_ice_candidate echo;
        echo.candidate = m->candidate;
        echo.sdp_mid = m->sdp_mid;
        echo.sdp_mline_index = m->sdp_mline_index;
        echo.username_fragment = m->username_fragment;
        struct recorded r;
        memset(&r, 0, sizeof r);
        RECORD(&r, kvs_send_ice_candidate(o->master, m->sender_client_id, &echo, NULL, NULL, 0,
                                          NULL));
        pthread_mutex_lock(&g_lock);
        o->echo_in_cb = r;
        pthread_mutex_unlock(&g_lock);
    }
}

static void online_viewer_message(void *userdata, const kvs_message *m) {
    probe_on_message(userdata, m);
    struct online *o = &g_on;
    if (m->message_type == KVS_MESSAGE_TYPE_SDP_ANSWER) {
        struct recorded r;
        memset(&r, 0, sizeof r);
        kvs_ice_candidate c;
        c.candidate = CANDIDATE;
        c.sdp_mid = "0";
        c.sdp_mline_index = 0;
        c.username_fragment = NULL;
        RECORD(&r, kvs_send_ice_candidate(o->viewer, NULL, &c, NULL, NULL, 0, NULL));
        pthread_mutex_lock(&g_lock);
        o->answers++;
        o->candidate_in_cb = r;
        pthread_mutex_unlock(&g_lock);
    } else if (m->message_type == KVS_MESSAGE_TYPE_ICE_CANDIDATE) {
        pthread_mutex_lock(&g_lock);
        o->echoes++;
        snprintf(o->echoed_candidate, sizeof o->echoed_candidate, "%s",
                 m->candidate != NULL ? m->candidate : "(NULL)");
        snprintf(o->echoed_mid, sizeof o->echoed_mid, "%s",
                 m->sdp_mid != NULL ? m->sdp_mid : "(NULL)");
        o->echoed_mline = (int)m->sdp_mline_index;
        pthread_mutex_unlock(&g_lock);
    } else {
        pthread_mutex_lock(&g_lock);
        o->unexpected++;
        pthread_mutex_unlock(&g_lock);
    }
}

static void judge_recorded(int line, const char *what, const struct recorded *r, uint32_t want) {
    if (!r->done) {
        fail(line, what, "the callback did not run this call");
        return;
    }
    judge(line, what, r->rc, want, r->msg, r->marker);
}

static int wait_for(int *counter, int at_least, long ms) {
    for (long waited = 0;; waited += 5) {
        pthread_mutex_lock(&g_lock);
        int n = *counter;
        pthread_mutex_unlock(&g_lock);
        if (n >= at_least) {
            return 1;
        }
        if (waited >= ms) {
            return 0;
        }
        sleep_ms(5);
    }
}

/* Same ARN, another channel name: "...:channel/NAME/EPOCH". */
static int missing_channel_arn(const char *arn, char *out, size_t cap) {
    const char *name = strstr(arn, ":channel/");
    if (name == NULL) {
        return -1;
    }
    name += strlen(":channel/");
    const char *epoch = strchr(name, '/');
    if (epoch == NULL) {
        return -1;
    }
    snprintf(out, cap, "%.*skvs-c-test-no-such-channel%s", (int)(name - arn), arn, epoch);
    return 0;
}

static void test_online(const char *endpoint, const char *arn) {
    section("with the emulator: connect errors");
    char missing[1200];
    if (missing_channel_arn(arn, missing, sizeof missing) == 0) {
        struct probe p;
        probe_init(&p, "missing-channel");
        kvs_client_config c = base_config(KVS_ROLE_MASTER, &p);
        c.endpoint = endpoint;
        c.channel_arn = missing;
        kvs_client *client = NULL;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
        if (client != NULL) {
            EXPECT_RC(KVS_ERR_NOT_FOUND, kvs_client_connect(client));
            EXPECT_RC(KVS_OK, kvs_client_free(client));
            EXPECT_FREED_NOW(&p);
        }
    } else {
        fail(__LINE__, "missing_channel_arn", "cannot parse the channel ARN");
    }

    section("with the emulator: master and viewer");
    struct online *o = &g_on;
    memset(o, 0, sizeof *o);
    probe_init(&o->master_probe, "online-master");
    probe_init(&o->viewer_probe, "online-viewer");
    probe_init(&o->made_probe, "made-in-callback");
    o->endpoint = endpoint;
    o->arn = arn;
    snprintf(o->viewer_id, sizeof o->viewer_id, "bad-input-viewer-%ld", (long)getpid());

    kvs_client_config cm = base_config(KVS_ROLE_MASTER, &o->master_probe);
    cm.endpoint = endpoint;
    cm.channel_arn = arn;
    cm.on_message = online_master_message;
    kvs_client_config cv = base_config(KVS_ROLE_VIEWER, &o->viewer_probe);
    cv.endpoint = endpoint;
    cv.channel_arn = arn;
    cv.client_id = o->viewer_id;
    cv.on_message = online_viewer_message;

    EXPECT_RC(KVS_OK, kvs_client_new(&cm, &o->master));
    EXPECT_RC(KVS_OK, kvs_client_new(&cv, &o->viewer));
    if (o->master == NULL || o->viewer == NULL) {
        (void)kvs_client_free(o->master);
        (void)kvs_client_free(o->viewer);
        return;
    }
    EXPECT_RC(KVS_OK, connect_paced(o->master));
    EXPECT_TRUE(kvs_client_state(o->master) == KVS_STATE_CONNECTED, "master CONNECTED");
    EXPECT_RC(KVS_ERR_ALREADY_CONNECTED, kvs_client_connect(o->master));
    EXPECT_RC(KVS_OK, connect_paced(o->viewer));

    /* Validation still comes first when connected. */
    EXPECT_RC(KVS_ERR_RECIPIENT_REQUIRED,
              kvs_send_sdp_offer(o->master, NULL, SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_RECIPIENT_NOT_ALLOWED,
              kvs_send_sdp_offer(o->viewer, "x", SDP, NULL, NULL, 0, NULL));
    EXPECT_RC(KVS_ERR_PAYLOAD_TOO_LARGE,
              kvs_send_sdp_offer(o->viewer, NULL, g_sdp8000, NULL, NULL, 0, NULL));

    /* The viewer's offer starts the chain: the master's callback answers (and
     * tries the forbidden calls), the viewer's callback sends a candidate, the
     * master's callback echoes it. */
    char correlation[KVS_CORRELATION_ID_CAPACITY];
    size_t correlation_len = 0;
    EXPECT_RC(KVS_OK, kvs_send_sdp_offer(o->viewer, NULL, SDP, "offer-1", correlation,
                                         sizeof correlation, &correlation_len));
    EXPECT_TRUE(strcmp(correlation, "offer-1") == 0 && correlation_len == 7,
                "out_correlation_id \"%s\", out_len %zu", correlation, correlation_len);
    EXPECT_RC(KVS_OK, kvs_send_sdp_offer(o->viewer, NULL, SDP, NULL, correlation,
                                         sizeof correlation, &correlation_len));
    EXPECT_TRUE(correlation_len > 0 && strlen(correlation) == correlation_len,
                "a generated correlation id: \"%s\"", correlation);

    int got_answer = wait_for(&o->answers, 1, 10000);
    int got_echo = wait_for(&o->echoes, 1, 10000);
    EXPECT_TRUE(got_answer, "the viewer received the answer sent from the master's callback");
    EXPECT_TRUE(got_echo, "the viewer received the candidate echoed from the master's callback");

    section("with the emulator: calls made inside callbacks");
    pthread_mutex_lock(&g_lock);
    struct online snapshot = *o;
    pthread_mutex_unlock(&g_lock);
    EXPECT_TRUE(snapshot.on_dispatcher_thread, "callbacks run on a library thread");
    EXPECT_TRUE(strcmp(snapshot.offer_sender, o->viewer_id) == 0, "offer sender \"%s\"",
                snapshot.offer_sender);
    EXPECT_TRUE(snapshot.state_in_callback == KVS_STATE_CONNECTED,
                "kvs_client_state from a callback: %u", (unsigned)snapshot.state_in_callback);
    judge_recorded(__LINE__, "kvs_client_connect from on_message", &snapshot.connect_in_cb,
                   KVS_ERR_WOULD_DEADLOCK);
    judge_recorded(__LINE__, "kvs_client_disconnect from on_message", &snapshot.disconnect_in_cb,
                   KVS_ERR_WOULD_DEADLOCK);
    judge_recorded(__LINE__, "kvs_client_free(own client) from on_message", &snapshot.free_in_cb,
                   KVS_ERR_IN_CALLBACK);
    judge_recorded(__LINE__, "kvs_client_free(other client) from on_message",
                   &snapshot.free_other_in_cb, KVS_ERR_IN_CALLBACK);
    judge_recorded(__LINE__, "kvs_shutdown from on_message", &snapshot.shutdown_in_cb,
                   KVS_ERR_WOULD_DEADLOCK);
    judge_recorded(__LINE__, "kvs_send_sdp_answer without recipient from on_message",
                   &snapshot.bad_send_in_cb, KVS_ERR_RECIPIENT_REQUIRED);
    judge_recorded(__LINE__, "kvs_send_sdp_answer from on_message", &snapshot.answer_in_cb,
                   KVS_OK);
    EXPECT_TRUE(strcmp(snapshot.answer_correlation, "answer-from-callback") == 0,
                "correlation id written in the callback: \"%s\"", snapshot.answer_correlation);
    judge_recorded(__LINE__, "kvs_send_ice_candidate from the viewer's on_message",
                   &snapshot.candidate_in_cb, KVS_OK);
    judge_recorded(__LINE__, "kvs_send_ice_candidate (echo) from the master's on_message",
                   &snapshot.echo_in_cb, KVS_OK);
    EXPECT_TRUE(strcmp(snapshot.echoed_candidate, CANDIDATE) == 0 &&
                    strcmp(snapshot.echoed_mid, "0") == 0 && snapshot.echoed_mline == 0,
                "echo \"%s\" sdpMid %s sdpMLineIndex %d", snapshot.echoed_candidate,
                snapshot.echoed_mid, snapshot.echoed_mline);
    EXPECT_TRUE(kvs_client_state(o->master) == KVS_STATE_CONNECTED,
                "the master is still connected after the refused calls");
    judge_recorded(__LINE__, "kvs_client_new from on_message", &snapshot.new_in_cb, KVS_OK);
    judge_recorded(__LINE__, "kvs_client_free(client made there) from on_message",
                   &snapshot.free_made_in_cb, KVS_ERR_IN_CALLBACK);
    if (snapshot.made_in_callback != NULL) {
        EXPECT_RC(KVS_OK, connect_paced(snapshot.made_in_callback));
        EXPECT_RC(KVS_OK, kvs_client_free(snapshot.made_in_callback));
        EXPECT_FREED_NOW(&o->made_probe);
    }

    section("with the emulator: disconnect, send, reconnect");
    EXPECT_RC(KVS_OK, kvs_client_disconnect(o->viewer));
    EXPECT_TRUE(kvs_client_state(o->viewer) == KVS_STATE_DISCONNECTED, "viewer DISCONNECTED");
    EXPECT_RC(KVS_ERR_NOT_CONNECTED, kvs_send_sdp_offer(o->viewer, NULL, SDP, NULL, NULL, 0, NULL));
    {
        kvs_ice_candidate c;
        c.candidate = CANDIDATE;
        c.sdp_mid = NULL;
        c.sdp_mline_index = -1;
        c.username_fragment = NULL;
        EXPECT_RC(KVS_ERR_NOT_CONNECTED,
                  kvs_send_ice_candidate(o->viewer, NULL, &c, NULL, NULL, 0, NULL));
    }
    EXPECT_RC(KVS_OK, kvs_client_disconnect(o->viewer)); /* again: a no-op */
    EXPECT_RC(KVS_OK, connect_paced(o->viewer));    /* a client can reconnect */
    EXPECT_TRUE(kvs_client_state(o->viewer) == KVS_STATE_CONNECTED, "viewer CONNECTED again");
    EXPECT_RC(KVS_OK, kvs_client_disconnect(o->viewer));

    section("with the emulator: free");
    EXPECT_RC(KVS_OK, kvs_client_free(o->viewer));
    EXPECT_RC(KVS_OK, kvs_client_free(o->master));
    EXPECT_FREED_NOW(&o->master_probe);
    EXPECT_FREED_NOW(&o->viewer_probe);
    pthread_mutex_lock(&g_lock);
    int late = o->master_probe.callbacks_after_free + o->viewer_probe.callbacks_after_free;
    int on_main = o->master_probe.freed_on_main_thread + o->viewer_probe.freed_on_main_thread;
    pthread_mutex_unlock(&g_lock);
    EXPECT_TRUE(late == 0, "no callback after free_userdata (%d)", late);
    EXPECT_TRUE(on_main == 2, "free_userdata ran on the thread that called kvs_client_free (%d of 2)",
                on_main);
}

/* ------------------------------------------------------------------------ */
/* With an emulator started with --tls and keys: the control-plane path.     */

struct cp_online {
    kvs_client *client;
    int ice_callbacks;
    size_t announced;
    struct recorded_rc sizes_in_cb; /* NULL buffers: BUFFER_TOO_SMALL with the sizes */
    struct recorded_rc copy_in_cb;  /* big enough buffers: KVS_OK */
    size_t count_in_cb;
    size_t len_in_cb;
};
static struct cp_online g_cp;

static void cp_on_ice_servers(void *userdata, size_t count) {
    (void)userdata;
    struct cp_online *o = &g_cp;
    pthread_mutex_lock(&g_lock);
    kvs_client *client = o->client;
    pthread_mutex_unlock(&g_lock);
    struct recorded_rc sizes, copy;
    memset(&sizes, 0, sizeof sizes);
    memset(&copy, 0, sizeof copy);
    size_t n = 0, len = 0;
    if (client != NULL) {
        record_rc(&sizes, kvs_client_get_ice_servers(client, NULL, 0, NULL, 0, &n, &len));
        kvs_ice_server servers[16];
        static char strings[8192]; /* only the dispatcher thread runs this */
        size_t n2 = 0, len2 = 0;
        record_rc(&copy, kvs_client_get_ice_servers(client, servers, 16, strings, sizeof strings,
                                                    &n2, &len2));
    }
    pthread_mutex_lock(&g_lock);
    o->ice_callbacks++;
    o->announced = count;
    o->sizes_in_cb = sizes;
    o->copy_in_cb = copy;
    o->count_in_cb = n;
    o->len_in_cb = len;
    pthread_mutex_unlock(&g_lock);
}

/* Connects a control-plane viewer made from `c` and expects `want`. */
static void expect_cp_connect(int line, const char *what, kvs_client_config c, uint32_t want) {
    struct probe p;
    probe_init(&p, what);
    c.userdata = &p;
    c.free_userdata = probe_free;
    kvs_client *client = NULL;
    primed();
    uint32_t got = (uint32_t)kvs_client_new(&c, &client);
    if (got != KVS_OK) {
        judge(line, what, got, KVS_OK, kvs_last_error_message(), g_marker);
        return;
    }
    primed();
    got = (uint32_t)kvs_client_connect(client);
    judge(line, what, got, want, kvs_last_error_message(), g_marker);
    kvs_client_metrics m;
    /* (A configuration refused at connect time is not counted as an attempt.) */
    if (kvs_client_get_metrics(client, &m) == KVS_OK && want != KVS_OK &&
        want != KVS_ERR_INVALID_CONFIG) {
        expect_true(line, m.connects == 0 && m.connect_failures >= 1, "  ...metrics count it",
                    "%llu connects, %llu failed attempts", (unsigned long long)m.connects,
                    (unsigned long long)m.connect_failures);
    }
    (void)kvs_client_free(client);
    int n = probe_free_calls(&p);
    expect_true(line, n == 1, "  ...userdata released once", "%d times", n);
}

static int g_race_ice = 0;

static void race_on_ice_servers(void *userdata, size_t count) {
    (void)userdata;
    (void)count;
    pthread_mutex_lock(&g_lock);
    g_race_ice++;
    pthread_mutex_unlock(&g_lock);
}

/* kvs_client_free "returns once every callback of this client already queued
 * has run and free_userdata has run". Checked several times on clients whose
 * background GetIceServerConfig loop is running (the control-plane path):
 * the count of clients whose free_userdata had not run yet when
 * kvs_client_free returned must be 0. */
static void test_free_after_ice_servers(kvs_client_config base, int rounds) {
    section("with the TLS emulator: kvs_client_free returns after free_userdata (ICE refresh running)");
    int late = 0, never = 0, done = 0;
    for (int i = 0; i < rounds; i++) {
        struct probe p;
        probe_init(&p, "free-race");
        kvs_client_config c = base;
        char id[64];
        snprintf(id, sizeof id, "bad-input-free-%d", i);
        c.role = i % 2 == 0 ? KVS_ROLE_MASTER : KVS_ROLE_VIEWER;
        c.client_id = i % 2 == 0 ? NULL : id;
        c.skip_ice_servers = false;
        c.on_ice_servers = race_on_ice_servers;
        c.userdata = &p;
        c.free_userdata = probe_free;
        pthread_mutex_lock(&g_lock);
        g_race_ice = 0;
        pthread_mutex_unlock(&g_lock);
        kvs_client *client = NULL;
        if (kvs_client_new(&c, &client) != KVS_OK) {
            fail(__LINE__, "kvs_client_new", kvs_last_error_message());
            break;
        }
        if (connect_paced(client) != KVS_OK) {
            fail(__LINE__, "kvs_client_connect", kvs_last_error_message());
            (void)kvs_client_free(client);
            (void)probe_wait_freed(&p, 3000);
            break;
        }
        (void)wait_for(&g_race_ice, 1, 3000);
        (void)kvs_client_free(client);
        int on_return = probe_free_calls(&p);
        int later = probe_wait_freed(&p, 3000); /* `p` must outlive a late call */
        late += on_return == 0 && later == 1;
        never += later == 0;
        done++;
    }
    EXPECT_TRUE(late == 0 && never == 0 && done == rounds,
                "%d of %d clients: free_userdata had not run when kvs_client_free returned "
                "(it ran later, on a library thread); %d never", late, done, never);
}

static void test_control_plane_online(const char *url, const char *ca, const char *channel) {
    const char *key = getenv("AWS_ACCESS_KEY_ID");
    const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
    if (key == NULL || secret == NULL) {
        fail(__LINE__, "control plane", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set");
        return;
    }
    section("with the TLS emulator: control-plane connect errors");
    struct probe unused;
    probe_init(&unused, "unused");
    kvs_client_config base = base_config(KVS_ROLE_VIEWER, &unused);
    base.use_control_plane = true;
    base.channel_arn = NULL;
    base.endpoint = NULL;
    base.client_id = "bad-input-cp-viewer";
    base.channel_name = channel;
    base.control_plane_url = url;
    base.ca_bundle_path = ca;
    base.credentials_from_env = true;
    base.skip_ice_servers = true;
    base.connect_timeout_ms = 5000;

    kvs_client_config c = base;
    c.access_key_id = key;
    c.secret_access_key = "not-the-secret";
    expect_cp_connect(__LINE__, "wrong secret_access_key", c, KVS_ERR_ACCESS_DENIED);
    c = base;
    c.access_key_id = "AKIDUNKNOWNEXAMPLE";
    c.secret_access_key = secret;
    expect_cp_connect(__LINE__, "unknown access_key_id", c, KVS_ERR_ACCESS_DENIED);
    c = base;
    c.channel_name = "bad-input-no-such-channel";
    expect_cp_connect(__LINE__, "unknown channel without create_channel", c, KVS_ERR_NOT_FOUND);
    c = base;
    c.ca_bundle_path = NULL;
    expect_cp_connect(__LINE__, "no ca_bundle_path (the emulator's CA is not trusted)", c,
                      KVS_ERR_TLS);
    c = base;
    c.ca_bundle_path = "/nonexistent/kvs-bad-input-ca.pem";
    expect_config_refused(__LINE__, "ca_bundle_path that does not exist", c);
    c = base;
    c.channel_name = "bad-input-ttl";
    c.create_channel = true;
    c.message_ttl_s = 500;
    expect_config_refused(__LINE__, "create_channel with message_ttl_s 500 (5-120)", c);

    section("with the TLS emulator: ICE servers, metrics, kvs_client_start");
    struct probe p;
    probe_init(&p, "cp-master");
    c = base;
    c.role = KVS_ROLE_MASTER;
    c.client_id = NULL;
    c.skip_ice_servers = false;
    c.on_ice_servers = cp_on_ice_servers;
    c.userdata = &p;
    c.free_userdata = probe_free;
    memset(&g_cp, 0, sizeof g_cp);
    kvs_client *client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    if (client == NULL) {
        return;
    }
    pthread_mutex_lock(&g_lock);
    g_cp.client = client;
    pthread_mutex_unlock(&g_lock);
    EXPECT_RC(KVS_OK, connect_paced(client));
    int got_ice = 0;
    for (int waited = 0; waited < 5000 && !got_ice; waited += 10) {
        pthread_mutex_lock(&g_lock);
        got_ice = g_cp.ice_callbacks > 0;
        pthread_mutex_unlock(&g_lock);
        if (!got_ice) {
            sleep_ms(10);
        }
    }
    EXPECT_TRUE(got_ice, "on_ice_servers fired");
    pthread_mutex_lock(&g_lock);
    struct cp_online seen = g_cp;
    pthread_mutex_unlock(&g_lock);
    if (got_ice) {
        judge_rc(__LINE__, "kvs_client_get_ice_servers(NULL buffers: a size query) in on_ice_servers",
                 &seen.sizes_in_cb, KVS_OK);
        EXPECT_TRUE(seen.count_in_cb == seen.announced && seen.len_in_cb > 0,
                    "sizes reported in the callback: %zu servers (announced %zu), %zu bytes",
                    seen.count_in_cb, seen.announced, seen.len_in_cb);
        judge_rc(__LINE__, "kvs_client_get_ice_servers(big buffers) in on_ice_servers",
                 &seen.copy_in_cb, KVS_OK);
    }

    size_t count = 0, len = 0;
    /* out_servers and buf both NULL: a size query (KVS_OK, sizes written). */
    EXPECT_RC(KVS_OK, kvs_client_get_ice_servers(client, NULL, 0, NULL, 0, &count, &len));
    EXPECT_TRUE(count >= 1 && count <= 16 && len > 0, "the sizes needed: %zu servers, %zu bytes",
                count, len);
    if (count >= 1 && count <= 16 && len > 0 && len < 65536) {
        kvs_ice_server servers[17];
        char *buf = (char *)malloc(len + 1);
        size_t n = 0, l = 0;
        if (buf != NULL) {
            memset(servers, 0x5A, sizeof servers);
            memset(buf, 'Z', len + 1);
            EXPECT_RC(KVS_ERR_NULL_PARAMETER,
                      kvs_client_get_ice_servers(client, servers, count, buf, len, NULL, &l));
            EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
                      kvs_client_get_ice_servers(client, NULL, count, buf, len, &n, &l));
            EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
                      kvs_client_get_ice_servers(client, servers, count, NULL, len, &n, &l));
            EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
                      kvs_client_get_ice_servers(client, servers, count - 1, buf, len, &n, &l));
            EXPECT_RC(KVS_ERR_BUFFER_TOO_SMALL,
                      kvs_client_get_ice_servers(client, servers, count, buf, len - 1, &n, &l));
            EXPECT_TRUE(buf[0] == 'Z' && buf[len - 2] == 'Z' &&
                            ((unsigned char *)servers)[0] == 0x5A,
                        "too small: nothing written into the buffers");
            EXPECT_TRUE(n == count && l == len, "too small: the sizes reported (%zu, %zu)", n, l);
            n = l = 0;
            EXPECT_RC(KVS_OK, kvs_client_get_ice_servers(client, servers, count, buf, len, &n, &l));
            int ok = n == count && l == len;
            char detail[256] = "";
            for (size_t i = 0; ok && i < n; i++) {
                const kvs_ice_server *s = &servers[i];
                int in_buf = s->username >= buf && s->username < buf + len &&
                             s->password >= buf && s->password < buf + len;
                for (size_t u = 0; u < s->uri_count && u < KVS_MAX_ICE_URIS; u++) {
                    in_buf = in_buf && s->uris[u] >= buf && s->uris[u] < buf + len &&
                             (strncmp(s->uris[u], "turn:", 5) == 0 ||
                              strncmp(s->uris[u], "turns:", 6) == 0);
                }
                ok = in_buf && s->uri_count >= 1 && s->uri_count <= KVS_MAX_ICE_URIS &&
                     s->username[0] != '\0' && s->password[0] != '\0' && s->ttl_seconds > 0;
                snprintf(detail, sizeof detail, "server %zu: %zu URIs (first %s), TTL %u s, "
                         "password %zu characters", i + 1, s->uri_count,
                         s->uri_count > 0 ? s->uris[0] : "-", (unsigned)s->ttl_seconds,
                         strlen(s->password));
            }
            EXPECT_TRUE(ok && buf[len] == 'Z', "%zu servers copied, pointers into the buffer, "
                        "nothing past it; %s", n, detail);
            /* Capacity larger than needed is fine. */
            EXPECT_RC(KVS_OK, kvs_client_get_ice_servers(client, servers, 17, buf, len + 1, &n, &l));
            free(buf);
        }
    }

    kvs_client_metrics m;
    EXPECT_RC(KVS_OK, kvs_client_get_metrics(client, &m));
    EXPECT_TRUE(m.state == KVS_STATE_CONNECTED && m.connects == 1 && m.last_connect_unix_ms > 0 &&
                    m.last_control_plane_us > 0 && m.last_tls_us > 0 && m.last_websocket_us > 0,
                "after a control-plane connect: %llu connects, control plane %llu us, TLS %llu us, "
                "WebSocket %llu us",
                (unsigned long long)m.connects, (unsigned long long)m.last_control_plane_us,
                (unsigned long long)m.last_tls_us, (unsigned long long)m.last_websocket_us);
    EXPECT_RC(KVS_OK, kvs_client_free(client));
    EXPECT_FREED_NOW(&p);

    /* kvs_client_start through the control plane: connects in the background. */
    probe_init(&p, "cp-start");
    c = base;
    c.userdata = &p;
    c.free_userdata = probe_free;
    client = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &client));
    if (client != NULL) {
        EXPECT_RC(KVS_OK, kvs_client_start(client));
        EXPECT_RC(KVS_OK, kvs_send_sdp_offer(client, NULL, SDP, NULL, NULL, 0, NULL));
        uint32_t state = KVS_STATE_DISCONNECTED;
        for (int waited = 0; waited < 5000; waited += 10) {
            state = kvs_client_state(client);
            if (state == KVS_STATE_CONNECTED) {
                break;
            }
            sleep_ms(10);
        }
        EXPECT_TRUE(state == KVS_STATE_CONNECTED, "kvs_client_start: CONNECTED (state %u)",
                    (unsigned)state);
        int sent = 0;
        for (int waited = 0; waited < 3000 && !sent; waited += 10) {
            sent = kvs_client_get_metrics(client, &m) == KVS_OK && m.messages_sent >= 1;
            if (!sent) {
                sleep_ms(10);
            }
        }
        EXPECT_TRUE(sent && m.messages_queued == 0,
                    "the offer queued before the socket opened went out (%llu sent)",
                    (unsigned long long)m.messages_sent);
        EXPECT_RC(KVS_OK, kvs_client_free(client));
        EXPECT_FREED_NOW(&p);
    }

    test_free_after_ice_servers(base, 10);
}

/* ------------------------------------------------------------------------ */
/* Shutdown.                                                                */

static void test_shutdown(const char *endpoint, const char *arn) {
    section("kvs_shutdown");
    /* One client left unconnected and (with the emulator) one left connected
     * across the shutdown: "clients left alive simply stop". */
    struct probe p_idle, p_live, p_after;
    probe_init(&p_idle, "idle-across-shutdown");
    probe_init(&p_live, "live-across-shutdown");
    kvs_client_config c = base_config(KVS_ROLE_VIEWER, &p_idle);
    c.client_id = "idle-viewer";
    kvs_client *idle = NULL;
    EXPECT_RC(KVS_OK, kvs_client_new(&c, &idle));
    kvs_client *live = NULL;
    if (endpoint != NULL) {
        c = base_config(KVS_ROLE_VIEWER, &p_live);
        c.endpoint = endpoint;
        c.channel_arn = arn;
        c.client_id = "live-viewer";
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &live));
        if (live != NULL) {
            EXPECT_RC(KVS_OK, connect_paced(live));
        }
    }

    /* A connect in progress on another thread (to a port that never answers
     * the handshake) is interrupted by the shutdown: KVS_ERR_SHUTDOWN. */
    struct probe p_connecting;
    probe_init(&p_connecting, "connecting-across-shutdown");
    char silent[64];
    int silent_fd = silent_listener(silent, sizeof silent);
    kvs_client *connecting = NULL;
    struct connect_job job;
    int job_running = 0;
    if (silent_fd >= 0) {
        c = base_config(KVS_ROLE_VIEWER, &p_connecting);
        c.endpoint = silent;
        c.client_id = "connecting-viewer";
        c.connect_timeout_ms = 20000;
        EXPECT_RC(KVS_OK, kvs_client_new(&c, &connecting));
        if (connecting != NULL && connect_job_start(&job, connecting) == 0) {
            job_running = 1;
            sleep_ms(300);
        }
    } else {
        fail(__LINE__, "silent_listener", "could not listen on 127.0.0.1");
    }

    double asked = now_ms();
    EXPECT_RC(KVS_OK, kvs_shutdown(2000));
    double took = now_ms() - asked;
    EXPECT_TRUE(took < 2500, "kvs_shutdown(2000) returned after %.0f ms", took);
    EXPECT_RC2(KVS_OK, KVS_ERR_SHUTDOWN, kvs_shutdown(2000));
    if (job_running) {
        pthread_join(job.thread, NULL);
        judge(__LINE__, "kvs_client_connect (on another thread) across kvs_shutdown", job.rc,
              KVS_ERR_SHUTDOWN, job.msg, "");
        EXPECT_TRUE(job.ended_ms - asked < 3000,
                    "the connect returned %.0f ms after kvs_shutdown began (timeout 20 s)",
                    job.ended_ms - asked);
    }
    if (connecting != NULL) {
        asked = now_ms();
        EXPECT_RC(KVS_OK, kvs_client_free(connecting));
        took = now_ms() - asked;
        EXPECT_FREED_NOW(&p_connecting);
        EXPECT_TRUE(took < 1000, "kvs_client_free after kvs_shutdown took %.0f ms", took);
    }
    if (silent_fd >= 0) {
        close(silent_fd);
    }

    probe_init(&p_after, "after-shutdown");
    c = base_config(KVS_ROLE_MASTER, &p_after);
    kvs_client *client = NULL;
    EXPECT_RC(KVS_ERR_SHUTDOWN, kvs_client_new(&c, &client));
    EXPECT_TRUE(client == NULL && p_after.free_calls == 1,
                "no client; free_userdata ran %d times before returning", p_after.free_calls);
    if (idle != NULL) {
        EXPECT_RC(KVS_ERR_SHUTDOWN, kvs_client_connect(idle));
        EXPECT_RC2(KVS_ERR_NOT_CONNECTED, KVS_ERR_SHUTDOWN,
                   kvs_send_sdp_offer(idle, NULL, SDP, NULL, NULL, 0, NULL));
        asked = now_ms();
        EXPECT_RC(KVS_OK, kvs_client_free(idle));
        took = now_ms() - asked;
        EXPECT_FREED_NOW(&p_idle);
        EXPECT_TRUE(took < 1000, "kvs_client_free after kvs_shutdown took %.0f ms", took);
    }
    if (live != NULL) {
        EXPECT_RC2(KVS_ERR_NOT_CONNECTED, KVS_ERR_SHUTDOWN,
                   kvs_send_sdp_offer(live, NULL, SDP, NULL, NULL, 0, NULL));
        asked = now_ms();
        EXPECT_RC(KVS_OK, kvs_client_free(live));
        took = now_ms() - asked;
        EXPECT_FREED_NOW(&p_live);
        EXPECT_TRUE(took < 1000, "kvs_client_free after kvs_shutdown took %.0f ms", took);
    }
    EXPECT_TRUE(kvs_version() != NULL && strcmp(kvs_result_str(KVS_ERR_SHUTDOWN),
                                                "unknown result code") != 0,
                "kvs_version and kvs_result_str still work");
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *out) {
    fprintf(out, "usage: bad_input --endpoint URL --channel-arn ARN\n"
                 "                 [--control-plane URL --ca-bundle PATH --cp-channel NAME]\n"
                 "       bad_input --offline\n"
                 "  (or set KVS_ENDPOINT and KVS_CHANNEL_ARN)\n"
                 "  --control-plane etc.: an emulator started with --tls and keys, which\n"
                 "  must be in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY\n");
}

int main(int argc, char **argv) {
    const char *endpoint = getenv("KVS_ENDPOINT");
    const char *arn = getenv("KVS_CHANNEL_ARN");
    const char *cp_url = NULL;
    const char *cp_ca = NULL;
    const char *cp_channel = NULL;
    int offline = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--offline") == 0) {
            offline = 1;
        } else if (strcmp(argv[i], "--control-plane") == 0 && i + 1 < argc) {
            cp_url = argv[++i];
        } else if (strcmp(argv[i], "--ca-bundle") == 0 && i + 1 < argc) {
            cp_ca = argv[++i];
        } else if (strcmp(argv[i], "--cp-channel") == 0 && i + 1 < argc) {
            cp_channel = argv[++i];
        } else if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc) {
            endpoint = argv[++i];
        } else if (strcmp(argv[i], "--channel-arn") == 0 && i + 1 < argc) {
            arn = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bad_input: unexpected argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (offline) {
        endpoint = NULL;
        arn = NULL;
        cp_url = NULL;
    } else if (cp_url != NULL && (cp_ca == NULL || cp_channel == NULL)) {
        fprintf(stderr, "bad_input: --control-plane needs --ca-bundle and --cp-channel\n");
        usage(stderr);
        return 2;
    } else if (endpoint == NULL || arn == NULL) {
        fprintf(stderr, "bad_input: needs --endpoint and --channel-arn of a running emulator "
                        "(or --offline to skip the tests that need one)\n");
        usage(stderr);
        return 2;
    }

    g_main_thread = pthread_self();
    fill_test_data();
    print_line("bad_input: %s; %s", kvs_version(),
               offline ? "offline (no emulator tests)" : endpoint);

    test_version();
    test_result_str();
    test_last_error();
    test_set_log_callback();
    test_config_default();
    test_client_new();
    test_unconnected_clients();
    test_connect_failures();
    test_new_result_codes();
    test_stun_url();
    test_control_plane_offline();
    if (endpoint != NULL) {
        test_online(endpoint, arn);
    } else {
        print_line("== with the emulator: SKIPPED (--offline)");
    }
    if (cp_url != NULL) {
        test_control_plane_online(cp_url, cp_ca, cp_channel);
    } else {
        print_line("== with the TLS emulator: SKIPPED (no --control-plane)");
    }
    finish_log_callback();
    test_shutdown(endpoint, arn);

    print_line("%d passed, %d failed", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
