/*
 * lifecycle.c: the client lifecycle contracts of kvs_signaling.h, as a C
 * application meets them, against the emulator (ws://, started with
 * --no-quotas):
 *
 *   free-flood        kvs_client_free on a master whose on_message answers
 *                     through its own kvs_client * while a viewer floods it;
 *                     hundreds of rounds (--rounds N, default 300)
 *   fork              fork() after first use: in the child every entry point
 *                     on library state returns KVS_ERR_FORKED at once; the
 *                     parent's clients still work
 *   free-backlog      kvs_client_free with thousands of callbacks queued
 *                     behind a slow on_message returns at once
 *   backpressure      callback_backlog_messages = 16 and a slow on_message:
 *                     nothing dropped, in order, the backlog stays bounded
 *   shutdown          kvs_shutdown(500) with thousands queued behind a 300 ms
 *                     callback (a process of its own: shutdown is final)
 *   shutdown-timeout  kvs_shutdown(200) while a 2 s callback runs:
 *                     KVS_ERR_TIMEOUT (a process of its own)
 *   free-during-calls kvs_client_free while another thread is blocked in
 *                     kvs_client_connect on the same client; then the freed
 *                     pointer, a second free and a made-up pointer: all
 *                     KVS_ERR_CLOSED, nothing reads freed memory
 *
 *   lifecycle --endpoint ws://127.0.0.1:PORT --channel-arn ARN [--rounds N]
 *             [--case NAME] [--valgrind]
 *
 * Without --case it runs every case; the two shutdown cases run in child
 * processes (this program again, through posix_spawn, with --case). Give it
 * a channel no other master is using. The bounds on time are correctness
 * bounds ("free returns within 3 s where the backlog would take 30 s"),
 * not measurements.
 *
 * Last line: "N passed, M failed"; the exit status is 1 on any failure.
 * Runs under ASan+UBSan and valgrind (use fewer --rounds there). Compiles as
 * C11 and as C++ (see examples_c/Makefile).
 *
 * Userdata of the clients whose free is under test lives in static arrays
 * and is never released by free_userdata (which only marks it freed): a
 * callback that runs after free_userdata is then seen and counted, instead
 * of being a use-after-free that only a sanitizer would notice.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvs_signaling.h"
#include "silent_listener.h"

extern char **environ;

/* ------------------------------------------------------------------------ */
/* Check bookkeeping.                                                       */

static int g_passed = 0;
static int g_failed = 0;

static const char *rc_name(uint32_t rc) { return kvs_result_name(rc); }

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
        g_passed++;
        print_line("ok    %4d  %s%s%s", line, what, detail[0] != '\0' ? "  -- " : "", detail);
    } else {
        g_failed++;
        print_line("FAIL  %4d  %s  -- %s", line, what, detail);
    }
}

#define EXPECT_TRUE(cond, ...) expect_true(__LINE__, (cond) ? 1 : 0, #cond, __VA_ARGS__)

/* EXPECT_RC(want, call): the call returns `want`; the detail names the code
 * and, for errors, the last-error text. */
#define EXPECT_RC(want, call)                                                                  \
    do {                                                                                       \
        uint32_t got_ = (uint32_t)(call);                                                      \
        expect_true(__LINE__, got_ == (uint32_t)(want), #call, "got %s, want %s%s%s",           \
                    rc_name(got_), rc_name((uint32_t)(want)), got_ != KVS_OK ? ": " : "",      \
                    got_ != KVS_OK ? kvs_last_error_message() : "");                           \
    } while (0)

