//! Reads the few fields of a JSON object that a parser keeps, straight from
//! the text: no `serde_json::Value` tree is built, so what is allocated is
//! what is kept, whatever else a frame carries.
//!
//! - Keys match their names ignoring ASCII case, so that the camelCase keys of
//!   the JS SDK and the PascalCase keys of the C SDK both match (spec §3.1,
//!   §10.6), as [`super::get_ci`] does over a parsed object.
//! - When several keys match one name, the value kept is the one `get_ci`
//!   would find in the `serde_json::Map` of the object: that of the exact
//!   spelling when there is one, else that of the spelling first in byte
//!   order (`MessageType` before `messagetype`); of repeated identical keys,
//!   the last (see [`Slot::read`]).
//! - Every other value is consumed by [`Skip`], which allocates nothing yet
//!   rejects what parsing into a `Value` rejects: nesting deeper than
//!   serde_json's limit of 128, numbers out of range, invalid escapes. (serde
//!   `IgnoredAny` is not used because serde_json skips it with none of these
//!   checks, so a frame that is not JSON today would become a message.)
//! - A string is borrowed from the text unless it holds an escape, and is cut
//!   to what the parser keeps of it ([`Keep`]) before anything is copied.

use super::validate::{MAX_ID_LEN, prefix_within};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// What a parser keeps of a string value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keep {
    /// All of it.
    Whole,
    /// An identifier: all of it when at most [`MAX_ID_LEN`] bytes long, else
    /// only its length ([`Seen::LongId`]).
    Id,
    /// At most this many bytes, cut at a character boundary.
    Cut(usize),
    /// Nothing: only the kind of the value matters ([`Seen::Other`]).
    Nothing,
}

impl Keep {
    /// What is kept of `text`; `own` turns the kept part into a `Cow`
    /// (borrowed from the frame, or copied from serde_json's scratch buffer).
    fn string<'a, 'de, O>(self, text: &'a str, own: impl FnOnce(&'a str) -> Cow<'de, str>) -> Seen<'de, O> {
        match self {
            Keep::Whole => Seen::Text(own(text)),
            Keep::Cut(max) => Seen::Text(own(prefix_within(text, max))),
            Keep::Id if text.len() > MAX_ID_LEN => Seen::LongId(text.len()),
            Keep::Id => Seen::Text(own(text)),
            Keep::Nothing => Seen::Other,
        }
    }
}

/// The value of a key a parser reads, reduced to what it keeps; `O` is what
/// an object value is read into (see [`ReadObject`]).
pub(super) enum Seen<'de, O = ()> {
    /// A string, as far as [`Keep`] keeps it.
    Text(Cow<'de, str>),
    /// A string longer than [`MAX_ID_LEN`] bytes where an identifier is read:
    /// its length in bytes.
    LongId(usize),
    /// A number, as serde_json parsed it.
    Number(Number),
    Bool(bool),
    Null,
    /// An array, or a string of which nothing is kept.
    Other,
    /// An object, as read by the [`ReadObject`] of the key.
    Object(O),
}

impl<O> Seen<'_, O> {
    /// A string, or a number as its decimal text (as serde_json writes it);
    /// `None` for any other value.
    pub(super) fn text(self) -> Option<String> {
        match self {
            Seen::Text(text) => Some(text.into_owned()),
            Seen::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }
}

/// Reads an object value: the frame itself, or an object inside it.
pub(super) trait ReadObject<'de> {
    type Output;

    /// Reads all the entries of `map`.
    fn read<A: MapAccess<'de>>(self, map: A) -> Result<Self::Output, A::Error>;
}

/// Skips an object value where a string, a number or a flag is read.
pub(super) struct SkipObject;

impl<'de> ReadObject<'de> for SkipObject {
    type Output = ();

    fn read<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(())
    }
}

/// Reads `text` as one JSON object with `reader`; any other JSON, or text
/// that is not JSON, is an error.
pub(super) fn read_object<'de, O: ReadObject<'de>>(text: &'de str, reader: O) -> serde_json::Result<O::Output> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let output = deserializer.deserialize_map(ObjectVisitor(reader))?;
    deserializer.end()?;
    Ok(output)
}

/// Accepts only an object, which its [`ReadObject`] reads.
struct ObjectVisitor<O>(O);

impl<'de, O: ReadObject<'de>> Visitor<'de> for ObjectVisitor<O> {
    type Value = O::Output;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<O::Output, A::Error> {
        self.0.read(map)
    }
}

