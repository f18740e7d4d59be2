//! The emulator's fault injection, connection limits and quotas (spec §7.1,
//! §9.2–§9.5), through [`Emulator`] methods and the admin endpoint, over real
//! loopback sockets.

#![cfg(feature = "emulator")]

mod emulator_support;

use emulator_support::*;
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::emulator::{ConnectRefusal, ControlPlaneFault, Emulator, EmulatorConfig, Limits, Operation, Target};
use kvs_signaling::protocol::encode_payload;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

async fn start() -> (Emulator, String) {
    start_with(EmulatorConfig::default()).await
}

fn ws_url(emulator: &Emulator, arn: &str, client_id: Option<&str>) -> String {
    format!("{}/{}", emulator.ws_endpoint(), connect_query(arn, client_id))
}

async fn admin(emulator: &Emulator, path: &str, body: serde_json::Value) -> RawResponse {
    post(emulator.local_addr(), path, &body, &[]).await
}

#[tokio::test]
async fn drop_ends_targeted_connections_without_a_close_frame() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut v1 = connect(&emulator, &arn, Some("v1")).await;
    let mut v2 = connect(&emulator, &arn, Some("v2")).await;

    assert_eq!(emulator.drop_connections(&Target::viewer("demo", "v1")), 1);
    expect_dropped(&mut v1).await;
    // The others are untouched.
    send(&mut v2, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "v2");
    wait_until("v1 unregistered", || emulator.stats().open_connections == 2).await;

    // By ARN and role, through the admin endpoint.
    let answer = admin(&emulator, "/admin/drop", json!({"channel": arn, "role": "MASTER"})).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"connections": 1})));
    expect_dropped(&mut master).await;
    assert_eq!(emulator.drop_connections(&Target::all()), 1);
    expect_dropped(&mut v2).await;
    assert_eq!(emulator.drop_connections(&Target::channel("other")), 0);
    wait_until("all gone", || emulator.stats().open_connections == 0).await;
    assert_eq!(emulator.stats().connections_dropped, 3);
    // The channel still works.
    let _again = connect(&emulator, &arn, Some("v1")).await;
}

#[tokio::test]
async fn close_sends_the_given_code() {
    let (emulator, arn) = start().await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    assert_eq!(emulator.close_connections(&Target::channel(&arn), 4000, "test close"), 1);
    let close = expect_close(&mut viewer).await;
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4000, "test close"));

    let mut viewer = connect(&emulator, &arn, Some("v2")).await;
    let answer = admin(&emulator, "/admin/close", json!({"client_id": "v2"})).await;
    assert_eq!(answer.json(), json!({"connections": 1}));
    assert_eq!(expect_close(&mut viewer).await.code, CloseCode::Away);
}

#[tokio::test]
async fn go_away_is_followed_by_a_close_after_the_grace() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let sent = Instant::now();
    assert_eq!(emulator.send_go_away(&Target::master("demo"), Some(Duration::from_millis(400))), 1);
    assert_eq!(recv_json(&mut master).await, json!({"messageType": "GO_AWAY"}));
    // During the grace the connection still works both ways.
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    send(&mut master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut viewer).await["messageType"], "SDP_ANSWER");
    let close = expect_close(&mut master).await;
    assert_eq!(close.code, CloseCode::Away);
    let elapsed = sent.elapsed();
    assert!(elapsed >= Duration::from_millis(390) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    expect_quiet(&mut viewer).await;
    assert_eq!(emulator.stats().go_aways_sent, 1);

    // The admin endpoint; the default grace comes from the limits.
    emulator.set_limits(Limits { go_away_grace: Duration::from_millis(100), ..emulator.limits() });
    let answer = admin(&emulator, "/admin/go-away", json!({"role": "viewer"})).await;
    assert_eq!(answer.json(), json!({"connections": 1}));
    assert_eq!(recv_json(&mut viewer).await["messageType"], "GO_AWAY");
    assert_eq!(expect_close(&mut viewer).await.code, CloseCode::Away);
}

