//! Signing by a backend and ready presigned URLs, through the Rust API,
//! against the emulator with TLS and SigV4 on: the client holds no
//! credentials; a "backend" (the library's own SigV4 signer with the
//! emulator's keys) signs for it. Also what a signer may not return, the
//! expiry of a presigned URL, and the user-agent suffix as the emulator saw it.

use futures_util::future::BoxFuture;
use kvs_signaling::aws::signer::MAX_SIGNED_URL_LEN;
use kvs_signaling::aws::{
    AwsError, ControlPlaneConfig, Credentials, CredentialsProvider, HttpSignRequest, RequestSigner, SigV4Signer,
    SignerError, WssSignRequest,
};
use kvs_signaling::client::EventReceiver;
use kvs_signaling::client::{
    AwsConfig, Client, ClientConfig, ClientError, ClientEvent, ConnectionState, PresignedUrl, StateReason,
};
use kvs_signaling::emulator::{Emulator, EmulatorConfig, Target, TlsSetting};
use kvs_signaling::protocol::Role;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

const KEY: &str = "AKIDEXAMPLESIGNER001";
const SECRET: &str = "signer/secret/key/EXAMPLE";
const WAIT: Duration = Duration::from_secs(10);
const SUFFIX: &str = "acme-cam/2.1 (fw 7)";

fn temp_path(name: &str) -> PathBuf {
    let unique = format!("kvs-signer-{}-{name}-{:?}", std::process::id(), std::thread::current().id());
    std::env::temp_dir().join(unique.replace(['(', ')'], ""))
}

async fn secure_emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        channels: vec!["cam-1".into()],
        auth: Some(vec![(KEY.into(), SECRET.into())]),
        tls: Some(TlsSetting::Generate { ca_out: Some(temp_path("ca.pem")) }),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// What the device holds instead of credentials: a provider that fails the
/// test if it is ever asked.
#[derive(Debug)]
struct NoCredentials(AtomicUsize);

impl CredentialsProvider for NoCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(AwsError::Credentials("this device holds no credentials".into()))
    }
}

/// The backend: the library's SigV4 signer with the emulator's keys,
/// counting what it signed.
#[derive(Debug)]
struct Backend {
    sigv4: SigV4Signer,
    urls: AtomicUsize,
    requests: AtomicUsize,
}

impl Backend {
    fn new() -> Arc<Backend> {
        let sigv4 = SigV4Signer::new(Credentials::new(KEY, SECRET, Some("backend-session-token")));
        Arc::new(Backend { sigv4, urls: AtomicUsize::new(0), requests: AtomicUsize::new(0) })
    }
}

impl RequestSigner for Backend {
    fn presign_wss_url<'a>(&'a self, request: &'a WssSignRequest) -> BoxFuture<'a, Result<String, SignerError>> {
        self.urls.fetch_add(1, Ordering::SeqCst);
        self.sigv4.presign_wss_url(request)
    }

    fn sign_request<'a>(
        &'a self,
        request: &'a HttpSignRequest,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, SignerError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.sigv4.sign_request(request)
    }
}

fn via_backend(
    emulator: &Emulator,
    client_id: Option<&str>,
    signer: Arc<dyn RequestSigner>,
    credentials: Arc<NoCredentials>,
) -> ClientConfig {
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials);
    control_plane.endpoint_override = Some(emulator.control_plane_url());
    control_plane.request_timeout = Duration::from_secs(3);
    let mut config = ClientConfig::via_control_plane("cam-1", client_id, AwsConfig::new(control_plane));
    config.ca_bundle = emulator.ca_path().map(PathBuf::from);
    config.signer = Some(signer);
    config.user_agent_suffix = Some(SUFFIX.into());
    config
}

