//! A message's metadata: the `X-Relayq-Meta-KEY: VALUE` fields intake took
//! out of its header section (docs/idempotency.md), kept with the envelope
//! and echoed in every event of the message as `"meta": {"key": "value"}`.
//!
//! Keys are unique and lower-case; the order is the header's. In JSON the
//! metadata is an object (in that order), in the binary record a tagged
//! field ([`super::codec`]).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta(Vec<(String, String)>);

impl Meta {
    /// Metadata as intake found it (keys already unique and lower-cased).
    pub fn new(fields: Vec<(String, String)>) -> Meta {
        Meta(fields)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `(key, value)` pairs in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(known, _)| *known == key)
            .map(|(_, value)| value)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Meta, D::Error> {
        struct MetaVisitor;

        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Meta;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object of metadata strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let mut fields: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    match fields.iter_mut().find(|(known, _)| *known == key) {
                        Some(field) => field.1 = value,
                        None => fields.push((key, value)),
                    }
                }
                Ok(Meta(fields))
            }
        }

        deserializer.deserialize_map(MetaVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_an_object_in_header_order() {
        let meta = Meta::new(vec![
            ("zeta".into(), "1".into()),
            ("alpha".into(), "two words".into()),
        ]);
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(json, r#"{"zeta":"1","alpha":"two words"}"#);
        assert_eq!(serde_json::from_str::<Meta>(&json).unwrap(), meta);
        assert_eq!(meta.get("alpha"), Some("two words"));
        assert_eq!(meta.get("beta"), None);
        assert_eq!(serde_json::to_string(&Meta::default()).unwrap(), "{}");
    }
}
