//! YAML front end for spec files: text → `serde_json::Value` plus a [`SourceMap`], then a
//! deserializer that reports *every* structural problem of a document at once.
//!
//! We parse with yaml-rust2's event API rather than a serde YAML deserializer because we need
//! the position of every node (to point diagnostics at `file:line:col`) and full control over
//! scalar typing (YAML 1.2 core schema: `yes`/`no`/`on` stay strings). Deserializing from the
//! resulting `Value` with serde_path_to_error gives the path of the first error only; to report
//! all of them (the Vector way) [`deserialize_all`] records the error, patches the offending node
//! out of the value and tries again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};
use serde_path_to_error::Segment;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use crate::error::Diagnostic;

/// Deeper nesting than this is refused: conversion and serde both recurse, and no spec needs it.
const MAX_DEPTH: usize = 256;
/// Nodes that alias expansion may add in total ("billion laughs" guard).
const MAX_ALIAS_NODES: usize = 100_000;
/// Rounds of report-patch-retry in [`deserialize_all`].
const MAX_ROUNDS: usize = 50;

const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// A 1-based position in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    fn from_marker(m: &Marker) -> Self {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Position {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// Where a node is: the node itself and, for a mapping value, its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub node: Position,
    pub key: Option<Position>,
}

/// Positions of the nodes of one document, by path.
///
/// Paths are written the way `serde_path_to_error::Path` prints them: keys joined with `.`,
/// sequence indices as `[i]` (`datasets.users.columns[0].name`), keys verbatim (a key containing
/// `.` is not escaped, exactly like serde_path_to_error). The root is `""` (`"."` is accepted too,
/// which is how serde_path_to_error prints an empty path).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    entries: HashMap<String, Located>,
}

impl SourceMap {
    /// The exact entry for `path`, without falling back to ancestors.
    pub fn get(&self, path: &str) -> Option<&Located> {
        self.entries.get(normalize(path))
    }

    /// `(line, col)` where the entry at `path` starts: its key if it has one, else the node.
    /// Falls back to the nearest located ancestor.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        self.find(path).map(|l| {
            let p = l.key.unwrap_or(l.node);
            (p.line, p.col)
        })
    }

    /// `(line, col)` of the node (the value) at `path`, falling back to the nearest located
    /// ancestor. Better than [`SourceMap::locate`] for "wrong value" problems.
    pub fn locate_value(&self, path: &str) -> Option<(usize, usize)> {
        self.find(path).map(|l| (l.node.line, l.node.col))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, path: &str) -> Option<&Located> {
        let mut p = normalize(path);
        loop {
            if let Some(l) = self.entries.get(p) {
                return Some(l);
            }
            if p.is_empty() {
                return None;
            }
            p = parent_path(p);
        }
    }
}

fn normalize(path: &str) -> &str {
    if path == "." { "" } else { path }
}

/// Drop the last segment of a printed path. Always strictly shorter, so ancestor walks end.
fn parent_path(p: &str) -> &str {
    if p.ends_with(']')
        && let Some(i) = p.rfind('[')
    {
        return &p[..i];
    }
    match p.rfind('.') {
        Some(i) => &p[..i],
        None => "",
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A parsed document whose non-fatal problems (duplicate keys, bad merges, extra documents)
/// are kept aside so they can be reported together with the structural ones.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub value: Value,
    pub map: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse one YAML document into a JSON value and the positions of its nodes.
///
/// Fails on a syntax error (one diagnostic) and on any problem [`parse_lenient`] reports.
pub fn parse(text: &str, file: &Path) -> Result<(Value, SourceMap), Vec<Diagnostic>> {
    let parsed = parse_lenient(text, file)?;
    if parsed.diagnostics.is_empty() {
        Ok((parsed.value, parsed.map))
    } else {
        Err(parsed.diagnostics)
    }
}

/// Like [`parse`], but problems that leave a usable document (a duplicate key keeps its first
/// value; a second document is ignored) are returned beside it instead of failing.
/// `Err` only for problems that leave no document: syntax errors, runaway aliases or nesting.
pub fn parse_lenient(text: &str, file: &Path) -> Result<Parsed, Vec<Diagnostic>> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::new(file);
    let mut documents = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => return Err(vec![b.syntax_error(&e)]),
        };
        let pos = Position::from_marker(&marker);
        let step = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    b.diagnostics.push(Diagnostic {
                        file: file.to_path_buf(),
                        line: Some(pos.line),
                        col: Some(pos.col),
                        path: String::new(),
                        message: "a second YAML document starts here; a spec file holds one".into(),
                        hint: Some(
                            "remove the `---` and what follows, or move it to its own file".into(),
                        ),
                    });
                    break;
                }
                Ok(())
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::Scalar(text, style, anchor, tag) => {
                b.complete(scalar_node(text, style, tag.as_ref(), pos), anchor);
                Ok(())
            }
            Event::Alias(id) => b.alias(id, pos),
            Event::SequenceStart(anchor, _) => b.open(
                Frame::Seq {
                    anchor,
                    pos,
                    items: Vec::new(),
                },
                pos,
            ),
            Event::MappingStart(anchor, _) => b.open(
                Frame::Map {
                    anchor,
                    pos,
                    entries: Vec::new(),
                    index: HashMap::new(),
                    key: None,
                    merges: Vec::new(),
                },
                pos,
            ),
            Event::SequenceEnd | Event::MappingEnd => b.close(),
        };
        if let Err(d) = step {
            return Err(vec![*d]);
        }
    }
    let mut entries = HashMap::new();
    let value = match b.root {
        Some(node) => into_value(node, &mut String::new(), None, &mut entries),
        None => Value::Null,
    };
    Ok(Parsed {
        value,
        map: SourceMap { entries },
        diagnostics: b.diagnostics,
    })
}

