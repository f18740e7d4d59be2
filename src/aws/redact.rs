//! Removing secrets from text a server sent back (error bodies, headers) before
//! it reaches an error or a log line. A server may echo a secret in another
//! form than the one sent: URL-encoded (upper- or lower-case hex, `+` for a
//! space, or twice), JSON-escaped, or base64. [`Redactor::scrub`] finds every
//! secret in any mix of those forms. Pure functions, no I/O.

use base64::Engine;

/// What replaces a secret.
pub(crate) const REDACTED: &str = "** redacted **";

/// Secrets shorter than this are left alone (they would match ordinary text).
const MIN_SECRET_LEN: usize = 4;

/// The secrets of one request, to remove from what came back. Owned by the
/// caller for the time of one scrub; plain data, `Send + Sync`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    needles: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor of `secrets` (empty or very short ones are skipped), and of
    /// their base64 forms.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut redactor = Redactor::default();
        for secret in secrets {
            redactor.add(secret);
        }
        redactor
    }

    /// Adds `secret` and its base64 form (without padding, so that padded and
    /// unpadded echoes both match).
    pub fn add(&mut self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let base64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret);
        self.needles.push(secret.as_bytes().to_vec());
        self.needles.push(base64.into_bytes());
    }

    /// Adds the secrets of `other`.
    pub fn extend(&mut self, other: Redactor) {
        self.needles.extend(other.needles);
    }

    /// `text` with every secret, in any of the forms above, replaced by
    /// [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            text = replace_encoded(&text, needle);
        }
        text
    }
}

/// `text` with every occurrence of `needle` replaced, each byte of the needle
/// matching itself or one of its encodings.
fn replace_encoded(text: &str, needle: &[u8]) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut at = 0;
    let mut copied = 0;
    while at < bytes.len() {
        match match_at(bytes, at, needle) {
            Some(end) => {
                out.extend_from_slice(&bytes[copied..at]);
                out.extend_from_slice(REDACTED.as_bytes());
                at = end;
                copied = end;
            }
            None => at += 1,
        }
    }
    if copied == 0 {
        return text.to_owned();
    }
    out.extend_from_slice(&bytes[copied..]);
    // A match starts and ends on ASCII or on whole UTF-8 sequences of the
    // needle, so the result stays valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where a match of `needle` starting at `start` ends, if there is one.
fn match_at(text: &[u8], start: usize, needle: &[u8]) -> Option<usize> {
    let mut at = start;
    for &byte in needle {
        at += encoded_len(&text[at..], byte)?;
    }
    Some(at)
}

/// How many bytes at the start of `text` encode `byte`: the byte itself, `%XX`
/// (either case), `%25XX` (encoded twice), `+` for a space, `\/` for a slash,
/// `\u00XX` (a JSON escape).
fn encoded_len(text: &[u8], byte: u8) -> Option<usize> {
    let hex_is = |digits: &[u8]| {
        digits.len() >= 2
            && std::str::from_utf8(&digits[..2]).ok().and_then(|d| u8::from_str_radix(d, 16).ok()) == Some(byte)
    };
    match text {
        [first, ..] if *first == byte => Some(1),
        [b'%', b'2', b'5', rest @ ..] if hex_is(rest) => Some(5),
        [b'%', rest @ ..] if hex_is(rest) => Some(3),
        [b'+', ..] if byte == b' ' => Some(1),
        [b'\\', b'/', ..] if byte == b'/' => Some(2),
        [b'\\', b'u', b'0', b'0', rest @ ..] if hex_is(rest) => Some(6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "IQoJb3JpZ2luX2VjE/a+b=c";

    #[test]
    fn every_encoding_of_a_secret_is_removed() {
        let redactor = Redactor::new([TOKEN]);
        let forms = [
            TOKEN.to_owned(),
            "IQoJb3JpZ2luX2VjE%2Fa%2Bb%3Dc".to_owned(),
            "IQoJb3JpZ2luX2VjE%2fa%2bb%3dc".to_owned(),
            "IQoJb3JpZ2luX2VjE%252Fa%252Bb%253Dc".to_owned(),
            "IQoJb3JpZ2luX2VjE\\/a+b\\u003dc".to_owned(),
            "%49QoJb3JpZ2luX2VjE/a+b=c".to_owned(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(TOKEN),
        ];
        for form in forms {
            let text = format!("before {form} after");
            assert_eq!(redactor.scrub(&text), format!("before {REDACTED} after"), "{form}");
        }
        let padded = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        assert!(redactor.scrub(&padded).starts_with(REDACTED), "{padded}");
    }

    #[test]
    fn a_space_may_come_back_as_a_plus() {
        let redactor = Redactor::new(["two words"]);
        assert_eq!(redactor.scrub("x=two+words&y"), format!("x={REDACTED}&y"));
    }

    #[test]
    fn other_text_is_kept_as_it_is() {
        let redactor = Redactor::new([TOKEN, "", "abc"]);
        let text = "Signature expired: IQoJb3Jp is not the token; é ok; abc stays (too short to redact)";
        assert_eq!(redactor.scrub(text), text);
        let twice = format!("{TOKEN}{TOKEN}");
        assert_eq!(redactor.scrub(&twice), format!("{REDACTED}{REDACTED}"));
        assert_eq!(Redactor::new(["ünïcode-sëcret"]).scrub("a ünïcode-sëcret b"), format!("a {REDACTED} b"));
        assert_eq!(Redactor::new(["ünïcode-sëcret"]).scrub("a %C3%BCnïcode-sëcret b"), format!("a {REDACTED} b"));
    }
}