static void section(const char *name) {
    print_line("== %s", name);
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void sleep_us(long us) {
    struct timespec ts;
    ts.tv_sec = 0;
    ts.tv_nsec = us * 1000L;
    nanosleep(&ts, NULL);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------------ */
/* Clients against the emulator.                                            */

static const char *g_endpoint = NULL;
static const char *g_arn = NULL;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

/* A client of the test channel: unpaced (the emulator runs with
 * --no-quotas), no ICE server fetch, no reconnects to speak of. */
static kvs_client_config lc_config(uint32_t role, const char *client_id, void *userdata,
                                   kvs_free_callback free_userdata) {
    kvs_client_config c = kvs_client_config_default();
    c.role = role;
    c.channel_arn = g_arn;
    c.endpoint = g_endpoint;
    c.client_id = client_id;
    c.connect_timeout_ms = 5000;
    c.sdp_per_second = KVS_UNPACED;
    c.ice_per_second = KVS_UNPACED;
    c.skip_ice_servers = true;
    c.userdata = userdata;
    c.free_userdata = free_userdata;
    return c;
}

/* kvs_client_new + kvs_client_connect; NULL (and a FAIL line) on failure.
 * A refused connect quota is retried, in case the emulator enforces it. */
static kvs_client *lc_open(int line, const kvs_client_config *c, const char *what) {
    kvs_client *client = NULL;
    uint32_t rc = (uint32_t)kvs_client_new(c, &client);
    if (rc != KVS_OK) {
        expect_true(line, 0, what, "kvs_client_new: %s: %s", rc_name(rc), kvs_last_error_message());
        return NULL;
    }
    for (int attempt = 0; attempt < 10; attempt++) {
        rc = (uint32_t)kvs_client_connect(client);
        if (rc != KVS_ERR_LIMIT_EXCEEDED) {
            break;
        }
        sleep_ms(400);
    }
    if (rc != KVS_OK) {
        expect_true(line, 0, what, "kvs_client_connect: %s: %s", rc_name(rc),
                    kvs_last_error_message());
        (void)kvs_client_free(client);
        return NULL;
    }
    return client;
}

/* An ICE candidate whose text carries `seq`. */
static void candidate_text(char *buf, size_t cap, int seq) {
    snprintf(buf, cap, "candidate:%d 1 udp 2122260223 192.0.2.1 %d typ host", seq,
             10000 + seq % 50000);
}

/* Sends candidate `seq` from `viewer` to the master; retries while the send
 * queue is full. Returns the last result. */
static uint32_t send_candidate(const kvs_client *viewer, int seq, int *queue_full) {
    char text[128];
    candidate_text(text, sizeof text, seq);
    kvs_ice_candidate c;
    c.candidate = text;
    c.sdp_mid = "0";
    c.sdp_mline_index = 0;
    c.username_fragment = NULL;
    for (;;) {
        uint32_t rc = (uint32_t)kvs_send_ice_candidate(viewer, NULL, &c, NULL, NULL, 0, NULL);
        if (rc != KVS_ERR_QUEUE_FULL) {
            return rc;
        }
        if (queue_full != NULL) {
            (*queue_full)++;
        }
        sleep_ms(1);
    }
}

static int metrics_of(const kvs_client *client, kvs_client_metrics *m) {
    memset(m, 0, sizeof *m);
    return kvs_client_get_metrics(client, m) == KVS_OK ? 0 : -1;
}

/* A viewer flooding the master with candidates from a thread of its own,
 * until `stop` is set or `max` were sent. */
struct flooder {
    const kvs_client *viewer;
    pthread_t thread;
    int max;
    int stop; /* g_lock */
    int sent;
    int queue_full;
    uint32_t failed_rc; /* KVS_OK, or the result that ended the flood */
};

static void *flooder_run(void *arg) {
    struct flooder *f = (struct flooder *)arg;
    for (int seq = 0; seq < f->max; seq++) {
        pthread_mutex_lock(&g_lock);
        int stop = f->stop;
        pthread_mutex_unlock(&g_lock);
        if (stop) {
            break;
        }
        uint32_t rc = send_candidate(f->viewer, seq, &f->queue_full);
        if (rc != KVS_OK) {
            f->failed_rc = rc;
            break;
        }
        f->sent++;
    }
    return NULL;
}

static int flooder_start(struct flooder *f, const kvs_client *viewer, int max) {
    memset(f, 0, sizeof *f);
    f->viewer = viewer;
    f->max = max;
    return pthread_create(&f->thread, NULL, flooder_run, f) == 0 ? 0 : -1;
}

static void flooder_stop(struct flooder *f) {
    pthread_mutex_lock(&g_lock);
    f->stop = 1;
    pthread_mutex_unlock(&g_lock);
    pthread_join(f->thread, NULL);
}

/* ------------------------------------------------------------------------ */
/* Userdata probe: free_userdata marks it, never releases it.               */

struct probe {
    const char *name;
    kvs_client *client;       /* for callbacks that call back through it */
    pthread_t freeing_thread; /* set before kvs_client_free */
    int freeing;
    int free_calls;
    int freed_on_freeing_thread;
    int free_while_in_callback; /* free_userdata ran while a callback ran */
    int in_callback;
    int callbacks;             /* callbacks started */
    int messages;              /* of which on_message */
    int callbacks_after_free;  /* started, or still running, after free_userdata */
    int callbacks_while_freeing;
    long slow_ms;              /* on_message sleeps this long */
    double last_callback_end_ms;
    double free_ms;            /* when free_userdata ran */
    /* calls made from on_message through `client` */
    int calls_ok, calls_closed, calls_other_allowed, calls_bad;
    uint32_t bad_rc;
    /* candidates from `expect_sender`, checked for order */
    const char *expect_sender;
    int next_seq, in_order, out_of_order, first_bad_seq, first_bad_want;
};

static void probe_init(struct probe *p, const char *name) {
    memset(p, 0, sizeof *p);
    p->name = name;
    p->first_bad_seq = -1;
}

static void probe_free(void *userdata) {
    struct probe *p = (struct probe *)userdata;
    pthread_mutex_lock(&g_lock);
    p->free_calls++;
    p->free_ms = now_ms();
    p->freed_on_freeing_thread = p->freeing && pthread_equal(pthread_self(), p->freeing_thread);
    if (p->in_callback) {
        p->free_while_in_callback++;
    }
    pthread_mutex_unlock(&g_lock);
}

/* kvs_client_free from this thread, timed; the probe learns which thread. */
static uint32_t probe_client_free(struct probe *p, kvs_client *client, double *took_ms) {
    pthread_mutex_lock(&g_lock);
    p->freeing_thread = pthread_self();
    p->freeing = 1;
    pthread_mutex_unlock(&g_lock);
    double t0 = now_ms();
    uint32_t rc = (uint32_t)kvs_client_free(client);
    *took_ms = now_ms() - t0;
    return rc;
}

/* The snapshot of a probe, under the lock. */
static struct probe probe_get(struct probe *p) {
    pthread_mutex_lock(&g_lock);
    struct probe copy = *p;
    pthread_mutex_unlock(&g_lock);
    return copy;
}

/* Entering and leaving a callback. Returns the client to call back through
 * (NULL once free_userdata ran). */
static kvs_client *probe_enter(struct probe *p) {
    pthread_mutex_lock(&g_lock);
    if (p->free_calls > 0) {
        p->callbacks_after_free++;
    }
    if (p->freeing) {
        p->callbacks_while_freeing++;
    }
    p->in_callback = 1;
    p->callbacks++;
    kvs_client *client = p->free_calls > 0 ? NULL : p->client;
    pthread_mutex_unlock(&g_lock);
    return client;
}

static void probe_leave(struct probe *p) {
    pthread_mutex_lock(&g_lock);
    if (p->free_calls > 0) {
        p->callbacks_after_free++; /* free_userdata ran while this one ran */
    }
    p->in_callback = 0;
    p->last_callback_end_ms = now_ms();
    pthread_mutex_unlock(&g_lock);
}

/* A call made from a callback while the client may be being freed: KVS_OK,
 * KVS_ERR_CLOSED, KVS_ERR_NOT_CONNECTED or KVS_ERR_QUEUE_FULL are fine. */
static void probe_call(struct probe *p, uint32_t rc) {
    pthread_mutex_lock(&g_lock);
    if (rc == KVS_OK) {
        p->calls_ok++;
    } else if (rc == KVS_ERR_CLOSED) {
        p->calls_closed++;
    } else if (rc == KVS_ERR_NOT_CONNECTED || rc == KVS_ERR_QUEUE_FULL) {
        p->calls_other_allowed++;
    } else {
        p->calls_bad++;
        p->bad_rc = rc;
    }
    pthread_mutex_unlock(&g_lock);
}

/* Counts a candidate "candidate:SEQ ..." from the expected sender. */
static void probe_sequence(struct probe *p, const kvs_message *m) {
    if (p->expect_sender == NULL || m->message_type != KVS_MESSAGE_TYPE_ICE_CANDIDATE ||
        m->sender_client_id == NULL || strcmp(m->sender_client_id, p->expect_sender) != 0) {
        return;
    }
    int seq = -1;
    if (m->candidate == NULL || sscanf(m->candidate, "candidate:%d ", &seq) != 1) {
        seq = -1;
    }
    pthread_mutex_lock(&g_lock);
    if (seq == p->next_seq) {
        p->in_order++;
        p->next_seq++;
    } else {
        if (p->out_of_order++ == 0) {
            p->first_bad_seq = seq;
            p->first_bad_want = p->next_seq;
        }
        if (seq > p->next_seq) {
            p->next_seq = seq + 1;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

/* on_message of a master: echoes candidates back to their sender through its
 * own handle (twice, a short pause between: a wider window for a concurrent
 * free), answers every 8th with an SDP answer, reads state and metrics. */
static void echo_on_message(void *userdata, const kvs_message *m) {
    struct probe *p = (struct probe *)userdata;
    kvs_client *client = probe_enter(p);
    if (client != NULL && m->message_type == KVS_MESSAGE_TYPE_ICE_CANDIDATE &&
        m->sender_client_id != NULL && m->candidate != NULL) {
        kvs_ice_candidate c;
        c.candidate = m->candidate;
        c.sdp_mid = m->sdp_mid;
        c.sdp_mline_index = m->sdp_mline_index;
        c.username_fragment = NULL;
        probe_call(p, (uint32_t)kvs_send_ice_candidate(client, m->sender_client_id, &c, NULL,
                                                       NULL, 0, NULL));
        sleep_us(200);
        probe_call(p, (uint32_t)kvs_send_ice_candidate(client, m->sender_client_id, &c, NULL,
                                                       NULL, 0, NULL));
        if (p->callbacks % 8 == 0) {
            probe_call(p, (uint32_t)kvs_send_sdp_answer(client, m->sender_client_id, SDP, NULL,
                                                        NULL, 0, NULL));
        }
        (void)kvs_client_state(client);
        kvs_client_metrics metrics;
        probe_call(p, (uint32_t)kvs_client_get_metrics(client, &metrics));
    }
    probe_leave(p);
}

/* on_message that takes `slow_ms` and checks the order of candidates. */
static void slow_on_message(void *userdata, const kvs_message *m) {
    struct probe *p = (struct probe *)userdata;
    (void)probe_enter(p);
    pthread_mutex_lock(&g_lock);
    p->messages++;
    pthread_mutex_unlock(&g_lock);
    probe_sequence(p, m);
    if (p->slow_ms > 0) {
        sleep_ms(p->slow_ms);
    }
    probe_leave(p);
}

/* Other callbacks only count, so that a late one shows. */
static void probe_on_state(void *userdata, uint32_t state, const char *reason) {
    (void)state;
    (void)reason;
    struct probe *p = (struct probe *)userdata;
    (void)probe_enter(p);
    probe_leave(p);
}

static void probe_on_status(void *userdata, const kvs_status *status) {
    (void)status;
    struct probe *p = (struct probe *)userdata;
    (void)probe_enter(p);
    probe_leave(p);
}

/* Expects `p` released exactly once, on the thread that freed, after every
 * callback (none running at the time, none later). */
static void expect_released(int line, struct probe *p, uint32_t rc, double took_ms,
                            double bound_ms) {
    struct probe s = probe_get(p);
    char what[160];
    snprintf(what, sizeof what, "%s: kvs_client_free", s.name);
    expect_true(line, rc == KVS_OK && took_ms < bound_ms, what, "%s after %.0f ms (bound %.0f ms)",
                rc_name(rc), took_ms, bound_ms);
    snprintf(what, sizeof what, "%s: free_userdata once, on the freeing thread, last", s.name);
    expect_true(line,
                s.free_calls == 1 && s.freed_on_freeing_thread && s.free_while_in_callback == 0 &&
                    s.callbacks_after_free == 0,
                what, "%d calls, %s, %d while a callback ran, %d callbacks after it", s.free_calls,
                s.freed_on_freeing_thread ? "on the freeing thread" : "NOT on the freeing thread",
                s.free_while_in_callback, s.callbacks_after_free);
}

/* ------------------------------------------------------------------------ */
/* a. kvs_client_free while callbacks send through the handle.              */

static int g_under_valgrind = 0; /* --valgrind */
/* Under valgrind a free (a clean close, the reports of queued sends) takes
 * seconds, not milliseconds. */
#define FREE_BOUND_MS (g_under_valgrind ? 15000 : 5000)
#define MAX_ROUNDS 5000
static struct probe g_flood_master[MAX_ROUNDS];
static struct probe g_flood_viewer[MAX_ROUNDS];

static void test_free_flood(int rounds) {
    section("free-flood: kvs_client_free while on_message answers through the handle");
    if (rounds > MAX_ROUNDS) {
        rounds = MAX_ROUNDS;
    }
    int done = 0, bad_rc = 0, slow = 0, bad_release = 0, setup_failed = 0;
    int rounds_racing = 0, calls_ok = 0, calls_closed = 0, calls_other = 0, calls_bad = 0;
    uint32_t last_bad_rc = KVS_OK;
    double max_free_ms = 0, total_free_ms = 0;
    double t_start = now_ms();
    for (int r = 0; r < rounds; r++) {
        struct probe *pm = &g_flood_master[r];
        struct probe *pv = &g_flood_viewer[r];
        probe_init(pm, "free-flood master");
        probe_init(pv, "free-flood viewer");
        char viewer_id[96];
        snprintf(viewer_id, sizeof viewer_id, "lc-%ld-flood-%d", (long)getpid(), r);

        kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, pm, probe_free);
        cm.on_message = echo_on_message;
        cm.on_state = probe_on_state;
        cm.on_status = probe_on_status;
        kvs_client *master = NULL;
        if (kvs_client_new(&cm, &master) != KVS_OK) {
            expect_true(__LINE__, 0, "kvs_client_new (master)", "%s", kvs_last_error_message());
            setup_failed++;
            break;
        }
        pthread_mutex_lock(&g_lock);
        pm->client = master;
        pthread_mutex_unlock(&g_lock);
        uint32_t rc = (uint32_t)kvs_client_connect(master);
        kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, pv, probe_free);
        cv.on_state = probe_on_state;
        cv.on_status = probe_on_status;
        kvs_client *viewer = rc == KVS_OK ? lc_open(__LINE__, &cv, "free-flood viewer") : NULL;
        if (rc != KVS_OK || viewer == NULL) {
            if (rc != KVS_OK) {
                expect_true(__LINE__, 0, "kvs_client_connect (master)", "%s: %s", rc_name(rc),
                            kvs_last_error_message());
            }
            double took;
            (void)probe_client_free(pm, master, &took);
            setup_failed++;
            break;
        }
        struct flooder f;
        if (flooder_start(&f, viewer, 100000) != 0) {
            expect_true(__LINE__, 0, "pthread_create", "no flooder thread");
            double took;
            (void)probe_client_free(pm, master, &took);
            (void)probe_client_free(pv, viewer, &took);
            setup_failed++;
            break;
        }
        /* Free the master after 1..40 of its callbacks started (at most 2 s):
         * at a different point of the flood each round. */
        int target = 1 + r % 40;
        for (double t0 = now_ms(); now_ms() - t0 < 2000;) {
            if (probe_get(pm).callbacks >= target) {
                break;
            }
            sleep_us(200);
        }
        double took = 0;
        rc = probe_client_free(pm, master, &took);
        struct probe s = probe_get(pm);
        if (rc != KVS_OK) {
            bad_rc++;
            if (bad_rc == 1) {
                expect_true(__LINE__, 0, "kvs_client_free (master)", "round %d: %s: %s", r,
                            rc_name(rc), kvs_last_error_message());
            }
        }
        if (took > FREE_BOUND_MS) {
            slow++;
        }
        if (took > max_free_ms) {
            max_free_ms = took;
        }
        total_free_ms += took;
        if (s.free_calls != 1 || !s.freed_on_freeing_thread || s.free_while_in_callback != 0 ||
            s.callbacks_after_free != 0) {
            if (bad_release++ < 5) {
                expect_true(__LINE__, 0, "free_userdata once, on the freeing thread, last",
                            "round %d: %d calls, %s, %d while a callback ran, %d callbacks after",
                            r, s.free_calls, s.freed_on_freeing_thread ? "freeing thread" : "ANOTHER thread",
                            s.free_while_in_callback, s.callbacks_after_free);
            }
        }
        rounds_racing += s.calls_closed > 0;
        flooder_stop(&f);
        double took_v = 0;
        uint32_t rc_v = probe_client_free(pv, viewer, &took_v);
        struct probe sv = probe_get(pv);
        if (rc_v != KVS_OK || sv.free_calls != 1 || !sv.freed_on_freeing_thread ||
            sv.callbacks_after_free != 0) {
            if (bad_release++ < 5) {
                expect_true(__LINE__, 0, "viewer: kvs_client_free, free_userdata once",
                            "round %d: %s, %d calls, %d callbacks after", r, rc_name(rc_v),
                            sv.free_calls, sv.callbacks_after_free);
            }
        }
        done++;
    }
    /* Late callbacks would show up now. */
    sleep_ms(300);
    int late = 0, twice = 0;
    pthread_mutex_lock(&g_lock);
    for (int r = 0; r < done; r++) {
        late += g_flood_master[r].callbacks_after_free + g_flood_viewer[r].callbacks_after_free;
        twice += (g_flood_master[r].free_calls != 1) + (g_flood_viewer[r].free_calls != 1);
        calls_ok += g_flood_master[r].calls_ok;
        calls_closed += g_flood_master[r].calls_closed;
        calls_other += g_flood_master[r].calls_other_allowed;
        calls_bad += g_flood_master[r].calls_bad;
        if (g_flood_master[r].calls_bad > 0) {
            last_bad_rc = g_flood_master[r].bad_rc;
        }
    }
    pthread_mutex_unlock(&g_lock);
    double elapsed = now_ms() - t_start;
    EXPECT_TRUE(setup_failed == 0 && done == rounds, "%d of %d rounds (%.1f s)", done, rounds,
                elapsed / 1000);
    EXPECT_TRUE(bad_rc == 0, "kvs_client_free returned KVS_OK in every round (%d did not)", bad_rc);
    EXPECT_TRUE(slow == 0, "kvs_client_free took at most %.0f ms (mean %.1f ms; bound %d ms)",
                max_free_ms, done > 0 ? total_free_ms / done : 0.0, FREE_BOUND_MS);
    EXPECT_TRUE(bad_release == 0 && twice == 0,
                "free_userdata once, on the freeing thread, after every callback (%d rounds not)",
                bad_release);
    EXPECT_TRUE(late == 0, "no callback after free_userdata, 300 ms later either (%d)", late);
    EXPECT_TRUE(calls_bad == 0,
                "calls from on_message: %d KVS_OK, %d KVS_ERR_CLOSED, %d NOT_CONNECTED/QUEUE_FULL, "
                "%d other (last: %s)",
                calls_ok, calls_closed, calls_other, calls_bad, rc_name(last_bad_rc));
    print_line("      (in %d of %d rounds a callback ran while the master was being freed and "
               "saw KVS_ERR_CLOSED)",
               rounds_racing, done);
}

/* ------------------------------------------------------------------------ */
/* b. fork after first use.                                                 */

/* The child writes with write(2) only: stdio locks may be held by threads
 * that do not exist in the child. */
static void child_say(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static void child_say(const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof buf - 2) {
        n = (int)sizeof buf - 2;
    }
    buf[n++] = '\n';
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));
        if (w <= 0) {
            break;
        }
        off += w;
    }
}

