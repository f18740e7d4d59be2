//! Field constraints of spec §3.1, §4.1 and §1.3.

use std::fmt;

/// Longest client id, recipient id, correlation id and action (spec §3.1).
pub const MAX_ID_LEN: usize = 256;
/// Longest `messagePayload`, counted in base64 characters (spec §7.1, §10.8).
pub const MAX_PAYLOAD_LEN: usize = 10_000;
/// Longest `statusResponse.description` (spec §4.1).
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest channel ARN (spec §1.3).
pub const MAX_ARN_LEN: usize = 1024;
/// Longest `statusResponse.errorType` and `statusResponse.statusCode` (spec §4.1).
pub const MAX_ERROR_TYPE_LEN: usize = 256;

/// The longest prefix of `text` that is at most `max_bytes` long and ends on a
/// character boundary.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The field a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// `action` of an outbound message.
    Action,
    /// `recipientClientId` of an outbound message.
    RecipientClientId,
    /// `messagePayload`.
    MessagePayload,
    /// `correlationId`.
    CorrelationId,
    /// The viewer's client id (`X-Amz-ClientId`).
    ClientId,
    /// The channel ARN (`X-Amz-ChannelARN`).
    ChannelArn,
    /// A channel name (control plane).
    ChannelName,
    /// `senderClientId` of an inbound message.
    SenderClientId,
    /// `messageType` of an inbound message.
    MessageType,
}

impl Field {
    /// The field's wire name (camelCase, as the JS SDK sends it).
    pub fn wire_name(self) -> &'static str {
        match self {
            Field::Action => "action",
            Field::RecipientClientId => "recipientClientId",
            Field::MessagePayload => "messagePayload",
            Field::CorrelationId => "correlationId",
            Field::ClientId => "X-Amz-ClientId",
            Field::ChannelArn => "X-Amz-ChannelARN",
            Field::ChannelName => "ChannelName",
            Field::SenderClientId => "senderClientId",
            Field::MessageType => "messageType",
        }
    }
}

/// Why a field or a message breaks the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationError {
    /// A required field is absent or empty.
    Missing(Field),
    /// Longer than its limit; `len` is the given length.
    TooLong {
        /// The field.
        field: Field,
        /// Its maximum length in bytes.
        max: usize,
        /// The length given, in bytes.
        len: usize,
    },
    /// Contains a character outside its pattern, or does not have its shape.
    BadPattern(Field),
    /// A viewer client id starting with the reserved `AWS_` prefix.
    ReservedPrefix,
    /// The payload is not standard padded base64.
    PayloadNotBase64,
    /// `action` is not one of SDP_OFFER, SDP_ANSWER, ICE_CANDIDATE.
    UnknownAction(String),
    /// A master send without `recipientClientId`.
    MasterWithoutRecipient,
    /// A viewer send with a `recipientClientId` (viewers always reach the master).
    ViewerWithRecipient,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::Missing(field) => write!(f, "{} is required and must not be empty", field.wire_name()),
            ValidationError::TooLong { field, max, len } => {
                write!(f, "{} is {len} characters long; the limit is {max}", field.wire_name())
            }
            ValidationError::BadPattern(Field::ChannelArn) => f.write_str(
                "X-Amz-ChannelARN must look like arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/EPOCH_MILLIS",
            ),
            ValidationError::BadPattern(field) => {
                write!(f, "{} may contain only the characters a-z A-Z 0-9 _ . -", field.wire_name())
            }
            ValidationError::ReservedPrefix => f.write_str("X-Amz-ClientId must not start with AWS_"),
            ValidationError::PayloadNotBase64 => f.write_str("messagePayload is not valid base64"),
            ValidationError::UnknownAction(a) => {
                write!(f, "action {a:?} is not one of SDP_OFFER, SDP_ANSWER, ICE_CANDIDATE")
            }
            ValidationError::MasterWithoutRecipient => {
                f.write_str("a master must name the viewer in recipientClientId")
            }
            ValidationError::ViewerWithRecipient => {
                f.write_str("a viewer must not set recipientClientId: its messages always go to the master")
            }
        }
    }
}

impl std::error::Error for ValidationError {}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// Checks an id-like field: 1–256 characters of `[a-zA-Z0-9_.-]`.
pub fn validate_id(field: Field, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Missing(field));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ValidationError::TooLong { field, max: MAX_ID_LEN, len: value.len() });
    }
    if !value.bytes().all(is_id_char) {
        return Err(ValidationError::BadPattern(field));
    }
    Ok(())
}

/// Checks a viewer's `X-Amz-ClientId`: an id that does not start with `AWS_`
/// in any case (spec §1.3, §10.12).
pub fn validate_client_id(value: &str) -> Result<(), ValidationError> {
    validate_id(Field::ClientId, value)?;
    if value.len() >= 4 && value[..4].eq_ignore_ascii_case("AWS_") {
        return Err(ValidationError::ReservedPrefix);
    }
    Ok(())
}