/// Parse and deserialize in one go, reporting parse-level and structural problems together,
/// sorted by position.
pub fn load<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, Vec<Diagnostic>> {
    let parsed = parse_lenient(text, file)?;
    match deserialize_all::<T>(parsed.value, &parsed.map, file) {
        Ok(t) if parsed.diagnostics.is_empty() => Ok(t),
        Ok(_) => Err(parsed.diagnostics),
        Err(mut d) => {
            d.extend(parsed.diagnostics);
            sort_diagnostics(&mut d);
            Err(d)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Event stream → tree with positions

#[derive(Debug, Clone)]
struct Node {
    pos: Position,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Scalar(Value),
    /// A plain `<<`: the YAML 1.1 merge key, still expected in the wild with anchors.
    MergeKey,
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    key_pos: Position,
    value: Node,
}

enum PendingKey {
    Key(String, Position),
    Merge,
}

enum Frame {
    Seq {
        anchor: usize,
        pos: Position,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        pos: Position,
        entries: Vec<Entry>,
        index: HashMap<String, usize>,
        key: Option<PendingKey>,
        merges: Vec<Node>,
    },
}

/// A problem that leaves no document to work with (boxed: `Diagnostic` is large).
type Fatal = Box<Diagnostic>;

struct Builder<'a> {
    file: &'a Path,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    expanded: usize,
    root: Option<Node>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    fn new(file: &'a Path) -> Self {
        Builder {
            file,
            stack: Vec::new(),
            anchors: HashMap::new(),
            expanded: 0,
            root: None,
            diagnostics: Vec::new(),
        }
    }

    fn diagnostic(
        &self,
        pos: Position,
        path: String,
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            line: Some(pos.line),
            col: Some(pos.col),
            path,
            message,
            hint,
        }
    }

    /// Path of the node being built (as far as it is known).
    fn path(&self) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => {
                    let _ = write!(out, "[{}]", items.len());
                }
                Frame::Map {
                    key: Some(PendingKey::Key(k, _)),
                    ..
                } => out = join_key(&out, k),
                Frame::Map {
                    key: Some(PendingKey::Merge),
                    ..
                } => out = join_key(&out, "<<"),
                Frame::Map { key: None, .. } => break,
            }
        }
        out
    }

    fn syntax_error(&self, e: &ScanError) -> Diagnostic {
        self.diagnostic(
            Position::from_marker(e.marker()),
            self.path(),
            format!("YAML syntax error: {}", e.info()),
            Some("check the indentation and quoting on this line and the one before".into()),
        )
    }

    fn open(&mut self, frame: Frame, pos: Position) -> Result<(), Fatal> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Box::new(self.diagnostic(
                pos,
                self.path(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
                None,
            )));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self) -> Result<(), Fatal> {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { anchor, pos, items }) => (
                Node {
                    pos,
                    kind: Kind::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                anchor,
                pos,
                mut entries,
                mut index,
                merges,
                ..
            }) => {
                for merge in merges {
                    self.merge(merge, &mut entries, &mut index);
                }
                (
                    Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                )
            }
            None => {
                return Err(Box::new(Diagnostic {
                    file: self.file.to_path_buf(),
                    line: None,
                    col: None,
                    path: String::new(),
                    message: "internal error: unbalanced YAML events".into(),
                    hint: None,
                }));
            }
        };
        self.complete(node, anchor);
        Ok(())
    }

    /// Apply one `<<` value: mappings' keys are added unless the mapping already has them
    /// (explicit keys win; in a list, earlier mappings win).
    fn merge(&mut self, merge: Node, entries: &mut Vec<Entry>, index: &mut HashMap<String, usize>) {
        let sources = match merge.kind {
            Kind::Seq(items) => items,
            kind => vec![Node {
                pos: merge.pos,
                kind,
            }],
        };
        for source in sources {
            match source.kind {
                Kind::Map(merged) => {
                    for e in merged {
                        if !index.contains_key(&e.key) {
                            index.insert(e.key.clone(), entries.len());
                            entries.push(e);
                        }
                    }
                }
                _ => {
                    let d = self.diagnostic(
                        source.pos,
                        join_key(&self.path(), "<<"),
                        "the merge key `<<` takes a mapping or a list of mappings".into(),
                        Some("write `<<: *anchor` where `&anchor` names a mapping".into()),
                    );
                    self.diagnostics.push(d);
                }
            }
        }
    }

    fn alias(&mut self, id: usize, pos: Position) -> Result<(), Fatal> {
        let Some(node) = self.anchors.get(&id) else {
            return Err(Box::new(self.diagnostic(
                pos,
                self.path(),
                "alias refers to its own anchor (recursive alias)".into(),
                None,
            )));
        };
        self.expanded += count_nodes(node);
        if self.expanded > MAX_ALIAS_NODES {
            return Err(Box::new(self.diagnostic(
                pos,
                self.path(),
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                Some(
                    "spec files do not need this much repetition; check for nested aliases".into(),
                ),
            )));
        }
        let mut node = node.clone();
        // The alias itself is located where it is used; its contents where they are defined.
        node.pos = pos;
        self.complete(node, 0);
        Ok(())
    }

    /// Attach a finished node to its parent (or make it the root).
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut duplicate = None;
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                pos,
                entries,
                index,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    // yaml-rust2 marks a block mapping's start after its first key; the key is
                    // where a reader sees the mapping begin. (A flow mapping's `{` comes first.)
                    if (node.pos.line, node.pos.col) < (pos.line, pos.col) {
                        *pos = node.pos;
                    }
                    *key = Some(pending_key(node));
                }
                Some(PendingKey::Merge) => merges.push(node),
                Some(PendingKey::Key(k, key_pos)) => match index.get(&k) {
                    Some(&i) => duplicate = Some((k, key_pos, entries[i].key_pos)),
                    None => {
                        index.insert(k.clone(), entries.len());
                        entries.push(Entry {
                            key: k,
                            key_pos,
                            value: node,
                        });
                    }
                },
            },
        }
        if let Some((k, pos, first)) = duplicate {
            let d = self.diagnostic(
                pos,
                join_key(&self.path(), &k),
                format!("duplicate key `{k}`"),
                Some(format!(
                    "`{k}` is already set at line {}, column {}; keep only one (the first is used)",
                    first.line, first.col
                )),
            );
            self.diagnostics.push(d);
        }
    }
}

