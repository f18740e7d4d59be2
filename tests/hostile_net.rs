//! A hostile network against the client, over real loopback sockets: a
//! control plane that returns weaker endpoints, an edited endpoint cache,
//! servers that echo the request's secrets in their refusals, a server that
//! speaks only TLS 1.0, a flood of RECONNECT_ICE_SERVER notices; and the CA
//! bundle and endpoint checks made when the client is created.

use kvs_signaling::aws::{AwsError, ControlPlane, ControlPlaneConfig, Credentials, StaticCredentials};
use kvs_signaling::client::{AwsConfig, Client, ClientConfig, ClientError, ClientEvent, ICE_REFRESH_MIN_INTERVAL};
use kvs_signaling::emulator::{Emulator, EmulatorConfig, Target, TlsSetting};
use kvs_signaling::log::{Level, set_sink};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "AKIDHOSTILENETWORK";
const SECRET: &str = "hostile/secret+key=VALUE";
/// Holds the characters that URL-encoding changes, so an encoded echo differs.
const TOKEN: &str = "Hostile/Session+Token=Value/IQoJb3JpZ2luX2Vj";
const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam-1/1";
const WAIT: Duration = Duration::from_secs(10);

/// A unique path under the system temp dir (the file is not created).
fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kvs-hostile-{tag}-{}-{n}", std::process::id()))
}

fn credentials() -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials::new(Credentials::new(KEY, SECRET, Some(TOKEN))))
}

fn control_plane_config(url: &str) -> ControlPlaneConfig {
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials());
    control_plane.endpoint_override = Some(url.to_owned());
    control_plane.request_timeout = Duration::from_secs(3);
    control_plane
}

