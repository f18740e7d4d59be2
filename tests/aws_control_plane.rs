//! The AWS layer against the emulator's control plane over loopback: the
//! bring-up flow (describe / create → endpoints → ICE → presigned WebSocket),
//! error kinds, SigV4 refusals, clock-skew recovery and TLS verification.

use kvs_signaling::aws::{
    AwsError, ChannelRef, ControlPlane, ControlPlaneConfig, CreateChannel, Credentials, EndpointCache,
    StaticCredentials, TimeSource, tls_config,
};
use kvs_signaling::emulator::{ControlPlaneFault, Emulator, EmulatorConfig, Operation, TlsSetting};
use kvs_signaling::protocol::Role;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;

const ACCESS_KEY: &str = "AKIDEMULATORTEST";
const SECRET: &str = "emulator-secret-key-value";
const TOKEN: &str = "emulator-session-token-value";
const CHANNEL: &str = "test-channel";

fn emulator_config(tls: bool) -> EmulatorConfig {
    EmulatorConfig {
        channels: vec![CHANNEL.to_owned()],
        auth: Some(vec![(ACCESS_KEY.to_owned(), SECRET.to_owned())]),
        tls: tls.then_some(TlsSetting::Generate { ca_out: None }),
        ..EmulatorConfig::default()
    }
}

fn credentials(secret: &str) -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials::new(Credentials::new(ACCESS_KEY, secret, Some(TOKEN))))
}

fn control_plane_config(emulator: &Emulator, secret: &str) -> ControlPlaneConfig {
    let mut config = ControlPlaneConfig::new("us-west-2", credentials(secret));
    config.endpoint_override = Some(emulator.control_plane_url());
    config.ca_bundle = emulator.ca_path().map(PathBuf::from);
    config.request_timeout = Duration::from_secs(5);
    config
}

fn control_plane(emulator: &Emulator) -> ControlPlane {
    ControlPlane::new(&control_plane_config(emulator, SECRET)).expect("control plane")
}

/// A unique path under the system temp dir (the file is not created).
fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!(
        "kvs-aws-test-{tag}-{}-{nanos}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Opens the presigned WebSocket URL and closes it again; `Ok` means the
/// emulator accepted the signature and the upgrade. `wss://` goes through the
/// control plane's own TLS client (rustls or native-tls, as built).
async fn open_socket(url: &str, control_plane: &ControlPlane) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let secure = url.starts_with("wss://");
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    if secure {
        upgrade(url, control_plane.tls().connect(&host, tcp).await.map_err(|e| e.to_string())?).await
    } else {
        upgrade(url, tcp).await
    }
}