#[tokio::test]
async fn reconnect_ice_server_leaves_the_socket_open() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    assert_eq!(emulator.send_reconnect_ice_server(&Target::all()), 2);
    for ws in [&mut master, &mut viewer] {
        assert_eq!(recv_json(ws).await, json!({"messageType": "RECONNECT_ICE_SERVER"}));
    }
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    let answer = admin(&emulator, "/admin/reconnect-ice-server", json!({"channel": "demo", "client_id": "v1"})).await;
    assert_eq!(answer.json(), json!({"connections": 1}));
    assert_eq!(recv_json(&mut viewer).await["messageType"], "RECONNECT_ICE_SERVER");
    expect_quiet(&mut master).await;
    assert_eq!(emulator.stats().reconnect_ice_servers_sent, 3);
}

#[tokio::test]
async fn refused_connections_get_the_status_or_a_reset_for_a_while() {
    let (emulator, arn) = start().await;
    emulator.refuse_connections(Duration::from_millis(400), ConnectRefusal::Status(503));
    let refused = raw_upgrade(emulator.local_addr(), &format!("/{}", connect_query(&arn, None)), "").await;
    assert_aws_error(&refused, 503, "ServiceUnavailable");
    match connect_async(ws_url(&emulator, &arn, None)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    // The control plane is not affected.
    assert_eq!(call(&emulator, "/listSignalingChannels", json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let _master = connect(&emulator, &arn, None).await;

    let answer = admin(&emulator, "/admin/refuse-connections", json!({"duration_ms": 400, "reset": true})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    match connect_async(ws_url(&emulator, &arn, Some("v1"))).await {
        Err(tungstenite::Error::Http(response)) => panic!("expected no HTTP answer, got {}", response.status()),
        Err(_) => {}
        Ok(_) => panic!("expected the upgrade to fail"),
    }
    let answer = admin(&emulator, "/admin/refuse-connections", json!({"duration_ms": 400, "status": 500})).await;
    assert_eq!(answer.status, 200);
    let refused = raw_upgrade(emulator.local_addr(), &format!("/{}", connect_query(&arn, None)), "").await;
    assert_aws_error(&refused, 500, "InternalFailure");
    emulator.clear_faults();
    let _viewer = connect(&emulator, &arn, Some("v1")).await;
    assert_eq!(emulator.stats().upgrades_refused, 4);
}

#[tokio::test]
async fn control_plane_answers_5xx_while_told_to() {
    let (emulator, arn) = start().await;
    let describe = || call(&emulator, "/describeSignalingChannel", json!({"ChannelName": "demo"}));
    emulator.fail_control_plane(ControlPlaneFault { count: Some(2), ..ControlPlaneFault::default() });
    for _ in 0..2 {
        assert_aws_error(&describe().await, 500, "InternalFailure");
    }
    assert_eq!(describe().await.status, 200);

    // Only the listed operations, for a while, with another status.
    emulator.fail_control_plane(ControlPlaneFault {
        status: 503,
        duration: Some(Duration::from_millis(300)),
        operations: vec![Operation::GetSignalingChannelEndpoint],
        ..ControlPlaneFault::default()
    });
    let endpoint = || call(&emulator, "/getSignalingChannelEndpoint", json!({"ChannelARN": arn}));
    assert_aws_error(&endpoint().await, 503, "ServiceUnavailable");
    assert_eq!(describe().await.status, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(endpoint().await.status, 200);

    // Through the admin endpoint, GetIceServerConfig included, until cleared.
    let answer = admin(
        &emulator,
        "/admin/control-plane-errors",
        json!({"status": 502, "error_type": "BadGateway", "operations": ["GetIceServerConfig"]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ice = || call(&emulator, "/r-0000/v1/get-ice-server-config", json!({"ChannelARN": arn}));
    assert_aws_error(&ice().await, 502, "BadGateway");
    assert_aws_error(&ice().await, 502, "BadGateway");
    assert_eq!(admin(&emulator, "/admin/clear", json!({})).await.status, 200);
    assert_eq!(ice().await.status, 200);
    let bad = admin(&emulator, "/admin/control-plane-errors", json!({"operations": ["Nope"]})).await;
    assert_aws_error(&bad, 400, "InvalidArgumentException");
    let bad = admin(&emulator, "/admin/control-plane-errors", json!({"status": 200})).await;
    assert_aws_error(&bad, 400, "InvalidArgumentException");

    let stats = emulator.stats();
    assert_eq!(stats.control_plane_faults, 5);
    assert_eq!(stats.control_plane.describe_signaling_channel, 4);
    assert_eq!(stats.control_plane.total(), 9);
}

#[tokio::test]
async fn delayed_frames_arrive_late_and_in_order() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    emulator.delay_frames(Duration::from_millis(300), None);
    let sent = Instant::now();
    for n in 0..5 {
        send(&mut viewer, request("ICE_CANDIDATE", None, &encode_payload(format!("candidate {n}").as_bytes()), None))
            .await;
    }
    let mut payloads = Vec::new();
    for _ in 0..5 {
        payloads.push(recv_json(&mut master).await["messagePayload"].as_str().unwrap().to_owned());
    }
    let elapsed = sent.elapsed();
    // Held 300 ms each, not 300 ms one after the other.
    assert!(elapsed >= Duration::from_millis(290) && elapsed < Duration::from_millis(1200), "{elapsed:?}");
    let expected: Vec<String> = (0..5).map(|n| encode_payload(format!("candidate {n}").as_bytes())).collect();
    assert_eq!(payloads, expected);

    let answer = admin(&emulator, "/admin/delay-frames", json!({"delay_ms": 0})).await;
    assert_eq!(answer.status, 200);
    let sent = Instant::now();
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    recv_json(&mut master).await;
    assert!(sent.elapsed() < Duration::from_millis(200), "{:?}", sent.elapsed());

    // A delay that ends by itself.
    let answer = admin(&emulator, "/admin/delay-frames", json!({"delay_ms": 200, "duration_ms": 300})).await;
    assert_eq!(answer.status, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let sent = Instant::now();
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    recv_json(&mut master).await;
    assert!(sent.elapsed() < Duration::from_millis(150), "{:?}", sent.elapsed());
}

#[tokio::test]
async fn restart_drops_everything_refuses_then_serves_the_same_channels() {
    let (emulator, arn) = start().await;
    let addr = emulator.local_addr();
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    send(&mut master, request("SDP_OFFER", Some("absent"), OFFER_PAYLOAD, None)).await;
    wait_until("the offer is stored", || emulator.stats().messages_stored == 1).await;
    // An idle keep-alive HTTP connection is cut too.
    let mut idle_http = TcpStream::connect(addr).await.unwrap();

    let restart = emulator.restart(Duration::from_millis(400));
    let checks = async {
        expect_dropped(&mut master).await;
        expect_dropped(&mut viewer).await;
        let mut buffer = [0u8; 1];
        let read = timeout(WAIT, tokio::io::AsyncReadExt::read(&mut idle_http, &mut buffer)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening while down");
    };
    let (restarted, ()) = tokio::join!(restart, checks);
    restarted.expect("restarted");

    assert_eq!(emulator.local_addr(), addr);
    assert_eq!(emulator.channel_arn("demo"), Some(arn.clone()));
    let mut absent = connect(&emulator, &arn, Some("absent")).await;
    expect_quiet(&mut absent).await;
    let stats = emulator.stats();
    assert_eq!((stats.restarts, stats.connections_dropped, stats.open_connections), (1, 2, 1));

    // Through the admin endpoint: answered first, then restarted.
    let answer = admin(&emulator, "/admin/restart", json!({"down_ms": 200})).await;
    assert_eq!(answer.status, 202);
    expect_dropped(&mut absent).await;
    wait_until("the second restart", || emulator.stats().restarts == 2).await;
    let _master = connect(&emulator, &arn, None).await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_pings_keep_them_open() {
    let config = EmulatorConfig { idle_timeout: Duration::from_millis(400), ..EmulatorConfig::default() };
    let (emulator, arn) = start_with(config).await;
    let mut silent = connect(&emulator, &arn, Some("silent")).await;
    let mut pinging = connect(&emulator, &arn, Some("pinging")).await;
    let started = Instant::now();
    let ping_loop = async {
        while started.elapsed() < Duration::from_millis(1000) {
            pinging.send(Message::Ping(b"k".to_vec().into())).await.unwrap();
            match timeout(WAIT, pinging.next()).await.unwrap() {
                Some(Ok(Message::Pong(_))) => {}
                other => panic!("expected a pong, got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let silent_close = async {
        let close = expect_close(&mut silent).await;
        (close, started.elapsed())
    };
    let ((close, closed_after), ()) = tokio::join!(silent_close, ping_loop);
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "idle timeout"));
    assert!(closed_after >= Duration::from_millis(390) && closed_after < Duration::from_secs(2), "{closed_after:?}");
    // The pinging one outlived the timeout twice over.
    send(&mut pinging, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(emulator.stats().idle_timeouts, 1);
}

#[tokio::test]
async fn connections_are_closed_at_the_maximum_age_even_when_busy() {
    let (emulator, arn) = start().await;
    let answer = admin(&emulator, "/admin/limits", json!({"max_connection_age_ms": 500})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["max_connection_age_ms"], 500);
    assert_eq!(answer.json()["idle_timeout_ms"], 600_000);
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let started = Instant::now();
    let busy = async {
        loop {
            send(&mut viewer, request("ICE_CANDIDATE", None, OFFER_PAYLOAD, None)).await;
            match timeout(Duration::from_millis(100), viewer.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => return frame,
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    };
    let close = busy.await;
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "maximum connection duration"));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(expect_close(&mut master).await.code, CloseCode::Away);
    assert_eq!(emulator.stats().max_age_closes, 2);
    // Limits set at run time apply to open connections; restore and reconnect.
    emulator.set_limits(Limits { max_connection_age: Duration::from_secs(3600), ..emulator.limits() });
    let _master = connect(&emulator, &arn, None).await;
}

#[tokio::test]
async fn message_quotas_throttle_with_client_limit_exceeded() {
    let (emulator, arn) = start_with(EmulatorConfig { quotas: true, ..EmulatorConfig::default() }).await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    // 7 offers at once: 5 pass, 2 are refused (both with a correlation id).
    for n in 0..7 {
        send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, Some(&format!("offer-{n}")))).await;
    }
    for _ in 0..5 {
        assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    }
    expect_quiet(&mut master).await;
    for n in 5..7 {
        assert_eq!(
            recv_json(&mut viewer).await,
            json!({
                "messageType": "STATUS_RESPONSE",
                "statusResponse": {
                    "correlationId": format!("offer-{n}"),
                    "errorType": "ClientLimitExceededException",
                    "statusCode": "400",
                    "description": "SDP_OFFER rate exceeded: 5 per second per connection",
                }
            })
        );
    }
    // Answers have their own quota; without a correlation id an excess one is dropped silently.
    for _ in 0..6 {
        send(&mut master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    }
    for _ in 0..5 {
        assert_eq!(recv_json(&mut viewer).await["messageType"], "SDP_ANSWER");
    }
    expect_quiet(&mut viewer).await;
    expect_quiet(&mut master).await;
    // ICE candidates: 20 a second.
    for n in 0..22 {
        send(&mut viewer, request("ICE_CANDIDATE", None, OFFER_PAYLOAD, Some(&format!("ice-{n}")))).await;
    }
    for _ in 0..20 {
        assert_eq!(recv_json(&mut master).await["messageType"], "ICE_CANDIDATE");
    }
    for _ in 0..2 {
        assert_eq!(recv_json(&mut viewer).await["statusResponse"]["errorType"], "ClientLimitExceededException");
    }
    // A second later the quota is back.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, Some("later"))).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    let stats = emulator.stats();
    assert_eq!(stats.messages_throttled, 5);
    assert_eq!(stats.status_responses_sent, 4);

    // Turned off at run time: no throttling.
    let answer = admin(&emulator, "/admin/limits", json!({"quotas": false})).await;
    assert_eq!(answer.json()["quotas"], false);
    for _ in 0..10 {
        send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, Some("free"))).await;
    }
    for _ in 0..10 {
        assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    }
    expect_quiet(&mut viewer).await;
}

#[tokio::test]
async fn connect_rate_is_three_per_second_per_channel_and_role() {
    let (emulator, arn) = start_with(EmulatorConfig { quotas: true, ..EmulatorConfig::default() }).await;
    let addr = emulator.local_addr();
    let mut viewers = Vec::new();
    for n in 0..3 {
        viewers.push(connect(&emulator, &arn, Some(&format!("v{n}"))).await);
    }
    let refused = raw_upgrade(addr, &format!("/{}", connect_query(&arn, Some("v3"))), "").await;
    assert_aws_error(&refused, 400, "ClientLimitExceededException");
    // The master's quota is separate, and so is another channel's.
    let _master = connect(&emulator, &arn, None).await;
    let other = emulator.create_channel("other");
    let _other_viewer = connect(&emulator, &other, Some("v3")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _v3 = connect(&emulator, &arn, Some("v3")).await;
    assert_eq!(emulator.stats().upgrades_refused, 1);
}

#[tokio::test]
async fn admin_endpoint_reports_stats_and_rejects_bad_requests() {
    let (emulator, arn) = start().await;
    let _viewer = connect(&emulator, &arn, Some("v1")).await;
    call(&emulator, "/describeSignalingChannel", json!({"ChannelName": "demo"})).await;
    let stream = TcpStream::connect(emulator.local_addr()).await.unwrap();
    let head = format!("GET /admin/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", emulator.local_addr());
    let stats = exchange(stream, &head, b"").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    let stats = stats.json();
    assert_eq!(stats["open_connections"], 1);
    assert_eq!(stats["control_plane"]["describe_signaling_channel"], 1);
    assert_eq!(stats["control_plane"]["total"], 1);
    assert_eq!(stats["restarts"], 0);

    for (path, body) in [
        ("/admin/drop", json!({"role": "OWNER"})),
        ("/admin/close", json!({"code": 999})),
        ("/admin/refuse-connections", json!({})),
        ("/admin/delay-frames", json!({"delay_ms": -1})),
        ("/admin/clock", json!({})),
        ("/admin/limits", json!({"quotas": "yes"})),
    ] {
        let response = admin(&emulator, path, body).await;
        assert_eq!(response.status, 400, "{path}: {}", response.body);
    }
    assert_aws_error(&admin(&emulator, "/admin/nothing", json!({})).await, 404, "UnknownOperationException");
    let answer = admin(&emulator, "/admin/clock", json!({"offset_ms": -3_600_000})).await;
    assert_eq!(answer.status, 200);
    let before = utc_hour();
    let shifted = call(&emulator, "/listSignalingChannels", json!({})).await;
    let after = utc_hour();
    let date = shifted.header("date").unwrap().to_owned();
    let hour: u64 = date.split(' ').nth(4).unwrap()[..2].parse().unwrap();
    assert!(hour == (before + 23) % 24 || hour == (after + 23) % 24, "{date}");
}

/// The current UTC hour.
fn utc_hour() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600 % 24
}
