/*
 * relay.c: the C-ABI side of the relay, throughput and connect benchmarks.
 * One process holds a master and a viewer client of libkvs_signaling (both
 * unpaced), connected through a running emulator, and prints one JSON line.
 *
 *   relay --endpoint URL --arn ARN --data DIR --mode latency [--rounds R] [--warmup W]
 *       viewer sends the SDP offer of DIR/offer.sdp, the master answers from
 *       its callback with DIR/answer.sdp; samples of offer -> answer in us.
 *   relay --endpoint URL --arn ARN --data DIR --mode throughput [--messages N]
 *       the viewer pushes N ICE candidates (DIR/candidate.txt) as fast as the
 *       queue takes them; seconds until the master has received all N.
 *   relay --endpoint URL --arn ARN --mode connect [--rounds R]
 *       R times: kvs_client_new + kvs_client_connect (timed), then free.
 *   relay --mode connect-cp --control-plane URL --ca PEM --channel-name NAME
 *         --access-key ID --secret-key KEY --cache-file FILE
 *         --phase cold|cold-linger|populate|warm|warm-linger [--rounds R]
 *       R times: a master through the control plane (use_control_plane),
 *       connect timed, then free. cold: no endpoint cache; populate, warm:
 *       endpoint cache in FILE; -linger: stay connected 300 ms first (so that
 *       the background GetIceServerConfig completes).
 *
 * Everything stops by itself (every wait has a deadline).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvs_signaling.h"

#define WAIT_S 20

struct peer {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    kvs_client *client; /* the master's own client, for answering */
    const char *answer;
    unsigned long offers;
    unsigned long answers;
    unsigned long candidates;
    unsigned long send_failures;
    unsigned long expected; /* throughput: signal when candidates reach it */
    struct timespec last_at;
};

static struct timespec now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static double us_between(struct timespec a, struct timespec b) {
    return (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
}

static struct timespec deadline_in(int seconds) {
    struct timespec ts = now();
    ts.tv_sec += seconds;
    return ts;
}

static void peer_init(struct peer *p) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->changed, &attr);
    pthread_condattr_destroy(&attr);
}

static void on_master_message(void *userdata, const kvs_message *m) {
    struct peer *p = (struct peer *)userdata;
    if (m->message_type == KVS_MESSAGE_TYPE_SDP_OFFER) {
        kvs_result rc = kvs_send_sdp_answer(p->client, m->sender_client_id, p->answer, NULL, NULL,
                                            0, NULL);
        pthread_mutex_lock(&p->lock);
        p->offers++;
        if (rc != KVS_OK) {
            p->send_failures++;
        }
        pthread_mutex_unlock(&p->lock);
    } else if (m->message_type == KVS_MESSAGE_TYPE_ICE_CANDIDATE) {
        pthread_mutex_lock(&p->lock);
        p->candidates++;
        if (p->candidates == p->expected) {
            p->last_at = now();
            pthread_cond_broadcast(&p->changed);
        }
        pthread_mutex_unlock(&p->lock);
    }
}

static void on_viewer_message(void *userdata, const kvs_message *m) {
    struct peer *p = (struct peer *)userdata;
    if (m->message_type == KVS_MESSAGE_TYPE_SDP_ANSWER) {
        struct timespec at = now();
        pthread_mutex_lock(&p->lock);
        p->answers++;
        p->last_at = at;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
    }
}

static void on_status(void *userdata, const kvs_status *s) {
    struct peer *p = (struct peer *)userdata;
    pthread_mutex_lock(&p->lock);
    p->send_failures++;
    pthread_mutex_unlock(&p->lock);
    fprintf(stderr, "relay: status %s: %s\n", s->error_type ? s->error_type : "?",
            s->description ? s->description : "");
}

static char *read_text(const char *dir, const char *name, int crlf) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "relay: cannot open %s: %s\n", path, strerror(errno));
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

static kvs_client *make_client(const char *endpoint, const char *arn, const char *client_id,
                               struct peer *p, kvs_message_callback on_message) {
    kvs_client_config config = kvs_client_config_default();
    config.role = client_id ? KVS_ROLE_VIEWER : KVS_ROLE_MASTER;
    config.channel_arn = arn;
    config.client_id = client_id;
    config.endpoint = endpoint;
    config.sdp_per_second = KVS_UNPACED;
    config.ice_per_second = KVS_UNPACED;
    config.send_queue_capacity = 4096;
    config.on_message = on_message;
    config.on_status = on_status;
    config.userdata = p;
    kvs_client *client = NULL;
    kvs_result rc = kvs_client_new(&config, &client);
    if (rc == KVS_OK) {
        rc = kvs_client_connect(client);
    }
    if (rc != KVS_OK) {
        fprintf(stderr, "relay: %s client: %s: %s\n", client_id ? "viewer" : "master",
                kvs_result_str(rc), kvs_last_error_message());
        exit(1);
    }
    return client;
}

