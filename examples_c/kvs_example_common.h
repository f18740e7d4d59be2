/*
 * kvs_example_common.h: what master.c and viewer.c share.
 *
 *   - say(): one flushed line per event, safe from the dispatcher thread;
 *   - report_failure(): a failed call with its code's name, the library's text
 *     for it (kvs_result_str) and the detail (kvs_last_error_message);
 *   - the control-plane mode: options (--channel-name, --control-plane, ...),
 *     filling kvs_client_config, printing which endpoint is used, the
 *     credentials callback, the ICE server list (kvs_client_get_ice_servers),
 *     the STUN URL (kvs_stun_url) and the metrics (kvs_client_get_metrics).
 *
 * Define EXAMPLE_NAME ("master" or "viewer") before including it. Everything
 * here is static and used by both programs (-Wunused-function stays quiet).
 * Compiles as C11 and as C++.
 */
#ifndef KVS_EXAMPLE_COMMON_H
#define KVS_EXAMPLE_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvs_signaling.h"

#ifndef EXAMPLE_NAME
#error "define EXAMPLE_NAME before including kvs_example_common.h"
#endif

/* ------------------------------------------------------------------------ */
/* Output.                                                                  */

static void say(FILE *out, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void say(FILE *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    flockfile(out);
    fputs(EXAMPLE_NAME ": ", out);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    fflush(out);
    funlockfile(out);
    va_end(ap);
}

/* The header's names of the result codes, for messages a script can grep. */
static const char *result_name(uint32_t rc) { return kvs_result_name(rc); }

/* "<what> failed: KVS_ERR_X (n): <kvs_result_str>: <last error detail>".
 * Call it right after the failing call, on the same thread. */
static void report_failure(const char *what, uint32_t rc) {
    say(stderr, "%s failed: %s (%u): %s: %s", what, result_name(rc), (unsigned)rc,
        kvs_result_str(rc), kvs_last_error_message());
}

static const char *state_name(uint32_t state) {
    switch (state) {
    case KVS_STATE_DISCONNECTED:
        return "DISCONNECTED";
    case KVS_STATE_CONNECTING:
        return "CONNECTING";
    case KVS_STATE_CONNECTED:
        return "CONNECTED";
    case KVS_STATE_CLOSING:
        return "CLOSING";
    case KVS_STATE_RECONNECTING:
        return "RECONNECTING";
    default:
        return "UNKNOWN";
    }
}

/* ------------------------------------------------------------------------ */
/* Control-plane mode: options.                                             */

struct aws_options {
    const char *channel_name;      /* --channel-name */
    const char *control_plane_url; /* --control-plane; NULL: the real regional endpoint */
    const char *ca_bundle;         /* --ca-bundle */
    const char *region;            /* --region, AWS_REGION, AWS_DEFAULT_REGION, the ARN */
    const char *region_source;
    const char *endpoint_cache;    /* --endpoint-cache */
    unsigned long message_ttl_s;   /* --message-ttl (with --create-channel) */
    bool create_channel;           /* --create-channel */
    bool credentials_callback;     /* --credentials-callback */
    bool fips;                     /* --fips */
    bool dual_stack;               /* --dual-stack */
    bool skip_ice_servers;         /* --skip-ice-servers */
    const char *iot_endpoint;      /* --iot-endpoint: AWS IoT credentials provider */
    const char *iot_role_alias;    /* --iot-role-alias */
    const char *iot_thing_name;    /* --iot-thing-name */
    const char *iot_cert;          /* --iot-cert */
    const char *iot_key;           /* --iot-key */
    const char *iot_ca;            /* --iot-ca */
};

#define AWS_OPTIONS_USAGE                                                                      \
    "control-plane mode (bootstraps by channel name, SigV4 over TLS):\n"                      \
    "  --channel-name NAME  the channel's name\n"                                             \
    "  --control-plane URL  control-plane endpoint, e.g. the emulator's\n"                    \
    "                       https://127.0.0.1:PORT; without it: the real AWS endpoint\n"      \
    "                       https://kinesisvideo.REGION.amazonaws.com\n"                      \
    "  --region REGION      AWS region (default: AWS_REGION, AWS_DEFAULT_REGION,\n"           \
    "                       the channel ARN, else us-west-2)\n"                               \
    "  --ca-bundle PATH     PEM file of trusted CAs (default: built-in Mozilla roots)\n"      \
    "  --create-channel     create the channel if it does not exist\n"                        \
    "  --message-ttl S      MessageTtlSeconds of a created channel (5-120)\n"                 \
    "  --credentials-callback  hand the keys over through credentials_callback +\n"           \
    "                       kvs_credentials_sink_set (default: credentials_from_env)\n"       \
    "  --endpoint-cache PATH  keep resolved endpoints in this file across runs\n"             \
    "  --fips, --dual-stack   FIPS / dual-stack endpoints (real AWS only)\n"                  \
    "  --skip-ice-servers   do not fetch the TURN servers\n"                                  \
    "  --iot-endpoint HOST[:PORT]  credentials from the AWS IoT credentials provider\n"       \
    "                       (mutual TLS with the device certificate) instead of keys;\n"     \
    "                       with --iot-role-alias, --iot-cert PEM, --iot-key PEM and\n"      \
    "                       optionally --iot-thing-name NAME, --iot-ca PEM\n"                \
    "  Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.\n"

static void aws_options_init(struct aws_options *o) {
    memset(o, 0, sizeof *o);
}

/* A flag without a value: 1 if it is one of ours, else 0. */
static int aws_parse_flag(struct aws_options *o, const char *arg) {
    if (strcmp(arg, "--create-channel") == 0) {
        o->create_channel = true;
    } else if (strcmp(arg, "--credentials-callback") == 0) {
        o->credentials_callback = true;
    } else if (strcmp(arg, "--fips") == 0) {
        o->fips = true;
    } else if (strcmp(arg, "--dual-stack") == 0) {
        o->dual_stack = true;
    } else if (strcmp(arg, "--skip-ice-servers") == 0) {
        o->skip_ice_servers = true;
    } else {
        return 0;
    }
    return 1;
}

/* An option with a value: 1 if consumed, 0 if not ours, -1 on a bad value. */
static int aws_parse_option(struct aws_options *o, const char *arg, const char *value) {
    if (strcmp(arg, "--channel-name") == 0) {
        o->channel_name = value;
    } else if (strcmp(arg, "--control-plane") == 0) {
        o->control_plane_url = value;
    } else if (strcmp(arg, "--ca-bundle") == 0) {
        o->ca_bundle = value;
    } else if (strcmp(arg, "--region") == 0) {
        o->region = value;
        o->region_source = "--region";
    } else if (strcmp(arg, "--endpoint-cache") == 0) {
        o->endpoint_cache = value;
    } else if (strcmp(arg, "--iot-endpoint") == 0) {
        o->iot_endpoint = value;
    } else if (strcmp(arg, "--iot-role-alias") == 0) {
        o->iot_role_alias = value;
    } else if (strcmp(arg, "--iot-thing-name") == 0) {
        o->iot_thing_name = value;
    } else if (strcmp(arg, "--iot-cert") == 0) {
        o->iot_cert = value;
    } else if (strcmp(arg, "--iot-key") == 0) {
        o->iot_key = value;
    } else if (strcmp(arg, "--iot-ca") == 0) {
        o->iot_ca = value;
    } else if (strcmp(arg, "--message-ttl") == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < 5 || v > 120) {
            fprintf(stderr, EXAMPLE_NAME ": --message-ttl expects 5..120 seconds, got %s\n",
                    value);
            return -1;
        }
        o->message_ttl_s = v;
    } else {
        return 0;
    }
    return 1;
}

