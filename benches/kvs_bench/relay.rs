//! Relay latency (offer -> answer round trip) and one-way throughput between a
//! viewer and a master through a running emulator, for the Rust API and for
//! the bare WebSocket baseline (two tokio-tungstenite clients writing the very
//! frames the library writes, with no signaling logic).

use crate::common::{
    Args, Raw, Result, answer_sdp, candidate, channel_url, ice_frame, micros, offer_sdp, raw_connect, runtime,
    sdp_frame,
};
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::client::EventReceiver;
use kvs_signaling::client::{Client, ClientConfig, ClientEvent, Pacing};
use kvs_signaling::protocol::{MessageType, Role, SdpType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for one answer or for the whole throughput run.
const WAIT: Duration = Duration::from_secs(20);
/// Longest whole run.
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub fn run(args: &Args) -> Result<Value> {
    let imp = args.str("impl")?;
    let mode = args.opt("mode").unwrap_or_else(|| "latency".into());
    let endpoint = args.str("endpoint")?;
    let arn = args.str("arn")?;
    let rounds = args.num("rounds", 200)? as usize;
    let warmup = args.num("warmup", 20)? as usize;
    let messages = args.num("messages", 20_000)?;
    let rt = runtime(1);
    let value = match (imp.as_str(), mode.as_str()) {
        ("raw", "latency") => {
            let samples = rt.block_on(on_worker(raw_latency(endpoint, arn, rounds, warmup)))?;
            json!({"bench": "relay", "impl": "raw-ws", "samples_us": samples})
        }
        ("api", "latency") => {
            let samples = rt.block_on(on_worker(api_latency(endpoint, arn, rounds, warmup)))?;
            json!({"bench": "relay", "impl": "rust-api", "samples_us": samples})
        }
        ("raw", "throughput") => {
            let seconds = rt.block_on(on_worker(raw_throughput(endpoint, arn, messages)))?;
            json!({"bench": "throughput", "impl": "raw-ws", "messages": messages, "seconds": seconds,
                   "per_second": messages as f64 / seconds})
        }
        ("api", "throughput") => {
            let seconds = rt.block_on(on_worker(api_throughput(endpoint, arn, messages)))?;
            json!({"bench": "throughput", "impl": "rust-api", "messages": messages, "seconds": seconds,
                   "per_second": messages as f64 / seconds})
        }
        _ => return Err(format!("unknown --impl {imp} / --mode {mode}").into()),
    };
    // Let the runtime close the sockets without waiting on anything.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(value)
}

/// Runs `future` as a task on the runtime's one worker, so that the whole
/// benchmark (both clients and the measuring loop) shares one thread, with no
/// thread hop inside this process (`block_on` itself runs on the main thread).
async fn on_worker<T: Send + 'static>(future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    match tokio::time::timeout(RUN_LIMIT, tokio::spawn(future)).await {
        Ok(result) => result?,
        Err(_) => Err(format!("did not finish within {RUN_LIMIT:?}").into()),
    }
}

/// Reads text frames until one contains `needle`.
async fn wait_for(reader: &mut futures_util::stream::SplitStream<Raw>, needle: &str) -> Result<()> {
    loop {
        match tokio::time::timeout(WAIT, reader.next()).await {
            Err(_) => return Err(format!("no frame with {needle} within {WAIT:?}").into()),
            Ok(None) => return Err("socket closed".into()),
            Ok(Some(frame)) => {
                if let Message::Text(text) = frame?
                    && text.as_str().contains(needle)
                {
                    return Ok(());
                }
            }
        }
    }
}

async fn raw_pair(endpoint: &str, arn: &str, viewer_id: &str) -> Result<(Raw, Raw)> {
    let master = raw_connect(&channel_url(endpoint, arn, None), None).await?;
    let viewer = raw_connect(&channel_url(endpoint, arn, Some(viewer_id)), None).await?;
    Ok((master, viewer))
}

async fn raw_latency(endpoint: String, arn: String, rounds: usize, warmup: usize) -> Result<Vec<f64>> {
    let viewer_id = "bench-raw-viewer";
    let (master, viewer) = raw_pair(&endpoint, &arn, viewer_id).await?;
    let offer = sdp_frame(Role::Viewer, SdpType::Offer, None, &offer_sdp(), 1);
    let answer = sdp_frame(Role::Master, SdpType::Answer, Some(viewer_id), &answer_sdp(), 2);
    let (mut master_tx, mut master_rx) = master.split();
    let echo = tokio::spawn(async move {
        while let Some(Ok(frame)) = master_rx.next().await {
            if let Message::Text(text) = frame
                && text.as_str().contains("SDP_OFFER")
                && master_tx.send(Message::text(answer.as_str())).await.is_err()
            {
                break;
            }
        }
    });
    let (mut viewer_tx, mut viewer_rx) = viewer.split();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..warmup + rounds {
        let started = Instant::now();
        viewer_tx.send(Message::text(offer.as_str())).await?;
        wait_for(&mut viewer_rx, "SDP_ANSWER").await?;
        if round >= warmup {
            samples.push(micros(started.elapsed()));
        }
    }
    let _ = viewer_tx.close().await;
    echo.abort();
    Ok(samples)
}

