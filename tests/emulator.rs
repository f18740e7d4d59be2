//! Integration tests of the signaling emulator over real loopback sockets, with
//! plain tokio-tungstenite clients (no client code of this crate).

#![cfg(feature = "emulator")]

mod emulator_support;

use emulator_support::{RawResponse, assert_aws_error, exchange};
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::emulator::{Emulator, EmulatorConfig, REPLACED_REASON};
use kvs_signaling::protocol::{
    Field, InboundMessage, MessageType, ValidationError, encode_payload, validate_channel_arn,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

/// The JS SDK's offer payload fixture (spec §3.4).
const OFFER_PAYLOAD: &str = "eyJzZHAiOiJvZmZlcj0gdHJ1ZVxudmlkZW89IHRydWUiLCJ0eXBlIjoib2ZmZXIifQ==";

async fn start_with(config: EmulatorConfig) -> (Emulator, String) {
    let emulator =
        Emulator::start(EmulatorConfig { channels: vec!["demo".to_owned()], ..config }).await.expect("emulator starts");
    let arn = emulator.channel_arn("demo").expect("demo channel exists");
    (emulator, arn)
}

async fn start() -> (Emulator, String) {
    start_with(EmulatorConfig::default()).await
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn connect_query(arn: &str, client_id: Option<&str>) -> String {
    let mut query = format!("/?X-Amz-ChannelARN={}", encode(arn));
    if let Some(id) = client_id {
        query.push_str(&format!("&X-Amz-ClientId={}", encode(id)));
    }
    query
}

async fn connect(emulator: &Emulator, arn: &str, client_id: Option<&str>) -> Ws {
    let url = format!("{}{}", emulator.ws_endpoint(), connect_query(arn, client_id));
    connect_async(url).await.expect("upgrade accepted").0
}

/// A request frame with the JS SDK's camelCase keys; `None` fields are omitted.
fn request(action: &str, recipient: Option<&str>, payload: &str, correlation_id: Option<&str>) -> String {
    let mut frame = json!({ "action": action, "messagePayload": payload });
    if let Some(recipient) = recipient {
        frame["recipientClientId"] = json!(recipient);
    }
    if let Some(id) = correlation_id {
        frame["correlationId"] = json!(id);
    }
    frame.to_string()
}

fn numbered_payload(n: usize) -> String {
    encode_payload(format!(r#"{{"candidate":"candidate {n}","sdpMid":"0"}}"#).as_bytes())
}

async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.expect("frame sent");
}

/// The next message; text frames are parsed as JSON.
async fn next_message(ws: &mut Ws) -> Message {
    match timeout(WAIT, ws.next()).await {
        Err(_) => panic!("nothing arrived within {WAIT:?}"),
        Ok(None) => panic!("the connection ended"),
        Ok(Some(Err(error))) => panic!("read failed: {error}"),
        Ok(Some(Ok(message))) => message,
    }
}

async fn recv_json(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Message::Text(text) => serde_json::from_str(&text).expect("text frames are JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn expect_quiet(ws: &mut Ws) {
    if let Ok(received) = timeout(QUIET, ws.next()).await {
        panic!("expected nothing, got {received:?}");
    }
}

async fn expect_close(ws: &mut Ws) -> CloseFrame {
    loop {
        match next_message(ws).await {
            Message::Close(Some(frame)) => return frame,
            Message::Close(None) => panic!("close frame without a code"),
            _ => continue,
        }
    }
}

/// Waits until the emulator counts `expected` open connections.
async fn wait_for_open_connections(emulator: &Emulator, expected: usize) {
    let waited = timeout(WAIT, async {
        while emulator.stats().open_connections != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "open connections stayed at {} instead of {expected}", emulator.stats().open_connections);
}

/// Sends `GET {path_and_query}` with WebSocket upgrade headers (plus `extra`
/// header lines) on a plain TCP socket and reads the response head and body.
async fn raw_upgrade(addr: SocketAddr, path_and_query: &str, extra: &str) -> RawResponse {
    let head = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    raw_request(addr, &head).await
}

async fn raw_request(addr: SocketAddr, head: &str) -> RawResponse {
    exchange(TcpStream::connect(addr).await.expect("TCP connect"), head, b"").await
}

#[tokio::test]
async fn viewer_message_reaches_master_with_sender_client_id() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("viewer-1")).await;

    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(
        recv_json(&mut master).await,
        json!({"messageType": "SDP_OFFER", "messagePayload": OFFER_PAYLOAD, "senderClientId": "viewer-1"})
    );
    // A viewer's recipientClientId is ignored: its messages always reach the master.
    let ice = numbered_payload(1);
    send(&mut viewer, request("ICE_CANDIDATE", Some("someone-else"), &ice, None)).await;
    assert_eq!(
        recv_json(&mut master).await,
        json!({"messageType": "ICE_CANDIDATE", "messagePayload": ice, "senderClientId": "viewer-1"})
    );
    expect_quiet(&mut viewer).await;
    assert_eq!(emulator.stats().messages_relayed, 2);
    assert_eq!(emulator.stats().open_connections, 2);
}

#[tokio::test]
async fn master_message_reaches_only_the_named_viewer_without_sender_client_id() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer_1 = connect(&emulator, &arn, Some("v1")).await;
    let mut viewer_2 = connect(&emulator, &arn, Some("v2")).await;

    send(&mut master, request("SDP_ANSWER", Some("v2"), OFFER_PAYLOAD, None)).await;
    let received = recv_json(&mut viewer_2).await;
    assert_eq!(received, json!({"messageType": "SDP_ANSWER", "messagePayload": OFFER_PAYLOAD}));
    assert!(received.get("senderClientId").is_none());
    expect_quiet(&mut viewer_1).await;
    expect_quiet(&mut master).await;
}

#[tokio::test]
async fn percent_encoded_client_id_is_decoded() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let url = format!(
        "{}/?X-Amz-ClientId=viewer%2D7&X-Amz-ChannelARN={}&X-Amz-Expires=299",
        emulator.ws_endpoint(),
        encode(&arn)
    );
    let (mut viewer, _) = connect_async(url).await.expect("upgrade accepted");
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "viewer-7");
}

