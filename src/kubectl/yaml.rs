//! Manifests read the way kubectl reads them, and written so that kubectl reads them back the same.
//! The one YAML reader of warmpool: the configuration file goes through it too ([`read_typed`]),
//! so that `yes`, `0400` or a merge key mean the same in both (up to the corners listed below,
//! where serde-saphyr, which deserializes the configuration, reads differently from kubectl).
//!
//! kubectl turns YAML into JSON with sigs.k8s.io/yaml, that is go-yaml v2, so:
//! - plain (unquoted, untagged) scalars resolve by YAML 1.1 rules: `0400` is the octal 256,
//!   `0x1F` 31, `1_000` 1000, `yes`/`on`/`y` are `true`, `no`/`off`/`n` are `false`, `~` is
//!   null, `1e3` a number; quoted scalars and block scalars are always strings;
//! - explicit tags (`!!str 0400`, `!!int "0400"`) decide as go-yaml decides them;
//! - merge keys (`<<: *base`, `<<: [*a, *b]`) are merged, in go-yaml v2's order: entries are
//!   applied as they come, so a key written after `<<` wins over the merged one;
//! - keys that resolve to numbers or booleans become strings (`on:` is the key `"true"`);
//! - empty documents (a trailing `---`, comments only, `null`) are skipped;
//! - a UTF-8 byte-order mark is dropped, UTF-16 with a byte-order mark is decoded;
//! - input whose first character is `{` is a stream of JSON objects, read by serde_json.
//!
//! The YAML syntax itself is parsed by `granit_parser` (the parser behind serde-saphyr, which
//! kube already uses for kubeconfigs); this module composes its events into values and resolves
//! the scalars. Typed documents (the configuration) are deserialized by serde-saphyr itself, set
//! to the same YAML 1.1 reading, after this module has checked their syntax. Writing uses
//! serde-saphyr's serializer in its YAML 1.1-safe mode (strings like `yes` or `0400` are
//! quoted), and every document written is read back and compared, so output that a YAML 1.1
//! reader would read differently is never printed.
//!
//! Why not serde-saphyr's YAML 1.1 options: read into `serde_json::Value` with its most
//! kubectl-like settings (`legacy_octal_numbers`, `strict_booleans: false`,
//! `MergeKeyPolicy::Merge`, `DuplicateKeyPolicy::LastWins`, non-finite floats rejected),
//! serde-saphyr 2.2 reads the examples and JSON fixtures as this module does. It reads
//! these differently from kubectl, though:
//! - booleans in any case: `yEs`, `oN` are `true` (kubectl: strings);
//! - numbers as go-yaml v2 spells them stay strings: `0X1f`, `0O17`, `0B101`, `0b-101`,
//!   `1__0`, `1_`, `1_000.5` (kubectl: 31, 15, 5, -5, 10, 1, 1000.5);
//! - a decimal beyond `f64` is an error, `1e400` or the corpus's
//!   `controller-revision-hash: 8877e9053` (kubectl: the string);
//! - integral floats stay floats: `1e3`, `1.0`, `08` give `1000.0`, `1.0`, `8.0` (kubectl writes
//!   `1000`, `1`, `8`, which integer fields accept);
//! - keys keep their spelling: `on:`, `0400:`, `1e6:` (kubectl: `"true"`, `"256"`, `"1e+06"`),
//!   and `18446744073709551615:` is accepted (kubectl refuses it);
//! - tags: `!custom 0400` is 256 (kubectl: `"0400"`); `!!timestamp 2001-12-14`, a `!!binary`
//!   that is not UTF-8 and the key `!!int '12':` are errors (kubectl: a string, U+FFFD, `"12"`);
//!   `!!null x` is null (kubectl: an error);
//! - merge keys by the YAML spec, not go-yaml v2's order: in `{cpu: 9, <<: *base}` the 9 wins,
//!   of two `<<` entries the first wins (kubectl: the merged value, the last one), and `<<:`
//!   with no value merges nothing (kubectl: an error);
//! - a stream of JSON objects (`{"a": 1}` then `{"b": 2}`) is a syntax error, and UTF-16 is
//!   decoded only by its reader API, which reads a broken UTF-16 input instead of refusing it;
//! - errors name a line and column, but neither the document nor the path (`spec.x[1]`).
//!
//! The configuration, read by serde-saphyr itself ([`read_typed`]), follows the crate in these
//! corners.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine as _;
use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, ScanError};

/// At most this many values per document, aliases expanded (a guard against alias bombs).
const MAX_VALUES: usize = 1 << 21;
/// At most this many levels of nesting per document, aliases expanded.
const MAX_DEPTH: usize = 512;
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// One non-empty document of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based position in the stream; empty documents count too.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub value: Value,
}

/// Why the input cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not UTF-8 text (invalid byte at offset {offset}); save it as UTF-8")]
    NotUtf8 { offset: usize },
    #[error("starts with a UTF-16 byte-order mark but is not valid UTF-16; save it as UTF-8")]
    NotUtf16,
    #[error("document {document}, line {line} column {column}: {message}")]
    Syntax {
        document: usize,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("document {document}, line {line}: {problem}")]
    Value {
        document: usize,
        line: usize,
        problem: Problem,
    },
}

