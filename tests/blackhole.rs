//! Dead links: the connection to the service dies without a close or a reset
//! (a Wi-Fi or LTE link gone), and the client must notice through the kernel
//! (`ClientConfig::tcp_user_timeout`: `TCP_USER_TIMEOUT` and keepalive) in about
//! the deadline, not after its ping interval and pong timeout.
//!
//! The black holes are real (see `blackhole_support`): each such test runs in
//! its own process inside a private network namespace where tc filters take
//! the connection's packets off loopback. The last case is the userspace
//! approximation over plain loopback: a proxy that stops reading, so that its
//! receive window closes while its TCP stack still acknowledges.
//!
//! What is asserted, and why it holds:
//!
//! * An idle socket (nothing to send): keepalive probes after half the
//!   deadline, and the user timeout fails the socket once a probe is out and
//!   nothing came back for the deadline (`ETIMEDOUT`).
//! * A socket with data in flight: the data stays unacknowledged, and the user
//!   timeout fails the socket the deadline after it was written.
//! * A zero window (the proxy): nothing is unacknowledged, but Linux (5.11 and
//!   later) also fails a socket whose zero-window probes go on for longer than
//!   the user timeout; keepalive does not probe while data waits. Elsewhere the
//!   ping (and the supervisor's stalled-write bound) remain.

mod blackhole_support;
mod reconnect_support;

use blackhole_support::{Netns, client_ports, private_netns};
use kvs_signaling::client::{ClientConfig, ConnectionState, Metrics, Pacing, StateReason};
use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use reconnect_support::{Peer, Stream, VIEWER_ID, at_emulator, fast, wait_until};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

const CHANNEL: &str = "blackhole";
/// The dead-link deadline of the tests: well below their pings (20 s + 10 s).
const DEADLINE: Duration = Duration::from_secs(2);
/// What "in about the deadline" allows: scheduling, the keepalive's whole
/// seconds and the retransmission timer's granularity, on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(future)
}

async fn start() -> (Emulator, String) {
    let config = EmulatorConfig { channels: vec![CHANNEL.into()], received_log: 100_000, ..EmulatorConfig::default() };
    let emulator = Emulator::start(config).await.expect("the emulator starts");
    let arn = emulator.channel_arn(CHANNEL).unwrap();
    (emulator, arn)
}

/// A client config with the dead-link `deadline`, the default pings (20 s and
/// 10 s: far slower) and quick reconnects.
fn config(base: ClientConfig, deadline: Duration) -> ClientConfig {
    let mut config = fast(base);
    config.tcp_user_timeout = deadline;
    config.ping_interval = Duration::from_secs(20);
    config.pong_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(1);
    config
}

/// The local port of the one client connection to `server_port` (not
/// counting `except`).
async fn client_port(server_port: u16, except: &[u16]) -> u16 {
    let mut found = Vec::new();
    wait_until("the client's connection to show in /proc/net/tcp", Duration::from_secs(5), || {
        found = client_ports(server_port).into_iter().filter(|p| !except.contains(p)).collect();
        found.len() == 1
    })
    .await;
    found[0]
}

/// When `peer` first reported `Reconnecting` after `since`, and why.
fn first_loss(peer: &Peer, since: Instant) -> Option<(Duration, StateReason)> {
    peer.record()
        .states
        .iter()
        .find(|(at, change)| *at >= since && change.state == ConnectionState::Reconnecting)
        .map(|(at, change)| (at.duration_since(since), change.reason.clone()))
}

/// Waits up to `limit` for `peer` to report `Reconnecting` after `since`.
async fn wait_loss(peer: &Peer, since: Instant, limit: Duration) -> (Duration, StateReason) {
    wait_until(&format!("{} to notice the dead link", peer.name), limit, || first_loss(peer, since).is_some()).await;
    first_loss(peer, since).unwrap()
}

fn assert_dead_link(reason: &StateReason, metrics: &Metrics) {
    match reason {
        StateReason::ConnectionLost(text) => {
            assert!(text.contains("the peer stopped acknowledging (TCP user timeout)"), "{text}")
        }
        other => panic!("the loss should be a dead link, not {other:?}"),
    }
    assert_eq!(metrics.dead_link_detections, 1, "{metrics:?}");
    assert_eq!(metrics.pings_sent, 0, "the ping played no part: {metrics:?}");
}

