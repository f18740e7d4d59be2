//! The emulator's browser viewer page (`GET /viewer`): the page and its script
//! are served, `/viewer/connect` hands out a WebSocket URL the emulator accepts
//! (presigned with its own key when SigV4 is on; a tampered one is refused), the
//! connection it opens is a viewer with the page's client id, and bad requests
//! get AWS-style errors; with SigV4 on, a peer off loopback gets no presigned
//! URL (checked in a private network namespace, see tests/blackhole_support),
//! nor does a loopback request naming another host (DNS rebinding) or sent
//! from a page of another site.
//! The page itself runs in Chromium in scripts/media-tests.sh.

mod blackhole_support;
mod emulator_support;

use blackhole_support::private_netns;
use emulator_support::*;
use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::process::Command;
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;

/// A documentation address (RFC 5737), private to the test's namespace.
const OFF_LOOPBACK: &str = "192.0.2.9";

async fn get(emulator: &Emulator, path_and_query: &str) -> RawResponse {
    let stream = TcpStream::connect(emulator.local_addr()).await.expect("TCP connect");
    let head = format!("GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", emulator.local_addr());
    exchange(stream, &head, b"").await
}

async fn page_url(emulator: &Emulator, client_id: &str) -> String {
    let response = get(emulator, &format!("/viewer/connect?channel=demo&clientId={client_id}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["url"].as_str().expect("a url").to_owned()
}

#[tokio::test]
async fn page_and_script_are_served() {
    let (emulator, _) = start_with(EmulatorConfig::default()).await;
    let page = get(&emulator, "/viewer?channel=demo").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("<script src=\"/viewer/viewer.js\">"), "{}", page.body);
    let script = get(&emulator, "/viewer/viewer.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    for needle in ["new RTCPeerConnection", "'/viewer/connect?'", "window.kvsTimings", "getVideoPlaybackQuality"] {
        assert!(script.body.contains(needle), "viewer.js lacks {needle}");
    }
}

#[tokio::test]
async fn presigned_url_is_accepted_and_a_tampered_one_refused() {
    let keys = vec![(ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())];
    let (emulator, arn) = start_with(EmulatorConfig { auth: Some(keys), ..EmulatorConfig::default() }).await;
    let url = page_url(&emulator, "page-1").await;
    let expected_prefix = format!("{}/v-", emulator.ws_endpoint());
    assert!(url.starts_with(&expected_prefix), "{url}");
    for part in [
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-ClientId=page-1",
        &format!("X-Amz-ChannelARN={}", encode(&arn)),
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    assert!(!url.contains(SECRET_KEY) && !url.contains(&encode(SECRET_KEY)), "the URL carries the secret");
    let (_ws, _) = connect_async(url.as_str()).await.expect("the emulator accepts its own presigned URL");
    assert_eq!(emulator.stats().auth_failures, 0);

    // The signature covers the client id.
    let tampered = url.replace("X-Amz-ClientId=page-1", "X-Amz-ClientId=page-2");
    let error = connect_async(tampered.as_str()).await.expect_err("a tampered URL is refused");
    assert!(error.to_string().contains("403"), "{error}");
    assert_eq!(emulator.stats().auth_failures, 1);
}

/// `GET /viewer/connect` as a page reached by DNS rebinding sends it: the
/// attacker's host name in `Host` (the URL would be built from it), or the
/// attacker's page as `Origin`.
async fn get_as(emulator: &Emulator, host: &str, extra: &str) -> RawResponse {
    let stream = TcpStream::connect(emulator.local_addr()).await.expect("TCP connect");
    let head = format!(
        "GET /viewer/connect?channel=demo&clientId=page-1 HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    );
    exchange(stream, &head, b"").await
}

#[tokio::test]
async fn no_presigned_url_for_a_rebinding_page() {
    let keys = vec![(ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())];
    let (emulator, _) = start_with(EmulatorConfig { auth: Some(keys), ..EmulatorConfig::default() }).await;
    let port = emulator.local_addr().port();
    let evil = format!("evil.example:{port}");
    for (host, extra) in [
        (evil.as_str(), ""),
        (evil.as_str(), "Origin: http://evil.example\r\n"),
        (&emulator.local_addr().to_string(), "Origin: http://evil.example\r\n"),
        (&emulator.local_addr().to_string(), "Sec-Fetch-Site: cross-site\r\n"),
    ] {
        let refused = get_as(&emulator, host, extra).await;
        assert_aws_error(&refused, 403, "AccessDeniedException");
        assert!(!refused.body.contains("X-Amz-Signature"), "{}", refused.body);
    }
    // A loopback name is fine, and the URL names it.
    let served = get_as(&emulator, &format!("localhost:{port}"), "Sec-Fetch-Site: same-origin\r\n").await;
    assert_eq!(served.status, 200, "{}", served.body);
    let url = served.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("ws://localhost:{port}/v-")) && url.contains("X-Amz-Signature="), "{url}");
}

#[tokio::test]
async fn without_auth_the_url_is_no_key_and_any_host_gets_it() {
    let (emulator, _) = start_with(EmulatorConfig::default()).await;
    let served = get_as(&emulator, "camera.lan:8080", "").await;
    assert_eq!(served.status, 200, "{}", served.body);
    let url = served.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("ws://camera.lan:8080/v-") && !url.contains("X-Amz-Signature"), "{url}");
}