async fn next_message(events: &mut EventReceiver) -> kvs_signaling::client::ReceivedMessage {
    tokio::time::timeout(WAIT, async {
        loop {
            if let ClientEvent::Message(m) = events.recv().await.expect("sink alive") {
                return m;
            }
        }
    })
    .await
    .expect("message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_signs_for_a_client_without_credentials() {
    let emulator = secure_emulator().await;
    let backend = Backend::new();
    let no_credentials = Arc::new(NoCredentials(AtomicUsize::new(0)));
    let (master, mut master_events) =
        Client::new(via_backend(&emulator, None, backend.clone(), no_credentials.clone())).unwrap();
    let (viewer, mut viewer_events) =
        Client::new(via_backend(&emulator, Some("phone"), backend.clone(), no_credentials.clone())).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();
    for i in 0..5 {
        viewer.send_sdp_offer(None, &format!("v=0 offer {i}"), None).unwrap();
        let offer = next_message(&mut master_events).await;
        assert_eq!(offer.sdp.unwrap().sdp, format!("v=0 offer {i}"));
        master.send_sdp_answer(Some("phone"), &format!("v=0 answer {i}"), None).unwrap();
        let answer = next_message(&mut viewer_events).await;
        assert_eq!(answer.sdp.unwrap().sdp, format!("v=0 answer {i}"));
    }
    assert_eq!(no_credentials.0.load(Ordering::SeqCst), 0, "the credentials were asked for");
    assert_eq!(backend.urls.load(Ordering::SeqCst), 2, "one URL per connect");
    // Describe + GetEndpoint per client, GetIceServerConfig in the background.
    assert!(backend.requests.load(Ordering::SeqCst) >= 4, "{}", backend.requests.load(Ordering::SeqCst));
    assert_eq!(emulator.stats().auth_failures, 0);

    // The user agent suffix reached the emulator on both kinds of request.
    let expected = format!("kvs-signaling/{} {SUFFIX}", env!("CARGO_PKG_VERSION"));
    let seen = emulator.user_agents();
    assert_eq!(seen.https, vec![expected.clone()], "{seen:?}");
    assert_eq!(seen.websocket, vec![expected], "{seen:?}");
    master.disconnect(Duration::from_secs(1)).await;
    viewer.disconnect(Duration::from_secs(1)).await;
    emulator.shutdown().await;
}

type Answer = fn(&WssSignRequest) -> Result<String, SignerError>;

/// A signer that answers what the test scripts.
#[derive(Debug)]
struct Scripted {
    answer: Answer,
    delay: Duration,
}

impl RequestSigner for Scripted {
    fn presign_wss_url<'a>(&'a self, request: &'a WssSignRequest) -> BoxFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            (self.answer)(request)
        })
    }

    fn sign_request<'a>(&'a self, _: &'a HttpSignRequest) -> BoxFuture<'a, Result<Vec<(String, String)>, SignerError>> {
        Box::pin(async { Err(SignerError::Failed("not used".into())) })
    }
}