/// Holes the master's connection, checks that it is noticed in about the
/// deadline as a dead link and that the master reconnects (its new
/// connection has another port, outside the hole). `streaming` keeps a
/// numbered stream going through the hole: every number the master accepted
/// must then reach the emulator (the frames written into the hole were never
/// acknowledged, so they are written again on the new socket).
async fn one_connection(netns: &Netns, streaming: bool) {
    let (emulator, arn) = start().await;
    let port = emulator.local_addr().port();
    let master = Peer::new("master", config(ClientConfig::master(&arn, &emulator.ws_endpoint()), DEADLINE));
    master.client.connect().await.expect("the master connects");
    let mut stream = streaming.then(|| Stream::start(&master.client, "m", Some(VIEWER_ID), Duration::from_millis(50)));
    let old = client_port(port, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hole = netns.black_hole_connection(old, port);
    let (after, reason) = wait_loss(&master, hole.started, DEADLINE + SLACK).await;
    eprintln!("streaming={streaming}: noticed {} ms after the black hole: {reason:?}", after.as_millis());
    assert!(after >= DEADLINE / 2, "noticed after {after:?}, before the link could be judged dead");
    master.wait_reconnected(1).await;
    let new = client_port(port, &[old]).await;
    assert_ne!(new, old);
    let metrics = master.metrics();
    assert_dead_link(&reason, &metrics);
    assert_eq!(metrics.reconnects, 1, "{metrics:?}");
    if let Some(stream) = &mut stream {
        stream.stop().await;
        wait_until("every frame confirmed on the new socket", Duration::from_secs(10), || {
            let m = master.metrics();
            m.messages_queued == 0 && m.messages_unconfirmed == 0
        })
        .await;
        let arrival = at_emulator(&emulator, stream, &master, "master");
        let resent = master.metrics().messages_resent;
        eprintln!(
            "through the black hole: {} accepted, {} lost, {} duplicates, {resent} resent",
            stream.sent().accepted.len(),
            arrival.lost.len(),
            arrival.duplicates
        );
        assert!(arrival.lost.is_empty(), "lost through the black hole: {:?}", arrival.lost);
        assert!(resent > 0, "nothing was written into the hole and resent");
    }
    drop(hole);
    master.client.disconnect(Duration::from_millis(200)).await;
    emulator.shutdown().await;
}

#[test]
fn idle_dead_link_is_noticed_by_keepalive_in_about_the_deadline() {
    let Some(netns) = private_netns("idle_dead_link_is_noticed_by_keepalive_in_about_the_deadline") else {
        return;
    };
    block_on(one_connection(&netns, false));
}

#[test]
fn dead_link_with_data_in_flight_is_noticed_by_the_user_timeout() {
    let Some(netns) = private_netns("dead_link_with_data_in_flight_is_noticed_by_the_user_timeout") else {
        return;
    };
    block_on(one_connection(&netns, true));
}

/// The whole emulator goes silent for a while (its port holed, new SYNs
/// included): the client notices in about the deadline, its attempts fail
/// meanwhile, and it is back soon after the black hole ends.
#[test]
fn silent_service_is_noticed_and_rejoined_after_the_black_hole() {
    let Some(netns) = private_netns("silent_service_is_noticed_and_rejoined_after_the_black_hole") else {
        return;
    };
    block_on(async {
        let (emulator, arn) = start().await;
        let port = emulator.local_addr().port();
        let master = Peer::new("master", config(ClientConfig::master(&arn, &emulator.ws_endpoint()), DEADLINE));
        master.client.connect().await.expect("the master connects");
        let hole = netns.black_hole_port(port);
        let started = hole.started;
        let (after, reason) = wait_loss(&master, started, DEADLINE + SLACK).await;
        eprintln!("noticed {} ms after the black hole: {reason:?}", after.as_millis());
        // Attempts into the hole time out (connect_timeout 1 s).
        wait_until("a failed attempt into the hole", Duration::from_secs(5), || master.metrics().connect_failures >= 1)
            .await;
        assert_eq!(master.states().last(), Some(&ConnectionState::Reconnecting));
        let hole_ended = Instant::now();
        hole.end();
        master.wait_reconnected(1).await;
        let back = hole_ended.elapsed();
        eprintln!("back {} ms after the black hole ended", back.as_millis());
        let metrics = master.metrics();
        assert_dead_link(&reason, &metrics);
        assert_eq!(metrics.reconnects, 1, "{metrics:?}");
        master.client.disconnect(Duration::from_millis(200)).await;
        emulator.shutdown().await;
    });
}

/// Time from a black hole on the master's connection to its `Reconnecting`,
/// and to the first message its viewer receives over the new socket: with the
/// default dead-link deadline (5 s) and, as the baseline, with it off (the
/// default ping: 20 s interval, 10 s pong timeout). Both run at once; the
/// figures are printed. Only generous bounds are asserted.
#[test]
fn time_to_reconnecting_with_the_user_timeout_and_with_ping_only() {
    let Some(netns) = private_netns("time_to_reconnecting_with_the_user_timeout_and_with_ping_only") else {
        return;
    };
    block_on(async {
        let netns = &netns;
        // One emulator per case, so that each master's connection is the
        // first one to its emulator's port.
        let case = |deadline: Duration| async move {
            let (emulator, arn) = start().await;
            let port = emulator.local_addr().port();
            let endpoint = emulator.ws_endpoint();
            let mut base = ClientConfig::master(&arn, &endpoint);
            base.tcp_user_timeout = deadline;
            let master = Peer::new("master", fast(base));
            master.client.connect().await.expect("the master connects");
            let old = client_port(port, &[]).await;
            let mut viewer_config = ClientConfig::viewer(&arn, VIEWER_ID, &endpoint);
            viewer_config.tcp_user_timeout = deadline;
            let viewer = Peer::new("viewer", fast(viewer_config));
            viewer.client.connect().await.expect("the viewer connects");
            let mut stream = Stream::start(&master.client, "m", Some(VIEWER_ID), Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let hole = netns.black_hole_connection(old, port);
            let (lost, reason) = wait_loss(&master, hole.started, Duration::from_secs(45)).await;
            let lost_at = hole.started + lost;
            wait_until("a message over the new socket", Duration::from_secs(10), || {
                viewer.record().received.iter().any(|(_, at)| *at > lost_at)
            })
            .await;
            let delivered = viewer.record().received.iter().find(|(_, at)| *at > lost_at).map(|(_, at)| *at).unwrap();
            stream.stop().await;
            let metrics = master.metrics();
            drop(hole);
            master.client.disconnect(Duration::from_millis(200)).await;
            viewer.client.disconnect(Duration::from_millis(200)).await;
            emulator.shutdown().await;
            (lost, delivered.duration_since(lost_at - lost), reason, metrics)
        };
        let default_deadline = ClientConfig::master("a", "ws://h").tcp_user_timeout;
        let ((kernel, kernel_delivered, kernel_reason, kernel_metrics), (ping, ping_delivered, ping_reason, _)) =
            tokio::join!(case(default_deadline), case(Duration::ZERO));
        eprintln!(
            "black hole -> RECONNECTING: {} ms with tcp_user_timeout {} s ({kernel_reason:?}), {} ms with ping/pong only ({ping_reason:?})",
            kernel.as_millis(),
            default_deadline.as_secs(),
            ping.as_millis()
        );
        eprintln!(
            "black hole -> first message on the new socket: {} ms with tcp_user_timeout, {} ms with ping/pong only",
            kernel_delivered.as_millis(),
            ping_delivered.as_millis()
        );
        assert_dead_link(&kernel_reason, &kernel_metrics);
        assert!(kernel < default_deadline + SLACK, "{kernel:?}");
        assert!(ping > kernel, "the ping/pong baseline ({ping:?}) beat the kernel ({kernel:?})");
        match ping_reason {
            StateReason::ConnectionLost(text) => assert!(text.contains("no answer to a ping"), "{text}"),
            other => panic!("{other:?}"),
        }
    });
}

/// A proxy on loopback that forwards one connection at a time to `upstream`;
/// `freeze` makes it stop reading and forwarding the first connection (its
/// receive window, 4 KiB at most, then closes; its TCP stack still
/// acknowledges). Later connections pass untouched.
async fn freezing_proxy(upstream: std::net::SocketAddr, freeze: watch::Receiver<bool>) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let freeze = if first { freeze.clone() } else { watch::channel(false).1 };
            first = false;
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, freeze.clone()));
            tokio::spawn(pump(server_read, client_write, freeze));
        }
    });
    port
}