/// Reads the value of a matched key: strings as `.0` keeps them, objects
/// with the [`ReadObject`] `.1`, arrays skipped.
pub(super) struct ValueSeed<O>(pub(super) Keep, pub(super) O);

impl<'de, O: ReadObject<'de>> DeserializeSeed<'de> for ValueSeed<O> {
    type Value = Seen<'de, O::Output>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, O: ReadObject<'de>> Visitor<'de> for ValueSeed<O> {
    type Value = Seen<'de, O::Output>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Seen::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Seen::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Seen::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        // As a `Value` reads it: a float without a JSON form is null (serde_json
        // never yields one; it rejects numbers out of range).
        Ok(Number::from_f64(value).map_or(Seen::Null, Seen::Number))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Seen::Null)
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(self.0.string(value, Cow::Borrowed))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(self.0.string(value, |kept| Cow::Owned(kept.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Seen::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.1.read(map).map(Seen::Object)
    }
}

/// The key names a parser reads, each with the parser's tag for it.
pub(super) type Names<K> = [(&'static str, K)];

/// A key that matches one of the [`Names`].
pub(super) struct Found<'de, K> {
    /// The tag of the name it matches.
    pub(super) key: K,
    name: &'static str,
    /// The key as spelled in the frame.
    spelling: Cow<'de, str>,
}

/// The next key of `map` that matches one of `names` ignoring ASCII case; the
/// entries before it are skipped (and checked), nothing of them copied.
/// `None` at the end of the object. The caller then reads the key's value.
pub(super) fn next_found<'de, A: MapAccess<'de>, K: Copy>(
    map: &mut A,
    names: &'static Names<K>,
) -> Result<Option<Found<'de, K>>, A::Error> {
    while let Some(key) = map.next_key_seed(KeySeed(names))? {
        match key {
            Some(found) => return Ok(Some(found)),
            None => {
                map.next_value::<Skip>()?;
            }
        }
    }
    Ok(None)
}

/// Reads a key: `Some` when it matches one of the names, else `None`.
struct KeySeed<K: 'static>(&'static Names<K>);

impl<K: Copy> KeySeed<K> {
    fn find<'de>(&self, key: &str, spelling: impl FnOnce() -> Cow<'de, str>) -> Option<Found<'de, K>> {
        let &(name, tag) = self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(key))?;
        Some(Found { key: tag, name, spelling: spelling() })
    }
}

impl<'de, K: Copy> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Option<Found<'de, K>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: Copy> Visitor<'de> for KeySeed<K> {
    type Value = Option<Found<'de, K>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(self.find(key, || Cow::Borrowed(key)))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.find(key, || Cow::Owned(key.to_owned())))
    }
}

/// The value kept for one name, and the spelling of the key it came under.
pub(super) struct Slot<'de, T>(Option<(Cow<'de, str>, T)>);

impl<T> Default for Slot<'_, T> {
    fn default() -> Self {
        Slot(None)
    }
}

impl<'de, T> Slot<'de, T> {
    /// Reads the value of `found` with `seed` when it is to replace the value
    /// held, else skips it. It replaces it when spelled exactly as the name,
    /// or when neither is and its spelling is not after the held one in byte
    /// order: the choice of `get_ci` over a sorted `serde_json::Map`, in
    /// which a repeated key holds its last value.
    pub(super) fn read<A, K, S>(&mut self, map: &mut A, found: Found<'de, K>, seed: S) -> Result<(), A::Error>
    where
        A: MapAccess<'de>,
        S: DeserializeSeed<'de, Value = T>,
    {
        let replaces = match &self.0 {
            None => true,
            Some((held, _)) => found.spelling == found.name || (held != found.name && found.spelling <= *held),
        };
        if replaces {
            self.0 = Some((found.spelling, map.next_value_seed(seed)?));
        } else {
            map.next_value::<Skip>()?;
        }
        Ok(())
    }

    /// The value kept, if any key matched the name.
    pub(super) fn into_value(self) -> Option<T> {
        self.0.map(|(_, value)| value)
    }
}

/// Consumes one JSON value, keeping and allocating nothing of it, yet
/// rejecting what parsing it into a `serde_json::Value` would reject (the
/// module documentation says why not serde's `IgnoredAny`). Strings with
/// escapes go through serde_json's scratch buffer, reused from one to the next.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}
