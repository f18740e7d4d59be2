/*
 * viewer.c: a Kinesis Video Streams signaling viewer built on libkvs_signaling,
 * and a small round-trip benchmark.
 *
 *   viewer --endpoint URL --channel-arn ARN --client-id ID
 *          [--candidates N] [--rounds R] [--timeout-s S]
 *   viewer --channel-name NAME [--control-plane URL] [--ca-bundle PATH]
 *          [--region REGION] [--create-channel] [--credentials-callback]
 *          --client-id ID [--candidates N] [--rounds R] [--timeout-s S]
 *
 * The first form goes straight to a data-plane endpoint (the emulator without
 * auth). The second bootstraps the way the real service requires: the
 * control plane (Describe/CreateSignalingChannel, GetSignalingChannelEndpoint,
 * GetIceServerConfig) with SigV4 credentials from AWS_ACCESS_KEY_ID /
 * AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (or handed over by a credentials
 * callback with --credentials-callback), then a presigned WSS connection.
 * Without --control-plane that is the real AWS regional endpoint; the program
 * prints which endpoint it uses. In that mode it also prints the STUN URL and
 * waits for the TURN servers (printed without their password) before it sends
 * its offer, as a WebRTC viewer would.
 *
 * It connects as a viewer, sends an SDP offer and waits for the master's SDP
 * answer (R times with --rounds, printing p50/p99 of the round trip), then
 * sends N ICE candidates and waits until the master has echoed every one back
 * (see master.c), checking that each echo matches a candidate it sent.
 * It prints the connect time, the offer->answer round trip, the time the N
 * candidates took to come back and the client's metrics (connect phases,
 * messages, clock skew). Exit status 0 only if everything arrived; 1 on a
 * failure (the message names the code, e.g. KVS_ERR_ACCESS_DENIED), 2 on bad
 * arguments.
 *
 * KVS_ENDPOINT, KVS_CHANNEL_ARN and KVS_CLIENT_ID are used when the flags are
 * absent. Waits use a mutex and a condition variable
 * signalled from the library's callbacks (which run on the library's
 * dispatcher thread).
 *
 * Compiles as C11 and as C++ (see the Makefile).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvs_signaling.h"

#define EXAMPLE_NAME "viewer"
#include "kvs_example_common.h"

/* ------------------------------------------------------------------------ */
/* Time.                                                                    */

static struct timespec mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static double ms_between(struct timespec a, struct timespec b) {
    return (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
}

/* ------------------------------------------------------------------------ */
/* Userdata: owned by the client from kvs_client_new until free_userdata.   */

struct sent_candidate {
    char line[128];
    char sdp_mid[8];
    int32_t sdp_mline_index;
    int echoed;
};

struct viewer_state {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* signalled on every event main may wait for */

    /* Answers. */
    unsigned long answers;
    struct timespec last_answer_at;
    size_t last_answer_len;
    char last_answer[4096]; /* the first answer's SDP, for printing */
    unsigned long bad_answers;

    /* Candidates (the array is filled before the client exists). */
    struct sent_candidate *candidates;
    size_t candidate_count;
    size_t echoed;
    unsigned long echo_mismatches;
    unsigned long echo_duplicates;
    struct timespec last_echo_at;

    /* TURN servers (control-plane mode). */
    kvs_client *client; /* set once kvs_client_new succeeded */
    unsigned long ice_server_lists;
    long ice_servers;