#[tokio::test]
async fn c_sdk_pascal_case_pretty_printed_frames_are_routed() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("ConsumerViewer")).await;

    // The C SDK's viewer template: PascalCase keys, an empty RecipientClientId.
    let from_viewer = format!(
        "{{\n\t\"action\": \"SDP_OFFER\",\n\t\"RecipientClientId\": \"\",\n\t\"MessagePayload\": \"{OFFER_PAYLOAD}\"\n}}"
    );
    send(&mut viewer, from_viewer).await;
    assert_eq!(
        recv_json(&mut master).await,
        json!({"messageType": "SDP_OFFER", "messagePayload": OFFER_PAYLOAD, "senderClientId": "ConsumerViewer"})
    );

    // The C SDK's master template with a correlation id and the extra IceServerList.
    let from_master = format!(
        "{{\n\t\"action\": \"SDP_ANSWER\",\n\t\"RecipientClientId\": \"ConsumerViewer\",\n\t\"MessagePayload\": \"{OFFER_PAYLOAD}\",\n\t\"CorrelationId\": \"1697058567743\",\n\t\"IceServerList\": [{{\"Password\": \"p\", \"Ttl\": 298, \"Uris\": [\"turn:h:443\"], \"Username\": \"u\"}}]\n}}"
    );
    send(&mut master, from_master).await;
    assert_eq!(recv_json(&mut viewer).await, json!({"messageType": "SDP_ANSWER", "messagePayload": OFFER_PAYLOAD}));
    // A valid request gets no STATUS_RESPONSE.
    expect_quiet(&mut master).await;
}

