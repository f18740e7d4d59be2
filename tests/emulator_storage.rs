//! The emulator's WebRTC ingestion (spec §1.4, §6.9, §7.4, §8.7): media
//! storage configuration, the WEBRTC endpoint, JoinStorageSession[AsViewer]
//! with their errors and rate limit, the built-in storage peer's offer over
//! the data plane and its report, session ends, and the external peer. Raw
//! HTTP and tokio-tungstenite over loopback; no client code of this crate.

#![cfg(feature = "emulator")]

mod emulator_support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use emulator_support::*;
use kvs_signaling::emulator::{Emulator, EmulatorConfig, Limits, Operation};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;

const STREAM: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/demo-stream/1700000000000";

/// Enables storage on `arn` through UpdateMediaStorageConfiguration.
async fn enable(emulator: &Emulator, arn: &str, stream: &str) {
    let reply = call(
        emulator,
        "/updateMediaStorageConfiguration",
        json!({"ChannelARN": arn, "MediaStorageConfiguration": {"StreamARN": stream, "Status": "ENABLED"}}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({}));
}

/// The WEBRTC endpoint's path (`/w-<hex>`), from GetSignalingChannelEndpoint.
async fn webrtc_path(emulator: &Emulator, arn: &str) -> String {
    let reply = call(
        emulator,
        "/getSignalingChannelEndpoint",
        json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS", "WEBRTC"], "Role": "MASTER"}}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let list = reply.json()["ResourceEndpointList"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3, "{list:?}");
    let endpoint = list.iter().find(|e| e["Protocol"] == "WEBRTC").unwrap()["ResourceEndpoint"].as_str().unwrap();
    let prefix = format!("http://{}/", emulator.local_addr());
    let path = endpoint.strip_prefix(&prefix).unwrap_or_else(|| panic!("{endpoint} is not under {prefix}"));
    assert!(path.starts_with("w-") && path[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{endpoint}");
    format!("/{path}")
}

/// An emulator whose channel `demo` has storage enabled: (emulator, ARN, WEBRTC path).
async fn with_storage(config: EmulatorConfig) -> (Emulator, String, String) {
    let (emulator, arn) = start_with(config).await;
    enable(&emulator, &arn, STREAM).await;
    let path = webrtc_path(&emulator, &arn).await;
    (emulator, arn, path)
}

async fn join(emulator: &Emulator, path: &str, arn: &str) -> RawResponse {
    call(emulator, &format!("{path}/joinStorageSession"), json!({"channelArn": arn})).await
}

async fn join_as_viewer(emulator: &Emulator, path: &str, arn: &str, client_id: &str) -> RawResponse {
    call(emulator, &format!("{path}/joinStorageSessionAsViewer"), json!({"channelArn": arn, "clientId": client_id}))
        .await
}

/// Decodes an inbound frame's payload as JSON.
fn payload(frame: &Value) -> Value {
    let bytes = STANDARD.decode(frame["messagePayload"].as_str().expect("a payload")).expect("base64");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

fn encoded(value: Value) -> String {
    STANDARD.encode(value.to_string())
}

async fn admin_get(emulator: &Emulator, path: &str) -> RawResponse {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", emulator.local_addr());
    exchange(TcpStream::connect(emulator.local_addr()).await.unwrap(), &head, b"").await
}

#[tokio::test]
async fn media_storage_configuration_and_webrtc_endpoint() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let describe = || call(&emulator, "/describeMediaStorageConfiguration", json!({"ChannelARN": arn}));
    assert_eq!(describe().await.json(), json!({"MediaStorageConfiguration": {"Status": "DISABLED"}}));
    let webrtc = json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WEBRTC"]}});
    assert_aws_error(
        &call(&emulator, "/getSignalingChannelEndpoint", webrtc.clone()).await,
        400,
        "InvalidArgumentException",
    );

    let update = |body: Value| call(&emulator, "/updateMediaStorageConfiguration", body);
    for (body, status, error) in [
        (json!({"ChannelARN": arn}), 400, "InvalidArgumentException"),
        (
            json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "ENABLED"}}),
            400,
            "InvalidArgumentException",
        ),
        (
            json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "ON", "StreamARN": STREAM}}),
            400,
            "InvalidArgumentException",
        ),
        (
            json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": "arn:aws:s3:::bucket"}}),
            400,
            "InvalidArgumentException",
        ),
        (
            json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": 1, "StreamARN": STREAM}}),
            400,
            "SerializationException",
        ),
        (
            json!({"ChannelARN": format!("{arn}9"), "MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": STREAM}}),
            404,
            "ResourceNotFoundException",
        ),
    ] {
        let reply = update(body.clone()).await;
        assert_aws_error(&reply, status, error);
    }
    assert_eq!(
        describe().await.json()["MediaStorageConfiguration"]["Status"],
        "DISABLED",
        "a refused update changes nothing"
    );

    enable(&emulator, &arn, STREAM).await;
    assert_eq!(
        describe().await.json(),
        json!({"MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": STREAM}})
    );
    let path = webrtc_path(&emulator, &arn).await;
    let only = call(&emulator, "/getSignalingChannelEndpoint", webrtc).await;
    assert_eq!(
        only.json()["ResourceEndpointList"][0]["ResourceEndpoint"],
        format!("http://{}{path}", emulator.local_addr())
    );

    // The same stream cannot back a second channel.
    let other = emulator.create_channel("other");
    let taken =
        update(json!({"ChannelARN": other, "MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": STREAM}}))
            .await;
    assert_aws_error(&taken, 400, "ResourceInUseException");

    let disabled = update(json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "DISABLED"}})).await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(describe().await.json()["MediaStorageConfiguration"]["Status"], "DISABLED");
    let calls = emulator.stats().control_plane;
    assert_eq!(calls.get(Operation::UpdateMediaStorageConfiguration), 9);
    assert_eq!(calls.get(Operation::DescribeMediaStorageConfiguration), 4);
}

