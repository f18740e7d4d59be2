/*
 * master.c: a Kinesis Video Streams signaling master built on libkvs_signaling.
 *
 * It connects as the channel's master, answers every SDP offer with an SDP
 * answer addressed to the viewer that sent it, and echoes every ICE candidate
 * back to its sender (same candidate, sdpMid and sdpMLineIndex). Sends happen
 * inside the library callbacks, which the header allows (sends never block).
 *
 * Two ways to reach the channel:
 *
 *   master --endpoint ws://127.0.0.1:PORT --channel-arn ARN [--timeout-s N]
 *       straight to a data-plane endpoint (the emulator without auth);
 *
 *   master --channel-name NAME [--control-plane URL] [--ca-bundle PATH]
 *          [--region REGION] [--create-channel] [--credentials-callback] ...
 *       the way the real service requires: the control plane (Describe/Create
 *       SignalingChannel, GetSignalingChannelEndpoint, GetIceServerConfig) with
 *       SigV4 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 *       AWS_SESSION_TOKEN, then a presigned WSS connection. Without
 *       --control-plane it talks to the real AWS regional endpoint. It prints
 *       the endpoint it uses, the STUN URL, the TURN servers (never their
 *       password) when they arrive, and the client's metrics at the end.
 *
 * KVS_ENDPOINT and KVS_CHANNEL_ARN are used when the flags are absent. It
 * runs until SIGINT/SIGTERM or until --timeout-s seconds have passed; the
 * library reconnects by itself after a drop. What it receives goes
 * to stdout, one flushed line per event; status reports (failed sends) and
 * failures go to stderr. It prints "master: connected" once the first connect
 * succeeds. Exit status 1 if the connect fails (the message names the code,
 * e.g. KVS_ERR_ACCESS_DENIED), 2 on bad arguments.
 *
 * Compiles as C11 and as C++ (see the Makefile).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvs_signaling.h"

#define EXAMPLE_NAME "master"
#include "kvs_example_common.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Userdata: owned by the client from kvs_client_new until free_userdata.   */

struct master_state {
    pthread_mutex_t lock;
    kvs_client *client; /* set once kvs_client_new succeeded; read by callbacks */
    unsigned long offers;
    unsigned long answers_sent;
    unsigned long candidates;
    unsigned long candidates_echoed;
    unsigned long send_failures;
    unsigned long status_reports;
};

/* How often free_userdata ran; must end at exactly 1. */
static pthread_mutex_t g_free_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_free_calls = 0;
static pthread_t g_free_thread; /* the thread that ran it (kvs_client_free's caller) */

static void free_master_state(void *userdata) {
    struct master_state *st = (struct master_state *)userdata;
    pthread_mutex_lock(&g_free_lock);
    g_free_calls++;
    g_free_thread = pthread_self();
    pthread_mutex_unlock(&g_free_lock);
    if (st != NULL) {
        say(stdout, "totals: %lu offers, %lu answers sent, %lu candidates, %lu echoed, "
                    "%lu send failures, %lu status reports",
            st->offers, st->answers_sent, st->candidates, st->candidates_echoed, st->send_failures,
            st->status_reports);
        pthread_mutex_destroy(&st->lock);
        free(st);
    }
}

static kvs_client *client_of(struct master_state *st) {
    pthread_mutex_lock(&st->lock);
    kvs_client *client = st->client;
    pthread_mutex_unlock(&st->lock);
    return client;
}

/* ------------------------------------------------------------------------ */
/* A plausible SDP answer for an offer: one answering m= section per offered */
/* one, with its mid, the first offered payload type and inactive media.    */

struct text_buf {
    char *data;
    size_t len;
    size_t cap;
    int overflow;
};

static void buf_append(struct text_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void buf_append(struct text_buf *b, const char *fmt, ...) {
    if (b->overflow) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->overflow = 1;
        return;
    }
    b->len += (size_t)n;
}

/* Copies the line starting at `line` (without its CR/LF) into out. */
static void copy_line(const char *line, const char *end, char *out, size_t cap) {
    size_t n = (size_t)(end - line);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(out, line, n);
    out[n] = '\0';
}

