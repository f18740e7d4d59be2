//! Hostile WebSocket servers of our own against the C ABI, with the client in a
//! process of its own so that its peak RSS (`VmHWM`) is what the hostile peer
//! made it hold. Each scenario starts a server on 127.0.0.1, runs this test
//! binary again as the client process (`hostile_client_process`, which drives
//! the library through its `extern "C"` functions exactly as C does), and
//! asserts the client's counters and its memory growth after connecting.
//!
//! The scenarios run one after the other in one test: they are CPU-heavy and
//! measure memory, which parallel floods would disturb.

use futures_util::SinkExt;
use kvs_signaling::ffi::kvs_result::*;
use kvs_signaling::ffi::*;
use kvs_signaling::protocol::{IceCandidate, encode_payload};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::process::Command;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/hostile/1";
/// How long each hostile server plays against the client.
const PLAY: Duration = Duration::from_secs(6);
/// How long `on_message` takes in the client process: a slow application.
const SLOW_CALLBACK: Duration = Duration::from_millis(10);

/// The hostile behaviours, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Small valid candidates as fast as TCP takes them.
    SmallFlood,
    /// Candidates of about 60 KB (just under the 64 KiB message limit).
    LargeFlood,
    /// Pings as fast as TCP takes them; never reads a pong.
    PingFlood,
    /// 8 KB candidates from ever new peers that never send their SDP.
    EarlyCandidates,
    /// Messages and status responses with 60,000-character ids, then a marker.
    LongIds,
    /// A 2 MiB message on every connection.
    Oversized,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario::SmallFlood,
    Scenario::LargeFlood,
    Scenario::PingFlood,
    Scenario::EarlyCandidates,
    Scenario::LongIds,
    Scenario::Oversized,
];