fn via(channel: &str, aws: AwsConfig) -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::via_control_plane(channel, None, aws) }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (PEM file to trust, TLS acceptor).
fn self_signed() -> (PathBuf, tokio_rustls::TlsAcceptor) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let path = temp_path("ca.pem");
    std::fs::write(&path, generated.cert.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    (path, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A hand-made HTTP/1.1 server on loopback that answers every request with
/// `reply(request head)` and closes; it records every request head it read.
/// With `tls`, it serves HTTPS. It stops when the test's runtime ends.
struct HostileServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

type Reply = Arc<dyn Fn(&str) -> String + Send + Sync>;

impl HostileServer {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, reply: Reply) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, reply, recorded) = (tls.clone(), reply.clone(), recorded.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, &reply, &recorded).await;
                            }
                        }
                        None => answer(tcp, &reply, &recorded).await,
                    }
                });
            }
        });
        HostileServer { addr, requests }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, reply: &Reply, recorded: &Mutex<Vec<String>>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let head = loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buffer[..n]),
            _ => return,
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            break text[..end].to_owned();
        }
    };
    recorded.lock().unwrap().push(head.clone());
    let _ = stream.write_all(reply(&head).as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn http_reply(status: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

/// A control plane that answers GetSignalingChannelEndpoint with `wss` and `https`.
fn endpoints_reply(wss: String, https: String) -> Reply {
    Arc::new(move |_head| {
        let body = serde_json::json!({"ResourceEndpointList": [
            {"Protocol": "WSS", "ResourceEndpoint": wss},
            {"Protocol": "HTTPS", "ResourceEndpoint": https}]});
        http_reply("200 OK", &body.to_string())
    })
}

/// Records who connects to it and answers 404.
async fn trap() -> HostileServer {
    HostileServer::start(None, Arc::new(|_| http_reply("404 Not Found", "{}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_control_plane_cannot_downgrade_the_socket_or_the_ice_call() {
    let (ca, acceptor) = self_signed();
    let trap = trap().await;
    for (wss, https) in [(trap.url("ws"), "https://127.0.0.1:9".to_owned()), (trap.url("wss"), trap.url("http"))] {
        let control_plane =
            HostileServer::start(Some(acceptor.clone()), endpoints_reply(wss.clone(), https.clone())).await;
        let aws = AwsConfig::new(control_plane_config(&control_plane.url("https")));
        // The client's bundle serves the control plane, whose own is not set.
        let config = ClientConfig { ca_bundle: Some(ca.clone()), ..via(ARN, aws) };
        let (client, _events) = Client::new(config).unwrap();
        let error = client.connect().await.unwrap_err();
        let downgrade = if wss.starts_with("ws://") { &wss } else { &https };
        assert!(
            matches!(&error, ClientError::ControlPlane(AwsError::BadResponse(m))
                if m.contains("downgrade") && m.contains(downgrade.as_str())),
            "{error:?}"
        );
        assert_eq!(control_plane.requests().len(), 1, "GetSignalingChannelEndpoint only");
    }
    // The ICE call itself refuses a cleartext endpoint under an HTTPS control plane.
    let mut config = control_plane_config("https://127.0.0.1:9");
    config.ca_bundle = Some(ca.clone());
    let control_plane = ControlPlane::new(&config).unwrap();
    let result = control_plane.get_ice_server_config(&trap.url("http"), ARN, None).await;
    assert!(matches!(&result, Err(AwsError::BadResponse(m)) if m.contains("downgrade")), "{result:?}");
    let presigned = control_plane.presign_wss_url(&trap.url("ws"), ARN, None).await;
    assert!(matches!(&presigned, Err(AwsError::BadResponse(m)) if m.contains("downgrade")), "{presigned:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trap.requests(), Vec::<String>::new(), "nothing reached the cleartext endpoints");
    let _ = std::fs::remove_file(&ca);
}

/// An emulator with TLS (its own CA) and without authentication, and the ARN of its channel.
async fn tls_emulator() -> (Emulator, String) {
    let emulator = Emulator::start(EmulatorConfig {
        channels: vec!["cam-1".into()],
        tls: Some(TlsSetting::Generate { ca_out: None }),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let arn = emulator.channel_arn("cam-1").unwrap();
    (emulator, arn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_endpoint_cache_cannot_downgrade_the_socket() {
    let (emulator, arn) = tls_emulator().await;
    let trap = trap().await;
    let cache = temp_path("cache.json");
    let fetched_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let edited = serde_json::json!({"version": 1, "entries": [{
        "channel": arn, "role": "MASTER", "arn": arn,
        "wss": trap.url("ws"), "https": trap.url("http"), "fetched_at": fetched_at}]});
    std::fs::write(&cache, edited.to_string()).unwrap();

    let mut aws = AwsConfig::new(control_plane_config(&emulator.control_plane_url()));
    aws.endpoint_cache_path = Some(cache.clone());
    let config = ClientConfig { ca_bundle: emulator.ca_path().map(PathBuf::from), ..via(&arn, aws) };
    let (client, _events) = Client::new(config).unwrap();
    client.connect().await.expect("the edited entry is dropped and the service asked again");
    assert_eq!(emulator.stats().control_plane.get_signaling_channel_endpoint, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trap.requests(), Vec::<String>::new(), "nothing reached the cleartext endpoints");
    let rewritten = std::fs::read_to_string(&cache).unwrap();
    assert!(rewritten.contains("wss://") && !rewritten.contains(&trap.url("ws")), "{rewritten}");
    client.disconnect(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&cache);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_bundle_serves_a_direct_wss_endpoint_and_yields_to_the_control_planes() {
    let (emulator, arn) = tls_emulator().await;
    let ca = emulator.ca_path().map(PathBuf::from);
    let direct =
        |ca_bundle: Option<PathBuf>| ClientConfig { ca_bundle, ..ClientConfig::master(&arn, &emulator.ws_endpoint()) };

    let (client, _events) = Client::new(direct(ca.clone())).unwrap();
    client.connect().await.expect("the private CA is trusted for the socket");
    client.disconnect(Duration::from_secs(1)).await;
    // Without it, the built-in roots do not know the emulator's CA.
    let (client, _events) = Client::new(direct(None)).unwrap();
    assert!(matches!(client.connect().await, Err(ClientError::Tls(_))));
    // With another bundle, the built-in roots are not trusted either: only the bundle.
    let (other, _acceptor) = self_signed();
    let (client, _events) = Client::new(direct(Some(other.clone()))).unwrap();
    assert!(matches!(client.connect().await, Err(ClientError::Tls(_))));

    // A bundle that is not one fails when the client is made, not at connect.
    let garbage = temp_path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    for bad in [garbage.clone(), temp_path("missing.pem")] {
        let result = Client::new(direct(Some(bad)));
        assert!(matches!(&result, Err(ClientError::InvalidConfig(m)) if m.contains("CA bundle")), "{:?}", result.err());
    }

    // The control plane's own bundle, when set, wins over the client's.
    let mut control_plane = control_plane_config(&emulator.control_plane_url());
    control_plane.ca_bundle = Some(other.clone());
    let config = ClientConfig { ca_bundle: ca.clone(), ..via(&arn, AwsConfig::new(control_plane)) };
    let (client, _events) = Client::new(config).unwrap();
    let error = client.connect().await.unwrap_err();
    assert!(matches!(error, ClientError::ControlPlane(AwsError::Tls(_))), "{error:?}");
    for path in [other, garbage] {
        let _ = std::fs::remove_file(path);
    }
    emulator.shutdown().await;
}

#[test]
fn an_endpoint_without_a_host_is_refused_when_the_client_is_made() {
    for (endpoint, why) in
        [("ws://", "\"ws://\" has no host"), ("wss://h:70000", "\"wss://h:70000\" has an invalid port")]
    {
        let result = Client::new(ClientConfig::master(ARN, endpoint));
        assert!(matches!(&result, Err(ClientError::InvalidConfig(m)) if m.contains(why)), "{:?}", result.err());
    }
}

/// Every secret form the checks below look for in what the client shows.
fn assert_no_secret(shown: &str, signature: &str) {
    for secret in
        [SECRET, TOKEN, "Hostile%2FSession", "hostile%2fsecret", "Session", signature, "AKIDHOSTILENETWORK%2F"]
    {
        assert!(!shown.contains(secret), "{secret} shown in: {shown}");
    }
}

/// `text` with every byte outside `[A-Za-z0-9]` as lower-case `%xx`, as a
/// server may echo a request.
fn encode_lower(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02x}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_echo_the_request_show_none_of_its_secrets() {
    let logged = Arc::new(Mutex::new(String::new()));
    let sink = logged.clone();
    set_sink(Level::Debug, Some(Arc::new(move |_, _, line| sink.lock().unwrap().push_str(&format!("{line}\n")))));
    // Refuses everything, echoing the request after a long preamble, URL-encoded
    // (the upgrade: its presigned query as sent; the ICE call: its headers).
    let echo: Reply = Arc::new(|head| {
        let padding = "x".repeat(450);
        match head.starts_with("GET ") {
            true => {
                let target = head.lines().next().unwrap_or_default();
                http_reply("403 Forbidden", &format!("Signature mismatch {padding} for {target} {}", "y".repeat(600)))
            }
            false => {
                let body = serde_json::json!({"message": format!("Denied {padding} {}", encode_lower(head))});
                http_reply("403 Forbidden", &body.to_string())
            }
        }
    });
    let hostile = HostileServer::start(None, echo).await;
    let control_plane = HostileServer::start(None, endpoints_reply(hostile.url("ws"), hostile.url("http"))).await;
    let (client, mut events) =
        Client::new(via(ARN, AwsConfig::new(control_plane_config(&control_plane.url("http"))))).unwrap();
    let error = client.connect().await.unwrap_err();
    assert!(matches!(error, ClientError::Refused { status: 403, .. }), "{error:?}");
    // The background ICE call runs beside the socket; when the refused connect
    // stops the client first it may never be made (then the direct call below
    // is the only one, and the log check of the background call is skipped).
    let background_ice = tokio::time::timeout(WAIT, async {
        while !hostile.requests().iter().any(|r| r.starts_with("POST ")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while events.try_recv().is_ok() {}
    let requests = hostile.requests();
    let upgrade = requests.iter().find(|r| r.starts_with("GET ")).expect("the upgrade");
    let signature = upgrade.split("X-Amz-Signature=").nth(1).unwrap()[..64].to_owned();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("Signature mismatch"), "the reason is kept: {shown}");
    assert_no_secret(&shown, &signature);

    let ice = ControlPlane::new(&control_plane_config(&control_plane.url("http"))).unwrap();
    let error = ice.get_ice_server_config(&hostile.url("http"), ARN, None).await.unwrap_err();
    assert!(matches!(error, AwsError::AccessDenied(_)), "{error:?}");
    let request = hostile.requests().into_iter().rev().find(|r| r.starts_with("POST ")).unwrap();
    let header_signature = request.split("Signature=").nth(1).unwrap()[..64].to_owned();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("Denied"), "{shown}");
    assert_no_secret(&shown, &header_signature);
    set_sink(Level::Warn, None);
    let logged = logged.lock().unwrap().clone();
    if background_ice {
        assert!(logged.contains("GetIceServerConfig"), "{logged}");
    } else {
        eprintln!("the background GetIceServerConfig was not made before the client stopped");
    }
    assert_no_secret(&logged, &signature);
    assert_no_secret(&logged, &header_signature);
}

/// A server that speaks only TLS 1.0: after the ClientHello it sends
/// `answer` (nothing: it hangs up, as OpenSSL 3 does) and closes.
async fn tls10_server(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; 2048];
                let _ = tokio::time::timeout(WAIT, tcp.read(&mut hello)).await;
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A TLS 1.0 ServerHello (TLS_RSA_WITH_AES_128_CBC_SHA, no extensions).
const TLS10_SERVER_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2a, // handshake record, TLS 1.0, 42 bytes
    0x02, 0x00, 0x00, 0x26, // ServerHello, 38 bytes
    0x03, 0x01, // TLS 1.0
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32,   // random
    0x00, // no session id
    0x00, 0x2f, // cipher suite
    0x00, // no compression
];
/// A fatal `protocol_version` alert.
const PROTOCOL_VERSION_ALERT: &[u8] = &[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_1_2_or_1_3_is_a_tls_error() {
    for answer in [&[][..], TLS10_SERVER_HELLO, PROTOCOL_VERSION_ALERT] {
        let addr = tls10_server(answer).await;
        let (client, _events) = Client::new(ClientConfig::master(ARN, &format!("wss://{addr}"))).unwrap();
        let error = client.connect().await.unwrap_err();
        assert!(matches!(&error, ClientError::Tls(m) if m.contains("TLS 1.2")), "{answer:x?}: {error:?}");
        let control_plane = ControlPlane::new(&control_plane_config(&format!("https://{addr}"))).unwrap();
        let error = control_plane.describe_channel(None, Some(ARN)).await.unwrap_err();
        assert!(matches!(&error, AwsError::Tls(m) if m.contains("TLS 1.2")), "{answer:x?}: {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reconnect_ice_server_notices_makes_one_call_per_interval() {
    let emulator =
        Emulator::start(EmulatorConfig { channels: vec!["cam-1".into()], ..EmulatorConfig::default() }).await.unwrap();
    let arn = emulator.channel_arn("cam-1").unwrap();
    let (client, mut events) =
        Client::new(via(&arn, AwsConfig::new(control_plane_config(&emulator.control_plane_url())))).unwrap();
    client.connect().await.unwrap();
    let ice_changed = async |events: &mut kvs_signaling::client::EventReceiver| {
        tokio::time::timeout(WAIT, async {
            while !matches!(events.recv().await, Some(ClientEvent::IceServersChanged { .. })) {}
        })
        .await
        .expect("ICE servers in time")
    };
    ice_changed(&mut events).await;
    let calls = || emulator.stats().control_plane.get_ice_server_config;
    assert_eq!(calls(), 1);

    // 10,000 notices within about two seconds.
    let flood_started = std::time::Instant::now();
    for round in 0..100 {
        for _ in 0..100 {
            emulator.send_reconnect_ice_server(&Target::all());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(calls() <= 2, "round {round}: {} calls", calls());
    }
    assert!(flood_started.elapsed() < ICE_REFRESH_MIN_INTERVAL, "the flood fits in one interval");
    // The notices are served, together, by one more call.
    ice_changed(&mut events).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(), 2, "one call for the whole flood");
    client.disconnect(Duration::from_secs(1)).await;
    emulator.shutdown().await;
}
