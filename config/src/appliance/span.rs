//! Source positions for the appliance TOML: key paths, byte spans and line:col.
//!
//! The typed serde model stays free of positions. Beside it, the file is read a second time into
//! a [`Node`] tree in which every key and value carries its byte span. Validation names what it
//! complains about with a [`KeyPath`]; the tree turns that path into a span, and a span from a
//! serde error back into a path.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key of a table: `.key`.
    Key(String),
    /// An element of an array: `[i]`.
    Index(usize),
    /// An element of an array of tables shown by its name (`director.maildirect`), found by its
    /// index.
    Named(usize, String),
}

/// A path of keys from the top of the file, e.g. `port[1].addresses[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path followed by table key `key`.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    /// This path followed by array index `i`.
    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        KeyPath(segs)
    }

    /// This path followed by array element `i`, shown by `name`.
    pub(crate) fn named(&self, i: usize, name: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Named(i, name.to_string()));
        KeyPath(segs)
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) | Seg::Named(_, k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML value with the byte spans of every key and value inside it.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Scalar(Option<String>),
    Array(Vec<Spanned<Node>>),
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Some(s.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

/// The whole file as a [`Node`] tree, or `None` when the text is not TOML (the typed parse then
/// reports the syntax error).
pub(crate) fn tree(text: &str) -> Option<Spanned<Node>> {
    toml::from_str::<Node>(text)
        .ok()
        .map(|node| Spanned::new(0..text.len(), node))
}

fn entry<'a>(node: &'a Node, key: &str) -> Option<&'a (Spanned<String>, Spanned<Node>)> {
    match node {
        Node::Table(entries) => entries.iter().find(|(k, _)| k.get_ref() == key),
        _ => None,
    }
}

/// The span of the value at `path`, or of the nearest ancestor that exists.
pub(crate) fn span_of(root: &Spanned<Node>, path: &KeyPath) -> Range<usize> {
    let mut node = root;
    for seg in &path.0 {
        let next = match (seg, node.get_ref()) {
            (Seg::Key(k), table) => entry(table, k).map(|(_, v)| v),
            (Seg::Index(i) | Seg::Named(i, _), Node::Array(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node.span()
}

/// The span of the key at the end of `path` (for a duplicate or unknown key), falling back to
/// [`span_of`].
pub(crate) fn key_span_of(root: &Spanned<Node>, path: &KeyPath) -> Range<usize> {
    if let Some((Seg::Key(last), parent)) = path.0.split_last() {
        let parent = KeyPath(parent.to_vec());
        let mut node = root;
        let mut found = true;
        for seg in &parent.0 {
            let next = match (seg, node.get_ref()) {
                (Seg::Key(k), table) => entry(table, k).map(|(_, v)| v),
                (Seg::Index(i) | Seg::Named(i, _), Node::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            if let Some((k, _)) = entry(node.get_ref(), last) {
                return k.span();
            }
        }
    }
    span_of(root, path)
}

/// The most specific key path whose key or value span holds byte `offset`. Elements of the
/// top-level `[[director]]` array are shown by name.
pub(crate) fn path_at(root: &Spanned<Node>, offset: usize) -> KeyPath {
    let mut best: Option<(usize, KeyPath)> = None;
    consider(root.span(), &KeyPath::root(), offset, &mut best);
    walk(root, &KeyPath::root(), offset, &mut best);
    best.map(|(_, p)| p).unwrap_or_default()
}

fn consider(
    span: Range<usize>,
    path: &KeyPath,
    offset: usize,
    best: &mut Option<(usize, KeyPath)>,
) {
    let holds = span.contains(&offset) || (span.is_empty() && span.start == offset);
    if holds {
        let width = span.end - span.start;
        // On a tie the inner path wins: an `[[port]]` element spans its header, as the array.
        let better = match best {
            Some((w, _)) => width <= *w,
            None => true,
        };
        if better {
            *best = Some((width, path.clone()));
        }
    }
}

fn walk(node: &Spanned<Node>, path: &KeyPath, offset: usize, best: &mut Option<(usize, KeyPath)>) {
    match node.get_ref() {
        Node::Scalar(_) => {}
        Node::Array(items) => {
            let by_name = path.0 == [Seg::Key("director".to_string())];
            for (i, item) in items.iter().enumerate() {
                let name = match entry(item.get_ref(), "name") {
                    Some((_, v)) if by_name => match v.get_ref() {
                        Node::Scalar(Some(s)) if is_bare_key(s) => Some(s.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                let p = match name {
                    Some(n) => path.named(i, &n),
                    None => path.index(i),
                };
                consider(item.span(), &p, offset, best);
                walk(item, &p, offset, best);
            }
        }
        Node::Table(entries) => {
            for (k, v) in entries {
                let p = path.key(k.get_ref());
                consider(k.span(), &p, offset, best);
                consider(v.span(), &p, offset, best);
                walk(v, &p, offset, best);
            }
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a = 1\n[b]\nc = [\"x\", \"y\"]\n[[director]]\nname = \"m\"\nw = 3\n";

    #[test]
    fn path_display() {
        let p = KeyPath::root()
            .key("port")
            .index(1)
            .key("addresses")
            .index(0);
        assert_eq!(p.to_string(), "port[1].addresses[0]");
        let p = KeyPath::root().key("routes").key("10.0.0.0/8");
        assert_eq!(p.to_string(), "routes.\"10.0.0.0/8\"");
        let p = KeyPath::root()
            .key("director")
            .named(0, "m")
            .key("servers")
            .index(2);
        assert_eq!(p.to_string(), "director.m.servers[2]");
    }

    #[test]
    fn spans_and_paths() {
        let root = tree(TEXT).expect("toml");
        let p = KeyPath::root().key("b").key("c").index(1);
        let span = span_of(&root, &p);
        assert_eq!(&TEXT[span.clone()], "\"y\"");
        assert_eq!(line_col(TEXT, span.start), (3, 11));
        assert_eq!(path_at(&root, span.start).to_string(), "b.c[1]");
        let w = TEXT.find("w =").expect("w");
        assert_eq!(path_at(&root, w).to_string(), "director.m.w");
        let k = key_span_of(&root, &KeyPath::root().key("a"));
        assert_eq!(line_col(TEXT, k.start), (1, 1));
    }
}
