//! Errors of the AWS layer, and how an HTTP error reply maps to one (spec §8.1, §8.8).

use std::fmt;

/// Longest service message kept in an error (characters); the rest is cut.
const MAX_MESSAGE_CHARS: usize = 512;

/// What the service said when it refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// The HTTP status of the reply.
    pub status: u16,
    /// The error code, e.g. `ResourceNotFoundException`, from the
    /// `x-amzn-ErrorType` header or the body's `__type` / `code`.
    pub code: Option<String>,
    /// The service's message (`message` / `Message`), or the start of a body
    /// that is not the usual JSON.
    pub message: String,
    /// The `x-amzn-RequestId` header, for support cases.
    pub request_id: Option<String>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// Why a call of the AWS layer failed. One variant per kind the C layer
/// reports; none of them ever holds a secret key or session token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AwsError {
    /// `ResourceNotFoundException` or HTTP 404: no such channel.
    NotFound(ServiceError),
    /// `AccessDeniedException`, `NotAuthorizedException`, a bad signature or
    /// token, or HTTP 401 / 403.
    AccessDenied(ServiceError),
    /// `ClientLimitExceededException` or another throttle, or HTTP 429.
    Throttled(ServiceError),
    /// `InvalidArgumentException` (and `InvalidClientException`,
    /// `ValidationException`), or another HTTP 400.
    InvalidArgument(ServiceError),
    /// `ResourceInUseException`: the channel exists already or is not available now.
    ResourceInUse(ServiceError),
    /// Any other refusal, including 5xx, `AccountChannelLimitExceededException`,
    /// `SessionExpiredException`, `VersionMismatchException`.
    Service(ServiceError),
    /// DNS, TCP or HTTP transport failure.
    Network(String),
    /// TLS failure: the certificate did not verify, or the handshake failed.
    Tls(String),
    /// The call did not finish within its timeout.
    Timeout(String),
    /// A success reply that is not what the API promises (bad JSON, a missing field).
    BadResponse(String),
    /// No credentials could be obtained (unset variables, a failing callback).
    Credentials(String),
    /// A local argument or setting is invalid (region, URL, CA bundle, channel name...).
    Config(String),
    /// The request signer (signing by a backend) failed or returned something
    /// the client does not use.
    Signer(super::SignerError),
    /// The connection through the HTTPS proxy failed: the proxy is down,
    /// asks for credentials, refuses the tunnel or closed it.
    Proxy(super::ProxyError),
    /// The AWS IoT credentials provider refused or failed (its kind names why).
    IotCredentials(super::iot::IotError),
}

impl AwsError {
    /// The service's reply, for the variants that come from one.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            AwsError::NotFound(e)
            | AwsError::AccessDenied(e)
            | AwsError::Throttled(e)
            | AwsError::InvalidArgument(e)
            | AwsError::ResourceInUse(e)
            | AwsError::Service(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        self.service_error().map(|e| e.status)
    }

    /// The service's message, or the local description.
    pub fn message(&self) -> &str {
        match self {
            AwsError::Network(m)
            | AwsError::Tls(m)
            | AwsError::Timeout(m)
            | AwsError::BadResponse(m)
            | AwsError::Credentials(m)
            | AwsError::Config(m) => m,
            AwsError::Signer(
                super::SignerError::Failed(m) | super::SignerError::InvalidUrl(m) | super::SignerError::NotSecure(m),
            ) => m,
            AwsError::Signer(_) => "the signer returned too much",
            AwsError::Proxy(e) => e.message(),
            AwsError::IotCredentials(e) => &e.message,
            other => other.service_error().map_or("", |e| e.message.as_str()),
        }
    }

