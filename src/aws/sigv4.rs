//! SigV4 through the aws-sigv4 crate: the presigned WebSocket URL (spec §2.1,
//! as the JS SDK builds it) and header-signed HTTPS requests (spec §2.3).

use super::redact::Redactor;
use super::{AwsError, Credentials};
use aws_sigv4::http_request::{
    PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime};

/// The signing name of the control plane, the channel endpoints and the WebSocket.
pub const SERVICE: &str = "kinesisvideo";

/// `X-Amz-Expires` of a presigned URL, as the JS and Android SDKs send it.
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(299);

/// Percent-encodes everything but RFC 3986 unreserved characters (spec §2.1 step 5).
pub fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A URL without its query string, for logs (a presigned URL's query holds
/// the credential scope, signature and session token).
pub fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// A redactor of everything secret in the presigned `url` signed with `creds`:
/// the secret key, the session token, the signature and the credential scope.
pub(crate) fn presigned_url_redactor(url: &str, creds: &Credentials) -> Redactor {
    let mut redactor = creds.redactor();
    redactor.extend(super::signer::signed_url_redactor(url));
    redactor
}

fn signing_error(e: impl std::fmt::Display) -> AwsError {
    AwsError::Config(format!("cannot sign the request: {e}"))
}

/// Splits `scheme://host[:port][/path]` into (scheme, host with port, path or `/`).
fn split_url(url: &str) -> Result<(&str, &str, &str), AwsError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| AwsError::Config(format!("{:?} is not an absolute URL", strip_query(url))))?;
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(AwsError::Config(format!("{:?} has no usable host", strip_query(url))));
    }
    Ok((scheme, host, path))
}

fn settings(location: SignatureLocation) -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.signature_location = location;
    settings.session_token_mode = SessionTokenMode::Include;
    if location == SignatureLocation::QueryParams {
        // The JS SDK signs the path as written (spec §2.1 step 8).
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.expires_in = Some(PRESIGN_EXPIRES);
    }
    settings
}

/// Presigns the WebSocket URL: `endpoint` (`wss://host[:port][/path]`, or
/// `ws://` for a local emulator; no query) plus `params` (`X-Amz-ChannelARN`,
/// `X-Amz-ClientId`) plus the SigV4 query parameters, signed at `now` with
/// `X-Amz-Expires=299`, only the `host` header (host and port exactly as in
/// `endpoint`), the empty-payload hash and the session token inside the signed
/// query. Parameters come out sorted by name, byte for byte what the JS SDK produces.
pub fn presign_wss_url(
    endpoint: &str,
    params: &[(&str, &str)],
    creds: &Credentials,
    region: &str,
    now: SystemTime,
) -> Result<String, AwsError> {
    presign_url_for_service(endpoint, params, creds, region, SERVICE, now)
}

/// [`presign_wss_url`] with another signing name (the JS SDK's `service` option).
pub(crate) fn presign_url_for_service(
    endpoint: &str,
    params: &[(&str, &str)],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<String, AwsError> {
    creds.check()?;
    if !(endpoint.starts_with("wss://") || endpoint.starts_with("ws://")) {
        return Err(AwsError::Config(format!("{:?} is not a wss:// or ws:// URL", strip_query(endpoint))));
    }
    if endpoint.contains(['?', '#']) {
        return Err(AwsError::Config(format!("{:?} must not have a query string", strip_query(endpoint))));
    }
    let (scheme, host, path) = split_url(endpoint)?;
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v))).collect();
    let mut signable_url = format!("{scheme}://{host}{path}");
    if !query.is_empty() {
        signable_url.push('?');
        signable_url.push_str(&query.join("&"));
    }
    let identity: Identity = creds.to_sdk().into();
    let signing_params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings(SignatureLocation::QueryParams))
        .build()
        .map_err(signing_error)?
        .into();
    let request = SignableRequest::new("GET", signable_url, [("host", host)].into_iter(), SignableBody::Bytes(&[]))
        .map_err(signing_error)?;
    let (instructions, _signature) = sign(request, &signing_params).map_err(signing_error)?.into_parts();

    let mut all: Vec<(String, String)> = params.iter().map(|(k, v)| (uri_encode(k), uri_encode(v))).collect();
    all.extend(instructions.params().iter().map(|(k, v)| (uri_encode(k), uri_encode(v))));
    all.sort();
    let query: Vec<String> = all.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!("{scheme}://{host}{path}?{}", query.join("&")))
}

