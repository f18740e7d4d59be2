//! The emulator's control plane (spec §8), SigV4 verification (§2) and TLS, over
//! real loopback sockets with raw HTTP, tokio-tungstenite and tokio-rustls
//! clients, and the AWS-maintained `aws-sigv4` signer (no client code of this crate).

#![cfg(feature = "emulator")]

mod emulator_support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use emulator_support::*;
use kvs_signaling::emulator::{Emulator, EmulatorConfig, Operation, TlsSetting};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, connect_async, connect_async_tls_with_config, tungstenite};

async fn start() -> (Emulator, String) {
    start_with(EmulatorConfig::default()).await
}

fn authed() -> EmulatorConfig {
    EmulatorConfig {
        auth: Some(vec![("OTHERKEY".to_owned(), "other".to_owned()), (ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())]),
        ..EmulatorConfig::default()
    }
}

fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The path of a URL (`scheme://host/path`).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    &rest[rest.find('/').unwrap_or(rest.len())..]
}

#[tokio::test]
async fn create_describe_list_and_media_storage() {
    let (emulator, demo_arn) = start().await;
    let created = call(
        &emulator,
        "/createSignalingChannel",
        json!({
            "ChannelName": "cam-1",
            "ChannelType": "SINGLE_MASTER",
            "SingleMasterConfiguration": {"MessageTtlSeconds": 30},
            "Tags": [{"Key": "site", "Value": "lab"}],
        }),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert!(created.header("x-amzn-requestid").is_some() && created.header("date").is_some());
    let arn = created.json()["ChannelARN"].as_str().unwrap().to_owned();
    assert!(arn.starts_with("arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam-1/"), "{arn}");
    assert_eq!(emulator.channel_arn("cam-1"), Some(arn.clone()));

    let taken = call(&emulator, "/createSignalingChannel", json!({"ChannelName": "cam-1"})).await;
    assert_aws_error(&taken, 400, "ResourceInUseException");

    let by_name = call(&emulator, "/describeSignalingChannel", json!({"ChannelName": "cam-1"})).await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    let info = &by_name.json()["ChannelInfo"];
    assert_eq!(info["ChannelName"], "cam-1");
    assert_eq!(info["ChannelARN"], arn);
    assert_eq!(info["ChannelType"], "SINGLE_MASTER");
    assert_eq!(info["ChannelStatus"], "ACTIVE");
    assert_eq!(info["SingleMasterConfiguration"], json!({"MessageTtlSeconds": 30}));
    let created_at = info["CreationTime"].as_f64().expect("CreationTime is a number");
    assert!((created_at - epoch_now()).abs() < 60.0, "{created_at}");
    let version = info["Version"].as_str().unwrap();
    assert!(!version.is_empty() && version.len() <= 64 && version.chars().all(|c| c.is_ascii_alphanumeric()));
    let by_arn = call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": arn})).await;
    assert_eq!(by_arn.json(), by_name.json());
    // The pre-created channel has the default TTL.
    let demo = call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": demo_arn})).await;
    assert_eq!(demo.json()["ChannelInfo"]["SingleMasterConfiguration"]["MessageTtlSeconds"], 60);

    for name in ["cam-2", "door", "cam-3"] {
        assert_eq!(call(&emulator, "/createSignalingChannel", json!({"ChannelName": name})).await.status, 200);
    }
    let all = call(&emulator, "/listSignalingChannels", json!({})).await.json();
    let names: Vec<&str> =
        all["ChannelInfoList"].as_array().unwrap().iter().map(|i| i["ChannelName"].as_str().unwrap()).collect();
    assert_eq!(names, ["cam-1", "cam-2", "cam-3", "demo", "door"]);
    assert!(all.get("NextToken").is_none());
    // Paging through the "cam" channels two at a time.
    let condition = json!({"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "cam"});
    let first =
        call(&emulator, "/listSignalingChannels", json!({"MaxResults": 2, "ChannelNameCondition": condition})).await;
    let first = first.json();
    assert_eq!(first["ChannelInfoList"].as_array().unwrap().len(), 2);
    assert_eq!(first["ChannelInfoList"][0], by_name.json()["ChannelInfo"]);
    let token = first["NextToken"].as_str().expect("a next token").to_owned();
    let second = call(
        &emulator,
        "/listSignalingChannels",
        json!({"MaxResults": 2, "ChannelNameCondition": condition, "NextToken": token}),
    )
    .await
    .json();
    assert_eq!(second["ChannelInfoList"].as_array().unwrap().len(), 1);
    assert_eq!(second["ChannelInfoList"][0]["ChannelName"], "cam-3");
    assert!(second.get("NextToken").is_none());

    let storage = call(&emulator, "/describeMediaStorageConfiguration", json!({"ChannelName": "cam-1"})).await;
    assert_eq!(storage.json(), json!({"MediaStorageConfiguration": {"Status": "DISABLED"}}));

    let calls = emulator.stats().control_plane;
    assert_eq!(calls.create_signaling_channel, 5);
    assert_eq!(calls.describe_signaling_channel, 3);
    assert_eq!(calls.list_signaling_channels, 3);
    assert_eq!(calls.describe_media_storage_configuration, 1);
    assert_eq!(calls.get(Operation::GetIceServerConfig), 0);
    assert_eq!(calls.total(), 12);
}

#[tokio::test]
async fn endpoints_point_back_at_the_emulator_and_enforce_the_role() {
    let (emulator, arn) = start().await;
    let endpoints = |role: &'static str| {
        call(
            &emulator,
            "/getSignalingChannelEndpoint",
            json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS"], "Role": role}}),
        )
    };
    let list = |response: emulator_support::RawResponse| -> HashMap<String, String> {
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()["ResourceEndpointList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["Protocol"].as_str().unwrap().to_owned(), e["ResourceEndpoint"].as_str().unwrap().to_owned()))
            .collect()
    };
    let master = list(endpoints("MASTER").await);
    let viewer = list(endpoints("VIEWER").await);
    let base = emulator.ws_endpoint();
    assert!(master["WSS"].starts_with(&format!("{base}/m-")), "{master:?}");
    assert!(viewer["WSS"].starts_with(&format!("{base}/v-")), "{viewer:?}");
    assert_ne!(master["WSS"], viewer["WSS"]);
    assert!(master["HTTPS"].starts_with(&format!("{}/r-", emulator.control_plane_url())), "{master:?}");
    assert!(!master["WSS"].ends_with('/') && !master["HTTPS"].ends_with('/'));
    // Without a configuration: MASTER, WSS and HTTPS.
    let default = list(call(&emulator, "/getSignalingChannelEndpoint", json!({"ChannelARN": arn})).await);
    assert_eq!(default, master);
    // Only what was asked for.
    let only_wss = call(
        &emulator,
        "/getSignalingChannelEndpoint",
        json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS"], "Role": "VIEWER"}}),
    )
    .await;
    assert_eq!(
        only_wss.json()["ResourceEndpointList"],
        json!([{"Protocol": "WSS", "ResourceEndpoint": viewer["WSS"]}])
    );

    // Connecting through the returned endpoints.
    let (mut master_ws, _) = connect_async(format!("{}{}", master["WSS"], connect_query(&arn, None))).await.unwrap();
    let (mut viewer_ws, _) =
        connect_async(format!("{}{}", viewer["WSS"], connect_query(&arn, Some("v1")))).await.unwrap();
    send(&mut viewer_ws, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master_ws).await["senderClientId"], "v1");
    send(&mut master_ws, request("SDP_ANSWER", Some("v1"), OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut viewer_ws).await["messageType"], "SDP_ANSWER");

    // Each role's endpoint refuses the other role.
    let addr = emulator.local_addr();
    let viewer_on_master =
        raw_upgrade(addr, &format!("{}{}", url_path(&master["WSS"]), connect_query(&arn, Some("v2"))), "").await;
    assert_aws_error(&viewer_on_master, 400, "InvalidArgumentException");
    let master_on_viewer =
        raw_upgrade(addr, &format!("{}{}", url_path(&viewer["WSS"]), connect_query(&arn, None)), "").await;
    assert_aws_error(&master_on_viewer, 400, "InvalidArgumentException");
    let unknown_path = raw_upgrade(addr, &format!("/x-1234{}", connect_query(&arn, None)), "").await;
    assert_aws_error(&unknown_path, 404, "ResourceNotFoundException");
    assert_eq!(emulator.stats().control_plane.get_signaling_channel_endpoint, 4);
}

#[tokio::test]
async fn endpoints_use_the_host_the_client_used() {
    let (emulator, arn) = start().await;
    let port = emulator.local_addr().port();
    let body = json!({"ChannelARN": arn}).to_string();
    let stream = tokio::net::TcpStream::connect(emulator.local_addr()).await.unwrap();
    let head = post_head(&format!("localhost:{port}"), "/getSignalingChannelEndpoint", body.len(), &[]);
    let response = exchange(stream, &head, body.as_bytes()).await;
    let list = response.json()["ResourceEndpointList"].clone();
    assert!(list[0]["ResourceEndpoint"].as_str().unwrap().starts_with(&format!("ws://localhost:{port}/m-")), "{list}");
    assert!(
        list[1]["ResourceEndpoint"].as_str().unwrap().starts_with(&format!("http://localhost:{port}/r-")),
        "{list}"
    );
}

#[tokio::test]
async fn get_ice_server_config_returns_two_turn_servers() {
    let (emulator, arn) =
        start_with(EmulatorConfig { ice_server_ttl: Duration::from_secs(120), ..EmulatorConfig::default() }).await;
    let endpoints = call(&emulator, "/getSignalingChannelEndpoint", json!({"ChannelARN": arn})).await.json();
    let https = endpoints["ResourceEndpointList"][1]["ResourceEndpoint"].as_str().unwrap().to_owned();
    let path = format!("{}/v1/get-ice-server-config", url_path(&https));
    let response =
        call(&emulator, &path, json!({"ChannelARN": arn, "ClientId": "ProducerMaster", "Service": "TURN"})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let servers = response.json()["IceServerList"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 2);
    let port = emulator.local_addr().port();
    for server in &servers {
        assert_eq!(
            server["Uris"],
            json!([
                format!("turn:127.0.0.1:{port}?transport=udp"),
                format!("turns:127.0.0.1:{port}?transport=udp"),
                format!("turns:127.0.0.1:{port}?transport=tcp"),
            ])
        );
        assert_eq!(server["Ttl"], 120);
        let username = server["Username"].as_str().unwrap();
        let (expiry, credential) = username.split_once(':').unwrap();
        let expiry: f64 = expiry.parse().unwrap();
        assert!((expiry - epoch_now() - 120.0).abs() < 5.0, "{username}");
        assert_eq!(STANDARD.decode(credential).unwrap(), format!("v1:{arn}").into_bytes());
        assert_eq!(STANDARD.decode(server["Password"].as_str().unwrap()).unwrap().len(), 32);
    }
    assert_ne!(servers[0]["Password"], servers[1]["Password"]);
    // JS SDK examples send only the ARN.
    let minimal = call(&emulator, &path, json!({"ChannelARN": arn})).await;
    assert_eq!(minimal.status, 200);

    let unknown = call(&emulator, &path, json!({"ChannelARN": arn.replace("/demo/", "/gone/")})).await;
    assert_aws_error(&unknown, 404, "ResourceNotFoundException");
    let stun = call(&emulator, &path, json!({"ChannelARN": arn, "Service": "STUN"})).await;
    assert_aws_error(&stun, 400, "InvalidArgumentException");
    let bad_client = call(&emulator, &path, json!({"ChannelARN": arn, "ClientId": "a b"})).await;
    assert_aws_error(&bad_client, 400, "InvalidArgumentException");
    // Only under an HTTPS channel endpoint, as on the service.
    let regional = call(&emulator, "/v1/get-ice-server-config", json!({"ChannelARN": arn})).await;
    assert_aws_error(&regional, 404, "UnknownOperationException");
    assert_eq!(emulator.stats().control_plane.get_ice_server_config, 5);
}

#[tokio::test]
async fn delete_closes_sockets_and_later_connects_get_404() {
    let (emulator, arn) = start().await;
    let mut master = connect(&emulator, &arn, None).await;
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    let version = call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": arn})).await.json()["ChannelInfo"]
        ["Version"]
        .as_str()
        .unwrap()
        .to_owned();
    let mismatch =
        call(&emulator, "/deleteSignalingChannel", json!({"ChannelARN": arn, "CurrentVersion": "other"})).await;
    assert_aws_error(&mismatch, 400, "VersionMismatchException");

    let deleted =
        call(&emulator, "/deleteSignalingChannel", json!({"ChannelARN": arn, "CurrentVersion": version})).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json(), json!({}));
    for ws in [&mut master, &mut viewer] {
        let close = expect_close(ws).await;
        assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "channel deleted"));
    }
    let again = raw_upgrade(emulator.local_addr(), &format!("/{}", connect_query(&arn, None)), "").await;
    assert_aws_error(&again, 404, "ResourceNotFoundException");
    let describe = call(&emulator, "/describeSignalingChannel", json!({"ChannelName": "demo"})).await;
    assert_aws_error(&describe, 404, "ResourceNotFoundException");
    let twice = call(&emulator, "/deleteSignalingChannel", json!({"ChannelARN": arn})).await;
    assert_aws_error(&twice, 404, "ResourceNotFoundException");
    // The name is free again, with a new ARN.
    let recreated = call(&emulator, "/createSignalingChannel", json!({"ChannelName": "demo"})).await;
    assert_eq!(recreated.status, 200);
    assert!(emulator.delete_channel("demo"));
    assert!(!emulator.delete_channel("demo"));
}

