//! Soak: a master and a viewer on the control-plane path exchange numbered ICE
//! candidates both ways for a while, under random faults of every kind the
//! emulator injects. At the end the delivery guarantee of `reconnect_support`
//! holds, every fault was recovered from, and neither the resident memory nor
//! the open file descriptors of the process grew after the warm-up.
//!
//! `soak_short` (about 20 s) runs by default. `soak_long` is ignored by default:
//! `KVS_SOAK_SECS=600 cargo test --test soak -- --ignored` runs it (default 300 s).
//! `KVS_SOAK_SEED` replays a run's fault sequence (each run prints its seed).

mod reconnect_support;

use kvs_signaling::aws::{ControlPlaneConfig, Credentials, StaticCredentials};
use kvs_signaling::client::{AwsConfig, ClientConfig, ConnectionState};
use kvs_signaling::emulator::{ConnectRefusal, ControlPlaneFault, Emulator, EmulatorConfig, Operation, Target};
use reconnect_support::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANNEL: &str = "soak";
const PERIOD: Duration = Duration::from_millis(60);

fn client_config(emulator: &Emulator, client_id: Option<&str>) -> ClientConfig {
    let credentials = Arc::new(StaticCredentials::new(Credentials::new("AKIDSOAK", "secret", None)));
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials);
    control_plane.endpoint_override = Some(emulator.control_plane_url());
    control_plane.request_timeout = Duration::from_secs(2);
    let mut config = fast(ClientConfig::via_control_plane(CHANNEL, client_id, AwsConfig::new(control_plane)));
    // Renewed before the service's 5 s maximum age; pings well inside its idle timeout.
    config.max_connection_age = Duration::from_secs(3);
    config.ping_interval = Duration::from_millis(500);
    config.pong_timeout = Duration::from_millis(1500);
    config
}

/// xorshift64*, seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

/// Injects one random fault; returns its name.
async fn inject(emulator: &Emulator, arn: &str, rng: &mut Rng) -> &'static str {
    match rng.below(10) {
        0 => {
            emulator.drop_connections(&Target::master(arn));
            "drop master"
        }
        1 => {
            emulator.drop_connections(&Target::viewer(arn, VIEWER_ID));
            "drop viewer"
        }
        2 => {
            emulator.drop_connections(&Target::all());
            "drop all"
        }
        3 => {
            emulator.send_go_away(&Target::all(), Some(rng.millis(200, 800)));
            "go away"
        }
        4 => {
            emulator.send_reconnect_ice_server(&Target::all());
            "reconnect ice server"
        }
        5 => {
            let status = [500, 503, 429][rng.below(3) as usize];
            emulator.refuse_connections(rng.millis(200, 800), ConnectRefusal::Status(status));
            emulator.drop_connections(&Target::all());
            "refuse and drop"
        }
        6 => {
            emulator.fail_control_plane(ControlPlaneFault {
                status: 503,
                count: Some(1 + rng.below(3)),
                operations: vec![Operation::GetSignalingChannelEndpoint, Operation::GetIceServerConfig],
                ..ControlPlaneFault::default()
            });
            emulator.refuse_connections(Duration::from_millis(100), ConnectRefusal::Status(503));
            emulator.drop_connections(&Target::all());
            "control plane 5xx"
        }
        7 => {
            emulator.delay_frames(rng.millis(50, 300), Some(rng.millis(300, 1000)));
            "delay frames"
        }
        8 => {
            emulator.restart(rng.millis(100, 500)).await.expect("restart");
            "restart"
        }
        _ => {
            emulator.close_connections(&Target::all(), 1001, "going away");
            "close"
        }
    }
}

/// Waits until both clients are connected and the emulator holds just their
/// two sockets (replaced and dropped ones gone): a quiet point to measure at.
async fn settle(emulator: &Emulator, master: &Peer, viewer: &Peer) {
    wait_until("both clients connected, two sockets open", WAIT, || {
        master.client.state() == ConnectionState::Connected
            && viewer.client.state() == ConnectionState::Connected
            && emulator.stats().open_connections == 2
    })
    .await;
}