/* Writes into out an answer for `offer`; returns its length, 0 on overflow. */
static size_t build_answer(const char *offer, char *out, size_t cap, unsigned long session) {
    struct text_buf b;
    b.data = out;
    b.len = 0;
    b.cap = cap;
    b.overflow = 0;
    buf_append(&b,
               "v=0\r\n"
               "o=- %lu 2 IN IP4 127.0.0.1\r\n"
               "s=-\r\n"
               "t=0 0\r\n"
               "a=msid-semantic: WMS\r\n",
               session);

    /* Collect the mids for the BUNDLE group first. */
    char bundle[512] = "a=group:BUNDLE";
    size_t bundle_len = strlen(bundle);
    int mids = 0;
    for (const char *p = offer; p != NULL && *p != '\0';) {
        const char *end = p + strcspn(p, "\r\n");
        if (strncmp(p, "a=mid:", 6) == 0) {
            char mid[64];
            copy_line(p + 6, end, mid, sizeof mid);
            int n = snprintf(bundle + bundle_len, sizeof bundle - bundle_len, " %s", mid);
            if (n > 0 && (size_t)n < sizeof bundle - bundle_len) {
                bundle_len += (size_t)n;
                mids++;
            }
        }
        p = end + strspn(end, "\r\n");
    }
    if (mids > 0) {
        buf_append(&b, "%s\r\n", bundle);
    }

    /* One answering section per offered m= line. */
    for (const char *p = offer; p != NULL && *p != '\0';) {
        const char *end = p + strcspn(p, "\r\n");
        if (strncmp(p, "m=", 2) == 0) {
            /* m=<media> <port> <proto> <fmt> ... : keep media, proto, first fmt. */
            char mline[256];
            copy_line(p + 2, end, mline, sizeof mline);
            char media[32] = "", proto[64] = "", fmt[32] = "";
            int port = 0;
            if (sscanf(mline, "%31s %d %63s %31s", media, &port, proto, fmt) < 3) {
                p = end + strspn(end, "\r\n");
                continue;
            }
            (void)port;
            if (fmt[0] == '\0') {
                strcpy(fmt, "0");
            }
            buf_append(&b,
                       "m=%s 9 %s %s\r\n"
                       "c=IN IP4 0.0.0.0\r\n"
                       "a=ice-ufrag:mstr\r\n"
                       "a=ice-pwd:masterpasswordmasterpass\r\n"
                       "a=fingerprint:sha-256 "
                       "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
                       "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n"
                       "a=setup:active\r\n",
                       media, proto, fmt);
            /* Copy this section's mid and the rtpmap of the chosen format. */
            const char *q = end + strspn(end, "\r\n");
            while (*q != '\0' && strncmp(q, "m=", 2) != 0) {
                const char *qend = q + strcspn(q, "\r\n");
                char line[256];
                copy_line(q, qend, line, sizeof line);
                char prefix[64];
                snprintf(prefix, sizeof prefix, "a=rtpmap:%s ", fmt);
                if (strncmp(line, "a=mid:", 6) == 0 ||
                    strncmp(line, prefix, strlen(prefix)) == 0) {
                    buf_append(&b, "%s\r\n", line);
                }
                q = qend + strspn(qend, "\r\n");
            }
            buf_append(&b, "a=inactive\r\n");
        }
        p = end + strspn(end, "\r\n");
    }
    return b.overflow ? 0 : b.len;
}

/* ------------------------------------------------------------------------ */
/* Callbacks: run on the library's dispatcher thread, one at a time.        */