static int mode_latency(kvs_client *viewer, struct peer *vp, const char *offer, long rounds,
                        long warmup) {
    double *samples = (double *)calloc((size_t)rounds, sizeof *samples);
    for (long r = 0; r < warmup + rounds; r++) {
        pthread_mutex_lock(&vp->lock);
        unsigned long before = vp->answers;
        pthread_mutex_unlock(&vp->lock);
        struct timespec sent = now();
        kvs_result rc = kvs_send_sdp_offer(viewer, NULL, offer, NULL, NULL, 0, NULL);
        if (rc != KVS_OK) {
            fprintf(stderr, "relay: offer: %s\n", kvs_result_str(rc));
            return 1;
        }
        struct timespec deadline = deadline_in(WAIT_S);
        pthread_mutex_lock(&vp->lock);
        while (vp->answers == before) {
            if (pthread_cond_timedwait(&vp->changed, &vp->lock, &deadline) == ETIMEDOUT) {
                pthread_mutex_unlock(&vp->lock);
                fprintf(stderr, "relay: no answer to round %ld\n", r);
                return 1;
            }
        }
        struct timespec at = vp->last_at;
        pthread_mutex_unlock(&vp->lock);
        if (r >= warmup) {
            samples[r - warmup] = us_between(sent, at);
        }
    }
    printf("{\"bench\":\"relay\",\"impl\":\"c-abi\",\"samples_us\":[");
    for (long i = 0; i < rounds; i++) {
        printf("%s%.1f", i ? "," : "", samples[i]);
    }
    printf("]}\n");
    free(samples);
    return 0;
}

