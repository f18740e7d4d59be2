//! Connect time against emulators started in-process (one plain, one with TLS
//! and SigV4 checks), with the round trips each path needs.
//!
//! Paths (each `--iterations` times, a fresh client and socket every time):
//! * `raw-ws`: TCP + WebSocket upgrade with tokio-tungstenite (floor, plain).
//! * `rust-api-ws`, `c-abi-ws`: `Client::connect` / `kvs_client_connect`, ws://.
//! * `raw-tls-ws`: TCP + TLS 1.3 full handshake + upgrade of a URL presigned
//!   once, untimed (floor, TLS: the emulator checks the signature, the client
//!   signs nothing).
//! * `rust-api-cold`, `c-abi-cold`: a new client through the control plane
//!   (by channel name): DescribeSignalingChannel, GetSignalingChannelEndpoint,
//!   presign, TLS + upgrade; GetIceServerConfig runs in parallel.
//! * `rust-api-warm`, `c-abi-warm`: a new client whose endpoint cache file
//!   already holds the channel: presign, TLS + upgrade.
//!
//! The C paths run `--c-program` (bench/c/relay) as a child process against the
//! same emulators. Round trips are counted on one extra run of each path
//! through a local TCP proxy: TCP connections (1 round trip each), TLS
//! handshakes (TLS 1.3: 1 each), HTTP requests (emulator counters: 1 each) and
//! WebSocket upgrades (1 each). `round_trips` is the sequential path (the
//! GetIceServerConfig call, 3 round trips on its own connection, overlaps the
//! socket); `round_trips_total` counts it too.

use crate::common::{Args, BoxError, Result, authority, channel_url, median, percentile, raw_connect, runtime};
use kvs_signaling::aws::{ControlPlane, ControlPlaneConfig, Credentials, StaticCredentials, tls_config};
use kvs_signaling::client::{AwsConfig, Client, ClientConfig};
use kvs_signaling::emulator::{Emulator, EmulatorConfig, TlsSetting};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ACCESS_KEY: &str = "AKIDBENCHKVSSIGNALING";
const SECRET_KEY: &str = "bench-secret-key-for-the-emulator";
const CHANNEL: &str = "bench-connect";
/// How long a counted run waits after connecting, so that the background
/// GetIceServerConfig is counted too.
const LINGER: Duration = Duration::from_millis(300);
/// Longest whole run.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Counts what passes through: connections and TLS handshakes.
#[derive(Default)]
struct ProxyCounters {
    connections: AtomicU64,
    tls: AtomicU64,
}

/// A TCP proxy to `upstream` on 127.0.0.1:0; returns its port.
async fn start_proxy(upstream: std::net::SocketAddr, counters: Arc<ProxyCounters>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let counters = counters.clone();
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let mut first = [0u8; 1];
                if let Ok(1) = inbound.peek(&mut first).await
                    && first[0] == 0x16
                {
                    counters.tls.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    let _ = outbound.shutdown().await;
                }
            });
        }
    });
    Ok(port)
}

