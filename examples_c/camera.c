/*
 * camera.c: a camera that streams live video to every viewer of a Kinesis
 * Video Streams signaling channel, with libkvs_signaling for the signaling and
 * GStreamer's webrtcbin for the media.
 *
 * It connects as the channel's master. Each viewer's SDP offer gets its own
 * pipeline:
 *
 *   videotestsrc is-live=true ! video/x-raw,WxH@FPS ! videoconvert
 *     ! vp8enc (realtime) ! rtpvp8pay pt=<the offer's VP8 payload type>
 *     ! webrtcbin bundle-policy=max-bundle
 *
 * (with --device /dev/videoN, a single capture pipeline `v4l2src ! ...
 * intervideosink` feeds every viewer's `intervideosrc` instead). The answer
 * goes back with kvs_send_sdp_answer; ICE candidates trickle both ways:
 * webrtcbin's on-ice-candidate -> kvs_send_ice_candidate, a received
 * ICE_CANDIDATE -> add-ice-candidate. The TURN servers come from
 * kvs_client_get_ice_servers (read when a viewer arrives); the STUN server is
 * the region's (kvs_stun_url) when talking to the real service, or --stun URL.
 * The emulator's TURN servers are not real (nothing listens on them): on
 * loopback their allocations fail within milliseconds (ICMP port unreachable
 * for UDP; the emulator's HTTP port closes a TURN-over-TCP attempt), and host
 * candidates are checked in the meantime, so they do not delay ICE. --no-turn
 * leaves them out altogether.
 *
 * Viewers, bounds and cleanup: at most --max-viewers sessions (default 10, the
 * service's viewer limit); an offer beyond that is refused (logged, no
 * answer). A second offer from the same viewer replaces its session. A
 * session is torn down when its ICE connection state becomes FAILED or
 * CLOSED, when ICE has not connected --connect-timeout-s (default 20) after
 * the offer, when the viewer's RTCP stops (the RTP session's source timeout,
 * about 5 RTCP intervals, i.e. tens of seconds) or says BYE, or when the
 * pipeline posts an error.
 *
 * Threading and ownership (three kinds of threads):
 *   - the library's dispatcher thread runs on_message / on_state / ...: it
 *     creates sessions (parses the offer, builds the pipeline, sets it
 *     PLAYING, starts set-remote-description) and feeds remote candidates;
 *     it never waits for GStreamer to stop anything;
 *   - GStreamer's threads (webrtcbin's operation thread, libnice's, the
 *     streaming threads) run the promise callbacks (create-answer,
 *     kvs_send_sdp_answer) and on-ice-candidate (kvs_send_ice_candidate) and
 *     the state notifications; the send functions may be called from any
 *     thread; they only set atomic flags and read immutable session fields;
 *   - the main thread runs a GMainLoop: every 200 ms it reaps sessions
 *     (state changes to NULL happen only here: they join streaming threads),
 *     reads each pipeline's bus, enforces --timeout-s and reconnects a client
 *     that ended up DISCONNECTED.
 * `g_camera.lock` guards the session table, `client` and `stopping`. A
 * session is reference counted (atomic): the table holds one reference, every
 * pending promise one, and every signal handler one (dropped when the handler
 * goes with its webrtcbin). Sessions leave the table under the lock (on the
 * dispatcher thread when replaced, on the main thread when reaped) and are
 * stopped on the main thread; at exit every session is stopped before
 * kvs_client_free, so no GStreamer thread calls into a freed client, and
 * `stopping` keeps the dispatcher from adding one in between.
 *
 * WebRTC ingestion (--media-storage auto|on, control-plane mode only): the
 * library joins the channel's storage session after each connect
 * (kvs_client_config.media_storage); the session's offer arrives as an
 * SDP_OFFER from the session's client id and gets a session like a viewer's
 * (it counts against --max-viewers). Its offer must include VP8: the real
 * service's storage session offers H.264, which this camera does not send.
 *
 * Usage:
 *   camera --endpoint ws://127.0.0.1:PORT --channel-arn ARN [options]
 *   camera --channel-name NAME [--control-plane URL] [--ca-bundle PATH] ...
 * Options: --device PATH, --width N, --height N, --fps N, --pattern NAME,
 * --max-viewers N, --connect-timeout-s S, --no-turn, --stun URL,
 * --timeout-s S, --media-storage auto|on. Lines go to stdout ("camera: ..."), one per event; the
 * program prints "camera: connected" once signaling is up, and per viewer
 * "viewer V: answer sent", "viewer V: ICE CONNECTED after N ms", "viewer V:
 * closed (reason)". Exit status 1 on a failed connect, 2 on bad arguments.
 *
 * Built by examples_c/Makefile when `pkg-config --exists gstreamer-webrtc-1.0`.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib-unix.h>
#include <gst/gst.h>
#include <gst/sdp/sdp.h>
#define GST_USE_UNSTABLE_API
#include <gst/webrtc/webrtc.h>

#include "kvs_signaling.h"

#define EXAMPLE_NAME "camera"
#include "kvs_example_common.h"

/* The service admits 10 viewers per channel; the default follows it. */
#define DEFAULT_MAX_VIEWERS 10
#define MAX_VIEWERS_LIMIT 64
#define MAX_MIDS 16
#define INTER_CHANNEL "kvs-camera"

/* ------------------------------------------------------------------------ */
/* Options.                                                                 */

struct options {
    const char *device;      /* --device: v4l2 device; NULL: videotestsrc */
    const char *pattern;     /* --pattern: videotestsrc pattern */
    const char *stun;        /* --stun: stun://host:port */
    int width, height, fps;  /* --width --height --fps */
    long max_viewers;        /* --max-viewers */
    double connect_timeout_s;/* --connect-timeout-s */
    double timeout_s;        /* --timeout-s (0: until a signal) */
    bool no_turn;            /* --no-turn */
    uint32_t media_storage;  /* --media-storage: KVS_MEDIA_STORAGE_* (control plane only) */
};

/* ------------------------------------------------------------------------ */
/* Sessions.                                                                */