fn pending_key(node: Node) -> PendingKey {
    let pos = node.pos;
    match node.kind {
        Kind::MergeKey => PendingKey::Merge,
        Kind::Scalar(Value::String(s)) => PendingKey::Key(s, pos),
        Kind::Scalar(Value::Null) => PendingKey::Key("null".into(), pos),
        Kind::Scalar(v) => PendingKey::Key(v.to_string(), pos),
        kind => {
            // A complex key: stringify it as compact JSON, the only faithful flat spelling.
            let v = into_value(
                Node { pos, kind },
                &mut String::new(),
                None,
                &mut HashMap::new(),
            );
            PendingKey::Key(v.to_string(), pos)
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Scalar(_) | Kind::MergeKey => 0,
        Kind::Seq(items) => items.iter().map(count_nodes).sum(),
        Kind::Map(entries) => entries.iter().map(|e| 1 + count_nodes(&e.value)).sum(),
    }
}

fn into_value(
    node: Node,
    path: &mut String,
    key: Option<Position>,
    map: &mut HashMap<String, Located>,
) -> Value {
    map.entry(path.clone()).or_insert(Located {
        node: node.pos,
        key,
    });
    match node.kind {
        Kind::Scalar(v) => v,
        Kind::MergeKey => Value::String("<<".into()),
        Kind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                out.push(into_value(item, path, None, map));
                path.truncate(len);
            }
            Value::Array(out)
        }
        Kind::Map(entries) => {
            let mut out = Map::new();
            for e in entries {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&e.key);
                let v = into_value(e.value, path, Some(e.key_pos), map);
                path.truncate(len);
                out.insert(e.key, v);
            }
            Value::Object(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars: YAML 1.2 core schema

fn scalar_node(text: String, style: TScalarStyle, tag: Option<&Tag>, pos: Position) -> Node {
    let core = tag
        .filter(|t| t.handle == CORE_TAG_PREFIX)
        .map(|t| t.suffix.as_str());
    let non_specific = tag.is_some_and(|t| t.handle.is_empty() && t.suffix == "!");
    let kind = match core {
        Some("str") => Kind::Scalar(Value::String(text)),
        Some("null" | "bool" | "int" | "float") => Kind::Scalar(resolve_plain(text)),
        _ if non_specific || style != TScalarStyle::Plain => Kind::Scalar(Value::String(text)),
        _ if text == "<<" && tag.is_none() => Kind::MergeKey,
        // Other tags are not interpreted: the scalar is typed as if untagged.
        _ => Kind::Scalar(resolve_plain(text)),
    };
    Node { pos, kind }
}

/// Resolve a plain scalar per the YAML 1.2 core schema. `.inf`/`.nan` have no JSON number and
/// stay strings.
fn resolve_plain(s: String) -> Value {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(v) = resolve_int(&s) {
        return v;
    }
    // Integers too large for 64 bits also land here, as floats (as JSON would read them).
    if is_core_float(&s)
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s)
}

fn resolve_int(s: &str) -> Option<Value> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = s.strip_prefix("0o") {
        (o, 8)
    } else {
        (s, 10)
    };
    let body = if radix == 10 {
        digits.strip_prefix(['-', '+']).unwrap_or(digits)
    } else {
        digits
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if let Ok(i) = i64::from_str_radix(digits, radix) {
        return Some(Value::from(i));
    }
    u64::from_str_radix(digits, radix).ok().map(Value::from)
}

/// `[-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

// ---------------------------------------------------------------------------------------------
// Deserialization that reports every problem

/// Deserialize `value` into `T`, reporting *all* structural problems of the document.
///
/// serde stops at the first error; we record it, patch the value past it (drop the unknown key,
/// the wrongly typed node, the node with an unknown variant) and retry, up to 50 rounds. A
/// `missing field` caused only by a node we dropped is not reported again. `Ok` only when the
/// first attempt succeeds.
pub fn deserialize_all<T: DeserializeOwned>(
    value: Value,
    map: &SourceMap,
    file: &Path,
) -> Result<T, Vec<Diagnostic>> {
    match deserialize_partial(value, map, file) {
        (Some(t), d) if d.is_empty() => Ok(t),
        (_, d) => Err(d),
    }
}

/// Like [`deserialize_all`], but also returns the value deserialized after patching past every
/// problem, when there is one: validation can then go on to report semantic problems too
/// (unknown columns, uncovered personal data) in the same run.
pub fn deserialize_partial<T: DeserializeOwned>(
    value: Value,
    map: &SourceMap,
    file: &Path,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut partial = None;
    let diagnostics = deserialize_inner(value, map, file, &mut partial);
    (partial, diagnostics)
}

fn deserialize_inner<T: DeserializeOwned>(
    value: Value,
    map: &SourceMap,
    file: &Path,
    partial: &mut Option<T>,
) -> Vec<Diagnostic> {
    let mut value = value;
    let mut patcher = Patcher::default();
    let mut diagnostics = Vec::new();
    let mut seen = HashSet::new();
    let mut rounds = 0;
    let mut last_error = String::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => {
                *partial = Some(t);
                break;
            }
            Err(e) => e,
        };
        rounds += 1;
        if rounds > MAX_ROUNDS {
            diagnostics.push(Diagnostic {
                file: file.to_path_buf(),
                line: None,
                col: None,
                path: String::new(),
                message: format!("stopped after {MAX_ROUNDS} problems"),
                hint: Some("fix the problems above and run again".into()),
            });
            break;
        }
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        last_error = err.inner().to_string();
        let problem = Problem::parse(&last_error);
        let node = patcher.resolve(&value, &segments);

        // The node to drop, the path to report, and whether to report at all.
        let (target, path, report) = match &problem {
            Problem::UnknownField { field, .. } => {
                // Usually the path ends in the key; for content-buffered types (internally
                // tagged enums, flatten) it ends at the mapping that holds it.
                let mut target = node;
                if !matches!(target.last(), Some(Seg::Key { key, .. }) if key == field) {
                    target.push(Seg::Key {
                        key: field.clone(),
                        variant: false,
                    });
                }
                let path = seg_path(&target);
                (target, path, true)
            }
            Problem::MissingField { field } => {
                let path = seg_path(&node);
                let caused_by_us = patcher.removed.contains(&join_key(&path, field));
                (node, path, !caused_by_us)
            }
            _ => {
                let path = seg_path(&node);
                let mut target = node;
                // Dropping only the content of `{variant: content}` would leave `{}`, a second
                // error at the same place: drop the whole enum value.
                if matches!(target.last(), Some(Seg::Key { variant: true, .. })) {
                    target.pop();
                }
                (target, path, true)
            }
        };
        // A path that errors twice means the patch did not take: stop rather than loop.
        if !seen.insert(path.clone()) {
            break;
        }
        if report {
            let at = match problem {
                Problem::UnknownField { .. } | Problem::MissingField { .. } => map.locate(&path),
                _ => map.locate_value(&path),
            };
            let (message, hint) = problem.describe();
            diagnostics.push(Diagnostic {
                file: file.to_path_buf(),
                line: at.map(|a| a.0),
                col: at.map(|a| a.1),
                path,
                message,
                hint,
            });
        }
        if !patcher.remove(&mut value, &target) {
            break;
        }
    }
    if diagnostics.is_empty() && partial.is_none() {
        // Not expected (every chain of patches starts with a reported problem), but a failure
        // must never come back without a diagnostic.
        diagnostics.push(Diagnostic {
            file: file.to_path_buf(),
            line: None,
            col: None,
            path: String::new(),
            message: last_error,
            hint: None,
        });
    }
    sort_diagnostics(&mut diagnostics);
    diagnostics
}

