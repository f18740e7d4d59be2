//! WebRTC ingestion from the client's side, against the emulator over
//! loopback with SigV4 on: DescribeMediaStorageConfiguration, the WEBRTC
//! endpoint, JoinStorageSession[AsViewer], the storage session's offer, the
//! join retry, the join rate, and the fall-back to peer-to-peer when storage
//! is disabled; plus the control-plane API for the configuration.

#![cfg(feature = "emulator")]

use kvs_signaling::aws::{
    AwsError, ChannelRef, ControlPlane, ControlPlaneConfig, Credentials, MediaStorageConfiguration, StaticCredentials,
};
use kvs_signaling::client::{
    AwsConfig, Client, ClientConfig, ClientEvent, EventReceiver, MediaStorageMode, ReceivedMessage, StorageEvent,
};
use kvs_signaling::emulator::{ConnectRefusal, Emulator, EmulatorConfig, Limits, Operation, Target};
use kvs_signaling::protocol::{IceCandidate, MessageType};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "AKIDEXAMPLESTORAGE01";
const SECRET: &str = "storage/secret/key/EXAMPLE";
const WAIT: Duration = Duration::from_secs(10);
const STREAM: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam-stream/1700000000000";

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        channels: vec!["cam-1".into()],
        auth: Some(vec![(KEY.into(), SECRET.into())]),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn control_plane_config(emulator: &Emulator) -> ControlPlaneConfig {
    let credentials = Arc::new(StaticCredentials::new(Credentials::new(KEY, SECRET, None)));
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials);
    control_plane.endpoint_override = Some(emulator.control_plane_url());
    control_plane.request_timeout = Duration::from_secs(3);
    control_plane
}

fn config(
    emulator: &Emulator,
    client_id: Option<&str>,
    mode: MediaStorageMode,
    offer_timeout: Duration,
) -> ClientConfig {
    let aws = AwsConfig {
        media_storage: mode,
        storage_offer_timeout: offer_timeout,
        ice_servers: false,
        ..AwsConfig::new(control_plane_config(emulator))
    };
    ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::via_control_plane("cam-1", client_id, aws) }
}