#[tokio::test]
async fn per_channel_ttl_is_used_by_store_and_forward() {
    // Pre-created channels keep messages 300 ms; the one created by the API 5 s.
    let (emulator, short_arn) =
        start_with(EmulatorConfig { message_ttl: Duration::from_millis(300), ..EmulatorConfig::default() }).await;
    let created = call(
        &emulator,
        "/createSignalingChannel",
        json!({"ChannelName": "long", "SingleMasterConfiguration": {"MessageTtlSeconds": 5}}),
    )
    .await;
    let long_arn = created.json()["ChannelARN"].as_str().unwrap().to_owned();
    // A TTL of 300 ms is reported as one second.
    let short = call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": short_arn})).await.json();
    assert_eq!(short["ChannelInfo"]["SingleMasterConfiguration"]["MessageTtlSeconds"], 1);

    let mut short_viewer = connect(&emulator, &short_arn, Some("v1")).await;
    let mut long_viewer = connect(&emulator, &long_arn, Some("v1")).await;
    send(&mut short_viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    send(&mut long_viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    wait_until("both offers stored", || emulator.stats().messages_stored == 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut short_master = connect(&emulator, &short_arn, None).await;
    let mut long_master = connect(&emulator, &long_arn, None).await;
    assert_eq!(recv_json(&mut long_master).await["senderClientId"], "v1");
    expect_quiet(&mut short_master).await;
    assert_eq!(emulator.stats().messages_expired, 1);
}

#[tokio::test]
async fn control_plane_errors_are_aws_errors() {
    let (emulator, arn) = start().await;
    let addr = emulator.local_addr();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/createSignalingChannel", json!({}), 400, "InvalidArgumentException"),
        ("/createSignalingChannel", json!({"ChannelName": "has space"}), 400, "InvalidArgumentException"),
        ("/createSignalingChannel", json!({"ChannelName": "x".repeat(257)}), 400, "InvalidArgumentException"),
        ("/createSignalingChannel", json!({"ChannelName": 5}), 400, "SerializationException"),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "ChannelType": "FULL_MESH"}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "ChannelType": "OTHER"}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "SingleMasterConfiguration": {"MessageTtlSeconds": 4}}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "SingleMasterConfiguration": {"MessageTtlSeconds": 121}}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "Tags": (0..51).map(|n| json!({"Key": format!("k{n}"), "Value": "v"})).collect::<Vec<_>>()}),
            400,
            "TagsPerResourceExceededLimitException",
        ),
        (
            "/createSignalingChannel",
            json!({"ChannelName": "a", "Tags": [{"Key": "", "Value": "v"}]}),
            400,
            "InvalidArgumentException",
        ),
        ("/describeSignalingChannel", json!({}), 400, "InvalidArgumentException"),
        ("/describeSignalingChannel", json!({"ChannelName": "nope"}), 404, "ResourceNotFoundException"),
        ("/describeSignalingChannel", json!({"ChannelARN": "arn:aws:s3:::bucket"}), 400, "InvalidArgumentException"),
        (
            "/describeSignalingChannel",
            json!({"ChannelARN": arn, "ChannelName": "other"}),
            404,
            "ResourceNotFoundException",
        ),
        ("/getSignalingChannelEndpoint", json!({}), 400, "InvalidArgumentException"),
        (
            "/getSignalingChannelEndpoint",
            json!({"ChannelARN": arn.replace("/demo/", "/x/")}),
            404,
            "ResourceNotFoundException",
        ),
        (
            "/getSignalingChannelEndpoint",
            json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "WEBRTC"], "Role": "MASTER"}}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/getSignalingChannelEndpoint",
            json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": [], "Role": "MASTER"}}),
            400,
            "InvalidArgumentException",
        ),
        (
            "/getSignalingChannelEndpoint",
            json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS"], "Role": "OWNER"}}),
            400,
            "InvalidArgumentException",
        ),
        ("/deleteSignalingChannel", json!({"ChannelName": "demo"}), 400, "InvalidArgumentException"),
        ("/listSignalingChannels", json!({"MaxResults": 0}), 400, "InvalidArgumentException"),
        ("/listSignalingChannels", json!({"NextToken": "!!"}), 400, "InvalidArgumentException"),
        (
            "/listSignalingChannels",
            json!({"ChannelNameCondition": {"ComparisonOperator": "ENDS_WITH", "ComparisonValue": "x"}}),
            400,
            "InvalidArgumentException",
        ),
        ("/describeMediaStorageConfiguration", json!({"ChannelName": "nope"}), 404, "ResourceNotFoundException"),
        ("/updateSignalingChannel", json!({"ChannelARN": arn}), 400, "InvalidArgumentException"),
        ("/ListTagsForResource", json!({"ResourceARN": "not-an-arn"}), 400, "InvalidArgumentException"),
        (
            "/ListTagsForResource",
            json!({"ResourceARN": "arn:aws:kinesisvideo:us-west-2:123456789012:channel/nope/1"}),
            404,
            "ResourceNotFoundException",
        ),
        ("/ListTagsForResource", json!({}), 400, "InvalidArgumentException"),
        ("/tagStream", json!({"StreamName": "s"}), 404, "UnknownOperationException"),
        ("/listTagsForResource", json!({"ResourceARN": arn}), 404, "UnknownOperationException"),
    ];
    for (path, body, status, error_type) in cases {
        let response = post(addr, path, &body, &[]).await;
        assert_eq!(response.status, status, "{path} {body}: {}", response.body);
        assert_aws_error(&response, status, error_type);
    }
    // Bodies that are not JSON objects.
    for body in ["{", "[1]", "\"text\""] {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let response = exchange(
            stream,
            &post_head(&addr.to_string(), "/describeSignalingChannel", body.len(), &[]),
            body.as_bytes(),
        )
        .await;
        assert_aws_error(&response, 400, "SerializationException");
    }
    // An empty body is an empty object.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let empty = exchange(stream, &post_head(&addr.to_string(), "/listSignalingChannels", 0, &[]), b"").await;
    assert_eq!(empty.status, 200, "{}", empty.body);
}