fn unpaced(config: ClientConfig) -> ClientConfig {
    ClientConfig { pacing: Pacing { sdp_per_second: 0, ice_per_second: 0 }, send_queue_capacity: 4096, ..config }
}

async fn api_pair(
    endpoint: &str,
    arn: &str,
    viewer_id: &str,
) -> Result<(Arc<Client>, EventReceiver, Client, EventReceiver)> {
    let (master, master_events) = Client::new(unpaced(ClientConfig::master(arn, endpoint)))?;
    master.connect().await?;
    let (viewer, viewer_events) = Client::new(unpaced(ClientConfig::viewer(arn, viewer_id, endpoint)))?;
    viewer.connect().await?;
    Ok((Arc::new(master), master_events, viewer, viewer_events))
}

async fn api_latency(endpoint: String, arn: String, rounds: usize, warmup: usize) -> Result<Vec<f64>> {
    let (master, mut master_events, viewer, mut viewer_events) = api_pair(&endpoint, &arn, "bench-api-viewer").await?;
    let offer = offer_sdp();
    let answer = answer_sdp();
    let answerer = master.clone();
    let echo = tokio::spawn(async move {
        while let Some(event) = master_events.recv().await {
            if let ClientEvent::Message(m) = event
                && m.message_type == MessageType::SdpOffer
                && answerer.send_sdp_answer(m.sender_client_id.as_deref(), &answer, None).is_err()
            {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..warmup + rounds {
        let started = Instant::now();
        viewer.send_sdp_offer(None, &offer, None)?;
        loop {
            match tokio::time::timeout(WAIT, viewer_events.recv()).await {
                Err(_) => return Err(format!("no answer within {WAIT:?}").into()),
                Ok(None) => return Err("viewer events ended".into()),
                Ok(Some(ClientEvent::Message(m))) if m.message_type == MessageType::SdpAnswer => break,
                Ok(Some(_)) => {}
            }
        }
        if round >= warmup {
            samples.push(micros(started.elapsed()));
        }
    }
    viewer.disconnect(Duration::from_millis(100)).await;
    master.disconnect(Duration::from_millis(100)).await;
    echo.abort();
    Ok(samples)
}

/// Seconds from the first send until the master has received all `messages`.
async fn raw_throughput(endpoint: String, arn: String, messages: u64) -> Result<f64> {
    let (master, viewer) = raw_pair(&endpoint, &arn, "bench-raw-pusher").await?;
    let (_master_tx, mut master_rx) = master.split();
    let frames: Vec<String> = (0..messages).map(|n| ice_frame(Role::Viewer, None, n + 1)).collect();
    let counter = tokio::spawn(async move {
        let mut received = 0u64;
        while received < messages {
            match tokio::time::timeout(WAIT, master_rx.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if text.as_str().contains("ICE_CANDIDATE") => received += 1,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        (received, Instant::now())
    });
    let (mut viewer_tx, _viewer_rx) = viewer.split();
    let started = Instant::now();
    for (i, frame) in frames.into_iter().enumerate() {
        viewer_tx.feed(Message::text(frame)).await?;
        if i % 32 == 31 {
            viewer_tx.flush().await?;
        }
    }
    viewer_tx.flush().await?;
    let (received, finished) = counter.await?;
    if received < messages {
        return Err(format!("master received {received} of {messages}").into());
    }
    Ok(finished.duration_since(started).as_secs_f64())
}

async fn api_throughput(endpoint: String, arn: String, messages: u64) -> Result<f64> {
    let (master, mut master_events, viewer, _viewer_events) = api_pair(&endpoint, &arn, "bench-api-pusher").await?;
    let counter = tokio::spawn(async move {
        let mut received = 0u64;
        while received < messages {
            match tokio::time::timeout(WAIT, master_events.recv()).await {
                Ok(Some(ClientEvent::Message(m))) if m.message_type == MessageType::IceCandidate => received += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        (received, Instant::now())
    });
    let ice = candidate();
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        match viewer.send_ice_candidate(None, &ice, None) {
            Ok(_) => sent += 1,
            Err(kvs_signaling::client::ClientError::QueueFull) => tokio::task::yield_now().await,
            Err(e) => return Err(e.into()),
        }
    }
    let (received, finished) = counter.await?;
    viewer.disconnect(Duration::from_millis(100)).await;
    master.disconnect(Duration::from_millis(100)).await;
    if received < messages {
        return Err(format!("master received {received} of {messages}").into());
    }
    Ok(finished.duration_since(started).as_secs_f64())
}
