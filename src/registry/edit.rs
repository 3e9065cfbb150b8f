//! Writing a changed registry back into its file, keeping the file's
//! comments and layout wherever the change does not touch them.
//!
//! Changes are made on the typed [`RegistryFile`] (where the lifecycle rules
//! are easy to state); the result is serialised and then *merged* into the
//! document as it was read (`toml_edit`): a value that did not change keeps
//! its text and comments, a changed value keeps its comments, brokers,
//! platforms and publications are matched by `id` / `location` rather than by
//! position, and new tables go after their siblings. A file that does not
//! parse as TOML any more is replaced by the plain serialisation.
//! The write itself is atomic: temp file in the same directory, fsync,
//! rename, fsync of the directory.

use std::io::Write as _;
use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, Value};

use super::RegistryFile;

/// The text of `new`, merged into `old_text` so that untouched parts keep
/// their formatting and comments.
///
/// # Errors
/// When `new` cannot be serialised (not expected for a validated registry).
pub fn merge(old_text: &str, new: &RegistryFile) -> Result<String, String> {
    let fresh_text =
        toml::to_string(new).map_err(|e| format!("cannot serialise the registry: {e}"))?;
    let fresh: DocumentMut = fresh_text
        .parse()
        .map_err(|e| format!("cannot re-read the serialised registry: {e}"))?;
    let Ok(mut doc) = old_text.parse::<DocumentMut>() else {
        return Ok(fresh_text);
    };
    merge_table(doc.as_table_mut(), fresh.as_table());
    Ok(doc.to_string())
}