#[tokio::test]
async fn header_signed_calls_are_verified() {
    let (emulator, arn) = start_with(authed()).await;
    let signer = Signer::new("us-west-2");
    let now = SystemTime::now();
    let body = json!({"ChannelName": "demo"});

    let accepted = signed_call(&emulator, &signer, "/describeSignalingChannel", &body, now).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.json()["ChannelInfo"]["ChannelARN"], arn);
    // Temporary credentials: the token travels as a header.
    let with_token = Signer { session_token: Some("FwoGZXIvYXdzE+token/=".to_owned()), ..Signer::new("us-west-2") };
    assert_eq!(signed_call(&emulator, &with_token, "/describeSignalingChannel", &body, now).await.status, 200);

    let unsigned = call(&emulator, "/describeSignalingChannel", body.clone()).await;
    assert_aws_error(&unsigned, 403, "AccessDeniedException");
    assert_eq!(unsigned.message(), "Missing Authentication Token");

    let wrong_secret = Signer { secret_key: "not-the-secret".to_owned(), ..Signer::new("us-west-2") };
    let refused = signed_call(&emulator, &wrong_secret, "/describeSignalingChannel", &body, now).await;
    assert_aws_error(&refused, 403, "AccessDeniedException");
    assert!(
        refused.message().starts_with("The request signature we calculated does not match the signature you provided."),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("POST\n/describeSignalingChannel\n"), "{}", refused.message());

    let unknown = Signer { access_key: "AKIANOTCONFIGURED".to_owned(), ..Signer::new("us-west-2") };
    let refused = signed_call(&emulator, &unknown, "/describeSignalingChannel", &body, now).await;
    assert_aws_error(&refused, 403, "AccessDeniedException");
    assert_eq!(refused.message(), "The security token included in the request is invalid.");

    let refused = signed_call(&emulator, &Signer::new("eu-west-1"), "/describeSignalingChannel", &body, now).await;
    assert_aws_error(&refused, 403, "AccessDeniedException");
    assert_eq!(refused.message(), "Credential should be scoped to a valid region, not 'eu-west-1'. ");

    let late =
        signed_call(&emulator, &signer, "/describeSignalingChannel", &body, now - Duration::from_secs(600)).await;
    assert_aws_error(&late, 403, "AccessDeniedException");
    assert!(late.message().starts_with("Signature expired: "), "{}", late.message());
    assert!(late.message().contains(" is now earlier than "), "{}", late.message());
    let early =
        signed_call(&emulator, &signer, "/describeSignalingChannel", &body, now + Duration::from_secs(600)).await;
    assert_aws_error(&early, 403, "AccessDeniedException");
    assert!(early.message().starts_with("Signature not yet current: "), "{}", early.message());
    assert!(early.message().contains(" is still later than "), "{}", early.message());
    // Within five minutes either way is fine.
    let skewed =
        signed_call(&emulator, &signer, "/describeSignalingChannel", &body, now - Duration::from_secs(240)).await;
    assert_eq!(skewed.status, 200, "{}", skewed.body);

    // A signature covers the body.
    let url = format!("{}/describeSignalingChannel", emulator.control_plane_url());
    let headers = signer.sign_post(&url, json!({"ChannelName": "other"}).to_string().as_bytes(), now);
    let tampered = post(emulator.local_addr(), "/describeSignalingChannel", &body, &headers).await;
    assert_aws_error(&tampered, 403, "AccessDeniedException");

    // GetIceServerConfig is signed the same way, on its channel endpoint path.
    let endpoints =
        signed_call(&emulator, &signer, "/getSignalingChannelEndpoint", &json!({"ChannelARN": arn}), now).await;
    let https = endpoints.json()["ResourceEndpointList"][1]["ResourceEndpoint"].as_str().unwrap().to_owned();
    let ice_path = format!("{}/v1/get-ice-server-config", url_path(&https));
    let ice = signed_call(&emulator, &signer, &ice_path, &json!({"ChannelARN": arn}), now).await;
    assert_eq!(ice.status, 200, "{}", ice.body);
    let stats = emulator.stats();
    assert_eq!(stats.auth_failures, 7);
    assert_eq!(stats.control_plane.describe_signaling_channel, 10);
}