/// Checks a `messagePayload`: 1–10,000 characters of padded standard base64.
pub fn validate_payload(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Missing(Field::MessagePayload));
    }
    if value.len() > MAX_PAYLOAD_LEN {
        return Err(ValidationError::TooLong { field: Field::MessagePayload, max: MAX_PAYLOAD_LEN, len: value.len() });
    }
    let body = value.trim_end_matches('=');
    let padding = value.len() - body.len();
    let alphabet_ok = body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/');
    if !alphabet_ok || padding > 2 || !value.len().is_multiple_of(4) {
        return Err(ValidationError::PayloadNotBase64);
    }
    Ok(())
}

/// Checks a channel ARN against
/// `arn:[a-z0-9-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+`
/// and 1–1024 characters (spec §1.3, §1.6: the partition may be `aws`, `aws-cn`, ...).
pub fn validate_channel_arn(value: &str) -> Result<(), ValidationError> {
    let field = Field::ChannelArn;
    if value.is_empty() {
        return Err(ValidationError::Missing(field));
    }
    if value.len() > MAX_ARN_LEN {
        return Err(ValidationError::TooLong { field, max: MAX_ARN_LEN, len: value.len() });
    }
    let bad = ValidationError::BadPattern(field);
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(bad);
    };
    let lower_dash =
        |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if arn != "arn" || !lower_dash(partition) || service != "kinesisvideo" || !lower_dash(region) || !digits(account) {
        return Err(bad);
    }
    let res: Vec<&str> = resource.split('/').collect();
    let [kind, name, epoch] = res[..] else {
        return Err(bad);
    };
    let kind_ok = !kind.is_empty() && kind.bytes().all(|c| c.is_ascii_lowercase());
    let name_ok = !name.is_empty() && name.bytes().all(is_id_char);
    if !kind_ok || !name_ok || !digits(epoch) {
        return Err(bad);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_length_and_pattern() {
        assert!(validate_id(Field::CorrelationId, "a.B_9-z").is_ok());
        assert_eq!(validate_id(Field::CorrelationId, ""), Err(ValidationError::Missing(Field::CorrelationId)));
        let max = "x".repeat(MAX_ID_LEN);
        assert!(validate_id(Field::RecipientClientId, &max).is_ok());
        let over = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            validate_id(Field::RecipientClientId, &over),
            Err(ValidationError::TooLong { field: Field::RecipientClientId, max: 256, len: 257 })
        );
        for bad in ["a b", "a/b", "é", "a:b", "a\u{0}"] {
            assert_eq!(validate_id(Field::ClientId, bad), Err(ValidationError::BadPattern(Field::ClientId)), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_end_on_a_character_boundary() {
        assert_eq!(prefix_within("abc", 5), "abc");
        assert_eq!(prefix_within("abc", 2), "ab");
        assert_eq!(prefix_within("aé", 2), "a", "é is two bytes");
        assert_eq!(prefix_within("é", 0), "");
    }

    #[test]
    fn client_id_rejects_reserved_prefix_in_any_case() {
        assert!(validate_client_id("viewer-1").is_ok());
        assert!(validate_client_id("AWS").is_ok());
        for bad in ["AWS_x", "aws_x", "Aws_"] {
            assert_eq!(validate_client_id(bad), Err(ValidationError::ReservedPrefix));
        }
    }

    #[test]
    fn payload_is_padded_base64_up_to_the_limit() {
        assert!(validate_payload("eyJhIjoxfQ==").is_ok());
        assert_eq!(validate_payload(""), Err(ValidationError::Missing(Field::MessagePayload)));
        assert_eq!(validate_payload("abc"), Err(ValidationError::PayloadNotBase64));
        assert_eq!(validate_payload("ab!d"), Err(ValidationError::PayloadNotBase64));
        assert_eq!(validate_payload("a==="), Err(ValidationError::PayloadNotBase64));
        assert!(validate_payload(&"A".repeat(MAX_PAYLOAD_LEN)).is_ok());
        assert!(matches!(
            validate_payload(&"A".repeat(MAX_PAYLOAD_LEN + 4)),
            Err(ValidationError::TooLong { len: 10_004, .. })
        ));
    }

    #[test]
    fn channel_arn_shapes() {
        for ok in [
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo-channel/1234567890123",
            "arn:aws-cn:kinesisvideo:cn-north-1:1:channel/a.b_c/0",
        ] {
            assert!(validate_channel_arn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "arn:aws:s3:us-west-2:1:channel/x/1",
            "arn:aws:kinesisvideo:us-west-2:12a:channel/x/1",
            "arn:aws:kinesisvideo:us-west-2:1:channel/x",
            "arn:aws:kinesisvideo:us-west-2:1:channel/x y/1",
            "arn:aws:kinesisvideo:US:1:channel/x/1",
            "arn:aws:kinesisvideo:us-west-2:1:channel/x/1/2",
        ] {
            assert_eq!(validate_channel_arn(bad), Err(ValidationError::BadPattern(Field::ChannelArn)), "{bad}");
        }
        assert_eq!(validate_channel_arn(""), Err(ValidationError::Missing(Field::ChannelArn)));
    }
}