static void on_offer(struct master_state *st, const kvs_message *m) {
    pthread_mutex_lock(&st->lock);
    unsigned long n = ++st->offers;
    pthread_mutex_unlock(&st->lock);
    say(stdout, "offer #%lu from %s (%zu bytes of SDP)", n, m->sender_client_id,
        m->sdp_len);
    if (m->sdp == NULL || m->sdp_type == NULL || strcmp(m->sdp_type, "offer") != 0) {
        say(stdout, "offer #%lu has no parsable SDP offer; not answering", n);
        return;
    }
    static char answer[8192]; /* only the dispatcher thread runs this */
    size_t len = build_answer(m->sdp, answer, sizeof answer, 1000000UL + n);
    if (len == 0) {
        say(stdout, "offer #%lu is too large to answer", n);
        return;
    }
    char correlation[KVS_CORRELATION_ID_CAPACITY];
    size_t correlation_len = 0;
    kvs_result rc = kvs_send_sdp_answer(client_of(st), m->sender_client_id, answer, NULL,
                                        correlation, sizeof correlation, &correlation_len);
    pthread_mutex_lock(&st->lock);
    if (rc == KVS_OK) {
        st->answers_sent++;
    } else {
        st->send_failures++;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc != KVS_OK) {
        report_failure("kvs_send_sdp_answer", rc);
        return;
    }
    say(stdout, "answer to %s sent (%zu bytes, correlation id %s)", m->sender_client_id,
        len, correlation);
}

static void on_candidate(struct master_state *st, const kvs_message *m) {
    pthread_mutex_lock(&st->lock);
    unsigned long n = ++st->candidates;
    pthread_mutex_unlock(&st->lock);
    if (m->candidate == NULL) {
        say(stdout, "candidate #%lu from %s has no parsable candidate: %s", n,
            m->sender_client_id, m->payload);
        return;
    }
    say(stdout, "candidate #%lu from %s: %s (sdpMid %s, sdpMLineIndex %d)", n,
        m->sender_client_id, m->candidate, m->sdp_mid != NULL ? m->sdp_mid : "(none)",
        (int)m->sdp_mline_index);

    kvs_ice_candidate echo;
    echo.candidate = m->candidate;
    echo.sdp_mid = m->sdp_mid;
    echo.sdp_mline_index = m->sdp_mline_index;
    echo.username_fragment = m->username_fragment;
    kvs_result rc =
        kvs_send_ice_candidate(client_of(st), m->sender_client_id, &echo, NULL, NULL, 0, NULL);
    pthread_mutex_lock(&st->lock);
    if (rc == KVS_OK) {
        st->candidates_echoed++;
    } else {
        st->send_failures++;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc != KVS_OK) {
        report_failure("kvs_send_ice_candidate", rc);
        return;
    }
    say(stdout, "candidate #%lu echoed to %s", n, m->sender_client_id);
}

static void on_message(void *userdata, const kvs_message *m) {
    struct master_state *st = (struct master_state *)userdata;
    switch (m->message_type) {
    case KVS_MESSAGE_TYPE_SDP_OFFER:
        if (m->sender_client_id == NULL) {
            say(stdout, "offer without a sender client id; ignored");
            return;
        }
        on_offer(st, m);
        break;
    case KVS_MESSAGE_TYPE_ICE_CANDIDATE:
        if (m->sender_client_id == NULL) {
            say(stdout, "candidate without a sender client id; ignored");
            return;
        }
        on_candidate(st, m);
        break;
    case KVS_MESSAGE_TYPE_SDP_ANSWER:
        say(stdout, "unexpected SDP answer from %s; ignored",
            m->sender_client_id != NULL ? m->sender_client_id : "(unknown)");
        break;
    case KVS_MESSAGE_TYPE_GO_AWAY:
        say(stdout, "GO_AWAY from the service (it will close the connection soon)");
        break;
    case KVS_MESSAGE_TYPE_RECONNECT_ICE_SERVER:
        say(stdout, "RECONNECT_ICE_SERVER from the service");
        break;
    default:
        say(stdout, "message of unknown type %u (%zu bytes)", (unsigned)m->message_type,
            m->payload_len);
        break;
    }
}

