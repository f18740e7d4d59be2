//! The real service path against the emulator with TLS and SigV4 on: bootstrap
//! by channel name, presigned connect, ICE servers, endpoint cache, clock skew,
//! and every failure with its own error.

mod common;

use kvs_signaling::aws::{
    AwsError, ControlPlaneConfig, CreateChannel, Credentials, MediaStorageConfiguration, StaticCredentials,
};
use kvs_signaling::client::{AwsConfig, Client, ClientConfig, ClientError, ClientEvent, ConnectionState};
use kvs_signaling::emulator::{ControlPlaneFault, Emulator, EmulatorConfig, TlsSetting};
use kvs_signaling::protocol::MessageType;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "AKIDEXAMPLEBOOTSTRAP";
const SECRET: &str = "bootstrap/secret/key/EXAMPLE";
const WAIT: Duration = Duration::from_secs(10);

fn temp_path(name: &str) -> PathBuf {
    let unique = format!("kvs-bootstrap-{}-{name}-{:?}", std::process::id(), std::thread::current().id());
    std::env::temp_dir().join(unique.replace(['(', ')'], ""))
}

async fn secure_emulator(ice_ttl: Duration) -> Emulator {
    Emulator::start(EmulatorConfig {
        channels: vec!["cam-1".into()],
        auth: Some(vec![(KEY.into(), SECRET.into())]),
        tls: Some(TlsSetting::Generate { ca_out: Some(temp_path("ca.pem")) }),
        ice_server_ttl: ice_ttl,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn aws(emulator: &Emulator, secret: &str) -> AwsConfig {
    let credentials = Arc::new(StaticCredentials::new(Credentials::new(KEY, secret, Some("session-token"))));
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials);
    control_plane.endpoint_override = Some(emulator.control_plane_url());
    control_plane.ca_bundle = emulator.ca_path().map(PathBuf::from);
    control_plane.request_timeout = Duration::from_secs(3);
    AwsConfig::new(control_plane)
}

fn config(channel: &str, client_id: Option<&str>, aws: AwsConfig) -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::via_control_plane(channel, client_id, aws) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_by_name_over_tls_with_sigv4_and_exchange() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let (master, mut master_events) = Client::new(config("cam-1", None, aws(&emulator, SECRET))).unwrap();
    let (viewer, mut viewer_events) = Client::new(config("cam-1", Some("phone"), aws(&emulator, SECRET))).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();

    viewer.send_sdp_offer(None, "v=0 over tls", None).unwrap();
    let offer = common::next_matching(&mut master_events, WAIT, |e| match e {
        ClientEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((offer.sender_client_id.as_deref(), offer.sdp.unwrap().sdp.as_str()), (Some("phone"), "v=0 over tls"));
    master.send_sdp_answer(Some("phone"), "v=0 answer", None).unwrap();
    // The ICE servers arrive on their own, in parallel with the socket: possibly
    // before the answer, so note them while waiting for it.
    let mut ice_count = None;
    let answer = common::next_matching(&mut viewer_events, WAIT, |e| match e {
        ClientEvent::Message(m) => Some(m),
        ClientEvent::IceServersChanged { count } => {
            ice_count = Some(count);
            None
        }
        _ => None,
    })
    .await;
    assert_eq!(answer.message_type, MessageType::SdpAnswer);
    let count = match ice_count {
        Some(count) => count,
        None => {
            common::next_matching(&mut viewer_events, WAIT, |e| match e {
                ClientEvent::IceServersChanged { count } => Some(count),
                _ => None,
            })
            .await
        }
    };
    let servers = viewer.ice_servers();
    assert_eq!(servers.len(), count);
    assert!(count >= 1);
    assert!(servers.iter().all(|s| !s.uris.is_empty() && !s.username.is_empty() && !s.password.is_empty()));
    assert!(servers[0].uris.iter().any(|u| u.starts_with("turn")), "{:?}", servers[0].uris);

    let metrics = viewer.metrics();
    assert!(metrics.last_tls_us > 0 && metrics.last_websocket_us > 0 && metrics.last_control_plane_us > 0);
    let calls = emulator.stats().control_plane;
    assert_eq!(calls.describe_signaling_channel, 2, "one Describe per client");
    assert_eq!(calls.get_signaling_channel_endpoint, 2);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_makes_no_control_plane_call() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let cache = temp_path("endpoints.json");
    let _ = std::fs::remove_file(&cache);
    let cached = |emulator: &Emulator| {
        let mut aws = aws(emulator, SECRET);
        aws.endpoint_cache_path = Some(cache.clone());
        aws.ice_servers = false;
        aws
    };
    let (cold, _e) = Client::new(config("cam-1", None, cached(&emulator))).unwrap();
    cold.connect().await.unwrap();
    cold.disconnect(Duration::from_secs(1)).await;
    let after_cold = emulator.stats().control_plane.total();
    assert_eq!(after_cold, 2, "Describe + GetSignalingChannelEndpoint");

    // A new client (as after a process restart) reads the file: straight to the socket.
    let (warm, _e) = Client::new(config("cam-1", None, cached(&emulator))).unwrap();
    warm.connect().await.unwrap();
    assert_eq!(warm.state(), ConnectionState::Connected);
    assert_eq!(emulator.stats().control_plane.total(), after_cold, "no control-plane call on a warm start");
    assert!(warm.metrics().last_control_plane_us < cold.metrics().last_control_plane_us);
    let _ = std::fs::remove_file(&cache);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_missing_channel_when_asked() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let (missing, _e) = Client::new(config("new-cam", None, aws(&emulator, SECRET))).unwrap();
    match missing.connect().await {
        Err(ClientError::ControlPlane(AwsError::NotFound(_))) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    let mut create = aws(&emulator, SECRET);
    create.create_channel =
        Some(CreateChannel { message_ttl_secs: Some(30), tags: vec![("site".into(), "lab".into())] });
    let (client, _e) = Client::new(config("new-cam", None, create)).unwrap();
    client.connect().await.unwrap();
    assert!(emulator.channel_arn("new-cam").is_some());
    assert_eq!(emulator.stats().control_plane.create_signaling_channel, 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_own_error() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let outcome = |config: ClientConfig| async move {
        let (client, _e) = Client::new(config).unwrap();
        let started = std::time::Instant::now();
        let result = client.connect().await;
        (result, started.elapsed())
    };

    let (wrong_secret, _) = outcome(config("cam-1", None, aws(&emulator, "not-the-secret"))).await;
    assert!(matches!(wrong_secret, Err(ClientError::ControlPlane(AwsError::AccessDenied(_)))), "{wrong_secret:?}");
    assert!(!format!("{:?}", wrong_secret).contains("not-the-secret"), "the secret never shows");

    let (unknown, _) = outcome(config("no-such-channel", None, aws(&emulator, SECRET))).await;
    assert!(matches!(unknown, Err(ClientError::ControlPlane(AwsError::NotFound(_)))), "{unknown:?}");

    let arn = emulator.channel_arn("cam-1").unwrap();
    emulator.delete_channel("cam-1");
    let (deleted, _) = outcome(config(&arn, None, aws(&emulator, SECRET))).await;
    assert!(matches!(deleted, Err(ClientError::ControlPlane(AwsError::NotFound(_)))), "{deleted:?}");
    emulator.create_channel("cam-1");

    let mut untrusted = aws(&emulator, SECRET);
    untrusted.control_plane.ca_bundle = None;
    let (tls, _) = outcome(config("cam-1", None, untrusted)).await;
    assert!(matches!(tls, Err(ClientError::ControlPlane(AwsError::Tls(_)))), "{tls:?}");

    let mut wrong_region = aws(&emulator, SECRET);
    wrong_region.control_plane.region = "eu-west-1".into();
    let (region, _) = outcome(config("cam-1", None, wrong_region)).await;
    assert!(matches!(region, Err(ClientError::ControlPlane(AwsError::AccessDenied(_)))), "{region:?}");

    emulator.fail_control_plane(ControlPlaneFault { status: 500, count: Some(1), ..ControlPlaneFault::default() });
    let (server_error, _) = outcome(config("cam-1", None, aws(&emulator, SECRET))).await;
    assert!(matches!(server_error, Err(ClientError::ControlPlane(AwsError::Service(_)))), "{server_error:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut refused = aws(&emulator, SECRET);
    refused.control_plane.endpoint_override = Some(format!("https://127.0.0.1:{closed}"));
    let (network, _) = outcome(config("cam-1", None, refused)).await;
    assert!(matches!(network, Err(ClientError::ControlPlane(AwsError::Network(_)))), "{network:?}");

    // A control plane that accepts but never answers: bounded by the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("https://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut hanging = aws(&emulator, SECRET);
    hanging.control_plane.endpoint_override = Some(silent_url);
    hanging.control_plane.request_timeout = Duration::from_millis(500);
    let (timeout, elapsed) = outcome(config("cam-1", None, hanging)).await;
    assert!(
        matches!(timeout, Err(ClientError::ControlPlane(AwsError::Timeout(_))) | Err(ClientError::Timeout)),
        "{timeout:?}"
    );
    assert!(elapsed < Duration::from_secs(6), "nothing hangs past the configured timeout: {elapsed:?}");
    holder.abort();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_learnt_and_corrected() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    // The service's clock runs 20 minutes ahead of ours: our signatures look expired.
    emulator.set_clock_offset(20 * 60 * 1000);
    let (client, _e) = Client::new(config("cam-1", None, aws(&emulator, SECRET))).unwrap();
    client.connect().await.unwrap();
    let skew = client.metrics().clock_skew_ms;
    assert!((skew - 20 * 60 * 1000).abs() < 5_000, "learnt skew {skew} ms");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_are_refreshed_before_their_ttl_and_on_request() {
    // TTL 32 s: refreshed at TTL minus the 30 s grace, i.e. every 2 s.
    let emulator = secure_emulator(Duration::from_secs(32)).await;
    let (client, mut events) = Client::new(config("cam-1", Some("ice-watcher"), aws(&emulator, SECRET))).unwrap();
    client.connect().await.unwrap();
    let ice_event = |e| matches!(e, ClientEvent::IceServersChanged { .. }).then_some(());
    common::next_matching(&mut events, WAIT, ice_event).await;
    let first_password = client.ice_servers()[0].password.clone();
    common::next_matching(&mut events, WAIT, ice_event).await;
    let calls = emulator.stats().control_plane.get_ice_server_config;
    assert!(calls >= 2, "refreshed before the TTL ran out ({calls} calls)");
    assert_ne!(client.ice_servers()[0].password, first_password, "fresh TURN credentials");

    // RECONNECT_ICE_SERVER: the application hears of it, and the list is fetched again at once.
    emulator.send_reconnect_ice_server(&kvs_signaling::emulator::Target::all());
    common::next_matching(&mut events, WAIT, |e| {
        matches!(e, ClientEvent::ServiceNotice(MessageType::ReconnectIceServer)).then_some(())
    })
    .await;
    common::next_matching(&mut events, WAIT, ice_event).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_never_shows_the_token_or_signature() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let cache = temp_path("refused-endpoints.json");
    let _ = std::fs::remove_file(&cache);
    let cached = |secret: &str| {
        let mut aws = aws(&emulator, secret);
        aws.endpoint_cache_path = Some(cache.clone());
        aws.ice_servers = false;
        aws
    };
    let (good, _e) = Client::new(config("cam-1", None, cached(SECRET))).unwrap();
    good.connect().await.unwrap();
    good.disconnect(Duration::from_secs(1)).await;
    // Warm start with a wrong secret: no control-plane call, so the presigned
    // upgrade itself is refused, with a body that quotes the canonical request.
    let (bad, _e) = Client::new(config("cam-1", None, cached("a-wrong-secret"))).unwrap();
    let error = bad.connect().await.unwrap_err();
    assert!(matches!(error, ClientError::Refused { status: 403, .. }), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(shown.to_ascii_lowercase().contains("signature"), "the service's reason is kept: {shown}");
    for secret in ["session-token", "a-wrong-secret", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    let _ = std::fs::remove_file(&cache);
    emulator.shutdown().await;
}

/// The calls made outside a connection (media storage) share one control
/// plane, made on the first of them: its CA bundle is read once, so they go
/// on after the file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_storage_calls_share_one_control_plane() {
    let emulator = secure_emulator(Duration::from_secs(300)).await;
    let (client, _events) = Client::new(config("cam-1", None, aws(&emulator, SECRET))).unwrap();
    let disabled = MediaStorageConfiguration { enabled: false, stream_arn: None };
    assert_eq!(client.media_storage().await.unwrap(), disabled);
    std::fs::remove_file(emulator.ca_path().unwrap()).unwrap();
    let stream = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam-rec/1700000000000";
    let enabled = MediaStorageConfiguration { enabled: true, stream_arn: Some(stream.into()) };
    client.set_media_storage(&enabled).await.expect("the control plane of the first call is reused");
    assert_eq!(client.media_storage().await.unwrap(), enabled);
    // A new client reads the (missing) CA file again, and says so.
    let refused = Client::new(config("cam-1", None, aws(&emulator, SECRET))).err().expect("no CA file");
    assert!(matches!(&refused, ClientError::InvalidConfig(m) if m.contains("CA bundle")), "{refused}");
    assert_eq!(emulator.stats().control_plane.describe_media_storage_configuration, 2);
    emulator.shutdown().await;
}
