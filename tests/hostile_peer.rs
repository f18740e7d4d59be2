//! A hostile WebSocket peer in place of the service, over real loopback sockets:
//! every resource it can make the client hold stays bounded (issue 9).
//!
//! The tests run one at a time (see [`one_at_a_time`]): floods are CPU-heavy
//! and the pong test compares byte counts that other floods would not disturb,
//! but would slow down.

use futures_util::SinkExt;
use kvs_signaling::client::EventReceiver;
use kvs_signaling::client::{
    Backoff, Client, ClientConfig, ClientEvent, ConnectionState, DEFAULT_EARLY_CANDIDATE_BUDGET, Pacing, StateReason,
    StatusOrigin,
};
use kvs_signaling::protocol::{IceCandidate, encode_payload};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Mutex, MutexGuard};
use tokio_tungstenite::tungstenite::Message;

const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1";
/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(15);
/// The receive buffer of the hostile server's sockets, so that the kernel holds
/// little of what the client writes and the client's own buffering shows.
const SERVER_RECEIVE_BUFFER: u32 = 64 * 1024;
/// The client's write buffer bound (`MAX_WRITE_BUFFER` in src/client/connect.rs).
const CLIENT_WRITE_BUFFER: usize = 64 * 1024;
/// A server ping with the largest control payload (125 bytes), unmasked.
const PING_PAYLOAD: usize = 125;
/// The pong the client answers it with: 2 header bytes, a 4-byte mask, the payload.
const PONG_FRAME: usize = 2 + 4 + PING_PAYLOAD;

/// A host candidate with `line` as its text.
fn ice(line: String) -> IceCandidate {
    IceCandidate { candidate: line, sdp_mid: Some("0".into()), sdp_mline_index: Some(0), username_fragment: None }
}

async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// A listener whose accepted sockets have a small, fixed receive buffer.
fn small_buffer_listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SERVER_RECEIVE_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(16).unwrap()
}

fn endpoint(listener: &TcpListener) -> String {
    format!("ws://{}", listener.local_addr().unwrap())
}

/// `count` server pings of [`PING_PAYLOAD`] bytes each, as raw frames.
fn pings(count: usize) -> Vec<u8> {
    let mut frame = vec![0x89, PING_PAYLOAD as u8];
    frame.extend(std::iter::repeat_n(b'p', PING_PAYLOAD));
    frame.repeat(count)
}

/// The most the kernel can hold of what the client wrote and the server did not
/// read: the client's send buffer at its largest, the server's receive buffer
/// (which Linux doubles for bookkeeping).
fn kernel_buffers() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let send_max: usize = wmem.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or(4 << 20);
    send_max + 2 * SERVER_RECEIVE_BUFFER as usize
}

/// A server text frame (unmasked) of fewer than 64 KiB.
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81, 126];
    frame.extend((text.len() as u16).to_be_bytes());
    frame.extend(text.as_bytes());
    frame
}