/// Signs an HTTPS request with an `Authorization` header (service
/// `kinesisvideo`). `headers` are the request's headers, all signed (a `host`
/// header should be among them, equal to the one sent; without it the URL's
/// host is signed, without a default port). Returns the headers to add:
/// `x-amz-date`, `authorization` and, with temporary credentials,
/// `x-amz-security-token`.
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    now: SystemTime,
) -> Result<Vec<(String, String)>, AwsError> {
    creds.check()?;
    let identity: Identity = creds.to_sdk().into();
    let signing_params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(now)
        .settings(settings(SignatureLocation::Headers))
        .build()
        .map_err(signing_error)?
        .into();
    let request =
        SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body)).map_err(signing_error)?;
    let (instructions, _signature) = sign(request, &signing_params).map_err(signing_error)?.into_parts();
    let (signed_headers, _) = instructions.into_parts();
    Ok(signed_headers.iter().map(|h| (h.name().to_owned(), h.value().to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    // Spec §2.2, vector set A (JS SDK `SigV4RequestSigner.spec.ts`).
    const ENDPOINT: &str = "wss://kvs.awsamazon.com";
    const REGION: &str = "us-west-2";
    const PARAMS: &[(&str, &str)] = &[("X-Amz-TestParam", "test-param-value")];

    fn date() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_575_158_400) // 2019-12-01T00:00:00.000Z
    }

    fn with_token() -> Credentials {
        Credentials::new("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", Some("FakeSessionToken"))
    }

    fn signature_of(url: &str) -> &str {
        let start = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        &url[start..start + 64]
    }

    #[test]
    fn js_vector_with_token() {
        let url = presign_wss_url(ENDPOINT, PARAMS, &with_token(), REGION, date()).unwrap();
        assert_eq!(
            url,
            "wss://kvs.awsamazon.com/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Security-Token=FakeSessionToken&X-Amz-Signature=fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value"
        );
    }

    #[test]
    fn a_refusal_echoing_the_signed_query_shows_none_of_it() {
        let creds = Credentials::new("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", Some("Fake/Session+Token="));
        let url = presign_wss_url(ENDPOINT, PARAMS, &creds, REGION, date()).unwrap();
        let query = url.split_once('?').unwrap().1;
        let echo = format!("canonical request: GET / {query} (lower-case hex: {})", query.replace("%2F", "%2f"));
        let shown = presigned_url_redactor(&url, &creds).scrub(&echo);
        for secret in [signature_of(&url), "AKIA4F7WJQR7FMMWMNXI%2", "Fake%2", "Session"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("X-Amz-TestParam=test-param-value"), "{shown}");
    }

    #[test]
    fn js_vector_without_token() {
        let creds = Credentials::new("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", None);
        let url = presign_wss_url(ENDPOINT, PARAMS, &creds, REGION, date()).unwrap();
        assert_eq!(
            url,
            "wss://kvs.awsamazon.com/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Signature=be1e78950d956a8a9a1997417099ddbd7455619f3d08c4ad20e1e272179ca695&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value"
        );
    }

    #[test]
    fn js_vector_service_override() {
        let url = presign_url_for_service(ENDPOINT, PARAMS, &with_token(), REGION, "firehose", date()).unwrap();
        assert!(
            url.contains("X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Ffirehose%2Faws4_request&"),
            "{url}"
        );
        assert_eq!(signature_of(&url), "f15308513d21a381d38b7607a0439f25fc2e6c9f5ff56a48c1664b486e6234d5");
    }

    #[test]
    fn js_vector_path_endpoint() {
        let endpoint = "wss://kvs.awsamazon.com/path/path/path";
        let url = presign_wss_url(endpoint, PARAMS, &with_token(), REGION, date()).unwrap();
        assert_eq!(
            url,
            "wss://kvs.awsamazon.com/path/path/path?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Security-Token=FakeSessionToken&X-Amz-Signature=0bf3df6ca23d8d82f688e8dbfb90d69e74843d40038541b1721c545eef7612a4&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value"
        );
    }

    #[test]
    fn channel_params_are_encoded_and_port_kept() {
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1";
        let url = presign_wss_url(
            "ws://127.0.0.1:9000",
            &[("X-Amz-ChannelARN", arn), ("X-Amz-ClientId", "viewer 1+")],
            &with_token(),
            REGION,
            date(),
        )
        .unwrap();
        assert!(url.starts_with("ws://127.0.0.1:9000/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo%3Aus-west-2%3A123456789012%3Achannel%2Fdemo%2F1&X-Amz-ClientId=viewer%201%2B&"), "{url}");
        // The signature covers the host with its port: another port, another signature.
        let other = presign_wss_url("ws://127.0.0.1:9001", &[("X-Amz-ChannelARN", arn)], &with_token(), REGION, date());
        let same_port =
            presign_wss_url("ws://127.0.0.1:9000", &[("X-Amz-ChannelARN", arn)], &with_token(), REGION, date());
        assert_ne!(signature_of(&other.unwrap()), signature_of(&same_port.unwrap()));
    }

    #[test]
    fn rejects_bad_endpoints_and_credentials() {
        for endpoint in ["https://kvs.awsamazon.com", "wss://kvs.awsamazon.com/?a=b", "wss://", "kvs.awsamazon.com"] {
            assert!(
                matches!(presign_wss_url(endpoint, PARAMS, &with_token(), REGION, date()), Err(AwsError::Config(_))),
                "{endpoint}"
            );
        }
        let empty = Credentials::new("", "", None);
        assert!(matches!(presign_wss_url(ENDPOINT, PARAMS, &empty, REGION, date()), Err(AwsError::Credentials(_))));
    }

    #[test]
    fn header_signing() {
        let body = br#"{"ChannelName":"demo"}"#;
        let url = "https://kinesisvideo.us-west-2.amazonaws.com/describeSignalingChannel";
        let headers = [("host", "kinesisvideo.us-west-2.amazonaws.com"), ("content-type", "application/json")];
        let signed = sign_request("POST", url, &headers, body, &with_token(), REGION, date()).unwrap();
        let get = |name: &str| signed.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20191201T000000Z"));
        assert_eq!(get("x-amz-security-token"), Some("FakeSessionToken"));
        let authorization = get("authorization").unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIA4F7WJQR7FMMWMNXI/20191201/us-west-2/kinesisvideo/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="), "{authorization}");
        assert!(!authorization.contains("FakeSecretKey"));
        // Deterministic, and sensitive to the body.
        let again = sign_request("POST", url, &headers, body, &with_token(), REGION, date()).unwrap();
        assert_eq!(signed, again);
        let other = sign_request("POST", url, &headers, b"{}", &with_token(), REGION, date()).unwrap();
        assert_ne!(signed, other);
        // No token, no token header.
        let creds = Credentials::new("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", None);
        let signed = sign_request("POST", url, &headers, body, &creds, REGION, date()).unwrap();
        assert!(signed.iter().all(|(n, _)| n != "x-amz-security-token"));
    }

    /// The AWS SigV4 test suite's `post-x-www-form-urlencoded`-style check:
    /// an independent HMAC chain over the canonical request gives the same signature.
    #[test]
    fn header_signature_matches_the_aws_suite_example() {
        // aws-sig-v4-test-suite "get-vanilla": GET / on example.amazonaws.com, service "service".
        let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None);
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let identity: Identity = creds.to_sdk().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("service")
            .time(time)
            .settings(settings(SignatureLocation::Headers))
            .build()
            .unwrap()
            .into();
        let request =
            SignableRequest::new("GET", "https://example.amazonaws.com/", std::iter::empty(), SignableBody::Bytes(&[]))
                .unwrap();
        let (_, signature) = sign(request, &params).unwrap().into_parts();
        assert_eq!(signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    }

    #[test]
    fn helpers() {
        assert_eq!(strip_query("wss://h/?X-Amz-Signature=abc"), "wss://h/");
        assert_eq!(strip_query("https://h/p"), "https://h/p");
        assert_eq!(uri_encode("a b/c:d~e"), "a%20b%2Fc%3Ad~e");
        assert_eq!(split_url("wss://h:1").unwrap(), ("wss", "h:1", "/"));
        assert_eq!(split_url("wss://h/a/b").unwrap(), ("wss", "h", "/a/b"));
    }
}