/// Keys the serialisation leaves out because they hold their default value;
/// an author who spelled the default out keeps it.
fn is_spelled_default(item: &Item) -> bool {
    match item {
        Item::Value(Value::Boolean(b)) => !*b.value(),
        Item::Value(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn merge_table(old: &mut dyn TableLike, new: &dyn TableLike) {
    let gone: Vec<String> = old
        .iter()
        .filter(|(k, v)| !new.contains_key(k) && !is_spelled_default(v))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in gone {
        old.remove(&k);
    }
    for (k, nv) in new.iter() {
        match old.get_mut(k) {
            Some(ov) => merge_item(ov, nv),
            None => {
                old.insert(k, unpositioned(nv));
            }
        }
    }
}

fn merge_item(old: &mut Item, new: &Item) {
    if let (Some(o), Some(n)) = (old.as_table_like_mut(), new.as_table_like()) {
        merge_table(o, n);
        return;
    }
    match (&mut *old, new) {
        (Item::ArrayOfTables(o), Item::ArrayOfTables(n)) => merge_array(o, n),
        (Item::Value(o), Item::Value(n)) => {
            if !same_value(o, n) {
                let decor = o.decor().clone();
                *o = n.clone();
                *o.decor_mut() = decor;
            }
        }
        // An array of inline tables (`brokers = [{...}]`) stays inline.
        (Item::Value(o @ Value::Array(_)), Item::ArrayOfTables(n)) => {
            let decor = o.decor().clone();
            *o = Value::Array(n.clone().into_array());
            *o.decor_mut() = decor;
        }
        (o, n) => *o = unpositioned(n),
    }
}

/// Elements are matched by their `id` (brokers, platforms) or `location`
/// (publications); unmatched old ones go, unmatched new ones are appended.
fn merge_array(old: &mut ArrayOfTables, new: &ArrayOfTables) {
    fn key(t: &Table) -> Option<String> {
        ["id", "location"].iter().find_map(|k| {
            t.get(k)
                .and_then(|v| v.as_str())
                .map(|s| format!("{k}={s}"))
        })
    }
    let new_keys: Vec<Option<String>> = new.iter().map(key).collect();
    // Old elements that no new element matches are removed (back to front).
    let mut i = old.len();
    while i > 0 {
        i -= 1;
        let k = old.get(i).and_then(key);
        if k.is_none() || !new_keys.contains(&k) {
            old.remove(i);
        }
    }
    for (n, k) in new.iter().zip(new_keys) {
        let found = old.iter_mut().find(|o| k.is_some() && key(o) == k);
        match found {
            Some(o) => merge_table(o, n),
            None => old.push(unpositioned_table(n)),
        }
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.decor_mut().clear();
    b.decor_mut().clear();
    a.to_string() == b.to_string()
}

/// A copy without document positions, so a new table is printed after its
/// siblings rather than where it sat in the serialised text.
fn unpositioned(item: &Item) -> Item {
    match item {
        Item::Table(t) => Item::Table(unpositioned_table(t)),
        Item::ArrayOfTables(a) => {
            let mut out = ArrayOfTables::new();
            for t in a.iter() {
                out.push(unpositioned_table(t));
            }
            Item::ArrayOfTables(out)
        }
        other => other.clone(),
    }
}

fn unpositioned_table(t: &Table) -> Table {
    let mut out = Table::new();
    for (k, v) in t.iter() {
        out.insert(k, unpositioned(v));
    }
    out
}

/// Replaces `path` with `text` atomically: a temp file beside it, fsync,
/// rename over the old file, fsync of the directory. Readers see the old
/// file or the new one, never a mix; a crash leaves one of the two.
///
/// # Errors
/// Any I/O failure; the old file is then untouched.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "registry".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = f.set_permissions(meta.permissions());
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"# The registry.
locations = ["eu"]   # where platforms live

[[brokers]]
id = "pg"            # immutable
name = "PG"
owner = "acme"

  # private one
  [brokers.private]
  endpoint = "http://127.0.0.1:1"
  username = "u"
  password = "env:X"   # from the environment
  development_mode = true

  [[brokers.publications]]
  location = "eu"
  endpoint = "https://eu.example"
  username = "u"
  password = "env:Y"

[[brokers]]
id = "redis"
owner = "globex"
"#;

    fn parse(t: &str) -> RegistryFile {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn keeps_comments_of_untouched_parts_and_of_changed_values() {
        let mut reg = parse(OLD);
        reg.brokers[0].name = "PostgreSQL".into();
        reg.brokers[0].publications[0].approved = true;
        let text = merge(OLD, &reg).unwrap();
        assert!(text.contains("# The registry."), "{text}");
        assert!(
            text.contains("id = \"pg\"            # immutable"),
            "{text}"
        );
        assert!(text.contains("name = \"PostgreSQL\""), "{text}");
        assert!(text.contains("# from the environment"), "{text}");
        assert!(text.contains("  # private one\n"), "{text}");
        assert!(text.contains("approved = true"), "{text}");
        assert_eq!(parse(&text).brokers[0].name, "PostgreSQL");
        assert!(parse(&text).brokers[0].publications[0].approved);
    }

    #[test]
    fn appends_and_removes_by_id_and_keeps_the_file_valid() {
        let base = OLD.to_string();
        let mut reg = parse(&base);
        reg.brokers.remove(0);
        let mut b = reg.brokers[0].clone();
        b.id = "mq".into();
        b.private = Some(super::super::file::EndpointFile {
            endpoint: "https://mq.example".into(),
            username: "m".into(),
            password: "enc:v1:abc".into(),
            ..Default::default()
        });
        reg.brokers.push(b);
        let text = merge(&base, &reg).unwrap();
        let back = parse(&text);
        let ids: Vec<_> = back.brokers.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["redis", "mq"], "{text}");
        assert_eq!(
            back.brokers[1].private.as_ref().unwrap().endpoint,
            "https://mq.example"
        );
        assert!(!text.contains("\"pg\""), "{text}");
        assert!(text.contains("# where platforms live"), "{text}");
    }

    #[test]
    fn spelled_out_defaults_stay() {
        let base = OLD.to_string();
        let text = merge(&base, &parse(&base)).unwrap();
        assert_eq!(
            text, base,
            "an unchanged registry is written back byte for byte"
        );
    }

    #[test]
    fn inline_arrays_stay_inline() {
        let old = "brokers = [{ id = \"a\", owner = \"o\" }]\n";
        let mut reg = parse(old);
        reg.brokers[0].name = "A".into();
        let text = merge(old, &reg).unwrap();
        assert!(text.starts_with("brokers = ["), "{text}");
        assert_eq!(parse(&text).brokers[0].name, "A");
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registry.toml");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }
}