#[tokio::test]
async fn clock_offset_shifts_date_headers_and_signature_checks() {
    let (emulator, _) = start_with(authed()).await;
    let signer = Signer::new("us-west-2");
    let body = json!({"ChannelName": "demo"});
    // The emulator's clock ten minutes ahead: a client on real time is "expired"
    // and can learn the offset from the Date header.
    emulator.set_clock_offset(600_000);
    let refused = signed_call(&emulator, &signer, "/describeSignalingChannel", &body, SystemTime::now()).await;
    assert!(refused.message().starts_with("Signature expired: "), "{}", refused.message());
    let date = refused.header("date").unwrap().to_owned();
    let ahead = signed_call(
        &emulator,
        &signer,
        "/describeSignalingChannel",
        &body,
        SystemTime::now() + Duration::from_secs(600),
    )
    .await;
    assert_eq!(ahead.status, 200, "{}: {}", date, ahead.body);
    emulator.clear_faults();
    let accepted = signed_call(&emulator, &signer, "/describeSignalingChannel", &body, SystemTime::now()).await;
    assert_eq!(accepted.status, 200);
    assert_ne!(accepted.header("date").unwrap(), date);
}

#[tokio::test]
async fn presigned_upgrades_are_verified() {
    let (emulator, arn) = start_with(authed()).await;
    let addr = emulator.local_addr();
    let signer = Signer { session_token: Some("FwoGZXIvYXdzE+token/=".to_owned()), ..Signer::new("us-west-2") };
    let now = SystemTime::now();
    let base = format!("{}/v-0a1b2c3d{}", emulator.ws_endpoint(), connect_query(&arn, Some("viewer-1")));
    let master_base = format!("{}/m-0a1b2c3d{}", emulator.ws_endpoint(), connect_query(&arn, None));

    let (mut master, _) =
        connect_async(signer.presign(&master_base, now, Duration::from_secs(299))).await.expect("accepted");
    let (mut viewer, _) = connect_async(signer.presign(&base, now, Duration::from_secs(299))).await.expect("accepted");
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "viewer-1");
    // The C SDK's long expiry, signed six days ago.
    let old = signer.presign(&base, now - Duration::from_secs(6 * 86_400), Duration::from_secs(604_800));
    let (_, _) = connect_async(old).await.expect("a week-long URL is accepted");

    let path_of = |url: &str| url_path(url).to_owned();
    let refused = |url: String| async move {
        let response = raw_upgrade(addr, &path_of(&url), "").await;
        assert_aws_error(&response, 403, "AccessDeniedException");
        response.message()
    };
    assert_eq!(refused(base.clone()).await, "Missing Authentication Token");
    let expired = refused(signer.presign(&base, now - Duration::from_secs(400), Duration::from_secs(299))).await;
    assert!(expired.starts_with("Signature expired: "), "{expired}");
    assert!(expired.contains(" is now earlier than "), "{expired}");
    let future = refused(signer.presign(&base, now + Duration::from_secs(600), Duration::from_secs(299))).await;
    assert!(future.starts_with("Signature not yet current: "), "{future}");
    let wrong = Signer { secret_key: "nope".to_owned(), ..Signer::new("us-west-2") };
    let mismatch = refused(wrong.presign(&base, now, Duration::from_secs(299))).await;
    assert!(mismatch.starts_with("The request signature we calculated does not match"), "{mismatch}");
    let region = refused(Signer::new("ap-south-1").presign(&base, now, Duration::from_secs(299))).await;
    assert_eq!(region, "Credential should be scoped to a valid region, not 'ap-south-1'. ");
    let unknown = Signer { access_key: "AKIAUNKNOWN".to_owned(), ..Signer::new("us-west-2") };
    assert_eq!(
        refused(unknown.presign(&base, now, Duration::from_secs(299))).await,
        "The security token included in the request is invalid."
    );
    // Changing a signed parameter (the client id) breaks the signature.
    let signed = signer.presign(&base, now, Duration::from_secs(299));
    let tampered = signed.replace("X-Amz-ClientId=viewer-1", "X-Amz-ClientId=viewer-2");
    assert!(refused(tampered).await.starts_with("The request signature we calculated"));
    // Signed for another path.
    let elsewhere = signed.replace("/v-0a1b2c3d", "/v-ffff");
    assert!(refused(elsewhere).await.starts_with("The request signature we calculated"));

    // tungstenite clients see 403.
    match connect_async(base).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    let stats = emulator.stats();
    assert_eq!(stats.auth_failures, 9);
    assert_eq!(stats.upgrades_refused, 9);
}

