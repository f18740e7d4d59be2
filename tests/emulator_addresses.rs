//! The emulator on addresses of its own, in a private network namespace (see
//! tests/blackhole_support) so that nothing is exposed or taken on the host:
//! * the admin endpoint is not for the network: it answers loopback peers,
//!   and peers off loopback only with the `--admin-token`. There `lo` gets an
//!   address outside 127/8, the emulator listens on it and the test connects
//!   from it, so the emulator sees a real non-loopback peer;
//! * on port 443 (where the official C SDK expects the service) the URLs it
//!   prints name no port.

mod blackhole_support;
mod emulator_support;

use blackhole_support::private_netns;
use emulator_support::{assert_aws_error, post};
use kvs_signaling::emulator::{AdminAccess, Emulator, EmulatorConfig, TlsSetting};
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;

/// A documentation address (RFC 5737), private to the test's namespace.
const OFF_LOOPBACK: &str = "192.0.2.7";

fn block_on(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(test);
}

async fn start(listen: SocketAddr, admin_token: Option<&str>) -> Emulator {
    let config = EmulatorConfig {
        listen,
        channels: vec!["c".into()],
        admin_token: admin_token.map(str::to_owned),
        ..EmulatorConfig::default()
    };
    Emulator::start(config).await.expect("emulator starts")
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".to_owned(), format!("Bearer {token}"))]
}

fn add_off_loopback_address() {
    let status = Command::new("ip").args(["addr", "add", &format!("{OFF_LOOPBACK}/32"), "dev", "lo"]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip addr add {OFF_LOOPBACK} dev lo");
}

#[test]
fn loopback_peers_use_the_admin_endpoint_without_a_token() {
    block_on(async {
        for token in [None, Some("s3cret-admin")] {
            let emulator = start("127.0.0.1:0".parse().unwrap(), token).await;
            let expected = if token.is_some() { AdminAccess::LoopbackOrToken } else { AdminAccess::LoopbackOnly };
            assert_eq!(emulator.admin_access(), expected);
            let answer = post(emulator.local_addr(), "/admin/limits", &json!({"quotas": true}), &[]).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.json()["quotas"], json!(true), "{}", answer.body);
            emulator.shutdown().await;
        }
    });
}

#[test]
fn peers_off_loopback_need_the_admin_token() {
    let Some(_netns) = private_netns("peers_off_loopback_need_the_admin_token") else {
        return;
    };
    add_off_loopback_address();
    block_on(async {
        let listen: SocketAddr = format!("{OFF_LOOPBACK}:0").parse().unwrap();
        // No token: refused, whatever the peer sends.
        let emulator = start(listen, None).await;
        for headers in [vec![], bearer("guess")] {
            let refused = post(emulator.local_addr(), "/admin/limits", &json!({"quotas": true}), &headers).await;
            assert_aws_error(&refused, 403, "AccessDeniedException");
            assert!(refused.message().contains("loopback"), "{}", refused.message());
        }
        // The control plane and the data plane are not affected.
        let described =
            post(emulator.local_addr(), "/describeSignalingChannel", &json!({"ChannelName": "c"}), &[]).await;
        assert_eq!(described.status, 200, "{}", described.body);
        emulator.shutdown().await;

        // With a token: a wrong or missing one is refused, the right one works,
        // and a refused request changed nothing.
        let emulator = start(listen, Some("s3cret-admin")).await;
        for headers in [vec![], bearer("s3cret-admiN"), bearer("s3cret-admin-longer")] {
            let refused = post(emulator.local_addr(), "/admin/limits", &json!({"quotas": true}), &headers).await;
            assert_aws_error(&refused, 403, "AccessDeniedException");
            assert!(refused.message().contains("--admin-token"), "{}", refused.message());
        }
        let limits = post(emulator.local_addr(), "/admin/limits", &json!({}), &bearer("s3cret-admin")).await;
        assert_eq!(limits.status, 200, "{}", limits.body);
        assert_eq!(limits.json()["quotas"], json!(false), "a refused request changed the limits");
        emulator.shutdown().await;
    });
}

#[test]
fn on_port_443_the_urls_name_no_port() {
    let Some(_netns) = private_netns("on_port_443_the_urls_name_no_port") else {
        return;
    };
    block_on(async {
        let config = EmulatorConfig {
            listen: "127.0.0.1:443".parse().unwrap(),
            tls: Some(TlsSetting::Generate { ca_out: None }),
            ..EmulatorConfig::default()
        };
        let emulator = Emulator::start(config).await.expect("emulator on 443");
        assert_eq!(emulator.control_plane_url(), "https://127.0.0.1");
        assert_eq!(emulator.ws_endpoint(), "wss://127.0.0.1");
        emulator.shutdown().await;
        // Without TLS port 443 is just a port.
        let plain = EmulatorConfig { listen: "127.0.0.1:443".parse().unwrap(), ..EmulatorConfig::default() };
        let emulator = Emulator::start(plain).await.expect("emulator on 443");
        assert_eq!(emulator.control_plane_url(), "http://127.0.0.1:443");
        emulator.shutdown().await;
    });
}