static int g_child_first_failure = 0;
static int g_child_check = 0;
static double g_child_slowest_ms = 0;

/* Each check has a number; the child exits with the first failed one. */
static void child_check(int ok, const char *what, const char *detail) {
    g_child_check++;
    if (!ok && g_child_first_failure == 0) {
        g_child_first_failure = g_child_check;
    }
    child_say("%s  fork child #%d  %s  -- %s", ok ? "ok  " : "FAIL", g_child_check, what, detail);
}

/* CHILD_RC(want, call): the call returns `want` at once (< 1 s). */
#define CHILD_RC(want, call)                                                                   \
    do {                                                                                       \
        double t0_ = now_ms();                                                                 \
        uint32_t got_ = (uint32_t)(call);                                                      \
        double ms_ = now_ms() - t0_;                                                           \
        if (ms_ > g_child_slowest_ms) {                                                        \
            g_child_slowest_ms = ms_;                                                          \
        }                                                                                      \
        char d_[256];                                                                          \
        snprintf(d_, sizeof d_, "%s in %.1f ms (want %s, at once)", rc_name(got_), ms_,        \
                 rc_name((uint32_t)(want)));                                                   \
        child_check(got_ == (uint32_t)(want) && ms_ < 1000, #call, d_);                        \
    } while (0)

static int g_child_free_calls = 0; /* the child's copy only */

static void child_count_free(void *userdata) {
    (void)userdata;
    g_child_free_calls++;
}

static void child_log(void *userdata, uint32_t level, const char *target, const char *message,
                      size_t len) {
    (void)userdata;
    (void)level;
    (void)target;
    (void)message;
    (void)len;
}

/* In the forked child: every entry point on the inherited state. */
static int fork_child(kvs_client *master, kvs_client *viewer, const char *viewer_id) {
    alarm(5); /* a hang kills the child with SIGALRM: the parent reports it */
    char d[256];
    const char *cand_text = "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host";
    kvs_ice_candidate cand;
    cand.candidate = cand_text;
    cand.sdp_mid = "0";
    cand.sdp_mline_index = 0;
    cand.username_fragment = NULL;
    static const uint8_t payload[] = "{\"candidate\":\"candidate:1 1 udp 1 192.0.2.1 1 typ host\"}";

    CHILD_RC(KVS_ERR_FORKED, kvs_send_sdp_offer(viewer, NULL, SDP, NULL, NULL, 0, NULL));
    CHILD_RC(KVS_ERR_FORKED, kvs_send_sdp_answer(master, viewer_id, SDP, NULL, NULL, 0, NULL));
    CHILD_RC(KVS_ERR_FORKED, kvs_send_ice_candidate(viewer, NULL, &cand, NULL, NULL, 0, NULL));
    CHILD_RC(KVS_ERR_FORKED, kvs_send_ice_candidate(master, viewer_id, &cand, NULL, NULL, 0, NULL));
    CHILD_RC(KVS_ERR_FORKED, kvs_send_message(master, KVS_MESSAGE_TYPE_ICE_CANDIDATE, viewer_id,
                                              payload, sizeof payload - 1, NULL, NULL, 0, NULL));
    {
        double t0 = now_ms();
        uint32_t state = kvs_client_state(master);
        double ms = now_ms() - t0;
        snprintf(d, sizeof d, "%u in %.1f ms (want KVS_STATE_DISCONNECTED; the parent's is CONNECTED)",
                 (unsigned)state, ms);
        child_check(state == KVS_STATE_DISCONNECTED && ms < 1000, "kvs_client_state(master)", d);
    }
    {
        kvs_client_metrics m;
        CHILD_RC(KVS_ERR_FORKED, kvs_client_get_metrics(master, &m));
    }
    {
        kvs_ice_server servers[4];
        char buf[1024];
        size_t n = 0, len = 0;
        CHILD_RC(KVS_ERR_FORKED,
                 kvs_client_get_ice_servers(master, servers, 4, buf, sizeof buf, &n, &len));
        CHILD_RC(KVS_ERR_FORKED, kvs_client_get_ice_servers(master, NULL, 0, NULL, 0, &n, &len));
    }
    CHILD_RC(KVS_ERR_FORKED, kvs_client_connect(master));
    CHILD_RC(KVS_ERR_FORKED, kvs_client_start(viewer));
    CHILD_RC(KVS_ERR_FORKED, kvs_client_disconnect(viewer));
    {
        /* kvs_client_new fails; its userdata is released on this thread. */
        kvs_client_config c = lc_config(KVS_ROLE_VIEWER, "lc-fork-child", &g_child_free_calls,
                                        child_count_free);
        kvs_client *made = NULL;
        g_child_free_calls = 0;
        CHILD_RC(KVS_ERR_FORKED, kvs_client_new(&c, &made));
        snprintf(d, sizeof d, "*out_client %s, free_userdata ran %d times",
                 made == NULL ? "untouched" : "WRITTEN", g_child_free_calls);
        child_check(made == NULL && g_child_free_calls == 1,
                    "kvs_client_new: no client, userdata released once", d);
    }
    {
        g_child_free_calls = 0;
        CHILD_RC(KVS_ERR_FORKED, kvs_set_log_callback(KVS_LOG_LEVEL_WARN, child_log,
                                                      &g_child_free_calls, child_count_free));
        /* Not checked: the header's kvs_set_log_callback says free_userdata
         * runs when the call fails, the fork rule says nothing is touched. */
        child_say("note  fork child: kvs_set_log_callback's free_userdata ran %d times",
                  g_child_free_calls);
        /* Restoring the default keeps nothing: userdata is released even here. */
        g_child_free_calls = 0;
        CHILD_RC(KVS_ERR_FORKED, kvs_set_log_callback(KVS_LOG_LEVEL_WARN, NULL,
                                                      &g_child_free_calls, child_count_free));
        snprintf(d, sizeof d, "free_userdata ran %d times", g_child_free_calls);
        child_check(g_child_free_calls == 1,
                    "kvs_set_log_callback(NULL callback): userdata released once", d);
    }
    {
        /* The last error of this thread (pure, thread-local) tells why. */
        size_t n = 0;
        uint32_t rc = (uint32_t)kvs_last_error(NULL, 0, &n);
        snprintf(d, sizeof d, "%s, %zu bytes: \"%s\"", rc_name(rc), n, kvs_last_error_message());
        child_check(rc == KVS_OK && n > 0 && strstr(kvs_last_error_message(), "fork") != NULL,
                    "kvs_last_error names the fork", d);
    }
    /* kvs_client_free leaks and returns at once, the userdata untouched
     * (the parent's probes; the child's copies would show a call). */
    CHILD_RC(KVS_ERR_FORKED, kvs_client_free(viewer));
    CHILD_RC(KVS_ERR_FORKED, kvs_shutdown(2000));
    CHILD_RC(KVS_ERR_FORKED, kvs_client_free(master));
    /* The pure functions stay usable. */
    {
        char url[128];
        size_t n = 0;
        CHILD_RC(KVS_OK, kvs_stun_url("us-west-2", false, false, url, sizeof url, &n));
        kvs_client_config c = kvs_client_config_default();
        snprintf(d, sizeof d, "version \"%s\", result_str \"%s\", default role %u",
                 kvs_version() != NULL ? kvs_version() : "(NULL)",
                 kvs_result_str(KVS_ERR_FORKED), (unsigned)c.role);
        child_check(kvs_version() != NULL &&
                        strcmp(kvs_result_str(KVS_ERR_FORKED), "unknown result code") != 0 &&
                        c.role == KVS_ROLE_MASTER,
                    "kvs_version, kvs_result_str, kvs_client_config_default", d);
    }
    snprintf(d, sizeof d, "slowest call %.1f ms", g_child_slowest_ms);
    child_check(g_child_slowest_ms < 1000, "every call returned at once", d);
    return g_child_first_failure;
}

struct fork_probe_state {
    struct probe master, viewer;
};
static struct fork_probe_state g_fork;
static int g_fork_marker_seen = 0;

static void fork_master_on_message(void *userdata, const kvs_message *m) {
    struct probe *p = (struct probe *)userdata;
    (void)probe_enter(p);
    if (m->candidate != NULL && strstr(m->candidate, "candidate:424242 ") == m->candidate) {
        pthread_mutex_lock(&g_lock);
        g_fork_marker_seen++;
        pthread_mutex_unlock(&g_lock);
    }
    probe_leave(p);
}

/* Waits for the child at most `ms`; kills it after. Returns its status, or
 * -1 if it had to be killed. */
static int wait_child(pid_t pid, long ms, int *status) {
    for (double t0 = now_ms(); now_ms() - t0 < ms;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) {
            return 0;
        }
        if (w < 0 && errno != EINTR) {
            return -2;
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    (void)waitpid(pid, status, 0);
    return -1;
}

static void test_fork(void) {
    section("fork: every entry point in the child returns KVS_ERR_FORKED at once");
    probe_init(&g_fork.master, "fork master");
    probe_init(&g_fork.viewer, "fork viewer");
    char viewer_id[64];
    snprintf(viewer_id, sizeof viewer_id, "lc-%ld-fork", (long)getpid());
    kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, &g_fork.master, probe_free);
    cm.on_message = fork_master_on_message;
    kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, &g_fork.viewer, probe_free);
    kvs_client *master = lc_open(__LINE__, &cm, "fork master");
    kvs_client *viewer = master != NULL ? lc_open(__LINE__, &cv, "fork viewer") : NULL;
    if (master == NULL || viewer == NULL) {
        double took;
        if (master != NULL) {
            (void)probe_client_free(&g_fork.master, master, &took);
        }
        return;
    }
    /* Both sides in use: a candidate goes through before the fork. */
    EXPECT_RC(KVS_OK, send_candidate(viewer, 1, NULL));

    /* The child's verdict: its exit status (the number of its first failed
     * check, 0 if none), also written to a pipe: under valgrind the exit
     * status is valgrind's, whose leak check counts what the child leaks by
     * contract (kvs_client_free returns KVS_ERR_FORKED and leaks). */
    int fds[2];
    if (pipe(fds) != 0) {
        EXPECT_TRUE(0, "pipe: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        EXPECT_TRUE(pid >= 0, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        unsigned char verdict = (unsigned char)fork_child(master, viewer, viewer_id);
        ssize_t w = write(fds[1], &verdict, 1);
        (void)w;
        _exit(verdict);
    }
    close(fds[1]);
    int status = 0;
    int waited = wait_child(pid, 15000, &status);
    unsigned char verdict = 255;
    ssize_t got = read(fds[0], &verdict, 1);
    close(fds[0]);
    if (waited == -1) {
        EXPECT_TRUE(waited == 0, "the child did not end within 15 s (killed)");
    } else if (WIFSIGNALED(status)) {
        EXPECT_TRUE(!WIFSIGNALED(status), "the child was killed by signal %d%s", WTERMSIG(status),
                    WTERMSIG(status) == SIGALRM ? " (SIGALRM: a call hung for 5 s)" : "");
    } else {
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        EXPECT_TRUE(got == 1 && verdict == 0 && (code == 0 || g_under_valgrind),
                    "the child exited %d, reported %d%s%s", code, got == 1 ? (int)verdict : -1,
                    verdict != 0 ? " (the number of the first failed check, above)" : "",
                    g_under_valgrind && code != 0 ? " (exit status ignored: --valgrind)" : "");
    }

    /* The parent's clients are unaffected. */
    EXPECT_TRUE(kvs_client_state(master) == KVS_STATE_CONNECTED &&
                    kvs_client_state(viewer) == KVS_STATE_CONNECTED,
                "the parent's clients are still CONNECTED");
    EXPECT_RC(KVS_OK, send_candidate(viewer, 424242, NULL));
    int seen = 0;
    /* Under valgrind everything runs tens of times slower. */
    double patience_ms = g_under_valgrind ? 15000 : 3000;
    for (double t0 = now_ms(); now_ms() - t0 < patience_ms && seen == 0; sleep_ms(5)) {
        pthread_mutex_lock(&g_lock);
        seen = g_fork_marker_seen;
        pthread_mutex_unlock(&g_lock);
    }
    EXPECT_TRUE(seen == 1, "the master received the parent's candidate after the fork (%d)", seen);
    kvs_client_metrics m;
    EXPECT_TRUE(metrics_of(master, &m) == 0 && m.state == KVS_STATE_CONNECTED,
                "kvs_client_get_metrics in the parent: state %u", (unsigned)m.state);
    double took;
    uint32_t rc = probe_client_free(&g_fork.viewer, viewer, &took);
    expect_released(__LINE__, &g_fork.viewer, rc, took, 5000);
    rc = probe_client_free(&g_fork.master, master, &took);
    expect_released(__LINE__, &g_fork.master, rc, took, 5000);
}

/* ------------------------------------------------------------------------ */
/* c. kvs_client_free with thousands of callbacks queued.                   */

static struct probe g_backlog_master, g_backlog_viewer;

/* Waits until `client` has at least `want` callbacks queued (at most `ms`);
 * returns the last count seen. */
static unsigned long long wait_queued(const kvs_client *client, unsigned long long want, long ms) {
    kvs_client_metrics m;
    unsigned long long q = 0;
    for (double t0 = now_ms(); now_ms() - t0 < ms; sleep_ms(5)) {
        if (metrics_of(client, &m) == 0) {
            q = (unsigned long long)m.callbacks_queued;
            if (q >= want) {
                break;
            }
        }
    }
    return q;
}

static void test_free_backlog(void) {
    section("free-backlog: kvs_client_free with thousands of callbacks queued (10 ms each)");
    probe_init(&g_backlog_master, "free-backlog master");
    probe_init(&g_backlog_viewer, "free-backlog viewer");
    g_backlog_master.slow_ms = 10;
    char viewer_id[64];
    snprintf(viewer_id, sizeof viewer_id, "lc-%ld-backlog", (long)getpid());
    kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, &g_backlog_master, probe_free);
    cm.on_message = slow_on_message;
    cm.on_state = probe_on_state;
    cm.callback_backlog_messages = 10000;
    cm.callback_backlog_bytes = 64u * 1024u * 1024u;
    kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, &g_backlog_viewer, probe_free);
    cv.send_queue_capacity = 4096;
    kvs_client *master = lc_open(__LINE__, &cm, "free-backlog master");
    kvs_client *viewer = master != NULL ? lc_open(__LINE__, &cv, "free-backlog viewer") : NULL;
    double took;
    if (master == NULL || viewer == NULL) {
        if (master != NULL) {
            (void)probe_client_free(&g_backlog_master, master, &took);
        }
        return;
    }
    const int total = 3000;
    int sent = 0, queue_full = 0;
    uint32_t rc = KVS_OK;
    for (; sent < total && rc == KVS_OK; sent++) {
        rc = send_candidate(viewer, sent, &queue_full);
    }
    EXPECT_TRUE(rc == KVS_OK, "the viewer sent %d candidates (%s; %d times the queue was full)",
                sent - (rc != KVS_OK), rc_name(rc), queue_full);
    unsigned long long queued = wait_queued(master, 2000, 10000);
    struct probe before = probe_get(&g_backlog_master);
    EXPECT_TRUE(queued >= 2000, "%llu callbacks queued behind the slow on_message (%d ran): "
                                "%.0f s of backlog",
                queued, before.callbacks, (double)queued * 10 / 1000);
    rc = probe_client_free(&g_backlog_master, master, &took);
    struct probe after = probe_get(&g_backlog_master);
    expect_released(__LINE__, &g_backlog_master, rc, took, 3000);
    /* One on_message may have been running; on_state sees CLOSING and
     * DISCONNECTED during the free (kvs_client_free). Between the snapshot and
     * the moment the free discards the queue, more 10 ms callbacks can start
     * legitimately: under valgrind that moment is tens of ms later. */
    int started_bound = g_under_valgrind ? 20 : 1;
    EXPECT_TRUE(after.messages <= before.messages + started_bound,
                "%d on_message started during the free (%d other callbacks; %.0f ms; the queue "
                "was discarded)",
                after.messages - before.messages,
                (after.callbacks - after.messages) - (before.callbacks - before.messages), took);
    sleep_ms(200);
    after = probe_get(&g_backlog_master);
    EXPECT_TRUE(after.callbacks_after_free == 0, "no callback 200 ms later (%d)",
                after.callbacks_after_free);
    rc = probe_client_free(&g_backlog_viewer, viewer, &took);
    expect_released(__LINE__, &g_backlog_viewer, rc, took, 5000);
}