static void on_status(void *userdata, const kvs_status *s) {
    struct master_state *st = (struct master_state *)userdata;
    pthread_mutex_lock(&st->lock);
    st->status_reports++;
    pthread_mutex_unlock(&st->lock);
    say(stderr, "status (%s): correlation id %s: %s, code %u: %s",
        s->origin == KVS_STATUS_ORIGIN_SERVICE ? "service" : "local",
        s->correlation_id != NULL ? s->correlation_id : "(none)",
        s->error_type != NULL ? s->error_type : "(no type)", (unsigned)s->status_code,
        s->description != NULL ? s->description : "(no description)");
}

static void on_state(void *userdata, uint32_t state, const char *reason) {
    (void)userdata;
    say(stdout, "state %s (%s)", state_name(state), reason != NULL ? reason : "");
}

/* A new TURN server list was fetched (control-plane mode): read and print it. */
static void on_ice_servers(void *userdata, size_t count) {
    struct master_state *st = (struct master_state *)userdata;
    kvs_client *client = client_of(st);
    if (client == NULL) {
        say(stdout, "on_ice_servers (%zu servers) before the client was known", count);
        return;
    }
    (void)print_ice_servers(client, count);
}

/* ------------------------------------------------------------------------ */
/* Signals and arguments.                                                   */

static volatile sig_atomic_t g_stop = 0;

static void handle_signal(int signo) {
    (void)signo;
    g_stop = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: master --endpoint URL --channel-arn ARN [--timeout-s N]\n"
            "       master --channel-name NAME [--control-plane URL] [--ca-bundle PATH]\n"
            "              [--region REGION] [--create-channel] [--credentials-callback]\n"
            "              [--timeout-s N]\n"
            "data-plane mode (no credentials):\n"
            "  --endpoint URL      ws://host:port (or env KVS_ENDPOINT)\n"
            "  --channel-arn ARN   channel ARN (or env KVS_CHANNEL_ARN)\n"
            AWS_OPTIONS_USAGE
            "  --timeout-s N       stop after N seconds (default: until SIGINT/SIGTERM)\n");
}