#[tokio::test]
async fn at_most_100_channels_have_storage() {
    let (emulator, _) = start_with(EmulatorConfig::default()).await;
    for n in 0..101 {
        let arn = emulator.create_channel(&format!("cam-{n}"));
        let stream = format!("arn:aws:kinesisvideo:us-west-2:123456789012:stream/s-{n}/1");
        let reply = call(
            &emulator,
            "/updateMediaStorageConfiguration",
            json!({"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": stream}}),
        )
        .await;
        if n < 100 {
            assert_eq!(reply.status, 200, "channel {n}: {}", reply.body);
        } else {
            assert_aws_error(&reply, 400, "ClientLimitExceededException");
        }
    }
}

#[tokio::test]
async fn join_errors() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let path = "/w-0123abcd";
    assert_aws_error(&join(&emulator, path, &arn).await, 400, "InvalidArgumentException");
    enable(&emulator, &arn, STREAM).await;
    let missing = format!("{}/1", &arn[..arn.rfind('/').unwrap()]);
    assert_aws_error(&join(&emulator, path, &missing).await, 404, "ResourceNotFoundException");
    assert_aws_error(&join(&emulator, path, "not-an-arn").await, 400, "InvalidArgumentException");
    let no_arn = call(&emulator, &format!("{path}/joinStorageSession"), json!({"ChannelARN": arn})).await;
    assert_aws_error(&no_arn, 400, "InvalidArgumentException");
    let no_id = call(&emulator, &format!("{path}/joinStorageSessionAsViewer"), json!({"channelArn": arn})).await;
    assert_aws_error(&no_id, 400, "InvalidArgumentException");
    assert_aws_error(&join_as_viewer(&emulator, path, &arn, "AWS_x").await, 400, "InvalidArgumentException");
    let wrong_host = call(&emulator, "/r-0123abcd/joinStorageSession", json!({"channelArn": arn})).await;
    assert_aws_error(&wrong_host, 404, "UnknownOperationException");
    assert!(emulator.storage_sessions().is_empty(), "refused joins start no session");
    let ok = join(&emulator, path, &arn).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, ""), "200 with an empty body");
    assert_eq!(emulator.stats().control_plane.get(Operation::JoinStorageSession), 5, "the unknown path is no join");
    assert_eq!(emulator.stats().control_plane.get(Operation::JoinStorageSessionAsViewer), 2);
}