enum close_reason {
    OPEN = 0,
    CLOSE_ICE_FAILED,
    CLOSE_ICE_CLOSED,
    CLOSE_CONNECT_TIMEOUT,
    CLOSE_RTCP_TIMEOUT,
    CLOSE_RTCP_BYE,
    CLOSE_PIPELINE_ERROR,
    CLOSE_REPLACED,
    CLOSE_NEGOTIATION,
    CLOSE_EXIT,
};

static const char *close_reason_text(int reason) {
    switch (reason) {
    case CLOSE_ICE_FAILED: return "ICE failed";
    case CLOSE_ICE_CLOSED: return "ICE closed";
    case CLOSE_CONNECT_TIMEOUT: return "ICE did not connect in time";
    case CLOSE_RTCP_TIMEOUT: return "the viewer's RTCP timed out";
    case CLOSE_RTCP_BYE: return "the viewer sent RTCP BYE";
    case CLOSE_PIPELINE_ERROR: return "pipeline error";
    case CLOSE_REPLACED: return "replaced by a new offer from the same viewer";
    case CLOSE_NEGOTIATION: return "negotiation failed";
    case CLOSE_EXIT: return "the camera is stopping";
    default: return "open";
    }
}

struct session {
    gint refs;                   /* atomic */
    unsigned long number;        /* 1, 2, ... in arrival order */
    char viewer[KVS_CORRELATION_ID_CAPACITY]; /* the viewer's client id (<= 256) */
    char mids[MAX_MIDS][64];     /* sdpMid of each offered m= line */
    int mid_count;
    /* Set at creation on the dispatcher thread, before any other thread sees
     * the session; released in session_unref (last reference). */
    GstElement *pipeline;
    GstElement *webrtc;
    gint64 offer_us;             /* g_get_monotonic_time() when the offer came */
    /* Atomics written by GStreamer threads, read by the main thread. */
    gint ice_state;              /* GstWebRTCICEConnectionState */
    gint close_reason;           /* enum close_reason; first one wins */
    gint first_local_candidate;  /* 0/1 */
    gint connected_logged;       /* 0/1 */
};

struct camera {
    pthread_mutex_t lock;
    kvs_client *client;          /* under lock; set before connect, cleared before free */
    bool stopping;               /* under lock: no new sessions */
    struct session *sessions[MAX_VIEWERS_LIMIT]; /* under lock; NULL slots are free */
    unsigned long sessions_made; /* under lock */
    unsigned long refused;       /* under lock: offers over --max-viewers */
    struct options opt;          /* read-only after main() parsed it */
    bool real_service;           /* control plane without --control-plane */
    char stun_url[300];          /* read-only after start */
    GstElement *capture;         /* --device: the shared capture pipeline (main thread) */
    GMainLoop *loop;
};

static struct camera g_camera;

static struct session *session_ref(struct session *s) {
    g_atomic_int_inc(&s->refs);
    return s;
}

static void session_unref(gpointer data) {
    struct session *s = (struct session *)data;
    if (s == NULL || !g_atomic_int_dec_and_test(&s->refs)) {
        return;
    }
    if (s->webrtc != NULL) {
        gst_object_unref(s->webrtc);
    }
    if (s->pipeline != NULL) {
        gst_object_unref(s->pipeline);
    }
    g_free(s);
}

static void session_unref_closure(gpointer data, GClosure *closure) {
    (void)closure;
    session_unref(data);
}

/* Marks the session for closing (any thread); the first reason is kept. */
static void session_close(struct session *s, int reason) {
    if (g_atomic_int_compare_and_exchange(&s->close_reason, OPEN, reason)) {
        say(stdout, "viewer %s: closing (%s)", s->viewer, close_reason_text(reason));
    }
}

static double ms_since_offer(const struct session *s) {
    return (double)(g_get_monotonic_time() - s->offer_us) / 1000.0;
}

static kvs_client *current_client(void) {
    pthread_mutex_lock(&g_camera.lock);
    kvs_client *client = g_camera.client;
    pthread_mutex_unlock(&g_camera.lock);
    return client;
}

/* ------------------------------------------------------------------------ */
/* GStreamer callbacks (GStreamer's threads).                               */

/* webrtcbin found a local candidate: trickle it to the viewer. */
static void on_local_candidate(GstElement *webrtc, guint mline, gchar *candidate, gpointer data) {
    (void)webrtc;
    struct session *s = (struct session *)data;
    if (candidate == NULL || candidate[0] == '\0') {
        return;
    }
    kvs_ice_candidate c;
    c.candidate = candidate;
    c.sdp_mid = (int)mline < s->mid_count ? s->mids[mline] : NULL;
    c.sdp_mline_index = (int32_t)mline;
    c.username_fragment = NULL;
    kvs_client *client = current_client();
    if (client == NULL) {
        return;
    }
    kvs_result rc = kvs_send_ice_candidate(client, s->viewer, &c, NULL, NULL, 0, NULL);
    if (rc != KVS_OK) {
        report_failure("kvs_send_ice_candidate", rc);
        return;
    }
    if (g_atomic_int_compare_and_exchange(&s->first_local_candidate, 0, 1)) {
        say(stdout, "viewer %s: first local candidate sent %.1f ms after the offer", s->viewer,
            ms_since_offer(s));
    }
}

static void on_ice_state(GObject *webrtc, GParamSpec *pspec, gpointer data) {
    (void)pspec;
    struct session *s = (struct session *)data;
    GstWebRTCICEConnectionState state = GST_WEBRTC_ICE_CONNECTION_STATE_NEW;
    g_object_get(webrtc, "ice-connection-state", &state, NULL);
    g_atomic_int_set(&s->ice_state, (gint)state);
    switch (state) {
    case GST_WEBRTC_ICE_CONNECTION_STATE_CONNECTED:
    case GST_WEBRTC_ICE_CONNECTION_STATE_COMPLETED:
        if (g_atomic_int_compare_and_exchange(&s->connected_logged, 0, 1)) {
            say(stdout, "viewer %s: ICE CONNECTED after %.1f ms", s->viewer, ms_since_offer(s));
        }
        break;
    case GST_WEBRTC_ICE_CONNECTION_STATE_FAILED:
        session_close(s, CLOSE_ICE_FAILED);
        break;
    case GST_WEBRTC_ICE_CONNECTION_STATE_CLOSED:
        session_close(s, CLOSE_ICE_CLOSED);
        break;
    default:
        break;
    }
}

