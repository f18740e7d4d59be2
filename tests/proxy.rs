//! Every connection of the client through a real HTTPS proxy (tinyproxy,
//! started by the tests): the control-plane calls, GetIceServerConfig and the
//! WebSocket tunnel through CONNECT to the emulator with TLS and SigV4 on;
//! basic authentication right, wrong and missing (407); a proxy that refuses
//! (403); a proxy that is down (unreachable, retried until it comes up);
//! the no-proxy list and the environment opt-in; the password in no error
//! text and no log line.

mod common;
mod proxy_support;

use kvs_signaling::aws::{ControlPlaneConfig, Credentials, ProxyConfig, ProxyError, StaticCredentials};
use kvs_signaling::client::{
    AwsConfig, Backoff, Client, ClientConfig, ClientError, ClientEvent, ConnectionState, StateReason,
};
use kvs_signaling::emulator::{Emulator, EmulatorConfig, TlsSetting};
use kvs_signaling::log::{Level, set_sink};
use kvs_signaling::protocol::MessageType;
use proxy_support::{PROXY_PASSWORD, PROXY_USER, Tinyproxy, available, free_port};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const KEY: &str = "AKIDEXAMPLEPROXY0001";
const SECRET: &str = "proxy/test/secret/key/EXAMPLE";
const WAIT: Duration = Duration::from_secs(10);
/// Set in the child processes of the environment test.
const CHILD_ENV: &str = "KVS_PROXY_ENV_CHILD";

/// Every log line of the library in this process, from the first test on.
fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = lines.clone();
        set_sink(
            Level::Trace,
            Some(Arc::new(move |level, target, message| {
                sink_lines.lock().unwrap().push(format!("{} {target}: {message}", level.as_str()))
            })),
        );
        lines
    })
}

/// Asserts the proxy password in no log line so far, and in `texts`.
fn assert_password_hidden(texts: &[&str]) {
    for text in texts {
        assert!(!text.contains(PROXY_PASSWORD), "the password leaked: {text}");
    }
    let lines = log_lines().lock().unwrap();
    assert!(!lines.is_empty(), "the library logged something");
    for line in lines.iter() {
        assert!(!line.contains(PROXY_PASSWORD) && !line.contains("wrong-Pa55word"), "the password leaked: {line}");
    }
}

fn temp_path(name: &str) -> PathBuf {
    let unique = format!("kvs-proxy-{}-{name}-{:?}", std::process::id(), std::thread::current().id());
    std::env::temp_dir().join(unique.replace(['(', ')'], ""))
}