    /// A short stable name of the kind, e.g. `"not_found"` (for logs and metrics).
    pub fn kind_name(&self) -> &'static str {
        match self {
            AwsError::NotFound(_) => "not_found",
            AwsError::AccessDenied(_) => "access_denied",
            AwsError::Throttled(_) => "throttled",
            AwsError::InvalidArgument(_) => "invalid_argument",
            AwsError::ResourceInUse(_) => "resource_in_use",
            AwsError::Service(_) => "service",
            AwsError::Network(_) => "network",
            AwsError::Tls(_) => "tls",
            AwsError::Timeout(_) => "timeout",
            AwsError::BadResponse(_) => "bad_response",
            AwsError::Credentials(_) => "credentials",
            AwsError::Config(_) => "config",
            AwsError::Signer(_) => "signer",
            AwsError::Proxy(_) => "proxy",
            AwsError::IotCredentials(e) => e.kind.name(),
        }
    }

    /// Whether trying again later can help (transport trouble, throttling, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            AwsError::Network(_) | AwsError::Timeout(_) | AwsError::Throttled(_) => true,
            AwsError::Service(e) => e.status >= 500,
            AwsError::Proxy(e) => e.is_transient(),
            AwsError::IotCredentials(e) => {
                matches!(e.kind, super::iot::IotErrorKind::Throttled | super::iot::IotErrorKind::ServerError)
            }
            _ => false,
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsError::NotFound(e) => write!(f, "not found: {e}"),
            AwsError::AccessDenied(e) => write!(f, "access denied: {e}"),
            AwsError::Throttled(e) => write!(f, "throttled: {e}"),
            AwsError::InvalidArgument(e) => write!(f, "invalid argument: {e}"),
            AwsError::ResourceInUse(e) => write!(f, "resource in use: {e}"),
            AwsError::Service(e) => write!(f, "service error: {e}"),
            AwsError::Network(m) => write!(f, "network error: {m}"),
            AwsError::Tls(m) => write!(f, "TLS error: {m}"),
            AwsError::Timeout(m) => write!(f, "timed out: {m}"),
            AwsError::BadResponse(m) => write!(f, "unexpected response: {m}"),
            AwsError::Credentials(m) => write!(f, "credentials unavailable: {m}"),
            AwsError::Config(m) => write!(f, "invalid configuration: {m}"),
            AwsError::Signer(e) => e.fmt(f),
            AwsError::Proxy(e) => write!(f, "{e}"),
            AwsError::IotCredentials(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AwsError {}

/// The error code without decorations: `aws.foo#Code` → `Code`,
/// `Code:http://internal.amazon.com/...` → `Code`.
fn bare_code(raw: &str) -> Option<String> {
    let code = raw.split(':').next().unwrap_or(raw);
    let code = code.rsplit('#').next().unwrap_or(code).trim();
    (!code.is_empty()).then(|| code.to_owned())
}

/// The text between `<tag>` and `</tag>` in an XML error body.
fn xml_element<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

/// A text from the network made fit for an error text or a log line: control
/// characters (CR, LF, escape sequences) become spaces, so that it cannot
/// forge log lines or drive a terminal, and it is cut to its first 512
/// characters (marked with `...`). A message must be scrubbed of secrets
/// before it is cut, or a cut secret escapes the scrub.
pub(crate) fn cut_for_display(text: &str) -> String {
    let cut = match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    };
    cut.replace(char::is_control, " ")
}

/// Reads the code and message of an error reply: the `x-amzn-ErrorType`
/// header wins for the code, then the body's `__type` / `code` / `Code`; the
/// message is the body's `message` / `Message`, an XML `<Message>`, or the
/// body, not yet cut: the caller scrubs it of secrets, then cuts it ([`cut_for_display`]).
pub(crate) fn service_error(
    status: u16,
    error_type_header: Option<&str>,
    request_id: Option<&str>,
    body: &[u8],
) -> ServiceError {
    let text = String::from_utf8_lossy(body);
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let object = json.as_ref().and_then(|v| v.as_object());
    let field = |name: &str| object.and_then(|o| crate::protocol::get_ci(o, name)).and_then(|v| v.as_str());
    let code = error_type_header
        .and_then(bare_code)
        .or_else(|| field("__type").and_then(bare_code))
        .or_else(|| field("code").and_then(bare_code))
        .or_else(|| xml_element(&text, "Code").and_then(bare_code));
    let message = match field("message").or_else(|| xml_element(&text, "Message")) {
        Some(message) => message.to_owned(),
        None if object.is_some() => String::new(),
        None => text.trim().to_owned(),
    };
    ServiceError { status, code, message, request_id: request_id.map(str::to_owned) }
}

/// Classifies an error reply by its code, falling back to the status.
pub(crate) fn classify(error: ServiceError) -> AwsError {
    let by_code = match error.code.as_deref().unwrap_or("") {
        "ResourceNotFoundException" | "NotFoundException" => Some(AwsError::NotFound as fn(ServiceError) -> AwsError),
        "AccessDeniedException"
        | "NotAuthorizedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "IncompleteSignatureException"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "ForbiddenException" => Some(AwsError::AccessDenied as _),
        "ClientLimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "LimitExceededException"
        | "RequestLimitExceeded" => Some(AwsError::Throttled as _),
        "InvalidArgumentException" | "InvalidClientException" | "ValidationException" | "SerializationException" => {
            Some(AwsError::InvalidArgument as _)
        }
        "ResourceInUseException" => Some(AwsError::ResourceInUse as _),
        "" => None,
        _ => Some(AwsError::Service as _),
    };
    let by_status = || match error.status {
        404 => AwsError::NotFound as fn(ServiceError) -> AwsError,
        401 | 403 => AwsError::AccessDenied as _,
        429 => AwsError::Throttled as _,
        400 | 413 | 415 => AwsError::InvalidArgument as _,
        _ => AwsError::Service as _,
    };
    by_code.unwrap_or_else(by_status)(error)
}