/* rtpbin signals (the RTP session inside webrtcbin): a remote source, the
 * viewer's RTCP, timed out or said BYE (rtpbin reports remote sources only). */
static void on_source_timeout(GstElement *rtpbin, guint session_id, guint ssrc, gpointer data) {
    (void)rtpbin;
    (void)session_id;
    (void)ssrc;
    session_close((struct session *)data, CLOSE_RTCP_TIMEOUT);
}

static void on_source_bye(GstElement *rtpbin, guint session_id, guint ssrc, gpointer data) {
    (void)rtpbin;
    (void)session_id;
    (void)ssrc;
    session_close((struct session *)data, CLOSE_RTCP_BYE);
}

/* create-answer resolved: set it locally and send it to the viewer. */
static void on_answer_created(GstPromise *promise, gpointer data) {
    struct session *s = (struct session *)data;
    GstWebRTCSessionDescription *answer = NULL;
    if (gst_promise_wait(promise) == GST_PROMISE_RESULT_REPLIED) {
        const GstStructure *reply = gst_promise_get_reply(promise);
        if (reply != NULL) {
            gst_structure_get(reply, "answer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &answer, NULL);
        }
    }
    gst_promise_unref(promise);
    if (answer == NULL) {
        say(stderr, "viewer %s: webrtcbin made no answer (is VP8 in the offer?)", s->viewer);
        session_close(s, CLOSE_NEGOTIATION);
        return;
    }
    g_signal_emit_by_name(s->webrtc, "set-local-description", answer, NULL);
    gchar *text = gst_sdp_message_as_text(answer->sdp);
    gst_webrtc_session_description_free(answer);
    kvs_client *client = current_client();
    kvs_result rc = client != NULL ? kvs_send_sdp_answer(client, s->viewer, text, NULL, NULL, 0, NULL)
                                   : KVS_ERR_SHUTDOWN;
    if (rc != KVS_OK) {
        report_failure("kvs_send_sdp_answer", rc);
        session_close(s, CLOSE_NEGOTIATION);
    } else {
        say(stdout, "viewer %s: answer sent (%zu bytes) %.1f ms after the offer", s->viewer,
            strlen(text), ms_since_offer(s));
    }
    g_free(text);
}

/* set-remote-description resolved: ask for the answer. */
static void on_offer_set(GstPromise *promise, gpointer data) {
    struct session *s = (struct session *)data;
    GstPromiseResult result = gst_promise_wait(promise);
    gst_promise_unref(promise);
    if (result != GST_PROMISE_RESULT_REPLIED) {
        session_close(s, CLOSE_NEGOTIATION);
        return;
    }
    GstPromise *next = gst_promise_new_with_change_func(on_answer_created, session_ref(s), session_unref);
    g_signal_emit_by_name(s->webrtc, "create-answer", NULL, next);
}

/* ------------------------------------------------------------------------ */
/* Session creation (dispatcher thread).                                    */

/* The offer's mids in m= line order, and the payload type of VP8 in its
 * first video section (-1 if none). */
static int read_offer(const GstSDPMessage *sdp, struct session *s) {
    int vp8_pt = -1;
    guint n = gst_sdp_message_medias_len(sdp);
    for (guint i = 0; i < n && i < MAX_MIDS; i++) {
        const GstSDPMedia *media = gst_sdp_message_get_media(sdp, i);
        const gchar *mid = gst_sdp_media_get_attribute_val(media, "mid");
        g_strlcpy(s->mids[i], mid != NULL ? mid : "", sizeof s->mids[i]);
        s->mid_count = (int)i + 1;
        if (vp8_pt >= 0 || g_strcmp0(gst_sdp_media_get_media(media), "video") != 0) {
            continue;
        }
        for (guint a = 0; a < gst_sdp_media_attributes_len(media); a++) {
            const GstSDPAttribute *attr = gst_sdp_media_get_attribute(media, a);
            int pt = -1;
            char codec[32];
            if (g_strcmp0(attr->key, "rtpmap") == 0 && attr->value != NULL &&
                sscanf(attr->value, "%d %31[^/]", &pt, codec) == 2 &&
                g_ascii_strcasecmp(codec, "VP8") == 0) {
                vp8_pt = pt;
                break;
            }
        }
    }
    return vp8_pt;
}

/* The viewer-side part of the pipeline that makes raw video. */
static gchar *source_description(const struct options *o) {
    if (o->device != NULL) {
        return g_strdup_printf("intervideosrc channel=" INTER_CHANNEL " ! videoconvert "
                               "! videoscale ! video/x-raw,width=%d,height=%d ! videorate "
                               "! video/x-raw,framerate=%d/1",
                               o->width, o->height, o->fps);
    }
    return g_strdup_printf("videotestsrc is-live=true pattern=%s "
                           "! video/x-raw,width=%d,height=%d,framerate=%d/1",
                           o->pattern, o->width, o->height, o->fps);
}

/* "turn:host:port?transport=udp" + user + password -> webrtcbin's
 * "turn://user:password@host:port?transport=udp" (user-info escaped). */
static gchar *turn_uri(const char *uri, const char *username, const char *password) {
    const char *scheme = NULL;
    const char *rest = NULL;
    if (strncmp(uri, "turns:", 6) == 0) {
        scheme = "turns";
        rest = uri + 6;
    } else if (strncmp(uri, "turn:", 5) == 0) {
        scheme = "turn";
        rest = uri + 5;
    } else {
        return NULL;
    }
    gchar *user = g_uri_escape_string(username != NULL ? username : "", NULL, FALSE);
    gchar *pass = g_uri_escape_string(password != NULL ? password : "", NULL, FALSE);
    gchar *out = g_strdup_printf("%s://%s:%s@%s", scheme, user, pass, rest);
    g_free(user);
    g_free(pass);
    return out;
}

/* Adds the client's TURN servers to webrtcbin; returns how many URIs. */
static int add_turn_servers(kvs_client *client, GstElement *webrtc) {
    kvs_ice_server servers[8];
    static char buf[16384]; /* only the dispatcher thread makes sessions */
    size_t count = 0, len = 0;
    kvs_result rc = kvs_client_get_ice_servers(client, servers, 8, buf, sizeof buf, &count, &len);
    if (rc != KVS_OK && rc != KVS_ERR_BUFFER_TOO_SMALL) {
        report_failure("kvs_client_get_ice_servers", rc);
        return 0;
    }
    if (rc == KVS_ERR_BUFFER_TOO_SMALL) {
        say(stderr, "more ICE servers than this example reads (%zu); none used", count);
        return 0;
    }
    int added = 0;
    for (size_t i = 0; i < count; i++) {
        for (size_t u = 0; u < servers[i].uri_count && u < KVS_MAX_ICE_URIS; u++) {
            gchar *uri = turn_uri(servers[i].uris[u], servers[i].username, servers[i].password);
            gboolean ok = FALSE;
            if (uri != NULL) {
                g_signal_emit_by_name(webrtc, "add-turn-server", uri, &ok);
                g_free(uri); /* never printed: it holds the password */
            }
            added += ok ? 1 : 0;
        }
    }
    return added;
}

/* Builds and starts a session for an offer; NULL (and a line) on failure.
 * Called with g_camera.lock held (hence `client` as an argument). */
static struct session *session_start(kvs_client *client, const kvs_message *m,
                                     unsigned long number) {
    const struct options *o = &g_camera.opt;
    GstSDPMessage *sdp = NULL;
    if (gst_sdp_message_new_from_text(m->sdp, &sdp) != GST_SDP_OK) {
        say(stderr, "viewer %s: the offer is not valid SDP", m->sender_client_id);
        return NULL;
    }
    struct session *s = g_new0(struct session, 1);
    s->refs = 1;
    s->number = number;
    s->offer_us = g_get_monotonic_time();
    g_strlcpy(s->viewer, m->sender_client_id, sizeof s->viewer);
    int pt = read_offer(sdp, s);
    if (pt < 0) {
        say(stderr, "viewer %s: the offer has no VP8 video; not answering", s->viewer);
        gst_sdp_message_free(sdp);
        session_unref(s);
        return NULL;
    }
    gchar *source = source_description(o);
    gchar *description = g_strdup_printf(
        "webrtcbin name=webrtc bundle-policy=max-bundle latency=0 %s%s "
        "%s ! videoconvert ! queue max-size-buffers=2 leaky=downstream "
        "! vp8enc deadline=1 cpu-used=8 threads=1 target-bitrate=600000 keyframe-max-dist=%d "
        "error-resilient=partitions lag-in-frames=0 "
        "! rtpvp8pay pt=%d mtu=1200 picture-id-mode=15-bit "
        "! application/x-rtp,media=video,encoding-name=VP8,payload=%d,clock-rate=90000 "
        "! webrtc.",
        g_camera.stun_url[0] != '\0' ? "stun-server=" : "", g_camera.stun_url, source, o->fps * 2,
        pt, pt);
    g_free(source);
    GError *error = NULL;
    s->pipeline = gst_parse_launch(description, &error);
    g_free(description);
    if (s->pipeline == NULL || error != NULL) {
        say(stderr, "viewer %s: cannot build the pipeline: %s", s->viewer,
            error != NULL ? error->message : "unknown error");
        g_clear_error(&error);
        gst_sdp_message_free(sdp);
        session_unref(s);
        return NULL;
    }
    s->webrtc = gst_bin_get_by_name(GST_BIN(s->pipeline), "webrtc");

    int turn = (client != NULL && !o->no_turn) ? add_turn_servers(client, s->webrtc) : 0;

    g_signal_connect_data(s->webrtc, "on-ice-candidate", G_CALLBACK(on_local_candidate),
                          session_ref(s), session_unref_closure, (GConnectFlags)0);
    g_signal_connect_data(s->webrtc, "notify::ice-connection-state", G_CALLBACK(on_ice_state),
                          session_ref(s), session_unref_closure, (GConnectFlags)0);
    GstElement *rtpbin = gst_bin_get_by_name(GST_BIN(s->webrtc), "rtpbin");
    if (rtpbin != NULL) {
        g_signal_connect_data(rtpbin, "on-timeout", G_CALLBACK(on_source_timeout), session_ref(s),
                              session_unref_closure, (GConnectFlags)0);
        g_signal_connect_data(rtpbin, "on-bye-ssrc", G_CALLBACK(on_source_bye), session_ref(s),
                              session_unref_closure, (GConnectFlags)0);
        gst_object_unref(rtpbin);
    } else {
        say(stderr, "viewer %s: no rtpbin inside webrtcbin: a vanished viewer is noticed only "
                    "through ICE", s->viewer);
    }
    say(stdout, "viewer %s: offer #%lu (%zu bytes, VP8 as payload type %d, %d TURN URI%s%s%s)",
        s->viewer, number, m->sdp_len, pt, turn, turn == 1 ? "" : "s",
        g_camera.stun_url[0] != '\0' ? ", STUN " : "", g_camera.stun_url);

    if (gst_element_set_state(s->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        say(stderr, "viewer %s: the pipeline does not start", s->viewer);
        gst_sdp_message_free(sdp);
        session_close(s, CLOSE_PIPELINE_ERROR);
        return s; /* reaped (and set to NULL) by the main loop */
    }
    GstWebRTCSessionDescription *offer = gst_webrtc_session_description_new(GST_WEBRTC_SDP_TYPE_OFFER, sdp);
    GstPromise *promise = gst_promise_new_with_change_func(on_offer_set, session_ref(s), session_unref);
    g_signal_emit_by_name(s->webrtc, "set-remote-description", offer, promise);
    gst_webrtc_session_description_free(offer);
    return s;
}

/* Removes `s` from the table (lock held); returns 1 if it was there. */
static int table_remove_locked(struct session *s) {
    for (int i = 0; i < MAX_VIEWERS_LIMIT; i++) {
        if (g_camera.sessions[i] == s) {
            g_camera.sessions[i] = NULL;
            return 1;
        }
    }
    return 0;
}

static struct session *table_find_locked(const char *viewer) {
    for (int i = 0; i < MAX_VIEWERS_LIMIT; i++) {
        struct session *s = g_camera.sessions[i];
        if (s != NULL && strcmp(s->viewer, viewer) == 0) {
            return s;
        }
    }
    return NULL;
}

static long table_count_locked(void) {
    long n = 0;
    for (int i = 0; i < MAX_VIEWERS_LIMIT; i++) {
        n += g_camera.sessions[i] != NULL;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Library callbacks (dispatcher thread).                                   */

static void on_offer(const kvs_message *m) {
    if (m->sdp == NULL || m->sdp_type == NULL || strcmp(m->sdp_type, "offer") != 0) {
        say(stderr, "viewer %s: an offer without parsable SDP; ignored", m->sender_client_id);
        return;
    }
    pthread_mutex_lock(&g_camera.lock);
    if (g_camera.stopping) {
        pthread_mutex_unlock(&g_camera.lock);
        return;
    }
    /* A new offer from a known viewer replaces its session: the old one is
     * marked (the main loop stops it; it keeps its table slot until then, so
     * the limit below counts it). */
    struct session *old = table_find_locked(m->sender_client_id);
    if (old != NULL) {
        session_close(old, CLOSE_REPLACED);
    }
    long live = table_count_locked();
    int slot = -1;
    for (int i = 0; i < MAX_VIEWERS_LIMIT && slot < 0; i++) {
        if (g_camera.sessions[i] == NULL) {
            slot = i;
        }
    }
    if (live >= g_camera.opt.max_viewers || slot < 0) {
        unsigned long refused = ++g_camera.refused;
        pthread_mutex_unlock(&g_camera.lock);
        say(stderr, "viewer %s: refused: %ld sessions already (--max-viewers %ld; %lu refused)",
            m->sender_client_id, live, g_camera.opt.max_viewers, refused);
        return;
    }
    unsigned long number = ++g_camera.sessions_made;
    /* Building the pipeline under the lock keeps the slot ours; it does not
     * wait for other threads (set_state PLAYING on a live source is async). */
    struct session *s = session_start(g_camera.client, m, number);
    if (s != NULL) {
        g_camera.sessions[slot] = s;
    }
    pthread_mutex_unlock(&g_camera.lock);
}

static void on_remote_candidate(const kvs_message *m) {
    if (m->candidate == NULL) {
        return;
    }
    pthread_mutex_lock(&g_camera.lock);
    struct session *s = table_find_locked(m->sender_client_id);
    if (s != NULL && g_atomic_int_get(&s->close_reason) == OPEN) {
        session_ref(s);
    } else {
        s = NULL;
    }
    pthread_mutex_unlock(&g_camera.lock);
    if (s == NULL) {
        say(stderr, "viewer %s: candidate for no open session; ignored", m->sender_client_id);
        return;
    }
    if (m->candidate[0] != '\0') { /* "" is end-of-candidates */
        guint mline = m->sdp_mline_index >= 0 ? (guint)m->sdp_mline_index : 0;
        if (m->sdp_mline_index < 0 && m->sdp_mid != NULL) {
            for (int i = 0; i < s->mid_count; i++) {
                if (strcmp(s->mids[i], m->sdp_mid) == 0) {
                    mline = (guint)i;
                }
            }
        }
        g_signal_emit_by_name(s->webrtc, "add-ice-candidate", mline, m->candidate);
    }
    session_unref(s);
}

static void on_message(void *userdata, const kvs_message *m) {
    (void)userdata;
    switch (m->message_type) {
    case KVS_MESSAGE_TYPE_SDP_OFFER:
        if (m->sender_client_id != NULL) {
            on_offer(m);
        }
        break;
    case KVS_MESSAGE_TYPE_ICE_CANDIDATE:
        if (m->sender_client_id != NULL) {
            on_remote_candidate(m);
        }
        break;
    case KVS_MESSAGE_TYPE_GO_AWAY:
        say(stdout, "GO_AWAY from the service (the library moves to a new connection; media "
                    "sessions go on)");
        break;
    case KVS_MESSAGE_TYPE_RECONNECT_ICE_SERVER:
        say(stdout, "RECONNECT_ICE_SERVER (new viewers get the refreshed TURN servers)");
        break;
    case KVS_MESSAGE_TYPE_STORAGE_SESSION_JOINED:
        say(stdout, "storage session joined; awaiting its offer");
        break;
    case KVS_MESSAGE_TYPE_STORAGE_OFFER_RECEIVED:
        /* The offer itself came just before, as an SDP_OFFER from the
         * session's client id, and got a session like a viewer's. */
        say(stdout, "storage session's offer received");
        break;
    default:
        break;
    }
}

static void on_status(void *userdata, const kvs_status *st) {
    (void)userdata;
    say(stderr, "status (%s): %s, code %u: %s",
        st->origin == KVS_STATUS_ORIGIN_SERVICE ? "service" : "local",
        st->error_type != NULL ? st->error_type : "(no type)", (unsigned)st->status_code,
        st->description != NULL ? st->description : "(no description)");
}

/* A new TURN server list (control-plane mode): printed; sessions made from
 * now on use it. */
static void on_ice_servers(void *userdata, size_t count) {
    (void)userdata;
    kvs_client *client = current_client();
    if (client != NULL) {
        (void)print_ice_servers(client, count);
    }
}

/* free_userdata: the userdata is &g_camera (static); this only records that
 * kvs_client_free ran it, once, on its own thread. */
static pthread_mutex_t g_free_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_free_calls = 0;
static pthread_t g_free_thread;

static void note_freed(void *userdata) {
    (void)userdata;
    pthread_mutex_lock(&g_free_lock);
    g_free_calls++;
    g_free_thread = pthread_self();
    pthread_mutex_unlock(&g_free_lock);
}

static void on_state(void *userdata, uint32_t state, const char *reason) {
    (void)userdata;
    say(stdout, "signaling state %s (%s)", state_name(state), reason != NULL ? reason : "");
}

/* ------------------------------------------------------------------------ */
/* Main loop (main thread): reaping, timeouts, reconnects.                  */

/* Stops a session that left the table: joins its threads (set_state NULL),
 * drops the handlers' references, then the table's. Main thread only. */
static void session_stop(struct session *s) {
    gst_element_set_state(s->pipeline, GST_STATE_NULL);
    g_signal_handlers_disconnect_matched(s->webrtc, G_SIGNAL_MATCH_DATA, 0, 0, NULL, NULL, s);
    GstElement *rtpbin = gst_bin_get_by_name(GST_BIN(s->webrtc), "rtpbin");
    if (rtpbin != NULL) {
        g_signal_handlers_disconnect_matched(rtpbin, G_SIGNAL_MATCH_DATA, 0, 0, NULL, NULL, s);
        gst_object_unref(rtpbin);
    }
    say(stdout, "viewer %s: closed (%s) after %.1f s", s->viewer,
        close_reason_text(g_atomic_int_get(&s->close_reason)), ms_since_offer(s) / 1000.0);
    session_unref(s);
}

/* Errors on a session's bus close it. */
static void read_bus(struct session *s) {
    GstBus *bus = gst_element_get_bus(s->pipeline);
    GstMessage *msg;
    while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) != NULL) {
        GError *error = NULL;
        gst_message_parse_error(msg, &error, NULL);
        say(stderr, "viewer %s: pipeline error from %s: %s", s->viewer,
            GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)), error != NULL ? error->message : "?");
        g_clear_error(&error);
        gst_message_unref(msg);
        session_close(s, CLOSE_PIPELINE_ERROR);
    }
    gst_object_unref(bus);
}