    /* Trouble. */
    unsigned long status_reports;
    char last_status[512];
    int lost_connection; /* DISCONNECTED after having been CONNECTED */
    int connected;
    unsigned long other_messages;
};

static pthread_mutex_t g_free_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_free_calls = 0;
static pthread_t g_free_thread; /* the thread that ran it (kvs_client_free's caller) */

static void free_viewer_state(void *userdata) {
    struct viewer_state *st = (struct viewer_state *)userdata;
    pthread_mutex_lock(&g_free_lock);
    g_free_calls++;
    g_free_thread = pthread_self();
    pthread_mutex_unlock(&g_free_lock);
    if (st != NULL) {
        free(st->candidates);
        pthread_cond_destroy(&st->changed);
        pthread_mutex_destroy(&st->lock);
        free(st);
    }
}

/* ------------------------------------------------------------------------ */
/* Callbacks (dispatcher thread).                                           */

static void on_answer(struct viewer_state *st, const kvs_message *m) {
    struct timespec at = mono_now();
    int ok = m->sdp != NULL && m->sdp_type != NULL && strcmp(m->sdp_type, "answer") == 0 &&
             m->sdp_len > 0 && strncmp(m->sdp, "v=0", 3) == 0;
    pthread_mutex_lock(&st->lock);
    if (ok) {
        st->answers++;
        st->last_answer_at = at;
        st->last_answer_len = m->sdp_len;
        if (st->answers == 1) {
            snprintf(st->last_answer, sizeof st->last_answer, "%s", m->sdp);
        }
    } else {
        st->bad_answers++;
    }
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
    if (!ok) {
        say(stdout, "SDP answer without a usable SDP: %s", m->payload);
    }
}

static int same_opt_str(const char *a, const char *b) {
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static void on_echo(struct viewer_state *st, const kvs_message *m) {
    struct timespec at = mono_now();
    const char *problem = NULL;
    pthread_mutex_lock(&st->lock);
    size_t i = 0;
    if (m->candidate != NULL) {
        for (i = 0; i < st->candidate_count; i++) {
            if (strcmp(st->candidates[i].line, m->candidate) == 0) {
                break;
            }
        }
    }
    if (m->candidate == NULL) {
        problem = "no parsable candidate";
        st->echo_mismatches++;
    } else if (i == st->candidate_count) {
        problem = "not a candidate this viewer sent";
        st->echo_mismatches++;
    } else if (st->candidates[i].echoed) {
        problem = "duplicate echo";
        st->echo_duplicates++;
    } else if (!same_opt_str(st->candidates[i].sdp_mid, m->sdp_mid) ||
               st->candidates[i].sdp_mline_index != m->sdp_mline_index) {
        problem = "sdpMid or sdpMLineIndex differs from what was sent";
        st->echo_mismatches++;
    } else {
        st->candidates[i].echoed = 1;
        st->echoed++;
        st->last_echo_at = at;
    }
    size_t echoed = st->echoed;
    size_t total = st->candidate_count;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
    if (problem != NULL) {
        say(stdout, "bad echo (%s): %s", problem, m->payload);
    } else {
        say(stdout, "echo %zu/%zu: %s (sdpMid %s, sdpMLineIndex %d)", echoed, total,
            m->candidate, m->sdp_mid != NULL ? m->sdp_mid : "(none)", (int)m->sdp_mline_index);
    }
}

static void on_message(void *userdata, const kvs_message *m) {
    struct viewer_state *st = (struct viewer_state *)userdata;
    switch (m->message_type) {
    case KVS_MESSAGE_TYPE_SDP_ANSWER:
        on_answer(st, m);
        break;
    case KVS_MESSAGE_TYPE_ICE_CANDIDATE:
        on_echo(st, m);
        break;
    case KVS_MESSAGE_TYPE_GO_AWAY:
        say(stdout, "GO_AWAY from the service");
        break;
    case KVS_MESSAGE_TYPE_RECONNECT_ICE_SERVER:
        say(stdout, "RECONNECT_ICE_SERVER from the service");
        break;
    default:
        pthread_mutex_lock(&st->lock);
        st->other_messages++;
        pthread_mutex_unlock(&st->lock);
        say(stdout, "unexpected message of type %u: %s", (unsigned)m->message_type,
            m->payload != NULL ? m->payload : "");
        break;
    }
}

static void on_status(void *userdata, const kvs_status *s) {
    struct viewer_state *st = (struct viewer_state *)userdata;
    char text[sizeof st->last_status];
    snprintf(text, sizeof text, "%s report for %s: %s (%u): %s",
             s->origin == KVS_STATUS_ORIGIN_SERVICE ? "service" : "local",
             s->correlation_id != NULL ? s->correlation_id : "(none)",
             s->error_type != NULL ? s->error_type : "(no type)", (unsigned)s->status_code,
             s->description != NULL ? s->description : "(no description)");
    pthread_mutex_lock(&st->lock);
    st->status_reports++;
    memcpy(st->last_status, text, sizeof text);
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
    say(stderr, "status: %s", text);
}

static void on_state(void *userdata, uint32_t state, const char *reason) {
    struct viewer_state *st = (struct viewer_state *)userdata;
    pthread_mutex_lock(&st->lock);
    if (state == KVS_STATE_CONNECTED) {
        st->connected = 1;
    } else if (state == KVS_STATE_DISCONNECTED && st->connected) {
        st->lost_connection = 1;
        st->connected = 0;
    }
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
    say(stdout, "state %s (%s)", state_name(state), reason != NULL ? reason : "");
}

/* A new TURN server list was fetched: read it (kvs_client_get_ice_servers
 * works from a callback) and print it. */
static void on_ice_servers(void *userdata, size_t count) {
    struct viewer_state *st = (struct viewer_state *)userdata;
    pthread_mutex_lock(&st->lock);
    kvs_client *client = st->client;
    pthread_mutex_unlock(&st->lock);
    long printed = client != NULL ? print_ice_servers(client, count) : -1;
    pthread_mutex_lock(&st->lock);
    st->ice_server_lists++;
    st->ice_servers = printed;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
}

/* ------------------------------------------------------------------------ */
/* Waiting.                                                                 */

enum wait_what { WAIT_ANSWER, WAIT_ECHOES, WAIT_ICE_SERVERS };

/* Waits (st->lock held by the caller) until the wanted event happened, the
 * connection broke, the service reported a failed send, or `deadline` passed.
 * Returns NULL on success or a text saying what went wrong. */
static const char *wait_locked(struct viewer_state *st, enum wait_what what,
                               unsigned long answers_before, unsigned long reports_before,
                               const struct timespec *deadline) {
    for (;;) {
        if (what == WAIT_ANSWER && st->answers > answers_before) {
            return NULL;
        }
        if (what == WAIT_ECHOES && st->echoed == st->candidate_count) {
            return NULL;
        }
        if (what == WAIT_ICE_SERVERS && st->ice_server_lists > 0) {
            return NULL;
        }
        if (st->lost_connection) {
            return "the connection was lost";
        }
        if (st->status_reports > reports_before) {
            return "the service or the library reported a failed send";
        }
        int rc = pthread_cond_timedwait(&st->changed, &st->lock, deadline);
        if (rc == ETIMEDOUT) {
            if (what == WAIT_ANSWER && st->answers > answers_before) {
                return NULL;
            }
            if (what == WAIT_ECHOES && st->echoed == st->candidate_count) {
                return NULL;
            }
            if (what == WAIT_ICE_SERVERS && st->ice_server_lists > 0) {
                return NULL;
            }
            return "timed out";
        }
    }
}

static struct timespec deadline_after(double seconds) {
    struct timespec d = mono_now();
    long long ns = (long long)(seconds * 1e9);
    d.tv_sec += (time_t)(ns / 1000000000LL);
    d.tv_nsec += (long)(ns % 1000000000LL);
    if (d.tv_nsec >= 1000000000L) {
        d.tv_sec += 1;
        d.tv_nsec -= 1000000000L;
    }
    return d;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values. */
static double percentile(const double *sorted, size_t n, double p) {
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return sorted[rank - 1];
}

/* ------------------------------------------------------------------------ */
/* Arguments.                                                               */

static void usage(FILE *out) {
    fprintf(out,
            "usage: viewer --endpoint URL --channel-arn ARN --client-id ID\n"
            "              [--candidates N] [--rounds R] [--timeout-s S]\n"
            "       viewer --channel-name NAME [--control-plane URL] [--ca-bundle PATH]\n"
            "              [--region REGION] [--create-channel] [--credentials-callback]\n"
            "              --client-id ID [--candidates N] [--rounds R] [--timeout-s S]\n"
            "data-plane mode (no credentials):\n"
            "  --endpoint URL      ws://host:port (or env KVS_ENDPOINT)\n"
            "  --channel-arn ARN   channel ARN (or env KVS_CHANNEL_ARN)\n"
            AWS_OPTIONS_USAGE
            "common:\n"
            "  --client-id ID      this viewer's client id (or env KVS_CLIENT_ID;\n"
            "                      default c-viewer-PID)\n"
            "  --candidates N      ICE candidates to send and expect back (default 5)\n"
            "  --rounds R          offer->answer round trips to measure (default 1)\n"
            "  --timeout-s S       longest wait for each answer and for the echoes\n"
            "                      (default 10; also for the TURN servers)\n");
}

static int parse_count(const char *text, long min, long max, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static const char *make_offer(char *out, size_t cap, unsigned long version) {
    snprintf(out, cap,
             "v=0\r\n"
             "o=- 4215775240449105457 %lu IN IP4 127.0.0.1\r\n"
             "s=-\r\n"
             "t=0 0\r\n"
             "a=group:BUNDLE 0 1\r\n"
             "a=msid-semantic: WMS\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
             "c=IN IP4 0.0.0.0\r\n"
             "a=ice-ufrag:vwr1\r\n"
             "a=ice-pwd:viewerpasswordviewerpass\r\n"
             "a=ice-options:trickle\r\n"
             "a=fingerprint:sha-256 "
             "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00:"
             "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00\r\n"
             "a=setup:actpass\r\n"
             "a=mid:0\r\n"
             "a=recvonly\r\n"
             "a=rtcp-mux\r\n"
             "a=rtpmap:111 opus/48000/2\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
             "c=IN IP4 0.0.0.0\r\n"
             "a=ice-ufrag:vwr1\r\n"
             "a=ice-pwd:viewerpasswordviewerpass\r\n"
             "a=ice-options:trickle\r\n"
             "a=fingerprint:sha-256 "
             "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00:"
             "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00\r\n"
             "a=setup:actpass\r\n"
             "a=mid:1\r\n"
             "a=recvonly\r\n"
             "a=rtcp-mux\r\n"
             "a=rtpmap:96 H264/90000\r\n",
             version);
    return out;
}

int main(int argc, char **argv) {
    const char *endpoint = getenv("KVS_ENDPOINT");
    const char *channel_arn = getenv("KVS_CHANNEL_ARN");
    const char *client_id = getenv("KVS_CLIENT_ID");
    long candidates = 5;
    long rounds = 1;
    double timeout_s = 10;
    char default_id[64];
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
            fprintf(stderr, "viewer: %s needs a value\n", arg);
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
        } else if (strcmp(arg, "--client-id") == 0) {
            client_id = value;
        } else if (strcmp(arg, "--candidates") == 0) {
            if (parse_count(value, 0, 10000, &candidates) != 0) {
                fprintf(stderr, "viewer: --candidates expects 0..10000, got %s\n", value);
                return 2;
            }
        } else if (strcmp(arg, "--rounds") == 0) {
            if (parse_count(value, 1, 1000000, &rounds) != 0) {
                fprintf(stderr, "viewer: --rounds expects 1..1000000, got %s\n", value);
                return 2;
            }
        } else if (strcmp(arg, "--timeout-s") == 0) {
            char *end = NULL;
            timeout_s = strtod(value, &end);
            if (end == value || *end != '\0' || !(timeout_s > 0)) {
                fprintf(stderr, "viewer: --timeout-s expects a positive number, got %s\n", value);
                return 2;
            }
        } else {
            fprintf(stderr, "viewer: unknown argument %s\n", arg);
            usage(stderr);
            return 2;
        }
        i++;
    }
    const bool control_plane = aws_mode(&aws);
    if (control_plane) {
        if (aws.channel_name == NULL && channel_arn == NULL) {
            fprintf(stderr, "viewer: --control-plane needs --channel-name (or --channel-arn)\n");
            usage(stderr);
            return 2;
        }
    } else if (endpoint == NULL || channel_arn == NULL) {
        fprintf(stderr, "viewer: --endpoint and --channel-arn (or --channel-name) are required\n");
        usage(stderr);
        return 2;
    }
    if (client_id == NULL) {
        snprintf(default_id, sizeof default_id, "c-viewer-%ld", (long)getpid());
        client_id = default_id;
    }

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

    /* Everything the callbacks touch is allocated before the client exists. */
    struct viewer_state *st = (struct viewer_state *)calloc(1, sizeof *st);
    double *rtts = (double *)calloc((size_t)rounds, sizeof *rtts);
    if (st == NULL || rtts == NULL) {
        fprintf(stderr, "viewer: out of memory\n");
        free(st);
        free(rtts);
        return 1;
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_t cond_attr;
    pthread_condattr_init(&cond_attr);
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&st->changed, &cond_attr);
    pthread_condattr_destroy(&cond_attr);
    st->candidate_count = (size_t)candidates;
    if (candidates > 0) {
        st->candidates =
            (struct sent_candidate *)calloc((size_t)candidates, sizeof *st->candidates);
        if (st->candidates == NULL) {
            fprintf(stderr, "viewer: out of memory\n");
            free_viewer_state(st);
            free(rtts);
            return 1;
        }
    }
    for (size_t i = 0; i < st->candidate_count; i++) {
        struct sent_candidate *c = &st->candidates[i];
        snprintf(c->line, sizeof c->line,
                 "candidate:%zu 1 udp %u 192.0.2.%zu %zu typ host generation 0", i + 1,
                 2122260223u - (unsigned)i, 1 + i % 250, 50000 + i);
        snprintf(c->sdp_mid, sizeof c->sdp_mid, "%zu", i % 2);
        c->sdp_mline_index = (int32_t)(i % 2);
    }

    kvs_client_config config = kvs_client_config_default();
    config.role = KVS_ROLE_VIEWER;
    config.channel_arn = channel_arn;
    config.client_id = client_id;
    config.endpoint = endpoint;
    if (control_plane) {
        aws_apply(&aws, &config, channel_arn, credentials_from_environment);
    }
    config.on_message = on_message;
    config.on_status = on_status;
    config.on_state = on_state;
    config.on_ice_servers = on_ice_servers;
    config.userdata = st;
    config.free_userdata = free_viewer_state;

    const char *failure = NULL;
    char failure_buf[1024];
    double connect_ms = 0, echo_ms = 0;
    long rounds_done = 0;
    size_t echoed = 0;
    kvs_client *client = NULL;
    struct timespec t0;
    kvs_client_metrics metrics;
    int have_metrics = 0;
    double ice_ms = -1;

    /* From here on `st` belongs to the library, even if this fails. */
    kvs_result rc = kvs_client_new(&config, &client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_new", rc);
        snprintf(failure_buf, sizeof failure_buf, "could not create the client: %s (%s)",
                 result_name(rc), kvs_result_str(rc));
        failure = failure_buf;
        goto out;
    }
    pthread_mutex_lock(&st->lock);
    st->client = client;
    pthread_mutex_unlock(&st->lock);
    t0 = mono_now();
    rc = kvs_client_connect(client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_connect", rc);
        snprintf(failure_buf, sizeof failure_buf, "could not connect: %s (%s)", result_name(rc),
                 kvs_result_str(rc));
        failure = failure_buf;
        goto out;
    }
    connect_ms = ms_between(t0, mono_now());
    if (control_plane) {
        say(stdout, "connected as %s to %s through the control plane in %.3f ms", client_id,
            aws.channel_name != NULL ? aws.channel_name : channel_arn, connect_ms);
    } else {
        say(stdout, "connected to %s as %s in %.3f ms", endpoint, client_id, connect_ms);
    }

    /* A WebRTC viewer needs its TURN servers before it makes its offer: wait
     * for on_ice_servers (GetIceServerConfig runs in the background). */
    if (control_plane && !aws.skip_ice_servers) {
        struct timespec deadline = deadline_after(timeout_s);
        pthread_mutex_lock(&st->lock);
        const char *problem = wait_locked(st, WAIT_ICE_SERVERS, 0, st->status_reports, &deadline);
        long servers = st->ice_servers;
        pthread_mutex_unlock(&st->lock);
        if (problem != NULL) {
            snprintf(failure_buf, sizeof failure_buf, "no TURN servers within %.3g s: %s",
                     timeout_s, problem);
            failure = failure_buf;
            goto out;
        }
        if (servers < 0) {
            failure = "the TURN servers could not be read (kvs_client_get_ice_servers)";
            goto out;
        }
        ice_ms = ms_between(t0, mono_now());
    }

    /* Offer -> answer, `rounds` times. */
    for (long r = 0; r < rounds; r++) {
        char offer[2048];
        make_offer(offer, sizeof offer, (unsigned long)r + 2);
        pthread_mutex_lock(&st->lock);
        unsigned long answers_before = st->answers;
        unsigned long reports_before = st->status_reports;
        pthread_mutex_unlock(&st->lock);

        char correlation[KVS_CORRELATION_ID_CAPACITY];
        struct timespec sent_at = mono_now();
        rc = kvs_send_sdp_offer(client, NULL, offer, NULL, correlation, sizeof correlation, NULL);
        if (rc != KVS_OK) {
            report_failure("kvs_send_sdp_offer", rc);
            failure = "could not send the SDP offer";
            goto out;
        }
        if (rounds == 1) {
            say(stdout, "offer sent (%zu bytes, correlation id %s)", strlen(offer),
                correlation);
        }
        struct timespec deadline = deadline_after(timeout_s);
        pthread_mutex_lock(&st->lock);
        const char *problem = wait_locked(st, WAIT_ANSWER, answers_before, reports_before,
                                          &deadline);
        struct timespec answered_at = st->last_answer_at;
        size_t answer_len = st->last_answer_len;
        const char *status_text = st->status_reports > reports_before ? st->last_status : "";
        if (problem != NULL) {
            snprintf(failure_buf, sizeof failure_buf,
                     "no SDP answer to offer %ld of %ld within %.3g s: %s%s%s%s", r + 1, rounds,
                     timeout_s, problem, status_text[0] != '\0' ? " (" : "", status_text,
                     status_text[0] != '\0' ? ")" : "");
        }
        pthread_mutex_unlock(&st->lock);
        if (problem != NULL) {
            failure = failure_buf;
            if (strcmp(problem, "timed out") == 0 && r == 0) {
                say(stderr, "is a master connected to the channel?");
            }
            goto out;
        }
        rtts[r] = ms_between(sent_at, answered_at);
        rounds_done = r + 1;
        if (rounds == 1) {
            say(stdout, "answer received (%zu bytes of SDP):", answer_len);
            pthread_mutex_lock(&st->lock);
            for (const char *p = st->last_answer; *p != '\0';) {
                size_t n = strcspn(p, "\r\n");
                say(stdout, "  | %.*s", (int)n, p);
                p += n;
                p += strspn(p, "\r\n");
            }
            pthread_mutex_unlock(&st->lock);
        }
    }

    /* N candidates out, N echoes back. */
    if (candidates > 0) {
        pthread_mutex_lock(&st->lock);
        unsigned long reports_before = st->status_reports;
        pthread_mutex_unlock(&st->lock);
        struct timespec started = mono_now();
        for (size_t i = 0; i < st->candidate_count; i++) {
            const struct sent_candidate *c = &st->candidates[i];
            kvs_ice_candidate ice;
            ice.candidate = c->line;
            ice.sdp_mid = c->sdp_mid;
            ice.sdp_mline_index = c->sdp_mline_index;
            ice.username_fragment = "vwr1";
            rc = kvs_send_ice_candidate(client, NULL, &ice, NULL, NULL, 0, NULL);
            if (rc != KVS_OK) {
                report_failure("kvs_send_ice_candidate", rc);
                failure = "could not send an ICE candidate";
                goto out;
            }
            say(stdout, "candidate %zu/%zu sent: %s", i + 1, st->candidate_count,
                c->line);
        }
        struct timespec deadline = deadline_after(timeout_s);
        pthread_mutex_lock(&st->lock);
        const char *problem = wait_locked(st, WAIT_ECHOES, 0, reports_before, &deadline);
        echoed = st->echoed;
        echo_ms = ms_between(started, st->last_echo_at);
        if (problem != NULL) {
            snprintf(failure_buf, sizeof failure_buf,
                     "%zu of %zu candidates came back within %.3g s: %s", st->echoed,
                     st->candidate_count, timeout_s, problem);
        } else if (st->echo_mismatches > 0 || st->echo_duplicates > 0) {
            snprintf(failure_buf, sizeof failure_buf,
                     "%lu echoed candidates did not match and %lu were duplicates",
                     st->echo_mismatches, st->echo_duplicates);
            problem = failure_buf;
        }
        pthread_mutex_unlock(&st->lock);
        if (problem != NULL) {
            failure = failure_buf;
            goto out;
        }
    }

out:
    /* Read the totals before the client (and `st` with it) is released. */
    if (client != NULL) {
        pthread_mutex_lock(&st->lock);
        if (failure == NULL && (st->bad_answers > 0 || st->echo_mismatches > 0)) {
            snprintf(failure_buf, sizeof failure_buf,
                     "%lu unusable answers, %lu mismatched echoes", st->bad_answers,
                     st->echo_mismatches);
            failure = failure_buf;
        }
        pthread_mutex_unlock(&st->lock);
        /* The counters, read before the client goes away. */
        have_metrics = get_metrics(client, &metrics) == 0;
        rc = kvs_client_free(client);
        if (rc != KVS_OK) {
            report_failure("kvs_client_free", rc);
            if (failure == NULL) {
                failure = "kvs_client_free failed";
            }
        }
        client = NULL;
        st = NULL; /* released by the library through free_viewer_state */
        /* kvs_client_free runs free_userdata on this thread before returning. */
        if (rc == KVS_OK && check_freed_on_return(&g_free_lock, &g_free_calls, &g_free_thread) < 0 &&
            failure == NULL) {
            failure = "free_userdata did not run exactly once for kvs_client_free";
        }
    }
    rc = kvs_shutdown(2000);
    if (rc != KVS_OK) {
        report_failure("kvs_shutdown", rc);
        if (failure == NULL) {
            failure = "kvs_shutdown failed";
        }
    }
    pthread_mutex_lock(&g_free_lock);
    int free_calls = g_free_calls;
    pthread_mutex_unlock(&g_free_lock);
    if (free_calls != 1 && failure == NULL) {
        snprintf(failure_buf, sizeof failure_buf,
                 "free_userdata ran %d times; expected exactly once", free_calls);
        failure = failure_buf;
    }

    /* Report. */
    if (connect_ms > 0) {
        say(stdout, "connect time (kvs_client_connect): %.3f ms", connect_ms);
    }
    if (ice_ms >= 0) {
        say(stdout, "TURN servers ready: %.3f ms after the connect started", ice_ms);
    }
    if (rounds_done == 1) {
        say(stdout, "offer->answer round trip: %.3f ms", rtts[0]);
    } else if (rounds_done > 1) {
        double sum = 0;
        for (long r = 0; r < rounds_done; r++) {
            sum += rtts[r];
        }
        qsort(rtts, (size_t)rounds_done, sizeof *rtts, compare_doubles);
        say(stdout,
            "offer->answer round trip over %ld rounds: min %.3f ms, p50 %.3f ms, "
            "p99 %.3f ms, max %.3f ms, mean %.3f ms",
            rounds_done, rtts[0], percentile(rtts, (size_t)rounds_done, 50),
            percentile(rtts, (size_t)rounds_done, 99), rtts[rounds_done - 1],
            sum / (double)rounds_done);
    }
    if (candidates > 0 && failure == NULL) {
        say(stdout, "%zu/%ld candidates echoed back in %.3f ms", echoed, candidates,
            echo_ms);
    }
    if (have_metrics) {
        print_metrics(&metrics);
    }
    free(rtts);
    if (failure != NULL) {
        say(stdout, "FAILED: %s", failure);
        return 1;
    }
    say(stdout, "OK (%ld offer%s answered, %ld candidate%s echoed)", rounds_done,
        rounds_done == 1 ? "" : "s", candidates, candidates == 1 ? "" : "s");
    return 0;
}