/// Reads events until the storage offer was both delivered as a message and
/// announced; returns the message and the storage events seen, in order.
async fn storage_offer(events: &mut EventReceiver) -> (ReceivedMessage, Vec<StorageEvent>) {
    tokio::time::timeout(WAIT, async {
        let mut offer = None;
        let mut steps = Vec::new();
        loop {
            match events.recv().await.expect("sink alive") {
                ClientEvent::Message(m) if m.message_type == MessageType::SdpOffer => offer = Some(m),
                ClientEvent::Storage(step) => steps.push(step),
                _ => {}
            }
            if steps.contains(&StorageEvent::OfferReceived)
                && let Some(offer) = offer.take()
            {
                return (offer, steps);
            }
        }
    })
    .await
    .expect("the storage offer in time")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn joins(emulator: &Emulator) -> u64 {
    emulator.stats().control_plane.get(Operation::JoinStorageSession)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_calls_from_rust() {
    let emulator = emulator().await;
    let control_plane = ControlPlane::new(&control_plane_config(&emulator)).unwrap();
    let by_name = ChannelRef::Name("cam-1".into());
    assert_eq!(control_plane.describe_media_storage(&by_name).await.unwrap(), MediaStorageConfiguration::default());
    let arn = emulator.channel_arn("cam-1").unwrap();
    let enabled = MediaStorageConfiguration { enabled: true, stream_arn: Some(STREAM.into()) };
    control_plane.update_media_storage(&arn, &enabled).await.unwrap();
    assert_eq!(control_plane.describe_media_storage(&ChannelRef::Arn(arn.clone())).await.unwrap(), enabled);
    let endpoints = control_plane.get_endpoints_with(&arn, kvs_signaling::protocol::Role::Master, true).await.unwrap();
    assert!(endpoints.webrtc.as_deref().is_some_and(|w| w.contains("/w-")), "{endpoints:?}");

    // Checked before any call: enabling needs a stream, which must be an ARN.
    let calls = emulator.stats().control_plane.total();
    let no_stream = MediaStorageConfiguration { enabled: true, stream_arn: None };
    assert!(matches!(control_plane.update_media_storage(&arn, &no_stream).await, Err(AwsError::Config(_))));
    let bad_stream = MediaStorageConfiguration { enabled: true, stream_arn: Some("stream".into()) };
    assert!(matches!(control_plane.update_media_storage(&arn, &bad_stream).await, Err(AwsError::Config(_))));
    assert_eq!(emulator.stats().control_plane.total(), calls);
    // The service's refusal: the stream is already used by this channel, for another.
    emulator.create_channel("cam-2");
    let other = emulator.channel_arn("cam-2").unwrap();
    let refused = control_plane.update_media_storage(&other, &enabled).await.unwrap_err();
    assert!(matches!(refused, AwsError::ResourceInUse(_)), "{refused:?}");

    control_plane.update_media_storage(&arn, &MediaStorageConfiguration::default()).await.unwrap();
    assert!(!control_plane.describe_media_storage(&by_name).await.unwrap().enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_joins_gets_the_offer_answers_and_trickles() {
    let emulator = emulator().await;
    assert!(emulator.set_media_storage("cam-1", Some(STREAM)));
    let (master, mut events) =
        Client::new(config(&emulator, None, MediaStorageMode::Auto, Duration::from_secs(30))).unwrap();
    master.connect().await.unwrap();
    let (offer, steps) = storage_offer(&mut events).await;
    assert_eq!(steps, vec![StorageEvent::Joined, StorageEvent::OfferReceived]);
    let session = offer.sender_client_id.clone().expect("the storage session's id");
    assert!(session.starts_with("storage-"), "{session}");
    assert!(offer.sdp.as_ref().unwrap().sdp.contains("H264/90000"));

    master.send_sdp_answer(Some(&session), "v=0\r\ns=camera answer\r\n", None).unwrap();
    for n in 0..2 {
        let candidate = IceCandidate {
            candidate: format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000 typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        master.send_ice_candidate(Some(&session), &candidate, None).unwrap();
    }
    wait_until("the session records the answer and candidates", || {
        emulator.storage_sessions().first().is_some_and(|s| s.answer.is_some() && s.candidates.len() == 2)
    })
    .await;
    let report = &emulator.storage_sessions()[0];
    assert_eq!(report.answer.as_deref(), Some("v=0\r\ns=camera answer\r\n"));
    assert_eq!(report.candidates[0], "candidate:0 1 udp 2122260223 192.0.2.0 5000 typ host");
    assert_eq!(joins(&emulator), 1);
    let calls = emulator.stats().control_plane;
    assert_eq!(calls.get(Operation::DescribeMediaStorageConfiguration), 1);
    let metrics = master.metrics();
    assert_eq!(metrics.storage_joins, 1);
    assert!(metrics.last_join_latency_us > 0 && metrics.time_to_storage_offer_us >= metrics.last_join_latency_us / 2);
    master.disconnect(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joins_as_viewer_and_gets_the_offer() {
    let emulator = emulator().await;
    assert!(emulator.set_media_storage("cam-1", Some(STREAM)));
    let (viewer, mut events) =
        Client::new(config(&emulator, Some("phone"), MediaStorageMode::On, Duration::from_secs(30))).unwrap();
    viewer.connect().await.unwrap();
    let (offer, _) = storage_offer(&mut events).await;
    assert!(offer.sender_client_id.unwrap().starts_with("storage-"));
    assert_eq!(emulator.stats().control_plane.get(Operation::JoinStorageSessionAsViewer), 1);
    assert_eq!(
        emulator.stats().control_plane.get(Operation::DescribeMediaStorageConfiguration),
        0,
        "mode On asks nothing"
    );
    assert_eq!(emulator.storage_sessions()[0].viewer_joins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_is_retried_when_no_offer_comes_within_the_rate_limit() {
    let emulator = emulator().await;
    assert!(emulator.set_media_storage("cam-1", Some(STREAM)));
    emulator.set_limits(Limits { quotas: true, ..emulator.limits() });
    emulator.drop_storage_offers(3);
    let (master, mut events) =
        Client::new(config(&emulator, None, MediaStorageMode::Auto, Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    master.connect().await.unwrap();
    let (_, steps) = storage_offer(&mut events).await;
    let elapsed = started.elapsed();
    assert_eq!(steps.iter().filter(|s| **s == StorageEvent::Joined).count(), 4, "{steps:?}");
    let report = &emulator.storage_sessions()[0];
    assert_eq!((report.joins, report.offers_dropped, report.offers_sent), (4, 3, 1));
    // Every join the client made was admitted: none over 2 a second.
    assert_eq!(joins(&emulator), 4);
    assert_eq!(master.metrics().storage_joins, 4);
    assert!(elapsed >= Duration::from_secs(3), "joins at least a second apart: {elapsed:?}");
    master.disconnect(Duration::from_secs(1)).await;
}

/// Joins belong to a socket: while the master has none (an outage), it does
/// not join (the session's offer could not reach it), and it joins again
/// once a socket is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_join_is_made_while_the_socket_is_down() {
    let emulator = emulator().await;
    assert!(emulator.set_media_storage("cam-1", Some(STREAM)));
    emulator.drop_storage_offers(1000);
    let (master, _events) = Client::new(config(&emulator, None, MediaStorageMode::On, Duration::from_secs(1))).unwrap();
    master.connect().await.unwrap();
    wait_until("a join", || joins(&emulator) >= 1).await;

    let outage = Duration::from_secs(3);
    emulator.refuse_connections(outage, ConnectRefusal::Status(503));
    assert_eq!(emulator.drop_connections(&Target::master("cam-1")), 1);
    wait_until("the master to notice", || master.metrics().connect_failures >= 1).await;
    let during = joins(&emulator);
    tokio::time::sleep(outage - Duration::from_millis(500)).await;
    assert_eq!(joins(&emulator), during, "joins (one a second while no offer comes) went on without a socket");
    wait_until("the master reconnects", || master.metrics().reconnects == 1).await;
    wait_until("a join on the new socket", || joins(&emulator) > during).await;
    master.disconnect(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_disabled_mid_run_means_peer_to_peer_after_the_next_reconnect() {
    let emulator = emulator().await;
    assert!(emulator.set_media_storage("cam-1", Some(STREAM)));
    let (master, mut master_events) =
        Client::new(config(&emulator, None, MediaStorageMode::Auto, Duration::from_secs(30))).unwrap();
    master.connect().await.unwrap();
    storage_offer(&mut master_events).await;
    let (viewer, _viewer_events) =
        Client::new(config(&emulator, Some("phone"), MediaStorageMode::Off, Duration::from_secs(30))).unwrap();
    viewer.connect().await.unwrap();
    viewer.send_sdp_offer(None, "v=0 while storage", None).unwrap();
    wait_until("the viewer's offer is blocked", || emulator.stats().messages_blocked_by_storage == 1).await;

    let control_plane = ControlPlane::new(&control_plane_config(&emulator)).unwrap();
    let arn = emulator.channel_arn("cam-1").unwrap();
    control_plane.update_media_storage(&arn, &MediaStorageConfiguration::default()).await.unwrap();
    let endpoint_calls = emulator.stats().control_plane.get(Operation::GetSignalingChannelEndpoint);
    assert_eq!(emulator.drop_connections(&Target::master("cam-1")), 1);
    wait_until("the master reconnects", || master.metrics().reconnects == 1).await;
    let calls = emulator.stats().control_plane;
    assert_eq!(calls.get(Operation::DescribeMediaStorageConfiguration), 2, "asked again on reconnect");
    assert_eq!(
        calls.get(Operation::GetSignalingChannelEndpoint),
        endpoint_calls + 1,
        "the status changed: the cached endpoints were dropped"
    );

    viewer.send_sdp_offer(None, "v=0 peer to peer", None).unwrap();
    let offer = tokio::time::timeout(WAIT, async {
        loop {
            if let ClientEvent::Message(m) = master_events.recv().await.unwrap()
                && m.message_type == MessageType::SdpOffer
            {
                return m;
            }
        }
    })
    .await
    .expect("the viewer's offer arrives");
    assert_eq!(offer.sender_client_id.as_deref(), Some("phone"));
    assert_eq!(offer.sdp.unwrap().sdp, "v=0 peer to peer");
    assert_eq!(joins(&emulator), 1, "no join without storage");
    assert_eq!(master.metrics().storage_joins, 1);
}