#[tokio::test]
async fn tls_with_a_generated_ca() {
    let (emulator, arn) =
        start_with(EmulatorConfig { tls: Some(TlsSetting::Generate { ca_out: None }), ..authed() }).await;
    let ca_pem = emulator.ca_pem().expect("a CA").to_owned();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{ca_pem}");
    let ca_path = emulator.ca_path().unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(&ca_path).unwrap(), ca_pem);
    let port = emulator.local_addr().port();
    assert_eq!(emulator.ws_endpoint(), format!("wss://127.0.0.1:{port}"));
    assert_eq!(emulator.control_plane_url(), format!("https://127.0.0.1:{port}"));

    let tls = client_tls(&ca_pem);
    let signer = Signer::new("us-west-2");
    let body = json!({"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS"], "Role": "VIEWER"}});
    // Both names in the certificate verify; the signature covers the host used.
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{port}/getSignalingChannelEndpoint");
        let headers = signer.sign_post(&url, body.to_string().as_bytes(), SystemTime::now());
        let response =
            post_tls(emulator.local_addr(), host, tls.clone(), "/getSignalingChannelEndpoint", &body, &headers)
                .await
                .expect("TLS with the generated CA");
        assert_eq!(response.status, 200, "{}", response.body);
        let list = response.json()["ResourceEndpointList"].clone();
        assert!(
            list[0]["ResourceEndpoint"].as_str().unwrap().starts_with(&format!("wss://{host}:{port}/v-")),
            "{list}"
        );
        assert!(
            list[1]["ResourceEndpoint"].as_str().unwrap().starts_with(&format!("https://{host}:{port}/r-")),
            "{list}"
        );
    }

    // wss:// with a presigned URL and the CA.
    let url = format!("{}/{}", emulator.ws_endpoint(), connect_query(&arn, Some("v1")));
    let signed = signer.presign(&url, SystemTime::now(), Duration::from_secs(299));
    let (mut viewer, _) = connect_async_tls_with_config(signed, None, true, Some(Connector::Rustls(tls.clone())))
        .await
        .expect("wss upgrade");
    let master_url = signer.presign(
        &format!("{}/{}", emulator.ws_endpoint(), connect_query(&arn, None)),
        SystemTime::now(),
        Duration::from_secs(60),
    );
    let (mut master, _) =
        connect_async_tls_with_config(master_url, None, true, Some(Connector::Rustls(tls.clone()))).await.unwrap();
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    assert_eq!(recv_json(&mut master).await["senderClientId"], "v1");

    // A client that does not trust the CA fails the handshake.
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap().cert.pem();
    let untrusting =
        post_tls(emulator.local_addr(), "localhost", client_tls(&other_ca), "/listSignalingChannels", &json!({}), &[])
            .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(emulator.local_addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        let _ = tokio::io::BufReader::new(stream).read_line(&mut line).await;
        line
    })
    .await
    .unwrap();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");

    drop((viewer, master));
    emulator.shutdown().await;
    assert!(!ca_path.exists(), "the temporary CA file is removed");
}

