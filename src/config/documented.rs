//! Tests that the configuration parser, the annotated example
//! (`conf/relayq.toml`) and the reference (`docs/configuration.md`) name the
//! same keys, so a key added to one and not the others fails the tests.
//!
//! The parser's keys come from the raw structs themselves: a deserializer
//! that serde's derived code hands its field lists to ([`Tracer`]), so no
//! list of keys is kept by hand. The example's keys are read from the file
//! with its commented-out keys uncommented (it shows every key, many of them
//! commented because their default is "unset"). The reference's keys are the
//! rows of its tables whose first column is `key`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::raw::{self, RawConfig};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The example with every commented-out key and table header uncommented:
/// a line `# key = value`, `# [table]` or `# [[array]]`. Commentary inside
/// a commented-out block is written `# # …` and stays a comment.
fn uncommented_example() -> String {
    read("conf/relayq.toml")
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) || is_table_line(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key_line(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    })
}

fn is_table_line(line: &str) -> bool {
    let name = line
        .strip_prefix("[[")
        .and_then(|rest| rest.strip_suffix("]]"))
        .or_else(|| {
            line.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
        });
    name.is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'_' || byte == b'.')
    })
}

/// The keys of a parsed TOML document as dotted paths, arrays of tables
/// written `name[]` (`listener[].address`).
fn toml_keys(table: &toml::Table, prefix: &str, keys: &mut BTreeSet<String>) {
    for (name, value) in table {
        let path = join(prefix, name);
        match value {
            toml::Value::Table(inner) => toml_keys(inner, &path, keys),
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
            {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        toml_keys(inner, &format!("{path}[]"), keys);
                    }
                }
            }
            _ => {
                keys.insert(path);
            }
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn example_keys() -> BTreeSet<String> {
    let text = uncommented_example();
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|error| panic!("conf/relayq.toml, uncommented, is not TOML: {error}"));
    let mut keys = BTreeSet::new();
    toml_keys(&table, "", &mut keys);
    keys
}

/// The keys the reference documents: the first cell of each row of a table
/// whose header's first cell is `key`, written as one code span.
fn reference_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    let mut fenced = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if first == "key" {
            in_key_table = true;
        } else if in_key_table && !first.starts_with("---") {
            let key = first
                .strip_prefix('`')
                .and_then(|rest| rest.strip_suffix('`'))
                .unwrap_or_else(|| {
                    panic!("docs/configuration.md: a key row without a `key`: {line}")
                });
            assert!(
                keys.insert(key.to_owned()),
                "docs/configuration.md documents {key} twice"
            );
        }
    }
    keys
}

/// Every key path the raw configuration structs accept.
fn parser_keys() -> BTreeSet<String> {
    let found = RefCell::new(Found::default());
    let mut explored = BTreeSet::new();
    let mut frontier: Vec<Vec<&'static str>> = vec![Vec::new()];
    while let Some(route) = frontier.pop() {
        if !explored.insert(route.clone()) {
            continue;
        }
        let tracer = Tracer {
            path: String::new(),
            route: &route,
            depth: 0,
            found: &found,
        };
        // The walk ends with an error at the first value that is not a
        // table; what it found on the way is all it is for.
        let _ = RawConfig::deserialize(tracer);
        frontier.append(&mut found.borrow_mut().routes);
    }
    let found = found.into_inner();
    found
        .fields
        .into_iter()
        .filter(|path| !found.tables.contains(path))
        .collect()
}

#[derive(Default)]
struct Found {
    /// Every field of every struct reached, as a key path.
    fields: BTreeSet<String>,
    /// Paths whose value is a struct (a table), or an array of them.
    tables: BTreeSet<String>,
    /// Routes of field names still to walk.
    routes: Vec<Vec<&'static str>>,
}

/// A deserializer that walks one route of field names into the raw
/// structs. On the way it offers each struct only the route's next field;
/// at the struct where the route ends it records the struct's fields
/// (serde's derived code passes them to `deserialize_struct`), queues a
/// route to each, and offers none (every raw struct has defaults).
struct Tracer<'a> {
    path: String,
    route: &'a [&'static str],
    /// How much of `route` leads here.
    depth: usize,
    found: &'a RefCell<Found>,
}

#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Stop(message.to_string())
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: a value, not a table", self.path)))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_seq(OneElement(Some(Tracer {
            path: format!("{}[]", self.path),
            ..self
        })))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let Some(&next) = self.route.get(self.depth) else {
            let mut found = self.found.borrow_mut();
            found.tables.insert(self.path.clone());
            if let Some(array) = self.path.strip_suffix("[]") {
                found.tables.insert(array.to_owned());
            }
            for &field in fields {
                found.fields.insert(join(&self.path, field));
                let mut route = self.route.to_vec();
                route.push(field);
                found.routes.push(route);
            }
            return visitor.visit_map(OneField(None));
        };
        visitor.visit_map(OneField(Some((
            next,
            Tracer {
                path: join(&self.path, next),
                depth: self.depth + 1,
                ..self
            },
        ))))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// A sequence of one element: the struct (or value) an array holds.
struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}

/// A map of at most one entry: the route's next field and its value.
struct OneField<'a>(Option<(&'static str, Tracer<'a>)>);

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match &self.0 {
            Some((name, _)) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let (_, tracer) = self
            .0
            .take()
            .ok_or_else(|| Stop("a value without its key".into()))?;
        seed.deserialize(tracer)
    }
}

fn difference(left: &BTreeSet<String>, right: &BTreeSet<String>) -> Vec<String> {
    left.difference(right).cloned().collect()
}

#[test]
fn the_example_shows_every_key_the_parser_knows() {
    let parser = parser_keys();
    assert!(parser.contains("delivery.connect_timeout"), "{parser:?}");
    assert!(parser.contains("listener[].address"), "{parser:?}");
    assert!(parser.contains("destination[].match"), "{parser:?}");
    let example = example_keys();
    assert_eq!(
        difference(&parser, &example),
        Vec::<String>::new(),
        "keys the parser accepts that conf/relayq.toml does not show (add each, with \
         its default, commented out when the default is unset)"
    );
    assert_eq!(
        difference(&example, &parser),
        Vec::<String>::new(),
        "keys conf/relayq.toml shows that the parser does not know"
    );
}

#[test]
fn every_key_of_the_example_is_accepted_by_the_parser() {
    let text = uncommented_example();
    if let Err(error) = raw::parse(&text) {
        let error = error.in_file(Path::new("conf/relayq.toml (every key uncommented)"));
        panic!("{error}");
    }
}

#[test]
fn the_reference_documents_exactly_the_keys_of_the_example() {
    let documented = reference_keys(&read("docs/configuration.md"));
    let example = example_keys();
    assert_eq!(
        difference(&example, &documented),
        Vec::<String>::new(),
        "keys of conf/relayq.toml that docs/configuration.md does not document \
         (add a row to its table for the section)"
    );
    assert_eq!(
        difference(&documented, &example),
        Vec::<String>::new(),
        "keys docs/configuration.md documents that conf/relayq.toml does not show"
    );
}

#[test]
fn reference_rows_are_read_only_from_key_tables() {
    let text = "| key | type |\n| --- | --- |\n| `a.b` | x |\n| `c[].d` | y |\n\n\
                | reply | meaning |\n| --- | --- |\n| `550` | no |\n\
                ```\n| key |\n| `e` |\n```\n";
    let keys: Vec<String> = reference_keys(text).into_iter().collect();
    assert_eq!(keys, ["a.b", "c[].d"]);
}