fn candidate_frame(sender: &str, n: usize, padding: usize) -> String {
    let line = format!("candidate:{n} 1 udp 2122260223 192.0.2.1 {} typ host{}", 1024 + n % 60000, " ".repeat(padding));
    let ice =
        IceCandidate { candidate: line, sdp_mid: Some("0".into()), sdp_mline_index: Some(0), username_fragment: None };
    let payload = encode_payload(ice.to_json().as_bytes());
    format!(r#"{{"messageType":"ICE_CANDIDATE","senderClientId":"{sender}","messagePayload":"{payload}"}}"#)
}

/// Plays `scenario` on one accepted connection until `until`; returns the
/// frames it managed to write.
async fn play(scenario: Scenario, stream: tokio::net::TcpStream, until: Instant) -> u64 {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return 0 };
    let mut sent = 0u64;
    let long_id = "a".repeat(60_000);
    let mut n = 0usize;
    while Instant::now() < until {
        let message = match scenario {
            Scenario::SmallFlood => Message::text(candidate_frame("v1", n, 0)),
            Scenario::LargeFlood => Message::text(candidate_frame("v1", n, 44_000)),
            Scenario::PingFlood => Message::Ping(vec![b'p'; 125].into()),
            Scenario::EarlyCandidates => Message::text(candidate_frame(&format!("peer-{n}"), n, 6_000)),
            Scenario::LongIds if n < 2_000 && n.is_multiple_of(2) => Message::text(candidate_frame(&long_id, n, 0)),
            Scenario::LongIds if n < 2_000 => Message::text(format!(
                r#"{{"messageType":"STATUS_RESPONSE","statusResponse":{{"correlationId":"{long_id}","errorType":"X","statusCode":"400"}}}}"#
            )),
            Scenario::LongIds if n == 2_000 => Message::text(candidate_frame("marker", n, 0)),
            Scenario::LongIds => break,
            Scenario::Oversized if n == 0 => Message::text("x".repeat(2 << 20)),
            Scenario::Oversized => break,
        };
        n += 1;
        let write = tokio::time::timeout_at(until.into(), ws.send(message)).await;
        match write {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    // Hold the connection (without reading) until the play ends.
    tokio::time::sleep_until(until.into()).await;
    sent
}

/// Accepts every connection of the client (it reconnects) until the play ends.
async fn serve(scenario: Scenario, listener: TcpListener, until: Instant) -> (u64, u64) {
    let mut plays = Vec::new();
    while let Ok(Ok((stream, _))) = tokio::time::timeout_at(until.into(), listener.accept()).await {
        plays.push(tokio::spawn(play(scenario, stream, until)));
    }
    let connections = plays.len() as u64;
    let mut sent = 0;
    for play in plays {
        sent += play.await.unwrap_or(0);
    }
    (connections, sent)
}

/// The client process's report: the `key=value` pairs it wrote.
fn run_client(scenario: Scenario, endpoint: &str) -> BTreeMap<String, u64> {
    let report = std::env::temp_dir().join(format!("kvs-hostile-{}-{scenario:?}.txt", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["hostile_client_process", "--exact", "--ignored", "--test-threads=1"])
        .env("KVS_HOSTILE_ENDPOINT", endpoint)
        .env("KVS_HOSTILE_SCENARIO", format!("{scenario:?}"))
        .env("KVS_HOSTILE_REPORT", &report)
        .env("KVS_LOG", "error")
        .output()
        .expect("the client process runs");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    assert!(
        output.status.success() && !text.is_empty(),
        "{scenario:?}: client process failed\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

#[test]
fn hostile_servers_cannot_grow_the_c_clients_memory() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut table = Vec::new();
    for scenario in SCENARIOS {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("ws://{}", listener.local_addr().unwrap());
        // The client needs a moment to start and connect before the play counts.
        let until = Instant::now() + PLAY + Duration::from_secs(1);
        let server = runtime.spawn(serve(scenario, listener, until));
        let report = run_client(scenario, &endpoint);
        let (connections, sent) = runtime.block_on(server).unwrap();
        let growth_kb = report["peak_kb"].saturating_sub(report["connected_kb"]);
        table.push(format!(
            "{scenario:?}: peak RSS +{growth_kb} KiB after connecting (peak {} KiB); server wrote {sent} frames over {connections} connections; client got {} messages, {} reconnects, {} read pauses",
            report["peak_kb"], report["messages"], report["lost"], report["pauses"]
        ));
        match scenario {
            Scenario::SmallFlood | Scenario::LargeFlood => {
                assert!(report["messages"] > 50, "{scenario:?}: the slow callback got too few messages: {report:?}");
                assert!(report["pauses"] > 0, "{scenario:?}: the client never paused reading: {report:?}");
                assert!(report["max_queued"] <= 1025, "{scenario:?}: {report:?}");
                assert_eq!(report["lost"], 0, "{scenario:?}: back-pressure is not a drop: {report:?}");
            }
            Scenario::PingFlood => {
                assert!(report["lost"] >= 1, "a peer that never reads was not dropped: {report:?}");
            }
            Scenario::EarlyCandidates => {
                assert!(report["max_held"] <= 256 * 1024, "early candidates held beyond the budget: {report:?}");
                assert!(report["overflowed"] > 0, "{report:?}");
            }
            Scenario::LongIds => {
                assert_eq!(report["long_ids"], 0, "a long id reached a callback: {report:?}");
                // Once per connection: this server never answers the client's pings either.
                assert!(report["marker"] >= 1, "the valid message after them did not arrive: {report:?}");
            }
            Scenario::Oversized => {
                assert!(report["lost"] >= 1, "a 2 MiB message did not drop the connection: {report:?}");
                assert!(connections >= 2, "the client did not reconnect after the violation");
            }
        }
        // The default bounds hold about 1 MiB per client in the library; the
        // rest is allocator slack and the runtime's own buffers. Before the
        // bounds, SmallFlood grew by hundreds of MB and LargeFlood by GBs.
        assert!(growth_kb < 24 * 1024, "{scenario:?}: the client grew by {growth_kb} KiB: {report:?}");
    }
    println!("{}", table.join("\n"));
}

/// Counters of the client process, written by its callbacks.
static MESSAGES: AtomicU64 = AtomicU64::new(0);
static LONG_IDS: AtomicU64 = AtomicU64::new(0);
static MARKER: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static CONNECTED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn on_message(_userdata: *mut c_void, message: *const kvs_message) {
    let m = unsafe { &*message };
    MESSAGES.fetch_add(1, Ordering::SeqCst);
    if !m.sender_client_id.is_null() {
        let sender = unsafe { CStr::from_ptr(m.sender_client_id) }.to_bytes();
        if sender.len() > 256 {
            LONG_IDS.fetch_add(1, Ordering::SeqCst);
        }
        if sender == b"marker" {
            MARKER.fetch_add(1, Ordering::SeqCst);
        }
    }
    std::thread::sleep(SLOW_CALLBACK);
}

unsafe extern "C" fn on_status(_userdata: *mut c_void, status: *const kvs_status) {
    let s = unsafe { &*status };
    if !s.correlation_id.is_null() && unsafe { CStr::from_ptr(s.correlation_id) }.to_bytes().len() > 256 {
        LONG_IDS.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_state(_userdata: *mut c_void, state: u32, _reason: *const c_char) {
    if state == kvs_state::Reconnecting as u32 {
        LOST.fetch_add(1, Ordering::SeqCst);
    }
    if state == kvs_state::Connected as u32 {
        CONNECTED.fetch_add(1, Ordering::SeqCst);
    }
}

/// `VmHWM` (peak RSS) or `VmRSS` of this process, in KiB.
fn proc_status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn metrics(client: *const kvs_client) -> kvs_client_metrics {
    let mut metrics = std::mem::MaybeUninit::<kvs_client_metrics>::uninit();
    assert_eq!(kvs_client_get_metrics(client, metrics.as_mut_ptr()), KVS_OK);
    unsafe { metrics.assume_init() }
}

/// The client process of [`hostile_servers_cannot_grow_the_c_clients_memory`];
/// does nothing unless that test started it.
#[test]
#[ignore = "the client process of the hostile C ABI test, which runs it"]
fn hostile_client_process() {
    let (Ok(endpoint), Ok(scenario), Ok(report)) = (
        std::env::var("KVS_HOSTILE_ENDPOINT"),
        std::env::var("KVS_HOSTILE_SCENARIO"),
        std::env::var("KVS_HOSTILE_REPORT"),
    ) else {
        return;
    };
    let endpoint = CString::new(endpoint).unwrap();
    let arn = CString::new(ARN).unwrap();
    let mut config = kvs_client_config_default();
    config.channel_arn = arn.as_ptr();
    config.endpoint = endpoint.as_ptr();
    config.on_message = Some(on_message);
    config.on_status = Some(on_status);
    config.on_state = Some(on_state);
    config.buffer_early_candidates = scenario == "EarlyCandidates";
    config.ping_interval_ms = 1000;
    config.pong_timeout_ms = 1000;
    config.backoff_initial_ms = 100;
    config.backoff_max_ms = 500;
    let mut client = ptr::null_mut();
    assert_eq!(kvs_client_new(&config, &mut client), KVS_OK);
    assert_eq!(kvs_client_start(client), KVS_OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    while CONNECTED.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(1));
    }
    let connected_kb = proc_status_kb("VmRSS:");
    let (mut max_held, mut max_queued) = (0, 0);
    let ends = Instant::now() + PLAY;
    while Instant::now() < ends {
        let m = metrics(client);
        max_held = max_held.max(m.early_candidates_held_bytes);
        max_queued = max_queued.max(m.callbacks_queued);
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = metrics(client);
    let peak_kb = proc_status_kb("VmHWM:");
    let text = format!(
        "connected_kb={connected_kb} peak_kb={peak_kb} messages={} long_ids={} marker={} lost={} pauses={} max_queued={max_queued} max_held={max_held} overflowed={}",
        MESSAGES.load(Ordering::SeqCst),
        LONG_IDS.load(Ordering::SeqCst),
        MARKER.load(Ordering::SeqCst),
        LOST.load(Ordering::SeqCst),
        m.backpressure_pauses,
        m.early_candidates_overflowed,
    );
    std::fs::write(report, text).unwrap();
    // Exit without freeing: a free would wait for the slow callbacks' reports,
    // and the measurement is done.
    std::process::exit(0);
}