static int mode_throughput(kvs_client *viewer, struct peer *mp, const char *candidate,
                           long messages) {
    kvs_ice_candidate ice;
    ice.candidate = candidate;
    ice.sdp_mid = "0";
    ice.sdp_mline_index = 0;
    ice.username_fragment = NULL;
    pthread_mutex_lock(&mp->lock);
    mp->expected = (unsigned long)messages;
    pthread_mutex_unlock(&mp->lock);
    unsigned long full = 0;
    struct timespec started = now();
    struct timespec progress = started;
    for (long i = 0; i < messages;) {
        kvs_result rc = kvs_send_ice_candidate(viewer, NULL, &ice, NULL, NULL, 0, NULL);
        if (rc == KVS_OK) {
            i++;
            if ((i & 1023) == 0) {
                progress = now();
            }
        } else if (rc == KVS_ERR_QUEUE_FULL) {
            full++;
            if (us_between(progress, now()) > WAIT_S * 1e6) {
                fprintf(stderr, "relay: the send queue stayed full for %d s\n", WAIT_S);
                return 1;
            }
            struct timespec pause = {0, 50000};
            nanosleep(&pause, NULL);
        } else {
            fprintf(stderr, "relay: candidate: %s\n", kvs_result_str(rc));
            return 1;
        }
    }
    double sent_s = us_between(started, now()) / 1e6;
    struct timespec deadline = deadline_in(WAIT_S);
    pthread_mutex_lock(&mp->lock);
    while (mp->candidates < (unsigned long)messages) {
        if (pthread_cond_timedwait(&mp->changed, &mp->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    unsigned long received = mp->candidates;
    struct timespec last = mp->last_at;
    pthread_mutex_unlock(&mp->lock);
    if (received < (unsigned long)messages) {
        fprintf(stderr, "relay: master received %lu of %ld\n", received, messages);
        return 1;
    }
    double seconds = us_between(started, last) / 1e6;
    printf("{\"bench\":\"throughput\",\"impl\":\"c-abi\",\"messages\":%ld,\"seconds\":%.6f,"
           "\"per_second\":%.1f,\"enqueue_seconds\":%.6f,\"queue_full_retries\":%lu}\n",
           messages, seconds, (double)messages / seconds, sent_s, full);
    return 0;
}

static int mode_connect(const char *endpoint, const char *arn, long rounds) {
    printf("{\"bench\":\"connect\",\"impl\":\"c-abi\",\"samples_ms\":[");
    for (long r = 0; r < rounds; r++) {
        kvs_client_config config = kvs_client_config_default();
        config.role = KVS_ROLE_MASTER;
        config.channel_arn = arn;
        config.endpoint = endpoint;
        kvs_client *client = NULL;
        struct timespec t0 = now();
        kvs_result rc = kvs_client_new(&config, &client);
        if (rc == KVS_OK) {
            rc = kvs_client_connect(client);
        }
        double ms = us_between(t0, now()) / 1e3;
        if (rc != KVS_OK) {
            fprintf(stderr, "relay: connect: %s: %s\n", kvs_result_str(rc), kvs_last_error_message());
            return 1;
        }
        kvs_client_free(client);
        printf("%s%.3f", r ? "," : "", ms);
    }
    printf("]}\n");
    return 0;
}

struct cp_options {
    const char *control_plane, *ca, *channel_name, *access_key, *secret_key, *cache_file, *phase;
};

static int mode_connect_cp(const struct cp_options *o, long rounds) {
    int cached = strncmp(o->phase, "cold", 4) != 0;
    int linger = strstr(o->phase, "linger") != NULL;
    printf("{\"bench\":\"connect\",\"impl\":\"c-abi\",\"phase\":\"%s\",\"samples_ms\":[", o->phase);
    for (long r = 0; r < rounds; r++) {
        kvs_client_config config = kvs_client_config_default();
        config.role = KVS_ROLE_MASTER;
        config.use_control_plane = true;
        config.channel_name = o->channel_name;
        config.region = "us-west-2";
        config.control_plane_url = o->control_plane;
        config.ca_bundle_path = o->ca;
        config.access_key_id = o->access_key;
        config.secret_access_key = o->secret_key;
        config.endpoint_cache_path = cached ? o->cache_file : NULL;
        kvs_client *client = NULL;
        struct timespec t0 = now();
        kvs_result rc = kvs_client_new(&config, &client);
        if (rc == KVS_OK) {
            rc = kvs_client_connect(client);
        }
        double ms = us_between(t0, now()) / 1e3;
        if (rc != KVS_OK) {
            fprintf(stderr, "relay: connect-cp: %s: %s\n", kvs_result_str(rc), kvs_last_error_message());
            return 1;
        }
        if (linger) {
            struct timespec pause = {0, 300000000L};
            nanosleep(&pause, NULL);
        }
        kvs_client_free(client);
        printf("%s%.3f", r ? "," : "", ms);
    }
    printf("]}\n");
    return 0;
}

int main(int argc, char **argv) {
    const char *endpoint = NULL, *arn = NULL, *data = "bench/data", *mode = "latency";
    struct cp_options cp = {NULL, NULL, NULL, NULL, NULL, NULL, "cold"};
    long rounds = 200, warmup = 20, messages = 20000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--endpoint") == 0) {
            endpoint = argv[i + 1];
        } else if (strcmp(argv[i], "--arn") == 0) {
            arn = argv[i + 1];
        } else if (strcmp(argv[i], "--data") == 0) {
            data = argv[i + 1];
        } else if (strcmp(argv[i], "--mode") == 0) {
            mode = argv[i + 1];
        } else if (strcmp(argv[i], "--rounds") == 0) {
            rounds = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--warmup") == 0) {
            warmup = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--messages") == 0) {
            messages = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--control-plane") == 0) {
            cp.control_plane = argv[i + 1];
        } else if (strcmp(argv[i], "--ca") == 0) {
            cp.ca = argv[i + 1];
        } else if (strcmp(argv[i], "--channel-name") == 0) {
            cp.channel_name = argv[i + 1];
        } else if (strcmp(argv[i], "--access-key") == 0) {
            cp.access_key = argv[i + 1];
        } else if (strcmp(argv[i], "--secret-key") == 0) {
            cp.secret_key = argv[i + 1];
        } else if (strcmp(argv[i], "--cache-file") == 0) {
            cp.cache_file = argv[i + 1];
        } else if (strcmp(argv[i], "--phase") == 0) {
            cp.phase = argv[i + 1];
        } else {
            fprintf(stderr, "relay: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(mode, "connect-cp") == 0) {
        if (cp.control_plane == NULL || cp.ca == NULL || cp.channel_name == NULL ||
            cp.access_key == NULL || cp.secret_key == NULL || cp.cache_file == NULL || rounds < 1) {
            fprintf(stderr, "relay: connect-cp needs --control-plane --ca --channel-name "
                            "--access-key --secret-key --cache-file\n");
            return 2;
        }
        int status = mode_connect_cp(&cp, rounds);
        fflush(stdout);
        kvs_shutdown(2000);
        return status;
    }
    if (endpoint == NULL || arn == NULL || rounds < 1 || warmup < 0 || messages < 1) {
        fprintf(stderr, "usage: relay --endpoint URL --arn ARN [--data DIR] "
                        "[--mode latency|throughput|connect] [--rounds R] [--warmup W] "
                        "[--messages N]\n");
        return 2;
    }
    int status;
    if (strcmp(mode, "connect") == 0) {
        status = mode_connect(endpoint, arn, rounds);
    } else {
        static struct peer master_peer, viewer_peer;
        peer_init(&master_peer);
        peer_init(&viewer_peer);
        master_peer.answer = read_text(data, "answer.sdp", 1);
        char *offer = read_text(data, "offer.sdp", 1);
        char *candidate = read_text(data, "candidate.txt", 0);
        kvs_client *master = make_client(endpoint, arn, NULL, &master_peer, on_master_message);
        pthread_mutex_lock(&master_peer.lock);
        master_peer.client = master;
        pthread_mutex_unlock(&master_peer.lock);
        kvs_client *viewer =
            make_client(endpoint, arn, "bench-c-viewer", &viewer_peer, on_viewer_message);
        if (strcmp(mode, "throughput") == 0) {
            status = mode_throughput(viewer, &master_peer, candidate, messages);
        } else {
            status = mode_latency(viewer, &viewer_peer, offer, rounds, warmup);
        }
        kvs_client_free(viewer);
        kvs_client_free(master);
        free((void *)master_peer.answer);
        free(offer);
        free(candidate);
    }
    fflush(stdout);
    kvs_shutdown(2000);
    return status;
}