fn sort_diagnostics(d: &mut [Diagnostic]) {
    d.sort_by_key(|d| (d.line.is_none(), d.line, d.col));
}

/// One step of a path in the *current* value, with the index it had in the original document.
#[derive(Debug, Clone)]
enum Seg {
    /// `variant`: the key is the tag of an externally tagged enum (`{variant: content}`).
    Key {
        key: String,
        variant: bool,
    },
    Index {
        current: usize,
        original: usize,
    },
}

/// Path in the original document (what the [`SourceMap`] knows).
fn seg_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key { key, .. } => out = join_key(&out, key),
            Seg::Index { original, .. } => {
                let _ = write!(out, "[{original}]");
            }
        }
    }
    out
}

#[derive(Default)]
struct Patcher {
    /// Original paths of the nodes dropped so far.
    removed: HashSet<String>,
    /// Original indices dropped from each sequence, by the sequence's original path; needed to
    /// map later errors' indices back to the document.
    removed_indices: HashMap<String, BTreeSet<usize>>,
}

impl Patcher {
    /// Follow serde's path through the current value, as far as it goes.
    fn resolve(&self, value: &Value, segments: &[Segment]) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut cur = value;
        for s in segments {
            match (s, cur) {
                (Segment::Map { key } | Segment::Enum { variant: key }, Value::Object(m)) => {
                    match m.get(key) {
                        Some(v) => {
                            let variant = matches!(s, Segment::Enum { .. });
                            out.push(Seg::Key {
                                key: key.clone(),
                                variant,
                            });
                            cur = v;
                        }
                        None => break,
                    }
                }
                // A unit variant written as a plain string: no node of its own.
                (Segment::Enum { .. }, _) => {}
                (Segment::Seq { index }, Value::Array(a)) if *index < a.len() => {
                    let original = self.original_index(&seg_path(&out), *index);
                    out.push(Seg::Index {
                        current: *index,
                        original,
                    });
                    cur = &a[*index];
                }
                _ => break,
            }
        }
        out
    }

    fn original_index(&self, seq_path: &str, current: usize) -> usize {
        let Some(removed) = self.removed_indices.get(seq_path) else {
            return current;
        };
        let mut remaining = current;
        let mut i = 0;
        loop {
            if !removed.contains(&i) {
                if remaining == 0 {
                    return i;
                }
                remaining -= 1;
            }
            i += 1;
        }
    }

    /// Drop the node at `target`; false if there is nothing to drop (the root, or a stale path).
    fn remove(&mut self, value: &mut Value, target: &[Seg]) -> bool {
        let Some((last, parent)) = target.split_last() else {
            return false;
        };
        let mut cur = value;
        for s in parent {
            let next = match (s, cur) {
                (Seg::Key { key, .. }, Value::Object(m)) => m.get_mut(key),
                (Seg::Index { current, .. }, Value::Array(a)) => a.get_mut(*current),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => return false,
            }
        }
        let removed = match (last, cur) {
            // shift_remove keeps document order, so later errors still come in reading order.
            (Seg::Key { key, .. }, Value::Object(m)) => m.shift_remove(key).is_some(),
            (Seg::Index { current, original }, Value::Array(a)) if *current < a.len() => {
                a.remove(*current);
                self.removed_indices
                    .entry(seg_path(parent))
                    .or_default()
                    .insert(*original);
                true
            }
            _ => false,
        };
        if removed {
            self.removed.insert(seg_path(target));
        }
        removed
    }
}

