//! Emulator scale: a load generator that holds many WebSocket connections
//! (one master and up to nine viewers per channel), measures the server's
//! resident memory per connection and the messages it relays per second in a
//! closed loop (each viewer sends an ICE candidate to its master, the master
//! echoes it back to that viewer, the viewer sends the next one), and the
//! baseline it is compared with: `scale-server`, a bare WebSocket relay with the
//! same routing (viewer -> master, master -> named viewer) and nothing else.

use crate::common::{Args, Result, channel_url, ice_frame, raw_connect, runtime, status_kb, thread_count};
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::protocol::Role;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Connects in flight at once while ramping up.
const CONNECT_CONCURRENCY: usize = 64;
/// Longest whole run.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// Longest single connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Read buffer of the load generator's sockets and, by default, of the
/// baseline server's: tungstenite's default (128 KiB) is zero-filled on every
/// read, so it is resident per connection.
const READ_BUFFER: usize = 4096;

fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

struct Load {
    round_trips: AtomicU64,
    errors: AtomicU64,
    run: AtomicBool,
}

/// The load generator.
pub fn run(args: &Args) -> Result<Value> {
    let endpoint = args.str("endpoint")?;
    let arns: Vec<String> = std::fs::read_to_string(args.str("arns-file")?)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let target = args.num("sockets", 10_000)? as usize;
    let viewers_per_channel = args.num("viewers-per-channel", 9)? as usize;
    let relay_for = args.secs("seconds", 3.0)?;
    let server_pid = args.num("server-pid", 0)? as u32;
    let label = args.opt("label").unwrap_or_else(|| "server".into());
    let per_channel = viewers_per_channel + 1;
    let channels = target.div_ceil(per_channel);
    if arns.len() < channels {
        return Err(format!("{target} sockets need {channels} channels; {} given", arns.len()).into());
    }
    let rt = runtime(2);
    // The timeout is made inside the runtime: its timer needs one.
    let result = rt.block_on(async {
        tokio::time::timeout(RUN_LIMIT, async move {
        let rss_before = status_kb(server_pid, "VmRSS");
        let load =
            Arc::new(Load { round_trips: AtomicU64::new(0), errors: AtomicU64::new(0), run: AtomicBool::new(true) });
        let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let connected = Arc::new(AtomicU64::new(0));
        // Every socket task waits here once connected (or failed), then relays.
        let start_relay = Arc::new(Barrier::new(target + 1));
        let frames: Arc<Vec<(String, String)>> = Arc::new(
            (0..viewers_per_channel)
                .map(|v| {
                    let id = format!("v{v}");
                    (ice_frame(Role::Viewer, None, v as u64 + 1), ice_frame(Role::Master, Some(&id), v as u64 + 1))
                })
                .collect(),
        );
        let started = Instant::now();
        let mut masters = Vec::with_capacity(channels);
        let mut viewers = Vec::with_capacity(target);
        // Masters first (so that no viewer message is stored), then viewers.
        let mut plan: Vec<(usize, Option<usize>)> = (0..channels).map(|c| (c, None)).collect();
        for v in 0..viewers_per_channel {
            plan.extend((0..channels).map(|c| (c, Some(v))));
        }
        plan.truncate(target);
        for (channel, viewer) in plan {
            let url = channel_url(&endpoint, &arns[channel], viewer.map(|v| format!("v{v}")).as_deref());
            let (permits, connected, start_relay, load, frames) =
                (permits.clone(), connected.clone(), start_relay.clone(), load.clone(), frames.clone());
            let task = tokio::spawn(async move {
                let permit = permits.acquire_owned().await;
                let socket = match tokio::time::timeout(CONNECT_LIMIT, raw_connect(&url, Some(small_buffers()))).await {
                    Ok(result) => result,
                    Err(_) => Err("connect timed out".into()),
                };
                drop(permit);
                let socket = match socket {
                    Ok(socket) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                        Some(socket)
                    }
                    Err(_) => {
                        load.errors.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
                start_relay.wait().await;
                let Some(socket) = socket else { return };
                let (mut tx, mut rx) = socket.split();
                match viewer {
                    // Master: echo each candidate back to its sender.
                    None => {
                        while let Some(Ok(frame)) = rx.next().await {
                            let Message::Text(text) = frame else { continue };
                            let Some(v) = sender_index(text.as_str()) else { continue };
                            if let Some((_, echo)) = frames.get(v)
                                && tx.send(Message::text(echo.as_str())).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                    // Viewer: closed loop, one candidate in flight.
                    Some(v) => {
                        let frame = frames[v].0.as_str();
                        while load.run.load(Ordering::Relaxed) {
                            if tx.send(Message::text(frame)).await.is_err() {
                                load.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
                                Ok(Some(Ok(Message::Text(_)))) => {
                                    load.round_trips.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(Some(Ok(_))) => {}
                                _ => {
                                    load.errors.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                        let _ = tx.close().await;
                    }
                }
            });
            if viewer.is_some() { viewers.push(task) } else { masters.push(task) }
        }
        // Wait for the ramp-up, then hold the sockets idle for a moment.
        let deadline = Instant::now() + Duration::from_secs(120);
        while (connected.load(Ordering::Relaxed) + load.errors.load(Ordering::Relaxed)) < target as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connect_seconds = started.elapsed().as_secs_f64();
        let held = connected.load(Ordering::Relaxed);
        let connect_errors = load.errors.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let rss_held = status_kb(server_pid, "VmRSS");
        let own_rss = status_kb(std::process::id(), "VmRSS");
        let server_threads = thread_count(server_pid);
        // Relay: count over the window after a short warm-up.
        start_relay.wait().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r0 = load.round_trips.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(relay_for).await;
        let round_trips = load.round_trips.load(Ordering::Relaxed) - r0;
        let relay_seconds = t0.elapsed().as_secs_f64();
        let rss_relay = status_kb(server_pid, "VmRSS");
        load.run.store(false, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            for task in viewers.drain(..) {
                let _ = task.await;
            }
        })
        .await;
        // Masters wait on their sockets: drop them (and any viewer left).
        for task in masters.into_iter().chain(viewers) {
            task.abort();
        }
        let per_connection_kb = match (rss_before, rss_held) {
            (Some(before), Some(held_kb)) if held > 0 => Some((held_kb as f64 - before as f64) / held as f64),
            _ => None,
        };
        json!({
            "bench": "scale", "server": label, "sockets_target": target, "sockets_held": held,
            "connect_errors": connect_errors, "connect_seconds": connect_seconds,
            "connects_per_second": held as f64 / connect_seconds,
            "server_rss_kb_before": rss_before, "server_rss_kb_held": rss_held, "server_rss_kb_relaying": rss_relay,
            "server_kb_per_connection": per_connection_kb, "server_threads": server_threads, "loadgen_rss_kb": own_rss,
            "relay_seconds": relay_seconds, "messages_relayed": round_trips * 2,
            "messages_per_second": (round_trips * 2) as f64 / relay_seconds,
            "relay_errors": load.errors.load(Ordering::Relaxed) - connect_errors,
        })
    }).await
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    result.map_err(|_| format!("the scale benchmark did not finish within {RUN_LIMIT:?}").into())
}

/// `N` of `"senderClientId":"vN"` in a frame the master received.
fn sender_index(text: &str) -> Option<usize> {
    let at = text.find("\"senderClientId\":\"v")? + "\"senderClientId\":\"v".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// The baseline: a bare relay.

type Outbox = mpsc::UnboundedSender<String>;

#[derive(Default)]
struct Channel {
    master: Option<Outbox>,
    viewers: HashMap<String, Outbox>,
}

#[derive(serde::Deserialize)]
struct Inbound {
    action: String,
    #[serde(rename = "recipientClientId")]
    recipient: Option<String>,
    #[serde(rename = "messagePayload")]
    payload: String,
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.replace("%3A", ":").replace("%2F", "/"))
    })
}

/// `scale-server [--exit-after S] [--read-buffer BYTES]`: prints
/// `ws://127.0.0.1:PORT`, relays until `--exit-after`.
pub fn serve(args: &Args) -> Result<Value> {
    let exit_after = args.secs("exit-after", 120.0)?;
    let read_buffer = args.num("read-buffer", READ_BUFFER as u64)? as usize;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let rt = runtime(2);
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("ws://{}", listener.local_addr()?);
        let channels: Arc<Mutex<HashMap<String, Channel>>> = Arc::default();
        let accept = async {
            while let Ok((tcp, _)) = listener.accept().await {
                let channels = channels.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let mut identity = (String::new(), None::<String>);
                    // The signature is tungstenite's `Callback`; its error type is not ours.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &Request, response: Response| {
                        let query = request.uri().query().unwrap_or("");
                        identity = (
                            query_param(query, "X-Amz-ChannelARN").unwrap_or_default(),
                            query_param(query, "X-Amz-ClientId"),
                        );
                        Ok(response)
                    };
                    let Ok(socket) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
                    else {
                        return;
                    };
                    let (arn, client_id) = identity;
                    let (outbox, mut queue) = mpsc::unbounded_channel::<String>();
                    {
                        let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
                        let channel = map.entry(arn.clone()).or_default();
                        match &client_id {
                            Some(id) => drop(channel.viewers.insert(id.clone(), outbox)),
                            None => channel.master = Some(outbox),
                        }
                    }
                    let (mut tx, mut rx) = socket.split();
                    let writer = tokio::spawn(async move {
                        while let Some(text) = queue.recv().await {
                            if tx.send(Message::text(text)).await.is_err() {
                                break;
                            }
                        }
                    });
                    while let Some(Ok(frame)) = rx.next().await {
                        let Message::Text(text) = frame else { continue };
                        let Ok(inbound) = serde_json::from_str::<Inbound>(text.as_str()) else { continue };
                        let map = channels.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(channel) = map.get(&arn) else { continue };
                        let (to, out) = match (&client_id, &inbound.recipient) {
                            (Some(viewer), _) => (
                                channel.master.as_ref(),
                                format!(
                                    r#"{{"messageType":"{}","messagePayload":"{}","senderClientId":"{}"}}"#,
                                    inbound.action, inbound.payload, viewer
                                ),
                            ),
                            (None, Some(recipient)) => (
                                channel.viewers.get(recipient),
                                format!(
                                    r#"{{"messageType":"{}","messagePayload":"{}"}}"#,
                                    inbound.action, inbound.payload
                                ),
                            ),
                            (None, None) => continue,
                        };
                        if let Some(to) = to {
                            let _ = to.send(out);
                        }
                    }
                    writer.abort();
                    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(channel) = map.get_mut(&arn) {
                        match &client_id {
                            Some(id) => drop(channel.viewers.remove(id)),
                            None => channel.master = None,
                        }
                    }
                });
            }
        };
        let _ = tokio::time::timeout(exit_after, accept).await;
        Ok::<_, crate::common::BoxError>(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(Value::Null)
}