static int parse_seconds(const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    const char *endpoint = getenv("KVS_ENDPOINT");
    const char *channel_arn = getenv("KVS_CHANNEL_ARN");
    double timeout_s = 0; /* 0: no timeout */
    struct aws_options aws;
    aws_options_init(&aws);
    char arn_region[64];

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (aws_parse_flag(&aws, arg)) {
            continue;
        }
        if (value == NULL) {
            fprintf(stderr, "master: %s needs a value\n", arg);
            usage(stderr);
            return 2;
        }
        int used = aws_parse_option(&aws, arg, value);
        if (used < 0) {
            return 2;
        }
        if (used > 0) {
            /* consumed */
        } else if (strcmp(arg, "--endpoint") == 0) {
            endpoint = value;
        } else if (strcmp(arg, "--channel-arn") == 0) {
            channel_arn = value;
        } else if (strcmp(arg, "--timeout-s") == 0) {
            if (parse_seconds(value, &timeout_s) != 0) {
                fprintf(stderr, "master: --timeout-s expects a number of seconds, got %s\n",
                        value);
                return 2;
            }
        } else {
            fprintf(stderr, "master: unknown argument %s\n", arg);
            usage(stderr);
            return 2;
        }
        i++;
    }
    const bool control_plane = aws_mode(&aws);
    if (control_plane) {
        if (aws.channel_name == NULL && channel_arn == NULL) {
            fprintf(stderr, "master: --control-plane needs --channel-name (or --channel-arn)\n");
            usage(stderr);
            return 2;
        }
    } else if (endpoint == NULL || channel_arn == NULL) {
        fprintf(stderr, "master: --endpoint and --channel-arn (or --channel-name) are required\n");
        usage(stderr);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handle_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    say(stdout, "%s", kvs_version());
    if (control_plane) {
        aws_resolve_region(&aws, aws.channel_name != NULL ? NULL : channel_arn, arn_region,
                           sizeof arn_region);
        if (aws_describe(&aws, channel_arn) != 0) {
            return 2;
        }
        print_stun_url(&aws);
    } else {
        say(stdout, "mode: data plane only, %s (no control plane, no credentials)", endpoint);
    }

    struct master_state *st = (struct master_state *)calloc(1, sizeof *st);
    if (st == NULL) {
        fprintf(stderr, "master: out of memory\n");
        return 1;
    }
    pthread_mutex_init(&st->lock, NULL);

    kvs_client_config config = kvs_client_config_default();
    config.role = KVS_ROLE_MASTER;
    config.channel_arn = channel_arn;
    config.endpoint = endpoint;
    if (control_plane) {
        aws_apply(&aws, &config, channel_arn, credentials_from_environment);
    }
    config.on_message = on_message;
    config.on_status = on_status;
    config.on_state = on_state;
    config.on_ice_servers = on_ice_servers;
    config.userdata = st;
    config.free_userdata = free_master_state;

    int exit_code = 0;
    kvs_client *client = NULL;
    kvs_client_metrics metrics;
    int have_metrics = 0;
    struct timespec t0, t1;
    /* From here on `st` belongs to the library, even if this fails. */
    kvs_result rc = kvs_client_new(&config, &client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_new", rc);
        exit_code = 1;
        goto out;
    }
    pthread_mutex_lock(&st->lock);
    st->client = client;
    pthread_mutex_unlock(&st->lock);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = kvs_client_connect(client);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != KVS_OK) {
        report_failure("kvs_client_connect", rc);
        exit_code = 1;
        goto out;
    }
    {
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (control_plane) {
            say(stdout, "connected as master of %s through the control plane in %.3f ms",
                aws.channel_name != NULL ? aws.channel_name : channel_arn, ms);
        } else {
            say(stdout, "connected to %s as master of %s in %.3f ms", endpoint, channel_arn, ms);
        }
    }
    say(stdout, "connected");

    {
        const double start = now_s();
        double next_reconnect = 0;
        while (!g_stop) {
            double now = now_s();
            if (timeout_s > 0 && now - start >= timeout_s) {
                say(stdout, "--timeout-s %.3g elapsed", timeout_s);
                break;
            }
            /* The library reconnects by itself (state RECONNECTING); only a
             * client that ended up DISCONNECTED is connected again here. */
            if (kvs_client_state(client) == KVS_STATE_DISCONNECTED && now >= next_reconnect) {
                say(stdout, "connection lost; reconnecting");
                rc = kvs_client_connect(client);
                if (rc == KVS_OK) {
                    say(stdout, "reconnected");
                } else if (rc != KVS_ERR_ALREADY_CONNECTED) {
                    report_failure("kvs_client_connect (reconnect)", rc);
                    next_reconnect = now_s() + 1.0;
                }
            }
            struct timespec nap;
            nap.tv_sec = 0;
            nap.tv_nsec = 50 * 1000 * 1000;
            nanosleep(&nap, NULL); /* EINTR on a signal is fine: the loop re-checks */
        }
    }
    if (g_stop) {
        say(stdout, "signal received; stopping");
    }

out:
    if (client != NULL) {
        /* The counters, read before the client goes away. */
        have_metrics = get_metrics(client, &metrics) == 0;
        rc = kvs_client_free(client);
        if (rc != KVS_OK) {
            report_failure("kvs_client_free", rc);
            exit_code = 1;
        }
        client = NULL;
        /* kvs_client_free runs free_userdata on this thread before returning. */
        if (rc == KVS_OK && check_freed_on_return(&g_free_lock, &g_free_calls, &g_free_thread) < 0) {
            exit_code = 1;
        }
    }
    rc = kvs_shutdown(2000);
    if (rc != KVS_OK) {
        report_failure("kvs_shutdown", rc);
        exit_code = 1;
    }
    pthread_mutex_lock(&g_free_lock);
    int free_calls = g_free_calls;
    pthread_mutex_unlock(&g_free_lock);
    if (free_calls != 1) {
        say(stderr, "free_userdata ran %d times; expected exactly once", free_calls);
        exit_code = 1;
    }
    if (have_metrics) {
        print_metrics(&metrics);
    }
    say(stdout, "stopped (exit %d)", exit_code);
    return exit_code;
}