/* ------------------------------------------------------------------------ */
/* e. Backpressure: a small callback backlog, nothing dropped.              */

static struct probe g_bp_master, g_bp_viewer;

struct sampler {
    const kvs_client *client;
    pthread_t thread;
    int stop; /* g_lock */
    unsigned long long max_queued;
    int samples;
};

static void *sampler_run(void *arg) {
    struct sampler *s = (struct sampler *)arg;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        int stop = s->stop;
        pthread_mutex_unlock(&g_lock);
        if (stop) {
            break;
        }
        kvs_client_metrics m;
        if (metrics_of(s->client, &m) == 0) {
            s->samples++;
            if ((unsigned long long)m.callbacks_queued > s->max_queued) {
                s->max_queued = (unsigned long long)m.callbacks_queued;
            }
        }
        sleep_ms(1);
    }
    return NULL;
}

static void test_backpressure(void) {
    section("backpressure: callback_backlog_messages 16, slow on_message, 2000 unpaced candidates");
    probe_init(&g_bp_master, "backpressure master");
    probe_init(&g_bp_viewer, "backpressure viewer");
    char viewer_id[64];
    snprintf(viewer_id, sizeof viewer_id, "lc-%ld-bp", (long)getpid());
    g_bp_master.slow_ms = 2;
    g_bp_master.expect_sender = viewer_id;
    kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, &g_bp_master, probe_free);
    cm.on_message = slow_on_message;
    cm.callback_backlog_messages = 16;
    kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, &g_bp_viewer, probe_free);
    cv.on_status = probe_on_status; /* a failed send would be reported here */
    kvs_client *master = lc_open(__LINE__, &cm, "backpressure master");
    kvs_client *viewer = master != NULL ? lc_open(__LINE__, &cv, "backpressure viewer") : NULL;
    double took;
    if (master == NULL || viewer == NULL) {
        if (master != NULL) {
            (void)probe_client_free(&g_bp_master, master, &took);
        }
        return;
    }
    struct sampler s;
    memset(&s, 0, sizeof s);
    s.client = master;
    int sampling = pthread_create(&s.thread, NULL, sampler_run, &s) == 0;
    const int total = 2000;
    int sent = 0, queue_full = 0;
    uint32_t rc = KVS_OK;
    double t0 = now_ms();
    for (; sent < total; sent++) {
        rc = send_candidate(viewer, sent, &queue_full);
        if (rc != KVS_OK) {
            break;
        }
    }
    double sent_ms = now_ms() - t0;
    EXPECT_TRUE(rc == KVS_OK && sent == total,
                "the viewer sent %d candidates in %.0f ms (%s; the send queue was full %d times)",
                sent, sent_ms, rc_name(rc), queue_full);
    struct probe p = probe_get(&g_bp_master);
    while (now_ms() - t0 < 60000 && p.in_order + p.out_of_order < sent) {
        sleep_ms(10);
        p = probe_get(&g_bp_master);
    }
    double all_ms = now_ms() - t0;
    if (sampling) {
        pthread_mutex_lock(&g_lock);
        s.stop = 1;
        pthread_mutex_unlock(&g_lock);
        pthread_join(s.thread, NULL);
    }
    EXPECT_TRUE(p.in_order == total && p.out_of_order == 0,
                "the master got %d of %d in order in %.0f ms; %d out of order (first: %d where %d "
                "was due)",
                p.in_order, total, all_ms, p.out_of_order, p.first_bad_seq, p.first_bad_want);
    kvs_client_metrics m;
    int have = metrics_of(master, &m) == 0;
    EXPECT_TRUE(have && m.backpressure_pauses > 0, "backpressure_pauses %llu",
                have ? (unsigned long long)m.backpressure_pauses : 0ULL);
    EXPECT_TRUE(sampling && s.samples > 10 && s.max_queued <= 16 + 4,
                "callbacks_queued at most %llu in %d samples (limit 16 + 4)", s.max_queued,
                s.samples);
    struct probe v = probe_get(&g_bp_viewer);
    kvs_client_metrics vm;
    int have_v = metrics_of(viewer, &vm) == 0;
    EXPECT_TRUE(v.callbacks == 0 && have_v && vm.messages_failed == 0,
                "the viewer: %d status reports, %llu messages failed", v.callbacks,
                have_v ? (unsigned long long)vm.messages_failed : 0ULL);
    rc = probe_client_free(&g_bp_viewer, viewer, &took);
    expect_released(__LINE__, &g_bp_viewer, rc, took, 5000);
    rc = probe_client_free(&g_bp_master, master, &took);
    expect_released(__LINE__, &g_bp_master, rc, took, 5000);
}

