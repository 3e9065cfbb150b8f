//! The few fields a record reads from JSON bodies, picked while serde_json
//! scans the body, without building its tree.
//!
//! Why: parsing a 1 MB provision into a `serde_json::Value` copied its
//! parameters into a tree only to read `service_id` and `plan_id`
//! (`benches/capture.rs` record_build, side by side: provision_1MB 232 ->
//! 174 µs, provision_2KB 2.74 -> 2.19 µs). What is read matches what `Value::get(..)
//! .as_str()` read: top-level keys of an object, the last of duplicates,
//! strings only, and nothing at all from a body that is not valid JSON;
//! but a read field of 64 KiB or more reads as empty (strings that long
//! are checked and skipped here, faster than serde_json skips them).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::scan::{self, Scanned, LONG_STRING};

/// From a request: `service_id`, `plan_id`, `previous_values.plan_id`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RequestFields {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub previous_plan_id: Option<String>,
}

/// From a response: `operation`, `state`, `description`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ResponseFields {
    pub operation: Option<String>,
    pub state: Option<String>,
    pub description: Option<String>,
}

/// The fields of `body`; none when it is not a JSON object. `scanned`: its
/// long strings when the capture tap found them as the body passed (else
/// they are found here).
pub(super) fn pick<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
    scanned: Option<&Scanned>,
) -> T {
    match body.len() < LONG_STRING {
        true => short_body(body),
        false => long_body(body, scanned),
    }
}

/// [`pick`] of a body too short for long strings: serde_json alone.
#[inline(never)]
fn short_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> T {
    serde_json::from_slice(body).unwrap_or_default()
}

/// [`pick`] of a body with room for long strings: serde_json over the
/// body without them.
///
/// NB: both paths are functions of their own: with the long one inlined
/// into `pick`, a 2 KB provision's record took 2.26 -> 2.55 µs to build;
/// apart, 2.39 (`cargo bench --bench capture -- record_build`; a 1 MB
/// provision 184.7 -> 116.8 µs).
///
/// NB: serde_json skips a string 8 bytes a step (it looks for control
/// characters as well as the closing quote); [`scan`] finds the quote with
/// SIMD, and the control-character and UTF-8 checks vectorise. Only a
/// string value of 64 KiB or more among the fields read would differ (read
/// as empty): ids are never that long.
#[inline(never)]
fn long_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8], scanned: Option<&Scanned>) -> T {
    let here;
    let scanned = match scanned {
        Some(s) => s,
        None => {
            here = scan::scan(body);
            &here
        }
    };
    match scan::without_long_strings(body, scanned) {
        Some(short) => serde_json::from_slice(&short).unwrap_or_default(),
        None => T::default(),
    }
}