/* Control-plane mode is on with a channel name or a control-plane URL. */
static bool aws_mode(const struct aws_options *o) {
    return o->channel_name != NULL || o->control_plane_url != NULL;
}

/* The region field of "arn:aws:kinesisvideo:REGION:ACCOUNT:channel/...". */
static void region_of_arn(const char *arn, char *out, size_t cap) {
    out[0] = '\0';
    if (arn == NULL) {
        return;
    }
    const char *p = arn;
    for (int colons = 0; colons < 3; colons++) {
        p = strchr(p, ':');
        if (p == NULL) {
            return;
        }
        p++;
    }
    size_t n = strcspn(p, ":");
    if (n > 0 && n < cap) {
        memcpy(out, p, n);
        out[n] = '\0';
    }
}

/* Settles the region the way the program reports it (and passes it on, so
 * the library cannot pick another one). */
static void aws_resolve_region(struct aws_options *o, const char *channel_arn, char *arn_region,
                               size_t cap) {
    if (o->region != NULL) {
        return;
    }
    const char *env = getenv("AWS_REGION");
    if (env != NULL && env[0] != '\0') {
        o->region = env;
        o->region_source = "AWS_REGION";
        return;
    }
    env = getenv("AWS_DEFAULT_REGION");
    if (env != NULL && env[0] != '\0') {
        o->region = env;
        o->region_source = "AWS_DEFAULT_REGION";
        return;
    }
    region_of_arn(channel_arn, arn_region, cap);
    if (arn_region[0] != '\0') {
        o->region = arn_region;
        o->region_source = "the channel ARN";
        return;
    }
    o->region = "us-west-2";
    o->region_source = "default";
}