/* ------------------------------------------------------------------------ */
/* d. kvs_shutdown with callbacks queued, and with one running too long.    */
/*    Each in a process of its own (--case shutdown / shutdown-timeout).    */

static struct probe g_sd_master, g_sd_viewer;

static void test_shutdown_backlog(void) {
    section("shutdown: kvs_shutdown(500) with thousands queued behind a 300 ms on_message");
    probe_init(&g_sd_master, "shutdown master");
    probe_init(&g_sd_viewer, "shutdown viewer");
    g_sd_master.slow_ms = 300;
    char viewer_id[64];
    snprintf(viewer_id, sizeof viewer_id, "lc-%ld-sd", (long)getpid());
    kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, &g_sd_master, probe_free);
    cm.on_message = slow_on_message;
    cm.on_state = probe_on_state;
    cm.on_status = probe_on_status;
    cm.callback_backlog_messages = 10000;
    cm.callback_backlog_bytes = 64u * 1024u * 1024u;
    kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, &g_sd_viewer, probe_free);
    cv.on_state = probe_on_state;
    cv.send_queue_capacity = 4096;
    kvs_client *master = lc_open(__LINE__, &cm, "shutdown master");
    kvs_client *viewer = master != NULL ? lc_open(__LINE__, &cv, "shutdown viewer") : NULL;
    double took;
    if (master == NULL || viewer == NULL) {
        return; /* the process ends here */
    }
    int sent = 0;
    uint32_t rc = KVS_OK;
    for (; sent < 2000 && rc == KVS_OK; sent++) {
        rc = send_candidate(viewer, sent, NULL);
    }
    EXPECT_TRUE(rc == KVS_OK, "the viewer sent 2000 candidates (%s)", rc_name(rc));
    unsigned long long queued = wait_queued(master, 1000, 10000);
    EXPECT_TRUE(queued >= 1000, "%llu callbacks queued behind the 300 ms on_message", queued);
    /* Let a callback be running when the shutdown comes. */
    for (double t0 = now_ms(); now_ms() - t0 < 1000 && !probe_get(&g_sd_master).in_callback;) {
        sleep_ms(1);
    }
    double t0 = now_ms();
    rc = (uint32_t)kvs_shutdown(500);
    took = now_ms() - t0;
    struct probe at = probe_get(&g_sd_master);
    struct probe at_v = probe_get(&g_sd_viewer);
    EXPECT_TRUE(rc == KVS_OK && took < 1000,
                "kvs_shutdown(500): %s after %.0f ms (the running 300 ms callback ends in time; "
                "bound 1000 ms)",
                rc_name(rc), took);
    EXPECT_TRUE(!at.in_callback, "no callback running once kvs_shutdown returned KVS_OK");
    sleep_ms(1000);
    struct probe later = probe_get(&g_sd_master);
    struct probe later_v = probe_get(&g_sd_viewer);
    EXPECT_TRUE(later.callbacks == at.callbacks && later_v.callbacks == at_v.callbacks,
                "no callback started in the second after kvs_shutdown returned (master: %d then, "
                "%d now, %llu were queued; viewer: %d then, %d now)",
                at.callbacks, later.callbacks, queued, at_v.callbacks, later_v.callbacks);
    rc = probe_client_free(&g_sd_master, master, &took);
    expect_released(__LINE__, &g_sd_master, rc, took, 1000);
    rc = probe_client_free(&g_sd_viewer, viewer, &took);
    expect_released(__LINE__, &g_sd_viewer, rc, took, 1000);
    later = probe_get(&g_sd_master);
    EXPECT_TRUE(later.callbacks == at.callbacks, "still no callback after the frees (%d)",
                later.callbacks);
}