/// A value kept when it is a string, skipped (not built) otherwise.
struct Str(Option<String>);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Str, E> {
                Ok(Str(Some(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Str, E> {
                Ok(Str(Some(s)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_unit<E>(self) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Str, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Str, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `previous_values`: its `plan_id` when it is an object, else nothing.
struct Previous(Option<String>);

impl<'de> Deserialize<'de> for Previous {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(Object::<1>::new(["plan_id"]))?;
        let [plan_id] = v.0;
        Ok(Previous(plan_id))
    }
}

/// The string values of `N` top-level keys of an object (any other JSON
/// value: none of them).
struct Object<const N: usize> {
    keys: [&'static str; N],
    /// For `previous_values`, read as [`Previous`] instead of [`Str`].
    previous: bool,
}

/// The keys' values, and `previous_values.plan_id`.
struct Found<const N: usize>([Option<String>; N], Option<String>);

impl<const N: usize> Found<N> {
    /// Nothing found (a value that is not an object).
    fn none() -> Self {
        Found(std::array::from_fn(|_| None), None)
    }
}

impl<const N: usize> Object<N> {
    fn new(keys: [&'static str; N]) -> Self {
        Object {
            keys,
            previous: false,
        }
    }
}

impl<'de, const N: usize> Visitor<'de> for Object<N> {
    type Value = Found<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Found<N>, A::Error> {
        let mut found = Found::none();
        // NB: keys as `Cow`: borrowed unless escaped (`"plan\u005fid"`).
        while let Some(key) = a.next_key::<std::borrow::Cow<'de, str>>()? {
            if let Some(i) = self.keys.iter().position(|k| *k == key) {
                found.0[i] = a.next_value::<Str>()?.0;
            } else if self.previous && key == "previous_values" {
                found.1 = a.next_value::<Previous>()?.0;
            } else {
                a.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Found<N>, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::none())
    }

    fn visit_str<E>(self, _: &str) -> Result<Found<N>, E> {
        Ok(Found::none())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found<N>, E> {
        Ok(Found::none())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Found<N>, E> {
        Ok(Found::none())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Found<N>, E> {
        Ok(Found::none())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found<N>, E> {
        Ok(Found::none())
    }

    fn visit_unit<E>(self) -> Result<Found<N>, E> {
        Ok(Found::none())
    }
}

impl<'de> Deserialize<'de> for RequestFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut o = Object::new(["service_id", "plan_id"]);
        o.previous = true;
        let Found([service_id, plan_id], previous_plan_id) = d.deserialize_any(o)?;
        Ok(RequestFields {
            service_id,
            plan_id,
            previous_plan_id,
        })
    }
}

impl<'de> Deserialize<'de> for ResponseFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = Object::new(["operation", "state", "description"]);
        let Found([operation, state, description], _) = d.deserialize_any(o)?;
        Ok(ResponseFields {
            operation,
            state,
            description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// [`super::pick`], checked to read the same with the body scanned
    /// beforehand (as the capture tap does).
    fn pick<T>(body: &[u8]) -> T
    where
        T: for<'de> Deserialize<'de> + Default + PartialEq + fmt::Debug,
    {
        let here: T = super::pick(body, None);
        let tapped: T = super::pick(body, Some(&scan::scan(body)));
        assert_eq!(here, tapped, "scanned by the tap");
        here
    }

    /// What `Value::get(key).as_str()` reads, the reference.
    fn by_tree(body: &str, key: &str) -> Option<String> {
        let v: Value = serde_json::from_str(body).ok()?;
        v.get(key).and_then(Value::as_str).map(str::to_string)
    }

    #[test]
    fn reads_what_the_tree_reads() {
        let bodies = [
            r#"{"service_id":"s","plan_id":"p","parameters":{"x":[1,{"plan_id":"no"}]}}"#,
            r#"{"service_id":1,"plan_id":null,"x":"y"}"#,
            r#"{"service_id":"a","service_id":"b"}"#,
            r#"{"service_id":"a","service_id":{"x":1}}"#,
            r#"{"plan\u005fid":"escaped key","service_id":"caf\u00e9"}"#,
            r#"["service_id","s"]"#,
            r#""service_id""#,
            r#"{"service_id":"s"} trailing"#,
            r#"{"service_id":"s","#,
            "",
            "not json",
            r#"{"operation":"task-1","state":"in progress","description":"d\n"}"#,
        ];
        for body in bodies {
            let r: RequestFields = pick(body.as_bytes());
            assert_eq!(r.service_id, by_tree(body, "service_id"), "{body}");
            assert_eq!(r.plan_id, by_tree(body, "plan_id"), "{body}");
            let s: ResponseFields = pick(body.as_bytes());
            assert_eq!(s.operation, by_tree(body, "operation"), "{body}");
            assert_eq!(s.state, by_tree(body, "state"), "{body}");
            assert_eq!(s.description, by_tree(body, "description"), "{body}");
        }
    }

    #[test]
    fn bodies_with_long_strings_read_what_the_tree_reads() {
        let long = "x".repeat(LONG_STRING + 10);
        let bodies: Vec<Vec<u8>> = vec![
            format!(r#"{{"service_id":"s","parameters":{{"note":"{long}"}},"plan_id":"p"}}"#)
                .into(),
            format!(r#"{{"{long}":1,"service_id":"s","plan_id":"{long}x"}}"#).into(),
            // Not ASCII, valid UTF-8: checked, and skipped.
            format!(
                r#"{{"service_id":"s","note":"{}","plan_id":"p"}}"#,
                "é€".repeat(LONG_STRING / 4)
            )
            .into(),
            // Escapes inside: left to serde_json.
            format!(r#"{{"service_id":"s","note":"{long}\"\\","plan_id":"p"}}"#).into(),
            format!(r#"{{"service_id":"s","note":"{long}\u0041"}}"#).into(),
            // Not JSON: a control character, invalid UTF-8, no closing
            // quote, garbage after a long string.
            format!("{{\"service_id\":\"s\",\"note\":\"{long}\u{1}\"}}").into(),
            [
                &br#"{"service_id":"s","note":""#[..],
                long.as_bytes(),
                b"\xff\"}",
            ]
            .concat(),
            format!(r#"{{"service_id":"s","note":"{long}"#).into(),
            format!(r#"{{"service_id":"s","note":"{long}"}} x"#).into(),
            format!(r#"{{"service_id":"s","note":"{long}\"#).into(),
        ];
        for body in &bodies {
            let tree: Option<Value> = serde_json::from_slice(body).ok();
            let get = |k: &str| {
                tree.as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let r: RequestFields = pick(body);
            let head = String::from_utf8_lossy(&body[..40]);
            assert_eq!(r.service_id, get("service_id"), "{head}");
            // NB: the one difference, by design: a read field of 64 KiB or
            // more is read as empty.
            let plan = get("plan_id").map(|p| match p.len() >= LONG_STRING {
                true => String::new(),
                false => p,
            });
            assert_eq!(r.plan_id, plan, "{head}");
        }
    }

    #[test]
    fn hostile_long_bodies_cost_one_pass_and_read_what_the_tree_reads() {
        // A megabyte of quotes (thousands of empty strings), of escapes in
        // one string, of a lone backslash run, and of an unclosed string.
        let n = LONG_STRING * 16;
        let bodies: Vec<Vec<u8>> = vec![
            "\"".repeat(n).into(),
            format!(r#"{{"service_id":"s","note":"{}"}}"#, r#"\""#.repeat(n / 2)).into(),
            format!(r#"{{"service_id":"s","note":"{}"#, "\\".repeat(n)).into(),
            format!(r#"{{"service_id":"s","note":"{}"#, "x".repeat(n)).into(),
            format!(r#"[{}]"#, r#""x","#.repeat(n / 4) + r#""x""#).into(),
        ];
        for body in &bodies {
            let tree: Option<Value> = serde_json::from_slice(body).ok();
            let want = tree
                .as_ref()
                .and_then(|v| v.get("service_id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let r: RequestFields = pick(body);
            assert_eq!(
                r.service_id,
                want,
                "{}",
                String::from_utf8_lossy(&body[..30])
            );
        }
    }

    #[test]
    fn previous_plan_id_only_from_an_object() {
        let r: RequestFields = pick(br#"{"previous_values":{"plan_id":"old","x":[1]}}"#);
        assert_eq!(r.previous_plan_id.as_deref(), Some("old"));
        let r: RequestFields = pick(br#"{"previous_values":["plan_id","old"]}"#);
        assert_eq!(r.previous_plan_id, None);
        let r: RequestFields = pick(br#"{"previous_values":"old"}"#);
        assert_eq!(r.previous_plan_id, None);
    }

    #[test]
    fn a_megabyte_of_nesting_is_skipped_without_blowing_the_stack() {
        // NB: the tree refuses past 128 levels; skipping reads on, and must
        // not recurse per level (a 1 MB body of `[` on the capture thread).
        let deep = format!(
            "{{\"service_id\":\"s\",\"x\":{}{}}}",
            "[".repeat(1 << 20),
            "]".repeat(1 << 20)
        );
        let r: RequestFields = pick(deep.as_bytes());
        assert_eq!(r.service_id.as_deref(), Some("s"));
        let cut: RequestFields = pick(&deep.as_bytes()[..1 << 20]);
        assert_eq!(cut, RequestFields::default());
    }
}