/// True when an error body says the signature's time is off (spec §2.3): the
/// client should learn the clock skew from the reply's `Date` and retry.
pub fn is_clock_skew_message(body: &str) -> bool {
    body.contains("Signature expired") || body.contains("Signature not yet current")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(status: u16, header: Option<&str>, body: &str) -> AwsError {
        classify(service_error(status, header, Some("req-1"), body.as_bytes()))
    }

    #[test]
    fn codes_from_header_and_body() {
        let e = map(404, Some("ResourceNotFoundException:http://internal.amazon.com/coral/"), r#"{"message":"gone"}"#);
        assert!(matches!(&e, AwsError::NotFound(s) if s.code.as_deref() == Some("ResourceNotFoundException")));
        assert_eq!(e.message(), "gone");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.to_string(), "not found: HTTP 404 ResourceNotFoundException: gone (request id req-1)");

        let e = map(
            400,
            None,
            r#"{"__type":"com.amazonaws.kinesisvideo#ClientLimitExceededException","Message":"slow down"}"#,
        );
        assert!(matches!(&e, AwsError::Throttled(s) if s.message == "slow down"));

        let e = map(400, None, r#"{"code":"ResourceInUseException","message":"taken"}"#);
        assert!(matches!(e, AwsError::ResourceInUse(_)));

        let e = map(400, Some("InvalidArgumentException"), r#"{"Message":"bad name"}"#);
        assert!(matches!(&e, AwsError::InvalidArgument(s) if s.message == "bad name"));

        let e = map(400, None, r#"{"__type":"AccountChannelLimitExceededException","message":"too many"}"#);
        assert!(
            matches!(&e, AwsError::Service(s) if s.code.as_deref() == Some("AccountChannelLimitExceededException"))
        );

        let e = map(401, Some("NotAuthorizedException"), r#"{"message":"no"}"#);
        assert!(matches!(e, AwsError::AccessDenied(_)));
    }

    #[test]
    fn status_fallbacks_and_odd_bodies() {
        // The C SDK's fake server: just a message and a status.
        let e = map(404, None, r#"{"Message": "The requested channel is not found or not active."}"#);
        assert!(matches!(&e, AwsError::NotFound(s) if s.code.is_none()));
        assert_eq!(e.message(), "The requested channel is not found or not active.");
        assert!(matches!(
            map(403, None, r#"{"message":"The security token included in the request is invalid."}"#),
            AwsError::AccessDenied(_)
        ));
        assert!(matches!(map(429, None, ""), AwsError::Throttled(_)));
        assert!(matches!(map(400, None, "{}"), AwsError::InvalidArgument(_)));
        let e = map(503, None, "<html>Service Unavailable</html>");
        assert!(matches!(&e, AwsError::Service(s) if s.message == "<html>Service Unavailable</html>"));
        assert!(e.is_transient());
        // XML error from the wrong host (spec §1.4).
        let xml = "<AccessDeniedException>\n  <Code>AccessDeniedException</Code><Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>";
        let e = map(403, None, xml);
        assert!(matches!(&e, AwsError::AccessDenied(s) if s.code.as_deref() == Some("AccessDeniedException")));
        assert_eq!(e.message(), "Unable to determine service/operation name to be authorized");
        // Long bodies are kept whole here: the caller scrubs them of secrets,
        // then cuts them (control_plane::error_from_response).
        let long = "x".repeat(2000);
        assert_eq!(map(500, None, &long).message().len(), 2000);
        assert_eq!(cut_for_display(map(500, None, &long).message()).len(), MAX_MESSAGE_CHARS + 3);
        // A message cannot forge a log line or send escape sequences.
        let forged = r"denied\r\nkvs-signaling info client: connected\u001b[2J";
        let e = map(403, None, &format!(r#"{{"message":"{forged}"}}"#));
        assert_eq!(e.message(), "denied\r\nkvs-signaling info client: connected\u{1b}[2J");
        assert_eq!(cut_for_display(e.message()), "denied  kvs-signaling info client: connected [2J");
    }

    #[test]
    fn skew_messages() {
        assert!(is_clock_skew_message(
            r#"{"message":"Signature expired: 20200101T000000Z is now earlier than 20200101T001000Z (20200101T001500Z - 5 min.)"}"#
        ));
        assert!(is_clock_skew_message("Signature not yet current: 20200101T010000Z is still later than ..."));
        assert!(!is_clock_skew_message(r#"{"message":"The request signature we calculated does not match"}"#));
    }
}