/* The regional control-plane URL the library derives when no URL is given
 * (the header documents https://kinesisvideo.REGION.amazonaws.com; the API has
 * no call that returns it, so this mirrors the partition rules). */
static void regional_control_plane(const struct aws_options *o, char *out, size_t cap) {
    const char *service = o->fips ? "kinesisvideo-fips" : "kinesisvideo";
    const char *suffix = "amazonaws.com";
    if (strncmp(o->region, "cn-", 3) == 0) {
        suffix = o->dual_stack ? "api.amazonwebservices.com.cn" : "amazonaws.com.cn";
    } else if (strncmp(o->region, "us-isob-", 8) == 0) {
        suffix = "sc2s.sgov.gov";
    } else if (strncmp(o->region, "us-iso-", 7) == 0) {
        suffix = "c2s.ic.gov";
    } else if (o->dual_stack) {
        suffix = "api.aws";
    }
    snprintf(out, cap, "https://%s.%s.%s", service, o->region, suffix);
}

/* "AKIA... (20 characters)": enough to tell keys apart, never the whole key. */
static void describe_key(const char *key, char *out, size_t cap) {
    if (key == NULL || key[0] == '\0') {
        snprintf(out, cap, "(not set)");
    } else {
        snprintf(out, cap, "%.4s... (%zu characters)", key, strlen(key));
    }
}

/* Prints where the client goes and with what; 0, or -1 if the setup cannot work. */
static int aws_describe(const struct aws_options *o, const char *channel_arn) {
    const char *key = getenv("AWS_ACCESS_KEY_ID");
    const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
    const char *token = getenv("AWS_SESSION_TOKEN");
    char key_text[64];
    describe_key(key, key_text, sizeof key_text);

    if (o->channel_name != NULL) {
        say(stdout, "mode: control plane, channel \"%s\" by name%s", o->channel_name,
            o->create_channel ? " (created if missing)" : "");
    } else {
        say(stdout, "mode: control plane, channel %s", channel_arn);
    }
    say(stdout, "region: %s (%s)", o->region, o->region_source);
    if (o->control_plane_url != NULL) {
        say(stdout, "control-plane endpoint: %s (--control-plane: NOT AWS)",
            o->control_plane_url);
    } else {
        char url[256];
        regional_control_plane(o, url, sizeof url);
        say(stdout, "control-plane endpoint: %s (the REAL AWS regional endpoint%s%s)", url,
            o->fips ? ", FIPS" : "", o->dual_stack ? ", dual-stack" : "");
    }
    say(stdout, "TLS trust: %s%s", o->ca_bundle != NULL ? "CA bundle " : "built-in Mozilla roots",
        o->ca_bundle != NULL ? o->ca_bundle : "");
    if (o->iot_endpoint != NULL) {
        say(stdout, "credentials: AWS IoT credentials provider %s, role alias %s, thing %s, "
                    "certificate %s, key %s, trusting %s",
            o->iot_endpoint, o->iot_role_alias != NULL ? o->iot_role_alias : "(not set)",
            o->iot_thing_name != NULL ? o->iot_thing_name : "(none)",
            o->iot_cert != NULL ? o->iot_cert : "(not set)",
            o->iot_key != NULL ? o->iot_key : "(not set)",
            o->iot_ca != NULL ? o->iot_ca : "the built-in roots");
        return 0;
    }
    say(stdout, "credentials: %s; AWS_ACCESS_KEY_ID %s, AWS_SECRET_ACCESS_KEY %s, "
                "AWS_SESSION_TOKEN %s",
        o->credentials_callback ? "credentials_callback -> kvs_credentials_sink_set"
                                : "credentials_from_env",
        key_text, secret != NULL && secret[0] != '\0' ? "set" : "(not set)",
        token != NULL && token[0] != '\0' ? "set" : "(not set)");
    if (key == NULL || key[0] == '\0' || secret == NULL || secret[0] == '\0') {
        say(stderr, "WARNING: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set: the "
                    "connect will fail with KVS_ERR_CREDENTIALS");
    }
    if (o->message_ttl_s > 0 && !o->create_channel) {
        say(stderr, "WARNING: --message-ttl only applies with --create-channel");
    }
    if (o->endpoint_cache != NULL) {
        say(stdout, "endpoint cache: %s", o->endpoint_cache);
    }
    if (o->control_plane_url != NULL && (o->fips || o->dual_stack)) {
        say(stderr, "--fips and --dual-stack cannot be combined with --control-plane");
        return -1;
    }
    return 0;
}

