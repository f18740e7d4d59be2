//! Shared pieces of the benchmarks: arguments, the test texts (the same files
//! the C and JS programs read), URLs, raw WebSocket connects, /proc readings.

use kvs_signaling::protocol::{
    Action, IceCandidate, OutboundMessage, Role, SdpType, SessionDescription, encode_payload,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// `--name value` pairs (and bare `--flag`s, stored as "true").
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub fn parse(args: &[String]) -> Args {
        let mut values = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if let Some(name) = arg.strip_prefix("--") {
                if let Some((name, value)) = name.split_once('=') {
                    values.insert(name.to_owned(), value.to_owned());
                } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    values.insert(name.to_owned(), args[i + 1].clone());
                    i += 1;
                } else {
                    values.insert(name.to_owned(), "true".to_owned());
                }
            }
            i += 1;
        }
        Args { values }
    }

    pub fn str(&self, name: &str) -> Result<String> {
        self.values.get(name).cloned().ok_or_else(|| format!("--{name} is required").into())
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn num(&self, name: &str, default: u64) -> Result<u64> {
        match self.values.get(name) {
            Some(text) => text.parse().map_err(|_| format!("--{name} expects a whole number, got {text:?}").into()),
            None => Ok(default),
        }
    }

    pub fn secs(&self, name: &str, default: f64) -> Result<Duration> {
        let value = match self.values.get(name) {
            Some(text) => text.parse::<f64>().map_err(|_| format!("--{name} expects seconds, got {text:?}"))?,
            None => default,
        };
        Duration::try_from_secs_f64(value).map_err(|e| format!("--{name}: {e}").into())
    }
}

/// Where the shared test texts live.
pub fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/data"))
}

/// A text file of `bench/data` with CRLF line ends (SDP), without the final one
/// when `trim` is set.
fn data_text(name: &str, crlf: bool) -> String {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap_or_else(|e| panic!("bench/data/{name}: {e}"));
    if crlf { text.lines().map(|line| format!("{line}\r\n")).collect() } else { text.trim_end().to_owned() }
}

/// The offer every relay benchmark sends (bench/data/offer.sdp).
pub fn offer_sdp() -> String {
    data_text("offer.sdp", true)
}

/// The answer every relay benchmark sends back (bench/data/answer.sdp).
pub fn answer_sdp() -> String {
    data_text("answer.sdp", true)
}

/// The candidate every throughput benchmark sends (bench/data/candidate.txt).
pub fn candidate() -> IceCandidate {
    IceCandidate {
        candidate: data_text("candidate.txt", false),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// A correlation id shaped like the ones the library generates.
pub fn correlation(n: u64) -> String {
    format!("kvs6745a1b2c3d4e-{n}")
}

/// The exact frame the client writes for an SDP message.
pub fn sdp_frame(role: Role, sdp_type: SdpType, recipient: Option<&str>, sdp: &str, n: u64) -> String {
    let json = SessionDescription { sdp_type, sdp: sdp.to_owned() }.to_json();
    let action = if sdp_type == SdpType::Offer { Action::SdpOffer } else { Action::SdpAnswer };
    OutboundMessage::new(role, action, recipient, &encode_payload(json.as_bytes()), Some(&correlation(n)))
        .expect("valid frame")
        .to_json()
}

/// The exact frame the client writes for an ICE candidate.
pub fn ice_frame(role: Role, recipient: Option<&str>, n: u64) -> String {
    let json = candidate().to_json();
    OutboundMessage::new(role, Action::IceCandidate, recipient, &encode_payload(json.as_bytes()), Some(&correlation(n)))
        .expect("valid frame")
        .to_json()
}

/// The data-plane URL of a master (`client_id` None) or a viewer.
pub fn channel_url(endpoint: &str, arn: &str, client_id: Option<&str>) -> String {
    let mut url =
        format!("{}/?X-Amz-ChannelARN={}", endpoint.trim_end_matches('/'), kvs_signaling::aws::sigv4::uri_encode(arn));
    if let Some(id) = client_id {
        url.push_str("&X-Amz-ClientId=");
        url.push_str(&kvs_signaling::aws::sigv4::uri_encode(id));
    }
    url
}

/// `host:port` of a ws:// or wss:// URL.
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// Plain TCP (TCP_NODELAY, as the library sets it) + WebSocket upgrade; no
/// signaling logic at all: the floor a client can do on this machine.
pub async fn raw_connect(url: &str, config: Option<WebSocketConfig>) -> Result<Raw> {
    let tcp = TcpStream::connect(authority(url)).await?;
    tcp.set_nodelay(true)?;
    let request = url.into_client_request()?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(tcp), config).await?;
    Ok(socket)
}

/// A runtime shaped like the library's: `workers` worker threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("tokio runtime")
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/task")).ok().map(|dir| dir.count())
}

/// Microseconds of a duration, as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The value at percentile `p` (0–100) of sorted `values`, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}