/// Copies `from` to `to` until either ends or `freeze` turns true; then holds
/// both, reading nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut freeze: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        // A connection that can never freeze (its sender is gone) never does.
        let frozen = async {
            if freeze.wait_for(|frozen| *frozen).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = frozen => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            },
        }
    }
    // Hold both sockets open, unread, until the test ends.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// The userspace approximation: the proxy stops reading while the master
/// writes a burst (unpaced), so the proxy's window closes with data waiting
/// in the master's socket. Nothing is unacknowledged, yet the kernel fails
/// the socket once its zero-window probes have gone on for the deadline
/// (Linux 5.11 and later), long before the ping would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(target_os = "linux"), ignore = "TCP_USER_TIMEOUT is Linux only")]
async fn zero_window_is_noticed_by_the_user_timeout() {
    let (emulator, arn) = start().await;
    let (freeze, frozen) = watch::channel(false);
    let port = freezing_proxy(emulator.local_addr(), frozen).await;
    let endpoint = format!("ws://127.0.0.1:{port}");
    let mut base = ClientConfig::master(&arn, &endpoint);
    base.pacing = Pacing { sdp_per_second: 0, ice_per_second: 0 };
    base.send_queue_capacity = 4096;
    let master = Peer::new("master", config(base, DEADLINE));
    master.client.connect().await.expect("the master connects through the proxy");
    freeze.send(true).unwrap();
    let frozen_at = Instant::now();
    let stream = Stream::manual("m", Some(VIEWER_ID));
    for _ in 0..2000 {
        stream.send_next(&master.client).expect("accepted");
    }
    let (after, reason) = wait_loss(&master, frozen_at, DEADLINE + SLACK + Duration::from_secs(2)).await;
    eprintln!("zero window noticed {} ms after the proxy stopped reading: {reason:?}", after.as_millis());
    assert_dead_link(&reason, &master.metrics());
    master.wait_reconnected(1).await;
    master.client.disconnect(Duration::from_millis(200)).await;
    emulator.shutdown().await;
}