/// A serde error message, taken apart.
#[derive(Debug)]
enum Problem {
    UnknownField {
        field: String,
        expected: Vec<String>,
    },
    UnknownVariant {
        variant: String,
        expected: Vec<String>,
    },
    MissingField {
        field: String,
    },
    InvalidType {
        found: String,
        expected: String,
    },
    InvalidValue {
        found: String,
        expected: String,
    },
    InvalidLength {
        found: String,
        expected: String,
    },
    Untagged,
    Other(String),
}

impl Problem {
    fn parse(msg: &str) -> Problem {
        let split = |rest: &str| match rest.rfind(", expected ") {
            Some(i) => (
                rest[..i].to_owned(),
                rest[i + ", expected ".len()..].to_owned(),
            ),
            None => (rest.to_owned(), String::new()),
        };
        if msg.starts_with("unknown field `") {
            let mut names = backticked(msg).into_iter();
            let field = names.next().unwrap_or_default();
            Problem::UnknownField {
                field,
                expected: names.collect(),
            }
        } else if msg.starts_with("unknown variant `") {
            let mut names = backticked(msg).into_iter();
            let variant = names.next().unwrap_or_default();
            Problem::UnknownVariant {
                variant,
                expected: names.collect(),
            }
        } else if msg.starts_with("missing field `") {
            Problem::MissingField {
                field: backticked(msg).into_iter().next().unwrap_or_default(),
            }
        } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
            let (found, expected) = split(rest);
            Problem::InvalidType { found, expected }
        } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
            let (found, expected) = split(rest);
            Problem::InvalidValue { found, expected }
        } else if let Some(rest) = msg.strip_prefix("invalid length ") {
            let (found, expected) = split(rest);
            Problem::InvalidLength { found, expected }
        } else if msg.starts_with("data did not match any variant of untagged enum") {
            Problem::Untagged
        } else {
            Problem::Other(msg.to_owned())
        }
    }

    /// Message and hint for a person editing the spec: no Rust type names where we can help it.
    fn describe(&self) -> (String, Option<String>) {
        match self {
            Problem::UnknownField { field, expected } => (
                format!("unknown key `{field}`"),
                Some(if expected.is_empty() {
                    "this mapping takes no keys".into()
                } else {
                    with_suggestion(field, expected, "allowed keys")
                }),
            ),
            Problem::UnknownVariant { variant, expected } => (
                format!("unknown value `{variant}`"),
                (!expected.is_empty())
                    .then(|| with_suggestion(variant, expected, "allowed values")),
            ),
            Problem::MissingField { field } => (
                format!("missing key `{field}`"),
                Some(format!("add `{field}:` to this mapping")),
            ),
            Problem::InvalidType { found, expected } => {
                let expected = describe_expected(expected);
                let yaml11_bool = ["\"yes\"", "\"no\"", "\"on\"", "\"off\"", "\"y\"", "\"n\""]
                    .iter()
                    .any(|w| found.eq_ignore_ascii_case(&format!("string {w}")));
                let hint = if yaml11_bool && expected == "a boolean" {
                    "expected a boolean: write `true` or `false` (YAML 1.2 reads yes/no/on/off as strings)"
                        .to_owned()
                } else {
                    format!("expected {expected}")
                };
                (
                    format!("wrong type: found {}", describe_found(found)),
                    Some(hint),
                )
            }
            Problem::InvalidValue { found, expected } => (
                format!("invalid value: {}", describe_found(found)),
                Some(format!("expected {}", describe_expected(expected))),
            ),
            Problem::InvalidLength { found, expected } => (
                format!("wrong number of items: {found}"),
                Some(format!("expected {}", describe_expected(expected))),
            ),
            Problem::Untagged => (
                "does not match any of the accepted forms for this entry".into(),
                None,
            ),
            Problem::Other(msg) => (msg.clone(), None),
        }
    }
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn describe_found(found: &str) -> String {
    match found {
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" => "an empty value (null)".into(),
        _ => found.to_owned(),
    }
}