/* Fills the control-plane fields of `config`. The strings stay owned by the
 * caller (kvs_client_new copies them). */
static void aws_apply(const struct aws_options *o, kvs_client_config *config,
                      const char *channel_arn, kvs_credentials_callback credentials_callback) {
    config->use_control_plane = true;
    config->channel_name = o->channel_name;
    config->channel_arn = o->channel_name != NULL ? NULL : channel_arn;
    config->endpoint = NULL; /* resolved through GetSignalingChannelEndpoint */
    config->region = o->region;
    config->control_plane_url = o->control_plane_url;
    config->ca_bundle_path = o->ca_bundle;
    config->use_fips = o->fips;
    config->use_dual_stack = o->dual_stack;
    config->create_channel = o->create_channel;
    config->message_ttl_s = (uint32_t)o->message_ttl_s;
    config->endpoint_cache_path = o->endpoint_cache;
    config->skip_ice_servers = o->skip_ice_servers;
    config->iot_credentials_endpoint = o->iot_endpoint;
    config->iot_role_alias = o->iot_role_alias;
    config->iot_thing_name = o->iot_thing_name;
    config->iot_certificate_path = o->iot_cert;
    config->iot_private_key_path = o->iot_key;
    config->iot_ca_path = o->iot_ca;
    if (o->credentials_callback) {
        config->credentials_callback = credentials_callback;
    } else if (o->iot_endpoint == NULL) {
        config->credentials_from_env = true;
    }
}

/* The region's STUN URL (kvs_stun_url). */
static void print_stun_url(const struct aws_options *o) {
    char url[256];
    size_t len = 0;
    kvs_result rc = kvs_stun_url(o->region, o->fips, o->dual_stack, url, sizeof url, &len);
    if (rc != KVS_OK) {
        report_failure("kvs_stun_url", rc);
        return;
    }
    say(stdout, "STUN server: %s", url);
}

/* ------------------------------------------------------------------------ */
/* The credentials callback: reads the environment at each call.            */

static pthread_mutex_t g_credentials_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long g_credentials_calls = 0;

/* Runs on the dispatcher thread before the current credentials expire.
 * Returns a kvs_result value as a uint32_t (anything unknown is a failure). */