/// With `resend_unconfirmed_sdp` off, offers written into a black hole are not
/// sent again on the new socket: each is reported "Unconfirmed" instead, and
/// every accepted offer ends either read by the emulator or reported.
#[test]
fn unconfirmed_offers_are_reported_instead_of_resent_when_asked() {
    let Some(netns) = private_netns("unconfirmed_offers_are_reported_instead_of_resent_when_asked") else {
        return;
    };
    block_on(async {
        use kvs_signaling::client::{Client, ClientEvent, StatusOrigin};
        use std::collections::BTreeSet;
        let (emulator, arn) = start().await;
        let port = emulator.local_addr().port();
        let mut base = config(ClientConfig::master(&arn, &emulator.ws_endpoint()), DEADLINE);
        base.resend_unconfirmed_sdp = false;
        base.pacing = Pacing { sdp_per_second: 0, ice_per_second: 0 };
        let (client, mut events) = Client::new(base).expect("valid config");
        client.connect().await.expect("the master connects");
        let old = client_port(port, &[]).await;
        let hole = netns.black_hole_connection(old, port);
        let mut accepted = Vec::new();
        for _ in 0..20 {
            accepted.push(client.send_sdp_offer(Some(VIEWER_ID), "v=0\r\n", None).expect("accepted"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Until the client is back on a new socket, collect what it reports.
        let mut unconfirmed = BTreeSet::new();
        let (mut lost, mut back) = (false, false);
        let deadline = Instant::now() + DEADLINE + SLACK + Duration::from_secs(5);
        while !back {
            let event = tokio::time::timeout_at(deadline.into(), events.recv()).await.expect("reconnected in time");
            match event.expect("events") {
                ClientEvent::Status(s) if s.origin == StatusOrigin::Local => {
                    assert_eq!(s.error_type.as_deref(), Some("Unconfirmed"), "{s:?}");
                    unconfirmed.insert(s.correlation_id);
                }
                ClientEvent::State(change) if change.state == ConnectionState::Reconnecting => lost = true,
                ClientEvent::State(change) if change.state == ConnectionState::Connected && lost => back = true,
                _ => {}
            }
        }
        drop(hole);
        wait_until("the queue to drain", Duration::from_secs(5), || {
            let m = client.metrics();
            m.messages_queued == 0 && m.messages_unconfirmed == 0
        })
        .await;
        let read: BTreeSet<String> =
            emulator.received().into_iter().filter(|(from, _)| from == "master").map(|(_, id)| id).collect();
        eprintln!(
            "{} offers: {} read by the emulator, {} reported Unconfirmed",
            accepted.len(),
            read.len(),
            unconfirmed.len()
        );
        assert!(!unconfirmed.is_empty(), "no offer was written into the hole");
        for id in &accepted {
            assert!(
                read.contains(id) != unconfirmed.contains(id),
                "{id}: read {} reported {}",
                read.contains(id),
                unconfirmed.contains(id)
            );
        }
        assert_eq!(client.metrics().messages_resent, 0, "an offer was resent");
        client.disconnect(Duration::from_millis(200)).await;
        emulator.shutdown().await;
    });
}