fn describe_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a map" => "a mapping".into(),
        "a sequence" => "a list".into(),
        "unit" => "an empty value".into(),
        e if e.starts_with("struct ") => "a mapping".into(),
        e => match e.strip_prefix("enum ") {
            Some(name) => format!("one of the values of `{name}`"),
            None => e.to_owned(),
        },
    }
}

/// "did you mean `x`? allowed keys: `a`, `b`" — suggestion by edit distance when one is close.
fn with_suggestion(got: &str, expected: &[String], what: &str) -> String {
    let list = expected
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let limit = (got.chars().count() / 3).clamp(1, 3);
    let best = expected
        .iter()
        .map(|e| (edit_distance(&got.to_lowercase(), &e.to_lowercase()), e))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= limit);
    match best {
        Some((_, e)) => format!("did you mean `{e}`? {what}: {list}"),
        None => format!("{what}: {list}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        version: u32,
        datasets: BTreeMap<String, Dataset>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Dataset {
        primary_key: String,
        columns: BTreeMap<String, Column>,
        retention: Option<Retention>,
        #[serde(default)]
        checks: Vec<Check>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Column {
        #[serde(rename = "type")]
        ty: ColumnType,
        #[serde(default)]
        nullable: bool,
        pii: Option<Pii>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum ColumnType {
        String,
        Int,
        Timestamp,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(untagged)]
    enum Retention {
        Days(u32),
        Rule { days: u32, after: String },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    enum Pii {
        Email,
        Phone { region: String },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Check {
        NotNull(String),
        Unique { columns: Vec<String> },
    }

    fn file() -> &'static Path {
        Path::new("pipeline.yaml")
    }

    fn at(d: &Diagnostic) -> (String, Option<usize>, Option<usize>) {
        (d.path.clone(), d.line, d.col)
    }

    const GOOD: &str = "\
name: demo
version: 2
datasets:
  users:
    primary_key: id
    retention: 30
    columns:
      id: {type: int}
      email:
        type: string
        pii: {kind: email}
    checks:
      - not_null: id
      - unique: {columns: [email]}
";

    #[test]
    fn good_document_deserializes() {
        let doc: Doc = load(GOOD, file()).expect("valid");
        let users = &doc.datasets["users"];
        assert_eq!(users.retention, Some(Retention::Days(30)));
        assert_eq!(users.columns["email"].pii, Some(Pii::Email));
        assert_eq!(users.checks.len(), 2);
    }

    #[test]
    fn five_mistakes_five_diagnostics() {
        let text = "\
name: demo
version: 1
colour: blue
datasets:
  users:
    primary_key: id
    columns:
      id:
        type: int
        nulable: true
      email:
        type: strng
        nullable: yes
    primary_key: user_id
";
        let diags = load::<Doc>(text, file()).expect_err("invalid");
        let got: Vec<_> = diags.iter().map(at).collect();
        assert_eq!(
            got,
            vec![
                ("colour".into(), Some(3), Some(1)),
                (
                    "datasets.users.columns.id.nulable".into(),
                    Some(10),
                    Some(9)
                ),
                (
                    "datasets.users.columns.email.type".into(),
                    Some(12),
                    Some(15)
                ),
                (
                    "datasets.users.columns.email.nullable".into(),
                    Some(13),
                    Some(19)
                ),
                ("datasets.users.primary_key".into(), Some(14), Some(5)),
            ],
            "{diags:#?}"
        );
        assert_eq!(diags[0].message, "unknown key `colour`");
        assert_eq!(
            diags[0].hint.as_deref(),
            Some("allowed keys: `name`, `version`, `datasets`, `tags`")
        );
        assert_eq!(
            diags[1].hint.as_deref(),
            Some("did you mean `nullable`? allowed keys: `type`, `nullable`, `pii`")
        );
        assert_eq!(diags[2].message, "unknown value `strng`");
        assert!(
            diags[2]
                .hint
                .as_deref()
                .is_some_and(|h| h.starts_with("did you mean `string`?"))
        );
        assert_eq!(diags[3].message, "wrong type: found string \"yes\"");
        assert!(
            diags[3]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("`true` or `false`"))
        );
        assert_eq!(diags[4].message, "duplicate key `primary_key`");
        assert!(
            diags[4]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("line 6, column 5"))
        );
        // Display carries file:line:col and the path.
        assert!(
            diags[0]
                .to_string()
                .starts_with("pipeline.yaml:3:1: at `colour`: unknown key")
        );
    }

    #[test]
    fn problems_inside_sequences_keep_original_indices() {
        let text = "\
name: demo
version: -1
datasets:
  a:
    primary_key: id
    columns: {}
    retention: {days: 3}
    checks:
      - not_nul: x
      - not_null: [x]
      - unique: {columns: [a], extra: 1}
      - not_null: ok
";
        let diags = load::<Doc>(text, file()).expect_err("invalid");
        let got: Vec<_> = diags.iter().map(at).collect();
        assert_eq!(
            got,
            vec![
                ("version".into(), Some(2), Some(10)),
                ("datasets.a.retention".into(), Some(7), Some(16)),
                ("datasets.a.checks[0]".into(), Some(9), Some(9)),
                ("datasets.a.checks[1].not_null".into(), Some(10), Some(19)),
                (
                    "datasets.a.checks[2].unique.extra".into(),
                    Some(11),
                    Some(32)
                ),
            ],
            "{diags:#?}"
        );
        assert_eq!(diags[0].message, "invalid value: integer `-1`");
        assert_eq!(
            diags[0].hint.as_deref(),
            Some("expected a non-negative integer")
        );
        assert_eq!(diags[2].message, "unknown value `not_nul`");
        assert_eq!(diags[3].hint.as_deref(), Some("expected a string"));
    }

    #[test]
    fn missing_fields_are_reported_once() {
        // `type` missing for real in `id`; `email.type` is dropped for a bad value, so its
        // missing-field error must not be reported a second time.
        let text = "\
name: demo
version: 1
datasets:
  users:
    primary_key: id
    columns:
      id: {nullable: true}
      email: {type: [string]}
      phone: {type: string, pii: {kind: phone}}
";
        let diags = load::<Doc>(text, file()).expect_err("invalid");
        let got: Vec<_> = diags
            .iter()
            .map(|d| (d.path.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("datasets.users.columns.id", "missing key `type`"),
                (
                    "datasets.users.columns.email.type",
                    "wrong type: found a list"
                ),
                ("datasets.users.columns.phone.pii", "missing key `region`"),
            ],
            "{diags:#?}"
        );
        assert_eq!((diags[0].line, diags[0].col), (Some(7), Some(7)));
        assert_eq!((diags[2].line, diags[2].col), (Some(9), Some(29)));
    }

    #[test]
    fn unknown_key_in_internally_tagged_enum_has_full_path() {
        let text = "\
name: demo
version: 1
datasets:
  u:
    primary_key: id
    columns:
      e: {type: string, pii: {kind: phone, region: eu, salt: x}}
";
        let diags = load::<Doc>(text, file()).expect_err("invalid");
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(
            at(&diags[0]),
            ("datasets.u.columns.e.pii.salt".into(), Some(7), Some(56))
        );
    }

    #[test]
    fn wrong_root_is_one_diagnostic() {
        let diags = load::<Doc>("just text\n", file()).expect_err("invalid");
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].message, "wrong type: found string \"just text\"");
        assert_eq!(diags[0].hint.as_deref(), Some("expected a mapping"));
        let diags = load::<Doc>("version: 1\ndatasets: {}\n", file()).expect_err("invalid");
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(at(&diags[0]), (String::new(), Some(1), Some(1)));
        assert_eq!(diags[0].message, "missing key `name`");
        let diags = load::<Doc>("", file()).expect_err("invalid");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].path, "");
    }

    #[test]
    fn scalar_typing_follows_core_schema() {
        let text = "\
nulls: [~, null, Null, NULL, '']
empty:
bools: [true, True, FALSE, yes, no, on, off]
ints: [0, -12, +7, 0x1F, 0o17, 9223372036854775807, 18446744073709551615]
floats: [1.5, -.5, 1e3, 2., +1.0E-2, 1_000, 0b101]
special: [.inf, -.Inf, .nan]
strings: ['1', \"true\", !!str 12, ! 13, abc, 1.2.3, 0x, 0xZ]
tagged: [!!int '5', !!float \"2.5\", !!bool 'true', !!null '']
literal: |
  42
folded: >
  false
";
        let (v, _) = parse(text, file()).expect("valid");
        assert_eq!(v["nulls"], json!([null, null, null, null, ""]));
        assert_eq!(v["empty"], Value::Null);
        assert_eq!(
            v["bools"],
            json!([true, true, false, "yes", "no", "on", "off"])
        );
        assert_eq!(
            v["ints"],
            json!([
                0,
                -12,
                7,
                31,
                15,
                9_223_372_036_854_775_807_i64,
                18_446_744_073_709_551_615_u64
            ])
        );
        assert_eq!(
            v["floats"],
            json!([1.5, -0.5, 1000.0, 2.0, 0.01, "1_000", "0b101"])
        );
        assert_eq!(v["special"], json!([".inf", "-.Inf", ".nan"]));
        assert_eq!(
            v["strings"],
            json!(["1", "true", "12", "13", "abc", "1.2.3", "0x", "0xZ"])
        );
        assert_eq!(v["tagged"], json!([5, 2.5, true, null]));
        assert_eq!(v["literal"], json!("42\n"));
        assert_eq!(v["folded"], json!("false\n"));
        // Integers beyond 64 bits are read as floats, the way JSON would.
        let (v, _) = parse("n: 123456789012345678901234", file()).expect("valid");
        assert!(v["n"].is_f64());
    }

    #[test]
    fn keys_are_stringified() {
        let (v, map) = parse("1: a\ntrue: b\n~: c\n[x, 2]: d\n0x10: e\n", file()).expect("valid");
        assert_eq!(
            v,
            json!({"1": "a", "true": "b", "null": "c", "[\"x\",2]": "d", "16": "e"})
        );
        assert_eq!(map.locate("16"), Some((5, 1)));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "\
defaults: &defaults
  type: string
  nullable: true
columns:
  a: *defaults
  b:
    <<: *defaults
    nullable: false
  c:
    <<: [{type: int}, *defaults]
list: &l [1, 2]
again: *l
";
        let (v, map) = parse(text, file()).expect("valid");
        assert_eq!(
            v["columns"]["a"],
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            v["columns"]["b"],
            json!({"nullable": false, "type": "string"})
        );
        assert_eq!(v["columns"]["c"], json!({"type": "int", "nullable": true}));
        assert_eq!(v["again"], json!([1, 2]));
        // The alias is located where it is used, its contents where they are defined.
        assert_eq!(map.locate("columns.a"), Some((5, 3)));
        assert_eq!(map.locate_value("columns.a"), Some((5, 6)));
        assert_eq!(map.locate("columns.a.nullable"), Some((3, 3)));
        assert_eq!(map.locate("columns.b.nullable"), Some((8, 5)));
        assert_eq!(map.locate("again[1]"), Some((11, 14)));
        assert_eq!(map.locate("columns.b.type"), Some((2, 3)));
    }

    #[test]
    fn bad_merge_and_runaway_aliases() {
        let diags = parse("a: &s x\nb:\n  <<: *s\n", file()).expect_err("bad merge");
        assert_eq!(at(&diags[0]), ("b.<<".into(), Some(3), Some(7)));

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            let _ = writeln!(
                bomb,
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
            );
        }
        let diags = parse(&bomb, file()).expect_err("bomb");
        assert!(diags[0].message.contains("aliases expand"), "{diags:#?}");

        // yaml-rust2 has its own recursion limit, ours is a backstop; either way one diagnostic.
        let deep = "[".repeat(MAX_DEPTH + 1);
        let diags = parse(&deep, file()).expect_err("deep");
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].line, Some(1));
    }

    #[test]
    fn syntax_error_has_location() {
        // The parser notices the bad indentation at the `:` after `bad`.
        let text = "name: demo\ndatasets:\n  users:\n    primary_key: id\n   bad: [1, 2\n";
        let diags = parse(text, file()).expect_err("syntax");
        assert_eq!(diags.len(), 1);
        let d = &diags[0];
        assert!(d.message.starts_with("YAML syntax error: "), "{d:?}");
        assert_eq!((d.line, d.col), (Some(5), Some(7)), "{d:?}");
        assert_eq!(d.path, "datasets");

        for text in ["a: b: c\n", "a: 'open\n", "k: [1, 2\n", "a:\n\tb: 1\n"] {
            let diags = parse(text, file()).expect_err("syntax");
            assert_eq!(diags.len(), 1);
            // Same place as yaml-rust2's own message, which prints 1-based columns.
            let mut parser = Parser::new_from_str(text);
            let err = loop {
                match parser.next_token() {
                    Ok((Event::StreamEnd, _)) => panic!("no error in {text:?}"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            let (line, col) = (diags[0].line.unwrap_or(0), diags[0].col.unwrap_or(0));
            assert!(
                err.to_string()
                    .ends_with(&format!("line {line} column {col}")),
                "{err} vs {diags:?}"
            );
        }
        let diags = parse("a: b: c\n", file()).expect_err("syntax");
        assert_eq!(
            (diags[0].line, diags[0].col),
            (Some(1), Some(5)),
            "{diags:?}"
        );
    }

    #[test]
    fn duplicate_keys_and_second_document() {
        let diags = parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", file()).expect_err("dups");
        let got: Vec<_> = diags.iter().map(at).collect();
        assert_eq!(
            got,
            vec![
                ("b.c".into(), Some(4), Some(3)),
                ("a".into(), Some(5), Some(1))
            ]
        );

        let parsed = parse_lenient("a: 1\na: 2\n", file()).expect("lenient");
        assert_eq!(parsed.value, json!({"a": 1}));

        let diags = parse("a: 1\n---\nb: 2\n", file()).expect_err("two docs");
        assert_eq!((diags[0].line, diags[0].col), (Some(2), Some(1)));
    }

    #[test]
    fn empty_documents_are_null() {
        for text in ["", "# only a comment\n", "---\n", "---\n...\n"] {
            let (v, _) = parse(text, file()).expect("valid");
            assert_eq!(v, Value::Null, "{text:?}");
        }
    }

    #[test]
    fn locate_falls_back_to_ancestors_and_accepts_serde_paths() {
        let (_, map) = parse("a:\n  b:\n    - x\n    - {c: 1}\n", file()).expect("valid");
        assert_eq!(map.locate("a.b[1].c"), Some((4, 8)));
        assert_eq!(map.locate("a.b[1].zzz"), Some((4, 7)));
        assert_eq!(map.locate("a.b[7]"), Some((2, 3)));
        assert_eq!(map.locate_value("a.b"), Some((3, 5)));
        assert_eq!(map.locate("."), Some((1, 1)));
        assert_eq!(map.locate("nope.deeper"), Some((1, 1)));

        // Paths printed by serde_path_to_error for the same document find the same nodes.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct A {
            a: BTreeMap<String, Vec<BTreeMap<String, u8>>>,
        }
        let (v, _) = parse("a:\n  b:\n    - {c: 1}\n    - {c: x}\n", file()).expect("valid");
        let err = serde_path_to_error::deserialize::<_, A>(&v).expect_err("bad");
        assert_eq!(err.path().to_string(), "a.b[1].c");
    }

    #[test]
    fn loops_and_caps_are_bounded() {
        let mut text = String::from("name: x\nversion: 1\ndatasets: {}\n");
        for i in 0..60 {
            let _ = writeln!(text, "k{i}: 1");
        }
        let diags = load::<Doc>(&text, file()).expect_err("many");
        assert_eq!(diags.len(), MAX_ROUNDS + 1);
        assert_eq!(
            diags[MAX_ROUNDS].message,
            format!("stopped after {MAX_ROUNDS} problems")
        );
    }

    #[test]
    fn suggestions_need_to_be_close() {
        let expected = ["primary_key".to_owned(), "columns".to_owned()];
        assert!(
            with_suggestion("prmary_key", &expected, "k").starts_with("did you mean `primary_key`")
        );
        assert_eq!(
            with_suggestion("colour", &expected, "k"),
            "k: `primary_key`, `columns`"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
