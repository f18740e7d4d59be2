//! The admin endpoint against web pages in a browser on the developer's
//! machine: such a page is a loopback peer, so trusting loopback alone would
//! let it send a cross-origin "simple" POST (text/plain, no preflight), or,
//! with DNS rebinding (`Host: attacker.example` resolving to 127.0.0.1), read
//! the answers. Requests trusted for coming from loopback must name a
//! loopback host and carry no Origin of another site nor
//! `Sec-Fetch-Site: cross-site`; requests with the admin token must carry no
//! Origin of another site. Every request here is a raw HTTP/1.1 request over
//! a real loopback socket, with the headers a browser would send.

mod emulator_support;

use emulator_support::*;
use kvs_signaling::emulator::{Emulator, EmulatorConfig, IotConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// `METHOD path` with `Host: host`, a text/plain body (what a page may send
/// cross-origin without a preflight) and `extra` header lines.
async fn request(
    emulator: &Emulator,
    method: &str,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> RawResponse {
    let body = if method == "GET" { String::new() } else { body.to_string() };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = TcpStream::connect(emulator.local_addr()).await.expect("TCP connect");
    exchange(stream, &head, body.as_bytes()).await
}

async fn post_as(emulator: &Emulator, path: &str, host: &str, extra: &[(&str, &str)]) -> RawResponse {
    request(emulator, "POST", path, host, extra, &json!({})).await
}

fn port(emulator: &Emulator) -> u16 {
    emulator.local_addr().port()
}

fn refused(response: &RawResponse, reason: &str) {
    assert_aws_error(response, 403, "AccessDeniedException");
    assert!(response.message().contains(reason), "{reason} not in {:?}", response.message());
}

#[tokio::test]
async fn a_rebinding_host_is_refused_and_nothing_is_done() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let evil = format!("evil.example:{}", port(&emulator));
    for host in [evil.as_str(), "127.0.0.1.evil.example", "localhost.evil.example", "2130706433", "[::2]"] {
        refused(&post_as(&emulator, "/admin/drop", host, &[]).await, "Host");
    }
    refused(&request(&emulator, "GET", "/admin/stats", &evil, &[], &json!({})).await, "Host");
    refused(&post_as(&emulator, "/admin/clock", &evil, &[]).await, "Host");
    // A request without Host (what no browser sends) is not trusted either.
    let stream = TcpStream::connect(emulator.local_addr()).await.unwrap();
    let no_host =
        exchange(stream, "POST /admin/drop HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"").await;
    refused(&no_host, "Host");

    expect_quiet(&mut viewer).await;
    let stats = emulator.stats();
    assert_eq!((stats.connections_dropped, stats.open_connections), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn a_cross_site_origin_or_fetch_is_refused() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let host = emulator.local_addr().to_string();
    for origin in ["http://evil.example", "https://evil.example:8443", "null", "http://127.0.0.1.evil.example"] {
        refused(&post_as(&emulator, "/admin/drop", &host, &[("Origin", origin)]).await, "Origin");
    }
    refused(&post_as(&emulator, "/admin/drop", &host, &[("Sec-Fetch-Site", "cross-site")]).await, "Sec-Fetch-Site");
    expect_quiet(&mut viewer).await;
    assert_eq!(emulator.stats().connections_dropped, 0);
}

#[tokio::test]
async fn loopback_hosts_and_origins_are_served() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let port = port(&emulator);
    let same_origin = format!("http://127.0.0.1:{port}");
    // What the viewer page (served by the emulator) sends from Chromium.
    let page = [("Origin", same_origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let other_loopback_origin = format!("http://localhost:{}", port.wrapping_add(1));
    for (host, extra) in [
        (format!("localhost:{port}"), &[][..]),
        (format!("127.0.0.1:{port}"), &page[..]),
        (format!("[::1]:{port}"), &[("Origin", other_loopback_origin.as_str())][..]),
        ("127.0.0.1".to_owned(), &[("Sec-Fetch-Site", "same-site")][..]),
    ] {
        let mut viewer = connect(&emulator, &arn, Some("v1")).await;
        let answer = post_as(&emulator, "/admin/drop", &host, extra).await;
        assert_eq!((answer.status, answer.json()), (200, json!({"connections": 1})), "Host {host}: {}", answer.body);
        expect_dropped(&mut viewer).await;
        wait_until("the viewer unregistered", || emulator.stats().open_connections == 0).await;
    }
    let stats = request(&emulator, "GET", "/admin/stats", &format!("LOCALHOST:{port}"), &[], &json!({})).await;
    assert_eq!(stats.json()["connections_dropped"], json!(4), "{}", stats.body);
}

#[tokio::test]
async fn device_keys_are_not_handed_to_a_rebinding_page() {
    let config = EmulatorConfig { iot: Some(IotConfig::default()), ..EmulatorConfig::default() };
    let emulator = Emulator::start(config).await.expect("emulator starts");
    let body = json!({"thing_name": "cam-1"});
    let evil = format!("evil.example:{}", port(&emulator));
    let answer = request(&emulator, "POST", "/admin/iot/issue-device", &evil, &[], &body).await;
    refused(&answer, "Host");
    assert!(!answer.body.contains("PRIVATE KEY"), "{}", answer.body);
    let host = emulator.local_addr().to_string();
    let answer = request(&emulator, "POST", "/admin/iot/issue-device", &host, &[], &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json()["private_key_pem"].as_str().is_some_and(|key| key.contains("PRIVATE KEY")));
}

#[tokio::test]
async fn with_the_token_a_cross_site_origin_is_refused() {
    let config = EmulatorConfig { admin_token: Some("s3cret-admin".to_owned()), ..EmulatorConfig::default() };
    let (emulator, arn) = start_with(config).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let host = emulator.local_addr().to_string();
    let evil = format!("evil.example:{}", port(&emulator));
    let bearer = ("Authorization", "Bearer s3cret-admin");
    refused(&post_as(&emulator, "/admin/drop", &host, &[bearer, ("Origin", "http://evil.example")]).await, "Origin");
    refused(
        &post_as(&emulator, "/admin/drop", &host, &[bearer, ("Sec-Fetch-Site", "cross-site")]).await,
        "Sec-Fetch-Site",
    );
    // Without the right token, a loopback peer gets the loopback checks.
    refused(&post_as(&emulator, "/admin/drop", &evil, &[]).await, "Host");
    refused(&post_as(&emulator, "/admin/drop", &evil, &[("Authorization", "Bearer guess")]).await, "Host");
    expect_quiet(&mut viewer).await;
    assert_eq!(emulator.stats().connections_dropped, 0);

    // The token authorizes whatever host the peer reached the emulator by
    // (a tunnel, a name of the machine), from the page of that host too.
    let same_host = format!("http://{evil}");
    let answer = post_as(&emulator, "/admin/drop", &evil, &[bearer, ("Origin", same_host.as_str())]).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"connections": 1})), "{}", answer.body);
    expect_dropped(&mut viewer).await;
}