#[tokio::test]
async fn join_sends_the_master_an_offer_and_the_answer_is_recorded() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    let mut master = connect(&emulator, &arn, None).await;
    let reply = join(&emulator, &path, &arn).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    let offer = recv_json(&mut master).await;
    assert_eq!(offer["messageType"], "SDP_OFFER", "{offer}");
    let session_id = offer["senderClientId"].as_str().expect("the session's id").to_owned();
    assert!(session_id.starts_with("storage-"), "{session_id}");
    let sdp = payload(&offer);
    assert_eq!(sdp["type"], "offer");
    let text = sdp["sdp"].as_str().unwrap();
    assert!(text.contains("H264/90000") && text.contains("opus/48000/2") && text.contains("a=recvonly"), "{text}");
    for _ in 0..3 {
        let candidate = recv_json(&mut master).await;
        assert_eq!(candidate["messageType"], "ICE_CANDIDATE");
        assert_eq!(candidate["senderClientId"], session_id.as_str());
        assert!(payload(&candidate)["candidate"].as_str().unwrap().starts_with("candidate:"));
    }

    let answer_sdp =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=sendonly\r\n";
    let answer = encoded(json!({"type": "answer", "sdp": answer_sdp}));
    send(&mut master, request("SDP_ANSWER", Some(&session_id), &answer, None)).await;
    for n in 0..2 {
        let candidate = encoded(
            json!({"candidate": format!("candidate:{n} 1 udp 1 10.0.0.{n} 5000 typ host"), "sdpMid": "0", "sdpMLineIndex": 0}),
        );
        send(&mut master, request("ICE_CANDIDATE", Some(&session_id), &candidate, None)).await;
    }
    wait_until("the answer and candidates are recorded", || {
        emulator.storage_sessions().first().is_some_and(|s| s.candidates.len() == 2 && s.answer.is_some())
    })
    .await;
    let report = &emulator.storage_sessions()[0];
    assert_eq!(report.answer.as_deref(), Some(answer_sdp));
    assert_eq!(report.candidates[1], "candidate:1 1 udp 1 10.0.0.1 5000 typ host");
    assert_eq!((report.joins, report.offers_sent, report.active, report.external), (1, 1, true, false));

    let admin = admin_get(&emulator, "/admin/storage-sessions").await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    let sessions = admin.json()["sessions"].clone();
    assert_eq!(sessions[0]["channel"], "demo");
    assert_eq!(sessions[0]["session_id"], session_id.as_str());
    assert_eq!(sessions[0]["answer"], answer_sdp);
    assert_eq!(sessions[0]["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(sessions[0]["joins"], 1);

    // A second join in the same session: another offer, same sender.
    join(&emulator, &path, &arn).await;
    let again = recv_json(&mut master).await;
    assert_eq!(
        (again["messageType"].as_str(), again["senderClientId"].as_str()),
        (Some("SDP_OFFER"), Some(session_id.as_str()))
    );
    assert_eq!(emulator.storage_sessions()[0].joins, 2);
}

#[tokio::test]
async fn an_absent_master_gets_the_offer_when_it_connects() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    assert_eq!(emulator.stats().messages_stored, 4, "offer and 3 candidates stored for the TTL");
    let mut master = connect(&emulator, &arn, None).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
}

#[tokio::test]
async fn with_storage_viewers_talk_to_the_session_only() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    enable(&emulator, &arn, STREAM).await;
    let path = webrtc_path(&emulator, &arn).await;

    // Before any join there is no session: nothing flows.
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    expect_quiet(&mut master).await;
    send(&mut master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    expect_quiet(&mut viewer).await;
    assert_eq!(emulator.stats().messages_blocked_by_storage, 2);

    // The viewer joins: the session offers to it, and its answer goes to the session.
    let reply = join_as_viewer(&emulator, &path, &arn, "v1").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    let offer = recv_json(&mut viewer).await;
    assert_eq!(offer["messageType"], "SDP_OFFER");
    let session_id = offer["senderClientId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(recv_json(&mut viewer).await["messageType"], "ICE_CANDIDATE");
    }
    let answer = encoded(json!({"type": "answer", "sdp": "v=0\r\nviewer answer\r\n"}));
    send(&mut viewer, request("SDP_ANSWER", None, &answer, None)).await;
    wait_until("the viewer's answer is recorded", || {
        emulator.storage_sessions().first().is_some_and(|s| !s.viewer_answers.is_empty())
    })
    .await;
    let report = &emulator.storage_sessions()[0];
    assert_eq!(report.viewer_answers, vec![("v1".to_owned(), "v=0\r\nviewer answer\r\n".to_owned())]);
    assert_eq!((report.viewer_joins, report.session_id.as_str()), (1, session_id.as_str()));
    expect_quiet(&mut master).await;

    // Storage disabled: the session ends and master and viewer talk again.
    assert!(emulator.set_media_storage("demo", None));
    assert!(!emulator.storage_sessions()[0].active);
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    let relayed = recv_json(&mut master).await;
    assert_eq!((relayed["messageType"].as_str(), relayed["senderClientId"].as_str()), (Some("SDP_OFFER"), Some("v1")));
}