#[tokio::test]
async fn tls_with_given_certificate_files() {
    let dir = std::env::temp_dir().join(format!("kvs-emulator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let config =
        EmulatorConfig { tls: Some(TlsSetting::Files { cert: cert.clone(), key }), ..EmulatorConfig::default() };
    let (emulator, _) = start_with(config).await;
    assert_eq!(emulator.ca_path(), Some(cert.as_path()));
    assert_eq!(emulator.ca_pem(), Some(generated.cert.pem().as_str()));
    let response = post_tls(
        emulator.local_addr(),
        "localhost",
        client_tls(&generated.cert.pem()),
        "/listSignalingChannels",
        &json!({}),
        &[],
    )
    .await
    .expect("TLS with the given certificate");
    assert_eq!(response.status, 200, "{}", response.body);
    emulator.shutdown().await;
    assert!(cert.exists(), "a given certificate is left alone");

    let missing = EmulatorConfig {
        tls: Some(TlsSetting::Files { cert: dir.join("missing.pem"), key: dir.join("missing-key.pem") }),
        ..EmulatorConfig::default()
    };
    assert!(Emulator::start(missing).await.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn binary_with_tls_and_keys_prints_ca_and_control_plane_lines() {
    let ca_out = std::env::temp_dir().join(format!("kvs-emulator-binary-ca-{}.pem", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-signaling-emulator"))
        .args(["--channel", "cam", "--tls", "--cert-out", ca_out.to_str().unwrap(), "--admin-token", "t0ken"])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--exit-after", "30"])
        .args(["--idle-timeout", "30", "--max-connection-age", "60", "--go-away-grace", "1", "--no-quotas"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator binary runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        timeout(WAIT, lines.next_line()).await.expect("a line within the wait").unwrap().expect("a line before EOF")
    };
    let endpoint = next_line().await;
    let port: u16 = endpoint.strip_prefix("wss://127.0.0.1:").expect("wss endpoint first").parse().unwrap();
    let channel = next_line().await;
    let arn = channel.strip_prefix("channel cam ").expect("channel line").to_owned();
    assert_eq!(next_line().await, format!("ca {}", ca_out.display()));
    assert_eq!(next_line().await, format!("control-plane https://127.0.0.1:{port}"));
    assert_eq!(next_line().await, "admin loopback-or-token");

    let ca_pem = std::fs::read_to_string(&ca_out).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = json!({"ChannelName": "cam"});
    let url = format!("https://127.0.0.1:{port}/describeSignalingChannel");
    let headers = Signer::new("us-west-2").sign_post(&url, body.to_string().as_bytes(), SystemTime::now());
    let response =
        post_tls(addr, "127.0.0.1", client_tls(&ca_pem), "/describeSignalingChannel", &body, &headers).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["ChannelInfo"]["ChannelARN"], arn);
    let unsigned =
        post_tls(addr, "127.0.0.1", client_tls(&ca_pem), "/describeSignalingChannel", &body, &[]).await.unwrap();
    assert_aws_error(&unsigned, 403, "AccessDeniedException");
    child.kill().await.unwrap();
    let _ = std::fs::remove_file(&ca_out);
}

#[tokio::test]
async fn binary_without_tls_prints_the_control_plane_url_and_serves_it() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-signaling-emulator"))
        .args(["--channel", "cam", "--exit-after", "30"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator binary runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        timeout(WAIT, lines.next_line()).await.expect("a line within the wait").unwrap().expect("a line before EOF")
    };
    let endpoint = next_line().await;
    let port = endpoint.strip_prefix("ws://127.0.0.1:").expect("ws endpoint first").to_owned();
    assert!(next_line().await.starts_with("channel cam arn:aws:kinesisvideo:"));
    assert_eq!(next_line().await, format!("control-plane http://127.0.0.1:{port}"));
    assert_eq!(next_line().await, "admin loopback-only");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // No keys: unsigned calls are served.
    let response = post(addr, "/describeSignalingChannel", &json!({"ChannelName": "cam"}), &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    child.kill().await.unwrap();
}

fn describe_info(described: &RawResponse) -> Value {
    assert_eq!(described.status, 200, "{}", described.body);
    described.json()["ChannelInfo"].clone()
}

#[tokio::test]
async fn update_signaling_channel_checks_the_version_and_the_ttl_applies_to_later_messages() {
    let (emulator, arn) = start().await;
    let before = describe_info(&call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": arn})).await);
    let version = before["Version"].as_str().unwrap().to_owned();
    assert_eq!(before["SingleMasterConfiguration"]["MessageTtlSeconds"], json!(60));

    // An offer stored under the 60 s TTL.
    let mut viewer = connect(&emulator, &arn, Some("v1")).await;
    send(&mut viewer, request("SDP_OFFER", None, OFFER_PAYLOAD, None)).await;
    wait_until("the offer is stored", || emulator.stats().messages_stored == 1).await;

    let update = |version: &str, ttl: i64| json!({"ChannelARN": arn, "CurrentVersion": version, "SingleMasterConfiguration": {"MessageTtlSeconds": ttl}});
    let stale = call(&emulator, "/updateSignalingChannel", update("0stale0version0", 5)).await;
    assert_aws_error(&stale, 400, "VersionMismatchException");
    let out_of_range = call(&emulator, "/updateSignalingChannel", update(&version, 4)).await;
    assert_aws_error(&out_of_range, 400, "InvalidArgumentException");
    let updated = call(&emulator, "/updateSignalingChannel", update(&version, 5)).await;
    assert_eq!((updated.status, updated.json()), (200, json!({})), "{}", updated.body);
    let after = describe_info(&call(&emulator, "/describeSignalingChannel", json!({"ChannelARN": arn})).await);
    assert_eq!(after["SingleMasterConfiguration"]["MessageTtlSeconds"], json!(5));
    assert_ne!(after["Version"], before["Version"], "an update makes a new version");
    let replayed = call(&emulator, "/updateSignalingChannel", update(&version, 6)).await;
    assert_aws_error(&replayed, 400, "VersionMismatchException");

    // A candidate stored under the new 5 s TTL expires; the earlier offer does not.
    send(&mut viewer, request("ICE_CANDIDATE", None, OFFER_PAYLOAD, None)).await;
    wait_until("the candidate is stored", || emulator.stats().messages_stored == 2).await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let mut master = connect(&emulator, &arn, None).await;
    assert_eq!(recv_json(&mut master).await["messageType"], "SDP_OFFER");
    expect_quiet(&mut master).await;
    assert_eq!(emulator.stats().messages_expired, 1);

    let missing = call(&emulator, "/updateSignalingChannel", update(&version, 5)).await;
    assert_eq!(missing.status, 400, "the version changed, so a mismatch: {}", missing.body);
    let unknown = arn.replace("/demo/", "/nonexistent/");
    let unknown =
        call(&emulator, "/updateSignalingChannel", json!({"ChannelARN": unknown, "CurrentVersion": "abc"})).await;
    assert_aws_error(&unknown, 404, "ResourceNotFoundException");
}

#[tokio::test]
async fn tag_untag_and_list_tags_for_resource() {
    let (emulator, _) = start().await;
    let created = call(
        &emulator,
        "/createSignalingChannel",
        json!({"ChannelName": "tagged", "Tags": [{"Key": "site", "Value": "lab"}, {"Key": "owner", "Value": ""}]}),
    )
    .await;
    let arn = created.json()["ChannelARN"].as_str().unwrap().to_owned();
    let list = async || {
        let listed = call(&emulator, "/ListTagsForResource", json!({"ResourceARN": arn})).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        listed.json()["Tags"].clone()
    };
    assert_eq!(list().await, json!({"site": "lab", "owner": ""}));

    let tagged = call(
        &emulator,
        "/TagResource",
        json!({"ResourceARN": arn, "Tags": [{"Key": "site", "Value": "roof"}, {"Key": "model", "Value": "x1"}]}),
    )
    .await;
    assert_eq!(tagged.status, 200, "{}", tagged.body);
    assert_eq!(list().await, json!({"site": "roof", "owner": "", "model": "x1"}));

    let untagged =
        call(&emulator, "/UntagResource", json!({"ResourceARN": arn, "TagKeyList": ["owner", "not-there"]})).await;
    assert_eq!(untagged.status, 200, "{}", untagged.body);
    assert_eq!(list().await, json!({"site": "roof", "model": "x1"}));

    // 49 more would make 51: refused, and nothing was added.
    let many: Vec<Value> = (0..49).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect();
    let refused = call(&emulator, "/TagResource", json!({"ResourceARN": arn, "Tags": many})).await;
    assert_aws_error(&refused, 400, "TagsPerResourceExceededLimitException");
    assert_eq!(list().await.as_object().unwrap().len(), 2);
    let long_key =
        call(&emulator, "/TagResource", json!({"ResourceARN": arn, "Tags": [{"Key": "k".repeat(129), "Value": "v"}]}))
            .await;
    assert_aws_error(&long_key, 400, "InvalidArgumentException");
    let empty = call(&emulator, "/UntagResource", json!({"ResourceARN": arn, "TagKeyList": []})).await;
    assert_aws_error(&empty, 400, "InvalidArgumentException");
    let gone = arn.replace("/tagged/", "/gone/");
    let unknown = call(&emulator, "/ListTagsForResource", json!({"ResourceARN": gone})).await;
    assert_aws_error(&unknown, 404, "ResourceNotFoundException");
    assert_eq!(emulator.stats().control_plane.get(Operation::TagResource), 3);
}

#[tokio::test]
async fn control_plane_rate_limits_apply_while_quotas_are_on() {
    let (emulator, arn) = start().await;
    let other = emulator.create_channel("other");
    let describe = |arn: &str| json!({"ChannelARN": arn});
    // Quotas off (the library default): no limit.
    for _ in 0..12 {
        let answer = call(&emulator, "/describeSignalingChannel", describe(&arn)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    emulator.set_limits(kvs_signaling::emulator::Limits { quotas: true, ..emulator.limits() });
    // 5 TPS per channel: a burst of 8 gets at most 5 (a token may come back
    // during the burst) and at least one throttle.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let answer = call(&emulator, "/describeSignalingChannel", describe(&arn)).await;
        if answer.status != 200 {
            assert_aws_error(&answer, 400, "ClientLimitExceededException");
        }
        statuses.push(answer.status);
    }
    let throttled = statuses.iter().filter(|status| **status == 400).count();
    assert!(throttled >= 1 && statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    // Per channel: the other channel is not affected; by name counts too.
    let by_name = call(&emulator, "/describeSignalingChannel", json!({"ChannelName": "other"})).await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    assert_eq!(call(&emulator, "/describeSignalingChannel", describe(&other)).await.status, 200);
    // And the limit refills.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(call(&emulator, "/describeSignalingChannel", describe(&arn)).await.status, 200);
}

#[tokio::test]
async fn the_account_channel_limit_is_enforced() {
    let (emulator, _) =
        start_with(EmulatorConfig { region: "eu-west-1".to_owned(), ..EmulatorConfig::default() }).await;
    // 5,000 channels per account outside us-east-1 and us-west-2 (one is "demo").
    for i in 1..5_000 {
        emulator.create_channel(&format!("c{i}"));
    }
    let refused = call(&emulator, "/createSignalingChannel", json!({"ChannelName": "one-too-many"})).await;
    assert_aws_error(&refused, 400, "AccountChannelLimitExceededException");
    assert!(emulator.delete_channel("c1"));
    let created = call(&emulator, "/createSignalingChannel", json!({"ChannelName": "fits-again"})).await;
    assert_eq!(created.status, 200, "{}", created.body);
}