static uint32_t credentials_from_environment(void *userdata, kvs_credentials_sink *sink) {
    (void)userdata;
    pthread_mutex_lock(&g_credentials_lock);
    unsigned long n = ++g_credentials_calls;
    pthread_mutex_unlock(&g_credentials_lock);
    const char *key = getenv("AWS_ACCESS_KEY_ID");
    const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
    const char *token = getenv("AWS_SESSION_TOKEN");
    if (key == NULL || key[0] == '\0' || secret == NULL || secret[0] == '\0') {
        say(stderr, "credentials callback #%lu: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "must be set; returning KVS_ERR_CREDENTIALS",
            n);
        return KVS_ERR_CREDENTIALS;
    }
    if (token != NULL && token[0] == '\0') {
        token = NULL;
    }
    /* 0: they do not expire (long-term keys). Temporary credentials would pass
     * their expiry here so the library asks again in time. */
    kvs_result rc = kvs_credentials_sink_set(sink, key, secret, token, 0);
    if (rc != KVS_OK) {
        report_failure("kvs_credentials_sink_set", rc);
        return rc;
    }
    char key_text[64];
    describe_key(key, key_text, sizeof key_text);
    say(stdout, "credentials callback #%lu: handed over access key %s%s", n, key_text,
        token != NULL ? " with a session token" : "");
    return KVS_OK;
}

/* ------------------------------------------------------------------------ */
/* ICE servers and metrics.                                                 */

/* Copies the client's ICE server list out (growing the buffers when the
 * library asks for more) and prints it; the password only as its length.
 * Returns the number of servers, or -1 if they could not be read. */
static long print_ice_servers(const kvs_client *client, size_t announced) {
    kvs_ice_server fixed[4];
    char fixed_buf[2048];
    kvs_ice_server *servers = fixed;
    char *buf = fixed_buf;
    size_t capacity = sizeof fixed / sizeof fixed[0];
    size_t buf_capacity = sizeof fixed_buf;
    size_t count = 0, buf_len = 0;
    long result = -1;
    kvs_result rc = KVS_OK;

    for (int attempt = 0; attempt < 3; attempt++) {
        rc = kvs_client_get_ice_servers(client, servers, capacity, buf, buf_capacity, &count,
                                        &buf_len);
        if (rc != KVS_ERR_BUFFER_TOO_SMALL) {
            break;
        }
        /* Too small: the sizes needed were reported; the list may change
         * between calls, hence the loop. */
        if (servers != fixed) {
            free(servers);
        }
        if (buf != fixed_buf) {
            free(buf);
        }
        capacity = count;
        buf_capacity = buf_len;
        servers = (kvs_ice_server *)calloc(capacity > 0 ? capacity : 1, sizeof *servers);
        buf = (char *)malloc(buf_capacity > 0 ? buf_capacity : 1);
        if (servers == NULL || buf == NULL) {
            say(stderr, "out of memory for %zu ICE servers", count);
            free(servers);
            free(buf);
            return -1;
        }
    }
    if (rc != KVS_OK) {
        report_failure("kvs_client_get_ice_servers", rc);
    } else {
        say(stdout, "ICE servers: %zu (on_ice_servers announced %zu; %zu bytes of strings)", count,
            announced, buf_len);
        for (size_t i = 0; i < count; i++) {
            const kvs_ice_server *s = &servers[i];
            say(stdout, "  ICE server %zu: TTL %u s, username %s, password (%zu characters, "
                        "not shown)",
                i + 1, (unsigned)s->ttl_seconds, s->username != NULL ? s->username : "(none)",
                s->password != NULL ? strlen(s->password) : (size_t)0);
            for (size_t u = 0; u < s->uri_count && u < KVS_MAX_ICE_URIS; u++) {
                say(stdout, "    %s", s->uris[u]);
            }
        }
        result = (long)count;
    }
    if (servers != fixed) {
        free(servers);
    }
    if (buf != fixed_buf) {
        free(buf);
    }
    return result;
}

/* Reads the client's counters; 0 on success. While connected it first waits
 * (up to 1 s) until every accepted send is confirmed: `messages_sent` counts a
 * send once the service's TCP acknowledged it, which the library checks every
 * 20 ms. */