#[tokio::test]
async fn joins_are_limited_to_two_a_second_per_channel() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    emulator.set_limits(Limits { quotas: true, ..emulator.limits() });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(join(&emulator, &path, &arn).await);
    }
    assert_eq!((statuses[0].status, statuses[1].status), (200, 200));
    assert_aws_error(&statuses[2], 400, "ClientLimitExceededException");
    assert_eq!(emulator.storage_sessions()[0].joins, 2, "the refused join is not served");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(join(&emulator, &path, &arn).await.status, 200, "a token comes back after half a second");
    // Quotas off: no limit.
    emulator.set_limits(Limits { quotas: false, ..emulator.limits() });
    for _ in 0..5 {
        assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    }
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_maximum_duration() {
    let config = EmulatorConfig {
        storage_session_idle_timeout: Duration::from_millis(400),
        storage_session_max_duration: Duration::from_secs(60),
        ..EmulatorConfig::default()
    };
    let (emulator, arn, path) = with_storage(config).await;
    join(&emulator, &path, &arn).await;
    let first = emulator.storage_sessions()[0].session_id.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    join(&emulator, &path, &arn).await;
    assert_eq!(emulator.storage_sessions()[0].session_id, first, "a join within the idle timeout keeps the session");
    wait_until("the idle session ends", || !emulator.storage_sessions()[0].active).await;
    join(&emulator, &path, &arn).await;
    let second = &emulator.storage_sessions()[0];
    assert!(second.active && second.session_id != first && second.joins == 1, "{second:?}");

    let config = EmulatorConfig {
        storage_session_idle_timeout: Duration::from_secs(60),
        storage_session_max_duration: Duration::from_millis(500),
        ..EmulatorConfig::default()
    };
    let (emulator, arn, path) = with_storage(config).await;
    join(&emulator, &path, &arn).await;
    let first = emulator.storage_sessions()[0].session_id.clone();
    // Busy, but past its maximum duration.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        join(&emulator, &path, &arn).await;
    }
    let now = &emulator.storage_sessions()[0];
    assert_ne!(now.session_id, first, "a new session after the maximum duration");
    assert!(now.joins < 8, "{now:?}");
}