static double g_start_s;
static double g_next_reconnect_s;

static double mono_s(void) {
    return (double)g_get_monotonic_time() / 1e6;
}

static gboolean tick(gpointer data) {
    (void)data;
    struct session *done[MAX_VIEWERS_LIMIT];
    int ndone = 0;
    pthread_mutex_lock(&g_camera.lock);
    for (int i = 0; i < MAX_VIEWERS_LIMIT; i++) {
        struct session *s = g_camera.sessions[i];
        if (s == NULL) {
            continue;
        }
        read_bus(s);
        int state = g_atomic_int_get(&s->ice_state);
        bool connected = state == GST_WEBRTC_ICE_CONNECTION_STATE_CONNECTED ||
                         state == GST_WEBRTC_ICE_CONNECTION_STATE_COMPLETED ||
                         g_atomic_int_get(&s->connected_logged);
        if (!connected && ms_since_offer(s) > g_camera.opt.connect_timeout_s * 1000.0) {
            session_close(s, CLOSE_CONNECT_TIMEOUT);
        }
        if (g_atomic_int_get(&s->close_reason) != OPEN) {
            table_remove_locked(s);
            done[ndone++] = s;
        }
    }
    pthread_mutex_unlock(&g_camera.lock);
    for (int i = 0; i < ndone; i++) {
        session_stop(done[i]);
    }

    double now = mono_s();
    if (g_camera.opt.timeout_s > 0 && now - g_start_s >= g_camera.opt.timeout_s) {
        say(stdout, "--timeout-s %.3g elapsed", g_camera.opt.timeout_s);
        g_main_loop_quit(g_camera.loop);
        return G_SOURCE_REMOVE;
    }
    kvs_client *client = current_client();
    if (client != NULL && kvs_client_state(client) == KVS_STATE_DISCONNECTED &&
        now >= g_next_reconnect_s) {
        say(stdout, "signaling lost; reconnecting");
        kvs_result rc = kvs_client_connect(client);
        if (rc != KVS_OK && rc != KVS_ERR_ALREADY_CONNECTED) {
            report_failure("kvs_client_connect (reconnect)", rc);
            g_next_reconnect_s = mono_s() + 1.0;
        }
    }
    return G_SOURCE_CONTINUE;
}