impl ReadError {
    /// The 1-based document the error is in, when it is in one.
    pub fn document(&self) -> Option<usize> {
        match self {
            ReadError::Syntax { document, .. } | ReadError::Value { document, .. } => {
                Some(*document)
            }
            ReadError::NotUtf8 { .. } | ReadError::NotUtf16 => None,
        }
    }
}

/// A well-formed YAML value that has no JSON form kubectl would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("`{value}` at {path} is not a valid {tag}; fix the value or drop the tag")]
    Tag {
        path: String,
        value: String,
        tag: String,
    },
    #[error("`{value}` at {path} is not a number JSON can hold (kubectl rejects it too); quote it")]
    NotJson { path: String, value: String },
    #[error("the key at {path} is {what}; keys must be strings, numbers or booleans (quote it)")]
    Key { path: String, what: String },
    #[error("the merge key `<<` at {path} needs a mapping or a list of mappings")]
    Merge { path: String },
    #[error("the `!!binary` value at {path} is not base64")]
    Binary { path: String },
    #[error(
        "aliases at {path} expand beyond {MAX_VALUES} values or {MAX_DEPTH} levels; \
         write the repeated part out"
    )]
    TooLarge { path: String },
    #[error("alias `*` at {path} refers to a node that contains it")]
    Recursive { path: String },
}

/// Reads every non-empty document of a manifest stream (YAML or JSON), as kubectl does.
pub fn read_documents(bytes: &[u8]) -> Result<Vec<Document>, ReadError> {
    let text = decode(bytes)?;
    if text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        // kubectl reads input that starts with `{` as JSON; YAML is the fallback for flow
        // mappings like `{kind: Pod}`, and the JSON error is the one to show if both fail.
        return read_json(&text).or_else(|json_error| read_yaml(&text).map_err(|_| json_error));
    }
    read_yaml(&text)
}

/// Why a YAML document is not a `T`: where (a dotted path, empty for the document itself or a
/// syntax error) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedError {
    pub path: String,
    pub message: String,
}

/// serde-saphyr's options for typed documents (the configuration): YAML 1.1 scalars as kubectl
/// reads them in manifests (`yes`/`on` booleans, `0400` octal, merge keys), duplicate keys
/// refused, and one-line errors (no source snippet).
fn typed_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.strict_booleans = false;
    options.with_snippet = false;
    options
}

/// One YAML document deserialized into a `T` by serde-saphyr, with the YAML 1.1 reading of
/// [`read_documents`]; `None` for an empty document. Errors name the path of the offending
/// value.
pub fn read_typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<Option<T>, TypedError> {
    // Syntax first, by the manifest reader: its errors have no path to name, and a stream of
    // several documents is not one configuration.
    let whole = |message: String| TypedError {
        path: String::new(),
        message,
    };
    let syntax = |e: ReadError| match e {
        ReadError::Syntax {
            line,
            column,
            message,
            ..
        } => whole(format!("line {line} column {column}: {message}")),
        other => whole(other.to_string()),
    };
    match read_yaml(text).map_err(syntax)?.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(whole(format!(
                "{n} YAML documents where one is expected (remove the `---` lines between keys)"
            )));
        }
    }
    // The path of a failure is kept aside: the error itself must go back through serde-saphyr
    // (which adds the line and column) rather than end the document early.
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, typed_options(), |de| {
        serde_path_to_error::deserialize::<_, Option<T>>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| TypedError {
        path,
        message: one_line(&e.to_string()),
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Equal as Kubernetes sees the values: numbers compare by value (`1.0` is `1`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Why a value cannot be written as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error: cannot write the document as YAML that reads back the same ({0})")]
pub struct WriteError(String);

/// One document as block YAML that a YAML 1.1 reader (kubectl) reads back as `value`.
pub fn to_yaml(value: &Value) -> Result<String, WriteError> {
    let mut careful = serde_saphyr::SerializerOptions::default();
    careful.quote_all = true;
    careful.prefer_block_scalars = false;
    let mut last = String::from("no attempt");
    for options in [serde_saphyr::SerializerOptions::default(), careful] {
        match serde_saphyr::to_string_with_options(value, options) {
            Ok(text) => match read_yaml(&text) {
                Ok(docs) if docs.len() == 1 && same(&docs[0].value, value) => return Ok(text),
                Ok(_) => last = "it reads back differently".to_owned(),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(WriteError(last))
}

/// A YAML stream: the documents separated by `---` lines.
pub fn to_yaml_stream<'a>(
    values: impl IntoIterator<Item = &'a Value>,
) -> Result<String, WriteError> {
    let mut out = String::new();
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(value)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, ReadError> {
    fn utf8(b: &[u8]) -> Result<&str, ReadError> {
        std::str::from_utf8(b).map_err(|e| ReadError::NotUtf8 {
            offset: e.valid_up_to(),
        })
    }
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return utf8(rest).map(Cow::Borrowed).map_err(|e| match e {
            ReadError::NotUtf8 { offset } => ReadError::NotUtf8 { offset: offset + 3 },
            other => other,
        });
    }
    let utf16 = |rest: &[u8], unit: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err(ReadError::NotUtf16);
        }
        let units: Vec<u16> = rest.chunks_exact(2).map(|c| unit([c[0], c[1]])).collect();
        String::from_utf16(&units)
            .map(Cow::Owned)
            .map_err(|_| ReadError::NotUtf16)
    };
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes);
    }
    utf8(bytes).map(Cow::Borrowed)
}

fn read_json(text: &str) -> Result<Vec<Document>, ReadError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut docs = Vec::new();
    let mut index = 0;
    loop {
        let before = stream.byte_offset();
        let Some(next) = stream.next() else {
            return Ok(docs);
        };
        index += 1;
        match next {
            Ok(Value::Null) => {}
            Ok(value) => {
                let start = text[before..]
                    .find(|c: char| !c.is_ascii_whitespace())
                    .map_or(before, |i| before + i);
                let line = 1 + text[..start].matches('\n').count();
                docs.push(Document { index, line, value });
            }
            Err(e) => {
                let full = e.to_string();
                let message = full
                    .rsplit_once(" at line ")
                    .map_or(full.as_str(), |(m, _)| m);
                return Err(ReadError::Syntax {
                    document: index,
                    line: e.line(),
                    column: e.column(),
                    message: format!("invalid JSON: {message}"),
                });
            }
        }
    }
}