#[tokio::test]
async fn offer_sent_before_the_master_connects_is_delivered_on_connect() {
    let (emulator, arn) = start().await;
    let mut viewer = connect(&emulator, &arn, Some("early")).await;
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    // The frame is read asynchronously; wait until it has been stored.
    timeout(WAIT, async {
        while emulator.stats().messages_stored == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the offer is stored");
    assert_eq!(emulator.stats().messages_relayed, 0);

    let mut master = connect(&emulator, &arn, None).await;
    assert_eq!(
        recv_json(&mut master).await,
        json!({"messageType": "SDP_OFFER", "messagePayload": OFFER_PAYLOAD, "senderClientId": "early"})
    );
    expect_quiet(&mut master).await;
    assert_eq!(emulator.stats().messages_relayed, 1);
}

#[tokio::test]
async fn newer_undelivered_offer_replaces_the_older_one_and_ice_candidates_accumulate() {
    let (emulator, arn) = start().await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let mut other_viewer = connect(&emulator, &arn, Some("v2")).await;
    let old_offer = encode_payload(br#"{"type":"offer","sdp":"old"}"#);
    let new_offer = encode_payload(br#"{"type":"offer","sdp":"new"}"#);
    let other_offer = encode_payload(br#"{"type":"offer","sdp":"other"}"#);

    send(&mut viewer, request("SDP_OFFER", None, &old_offer, None)).await;
    send(&mut viewer, request("ICE_CANDIDATE", None, &numbered_payload(1), None)).await;
    send(&mut viewer, request("ICE_CANDIDATE", None, &numbered_payload(2), None)).await;
    // Another viewer's offer is not "the same recipient's" pending offer from v1.
    send(&mut other_viewer, request("SDP_OFFER", None, &other_offer, None)).await;
    send(&mut viewer, request("SDP_OFFER", None, &new_offer, None)).await;
    send(&mut viewer, request("ICE_CANDIDATE", None, &numbered_payload(3), None)).await;
    timeout(WAIT, async {
        while emulator.stats().messages_stored < 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all six messages are stored");

    let mut master = connect(&emulator, &arn, None).await;
    let mut from_v1 = Vec::new();
    let mut from_v2 = Vec::new();
    for _ in 0..5 {
        let message = recv_json(&mut master).await;
        let list = match message["senderClientId"].as_str() {
            Some("v1") => &mut from_v1,
            Some("v2") => &mut from_v2,
            other => panic!("unexpected sender {other:?}"),
        };
        list.push((
            message["messageType"].as_str().unwrap().to_owned(),
            message["messagePayload"].as_str().unwrap().to_owned(),
        ));
    }
    expect_quiet(&mut master).await;
    let ice = |n| ("ICE_CANDIDATE".to_owned(), numbered_payload(n));
    assert_eq!(from_v1, vec![ice(1), ice(2), ("SDP_OFFER".to_owned(), new_offer), ice(3)]);
    assert_eq!(from_v2, vec![("SDP_OFFER".to_owned(), other_offer)]);
    assert_eq!(emulator.stats().messages_replaced, 1);
}

#[tokio::test]
async fn master_message_for_a_viewer_that_never_connected_waits_and_answers_overwrite() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let first = encode_payload(br#"{"type":"answer","sdp":"first"}"#);
    let second = encode_payload(br#"{"type":"answer","sdp":"second"}"#);
    send(&mut master, request("SDP_ANSWER", Some("later"), &first, Some("c1"))).await;
    send(&mut master, request("SDP_ANSWER", Some("later"), &second, Some("c2"))).await;
    // Storing is not an error: no STATUS_RESPONSE.
    expect_quiet(&mut master).await;

    let mut viewer = connect(&emulator, &arn, Some("later")).await;
    assert_eq!(recv_json(&mut viewer).await, json!({"messageType": "SDP_ANSWER", "messagePayload": second}));
    expect_quiet(&mut viewer).await;
    let stats = emulator.stats();
    assert_eq!((stats.messages_stored, stats.messages_replaced), (2, 1));
}

#[tokio::test]
async fn stored_messages_expire_after_the_ttl() {
    let (emulator, arn) =
        start_with(EmulatorConfig { message_ttl: Duration::from_millis(300), ..EmulatorConfig::default() }).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut master = connect(&emulator, &arn, None).await;
    expect_quiet(&mut master).await;
    assert_eq!(emulator.stats().messages_expired, 1);
    // The connection is up: a live message still arrives.
    let ice = numbered_payload(9);
    send(&mut viewer, request("ICE_CANDIDATE", None, &ice, None)).await;
    assert_eq!(recv_json(&mut master).await["messagePayload"], ice);
}

#[tokio::test]
async fn eleventh_viewer_is_refused_with_client_limit_exceeded() {
    let (emulator, arn) = start().await;
    let mut viewers = Vec::new();
    for n in 0..10 {
        viewers.push(connect(&emulator, &arn, Some(&format!("viewer-{n}"))).await);
    }
    let response = raw_upgrade(emulator.local_addr(), &connect_query(&arn, Some("viewer-10")), "").await;
    assert_aws_error(&response, 400, "ClientLimitExceededException");

    // The client library sees the HTTP status on the upgrade.
    let url = format!("{}{}", emulator.ws_endpoint(), connect_query(&arn, Some("viewer-11")));
    match connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    // A known viewer reconnecting replaces itself and is not refused; the master
    // is not a viewer and is not refused either.
    let _again = connect(&emulator, &arn, Some("viewer-3")).await;
    assert_eq!(expect_close(&mut viewers[3]).await.code, CloseCode::Normal);
    drop(viewers.remove(3));
    let _master = connect(&emulator, &arn, None).await;

    // Once a viewer leaves, a new one fits.
    viewers.remove(0).close(None).await.unwrap();
    // viewer-1..9 (viewer-3 reconnected) and the master.
    wait_for_open_connections(&emulator, 10).await;
    let _newcomer = connect(&emulator, &arn, Some("viewer-10")).await;
    assert_eq!(emulator.stats().upgrades_refused, 2);
}

#[tokio::test]
async fn connect_refusals_are_aws_errors() {
    let (emulator, arn) = start().await;
    let addr = emulator.local_addr();
    let missing_arn = arn.replace("/demo/", "/nope/");

    let unknown = raw_upgrade(addr, &connect_query(&missing_arn, None), "").await;
    assert_aws_error(&unknown, 404, "ResourceNotFoundException");
    assert!(unknown.json()["message"].as_str().unwrap().contains(&missing_arn));

    let malformed = raw_upgrade(addr, &connect_query("arn:aws:s3:::bucket", None), "").await;
    assert_aws_error(&malformed, 400, "InvalidArgumentException");
    assert_eq!(malformed.json()["message"], ValidationError::BadPattern(Field::ChannelArn).to_string());

    let no_arn = raw_upgrade(addr, "/?X-Amz-ClientId=v1", "").await;
    assert_aws_error(&no_arn, 400, "InvalidArgumentException");
    assert_eq!(no_arn.json()["message"], ValidationError::Missing(Field::ChannelArn).to_string());

    let reserved = raw_upgrade(addr, &connect_query(&arn, Some("AWS_viewer")), "").await;
    assert_aws_error(&reserved, 400, "InvalidArgumentException");
    assert_eq!(reserved.json()["message"], ValidationError::ReservedPrefix.to_string());

    let bad_id = raw_upgrade(addr, &connect_query(&arn, Some("a b")), "").await;
    assert_eq!(bad_id.json()["message"], ValidationError::BadPattern(Field::ClientId).to_string());

    let wrong_path = raw_upgrade(addr, &format!("/other{}", &connect_query(&arn, None)[1..]), "").await;
    assert_aws_error(&wrong_path, 404, "ResourceNotFoundException");

    // A control-plane path is POST only.
    let plain_get = raw_request(addr, &format!("GET /describeSignalingChannel HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert_aws_error(&plain_get, 404, "UnknownOperationException");

    // tungstenite clients see the status too.
    let url = format!("{}{}", emulator.ws_endpoint(), connect_query(&missing_arn, None));
    match connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    assert_eq!(emulator.stats().upgrades_refused, 7);
    assert_eq!(emulator.stats().open_connections, 0);
}

#[tokio::test]
async fn handshake_computes_the_accept_key_and_echoes_the_wss_subprotocol() {
    let (emulator, arn) = start().await;
    let query = connect_query(&arn, Some("c-viewer"));
    let with_protocol = raw_upgrade(emulator.local_addr(), &query, "Sec-WebSocket-Protocol: wss\r\n").await;
    assert_eq!(with_protocol.status, 101);
    // The RFC 6455 §1.3 example key and its accept value.
    assert_eq!(with_protocol.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(with_protocol.headers["sec-websocket-protocol"], "wss");

    let mut request = format!("{}{query}", emulator.ws_endpoint()).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wss"));
    let (_, response) = connect_async(request).await.expect("upgrade accepted");
    assert_eq!(response.headers()["sec-websocket-protocol"], "wss");

    let (_, response) = connect_async(format!("{}{query}", emulator.ws_endpoint())).await.expect("upgrade accepted");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn new_master_replaces_the_old_one() {
    let (emulator, arn) = start().await;
    let mut old_master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let mut new_master = connect(&emulator, &arn, None).await;

    // Sent before the old master has read its close frame: dropped.
    send(&mut old_master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    let close = expect_close(&mut old_master).await;
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), REPLACED_REASON);
    expect_quiet(&mut viewer).await;

    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut new_master).await["senderClientId"], "v1");
    send(&mut new_master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut viewer).await["messageType"], "SDP_ANSWER");
    wait_for_open_connections(&emulator, 2).await;
}

#[tokio::test]
async fn same_viewer_id_reconnecting_replaces_the_previous_connection() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut first = connect(&emulator, &arn, Some("v1")).await;
    let mut second = connect(&emulator, &arn, Some("v1")).await;

    let close = expect_close(&mut first).await;
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), REPLACED_REASON);
    // Reading on sends the close reply; the emulator then ends the connection.
    let end = timeout(WAIT, first.next()).await.expect("the connection ends");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(emulator.stats().open_connections, 2);

    send(&mut master, request("SDP_OFFER", Some("v1"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut second).await["messageType"], "SDP_OFFER");
    send(&mut second, request("SDP_ANSWER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "v1");
    wait_for_open_connections(&emulator, 2).await;
}

#[tokio::test]
async fn invalid_requests_with_a_correlation_id_get_a_status_response() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let too_long = "A".repeat(10_004);
    let long_action = "X".repeat(2_000);
    // (sent by the master?, frame, expected description)
    let cases = [
        (
            false,
            request("SDP_OFFER", None, &too_long, Some("c-too-long")),
            ValidationError::TooLong { field: Field::MessagePayload, max: 10_000, len: 10_004 }.to_string(),
        ),
        (
            true,
            request("SDP_OFFER", None, OFFER_PAYLOAD, Some("c-no-recipient")),
            ValidationError::MasterWithoutRecipient.to_string(),
        ),
        (
            false,
            request("SDP_PRANSWER", None, OFFER_PAYLOAD, Some("c-action")),
            ValidationError::UnknownAction("SDP_PRANSWER".into()).to_string(),
        ),
        (
            true,
            request("ICE_CANDIDATE", Some("bad id"), OFFER_PAYLOAD, Some("c-recipient")),
            ValidationError::BadPattern(Field::RecipientClientId).to_string(),
        ),
        (
            false,
            request("ICE_CANDIDATE", None, "not base64!", Some("c-base64")),
            ValidationError::PayloadNotBase64.to_string(),
        ),
        (
            true,
            json!({"recipientClientId": "v1", "messagePayload": OFFER_PAYLOAD, "correlationId": "c-missing"})
                .to_string(),
            ValidationError::Missing(Field::Action).to_string(),
        ),
    ];
    for (from_master, frame, description) in cases {
        let ws = if from_master { &mut master } else { &mut viewer };
        let correlation_id = serde_json::from_str::<Value>(&frame).unwrap()["correlationId"].clone();
        send(ws, frame).await;
        let status = recv_json(ws).await;
        assert_eq!(
            status,
            json!({
                "messageType": "STATUS_RESPONSE",
                "statusResponse": {
                    "correlationId": correlation_id,
                    "errorType": "InvalidArgumentException",
                    "statusCode": "400",
                    "description": description,
                }
            })
        );
    }

    // A description is cut to the spec's 1,024 characters; the frame still parses.
    send(&mut viewer, request(&long_action, None, OFFER_PAYLOAD, Some("c-long"))).await;
    let Message::Text(text) = next_message(&mut viewer).await else {
        panic!("expected a STATUS_RESPONSE text frame");
    };
    let parsed = InboundMessage::parse(&text).expect("clients can parse it");
    assert_eq!(parsed.message_type, MessageType::StatusResponse);
    let status = parsed.status_response.unwrap();
    assert_eq!(status.correlation_id, "c-long");
    assert_eq!(status.status_code_number(), Some(400));
    assert_eq!(status.description.unwrap().len(), 1024);

    // Nothing invalid was routed.
    expect_quiet(&mut master).await;
    expect_quiet(&mut viewer).await;
    let stats = emulator.stats();
    assert_eq!(stats.status_responses_sent, 7);
    assert_eq!(stats.frames_rejected, 7);
    assert_eq!(stats.messages_relayed + stats.messages_stored, 0);
}

#[tokio::test]
async fn invalid_requests_without_a_usable_correlation_id_are_dropped_silently() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;

    send(&mut viewer, request("SDP_OFFER", None, "not base64!", None)).await;
    send(&mut master, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    // A correlation id outside its pattern cannot be echoed either.
    send(&mut viewer, request("HELLO", None, OFFER_PAYLOAD, Some("bad id"))).await;
    expect_quiet(&mut viewer).await;
    expect_quiet(&mut master).await;

    // Both connections are still up.
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    send(&mut master, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut viewer).await["messageType"], "SDP_ANSWER");
    let stats = emulator.stats();
    assert_eq!(stats.frames_rejected, 3);
    assert_eq!(stats.status_responses_sent, 0);
}

#[tokio::test]
async fn non_json_and_binary_frames_are_skipped_and_the_connection_stays_up() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;

    for text in ["hello", "", "[1,2]", "{\"action\":"] {
        send(&mut viewer, text.to_owned()).await;
    }
    viewer.send(Message::binary(b"\x00\x01binary".to_vec())).await.unwrap();
    expect_quiet(&mut viewer).await;
    expect_quiet(&mut master).await;

    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "v1");
    assert_eq!(emulator.stats().frames_rejected, 5);
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let (emulator, arn) = start().await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    viewer.send(Message::Ping(b"keep-alive".to_vec().into())).await.unwrap();
    match next_message(&mut viewer).await {
        Message::Pong(data) => assert_eq!(&data[..], b"keep-alive"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn two_hundred_messages_arrive_in_order_both_ways() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    const COUNT: usize = 200;

    for n in 0..COUNT {
        send(&mut viewer, request("ICE_CANDIDATE", None, &numbered_payload(n), None)).await;
    }
    for n in 0..COUNT {
        assert_eq!(
            recv_json(&mut master).await["messagePayload"],
            numbered_payload(n),
            "message {n} toward the master"
        );
    }
    for n in 0..COUNT {
        send(&mut master, request("ICE_CANDIDATE", Some("v1"), &numbered_payload(n), None)).await;
    }
    for n in 0..COUNT {
        assert_eq!(
            recv_json(&mut viewer).await["messagePayload"],
            numbered_payload(n),
            "message {n} toward the viewer"
        );
    }
    assert_eq!(emulator.stats().messages_relayed, 2 * COUNT as u64);
}

#[tokio::test]
async fn oversized_frame_closes_the_connection_with_1009() {
    let (emulator, arn) = start_with(EmulatorConfig { max_frame_len: 1024, ..EmulatorConfig::default() }).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    // Within the limit: handled (a STATUS_RESPONSE for the bad payload).
    send(&mut viewer, request("SDP_OFFER", None, "x", Some("small"))).await;
    assert_eq!(recv_json(&mut viewer).await["messageType"], "STATUS_RESPONSE");

    send(&mut viewer, "A".repeat(2_000)).await;
    assert_eq!(expect_close(&mut viewer).await.code, CloseCode::Size);
    wait_for_open_connections(&emulator, 0).await;
    assert_eq!(emulator.stats().frames_rejected, 2);
}

#[tokio::test]
async fn channel_arns_follow_the_service_format_and_creation_is_idempotent() {
    let emulator = Emulator::start(EmulatorConfig {
        region: "eu-central-1".to_owned(),
        account: "999988887777".to_owned(),
        channels: vec!["pre".to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let pre = emulator.channel_arn("pre").expect("pre-created");
    let made = emulator.create_channel("made.later_1");
    assert_eq!(emulator.create_channel("made.later_1"), made);
    assert_eq!(emulator.channel_arn("made.later_1"), Some(made.clone()));
    assert_eq!(emulator.channel_arn("missing"), None);
    for (arn, name) in [(&pre, "pre"), (&made, "made.later_1")] {
        let prefix = format!("arn:aws:kinesisvideo:eu-central-1:999988887777:channel/{name}/");
        let millis = arn.strip_prefix(&prefix).unwrap_or_else(|| panic!("{arn}"));
        assert!(millis.parse::<u64>().unwrap() > 1_600_000_000_000, "{arn}");
        assert!(validate_channel_arn(arn).is_ok(), "{arn}");
    }
    assert_eq!(emulator.ws_endpoint(), format!("ws://{}", emulator.local_addr()));
    assert_ne!(emulator.local_addr().port(), 0);
    // The new channel accepts connections.
    let _master = connect(&emulator, &made, None).await;
}

#[tokio::test]
async fn start_rejects_values_that_would_make_malformed_arns() {
    for config in [
        EmulatorConfig { region: "US West".to_owned(), ..EmulatorConfig::default() },
        EmulatorConfig { account: "12ab".to_owned(), ..EmulatorConfig::default() },
        EmulatorConfig { channels: vec!["has space".to_owned()], ..EmulatorConfig::default() },
    ] {
        let error = Emulator::start(config).await.err().expect("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[tokio::test]
async fn shutdown_closes_open_sockets_and_stops_listening() {
    let (emulator, arn) = start().await;
    let addr = emulator.local_addr();
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    emulator.shutdown().await;

    assert_eq!(expect_close(&mut master).await.code, CloseCode::Away);
    assert_eq!(expect_close(&mut viewer).await.code, CloseCode::Away);
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn binary_prints_its_endpoint_and_channels_then_serves() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-signaling-emulator"))
        .args(["--channel", "cam", "--channel=door", "--region", "ap-south-1"])
        .args(["--max-viewers", "1", "--exit-after", "30"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        timeout(WAIT, lines.next_line()).await.expect("a line within the wait").unwrap().expect("a line before EOF")
    };
    let endpoint = next_line().await;
    assert!(endpoint.starts_with("ws://127.0.0.1:"), "{endpoint}");
    let mut arns = HashMap::new();
    for expected in ["cam", "door"] {
        let line = next_line().await;
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[..2], ["channel", expected], "{line}");
        assert!(
            parts[2].starts_with(&format!("arn:aws:kinesisvideo:ap-south-1:123456789012:channel/{expected}/")),
            "{line}"
        );
        arns.insert(expected, parts[2].to_owned());
    }

    let url = |client_id: Option<&str>| format!("{endpoint}{}", connect_query(&arns["cam"], client_id));
    let (mut master, _) = connect_async(url(None)).await.unwrap();
    let (mut viewer, _) = connect_async(url(Some("v1"))).await.unwrap();
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "v1");
    // --max-viewers 1 took effect.
    match connect_async(url(Some("v2"))).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    child.kill().await.unwrap();
}
