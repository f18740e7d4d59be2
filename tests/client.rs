//! The safe Rust client against the emulator (and a scripted peer for inbound
//! garbage), over real loopback sockets.

mod common;

use common::EmulatorThread;
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::client::EventReceiver;
use kvs_signaling::client::{
    Client, ClientConfig, ClientError, ClientEvent, ConnectionState, ReceivedMessage, StateReason, StatusOrigin,
    StatusReport,
};
use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use kvs_signaling::protocol::{IceCandidate, MessageType, SdpType};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig { channels: vec!["c".into()], ..EmulatorConfig::default() }).await.unwrap()
}

async fn next_event(events: &mut EventReceiver) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("event in time").expect("sink alive")
}

async fn next_message(events: &mut EventReceiver) -> ReceivedMessage {
    loop {
        match next_event(events).await {
            ClientEvent::Message(m) => return m,
            ClientEvent::State(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn next_status(events: &mut EventReceiver) -> StatusReport {
    loop {
        match next_event(events).await {
            ClientEvent::Status(s) => return s,
            ClientEvent::State(_) => continue,
            other => panic!("expected a status, got {other:?}"),
        }
    }
}

async fn connected_pair(emulator: &Emulator) -> (Client, EventReceiver, Client, EventReceiver) {
    let arn = emulator.channel_arn("c").unwrap();
    let (master, master_events) = Client::new(ClientConfig::master(&arn, &emulator.ws_endpoint())).unwrap();
    let (viewer, viewer_events) = Client::new(ClientConfig::viewer(&arn, "viewer-1", &emulator.ws_endpoint())).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();
    (master, master_events, viewer, viewer_events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_answer_and_candidates_cross_the_emulator() {
    let emulator = emulator().await;
    let (master, mut master_events, viewer, mut viewer_events) = connected_pair(&emulator).await;

    let offer_id = viewer.send_sdp_offer(None, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n", None).unwrap();
    let offer = next_message(&mut master_events).await;
    assert_eq!(offer.message_type, MessageType::SdpOffer);
    assert_eq!(offer.sender_client_id.as_deref(), Some("viewer-1"));
    let sdp = offer.sdp.expect("parsed SDP");
    assert_eq!(sdp.sdp_type, SdpType::Offer);
    assert_eq!(sdp.sdp, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    assert!(!offer_id.is_empty());

    master.send_sdp_answer(Some("viewer-1"), "v=0\r\nanswer\r\n", Some("my-answer")).unwrap();
    let answer = next_message(&mut viewer_events).await;
    assert_eq!(answer.message_type, MessageType::SdpAnswer);
    assert_eq!(answer.sender_client_id, None);
    assert_eq!(answer.sdp.unwrap().sdp, "v=0\r\nanswer\r\n");

    let candidate = IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: Some("uf1".into()),
    };
    viewer.send_ice_candidate(None, &candidate, None).unwrap();
    let got = next_message(&mut master_events).await;
    assert_eq!(got.ice.as_ref(), Some(&candidate));
    master.send_ice_candidate(Some("viewer-1"), &candidate, None).unwrap();
    assert_eq!(next_message(&mut viewer_events).await.ice, Some(candidate));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_correlation_ids_are_unique_per_client() {
    let emulator = emulator().await;
    let (master, _me, viewer, _ve) = connected_pair(&emulator).await;
    let mut ids = std::collections::HashSet::new();
    for i in 0..50 {
        let id = viewer.send_sdp_offer(None, &format!("v=0 {i}"), None).unwrap();
        assert!(kvs_signaling::protocol::validate_id(kvs_signaling::protocol::Field::CorrelationId, &id).is_ok());
        assert!(ids.insert(id));
    }
    let master_id = master.send_sdp_answer(Some("viewer-1"), "v=0", None).unwrap();
    assert!(!ids.contains(&master_id));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_refused_before_connect_and_after_disconnect() {
    let emulator = emulator().await;
    let arn = emulator.channel_arn("c").unwrap();
    let (viewer, mut events) = Client::new(ClientConfig::viewer(&arn, "v", &emulator.ws_endpoint())).unwrap();
    assert_eq!(viewer.send_sdp_offer(None, "v=0", None), Err(ClientError::NotConnected));
    viewer.connect().await.unwrap();
    assert_eq!(viewer.connect().await, Err(ClientError::AlreadyConnected));
    viewer.disconnect(Duration::from_secs(1)).await;
    assert_eq!(viewer.state(), ConnectionState::Disconnected);
    assert_eq!(viewer.send_sdp_offer(None, "v=0", None), Err(ClientError::NotConnected));
    let mut states = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ClientEvent::State(change) = event {
            states.push(change.state);
        }
    }
    assert_eq!(
        states,
        [
            ConnectionState::Connecting,
            ConnectionState::Connected,
            ConnectionState::Closing,
            ConnectionState::Disconnected
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_validation_sends_nothing() {
    let emulator = emulator().await;
    let (master, _me, viewer, mut viewer_events) = connected_pair(&emulator).await;
    let before = emulator.stats();
    assert!(matches!(master.send_sdp_answer(None, "v=0", None), Err(ClientError::Invalid(_))));
    assert!(matches!(viewer.send_sdp_offer(Some("m"), "v=0", None), Err(ClientError::Invalid(_))));
    assert!(matches!(master.send_sdp_answer(Some("bad id"), "v=0", None), Err(ClientError::Invalid(_))));
    assert!(matches!(master.send_sdp_answer(Some("v"), "v=0", Some(&"x".repeat(257))), Err(ClientError::Invalid(_))));
    assert!(matches!(
        master.send_sdp_answer(Some("viewer-1"), &"a".repeat(8000), None),
        Err(ClientError::PayloadTooLarge { .. })
    ));
    // A valid send afterwards still goes through, and it is the only one that did.
    master.send_sdp_answer(Some("viewer-1"), "v=0 ok", None).unwrap();
    assert_eq!(next_message(&mut viewer_events).await.sdp.unwrap().sdp, "v=0 ok");
    let after = emulator.stats();
    assert_eq!(after.messages_relayed - before.messages_relayed, 1);
    assert_eq!(after.frames_rejected, before.frames_rejected);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_named() {
    let emulator = emulator().await;
    let endpoint = emulator.ws_endpoint();
    let unknown = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/nope/1";
    let (client, _e) = Client::new(ClientConfig::master(unknown, &endpoint)).unwrap();
    assert!(matches!(client.connect().await, Err(ClientError::Refused { status: 404, .. })));

    let arn = emulator.channel_arn("c").unwrap();
    let mut viewers = Vec::new();
    for i in 0..10 {
        let (viewer, events) = Client::new(ClientConfig::viewer(&arn, &format!("v{i}"), &endpoint)).unwrap();
        viewer.connect().await.unwrap();
        viewers.push((viewer, events));
    }
    let (eleventh, _e) = Client::new(ClientConfig::viewer(&arn, "v10", &endpoint)).unwrap();
    match eleventh.connect().await {
        Err(ClientError::Refused { status: 400, error_type, .. }) => {
            assert_eq!(error_type.as_deref(), Some("ClientLimitExceededException"))
        }
        other => panic!("expected a limit refusal, got {other:?}"),
    }

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (client, _e) = Client::new(ClientConfig::master(&arn, &format!("ws://127.0.0.1:{closed_port}"))).unwrap();
    assert!(matches!(client.connect().await, Err(ClientError::Network(_))));
    assert_eq!(client.state(), ConnectionState::Disconnected);
    // An immediate retry is another attempt, not "already connected".
    assert!(matches!(client.connect().await, Err(ClientError::Network(_))));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_times_out_when_the_upgrade_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(socket);
    });
    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1";
    let config = ClientConfig { connect_timeout: Duration::from_millis(300), ..ClientConfig::master(arn, &endpoint) };
    let (client, _e) = Client::new(config).unwrap();
    assert_eq!(client.connect().await, Err(ClientError::Timeout));
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_send_is_written_or_reported_failed() {
    let emulator = emulator().await;
    let (_master, mut master_events, viewer, mut viewer_events) = connected_pair(&emulator).await;
    let mut accepted = std::collections::HashSet::new();
    for i in 0..200 {
        match viewer.send_ice_candidate(
            None,
            &IceCandidate {
                candidate: format!("candidate:{i}"),
                sdp_mid: None,
                sdp_mline_index: None,
                username_fragment: None,
            },
            None,
        ) {
            Ok(id) => assert!(accepted.insert(id)),
            Err(ClientError::QueueFull) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    viewer.disconnect(Duration::from_secs(1)).await;
    let mut failed = std::collections::HashSet::new();
    while let Ok(event) = viewer_events.try_recv() {
        if let ClientEvent::Status(StatusReport { origin: StatusOrigin::Local, correlation_id, .. }) = event {
            assert!(accepted.contains(&correlation_id));
            assert!(failed.insert(correlation_id), "reported twice");
        }
    }
    let mut received = 0;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), master_events.recv()).await {
        if matches!(event, ClientEvent::Message(_)) {
            received += 1;
        }
    }
    assert_eq!(received + failed.len(), accepted.len(), "received {received}, failed {}", failed.len());
    emulator.shutdown().await;
}

/// A scripted service: accepts one WebSocket and sends `frames` to it, then keeps
/// the socket open for a while.
async fn scripted_peer(frames: Vec<Message>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        for frame in frames {
            ws.send(frame).await.unwrap();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async { while ws.next().await.is_some() {} }).await;
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_garbage_is_skipped_and_the_connection_stays_up() {
    let valid = r#"{"messageType":"SDP_OFFER","senderClientId":"v1","messagePayload":"eyJ0eXBlIjoib2ZmZXIiLCJzZHAiOiJ2PTAifQ=="}"#;
    let frames = vec![
        Message::text(""),
        Message::text("not json"),
        Message::text("[1,2,3]"),
        Message::text(
            r#"{"message": "Endpoint request timed out", "connectionId":"Jzo5lcQFtjvCJcq=", "requestId":"Jzo5vMzgNjZFb9Q="}"#,
        ),
        Message::text(r#"{"messageType": 42}"#),
        Message::text(r#"{"messageType":"SDP_OFFER","messagePayload":"!!!not base64"}"#),
        Message::text(r#"{"messageType":"SDP_OFFER"}"#),
        Message::text(r#"{"messageType":"BRAND_NEW"}"#),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(
            r#"{"messageType":"STATUS_RESPONSE","statusResponse":{"correlationId":"c-9","errorType":"InvalidArgumentException","statusCode":"400","description":"bad"}}"#,
        ),
        Message::text(r#"{"messageType":"GO_AWAY"}"#),
        Message::text(valid),
    ];
    let endpoint = scripted_peer(frames).await;
    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1";
    let (client, mut events) = Client::new(ClientConfig::master(arn, &endpoint)).unwrap();
    client.connect().await.unwrap();
    let status = next_status(&mut events).await;
    assert_eq!(status.origin, StatusOrigin::Service);
    assert_eq!(status.correlation_id, "c-9");
    assert_eq!(status.status_code, 400);
    assert_eq!(status.error_type.as_deref(), Some("InvalidArgumentException"));
    assert_eq!(next_event(&mut events).await, ClientEvent::ServiceNotice(MessageType::GoAway));
    let message = next_message(&mut events).await;
    assert_eq!(message.sender_client_id.as_deref(), Some("v1"));
    assert_eq!(message.sdp.unwrap().sdp, "v=0");
    assert_eq!(client.state(), ConnectionState::Connected);
    assert!(events.try_recv().is_err(), "nothing else was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_close_makes_the_client_reconnect_and_queue_sends() {
    // The scripted service accepts one socket only, so every reconnect fails.
    let endpoint = scripted_peer(vec![Message::Close(None)]).await;
    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1";
    let (client, mut events) = Client::new(ClientConfig::master(arn, &endpoint)).unwrap();
    client.connect().await.unwrap();
    loop {
        if let ClientEvent::State(change) = next_event(&mut events).await
            && change.state == ConnectionState::Reconnecting
        {
            assert!(matches!(change.reason, StateReason::ClosedByService(_)), "{change:?}");
            break;
        }
    }
    assert_eq!(client.state(), ConnectionState::Reconnecting);
    let id = client.send_sdp_answer(Some("v"), "v=0", None).expect("queued while reconnecting");
    assert_eq!(client.metrics().messages_queued, 1);
    client.disconnect(Duration::from_secs(1)).await;
    let status = next_status(&mut events).await;
    assert_eq!((status.origin, status.correlation_id), (StatusOrigin::Local, id));
    assert_eq!(client.send_sdp_answer(Some("v"), "v=0", None), Err(ClientError::NotConnected));
}

#[test]
fn emulator_thread_helper_serves_a_channel() {
    let emulator = EmulatorThread::start();
    assert!(emulator.endpoint.starts_with("ws://127.0.0.1:"));
    assert!(emulator.arn.contains(":channel/test-channel/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_candidates_are_held_until_the_offer_when_asked() {
    let emulator = emulator().await;
    let arn = emulator.channel_arn("c").unwrap();
    let config = ClientConfig { buffer_early_candidates: true, ..ClientConfig::master(&arn, &emulator.ws_endpoint()) };
    let (master, mut master_events) = Client::new(config).unwrap();
    let (viewer, _ve) = Client::new(ClientConfig::viewer(&arn, "early", &emulator.ws_endpoint())).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();
    for i in 0..3 {
        viewer.send_ice_candidate(None, &numbered_candidate(i), None).unwrap();
    }
    viewer.send_sdp_offer(None, "v=0 late offer", None).unwrap();
    let first = next_message(&mut master_events).await;
    assert_eq!(first.message_type, MessageType::SdpOffer, "the offer comes first");
    for i in 0..3 {
        let m = next_message(&mut master_events).await;
        assert_eq!(m.ice.unwrap().candidate, format!("candidate:{i}"));
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_queues_sends_until_the_socket_opens_and_metrics_count_them() {
    let emulator = emulator().await;
    let arn = emulator.channel_arn("c").unwrap();
    let (master, mut master_events) = Client::new(ClientConfig::master(&arn, &emulator.ws_endpoint())).unwrap();
    master.connect().await.unwrap();
    let (viewer, _ve) = Client::new(ClientConfig::viewer(&arn, "starter", &emulator.ws_endpoint())).unwrap();
    viewer.start().unwrap();
    // Accepted at once, before the socket is open; written once it is.
    viewer.send_sdp_offer(None, "v=0 queued", None).unwrap();
    assert_eq!(next_message(&mut master_events).await.sdp.unwrap().sdp, "v=0 queued");
    assert_eq!(viewer.start(), Err(ClientError::AlreadyConnected));
    // Counted sent once the emulator's TCP acknowledged it, which the client
    // reads a few milliseconds later.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while viewer.metrics().messages_sent == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = viewer.metrics();
    assert_eq!(metrics.state, ConnectionState::Connected);
    assert_eq!((metrics.connects, metrics.reconnects, metrics.messages_sent, metrics.messages_queued), (1, 0, 1, 0));
    assert_eq!(metrics.messages_unconfirmed, 0);
    assert!(metrics.last_connect_unix_ms > 0);
    assert_eq!(master.metrics().messages_received, 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_candidates_goes_out_in_order_within_the_quota() {
    let emulator = emulator().await;
    let (master, mut master_events, viewer, mut viewer_events) = connected_pair(&emulator).await;
    for i in 0..30 {
        viewer.send_ice_candidate(None, &numbered_candidate(i), None).unwrap();
    }
    let mut arrivals = Vec::new();
    for i in 0..30 {
        let m = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let ClientEvent::Message(m) = master_events.recv().await.unwrap() {
                    return m;
                }
            }
        })
        .await
        .expect("candidate in time");
        assert_eq!(m.ice.unwrap().candidate, format!("candidate:{i}"));
        arrivals.push(std::time::Instant::now());
    }
    // Paced to 20 per second: no one-second window holds more than 20.
    for (i, t) in arrivals.iter().enumerate().skip(20) {
        assert!(t.duration_since(arrivals[i - 20]) >= Duration::from_millis(900), "candidate {i} came too early");
    }
    // And the service throttled none of them.
    while let Ok(event) = viewer_events.try_recv() {
        assert!(!matches!(event, ClientEvent::Status(_)), "{event:?}");
    }
    drop(master);
    emulator.shutdown().await;
}

/// `Client::with_bounded_events`: a receiver that does not read holds at most
/// its bound while the client stops reading its socket; nothing is dropped and
/// the order holds once the application reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_holds_its_bound_and_loses_nothing() {
    const BOUND: usize = 5;
    const SENT: usize = 60;
    let emulator = emulator().await;
    let arn = emulator.channel_arn("c").unwrap();
    let mut config = ClientConfig::master(&arn, &emulator.ws_endpoint());
    config.pacing = config_unpaced();
    let (master, mut master_events) = Client::with_bounded_events(config, BOUND, 1 << 20).unwrap();
    let mut viewer_config = ClientConfig::viewer(&arn, "viewer-1", &emulator.ws_endpoint());
    viewer_config.pacing = config_unpaced();
    let (viewer, _viewer_events) = Client::new(viewer_config).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();
    while let Ok(event) = master_events.try_recv() {
        assert!(matches!(event, ClientEvent::State(_)), "{event:?}");
    }
    for i in 0..SENT {
        viewer.send_ice_candidate(None, &numbered_candidate(i), None).unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while viewer.metrics().messages_sent < SENT as u64 {
        assert!(tokio::time::Instant::now() < deadline, "the viewer did not write its {SENT} candidates");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the master time to read whatever it would read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (held, _) = master_events.held();
    assert!(held <= BOUND, "the receiver holds {held} events, bound {BOUND}");
    for i in 0..SENT {
        let m = next_message(&mut master_events).await;
        assert_eq!(m.ice.unwrap().candidate, format!("candidate:{i}"));
    }
    // (Counted when a pause ends, so only now.)
    assert!(master.metrics().backpressure_pauses > 0, "the master never paused its socket");
    assert_eq!(master_events.held(), (0, 0));
    drop((master, viewer));
    emulator.shutdown().await;
}

fn config_unpaced() -> kvs_signaling::client::Pacing {
    kvs_signaling::client::Pacing { sdp_per_second: 0, ice_per_second: 0 }
}

fn numbered_candidate(i: usize) -> IceCandidate {
    IceCandidate { candidate: format!("candidate:{i}"), sdp_mid: None, sdp_mline_index: None, username_fragment: None }
}