/// An SDP offer frame from `sender`.
fn offer_from(sender: &str) -> String {
    let payload = encode_payload(br#"{"type":"offer","sdp":"v=0"}"#);
    format!(r#"{{"messageType":"SDP_OFFER","senderClientId":"{sender}","messagePayload":"{payload}"}}"#)
}

/// How long [`drain`] reads.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How often [`drain`] pings, so that the client's socket task runs and
/// flushes whatever it has buffered.
const NUDGE: Duration = Duration::from_millis(100);

/// Reads raw bytes for [`DRAIN_TIME`], pinging every [`NUDGE`]; returns the
/// bytes read and the pings sent.
async fn drain(tcp: &mut TcpStream) -> (usize, usize) {
    let started = Instant::now();
    let (mut read, mut nudges) = (0, 0);
    let mut buf = vec![0u8; 64 * 1024];
    while started.elapsed() < DRAIN_TIME {
        if tcp.write_all(&pings(1)).await.is_err() {
            break;
        }
        nudges += 1;
        let nudge_at = Instant::now() + NUDGE;
        while let Ok(result) = tokio::time::timeout_at(nudge_at.into(), tcp.read(&mut buf)).await {
            match result {
                Ok(0) | Err(_) => return (read, nudges),
                Ok(n) => read += n,
            }
        }
    }
    (read, nudges)
}

async fn next_event(events: &mut EventReceiver) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("event in time").expect("sink alive")
}

/// Waits for the client to report a lost connection; returns why.
async fn next_loss(events: &mut EventReceiver) -> String {
    loop {
        if let ClientEvent::State(change) = next_event(events).await
            && change.state == ConnectionState::Reconnecting
        {
            match change.reason {
                StateReason::ConnectionLost(why) => return why,
                other => panic!("expected a lost connection, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_cannot_make_the_client_queue_pongs() {
    let _serial = one_at_a_time().await;
    let listener = small_buffer_listener();
    let endpoint = endpoint(&listener);
    // Four times what the kernel and the client's write buffer can hold: what
    // the client would have to keep itself if every ping got its pong.
    let bound = kernel_buffers() + CLIENT_WRITE_BUFFER;
    let flood = 4 * bound;
    let (all_read_tx, all_read) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let tcp = ws.get_mut();
        let chunk = pings(1000);
        let mut written = 0;
        while written < flood {
            tcp.write_all(&chunk).await.unwrap();
            written += chunk.len();
        }
        // The offer after the pings tells the test when the client has read them all.
        tcp.write_all(&text_frame(&offer_from("marker"))).await.unwrap();
        all_read.await.unwrap();
        let (read, nudges) = drain(tcp).await;
        (written, read, nudges)
    });
    // Pings far apart: the client keeps the connection through the flood, so
    // whatever pongs it queued are still there to be read afterwards.
    let config = ClientConfig {
        ping_interval: Duration::from_secs(120),
        pong_timeout: Duration::from_secs(60),
        ..ClientConfig::master(ARN, &endpoint)
    };
    let (client, mut events) = Client::new(config).unwrap();
    client.connect().await.unwrap();
    loop {
        match tokio::time::timeout(4 * WAIT, events.recv()).await.expect("the client reads the flood in time") {
            Some(ClientEvent::Message(message)) => {
                assert_eq!(message.sender_client_id.as_deref(), Some("marker"));
                break;
            }
            Some(ClientEvent::State(change)) => assert_ne!(change.state, ConnectionState::Reconnecting, "{change:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    all_read_tx.send(()).unwrap();
    let (written, pong_bytes, nudges) = tokio::time::timeout(WAIT, server).await.expect("drained in time").unwrap();
    let pings = written / (PING_PAYLOAD + 2);
    let allowed = bound + nudges * PONG_FRAME;
    assert!(
        pong_bytes <= allowed,
        "after {pings} pings the client had {pong_bytes} bytes of pongs ({} pongs) to write; at most {bound} fit in \
         the kernel and its write buffer",
        pong_bytes / PONG_FRAME
    );
    client.disconnect(Duration::from_millis(200)).await;
}

/// `config` with short reconnects and no pacing.
fn fast(config: ClientConfig) -> ClientConfig {
    ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200) },
        pacing: Pacing { sdp_per_second: 0, ice_per_second: 0 },
        ..config
    }
}

/// A scripted service that accepts connections until the test ends; the
/// `n`-th connection (from 0) gets `script(n)`'s frames, then stays open
/// without reading.
fn scripted_service(script: impl Fn(usize) -> Vec<Message> + Send + 'static) -> String {
    let listener = small_buffer_listener();
    let endpoint = endpoint(&listener);
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let frames = script(n);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                for frame in frames {
                    if ws.send(frame).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(WAIT).await;
            });
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_dropped_and_accepted_sends_are_kept() {
    let _serial = one_at_a_time().await;
    let listener = small_buffer_listener();
    let endpoint = endpoint(&listener);
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let chunk = pings(1000);
                while ws.get_mut().write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let config = ClientConfig {
        ping_interval: Duration::from_millis(300),
        pong_timeout: Duration::from_millis(300),
        ..fast(ClientConfig::master(ARN, &endpoint))
    };
    let (client, mut events) = Client::new(config).unwrap();
    client.connect().await.unwrap();
    let candidate = ice("candidate:1 1 udp 1 10.0.0.1 9 typ host".into());
    let accepted: Vec<String> =
        (0..20).map(|_| client.send_ice_candidate(Some("v"), &candidate, None).expect("accepted")).collect();
    let started = Instant::now();
    let why = next_loss(&mut events).await;
    assert!(started.elapsed() < Duration::from_secs(5), "dropped only after {:?}: {why}", started.elapsed());
    assert!(why.contains("not reading") || why.contains("ping"), "{why}");
    while connections.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < WAIT, "the client did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.disconnect(Duration::from_millis(200)).await;
    let mut failed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ClientEvent::Status(status) = event
            && status.origin == StatusOrigin::Local
        {
            failed.push(status.correlation_id);
        }
    }
    let written = client.metrics().messages_sent as usize;
    assert!(failed.iter().all(|id| accepted.contains(id)));
    assert_eq!(written + failed.len(), accepted.len(), "each accepted send is written or reported failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_beyond_the_spec_never_reach_the_application() {
    let _serial = one_at_a_time().await;
    let status = |id: &str| {
        format!(r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"correlationId":"{id}","statusCode":"400"}}}}"#)
    };
    let long = "x".repeat(60_000);
    let frames = vec![
        Message::text(offer_from(&long)),
        Message::text(status(&long)),
        Message::text(offer_from(&"y".repeat(257))),
        Message::text(offer_from("a%20b")),
        Message::text(status("c/1")),
        Message::text(offer_from(&"v".repeat(256))),
        Message::text(status("c-1")),
    ];
    let endpoint = scripted_service(move |_| frames.clone());
    let (client, mut events) = Client::new(ClientConfig::master(ARN, &endpoint)).unwrap();
    client.connect().await.unwrap();
    let mut senders = Vec::new();
    loop {
        match next_event(&mut events).await {
            ClientEvent::Message(message) => senders.push(message.sender_client_id.unwrap()),
            ClientEvent::Status(status) => {
                let id = status.correlation_id;
                assert!(id == "c-1", "a status with a {}-character id reached the application", id.len());
                break;
            }
            ClientEvent::State(change) => assert_ne!(change.state, ConnectionState::Reconnecting, "{change:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let lengths: Vec<usize> = senders.iter().map(String::len).collect();
    assert_eq!(lengths, [256], "only the message from a valid sender id");
    client.disconnect(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_above_the_inbound_limit_drop_the_connection() {
    let _serial = one_at_a_time().await;
    let big_sdp = format!("v=0\r\n{}", "a=x\r\n".repeat(6_500));
    let big_offer = {
        let payload =
            encode_payload(format!(r#"{{"type":"offer","sdp":"{}"}}"#, big_sdp.replace("\r\n", "\\r\\n")).as_bytes());
        format!(r#"{{"messageType":"SDP_OFFER","senderClientId":"big","messagePayload":"{payload}"}}"#)
    };
    assert!(big_offer.len() < 64 * 1024 && big_offer.len() > 56 * 1024, "{}", big_offer.len());
    let endpoint = scripted_service(move |n| match n {
        0 => vec![Message::text("x".repeat(100 * 1024)), Message::text(offer_from("after-100k"))],
        1 => vec![Message::binary(vec![0u8; 2 << 20]), Message::text(offer_from("after-2m"))],
        _ => vec![Message::text(big_offer.clone())],
    });
    let (client, mut events) = Client::new(fast(ClientConfig::master(ARN, &endpoint))).unwrap();
    client.connect().await.unwrap();
    for size in [100 * 1024, 2 << 20] {
        let why = next_loss(&mut events).await;
        assert!(why.contains(&format!("{size} bytes exceeds the limit of 65536")), "{why}");
    }
    loop {
        match next_event(&mut events).await {
            ClientEvent::Message(message) => {
                assert_eq!(message.sender_client_id.as_deref(), Some("big"), "nothing after an oversized frame");
                assert_eq!(message.sdp.unwrap().sdp, big_sdp, "a message just under the limit is whole");
                break;
            }
            ClientEvent::State(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    client.disconnect(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_candidate_flood_is_held_within_the_budget() {
    let _serial = one_at_a_time().await;
    const PEERS: usize = 300;
    const PER_PEER: usize = 4;
    let candidate_frame = |peer: usize, i: usize| {
        let line = format!("candidate:{i} 1 udp 1 10.0.0.1 9 typ host {}", "x".repeat(1000));
        let payload = encode_payload(ice(line).to_json().as_bytes());
        format!(r#"{{"messageType":"ICE_CANDIDATE","senderClientId":"p{peer}","messagePayload":"{payload}"}}"#)
    };
    let mut frames = Vec::new();
    for i in 0..PER_PEER {
        frames.extend((0..PEERS).map(|peer| Message::text(candidate_frame(peer, i))));
    }
    frames.extend((0..PEERS).map(|peer| Message::text(offer_from(&format!("p{peer}")))));
    let endpoint = scripted_service(move |_| frames.clone());
    let config = ClientConfig { buffer_early_candidates: true, ..ClientConfig::master(ARN, &endpoint) };
    let (client, mut events) = Client::new(config).unwrap();
    let client = Arc::new(client);
    let sampled = client.clone();
    let most_held = tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..5_000 {
            most = most.max(sampled.metrics().early_candidates_held_bytes);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        most
    });
    client.connect().await.unwrap();
    let (mut candidates, mut offers) = (0, 0);
    while candidates < PEERS * PER_PEER || offers < PEERS {
        match next_event(&mut events).await {
            ClientEvent::Message(message) if message.ice.is_some() => candidates += 1,
            ClientEvent::Message(_) => offers += 1,
            ClientEvent::State(change) => assert_ne!(change.state, ConnectionState::Reconnecting, "{change:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let metrics = client.metrics();
    assert_eq!(metrics.early_candidates_held_bytes, 0, "every peer sent its SDP");
    assert!(metrics.early_candidates_overflowed > 0, "the flood exceeded the budget");
    let most_held = most_held.await.unwrap();
    assert!(most_held > 0, "the sampler saw candidates held");
    assert!(most_held <= DEFAULT_EARLY_CANDIDATE_BUDGET as u64, "held {most_held} bytes");
    client.disconnect(Duration::from_millis(200)).await;
}