#[tokio::test]
async fn an_external_peer_gets_join_notices_and_does_the_signaling() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    let attach = call(&emulator, "/admin/storage-peer", json!({"channel": "demo", "client_id": "media-peer"})).await;
    assert_eq!(attach.status, 200, "{}", attach.body);
    let unknown = call(&emulator, "/admin/storage-peer", json!({"channel": "nope", "client_id": "x"})).await;
    assert_eq!(unknown.status, 404);
    let mut peer = connect(&emulator, &arn, Some("media-peer")).await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut other = connect(&emulator, &arn, Some("v2")).await;

    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    let notice = recv_json(&mut peer).await;
    assert_eq!(notice, json!({"messageType": "STORAGE_JOIN", "channelArn": arn, "role": "MASTER"}));
    expect_quiet(&mut master).await;

    send(&mut peer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    let offer = recv_json(&mut master).await;
    assert_eq!(
        (offer["messageType"].as_str(), offer["senderClientId"].as_str()),
        (Some("SDP_OFFER"), Some("media-peer"))
    );
    send(&mut master, request("SDP_ANSWER", Some("media-peer"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut peer).await["messageType"], "SDP_ANSWER");
    // Other viewers are still cut off while storage is enabled.
    send(&mut other, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    expect_quiet(&mut master).await;

    assert_eq!(join_as_viewer(&emulator, &path, &arn, "v2").await.status, 200);
    let notice = recv_json(&mut peer).await;
    assert_eq!((notice["role"].as_str(), notice["clientId"].as_str()), (Some("VIEWER"), Some("v2")));
    let report = &emulator.storage_sessions()[0];
    assert!(report.external && report.session_id == "media-peer" && report.offers_sent == 2, "{report:?}");

    // Detached: the built-in peer is back with a new session.
    let detach = call(&emulator, "/admin/storage-peer", json!({"channel": "demo", "client_id": null})).await;
    assert_eq!(detach.status, 200);
    join(&emulator, &path, &arn).await;
    let offer = recv_json(&mut master).await;
    assert!(offer["senderClientId"].as_str().unwrap().starts_with("storage-"), "{offer}");
}

#[tokio::test]
async fn dropped_offers_leave_the_join_unanswered() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    let mut master = connect(&emulator, &arn, None).await;
    let fault = call(&emulator, "/admin/storage-drop-offers", json!({"count": 1})).await;
    assert_eq!(fault.status, 200, "{}", fault.body);
    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    expect_quiet(&mut master).await;
    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    let report = &emulator.storage_sessions()[0];
    assert_eq!((report.joins, report.offers_sent, report.offers_dropped), (2, 1, 1));
}

/// A viewer connecting with the id of the live built-in peer would replace
/// it: get the master's answer and candidates meant for the session, stop the
/// peer, and take no viewer slot. Refused at the upgrade; the peer goes on.
#[tokio::test]
async fn a_viewer_cannot_take_the_built_in_peers_id() {
    let (emulator, arn, path) = with_storage(EmulatorConfig { max_viewers: 1, ..EmulatorConfig::default() }).await;
    let mut master = connect(&emulator, &arn, None).await;
    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    let offer = recv_json(&mut master).await;
    let session_id = offer["senderClientId"].as_str().expect("the session's id").to_owned();
    for _ in 0..3 {
        assert_eq!(recv_json(&mut master).await["messageType"], "ICE_CANDIDATE");
    }

    let query = format!("/{}", connect_query(&arn, Some(&session_id)));
    let refused = raw_upgrade(emulator.local_addr(), &query, "").await;
    assert_aws_error(&refused, 400, "ResourceInUseException");
    assert!(refused.message().contains("storage session"), "{}", refused.message());
    assert_eq!(emulator.stats().upgrades_refused, 1);

    // The built-in peer still gets what the master sends it.
    let answer = encoded(json!({"type": "answer", "sdp": "v=0\r\nmaster answer\r\n"}));
    send(&mut master, request("SDP_ANSWER", Some(&session_id), &answer, None)).await;
    wait_until("the answer is recorded", || {
        emulator.storage_sessions().first().is_some_and(|s| s.answer.as_deref() == Some("v=0\r\nmaster answer\r\n"))
    })
    .await;
    assert!(emulator.storage_sessions()[0].active);
    // The built-in peer takes no viewer slot: the one slot is still free.
    let _viewer = connect(&emulator, &arn, Some("v1")).await;
}

/// The other order: a viewer already connected with the id the next session
/// would get keeps its connection; the session takes the next free id.
#[tokio::test]
async fn the_built_in_peer_never_replaces_a_viewer() {
    let (emulator, arn, path) = with_storage(EmulatorConfig::default()).await;
    // Sessions are numbered from 1 per emulator: the first would be storage-1.
    let mut squatter = connect(&emulator, &arn, Some("storage-1")).await;
    let mut master = connect(&emulator, &arn, None).await;
    assert_eq!(join(&emulator, &path, &arn).await.status, 200);
    let offer = recv_json(&mut master).await;
    assert_eq!(
        (offer["messageType"].as_str(), offer["senderClientId"].as_str()),
        (Some("SDP_OFFER"), Some("storage-2"))
    );
    assert_eq!(emulator.storage_sessions()[0].session_id, "storage-2");
    for _ in 0..3 {
        assert_eq!(recv_json(&mut master).await["senderClientId"], "storage-2");
    }

    // The master's answer goes to the session, not to the viewer.
    let answer = encoded(json!({"type": "answer", "sdp": "v=0\r\nfor the session\r\n"}));
    send(&mut master, request("SDP_ANSWER", Some("storage-2"), &answer, None)).await;
    wait_until("the answer is recorded", || emulator.storage_sessions().first().is_some_and(|s| s.answer.is_some()))
        .await;
    expect_quiet(&mut squatter).await;
    assert_eq!(emulator.stats().open_connections, 2, "the viewer storage-1 is still connected");
    // It is still a working connection: its messages are its own (blocked
    // while storage is on, as any viewer's that did not join).
    send(&mut squatter, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    wait_until("the viewer's offer is blocked", || emulator.stats().messages_blocked_by_storage == 1).await;
    expect_quiet(&mut master).await;
}