static void test_shutdown_timeout(void) {
    section("shutdown-timeout: kvs_shutdown(200) while a 2 s on_message runs");
    probe_init(&g_sd_master, "shutdown-timeout master");
    probe_init(&g_sd_viewer, "shutdown-timeout viewer");
    g_sd_master.slow_ms = 2000;
    char viewer_id[64];
    snprintf(viewer_id, sizeof viewer_id, "lc-%ld-sdt", (long)getpid());
    kvs_client_config cm = lc_config(KVS_ROLE_MASTER, NULL, &g_sd_master, probe_free);
    cm.on_message = slow_on_message;
    kvs_client_config cv = lc_config(KVS_ROLE_VIEWER, viewer_id, &g_sd_viewer, probe_free);
    kvs_client *master = lc_open(__LINE__, &cm, "shutdown-timeout master");
    kvs_client *viewer = master != NULL ? lc_open(__LINE__, &cv, "shutdown-timeout viewer") : NULL;
    double took;
    if (master == NULL || viewer == NULL) {
        return;
    }
    uint32_t rc = KVS_OK;
    for (int seq = 0; seq < 5 && rc == KVS_OK; seq++) {
        rc = send_candidate(viewer, seq, NULL);
    }
    EXPECT_TRUE(rc == KVS_OK, "the viewer sent 5 candidates (%s)", rc_name(rc));
    for (double t0 = now_ms(); now_ms() - t0 < 5000 && !probe_get(&g_sd_master).in_callback;) {
        sleep_ms(1);
    }
    sleep_ms(100);
    struct probe before = probe_get(&g_sd_master);
    EXPECT_TRUE(before.in_callback, "a 2 s callback is running (%d started)", before.callbacks);
    double t0 = now_ms();
    rc = (uint32_t)kvs_shutdown(200);
    took = now_ms() - t0;
    EXPECT_TRUE(rc == KVS_ERR_TIMEOUT && took < 1000,
                "kvs_shutdown(200): %s after %.0f ms (want KVS_ERR_TIMEOUT; bound 1000 ms)",
                rc_name(rc), took);
    /* The callback is still running: kvs_client_free waits for it, then runs
     * free_userdata, on this thread, last. */
    struct probe at = probe_get(&g_sd_master);
    rc = probe_client_free(&g_sd_master, master, &took);
    struct probe after = probe_get(&g_sd_master);
    expect_released(__LINE__, &g_sd_master, rc, took, 4000);
    EXPECT_TRUE(after.free_ms >= after.last_callback_end_ms && after.last_callback_end_ms > 0,
                "free_userdata ran %.0f ms after the running callback returned (it was running "
                "when kvs_client_free began: %s)",
                after.free_ms - after.last_callback_end_ms, at.in_callback ? "yes" : "no");
    rc = probe_client_free(&g_sd_viewer, viewer, &took);
    expect_released(__LINE__, &g_sd_viewer, rc, took, 1000);
    sleep_ms(500);
    after = probe_get(&g_sd_master);
    EXPECT_TRUE(after.callbacks == before.callbacks,
                "no other callback started (%d started in all; 5 were sent)", after.callbacks);
}

