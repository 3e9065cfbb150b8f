//! Line and column of a problem in a TOML file, for error messages
//! (`gateway.toml:109:1: capture.clickhouse.password = ...`), the way
//! compilers and linters report them and editors jump to them.
//!
//! Two sources: a parse error's byte span ([`line_col`]), and a validation
//! error's field path (`brokers[0].publications[1].password`), looked up in
//! the document with `toml_edit`, which keeps every key's span ([`locate`]).

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Where the key a field path names is written in `text` (1-based line and
/// column), or `None` when the path is not in the file (a default, a
/// missing key) or the text does not parse.
///
/// Paths are dotted keys with `[i]` for array elements, as the validation
/// messages write them; anything after a space is ignored.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut span = None;
    for part in field.split(' ').next()?.split('.') {
        let (name, indexes) = split_indexes(part)?;
        let (next, at) = node.key(name)?;
        node = next;
        span = at.or(span);
        for i in indexes {
            let (next, at) = node.index(i)?;
            node = next;
            span = at.or(span);
        }
    }
    span.map(|s| line_col(text, s.start))
}

/// A place in the document a path step can go into.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Tables(&'a ArrayOfTables),
    Array(&'a Array),
    Leaf,
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Self {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Leaf,
        }
    }

    fn of_value(v: &'a Value) -> Self {
        match v {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }

    /// The node under key `name`, and where its key is written.
    fn key(self, name: &str) -> Option<(Self, Option<Range<usize>>)> {
        match self {
            Node::Table(t) => Some((Node::of_item(t.get(name)?), t.key(name)?.span())),
            Node::Inline(t) => {
                let v = t.get(name)?;
                let at = t.key(name).and_then(|k| k.span()).or_else(|| v.span());
                Some((Node::of_value(v), at))
            }
            _ => None,
        }
    }

    /// Element `i` of an array, and where it starts.
    fn index(self, i: usize) -> Option<(Self, Option<Range<usize>>)> {
        match self {
            Node::Tables(a) => {
                let t = a.get(i)?;
                Some((Node::Table(t), t.span()))
            }
            Node::Array(a) => {
                let v = a.get(i)?;
                Some((Node::of_value(v), v.span()))
            }
            _ => None,
        }
    }
}

/// `publications[1][0]` into `("publications", [1, 0])`.
fn split_indexes(part: &str) -> Option<(&str, Vec<usize>)> {
    let Some(open) = part.find('[') else {
        return Some((part, Vec::new()));
    };
    let mut indexes = Vec::new();
    for ix in part[open..].split('[').skip(1) {
        indexes.push(ix.strip_suffix(']')?.parse().ok()?);
    }
    Some((&part[..open], indexes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "mode = \"production\"\n\n[capture.clickhouse]\nurl = \"http://x\"\n  password = \"env:P\"\n\n[[brokers]]\nid = \"a\"\n\n[[brokers]]\nid = \"b\"\npublications = [{ location = \"eu\", password = \"p\" }]\n";

    #[test]
    fn byte_offsets_become_lines_and_columns() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ä\nx", 3), (2, 1));
        assert_eq!(line_col("x", 99), (1, 2));
    }

    #[test]
    fn field_paths_are_found() {
        assert_eq!(locate(TEXT, "mode"), Some((1, 1)));
        assert_eq!(locate(TEXT, "capture.clickhouse.password"), Some((5, 3)));
        assert_eq!(locate(TEXT, "brokers[1].id"), Some((11, 1)));
        assert_eq!(
            locate(TEXT, "brokers[1].publications[0].password"),
            Some((12, 36))
        );
        assert_eq!(locate(TEXT, "capture.local.segment_age"), None);
        assert_eq!(locate(TEXT, "brokers[7].id"), None);
        assert_eq!(locate("not = [toml", "not"), None);
    }
}