/// TCP + TLS (with `tls`) + upgrade, as a client without signaling logic does it.
async fn tls_ws(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<()> {
    let host = authority(url);
    let tcp = TcpStream::connect(&host).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(host.split(':').next().unwrap_or("").to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let request = url.into_client_request()?;
    let (mut socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Rustls(stream)).await?;
    let _ = socket.close(None).await;
    Ok(())
}

fn control_plane_config(url: &str, ca: &Path) -> ControlPlaneConfig {
    let credentials = Arc::new(StaticCredentials::new(Credentials::new(ACCESS_KEY, SECRET_KEY, None)));
    let mut config = ControlPlaneConfig::new("us-west-2", credentials);
    config.endpoint_override = Some(url.to_owned());
    config.ca_bundle = Some(ca.to_path_buf());
    config
}

/// A master that bootstraps through the control plane at `url`.
fn cp_client(url: &str, ca: &Path, cache_file: Option<&Path>) -> Result<Client> {
    let mut aws = AwsConfig::new(control_plane_config(url, ca));
    aws.endpoint_cache_path = cache_file.map(Path::to_path_buf);
    let (client, _events) = Client::new(ClientConfig::via_control_plane(CHANNEL, None, aws))?;
    Ok(client)
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

struct Measured {
    name: &'static str,
    baseline: &'static str,
    what: &'static str,
    samples_ms: Vec<f64>,
    counts: Option<Counts>,
}

#[derive(Clone, Copy)]
struct Counts {
    tcp: u64,
    tls: u64,
    http: u64,
    ice: u64,
    upgrades: u64,
}

impl Measured {
    fn to_json(&self) -> Value {
        let mut sorted = self.samples_ms.clone();
        let median = median(&mut sorted);
        let (round_trips, total, counts) = match self.counts {
            Some(c) => {
                let total = c.tcp + c.tls + c.http + c.upgrades;
                (
                    json!(total - 3 * c.ice),
                    json!(total),
                    json!({"tcp_connections": c.tcp, "tls_handshakes": c.tls, "http_requests": c.http,
                           "of_which_get_ice_server_config": c.ice, "websocket_upgrades": c.upgrades}),
                )
            }
            None => (Value::Null, Value::Null, Value::Null),
        };
        json!({
            "path": self.name, "baseline": self.baseline, "what": self.what,
            "median_ms": median, "p90_ms": percentile(&sorted, 90.0), "iterations": sorted.len(),
            "round_trips": round_trips, "round_trips_total": total, "counts": counts,
        })
    }
}

async fn time_it<'a>(iterations: usize, mut step: impl FnMut() -> Step<'a>) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        step().await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(samples)
}

/// Runs the C program with `args`; its JSON line.
fn c_program(program: &Path, args: &[&str]) -> Result<Value> {
    let output = Command::new(program).args(args).output()?;
    if !output.status.success() {
        return Err(format!(
            "{} {}: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or("no JSON line from the C program")?;
    Ok(serde_json::from_str(line)?)
}

fn samples_of(value: &Value, key: &str) -> Vec<f64> {
    value[key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

struct Emulators {
    plain: Emulator,
    tls: Emulator,
    plain_counters: Arc<ProxyCounters>,
    tls_counters: Arc<ProxyCounters>,
    plain_proxy: u16,
    tls_proxy: u16,
}

impl Emulators {
    /// Counts one proxied run of `step` against the plain (`tls` false) or TLS emulator.
    async fn count(&self, tls: bool, upgrades: u64, step: Step<'_>) -> Result<Counts> {
        let (counters, emulator) =
            if tls { (&self.tls_counters, &self.tls) } else { (&self.plain_counters, &self.plain) };
        let c0 = counters.connections.load(Ordering::Relaxed);
        let t0 = counters.tls.load(Ordering::Relaxed);
        let s0 = emulator.stats().control_plane;
        step.await?;
        tokio::time::sleep(LINGER).await;
        let s1 = emulator.stats().control_plane;
        Ok(Counts {
            tcp: counters.connections.load(Ordering::Relaxed) - c0,
            tls: counters.tls.load(Ordering::Relaxed) - t0,
            http: s1.total() - s0.total(),
            ice: s1.get_ice_server_config - s0.get_ice_server_config,
            upgrades,
        })
    }
}

pub fn run(args: &Args) -> Result<Value> {
    let iterations = args.num("iterations", 30)? as usize;
    let c_prog = args.opt("c-program").map(PathBuf::from);
    // The emulators run on their own runtime (2 workers, like the binary); the
    // Rust clients on a 1-worker runtime, like the library's.
    let service_rt = runtime(2);
    let work = std::env::temp_dir().join(format!("kvs-bench-connect-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let ca_path = work.join("ca.pem");
    let emulators = service_rt.block_on(async {
        let plain =
            Emulator::start(EmulatorConfig { channels: vec![CHANNEL.into()], ..EmulatorConfig::default() }).await?;
        let tls = Emulator::start(EmulatorConfig {
            channels: vec![CHANNEL.into()],
            tls: Some(TlsSetting::Generate { ca_out: Some(ca_path.clone()) }),
            auth: Some(vec![(ACCESS_KEY.into(), SECRET_KEY.into())]),
            ..EmulatorConfig::default()
        })
        .await?;
        let plain_counters = Arc::new(ProxyCounters::default());
        let tls_counters = Arc::new(ProxyCounters::default());
        let plain_proxy = start_proxy(plain.local_addr(), plain_counters.clone()).await?;
        let tls_proxy = start_proxy(tls.local_addr(), tls_counters.clone()).await?;
        Ok::<_, BoxError>(Emulators { plain, tls, plain_counters, tls_counters, plain_proxy, tls_proxy })
    })?;
    let result = measure(&emulators, iterations, c_prog.as_deref(), &ca_path, &work);
    service_rt.block_on(async {
        emulators.plain.shutdown().await;
        emulators.tls.shutdown().await;
    });
    service_rt.shutdown_timeout(Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(&work);
    let paths: Vec<Value> = result?.iter().map(Measured::to_json).collect();
    Ok(json!({"bench": "connect", "paths": paths}))
}

fn measure(e: &Emulators, iterations: usize, c_prog: Option<&Path>, ca: &Path, work: &Path) -> Result<Vec<Measured>> {
    let arn = e.plain.channel_arn(CHANNEL).ok_or("no channel")?;
    let tls_arn = e.tls.channel_arn(CHANNEL).ok_or("no TLS channel")?;
    let plain_ws = e.plain.ws_endpoint();
    let proxied_ws = format!("ws://127.0.0.1:{}", e.plain_proxy);
    let cp_url = e.tls.control_plane_url();
    let proxied_cp = format!("https://127.0.0.1:{}", e.tls_proxy);
    let iterations_text = iterations.to_string();
    let ca_text = ca.display().to_string();
    let rt = runtime(1);
    let mut out = Vec::new();
    // The timeout is made inside the runtime: its timer needs one.
    let measured = rt.block_on(async { tokio::time::timeout(RUN_LIMIT, async {
        // Plain: the floor, the Rust API, the C ABI.
        let url = channel_url(&plain_ws, &arn, None);
        let samples = time_it(iterations, || {
            let url = url.clone();
            Box::pin(async move {
                raw_connect(&url, None).await?.close(None).await.ok();
                Ok(())
            })
        })
        .await?;
        let proxied = channel_url(&proxied_ws, &arn, None);
        let counts = e
            .count(
                false,
                1,
                Box::pin(async {
                    raw_connect(&proxied, None).await?;
                    Ok(())
                }),
            )
            .await?;
        out.push(Measured {
            name: "raw-ws",
            baseline: "raw-ws",
            what: "TCP + WebSocket upgrade, tokio-tungstenite (floor)",
            samples_ms: samples,
            counts: Some(counts),
        });

        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let (client, _events) = Client::new(ClientConfig::master(&arn, &plain_ws))?;
            let started = Instant::now();
            client.connect().await?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            client.disconnect(Duration::from_millis(200)).await;
        }
        let counts = e
            .count(
                false,
                1,
                Box::pin(async {
                    let (client, _events) = Client::new(ClientConfig::master(&arn, &proxied_ws))?;
                    client.connect().await?;
                    client.disconnect(Duration::from_millis(200)).await;
                    Ok(())
                }),
            )
            .await?;
        out.push(Measured {
            name: "rust-api-ws",
            baseline: "raw-ws",
            what: "Client::connect to a ws:// endpoint",
            samples_ms: samples,
            counts: Some(counts),
        });
        if let Some(program) = c_prog {
            let value = c_program(program, &["--mode", "connect", "--endpoint", &plain_ws, "--arn", &arn, "--rounds", &iterations_text])?;
            out.push(Measured {
                name: "c-abi-ws",
                baseline: "raw-ws",
                what: "kvs_client_new + kvs_client_connect to a ws:// endpoint",
                samples_ms: samples_of(&value, "samples_ms"),
                counts: None,
            });
        }

        // TLS floor: a full handshake every time; URL presigned once, untimed.
        let signer = ControlPlane::new(&control_plane_config(&cp_url, ca))?;
        let url = signer.presign_wss_url(&e.tls.ws_endpoint(), &tls_arn, None).await?;
        let samples = time_it(iterations, || {
            let url = url.clone();
            Box::pin(async move { tls_ws(&url, tls_config(Some(ca))?).await })
        })
        .await?;
        let proxied = signer.presign_wss_url(&format!("wss://127.0.0.1:{}", e.tls_proxy), &tls_arn, None).await?;
        let counts = e.count(true, 1, Box::pin(async { tls_ws(&proxied, tls_config(Some(ca))?).await })).await?;
        out.push(Measured {
            name: "raw-tls-ws",
            baseline: "raw-tls-ws",
            what: "TCP + TLS 1.3 full handshake + upgrade of a presigned URL (floor)",
            samples_ms: samples,
            counts: Some(counts),
        });

        // The Rust API through the control plane: cold, then warm from a cache file.
        let mut cold = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let client = cp_client(&cp_url, ca, None)?;
            let started = Instant::now();
            client.connect().await?;
            cold.push(started.elapsed().as_secs_f64() * 1e3);
            client.disconnect(Duration::from_millis(200)).await;
        }
        let counts = e
            .count(
                true,
                1,
                Box::pin(async {
                    let client = cp_client(&proxied_cp, ca, None)?;
                    client.connect().await?;
                    tokio::time::sleep(LINGER).await;
                    client.disconnect(Duration::from_millis(200)).await;
                    Ok(())
                }),
            )
            .await?;
        out.push(Measured {
            name: "rust-api-cold",
            baseline: "raw-tls-ws",
            what: "Client::connect via the control plane, nothing cached (Describe, GetEndpoint, presign, TLS, WS; ICE config in parallel)",
            samples_ms: cold,
            counts: Some(counts),
        });

        let cache = work.join("rust-cache.json");
        let proxied_cache = work.join("rust-cache-proxied.json");
        for (url, file) in [(&cp_url, &cache), (&proxied_cp, &proxied_cache)] {
            let client = cp_client(url, ca, Some(file))?;
            client.connect().await?;
            client.disconnect(Duration::from_millis(200)).await;
        }
        let mut warm = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let client = cp_client(&cp_url, ca, Some(&cache))?;
            let started = Instant::now();
            client.connect().await?;
            warm.push(started.elapsed().as_secs_f64() * 1e3);
            client.disconnect(Duration::from_millis(200)).await;
        }
        let counts = e
            .count(
                true,
                1,
                Box::pin(async {
                    let client = cp_client(&proxied_cp, ca, Some(&proxied_cache))?;
                    client.connect().await?;
                    tokio::time::sleep(LINGER).await;
                    client.disconnect(Duration::from_millis(200)).await;
                    Ok(())
                }),
            )
            .await?;
        out.push(Measured {
            name: "rust-api-warm",
            baseline: "raw-tls-ws",
            what: "Client::connect via the control plane, endpoints from the cache file (presign, TLS, WS; ICE config in parallel)",
            samples_ms: warm,
            counts: Some(counts),
        });

        // The C ABI through the control plane.
        if let Some(program) = c_prog {
            let c_args = |url: &str, cache: &str, phase: &str, rounds: &str| -> Vec<String> {
                [
                    "--mode", "connect-cp", "--control-plane", url, "--ca", &ca_text, "--channel-name", CHANNEL,
                    "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--cache-file", cache, "--phase", phase,
                    "--rounds", rounds,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            };
            let run_c = |args: Vec<String>| {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                c_program(program, &refs)
            };
            let c_cache = work.join("c-cache.json").display().to_string();
            let c_proxied_cache = work.join("c-cache-proxied.json").display().to_string();
            let cold = run_c(c_args(&cp_url, &c_cache, "cold", &iterations_text))?;
            let counts_cold = e.count(true, 1, Box::pin(async {
                run_c(c_args(&proxied_cp, &c_proxied_cache, "cold-linger", "1"))?;
                Ok(())
            })).await?;
            out.push(Measured {
                name: "c-abi-cold",
                baseline: "raw-tls-ws",
                what: "kvs_client_connect with use_control_plane, nothing cached",
                samples_ms: samples_of(&cold, "samples_ms"),
                counts: Some(counts_cold),
            });
            run_c(c_args(&cp_url, &c_cache, "populate", "1"))?;
            run_c(c_args(&proxied_cp, &c_proxied_cache, "populate", "1"))?;
            let warm = run_c(c_args(&cp_url, &c_cache, "warm", &iterations_text))?;
            let counts_warm = e.count(true, 1, Box::pin(async {
                run_c(c_args(&proxied_cp, &c_proxied_cache, "warm-linger", "1"))?;
                Ok(())
            })).await?;
            out.push(Measured {
                name: "c-abi-warm",
                baseline: "raw-tls-ws",
                what: "kvs_client_connect with use_control_plane, endpoints from the cache file",
                samples_ms: samples_of(&warm, "samples_ms"),
                counts: Some(counts_warm),
            });
        }
        Ok::<_, BoxError>(())
    }).await });
    rt.shutdown_timeout(Duration::from_millis(200));
    measured.map_err(|_| format!("the connect benchmark did not finish within {RUN_LIMIT:?}"))??;
    Ok(out)
}