async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: S) -> Result<(), String> {
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((mut socket, _)) => {
            let _ = socket.close(None).await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Describe → endpoints → ICE → presign → connect, as master and as viewer.
async fn full_flow(emulator: &Emulator) {
    let control_plane = control_plane(emulator);
    let info = control_plane.describe_channel(Some(CHANNEL), None).await.expect("describe");
    assert_eq!(info.name, CHANNEL);
    assert_eq!(Some(info.arn.clone()), emulator.channel_arn(CHANNEL));
    assert!(info.is_active(), "{info:?}");
    assert_eq!(info.channel_type.as_deref(), Some("SINGLE_MASTER"));
    let by_arn = control_plane.describe_channel(None, Some(&info.arn)).await.expect("describe by ARN");
    assert_eq!(by_arn.arn, info.arn);

    for (role, client_id) in [(Role::Master, None), (Role::Viewer, Some("viewer-1"))] {
        let endpoints = control_plane.get_endpoints(&info.arn, role).await.expect("endpoints");
        let scheme = if emulator.ca_path().is_some() { ("wss://", "https://") } else { ("ws://", "http://") };
        assert!(endpoints.wss.starts_with(scheme.0), "{endpoints:?}");
        assert!(endpoints.https.starts_with(scheme.1), "{endpoints:?}");

        let servers = control_plane.get_ice_server_config(&endpoints.https, &info.arn, client_id).await.expect("ice");
        assert!(!servers.is_empty());
        for server in &servers {
            assert!(!server.uris.is_empty() && server.uris.iter().all(|u| u.starts_with("turn")), "{server:?}");
            assert!(!server.username.is_empty() && !server.password.is_empty());
            assert_eq!(server.ttl, Duration::from_secs(300));
        }

        let url = control_plane.presign_wss_url(&endpoints.wss, &info.arn, client_id).await.expect("presign");
        assert!(url.contains("X-Amz-Security-Token="), "the session token is in the signed query");
        open_socket(&url, &control_plane).await.expect("the emulator accepts the presigned URL");
    }
    let stats = emulator.stats();
    assert_eq!(stats.auth_failures, 0);
    assert_eq!(stats.control_plane.describe_signaling_channel, 2);
    assert_eq!(stats.control_plane.get_signaling_channel_endpoint, 2);
    assert_eq!(stats.control_plane.get_ice_server_config, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_endpoints_ice_and_connect() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    full_flow(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_flow_over_tls_with_the_emulator_ca() {
    let emulator = Emulator::start(emulator_config(true)).await.unwrap();
    assert!(emulator.control_plane_url().starts_with("https://"));
    full_flow(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_verify_are_tls_errors() {
    let emulator = Emulator::start(emulator_config(true)).await.unwrap();
    let other = Emulator::start(emulator_config(true)).await.unwrap();

    // Mozilla roots only: the emulator's throw-away CA is unknown.
    let mut config = control_plane_config(&emulator, SECRET);
    config.ca_bundle = None;
    let error = ControlPlane::new(&config).unwrap().describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(&error, AwsError::Tls(m) if m.contains("certificate")), "{error:?}");

    // Another emulator's CA: a valid bundle that does not sign this server.
    config.ca_bundle = other.ca_path().map(PathBuf::from);
    let control_plane = ControlPlane::new(&config).unwrap();
    let error = control_plane.describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(&error, AwsError::Tls(_)), "{error:?}");
    // The same settings refuse the WebSocket too.
    let arn = emulator.channel_arn(CHANNEL).unwrap();
    let url = control_plane.presign_wss_url(&emulator.ws_endpoint(), &arn, None).await.unwrap();
    assert!(open_socket(&url, &control_plane).await.is_err());

    // Nothing reached the control plane.
    assert_eq!(emulator.stats().control_plane.total(), 0);
    // The right bundle still works through a separately built config.
    let good = tls_config(emulator.ca_path()).unwrap();
    assert_eq!(good.alpn_protocols, vec![b"http/1.1".to_vec()]);
    other.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_channels_are_not_found() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    let control_plane = control_plane(&emulator);
    let error = control_plane.describe_channel(Some("no-such-channel"), None).await.unwrap_err();
    let AwsError::NotFound(service) = &error else { panic!("{error:?}") };
    assert_eq!(service.status, 404);
    assert_eq!(service.code.as_deref(), Some("ResourceNotFoundException"));
    assert!(!service.message.is_empty(), "the service's message is kept");

    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/no-such-channel/1";
    assert!(matches!(control_plane.get_endpoints(arn, Role::Master).await, Err(AwsError::NotFound(_))));

    // A deleted channel is gone too.
    let arn = emulator.channel_arn(CHANNEL).unwrap();
    assert!(emulator.delete_channel(CHANNEL));
    assert!(matches!(control_plane.get_endpoints(&arn, Role::Viewer).await, Err(AwsError::NotFound(_))));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_access_denied_without_leaking_it() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    let wrong = "wrong-secret-key-value";
    let control_plane = ControlPlane::new(&control_plane_config(&emulator, wrong)).unwrap();
    let error = control_plane.describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(&error, AwsError::AccessDenied(s) if s.status == 403 && !s.message.is_empty()), "{error:?}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(wrong) && !text.contains(TOKEN) && !text.contains(SECRET), "{text}");
    assert!(emulator.stats().auth_failures >= 1);

    // An unknown access key is refused as well.
    let mut config = ControlPlaneConfig::new(
        "us-west-2",
        Arc::new(StaticCredentials::new(Credentials::new("AKIDUNKNOWN", SECRET, None))),
    );
    config.endpoint_override = Some(emulator.control_plane_url());
    let error = ControlPlane::new(&config).unwrap().describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(error, AwsError::AccessDenied(_)), "{error:?}");

    // The presigned URL of a wrong secret is refused at the upgrade.
    let arn = emulator.channel_arn(CHANNEL).unwrap();
    let url = control_plane.presign_wss_url(&emulator.ws_endpoint(), &arn, None).await.unwrap();
    let refused = open_socket(&url, &control_plane).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_learnt_and_the_call_retried() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    let arn = emulator.channel_arn(CHANNEL).unwrap();

    // This host's clock is 20 minutes slow.
    let slow: TimeSource = Arc::new(|| SystemTime::now() - Duration::from_secs(20 * 60));
    let control_plane = control_plane(&emulator).with_time_source(slow);
    let info = control_plane.describe_channel(Some(CHANNEL), None).await.expect("retried with the corrected time");
    assert_eq!(info.arn, arn);
    let skew = control_plane.clock_skew().get();
    assert!((20 * 60_000 - 2_000..=20 * 60_000 + 2_000).contains(&skew), "skew {skew} ms");
    // One refused call, then the retry; later calls are right the first time.
    assert_eq!(emulator.stats().control_plane.describe_signaling_channel, 2);
    let endpoints = control_plane.get_endpoints(&arn, Role::Master).await.unwrap();
    assert_eq!(emulator.stats().control_plane.get_signaling_channel_endpoint, 1);
    // The presigned URL uses the corrected time as well.
    let url = control_plane.presign_wss_url(&endpoints.wss, &arn, None).await.unwrap();
    open_socket(&url, &control_plane).await.expect("the skew-corrected URL is accepted");

    // The service 30 minutes behind a correct local clock: "Signature not yet current".
    emulator.set_clock_offset(-30 * 60_000);
    let correct_clock = ControlPlane::new(&control_plane_config(&emulator, SECRET)).unwrap();
    correct_clock.describe_channel(Some(CHANNEL), None).await.expect("retried");
    let skew = correct_clock.clock_skew().get();
    assert!((-30 * 60_000 - 2_000..=-30 * 60_000 + 2_000).contains(&skew), "skew {skew} ms");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_when_missing_and_cache_the_result() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    let control_plane = control_plane(&emulator);
    let cache_path = temp_path("cache");
    let cache = EndpointCache::new(Duration::from_secs(3600), Some(cache_path.clone()));
    let channel = ChannelRef::parse("created-channel");
    let create = CreateChannel { message_ttl_secs: Some(30), tags: vec![("team".into(), "video".into())] };

    // Without `create`, a missing channel stays missing.
    let error = control_plane.resolve_channel(&channel, Role::Master, None, Some(&cache)).await.unwrap_err();
    assert!(matches!(error, AwsError::NotFound(_)), "{error:?}");

    let resolved = control_plane.resolve_channel(&channel, Role::Master, Some(&create), Some(&cache)).await.unwrap();
    assert!(!resolved.from_cache);
    assert_eq!(Some(resolved.arn.clone()), emulator.channel_arn("created-channel"));
    let info = control_plane.describe_channel(None, Some(&resolved.arn)).await.unwrap();
    assert_eq!(info.message_ttl_secs, Some(30));
    assert_eq!(emulator.stats().control_plane.create_signaling_channel, 1);

    // A second resolve, and one from a new process reading the file, make no call.
    let calls = emulator.stats().control_plane.total();
    let again = control_plane.resolve_channel(&channel, Role::Master, Some(&create), Some(&cache)).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(again.endpoints, resolved.endpoints);
    let reloaded = EndpointCache::new(Duration::from_secs(3600), Some(cache_path.clone()));
    let warm = control_plane.resolve_channel(&channel, Role::Master, None, Some(&reloaded)).await.unwrap();
    assert!(warm.from_cache);
    assert_eq!(emulator.stats().control_plane.total(), calls);
    // The viewer's endpoints are a separate entry.
    let viewer = control_plane.resolve_channel(&channel, Role::Viewer, None, Some(&cache)).await.unwrap();
    assert!(!viewer.from_cache);
    assert_ne!(viewer.endpoints.wss, resolved.endpoints.wss);

    // After invalidation (a 404 on connect, GO_AWAY) the service is asked again.
    cache.invalidate("created-channel", Role::Master);
    let fresh = control_plane.resolve_channel(&channel, Role::Master, None, Some(&cache)).await.unwrap();
    assert!(!fresh.from_cache);

    // Creating a name that exists is ResourceInUse; an ARN skips DescribeSignalingChannel.
    let error = control_plane.create_channel(CHANNEL, None, &[]).await.unwrap_err();
    assert!(matches!(error, AwsError::ResourceInUse(_)), "{error:?}");
    let describes = emulator.stats().control_plane.describe_signaling_channel;
    let by_arn = ChannelRef::parse(&resolved.arn);
    control_plane.resolve_channel(&by_arn, Role::Master, None, None).await.unwrap();
    assert_eq!(emulator.stats().control_plane.describe_signaling_channel, describes);
    let _ = std::fs::remove_file(&cache_path);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_map_to_error_kinds() {
    let emulator = Emulator::start(emulator_config(false)).await.unwrap();
    let control_plane = control_plane(&emulator);
    type Check = fn(&AwsError) -> bool;
    let cases: [(u16, Option<&str>, Check); 4] = [
        (400, Some("ClientLimitExceededException"), |e| matches!(e, AwsError::Throttled(_))),
        (400, Some("InvalidArgumentException"), |e| matches!(e, AwsError::InvalidArgument(_))),
        (500, None, |e| matches!(e, AwsError::Service(s) if s.status == 500) && e.is_transient()),
        (403, Some("AccessDeniedException"), |e| matches!(e, AwsError::AccessDenied(_))),
    ];
    for (status, error_type, expected) in cases {
        emulator.fail_control_plane(ControlPlaneFault {
            status,
            error_type: error_type.map(str::to_owned),
            count: Some(1),
            operations: vec![Operation::DescribeSignalingChannel],
            ..ControlPlaneFault::default()
        });
        let error = control_plane.describe_channel(Some(CHANNEL), None).await.unwrap_err();
        assert!(expected(&error), "{status} {error_type:?}: {error:?}");
        assert!(!error.message().is_empty(), "{error:?}");
    }
    // The fault was one call long.
    control_plane.describe_channel(Some(CHANNEL), None).await.unwrap();

    // Nothing listening: a network error; a server that never answers: a timeout.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut config = control_plane_config(&emulator, SECRET);
    config.endpoint_override = Some(format!("http://127.0.0.1:{port}"));
    let error = ControlPlane::new(&config).unwrap().describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(error, AwsError::Network(_)), "{error:?}");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.endpoint_override = Some(format!("http://{}", silent.local_addr().unwrap()));
    config.request_timeout = Duration::from_millis(300);
    let error = ControlPlane::new(&config).unwrap().describe_channel(Some(CHANNEL), None).await.unwrap_err();
    assert!(matches!(error, AwsError::Timeout(_)), "{error:?}");
    emulator.shutdown().await;
}