#[derive(Debug)]
struct Node {
    line: usize,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Scalar {
        text: String,
        tag: ScalarTag,
    },
    Seq(Vec<Rc<Node>>),
    Map(Vec<(Rc<Node>, Rc<Node>)>),
    /// An alias to a node that was not complete when the alias appeared.
    Recursive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScalarTag {
    /// Plain and untagged: resolved by the YAML 1.1 rules.
    Plain,
    /// Quoted or block, untagged: a string.
    Quoted,
    /// `!!name`, a tag of the YAML type repository.
    Core(String),
    /// Any other tag, `!` included: a string, as go-yaml reads it.
    Other,
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Rc<Node>>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Rc<Node>, Rc<Node>)>,
        key: Option<Rc<Node>>,
    },
}

/// Builds one document's tree from parser events; aliases share the anchored node.
#[derive(Default)]
struct Composer {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Rc<Node>>,
    root: Option<Rc<Node>>,
}

impl Composer {
    fn add(&mut self, node: Rc<Node>, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn close(&mut self) {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq {
                line,
                anchor,
                items,
            }) => (
                Node {
                    line,
                    kind: NodeKind::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                line,
                anchor,
                entries,
                ..
            }) => (
                Node {
                    line,
                    kind: NodeKind::Map(entries),
                },
                anchor,
            ),
            None => return,
        };
        self.add(Rc::new(node), anchor);
    }

    fn alias(&mut self, id: usize, line: usize) {
        let node = self.anchors.get(&id).cloned().unwrap_or_else(|| {
            Rc::new(Node {
                line,
                kind: NodeKind::Recursive,
            })
        });
        self.add(node, 0);
    }
}

fn scalar_tag(style: ScalarStyle, tag: Option<&serde_saphyr::granit_parser::Tag>) -> ScalarTag {
    match tag {
        None if style == ScalarStyle::Plain => ScalarTag::Plain,
        None => ScalarTag::Quoted,
        Some(tag) => match tag.suffix_in_namespace(CORE_TAG_PREFIX) {
            Some(name) if !name.is_empty() => ScalarTag::Core(name.into_owned()),
            _ => ScalarTag::Other,
        },
    }
}

fn syntax_error(document: usize, e: &ScanError) -> ReadError {
    ReadError::Syntax {
        document,
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().replace('\n', "; "),
    }
}

fn read_yaml(text: &str) -> Result<Vec<Document>, ReadError> {
    let mut options = Options::default();
    options.emit_comments = false;
    let mut docs = Vec::new();
    let mut index = 0;
    let mut in_document = false;
    let mut start_line = 1;
    let mut composer = Composer::default();
    for event in Parser::new_from_str_with_options(text, options) {
        let (event, span) =
            event.map_err(|e| syntax_error(if in_document { index } else { index + 1 }, &e))?;
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => {
                index += 1;
                in_document = true;
                start_line = line;
                composer = Composer::default();
            }
            Event::DocumentEnd => {
                in_document = false;
                if let Some(root) = composer.root.take() {
                    let mut resolver = Resolver {
                        budget: MAX_VALUES,
                        path: Vec::new(),
                    };
                    let value =
                        resolver
                            .value(&root)
                            .map_err(|(line, problem)| ReadError::Value {
                                document: index,
                                line,
                                problem,
                            })?;
                    if !value.is_null() {
                        docs.push(Document {
                            index,
                            line: start_line,
                            value,
                        });
                    }
                }
            }
            Event::Alias(id) => composer.alias(id, line),
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node {
                    line,
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        tag: scalar_tag(style, tag.as_deref()),
                    },
                };
                composer.add(Rc::new(node), anchor);
            }
            Event::SequenceStart(_, anchor, _) => composer.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(_, anchor, _) => composer.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => composer.close(),
            // Stream start and end; comments and anchor names, which are not emitted with these
            // options.
            _ => {}
        }
    }
    Ok(docs)
}

/// A scalar after resolution, before it becomes a JSON value or a key.
#[derive(Debug, Clone, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

/// What go-yaml v2 resolves a plain scalar to, the string case carrying no text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str,
}