fn direct(emulator: &Emulator, signer: Arc<dyn RequestSigner>) -> ClientConfig {
    let arn = emulator.channel_arn("cam-1").unwrap();
    let mut config = ClientConfig::master(&arn, &emulator.ws_endpoint());
    config.ca_bundle = emulator.ca_path().map(PathBuf::from);
    config.signer = Some(signer);
    config.signer_timeout = Duration::from_millis(300);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_signer_may_not_return_is_a_named_error() {
    let emulator = secure_emulator().await;
    assert!(emulator.ws_endpoint().starts_with("wss://"));
    type Check = fn(&SignerError) -> bool;
    let cases: [(&str, Answer, Duration, Check); 6] = [
        ("garbage", |_| Ok("not a url at all".into()), Duration::ZERO, |e| matches!(e, SignerError::InvalidUrl(_))),
        (
            "ws:// for a wss:// endpoint",
            |r| Ok(format!("{}/?X-Amz-Signature=abc", r.endpoint.replace("wss://", "ws://"))),
            Duration::ZERO,
            |e| matches!(e, SignerError::NotSecure(m) if !m.contains("abc")),
        ),
        (
            "another host",
            |_| Ok("wss://attacker.example:443/?X-Amz-Signature=abc".into()),
            Duration::ZERO,
            |e| matches!(e, SignerError::InvalidUrl(m) if m.contains("attacker.example")),
        ),
        (
            "too long",
            |r| Ok(format!("{}/?X-Amz-Signature={}", r.endpoint, "a".repeat(MAX_SIGNED_URL_LEN))),
            Duration::ZERO,
            |e| matches!(e, SignerError::TooLong { max: MAX_SIGNED_URL_LEN, .. }),
        ),
        (
            "failing",
            |_| Err(SignerError::Failed("backend unreachable".into())),
            Duration::ZERO,
            |e| matches!(e, SignerError::Failed(m) if m == "backend unreachable"),
        ),
        (
            "too slow",
            |_| Ok("never used".into()),
            Duration::from_secs(5),
            |e| matches!(e, SignerError::Failed(m) if m.contains("within 300 ms")),
        ),
    ];
    for (name, answer, delay, check) in cases {
        let (client, _events) = Client::new(direct(&emulator, Arc::new(Scripted { answer, delay }))).unwrap();
        let result = client.connect().await;
        match &result {
            Err(ClientError::Signer(e)) => assert!(check(e), "{name}: {e:?}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(client.state(), ConnectionState::Disconnected, "{name}");
    }
    // None of them reached the emulator's data plane.
    let stats = emulator.stats();
    assert_eq!((stats.open_connections, stats.upgrades_refused, stats.auth_failures), (0, 0, 0), "{stats:?}");
    assert!(emulator.user_agents().websocket.is_empty(), "an upgrade was tried");
    emulator.shutdown().await;
}

/// A presigned URL for `role` on the emulator, signed at `signed_at`.
fn presign(emulator: &Emulator, role: Role, signed_at: SystemTime) -> String {
    let arn = emulator.channel_arn("cam-1").unwrap();
    let mut params = vec![("X-Amz-ChannelARN", arn.as_str())];
    if role == Role::Viewer {
        params.push(("X-Amz-ClientId", "phone"));
    }
    let credentials = Credentials::new(KEY, SECRET, None);
    kvs_signaling::aws::sigv4::presign_wss_url(&emulator.ws_endpoint(), &params, &credentials, "us-west-2", signed_at)
        .unwrap()
}

fn with_url(emulator: &Emulator, role: Role, url: String, expires_at: SystemTime) -> ClientConfig {
    let mut config = ClientConfig::presigned(role, PresignedUrl { url, expires_at });
    config.ca_bundle = emulator.ca_path().map(PathBuf::from);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_presigned_urls_connect_until_they_expire() {
    let emulator = secure_emulator().await;
    let now = SystemTime::now();
    let valid_until = now + Duration::from_secs(299);
    let master_url = presign(&emulator, Role::Master, now);
    let viewer_url = presign(&emulator, Role::Viewer, now);
    let (master, mut master_events) =
        Client::new(with_url(&emulator, Role::Master, master_url.clone(), valid_until)).unwrap();
    let (viewer, _viewer_events) = Client::new(with_url(&emulator, Role::Viewer, viewer_url, valid_until)).unwrap();
    // The ARN and the viewer's client id come from the URL.
    assert_eq!(viewer.config().client_id.as_deref(), Some("phone"));
    assert_eq!(master.config().channel_arn, emulator.channel_arn("cam-1").unwrap());
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();
    viewer.send_sdp_offer(None, "v=0 presigned", None).unwrap();
    assert_eq!(next_message(&mut master_events).await.sender_client_id.as_deref(), Some("phone"));
    master.disconnect(Duration::from_secs(1)).await;
    viewer.disconnect(Duration::from_secs(1)).await;

    // Expired by the local clock: refused at once, without a connection.
    let refused_before = emulator.stats().upgrades_refused;
    let expired = Client::new(with_url(&emulator, Role::Master, master_url, now - Duration::from_secs(1))).unwrap().0;
    let result = expired.connect().await;
    assert!(matches!(&result, Err(ClientError::PresignedUrlExpired(m)) if m.contains("expired")), "{result:?}");
    assert_eq!(emulator.stats().upgrades_refused, refused_before);

    // Expired by the service's clock (signed 10 minutes ago, the expiry given
    // wrong): the 403 is the same named error, and in the background mode the
    // client stops instead of retrying forever.
    let old = presign(&emulator, Role::Master, now - Duration::from_secs(600));
    let (stale, mut stale_events) = Client::new(with_url(&emulator, Role::Master, old, valid_until)).unwrap();
    stale.start().unwrap();
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let ClientEvent::State(change) = stale_events.recv().await.unwrap()
                && change.state == ConnectionState::Disconnected
            {
                return change.reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(&reason, StateReason::ConnectFailed(m) if m.contains("presigned URL") && m.contains("403")),
        "{reason:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stale.state(), ConnectionState::Disconnected);
    assert_eq!(stale.metrics().connect_failures, 1, "retried a dead URL");
    assert_eq!(emulator.stats().upgrades_refused, refused_before + 1);
    emulator.shutdown().await;
}

/// A presigned URL that expires while its socket is up: the handover it
/// cannot make keeps the socket; when that socket ends, the client stops
/// with the named error instead of trying the endpoint unsigned forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_that_expires_during_a_connection_stops_the_client_when_its_socket_ends() {
    let emulator = secure_emulator().await;
    let now = SystemTime::now();
    let url = presign(&emulator, Role::Master, now);
    let mut config = with_url(&emulator, Role::Master, url, now + Duration::from_secs(2));
    config.max_connection_age = Duration::from_millis(800);
    let (master, mut events) = Client::new(config).unwrap();
    master.connect().await.unwrap();
    // Handovers renew the socket with the URL until it expires (by 2 s), then
    // the socket is kept without one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(master.state(), ConnectionState::Connected);
    let refused = emulator.stats().upgrades_refused;
    assert_eq!(emulator.drop_connections(&Target::all()), 1);
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let ClientEvent::State(change) = events.recv().await.unwrap()
                && change.state == ConnectionState::Disconnected
            {
                return change.reason;
            }
        }
    })
    .await
    .expect("the client stops");
    assert!(matches!(&reason, StateReason::ConnectFailed(m) if m.contains("presigned URL")), "{reason:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(master.state(), ConnectionState::Disconnected);
    assert_eq!(emulator.stats().upgrades_refused, refused, "an unsigned or dead URL was tried");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_presigned_url_is_replaced_by_the_signer() {
    let emulator = secure_emulator().await;
    let now = SystemTime::now();
    let backend = Backend::new();
    let old = presign(&emulator, Role::Master, now - Duration::from_secs(600));
    for expires_at in [now - Duration::from_secs(1), now + Duration::from_secs(60)] {
        let mut config = with_url(&emulator, Role::Master, old.clone(), expires_at);
        config.signer = Some(backend.clone());
        let (client, _events) = Client::new(config).unwrap();
        client.connect().await.unwrap();
        client.disconnect(Duration::from_secs(1)).await;
    }
    assert_eq!(backend.urls.load(Ordering::SeqCst), 2);
    emulator.shutdown().await;
}

#[test]
fn user_agent_suffixes_and_presigned_urls_are_checked() {
    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1";
    for bad in ["", "line\r\nX-Injected: 1", "caf\u{e9}", &"a".repeat(257)] {
        let config = ClientConfig { user_agent_suffix: Some(bad.into()), ..ClientConfig::master(arn, "wss://h") };
        assert!(matches!(Client::new(config), Err(ClientError::InvalidConfig(_))), "{bad:?}");
    }
    let good = ClientConfig { user_agent_suffix: Some("a".repeat(256)), ..ClientConfig::master(arn, "wss://h") };
    assert!(Client::new(good).is_ok());
    let later = SystemTime::now() + Duration::from_secs(60);
    for bad in ["wss://h/no-query", "http://h/?a=b", "wss://h/?a=b c", &format!("wss://h/?{}", "a".repeat(8192))] {
        let config = ClientConfig::presigned(Role::Master, PresignedUrl { url: bad.into(), expires_at: later });
        let config = ClientConfig { channel_arn: arn.into(), ..config };
        assert!(matches!(Client::new(config), Err(ClientError::InvalidConfig(_))), "{bad:?}");
    }
}