#[tokio::test]
async fn page_connection_is_a_viewer_with_the_page_client_id() {
    let (emulator, arn) = start_with(EmulatorConfig::default()).await;
    let mut master = connect(&emulator, &arn, None).await;
    let url = page_url(&emulator, "page-7").await;
    assert!(!url.contains("X-Amz-Signature"), "no auth, no signature: {url}");
    let (mut page, _) = connect_async(url.as_str()).await.expect("upgrade accepted");
    send(&mut page, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    let received = recv_json(&mut master).await;
    assert_eq!(received["messageType"], "SDP_OFFER");
    assert_eq!(received["senderClientId"], "page-7");
    assert_eq!(received["messagePayload"], OFFER_PAYLOAD);
}

#[tokio::test]
async fn bad_requests_get_aws_errors() {
    let (emulator, _) = start_with(EmulatorConfig::default()).await;
    for (path, status, error_type) in [
        ("/viewer/connect?channel=nope&clientId=v1", 404, "ResourceNotFoundException"),
        ("/viewer/connect?clientId=v1", 400, "InvalidArgumentException"),
        ("/viewer/connect?channel=demo", 400, "InvalidArgumentException"),
        ("/viewer/connect?channel=demo&clientId=AWS_x", 400, "InvalidArgumentException"),
        ("/viewer/connect?channel=demo&clientId=%E9", 400, "InvalidArgumentException"),
        ("/viewer/connect?channel=demo&clientId=has%20space", 400, "InvalidArgumentException"),
        ("/viewer/elsewhere", 404, "UnknownOperationException"),
    ] {
        let response = get(&emulator, path).await;
        assert_aws_error(&response, status, error_type);
    }
    let long_id = "v".repeat(257);
    assert_aws_error(
        &get(&emulator, &format!("/viewer/connect?channel=demo&clientId={long_id}")).await,
        400,
        "InvalidArgumentException",
    );
    let posted = post(emulator.local_addr(), "/viewer", &serde_json::json!({}), &[]).await;
    assert_aws_error(&posted, 405, "UnknownOperationException");
}

#[test]
fn presigned_urls_only_for_loopback_peers() {
    let Some(_netns) = private_netns("presigned_urls_only_for_loopback_peers") else {
        return;
    };
    let status = Command::new("ip").args(["addr", "add", &format!("{OFF_LOOPBACK}/32"), "dev", "lo"]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip addr add {OFF_LOOPBACK} dev lo");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let listen: SocketAddr = format!("{OFF_LOOPBACK}:0").parse().unwrap();
        for auth in [true, false] {
            let keys = auth.then(|| vec![(ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())]);
            let emulator = Emulator::start(EmulatorConfig {
                listen,
                channels: vec!["demo".to_owned()],
                auth: keys,
                ..EmulatorConfig::default()
            })
            .await
            .expect("emulator starts");
            // The peer is OFF_LOOPBACK itself: not a loopback address.
            let connect = get(&emulator, "/viewer/connect?channel=demo&clientId=far-1").await;
            if auth {
                assert_aws_error(&connect, 403, "AccessDeniedException");
                assert!(connect.message().contains("loopback"), "{}", connect.message());
            } else {
                assert_eq!(connect.status, 200, "without auth the URL is not a key: {}", connect.body);
            }
            let page = get(&emulator, "/viewer?channel=demo").await;
            assert_eq!(page.status, 200, "the static page is served to anyone");
            emulator.shutdown().await;
        }
    });
}