static gboolean on_unix_signal(gpointer data) {
    (void)data;
    say(stdout, "signal received; stopping");
    g_main_loop_quit(g_camera.loop);
    return G_SOURCE_REMOVE;
}

/* --device: one capture pipeline shared by every viewer through intervideo. */
static int start_capture(const char *device) {
    gchar *description = g_strdup_printf("v4l2src device=%s ! videoconvert "
                                         "! intervideosink channel=" INTER_CHANNEL,
                                         device);
    GError *error = NULL;
    g_camera.capture = gst_parse_launch(description, &error);
    g_free(description);
    if (g_camera.capture == NULL || error != NULL) {
        say(stderr, "cannot build the capture pipeline: %s", error != NULL ? error->message : "?");
        g_clear_error(&error);
        return -1;
    }
    if (gst_element_set_state(g_camera.capture, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        say(stderr, "cannot start capturing from %s", device);
        return -1;
    }
    say(stdout, "capturing from %s", device);
    return 0;
}

/* Makes the process's DTLS certificate now rather than on the first viewer's
 * offer: GStreamer's dtlsdec generates one (RSA, hundreds of ms here) the
 * first time an element without a "pem" asks for it and shares it with every
 * later one. Also loads the plugins a session needs. */
static void warm_up(void) {
    gint64 t0 = g_get_monotonic_time();
    GstElement *dtls = gst_element_factory_make("dtlsdec", NULL);
    if (dtls == NULL) {
        return;
    }
    gchar *pem = NULL;
    g_object_get(dtls, "pem", &pem, NULL);
    g_free(pem);
    gst_object_unref(dtls);
    static const char *const elements[] = {"webrtcbin", "vp8enc", "rtpvp8pay", "videotestsrc"};
    for (size_t i = 0; i < sizeof elements / sizeof elements[0]; i++) {
        GstElement *e = gst_element_factory_make(elements[i], NULL);
        if (e != NULL) {
            gst_object_unref(e);
        }
    }
    say(stdout, "DTLS certificate and plugins ready in %.1f ms",
        (double)(g_get_monotonic_time() - t0) / 1e3);
}

/* ------------------------------------------------------------------------ */
/* Arguments.                                                               */

static void usage(FILE *out) {
    fprintf(out,
            "usage: camera --endpoint URL --channel-arn ARN [options]\n"
            "       camera --channel-name NAME [--control-plane URL] [--ca-bundle PATH] ...\n"
            "data-plane mode (no credentials):\n"
            "  --endpoint URL      ws://host:port (or env KVS_ENDPOINT)\n"
            "  --channel-arn ARN   channel ARN (or env KVS_CHANNEL_ARN)\n"
            AWS_OPTIONS_USAGE
            "video:\n"
            "  --device PATH       capture from a V4L2 device (default: videotestsrc)\n"
            "  --pattern NAME      videotestsrc pattern (default smpte)\n"
            "  --width N --height N --fps N  (default 640x480 at 30)\n"
            "  --max-viewers N     sessions at once, 1-%d (default %d)\n"
            "  --connect-timeout-s S  close a session whose ICE has not connected (default 20)\n"
            "  --no-turn           do not use the TURN servers of kvs_client_get_ice_servers\n"
            "  --stun URL          stun://host:port (default: the region's, real service only)\n"
            "  --timeout-s S       stop after S seconds (default: until SIGINT/SIGTERM)\n"
            "WebRTC ingestion (control-plane mode only):\n"
            "  --media-storage auto|on  join the channel's storage session after each connect:\n"
            "                      auto when the channel has storage enabled, on always\n"
            "                      (default: off)\n",
            MAX_VIEWERS_LIMIT, DEFAULT_MAX_VIEWERS);
}

static int parse_number(const char *text, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Video options: 1 if consumed, 0 if not ours, -1 on a bad value. */
static int parse_video_option(struct options *o, const char *arg, const char *value) {
    double v = 0;
    struct {
        const char *name;
        double lo, hi;
    } numbers[] = {{"--width", 16, 4096}, {"--height", 16, 4096}, {"--fps", 1, 120},
                   {"--max-viewers", 1, MAX_VIEWERS_LIMIT}, {"--connect-timeout-s", 1, 3600},
                   {"--timeout-s", 0, 1e9}};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (strcmp(arg, numbers[i].name) != 0) {
            continue;
        }
        if (parse_number(value, numbers[i].lo, numbers[i].hi, &v) != 0) {
            fprintf(stderr, "camera: %s expects a number from %g to %g, got %s\n", arg,
                    numbers[i].lo, numbers[i].hi, value);
            return -1;
        }
        switch (i) {
        case 0: o->width = (int)v; break;
        case 1: o->height = (int)v; break;
        case 2: o->fps = (int)v; break;
        case 3: o->max_viewers = (long)v; break;
        case 4: o->connect_timeout_s = v; break;
        default: o->timeout_s = v; break;
        }
        return 1;
    }
    if (strcmp(arg, "--device") == 0) {
        o->device = value;
    } else if (strcmp(arg, "--pattern") == 0) {
        o->pattern = value;
    } else if (strcmp(arg, "--media-storage") == 0) {
        if (strcmp(value, "auto") == 0) {
            o->media_storage = KVS_MEDIA_STORAGE_AUTO;
        } else if (strcmp(value, "on") == 0) {
            o->media_storage = KVS_MEDIA_STORAGE_ON;
        } else {
            fprintf(stderr, "camera: --media-storage expects auto or on, got %s\n", value);
            return -1;
        }
    } else if (strcmp(arg, "--stun") == 0) {
        if (strncmp(value, "stun://", 7) != 0) {
            fprintf(stderr, "camera: --stun expects stun://host:port, got %s\n", value);
            return -1;
        }
        o->stun = value;
    } else {
        return 0;
    }
    /* GStreamer parses these inside a pipeline description: keep them plain. */
    for (const char *p = value; *p != '\0'; p++) {
        if (!g_ascii_isalnum(*p) && strchr("/._-:", *p) == NULL) {
            fprintf(stderr, "camera: %s: unexpected character '%c' in %s\n", arg, *p, value);
            return -1;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    const char *endpoint = getenv("KVS_ENDPOINT");
    const char *channel_arn = getenv("KVS_CHANNEL_ARN");
    struct aws_options aws;
    aws_options_init(&aws);
    char arn_region[64];
    struct options *o = &g_camera.opt;
    o->pattern = "smpte";
    o->width = 640;
    o->height = 480;
    o->fps = 30;
    o->max_viewers = DEFAULT_MAX_VIEWERS;
    o->connect_timeout_s = 20;
    pthread_mutex_init(&g_camera.lock, NULL);

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
        if (strcmp(arg, "--no-turn") == 0) {
            o->no_turn = true;
            continue;
        }
        if (value == NULL) {
            fprintf(stderr, "camera: %s needs a value\n", arg);
            usage(stderr);
            return 2;
        }
        int used = aws_parse_option(&aws, arg, value);
        if (used == 0) {
            used = parse_video_option(o, arg, value);
        }
        if (used < 0) {
            return 2;
        }
        if (used == 0) {
            if (strcmp(arg, "--endpoint") == 0) {
                endpoint = value;
            } else if (strcmp(arg, "--channel-arn") == 0) {
                channel_arn = value;
            } else {
                fprintf(stderr, "camera: unknown argument %s\n", arg);
                usage(stderr);
                return 2;
            }
        }
        i++;
    }
    const bool control_plane = aws_mode(&aws);
    if (control_plane ? (aws.channel_name == NULL && channel_arn == NULL)
                      : (endpoint == NULL || channel_arn == NULL)) {
        fprintf(stderr, "camera: --endpoint and --channel-arn, or --channel-name, are required\n");
        usage(stderr);
        return 2;
    }
    if (o->media_storage != KVS_MEDIA_STORAGE_OFF && !control_plane) {
        fprintf(stderr, "camera: --media-storage needs the control-plane mode (--channel-name "
                        "or --control-plane)\n");
        return 2;
    }

    gst_init(NULL, NULL);
    static const char *const needed[] = {"webrtcbin", "vp8enc", "rtpvp8pay", "videotestsrc",
                                         "nicesrc", "dtlssrtpenc", "intervideosrc"};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        GstElementFactory *factory = gst_element_factory_find(needed[i]);
        if (factory == NULL) {
            say(stderr, "GStreamer element %s is missing (Debian: gstreamer1.0-plugins-bad, "
                        "-plugins-good, -plugins-base, gstreamer1.0-nice)",
                needed[i]);
            return 1;
        }
        gst_object_unref(factory);
    }

    say(stdout, "%s; GStreamer %s", kvs_version(), gst_version_string());
    if (control_plane) {
        aws_resolve_region(&aws, aws.channel_name != NULL ? NULL : channel_arn, arn_region,
                           sizeof arn_region);
        if (aws_describe(&aws, channel_arn) != 0) {
            return 2;
        }
        g_camera.real_service = aws.control_plane_url == NULL;
        print_stun_url(&aws);
    } else {
        say(stdout, "mode: data plane only, %s (no control plane, no credentials)", endpoint);
    }
    /* webrtcbin wants stun://host:port; kvs_stun_url gives stun:host:port. */
    if (o->stun != NULL) {
        g_strlcpy(g_camera.stun_url, o->stun, sizeof g_camera.stun_url);
    } else if (g_camera.real_service) {
        char url[256];
        size_t len = 0;
        if (kvs_stun_url(aws.region, aws.fips, aws.dual_stack, url, sizeof url, &len) == KVS_OK &&
            strncmp(url, "stun:", 5) == 0) {
            snprintf(g_camera.stun_url, sizeof g_camera.stun_url, "stun://%s", url + 5);
        }
    }
    say(stdout, "video: %s, %dx%d at %d fps, VP8; up to %ld viewers; STUN %s; TURN %s",
        o->device != NULL ? o->device : o->pattern, o->width, o->height, o->fps, o->max_viewers,
        g_camera.stun_url[0] != '\0' ? g_camera.stun_url : "none",
        o->no_turn ? "off" : "from kvs_client_get_ice_servers");
    warm_up();
    if (o->device != NULL && start_capture(o->device) != 0) {
        return 1;
    }

    kvs_client_config config = kvs_client_config_default();
    config.role = KVS_ROLE_MASTER;
    config.channel_arn = channel_arn;
    config.endpoint = endpoint;
    if (control_plane) {
        aws_apply(&aws, &config, channel_arn, credentials_from_environment);
        config.media_storage = o->media_storage;
        if (o->media_storage != KVS_MEDIA_STORAGE_OFF) {
            say(stdout, "media storage: %s (JoinStorageSession after each connect%s)",
                o->media_storage == KVS_MEDIA_STORAGE_ON ? "on" : "auto",
                o->media_storage == KVS_MEDIA_STORAGE_AUTO ? " when the channel has it enabled"
                                                           : "");
        }
    }
    /* Candidates that overtake their offer wait in the library. */
    config.buffer_early_candidates = true;
    config.on_message = on_message;
    config.on_status = on_status;
    config.on_state = on_state;
    config.on_ice_servers = on_ice_servers;
    config.userdata = &g_camera;
    config.free_userdata = note_freed;

    int exit_code = 0;
    kvs_client *client = NULL;
    kvs_result rc = kvs_client_new(&config, &client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_new", rc);
        return 1;
    }
    pthread_mutex_lock(&g_camera.lock);
    g_camera.client = client;
    pthread_mutex_unlock(&g_camera.lock);

    gint64 t0 = g_get_monotonic_time();
    rc = kvs_client_connect(client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_connect", rc);
        exit_code = 1;
    } else {
        say(stdout, "signaling connected in %.1f ms", (double)(g_get_monotonic_time() - t0) / 1e3);
        say(stdout, "connected");
        g_camera.loop = g_main_loop_new(NULL, FALSE);
        g_start_s = mono_s();
        g_timeout_add(200, tick, NULL);
        g_unix_signal_add(SIGINT, on_unix_signal, NULL);
        g_unix_signal_add(SIGTERM, on_unix_signal, NULL);
        g_main_loop_run(g_camera.loop);
        g_main_loop_unref(g_camera.loop);
    }

    /* Stop every session before the client goes: no GStreamer thread may
     * call into it afterwards. */
    struct session *left[MAX_VIEWERS_LIMIT];
    int nleft = 0;
    pthread_mutex_lock(&g_camera.lock);
    g_camera.stopping = true;
    for (int i = 0; i < MAX_VIEWERS_LIMIT; i++) {
        if (g_camera.sessions[i] != NULL) {
            session_close(g_camera.sessions[i], CLOSE_EXIT);
            left[nleft++] = g_camera.sessions[i];
            g_camera.sessions[i] = NULL;
        }
    }
    unsigned long made = g_camera.sessions_made, refused = g_camera.refused;
    pthread_mutex_unlock(&g_camera.lock);
    for (int i = 0; i < nleft; i++) {
        session_stop(left[i]);
    }
    kvs_client_metrics metrics;
    int have_metrics = get_metrics(client, &metrics) == 0;
    pthread_mutex_lock(&g_camera.lock);
    g_camera.client = NULL;
    pthread_mutex_unlock(&g_camera.lock);
    rc = kvs_client_free(client);
    if (rc != KVS_OK) {
        report_failure("kvs_client_free", rc);
        exit_code = 1;
    } else if (check_freed_on_return(&g_free_lock, &g_free_calls, &g_free_thread) < 0) {
        exit_code = 1;
    }
    if (have_metrics) {
        print_metrics(&metrics);
    }
    if (g_camera.capture != NULL) {
        gst_element_set_state(g_camera.capture, GST_STATE_NULL);
        gst_object_unref(g_camera.capture);
    }
    rc = kvs_shutdown(2000);
    if (rc != KVS_OK) {
        report_failure("kvs_shutdown", rc);
        exit_code = 1;
    }
    say(stdout, "totals: %lu sessions, %lu refused", made, refused);
    say(stdout, "stopped (exit %d)", exit_code);
    return exit_code;
}