static int get_metrics(const kvs_client *client, kvs_client_metrics *out) {
    for (int waited_ms = 0;; waited_ms += 10) {
        kvs_result rc = kvs_client_get_metrics(client, out);
        if (rc != KVS_OK) {
            report_failure("kvs_client_get_metrics", rc);
            return -1;
        }
        bool settled = out->messages_queued == 0 && out->messages_unconfirmed == 0;
        if (settled || out->state != KVS_STATE_CONNECTED || waited_ms >= 1000) {
            return 0;
        }
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

static void print_metrics(const kvs_client_metrics *m) {
    say(stdout, "metrics: state %s; %llu connect%s, %llu reconnect%s, %llu failed connect "
                "attempt%s",
        state_name(m->state), (unsigned long long)m->connects, m->connects == 1 ? "" : "s",
        (unsigned long long)m->reconnects, m->reconnects == 1 ? "" : "s",
        (unsigned long long)m->connect_failures, m->connect_failures == 1 ? "" : "s");
    if (m->connects > 0) {
        say(stdout, "metrics: last connect: control plane %.3f ms, TLS %.3f ms, WebSocket %.3f ms",
            (double)m->last_control_plane_us / 1e3, (double)m->last_tls_us / 1e3,
            (double)m->last_websocket_us / 1e3);
    } else {
        say(stdout, "metrics: no successful connect");
    }
    say(stdout, "metrics: messages: %llu sent, %llu received, %llu queued, %llu failed, "
                "%llu resent; %llu pings, %llu GO_AWAYs; backoff %llu ms; clock skew %+lld ms",
        (unsigned long long)m->messages_sent, (unsigned long long)m->messages_received,
        (unsigned long long)m->messages_queued, (unsigned long long)m->messages_failed,
        (unsigned long long)m->messages_resent,
        (unsigned long long)m->pings_sent, (unsigned long long)m->go_aways,
        (unsigned long long)m->current_backoff_ms, (long long)m->clock_skew_ms);
    if (m->storage_joins > 0) {
        say(stdout, "metrics: storage: %llu join%s, last join %.3f ms, join -> storage offer "
                    "%.3f ms%s",
            (unsigned long long)m->storage_joins, m->storage_joins == 1 ? "" : "s",
            (double)m->last_join_latency_us / 1e3, (double)m->time_to_storage_offer_us / 1e3,
            m->time_to_storage_offer_us == 0 ? " (no offer yet)" : "");
    }
}

/* ------------------------------------------------------------------------ */
/* free_userdata and kvs_client_free.                                       */

/* The header promises that kvs_client_free runs free_userdata on the calling
 * thread before it returns. Checks `*calls` and `*freed_by` (the thread that
 * ran it; both guarded by `lock`) right after kvs_client_free returned: 1 if
 * it ran exactly once on this thread; 0 if it ran once but on another thread,
 * or had not run yet but did within 2 s (a library bug, reported with a
 * WARNING line scripts look for, not fatal here: nothing of the client is
 * touched after kvs_client_free); -1 if it never ran or ran more than once. */
static int check_freed_on_return(pthread_mutex_t *lock, const int *calls,
                                 const pthread_t *freed_by) {
    pthread_mutex_lock(lock);
    int n = *calls;
    int here = n > 0 && pthread_equal(*freed_by, pthread_self());
    pthread_mutex_unlock(lock);
    if (n == 1) {
        if (!here) {
            say(stderr, "WARNING: library bug: free_userdata ran on another thread "
                        "(kvs_signaling.h: on the thread that calls kvs_client_free)");
            return 0;
        }
        return 1;
    }
    if (n > 1) {
        say(stderr, "free_userdata ran %d times by the time kvs_client_free returned", n);
        return -1;
    }
    say(stderr, "WARNING: library bug: kvs_client_free returned before free_userdata ran "
                "(kvs_signaling.h: it runs it before returning); waiting for it");
    for (int waited_ms = 0; waited_ms < 2000; waited_ms += 5) {
        struct timespec nap;
        nap.tv_sec = 0;
        nap.tv_nsec = 5 * 1000 * 1000;
        nanosleep(&nap, NULL);
        pthread_mutex_lock(lock);
        n = *calls;
        pthread_mutex_unlock(lock);
        if (n != 0) {
            say(stderr, "WARNING: library bug: free_userdata ran about %d ms after "
                        "kvs_client_free returned",
                waited_ms + 5);
            return n == 1 ? 0 : -1;
        }
    }
    say(stderr, "free_userdata did not run within 2 s of kvs_client_free");
    return -1;
}

#endif /* KVS_EXAMPLE_COMMON_H */