/// go-yaml v2's `resolve("", s)`: the YAML 1.1 type of a plain, untagged scalar.
pub(crate) fn resolve_plain(s: &str) -> Plain {
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return Plain::Str,
    };
    if let Some(known) = known_plain(s) {
        return known;
    }
    match hint {
        b'.' => go_parse_float(s).map_or(Plain::Str, Plain::Float),
        b'D' | b'S' => plain_number(s),
        _ => Plain::Str,
    }
}

/// go-yaml v2's table of words.
fn known_plain(s: &str) -> Option<Plain> {
    Some(match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Plain::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Plain::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => Plain::Null,
        ".nan" | ".NaN" | ".NAN" => Plain::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Plain::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Plain::Float(f64::NEG_INFINITY),
        _ => return None,
    })
}

/// Integers (Go's `strconv.ParseInt(s, 0, 64)` after dropping every `_`: `0x`, `0o`, `0b`, and a
/// leading `0` for octal), then YAML-style floats, then go-yaml's `0b` fallbacks.
fn plain_number(s: &str) -> Plain {
    let plain: Cow<str> = if s.contains('_') {
        Cow::Owned(s.replace('_', ""))
    } else {
        Cow::Borrowed(s)
    };
    if let Some(i) = go_parse_int(&plain, 0) {
        return Plain::Int(i);
    }
    if let Some(u) = go_parse_uint(&plain, 0) {
        return Plain::Uint(u);
    }
    if yaml_style_float(&plain)
        && let Some(f) = go_parse_float(&plain)
    {
        return Plain::Float(f);
    }
    if let Some(rest) = plain.strip_prefix("0b") {
        if let Some(i) = go_parse_int(rest, 2) {
            return Plain::Int(i);
        }
        if let Some(u) = go_parse_uint(rest, 2) {
            return Plain::Uint(u);
        }
    } else if let Some(rest) = plain.strip_prefix("-0b")
        && let Some(i) = go_parse_int(&format!("-{rest}"), 2)
    {
        return Plain::Int(i);
    }
    Plain::Str
}