/// The emulator with TLS on; with `sigv4`, it checks the signature of every
/// call and upgrade (the direct path, unsigned, then gets 403).
async fn secure_emulator(sigv4: bool) -> Emulator {
    Emulator::start(EmulatorConfig {
        channels: vec!["cam-1".into()],
        auth: sigv4.then(|| vec![(KEY.into(), SECRET.into())]),
        tls: Some(TlsSetting::Generate { ca_out: Some(temp_path("ca.pem")) }),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// The real service path (control plane, presigned WSS, ICE servers) through `proxy`.
fn via_control_plane(emulator: &Emulator, client_id: Option<&str>, proxy: ProxyConfig) -> ClientConfig {
    let credentials = Arc::new(StaticCredentials::new(Credentials::new(KEY, SECRET, None)));
    let mut control_plane = ControlPlaneConfig::new("us-west-2", credentials);
    control_plane.endpoint_override = Some(emulator.control_plane_url());
    control_plane.ca_bundle = emulator.ca_path().map(PathBuf::from);
    control_plane.request_timeout = Duration::from_secs(5);
    let mut config = ClientConfig::via_control_plane("cam-1", client_id, AwsConfig::new(control_plane));
    config.connect_timeout = Duration::from_secs(8);
    config.proxy = proxy;
    config
}

/// The emulator's WSS endpoint used as it is (no control plane), through `proxy`.
fn direct(emulator: &Emulator, proxy: ProxyConfig) -> ClientConfig {
    let arn = emulator.channel_arn("cam-1").unwrap();
    let mut config = ClientConfig::master(&arn, &emulator.ws_endpoint());
    config.ca_bundle = emulator.ca_path().map(PathBuf::from);
    config.connect_timeout = Duration::from_secs(8);
    config.backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(400) };
    config.proxy = proxy;
    config
}

/// The error of one connect with `config`.
async fn connect_error(config: ClientConfig) -> ClientError {
    let (client, _events) = Client::new(config).unwrap();
    let error = client.connect().await.expect_err("the connect fails");
    client.disconnect(Duration::from_millis(100)).await;
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_tunnels_through_an_authenticating_proxy() {
    if !available("every_connection_tunnels_through_an_authenticating_proxy") {
        return;
    }
    log_lines();
    let proxy = Tinyproxy::start(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    let emulator = secure_emulator(true).await;
    let setting = ProxyConfig::with_url(&proxy.url_with(PROXY_USER, PROXY_PASSWORD));
    let (master, mut master_events) = Client::new(via_control_plane(&emulator, None, setting.clone())).unwrap();
    let (viewer, mut viewer_events) = Client::new(via_control_plane(&emulator, Some("phone"), setting)).unwrap();
    master.connect().await.unwrap();
    viewer.connect().await.unwrap();

    viewer.send_sdp_offer(None, "v=0 through the proxy", None).unwrap();
    let offer = common::next_matching(&mut master_events, WAIT, |e| match e {
        ClientEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(offer.sdp.unwrap().sdp, "v=0 through the proxy");
    master.send_sdp_answer(Some("phone"), "v=0 answer", None).unwrap();
    // GetIceServerConfig runs in the background, through the proxy as well;
    // its result may come before the answer.
    let mut ice_servers = false;
    let answer = common::next_matching(&mut viewer_events, WAIT, |e| match e {
        ClientEvent::Message(m) => Some(m),
        ClientEvent::IceServersChanged { .. } => {
            ice_servers = true;
            None
        }
        _ => None,
    })
    .await;
    assert_eq!(answer.message_type, MessageType::SdpAnswer);
    if !ice_servers {
        common::next_matching(&mut viewer_events, WAIT, |e| {
            matches!(e, ClientEvent::IceServersChanged { .. }).then_some(())
        })
        .await;
    }

    // Per client: DescribeSignalingChannel, GetSignalingChannelEndpoint, the
    // WebSocket and GetIceServerConfig, each its own CONNECT to the emulator.
    let port = emulator.local_addr().port();
    let connects = proxy.connects_to(port);
    assert!(connects >= 8, "{connects} CONNECTs to port {port} in the proxy log:\n{}", proxy.log());
    let calls = emulator.stats().control_plane;
    assert_eq!(calls.describe_signaling_channel, 2);
    master.disconnect(Duration::from_secs(1)).await;
    viewer.disconnect(Duration::from_secs(1)).await;
    assert_password_hidden(&[]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused() {
    if !available("wrong_or_missing_credentials_are_refused") {
        return;
    }
    log_lines();
    let proxy = Tinyproxy::start(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    let emulator = secure_emulator(false).await;
    let wrong = ProxyConfig::with_url(&proxy.url_with(PROXY_USER, "wrong-Pa55word"));
    for config in [direct(&emulator, wrong.clone()), via_control_plane(&emulator, None, wrong)] {
        let error = connect_error(config).await;
        let text = error.to_string();
        assert!(matches!(&error, ClientError::Proxy(ProxyError::AuthRequired(_))), "{error:?}");
        assert!(text.contains("refused the credentials of user \"camera\""), "{text}");
        assert!(!text.contains("wrong-Pa55word"), "{text}");
    }
    let error = connect_error(direct(&emulator, ProxyConfig::with_url(&proxy.url()))).await;
    assert!(matches!(&error, ClientError::Proxy(ProxyError::AuthRequired(m)) if m.contains("requires credentials")));
    assert_eq!(emulator.stats().control_plane.total(), 0, "nothing reached the service");
    assert_password_hidden(&[]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_port_is_a_403() {
    if !available("a_proxy_that_refuses_the_port_is_a_403") {
        return;
    }
    // CONNECT is allowed to port 9 only.
    let proxy = Tinyproxy::start("ConnectPort 9");
    let emulator = secure_emulator(false).await;
    for config in [
        direct(&emulator, ProxyConfig::with_url(&proxy.url())),
        via_control_plane(&emulator, None, ProxyConfig::with_url(&proxy.url())),
    ] {
        let error = connect_error(config).await;
        match &error {
            ClientError::Proxy(ProxyError::Refused { status: 403, text }) => {
                assert!(text.contains(&format!("CONNECT 127.0.0.1:{}", emulator.local_addr().port())), "{text}")
            }
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("refused the tunnel with HTTP 403"), "{error}");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_retried_until_it_comes_up() {
    if !available("a_proxy_that_is_down_is_retried_until_it_comes_up") {
        return;
    }
    log_lines();
    let emulator = secure_emulator(false).await;
    let port = free_port();
    let setting = ProxyConfig::with_url(&format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"));

    // A first connect that reports its failure names the proxy.
    let error = connect_error(direct(&emulator, setting.clone())).await;
    assert!(matches!(&error, ClientError::Proxy(ProxyError::Unreachable(m)) if m.contains("cannot connect")));
    assert_password_hidden(&[&error.to_string()]);

    // A background connect keeps retrying with backoff: the state change
    // and the log line of each failed attempt name the proxy.
    let (client, mut events) = Client::new(direct(&emulator, setting)).unwrap();
    client.start().unwrap();
    let reason = common::next_matching(&mut events, WAIT, |e| match e {
        ClientEvent::State(change) => match change.reason {
            StateReason::ConnectFailed(reason) => Some(reason),
            _ => None,
        },
        _ => None,
    })
    .await;
    assert!(reason.contains("proxy unreachable"), "{reason}");
    let endpoint = emulator.ws_endpoint();
    let retries = || {
        let lines = log_lines().lock().unwrap();
        let retry = |l: &&String| l.contains(&endpoint) && l.contains("proxy unreachable") && l.contains("retrying in");
        lines.iter().filter(retry).count()
    };
    tokio::time::timeout(WAIT, async {
        while retries() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("three failed attempts logged");
    let proxy = Tinyproxy::start_on(port, &format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    common::next_matching(&mut events, WAIT, |e| match e {
        ClientEvent::State(change) if change.state == ConnectionState::Connected => Some(()),
        _ => None,
    })
    .await;
    assert!(proxy.connects_to(emulator.local_addr().port()) >= 1, "{}", proxy.log());
    let metrics = client.metrics();
    assert!(metrics.connect_failures >= 3, "{metrics:?}");
    client.disconnect(Duration::from_secs(1)).await;
    assert_password_hidden(&[&reason]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_proxy_list_bypasses_the_proxy() {
    if !available("the_no_proxy_list_bypasses_the_proxy") {
        return;
    }
    let proxy = Tinyproxy::start("");
    let emulator = secure_emulator(false).await;
    // The emulator's host is listed: both paths connect directly, the proxy sees nothing.
    for list in ["127.0.0.1", "localhost, 127.0.0.0/8", "*"] {
        let setting = ProxyConfig { no_proxy: Some(list.into()), ..ProxyConfig::with_url(&proxy.url()) };
        for config in [direct(&emulator, setting.clone()), via_control_plane(&emulator, None, setting.clone())] {
            let (client, _events) = Client::new(config).unwrap();
            client.connect().await.unwrap_or_else(|e| panic!("{list}: {e}"));
            client.disconnect(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(proxy.connects_to(emulator.local_addr().port()), 0, "{}", proxy.log());
    // Listed as a name or another address, the host still goes through the proxy.
    let setting = ProxyConfig { no_proxy: Some("localhost,127.0.0.2".into()), ..ProxyConfig::with_url(&proxy.url()) };
    let (client, _events) = Client::new(direct(&emulator, setting)).unwrap();
    client.connect().await.unwrap();
    client.disconnect(Duration::from_millis(200)).await;
    assert_eq!(proxy.connects_to(emulator.local_addr().port()), 1, "{}", proxy.log());
    emulator.shutdown().await;
}

#[test]
fn bad_proxy_urls_are_refused_when_the_client_is_made() {
    log_lines();
    let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1";
    for (url, why) in [
        (format!("https://{PROXY_USER}:{PROXY_PASSWORD}@proxy:443"), "TLS to the proxy is not supported"),
        (format!("socks5://{PROXY_USER}:{PROXY_PASSWORD}@proxy:1080"), "must be http://"),
        (format!("http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:70000"), "invalid port"),
    ] {
        let config = ClientConfig { proxy: ProxyConfig::with_url(&url), ..ClientConfig::master(arn, "wss://h") };
        let error = config.validate().unwrap_err();
        assert!(matches!(&error, ClientError::InvalidConfig(m) if m.contains(why)), "{error:?}");
        let Err(error) = Client::new(config) else { panic!("{url} accepted") };
        assert_password_hidden(&[&error.to_string()]);
    }
}

/// The environment opt-in, in child processes (the environment is the
/// process's): `https_proxy`/`NO_PROXY` are read only with `from_env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_read_only_when_the_client_opts_in() {
    if !available("the_environment_is_read_only_when_the_client_opts_in") {
        return;
    }
    let proxy = Tinyproxy::start(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    let emulator = secure_emulator(false).await;
    let port = emulator.local_addr().port();
    let down = format!("http://127.0.0.1:{}", free_port());
    let child = |from_env: bool, vars: &[(&str, &str)]| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "environment_child", "--ignored", "--nocapture"])
            .env(CHILD_ENV, if from_env { "from_env" } else { "explicit_none" })
            .env("KVS_PROXY_CHILD_ARN", emulator.channel_arn("cam-1").unwrap())
            .env("KVS_PROXY_CHILD_ENDPOINT", emulator.ws_endpoint())
            .env("KVS_PROXY_CHILD_CA", emulator.ca_path().unwrap());
        for name in ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
            command.env_remove(name);
        }
        for (name, value) in vars {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr)
    };
    let with_credentials = proxy.url_with(PROXY_USER, PROXY_PASSWORD);
    // Opted in: through the proxy named by HTTPS_PROXY.
    let (ok, stderr) = tokio::task::block_in_place(|| child(true, &[("HTTPS_PROXY", &with_credentials)]));
    assert!(ok, "{stderr}");
    assert_eq!(proxy.connects_to(port), 1, "{}", proxy.log());
    // Lower case wins over upper case, as in curl: the proxy that is down.
    let (ok, stderr) =
        tokio::task::block_in_place(|| child(true, &[("https_proxy", &down), ("HTTPS_PROXY", &with_credentials)]));
    assert!(!ok && stderr.contains("proxy unreachable"), "{stderr}");
    // NO_PROXY names the emulator: directly, although the proxy is down.
    let (ok, stderr) =
        tokio::task::block_in_place(|| child(true, &[("https_proxy", &down), ("NO_PROXY", "127.0.0.1")]));
    assert!(ok, "{stderr}");
    // Without the opt-in the variables are ignored.
    let (ok, stderr) = tokio::task::block_in_place(|| child(false, &[("https_proxy", &down)]));
    assert!(ok, "{stderr}");
    assert_eq!(proxy.connects_to(port), 1, "{}", proxy.log());
    assert!(!stderr.contains(PROXY_PASSWORD));
    emulator.shutdown().await;
}

/// Runs in a child process of the test above: one connect of a master with
/// the environment it was given.
#[tokio::test]
#[ignore = "run by the_environment_is_read_only_when_the_client_opts_in"]
async fn environment_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let var = |name: &str| std::env::var(name).unwrap();
    let mut config = ClientConfig::master(&var("KVS_PROXY_CHILD_ARN"), &var("KVS_PROXY_CHILD_ENDPOINT"));
    config.ca_bundle = Some(PathBuf::from(var("KVS_PROXY_CHILD_CA")));
    config.proxy = ProxyConfig { from_env: mode == "from_env", ..ProxyConfig::default() };
    let (client, _events) = Client::new(config).unwrap();
    if let Err(e) = client.connect().await {
        panic!("connect failed: {e}");
    }
    client.disconnect(Duration::from_millis(200)).await;
}