/* Runs this program again with `--case name` and judges its exit status. */
static char g_self[4096];

static void run_case_process(const char *name) {
    char *argv[] = {g_self,
                    (char *)"--case",
                    (char *)name,
                    (char *)"--endpoint",
                    (char *)g_endpoint,
                    (char *)"--channel-arn",
                    (char *)g_arn,
                    NULL};
    fflush(stdout);
    pid_t pid = 0;
    int err = posix_spawn(&pid, g_self, NULL, NULL, argv, environ);
    if (err != 0) {
        expect_true(__LINE__, 0, "posix_spawn", "%s --case %s: %s", g_self, name, strerror(err));
        return;
    }
    int status = 0;
    int waited = wait_child(pid, 60000, &status);
    char what[96];
    snprintf(what, sizeof what, "the %s process", name);
    if (waited == -1) {
        expect_true(__LINE__, 0, what, "did not end within 60 s (killed)");
    } else if (WIFSIGNALED(status)) {
        expect_true(__LINE__, 0, what, "killed by signal %d", WTERMSIG(status));
    } else {
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        expect_true(__LINE__, code == 0, what, "exit %d", code);
    }
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* free-during-calls                                                         */

struct blocked_connect {
    kvs_client *client;
    uint32_t rc;
};

static void *blocked_connect_run(void *arg) {
    struct blocked_connect *b = (struct blocked_connect *)arg;
    b->rc = (uint32_t)kvs_client_connect(b->client);
    return NULL;
}

/* A kvs_client * names a client, it is not its address: a call already
 * running when the client is freed keeps it until it returns, and the
 * pointer used after the free is refused. Under ASan and valgrind a read of
 * freed memory on either path is reported. */
static void test_free_during_calls(int rounds) {
    section("free-during-calls: kvs_client_free while kvs_client_connect blocks on another thread");
    char silent[64];
    int fd = silent_listener(silent, sizeof silent);
    if (fd < 0) {
        expect_true(__LINE__, 0, "silent_listener", "could not listen on 127.0.0.1");
        return;
    }
    int sane = 0;
    for (int round = 0; round < rounds; round++) {
        kvs_client_config c = lc_config(KVS_ROLE_MASTER, NULL, NULL, NULL);
        c.endpoint = silent; /* the WebSocket handshake never gets an answer */
        struct blocked_connect b;
        b.client = NULL;
        b.rc = KVS_OK;
        if (kvs_client_new(&c, &b.client) != KVS_OK) {
            expect_true(__LINE__, 0, "kvs_client_new", "%s", kvs_last_error_message());
            break;
        }
        pthread_t thread;
        if (pthread_create(&thread, NULL, blocked_connect_run, &b) != 0) {
            expect_true(__LINE__, 0, "pthread_create", "failed");
            (void)kvs_client_free(b.client);
            break;
        }
        sleep_ms(round % 4 == 0 ? 1 : 30);
        uint32_t freed = (uint32_t)kvs_client_free(b.client);
        pthread_join(thread, NULL);
        /* The connect was cut short by the free (cancelled), found the client
         * closed, or (a free before the attempt began) was refused. */
        int ok = freed == KVS_OK && (b.rc == KVS_ERR_CANCELLED || b.rc == KVS_ERR_CLOSED);
        /* The freed pointer, used again: refused, never dereferenced. */
        ok = ok && kvs_client_connect(b.client) == KVS_ERR_CLOSED &&
             kvs_client_state(b.client) == KVS_STATE_DISCONNECTED &&
             kvs_client_free(b.client) == KVS_ERR_CLOSED;
        if (!ok) {
            expect_true(__LINE__, 0, "round", "round %d: free %s, connect %s", round,
                        rc_name(freed), rc_name(b.rc));
            break;
        }
        sane++;
    }
    close(fd);
    EXPECT_TRUE(sane == rounds, "%d of %d rounds: the blocked connect returned "
                                "KVS_ERR_CANCELLED or KVS_ERR_CLOSED, the freed pointer was refused",
                sane, rounds);
    kvs_client *made_up = (kvs_client *)(uintptr_t)0x1000;
    EXPECT_RC(KVS_ERR_CLOSED, kvs_client_connect(made_up));
    EXPECT_RC(KVS_ERR_CLOSED, kvs_client_free(made_up));
}

static void usage(FILE *out) {
    fprintf(out, "usage: lifecycle --endpoint URL --channel-arn ARN [--rounds N] [--case NAME]\n"
                 "                 [--valgrind]\n"
                 "  (or set KVS_ENDPOINT and KVS_CHANNEL_ARN); the emulator should run with\n"
                 "  --no-quotas. NAME: free-flood, fork, free-backlog, backpressure,\n"
                 "  free-during-calls, shutdown, shutdown-timeout; default: all (the shutdown\n"
                 "  cases in child processes).\n"
                 "  --valgrind: the fork child's exit status is valgrind's; read its result\n"
                 "  from a pipe only.\n");
}

int main(int argc, char **argv) {
    g_endpoint = getenv("KVS_ENDPOINT");
    g_arn = getenv("KVS_CHANNEL_ARN");
    const char *only = NULL;
    int rounds = 300;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc) {
            g_endpoint = argv[++i];
        } else if (strcmp(argv[i], "--channel-arn") == 0 && i + 1 < argc) {
            g_arn = argv[++i];
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--valgrind") == 0) {
            g_under_valgrind = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "lifecycle: unexpected argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (g_endpoint == NULL || g_arn == NULL || rounds < 1) {
        usage(stderr);
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n > 0) {
        g_self[n] = '\0';
    } else {
        snprintf(g_self, sizeof g_self, "%s", argv[0]);
    }

    if (only != NULL) {
        /* One case; the shutdown cases end the library for this process. */
        if (strcmp(only, "free-flood") == 0) {
            test_free_flood(rounds);
        } else if (strcmp(only, "fork") == 0) {
            test_fork();
        } else if (strcmp(only, "free-backlog") == 0) {
            test_free_backlog();
        } else if (strcmp(only, "backpressure") == 0) {
            test_backpressure();
        } else if (strcmp(only, "free-during-calls") == 0) {
            test_free_during_calls(rounds < 20 ? rounds : 20);
        } else if (strcmp(only, "shutdown") == 0) {
            test_shutdown_backlog();
        } else if (strcmp(only, "shutdown-timeout") == 0) {
            test_shutdown_timeout();
        } else {
            fprintf(stderr, "lifecycle: unknown case %s\n", only);
            usage(stderr);
            return 2;
        }
        if (strncmp(only, "shutdown", 8) != 0) {
            EXPECT_RC(KVS_OK, kvs_shutdown(2000));
        }
        print_line("case %s: %d passed, %d failed", only, g_passed, g_failed);
        return g_failed == 0 ? 0 : 1;
    }

    print_line("lifecycle: %s; %s; %d rounds", kvs_version(), g_endpoint, rounds);
    test_free_flood(rounds);
    test_fork();
    test_free_backlog();
    test_backpressure();
    test_free_during_calls(rounds < 20 ? rounds : 20);
    section("shutdown cases, each in a process of its own");
    run_case_process("shutdown");
    run_case_process("shutdown-timeout");
    EXPECT_RC(KVS_OK, kvs_shutdown(2000));
    print_line("%d passed, %d failed", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