/// Go's `strconv.ParseUint(s, base, 64)` for base 0 (prefix decides) or 2..=36, no `_`.
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let (digits, base) = if base == 0 {
        if b[0] == b'0' {
            match b.get(1).map(|c| c | 0x20) {
                Some(b'b') if b.len() >= 3 => (&b[2..], 2),
                Some(b'o') if b.len() >= 3 => (&b[2..], 8),
                Some(b'x') if b.len() >= 3 => (&b[2..], 16),
                _ => (&b[1..], 8),
            }
        } else {
            (b, 10)
        }
    } else {
        (b, base)
    };
    let mut n: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            _ if (c | 0x20).is_ascii_lowercase() => u32::from((c | 0x20) - b'a') + 10,
            _ => return None,
        };
        if d >= base {
            return None;
        }
        n = n.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`, no `_`.
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(rest, base)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    fn digits(b: &[u8], i: &mut usize) -> usize {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    }
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(b, &mut i) == 0 {
            return false;
        }
    } else {
        if digits(b, &mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(b, &mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(b, &mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal spellings (the only ones that reach it here):
/// `_` between digits allowed, overflow is an error.
fn go_parse_float(s: &str) -> Option<f64> {
    let cleaned: Cow<str> = if s.contains('_') {
        if !go_underscore_ok(s) {
            return None;
        }
        Cow::Owned(s.replace('_', ""))
    } else {
        Cow::Borrowed(s)
    };
    if !decimal_float_syntax(&cleaned) {
        return None;
    }
    cleaned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// `[+-]? digits-with-at-most-one-dot ([eE][+-]?digits)?`, at least one mantissa digit.
fn decimal_float_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let (mut saw_digit, mut saw_dot) = (false, false);
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => saw_digit = true,
            b'.' if !saw_dot => saw_dot = true,
            _ => break,
        }
        i += 1;
    }
    if !saw_digit {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    i == b.len()
}

/// Go's `underscoreOK`: every `_` sits between digits (or after a base prefix).
fn go_underscore_ok(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1] | 0x20 == b'x';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && matches!(c | 0x20, b'a'..=b'f')) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// go-yaml v2's `!!timestamp` check, in outline: `YYYY-M-D`, optionally followed by a time.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// A float as the JSON number kubectl ends up with: Go writes integral floats without a
/// fraction (`1e3` is `1000`), and Kubernetes reads those back as integers.
fn float_json(f: f64) -> Option<Value> {
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let two_63 = -(i64::MIN as f64);
        if (-two_63..two_63).contains(&f) {
            return Some(Value::from(f as i64));
        }
        if (0.0..2.0 * two_63).contains(&f) {
            return Some(Value::from(f as u64));
        }
    }
    Number::from_f64(f).map(Value::Number)
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, which sigs.k8s.io/yaml uses for float keys.
fn go_format_g32(f: f64) -> String {
    let x = f as f32;
    if x.is_nan() {
        return ".nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    // Shortest round-trip digits, as Go's -1 precision.
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::from(if negative { "-" } else { "" });
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        ));
    } else if exp >= 0 {
        let int_len = usize::try_from(exp + 1).unwrap_or(0);
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(-exp - 1).unwrap_or(0),
        ));
        out.push_str(&digits);
    }
    out
}

enum Seg {
    Key(String),
    Index(usize),
}

struct Resolver {
    budget: usize,
    path: Vec<Seg>,
}

type Failure = (usize, Problem);

impl Resolver {
    fn path(&self) -> String {
        if self.path.is_empty() {
            return "the top".to_owned();
        }
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    fn spend(&mut self, node: &Node) -> Result<(), Failure> {
        if self.budget == 0 || self.path.len() > MAX_DEPTH {
            return Err((node.line, Problem::TooLarge { path: self.path() }));
        }
        self.budget -= 1;
        Ok(())
    }

    fn value(&mut self, node: &Node) -> Result<Value, Failure> {
        self.spend(node)?;
        match &node.kind {
            NodeKind::Scalar { text, tag } => {
                let resolved = self.scalar(text, tag).map_err(|p| (node.line, p))?;
                match resolved {
                    Resolved::Null => Ok(Value::Null),
                    Resolved::Bool(b) => Ok(Value::Bool(b)),
                    Resolved::Int(i) => Ok(Value::from(i)),
                    Resolved::Uint(u) => Ok(Value::from(u)),
                    Resolved::Float(f) => float_json(f).ok_or_else(|| {
                        let problem = Problem::NotJson {
                            path: self.path(),
                            value: text.clone(),
                        };
                        (node.line, problem)
                    }),
                    Resolved::Str(s) => Ok(Value::String(s)),
                }
            }
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    let v = self.value(item)?;
                    self.path.pop();
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            NodeKind::Map(entries) => {
                let mut out = Map::new();
                self.merge_into(entries, &mut out)?;
                Ok(Value::Object(out))
            }
            NodeKind::Recursive => Err((node.line, Problem::Recursive { path: self.path() })),
        }
    }

    /// go-yaml v2's mapping decode: entries in order, `<<` merges into the same map.
    fn merge_into(
        &mut self,
        entries: &[(Rc<Node>, Rc<Node>)],
        out: &mut Map<String, Value>,
    ) -> Result<(), Failure> {
        for (k, v) in entries {
            if is_merge_key(k) {
                self.merge(v, out)?;
                continue;
            }
            let key = self.key(k)?;
            self.path.push(Seg::Key(key.clone()));
            let value = self.value(v)?;
            self.path.pop();
            out.insert(key, value);
        }
        Ok(())
    }

    fn merge(&mut self, node: &Node, out: &mut Map<String, Value>) -> Result<(), Failure> {
        self.spend(node)?;
        let bad = |r: &Self| (node.line, Problem::Merge { path: r.path() });
        match &node.kind {
            NodeKind::Map(entries) => self.merge_into(entries, out),
            // Earlier mappings of the list take precedence: apply them last.
            NodeKind::Seq(items) => {
                for item in items.iter().rev() {
                    self.spend(item)?;
                    match &item.kind {
                        NodeKind::Map(entries) => self.merge_into(entries, out)?,
                        _ => return Err(bad(self)),
                    }
                }
                Ok(())
            }
            _ => Err(bad(self)),
        }
    }

    /// A key as sigs.k8s.io/yaml writes it into JSON.
    fn key(&mut self, node: &Node) -> Result<String, Failure> {
        self.spend(node)?;
        let what = match &node.kind {
            NodeKind::Scalar { text, tag } => {
                match self.scalar(text, tag).map_err(|p| (node.line, p))? {
                    Resolved::Str(s) => return Ok(s),
                    Resolved::Bool(b) => return Ok(b.to_string()),
                    Resolved::Int(i) => return Ok(i.to_string()),
                    Resolved::Float(f) => return Ok(go_format_g32(f)),
                    Resolved::Null => format!("null (`{text}`)"),
                    Resolved::Uint(_) => format!("an integer over 2^63 (`{text}`)"),
                }
            }
            NodeKind::Seq(_) => "a sequence".to_owned(),
            NodeKind::Map(_) => "a mapping".to_owned(),
            NodeKind::Recursive => {
                return Err((node.line, Problem::Recursive { path: self.path() }));
            }
        };
        Err((
            node.line,
            Problem::Key {
                path: self.path(),
                what,
            },
        ))
    }

    fn scalar(&self, text: &str, tag: &ScalarTag) -> Result<Resolved, Problem> {
        let name = match tag {
            ScalarTag::Plain => return Ok(from_plain(resolve_plain(text), text)),
            ScalarTag::Quoted | ScalarTag::Other => return Ok(Resolved::Str(text.to_owned())),
            ScalarTag::Core(name) => name.as_str(),
        };
        let plain = resolve_plain(text);
        let resolved = match (name, plain) {
            ("str", _) => Some(Resolved::Str(text.to_owned())),
            ("binary", _) => {
                let compact: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_allow_trailing_bits(true),
                );
                let bytes = engine
                    .decode(compact)
                    .map_err(|_| Problem::Binary { path: self.path() })?;
                Some(Resolved::Str(String::from_utf8_lossy(&bytes).into_owned()))
            }
            ("null", Plain::Null)
            | ("bool", Plain::Bool(_))
            | ("int", Plain::Int(_) | Plain::Uint(_))
            | ("float", Plain::Float(_)) => Some(from_plain(plain, text)),
            ("float", Plain::Int(i)) => Some(Resolved::Float(i as f64)),
            ("float", Plain::Uint(u)) => Some(Resolved::Float(u as f64)),
            ("timestamp", _) if looks_like_timestamp(text) => Some(Resolved::Str(text.to_owned())),
            ("null" | "bool" | "int" | "float" | "timestamp", _) => None,
            // Tags go-yaml does not resolve (`!!seq`, `!!merge`, ...) leave the text a string.
            _ => Some(Resolved::Str(text.to_owned())),
        };
        resolved.ok_or_else(|| Problem::Tag {
            path: self.path(),
            value: text.to_owned(),
            tag: format!("!!{name}"),
        })
    }
}

fn from_plain(plain: Plain, text: &str) -> Resolved {
    match plain {
        Plain::Null => Resolved::Null,
        Plain::Bool(b) => Resolved::Bool(b),
        Plain::Int(i) => Resolved::Int(i),
        Plain::Uint(u) => Resolved::Uint(u),
        Plain::Float(f) => Resolved::Float(f),
        Plain::Str => Resolved::Str(text.to_owned()),
    }
}

/// `<<`, plain and untagged or tagged `!!merge`.
fn is_merge_key(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::Scalar { text, tag }
        if text == "<<" && (*tag == ScalarTag::Plain || *tag == ScalarTag::Core("merge".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(yaml: &str) -> Value {
        let docs = read_documents(yaml.as_bytes()).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
        assert_eq!(docs.len(), 1, "{yaml:?}: {docs:?}");
        docs.into_iter()
            .next()
            .map(|d| d.value)
            .unwrap_or(Value::Null)
    }

    fn v(scalar: &str) -> Value {
        one(&format!("v: {scalar}\n"))["v"].clone()
    }

    #[test]
    fn yaml_1_1_integers() {
        for (text, want) in [
            ("0400", json!(256)),
            ("0644", json!(420)),
            ("0", json!(0)),
            ("00", json!(0)),
            ("-0400", json!(-256)),
            ("+0400", json!(256)),
            ("0o17", json!(15)),
            ("0O17", json!(15)),
            ("0x1F", json!(31)),
            ("0X1f", json!(31)),
            ("-0x1F", json!(-31)),
            ("0b101", json!(5)),
            ("-0b101", json!(-5)),
            ("0b-101", json!(-5)),
            ("1_000", json!(1000)),
            ("1__0", json!(10)),
            ("0_400", json!(256)),
            ("+12", json!(12)),
            ("1_", json!(1)),
            ("-12", json!(-12)),
            ("9223372036854775807", json!(9223372036854775807i64)),
            ("-9223372036854775808", json!(-9223372036854775808i64)),
            ("18446744073709551615", json!(18446744073709551615u64)),
        ] {
            assert_eq!(v(text), want, "{text}");
        }
    }

    #[test]
    fn yaml_1_1_floats_and_what_go_does_with_them() {
        for (text, want) in [
            ("1.5", json!(1.5)),
            (".5", json!(0.5)),
            ("-.5", json!(-0.5)),
            ("1e3", json!(1000)),
            ("1E+3", json!(1000)),
            ("2.", json!(2)),
            ("1.0", json!(1)),
            // Not valid octal: Go's ParseInt fails and the float pattern matches.
            ("08", json!(8)),
            ("09.5", json!(9.5)),
            ("1_000.5", json!(1000.5)),
            (".5_0", json!(0.5)),
            ("1e400", json!("1e400")),
            ("1e21", json!(1e21)),
            ("18446744073709551616", json!(18446744073709551616.0)),
        ] {
            assert_eq!(v(text), want, "{text}");
        }
    }

    #[test]
    fn yaml_1_1_booleans_nulls_and_strings() {
        for t in [
            "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE",
        ] {
            assert_eq!(v(t), json!(true), "{t}");
        }
        for f in [
            "n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE",
        ] {
            assert_eq!(v(f), json!(false), "{f}");
        }
        for n in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(v(n), Value::Null, "{n:?}");
        }
        for s in [
            "yEs",
            "nO",
            "oN",
            "tRue",
            "nUll",
            "0x",
            "0b",
            "0o",
            "0b2",
            "0xG",
            "_1",
            "1.2.3",
            "1e",
            "e3",
            "+",
            "-",
            ".",
            "..5",
            "._5",
            ".5_",
            "0x1p3",
            "inf",
            "nan",
            "1:30",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "12:30:00",
            "0777abc",
            "--1",
            "+-1",
            "-0b-1",
            "1,000",
            "v1",
            "-.inF",
            "<<",
            "=",
        ] {
            assert_eq!(resolve_plain(s), Plain::Str, "{s}");
            // `-` and `+` alone are not plain scalars in block context; the others are.
            if s.len() > 1 {
                assert_eq!(v(s), json!(s), "{s}");
            }
        }
    }

    #[test]
    fn quoted_and_block_scalars_stay_strings() {
        let doc = one(concat!(
            "a: \"0400\"\nb: '0400'\nc: \"yes\"\nd: 'on'\ne: |\n  0400\nf: >-\n  0400\n",
            "g: \"~\"\nh: ''\n"
        ));
        assert_eq!(
            doc,
            json!({"a": "0400", "b": "0400", "c": "yes", "d": "on", "e": "0400\n", "f": "0400",
                   "g": "~", "h": ""})
        );
    }

    #[test]
    fn explicit_tags_decide_as_go_yaml_does() {
        let doc = one(concat!(
            "a: !!str 0400\nb: !!int \"0400\"\nc: !!float 1\nd: !!bool \"yes\"\ne: !!null ''\n",
            "f: !!binary aGVsbG8=\ng: !custom 0400\nh: ! 12\ni: !!timestamp 2001-12-14\n",
            "j: !<tag:yaml.org,2002:int> '12'\nk: !!float \"1.5\"\n"
        ));
        assert_eq!(
            doc,
            json!({"a": "0400", "b": 256, "c": 1, "d": true, "e": null, "f": "hello",
                   "g": "0400", "h": "12", "i": "2001-12-14", "j": 12, "k": 1.5})
        );
        for (bad, what) in [
            ("v: !!int abc\n", "!!int"),
            ("v: !!int 1.5\n", "!!int"),
            ("v: !!bool 1\n", "!!bool"),
            ("v: !!null x\n", "!!null"),
            ("v: !!float yes\n", "!!float"),
            ("v: !!timestamp soon\n", "!!timestamp"),
        ] {
            let err = read_documents(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("at v"), "{bad:?}: {err}");
        }
        let err = read_documents(b"v: !!binary not*base64\n").unwrap_err();
        assert!(err.to_string().contains("!!binary"), "{err}");
    }

    #[test]
    fn values_json_cannot_hold_are_errors() {
        for s in [".inf", "-.Inf", "+.INF", ".nan", ".NaN"] {
            let err = read_documents(format!("spec:\n  x: [1, {s}]\n").as_bytes()).unwrap_err();
            assert_eq!(
                err,
                ReadError::Value {
                    document: 1,
                    line: 2,
                    problem: Problem::NotJson {
                        path: "spec.x[1]".to_owned(),
                        value: s.to_owned()
                    }
                },
                "{s}"
            );
        }
    }

    #[test]
    fn keys_become_strings_as_sigs_yaml_writes_them() {
        let doc = one(concat!(
            "on: a\nno: b\n0400: c\n1.5: d\n1e6: e\n100000.0: f\n0.0001: g\n0.00001: h\n",
            "\"0400\": i\n~x: j\n-0.0: k\n.inf: l\n"
        ));
        assert_eq!(
            doc,
            json!({"true": "a", "false": "b", "256": "c", "1.5": "d", "1e+06": "e",
                   "100000": "f", "0.0001": "g", "1e-05": "h", "0400": "i", "~x": "j",
                   "-0": "k", ".inf": "l"})
        );
        for (bad, what) in [
            ("~: a\n", "null"),
            ("? [a]\n: b\n", "a sequence"),
            ("? {a: 1}\n: b\n", "a mapping"),
            ("18446744073709551615: a\n", "2^63"),
        ] {
            let err = read_documents(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(what), "{bad:?}: {err}");
        }
    }

    #[test]
    fn go_float32_formatting_of_keys() {
        for (f, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1e38, "1e+38"),
            (123.456, "123.456"),
            (16777217.0, "1.6777216e+07"),
        ] {
            assert_eq!(go_format_g32(f), want, "{f}");
        }
    }

    #[test]
    fn merge_keys_follow_go_yaml_v2() {
        let doc = one(concat!(
            "base: &base {cpu: 1, memory: 1Gi}\n",
            "more: &more {memory: 2Gi, gpu: 1}\n",
            "one:\n  <<: *base\n  cpu: 2\n",
            "list:\n  <<: [*more, *base]\n",
            "inline:\n  <<: {a: 1}\n  b: 2\n",
            "before:\n  cpu: 9\n  <<: *base\n",
            "quoted:\n  \"<<\": *base\n",
            "tagged:\n  !!merge <<: *base\n",
            "nested:\n  <<: {<<: *base, x: 1}\n"
        ));
        assert_eq!(doc["one"], json!({"cpu": 2, "memory": "1Gi"}));
        assert_eq!(doc["list"], json!({"memory": "2Gi", "cpu": 1, "gpu": 1}));
        assert_eq!(doc["inline"], json!({"a": 1, "b": 2}));
        // go-yaml v2 applies entries in order: the merge after `cpu` overwrites it.
        assert_eq!(doc["before"], json!({"cpu": 1, "memory": "1Gi"}));
        assert_eq!(doc["quoted"], json!({"<<": {"cpu": 1, "memory": "1Gi"}}));
        assert_eq!(doc["tagged"], json!({"cpu": 1, "memory": "1Gi"}));
        assert_eq!(doc["nested"], json!({"cpu": 1, "memory": "1Gi", "x": 1}));
        for bad in ["a:\n  <<: 1\n", "a:\n  <<: [1]\n", "a:\n  <<:\n"] {
            let err = read_documents(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("merge key"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn anchors_aliases_and_their_limits() {
        let doc = one("a: &x [1, 2]\nb: *x\nc: &s 0400\nd: *s\n");
        assert_eq!(doc, json!({"a": [1, 2], "b": [1, 2], "c": 256, "d": 256}));
        // A billion laughs stops at the budget instead of eating the memory.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = read_documents(bomb.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("expand beyond"), "{err}");
        // So does a chain of aliases deeper than any manifest.
        let mut deep = String::from("a0: &a0 [x]\n");
        for i in 1..700 {
            deep.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let err = read_documents(deep.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("expand beyond"), "{err}");
        let err = read_documents(b"a: &x [*x]\n").unwrap_err().to_string();
        assert!(
            err.contains("contains it") || err.contains("line 1"),
            "{err}"
        );
        let err = read_documents(b"a: *nowhere\n").unwrap_err().to_string();
        assert!(err.contains("document 1, line 1"), "{err}");
    }

    #[test]
    fn documents_empty_ones_skipped_and_counted() {
        let docs = read_documents(
            b"# header\n---\na: 1\n---\n# only a comment\n---\n---\nb: 2\n--- ~\n---\nc: 3\n---\n",
        )
        .unwrap();
        let got: Vec<(usize, usize, Value)> = docs
            .into_iter()
            .map(|d| (d.index, d.line, d.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2, json!({"a": 1})),
                (4, 7, json!({"b": 2})),
                (6, 10, json!({"c": 3}))
            ]
        );
        assert_eq!(read_documents(b"").unwrap(), vec![]);
        assert_eq!(read_documents(b"# nothing\n\n").unwrap(), vec![]);
        assert_eq!(read_documents(b"---\n...\n").unwrap(), vec![]);
    }

    #[test]
    fn byte_order_marks() {
        assert_eq!(
            read_documents(b"\xEF\xBB\xBFa: 0400\n").unwrap()[0].value,
            json!({"a": 256})
        );
        assert_eq!(
            read_documents(b"\xEF\xBB\xBF{\"a\": 1}").unwrap()[0].value,
            json!({"a": 1})
        );
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a: b\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(
            read_documents(&utf16le).unwrap()[0].value,
            json!({"a": "b"})
        );
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("a: b\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(
            read_documents(&utf16be).unwrap()[0].value,
            json!({"a": "b"})
        );
        assert_eq!(read_documents(b"\xFF\xFEa"), Err(ReadError::NotUtf16));
        assert_eq!(
            read_documents(b"a: \xFF\n"),
            Err(ReadError::NotUtf8 { offset: 3 })
        );
    }

    #[test]
    fn json_streams_and_json_errors() {
        let docs = read_documents(b"{\"a\": 1.0, \"m\": \"0400\"}\n\n{\"b\": [1e3]}null{\"c\":{}}")
            .unwrap();
        let values: Vec<Value> = docs.iter().map(|d| d.value.clone()).collect();
        // JSON keeps its own numbers: 1.0 stays a float, as in the input.
        assert_eq!(
            values,
            vec![
                json!({"a": 1.0, "m": "0400"}),
                json!({"b": [1000.0]}),
                json!({"c": {}})
            ]
        );
        assert_eq!(docs[1].line, 3);
        assert_eq!(docs[2].index, 4);
        // A flow mapping is YAML, not JSON.
        assert_eq!(
            one("{kind: Pod, mode: 0400}"),
            json!({"kind": "Pod", "mode": 256})
        );
        let err = read_documents(b"{\"a\": 1}\n{\"b\": }\n").unwrap_err();
        assert!(
            matches!(&err, ReadError::Syntax { document: 2, line: 2, message, .. } if message.starts_with("invalid JSON")),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_document_and_line() {
        let err = read_documents(b"a: 1\n---\nb: [1, 2\n").unwrap_err();
        assert!(
            matches!(err, ReadError::Syntax { document: 2, .. }),
            "{err:?}"
        );
        let err = read_documents(b"a: 1\n  b: 2\n").unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Syntax {
                    document: 1,
                    line: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn writing_quotes_what_yaml_1_1_would_change() {
        let value = json!({
            "strings": ["yes", "no", "on", "off", "y", "n", "Y", "N", "0400", "08", "1_000",
                        "0x1F", "0b101", "1e3", ".5", "~", "null", "", "true", "1.0", "-",
                        "2001-12-14", "<<", "a: b", "# x", "- x", " lead", "trail ", "tab\tin",
                        "multi\nline\n", "trailing spaces  \nnext", "\u{feff}bom", "ünï", "\"q\"",
                        "'s'", "---", "...", "@x", "`x", "%x", "*x", "&x", "!x", "|", ">", "{}", "[]"],
            "keys": {"yes": 1, "on": 2, "y": 3, "0400": 4, "1_000": 5, "~": 6, "<<": 7, "": 8},
            "numbers": [256, -1, 1.5, 1e300, 0.1, 18446744073709551615u64],
            "empty": {}, "list": [], "null": null, "bool": true
        });
        let text = to_yaml(&value).unwrap();
        let back = read_documents(text.as_bytes()).unwrap();
        assert!(same(&back[0].value, &value), "{text}");
        let stream = to_yaml_stream([&json!({"a": 1}), &json!({"b": "0400"})]).unwrap();
        let back = read_documents(stream.as_bytes()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].value, json!({"b": "0400"}));
        assert!(stream.contains("\n---\n"), "{stream}");
    }

    #[test]
    fn same_compares_numbers_by_value() {
        assert!(same(&json!({"a": [1.0]}), &json!({"a": [1]})));
        assert!(!same(&json!({"a": 1.5}), &json!({"a": 1})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same(&json!("1"), &json!(1)));
    }
}