/// (RSS KiB, open fds), the lower of a few readings a moment apart.
async fn footprint() -> (u64, usize) {
    let mut best = (u64::MAX, usize::MAX);
    for _ in 0..3 {
        best = (best.0.min(rss_kib()), best.1.min(open_fds()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    best
}

async fn soak(total: Duration) {
    let seed = std::env::var("KVS_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("soak for {total:?}, KVS_SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let emulator = Emulator::start(EmulatorConfig {
        channels: vec![CHANNEL.into()],
        quotas: true,
        idle_timeout: Duration::from_secs(3),
        max_connection_age: Duration::from_secs(5),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let arn = emulator.channel_arn(CHANNEL).unwrap();
    let master = Peer::new("master", client_config(&emulator, None));
    let viewer = Peer::new("viewer", client_config(&emulator, Some(VIEWER_ID)));
    master.client.connect().await.unwrap();
    viewer.client.connect().await.unwrap();
    let mut to_viewer = Stream::start(&master.client, "m", Some(VIEWER_ID), PERIOD);
    let mut to_master = Stream::start(&viewer.client, "v", None, PERIOD);

    let started = Instant::now();
    let warm_up = total / 4;
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut baseline = None;
    let mut samples = Vec::new();
    while started.elapsed() < total {
        let fault = inject(&emulator, &arn, &mut rng).await;
        *faults.entry(fault).or_default() += 1;
        tokio::time::sleep(rng.millis(200, 900)).await;
        emulator.clear_faults();
        settle(&emulator, &master, &viewer).await;
        if started.elapsed() >= warm_up {
            let sample = footprint().await;
            baseline.get_or_insert(sample);
            samples.push(sample);
        }
    }

    let outcome = finish(&master, &viewer, &mut to_viewer, &mut to_master).await;
    outcome.assert_nothing_failed();
    outcome.assert_lost_only_near_drops();
    let (rss, fds) = footprint().await;
    let (rss0, fds0) = baseline.expect("samples after the warm-up");
    let accepted = outcome.to_viewer.accepted.len() + outcome.to_master.accepted.len();
    println!(
        "faults {faults:?}; {accepted} sent, {} lost on the wire; losses {}; RSS {rss0} -> {rss} KiB; fds {fds0} -> {fds}",
        outcome.missing_total(),
        outcome.losses.len()
    );
    println!("footprint samples after warm-up: {samples:?}");
    assert!(faults.values().sum::<usize>() >= 5, "too few faults: {faults:?}");
    assert!(outcome.missing_total() <= accepted / 20, "lost {} of {accepted}", outcome.missing_total());
    // Flat: the sockets, tasks and buffers of each reconnect are released.
    assert!(fds <= fds0 + 2, "open fds grew from {fds0} to {fds}");
    // Allocator noise stays well under this; a leak per reconnect or per
    // message (hundreds of each) would not.
    let allowed_kib = 3 * 1024 + total.as_secs() * 8;
    assert!(rss <= rss0 + allowed_kib, "RSS grew from {rss0} to {rss} KiB (allowed {allowed_kib})");
    for peer in [&master, &viewer] {
        let metrics = peer.metrics();
        assert_eq!(metrics.state, ConnectionState::Connected, "{}", peer.name);
        assert!(metrics.reconnects >= 3, "{}: {} reconnects", peer.name, metrics.reconnects);
    }
    master.client.disconnect(Duration::from_secs(1)).await;
    viewer.client.disconnect(Duration::from_secs(1)).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with KVS_SOAK_SECS=N cargo test --test soak -- --ignored"]
async fn soak_long() {
    let secs = std::env::var("KVS_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    soak(Duration::from_secs(secs)).await;
}
