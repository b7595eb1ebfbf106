//! JSON Feed leniency: the document is normalised to the shape feed-rs
//! deserialises (every field it reads, with the type it expects) before it
//! is handed over, so one slip does not fail the whole feed. Lenient where
//! mainstream readers are, strict only where the meaning is lost:
//!
//! - `version` not the spec URL ("1.0", "1.1", missing) → 1.1; `title`
//!   missing → empty;
//! - ids, titles, texts and dates that are numbers → their decimal text;
//!   `tags` as one string → a one-tag list; an `author`/`authors`,
//!   `attachments` or `items` given as one object → a list of one;
//!   `size_in_bytes` as a numeric string → the number;
//! - any other optional field of the wrong type (`"url": 42`, `"id": true`,
//!   `"authors": "x"` is kept as a name) → dropped, as if absent; items
//!   and attachments that are not objects, and attachments without a `url`,
//!   → dropped;
//! - refused: not JSON, not an object, or no `items` list (a document without
//!   one is not a JSON Feed, unless its `version` says it is one, with no items).

use serde_json::{Map, Value};

use super::FeedError;

/// The normalised document and how many items it holds (objects or not).
#[derive(Debug)]
pub(crate) struct Normalised {
    /// The document as feed-rs expects it.
    pub(crate) text: String,
    /// Entries of the upstream `items` list, before dropping non-objects.
    pub(crate) seen: usize,
}

/// Normalises a JSON Feed document (see the module doc).
pub(crate) fn normalise(doc: &str) -> Result<Normalised, FeedError> {
    let value: Value = serde_json::from_str(doc)
        .map_err(|e| FeedError::Invalid(format!("invalid JSON Feed: {e}")))?;
    let Value::Object(mut feed) = value else {
        return Err(FeedError::Invalid(format!(
            "invalid JSON Feed: the document is a JSON {}, not an object",
            kind(&value)
        )));
    };
    let declared = feed
        .get("version")
        .and_then(Value::as_str)
        .is_some_and(|v| v.contains("jsonfeed.org"));
    let items = match feed.remove("items") {
        Some(Value::Array(items)) => items,
        Some(obj @ Value::Object(_)) => vec![obj],
        None | Some(Value::Null) if declared => Vec::new(),
        None | Some(Value::Null) => {
            return Err(FeedError::Invalid(
                "not a JSON Feed: the object has no `items` list".into(),
            ))
        }
        Some(other) => {
            return Err(FeedError::Invalid(format!(
                "invalid JSON Feed: `items` is a {}, not a list",
                kind(&other)
            )))
        }
    };
    let seen = items.len();

    if !feed
        .get("version")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("https://jsonfeed.org/version/1"))
    {
        feed.insert("version".into(), "https://jsonfeed.org/version/1.1".into());
    }
    let title = text(feed.get("title")).unwrap_or_default();
    feed.insert("title".into(), title.into());
    for key in ["language", "description"] {
        string_field(&mut feed, key);
    }
    for key in ["home_page_url", "feed_url", "icon", "favicon"] {
        url_field(&mut feed, key);
    }
    authors(&mut feed);
    let items: Vec<Value> = items
        .into_iter()
        .filter_map(|it| match it {
            Value::Object(it) => Some(Value::Object(item(it))),
            _ => None,
        })
        .collect();
    feed.insert("items".into(), Value::Array(items));
    let text = serde_json::to_string(&Value::Object(feed))
        .map_err(|e| FeedError::Invalid(format!("invalid JSON Feed: {e}")))?;
    Ok(Normalised { text, seen })
}

/// One item, normalised.
fn item(mut it: Map<String, Value>) -> Map<String, Value> {
    for key in ["url", "external_url"] {
        url_field(&mut it, key);
    }
    for key in [
        "id",
        "title",
        "content_html",
        "content_text",
        "summary",
        "date_published",
        "date_modified",
    ] {
        string_field(&mut it, key);
    }
    authors(&mut it);
    let tags: Option<Vec<Value>> = match it.remove("tags") {
        Some(Value::Array(tags)) => Some(
            tags.iter()
                .filter_map(|t| text(Some(t)))
                .map(Value::from)
                .collect(),
        ),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(vec![Value::from(s)]),
        _ => None,
    };
    if let Some(tags) = tags {
        it.insert("tags".into(), Value::Array(tags));
    }
    let attachments: Option<Vec<Value>> = match it.remove("attachments") {
        Some(Value::Array(list)) => Some(list.into_iter().filter_map(attachment).collect()),
        Some(one @ Value::Object(_)) => Some(attachment(one).into_iter().collect()),
        _ => None,
    };
    if let Some(list) = attachments {
        it.insert("attachments".into(), Value::Array(list));
    }
    it
}

/// An attachment feed-rs accepts (`url` and `mime_type` strings), or `None`
/// when it has no usable `url`.
fn attachment(v: Value) -> Option<Value> {
    let Value::Object(mut a) = v else {
        return None;
    };
    let url = a.get("url").and_then(Value::as_str)?.trim().to_owned();
    if url.is_empty() {
        return None;
    }
    a.insert("url".into(), url.into());
    let mime = a
        .get("mime_type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned();
    a.insert("mime_type".into(), mime.into());
    string_field(&mut a, "title");
    let size = match a.get("size_in_bytes") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match size {
        Some(n) => a.insert("size_in_bytes".into(), n.into()),
        None => a.remove("size_in_bytes"),
    };
    Some(Value::Object(a))
}

/// `author` (1.0) and `authors` (1.1): objects with string `name`/`url`; a
/// bare string is a name; a single object where a list is expected is a
/// list of one.
fn authors(obj: &mut Map<String, Value>) {
    let author = obj.remove("author").and_then(person);
    if let Some(a) = author {
        obj.insert("author".into(), a);
    }
    let list: Option<Vec<Value>> = match obj.remove("authors") {
        Some(Value::Array(list)) => Some(list.into_iter().filter_map(person).collect()),
        Some(one @ (Value::Object(_) | Value::String(_))) => {
            Some(person(one).into_iter().collect())
        }
        _ => None,
    };
    if let Some(list) = list {
        obj.insert("authors".into(), Value::Array(list));
    }
}

fn person(v: Value) -> Option<Value> {
    let mut p = match v {
        Value::Object(p) => p,
        Value::String(name) if !name.trim().is_empty() => {
            let mut p = Map::new();
            p.insert("name".into(), name.into());
            p
        }
        _ => return None,
    };
    string_field(&mut p, "name");
    url_field(&mut p, "url");
    Some(Value::Object(p))
}

/// Keeps `key` as a string: a number becomes its text; anything else that
/// is not a string is dropped.
fn string_field(obj: &mut Map<String, Value>, key: &str) {
    let Some(v) = obj.remove(key) else {
        return;
    };
    if let Some(s) = text(Some(&v)) {
        obj.insert(key.into(), s.into());
    }
}

/// Keeps `key` only if it is a string (a number is no URL).
fn url_field(obj: &mut Map<String, Value>, key: &str) {
    if obj.get(key).is_some_and(|v| !v.is_string()) {
        obj.remove(key);
    }
}

/// A string as it is, a number as its decimal text; `None` otherwise.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(doc: &str) -> Value {
        let n = normalise(doc).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&n.text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn wrong_types_are_repaired_or_dropped() {
        let v = norm(
            r#"{"version":"1","title":7,"home_page_url":{"x":1},"author":"Ann",
            "items":[{"id":42,"url":17,"title":2024,"tags":"rust","date_published":false,
              "authors":{"name":"Bo","url":5},
              "attachments":{"url":"https://example.org/a.mp3","size_in_bytes":"1200"}},
             "not an item",
             {"id":true,"tags":[1,"x",null],"attachments":[{"mime_type":"audio/mpeg"},{"url":"/b.mp3"}]}]}"#,
        );
        assert_eq!(v["version"], "https://jsonfeed.org/version/1.1");
        assert_eq!(v["title"], "7");
        assert!(v.get("home_page_url").is_none());
        assert_eq!(v["author"]["name"], "Ann");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 2);
        let a = &items[0];
        assert_eq!(a["id"], "42");
        assert!(a.get("url").is_none());
        assert_eq!(a["title"], "2024");
        assert_eq!(a["tags"], serde_json::json!(["rust"]));
        assert!(a.get("date_published").is_none());
        assert_eq!(a["authors"], serde_json::json!([{"name": "Bo"}]));
        assert_eq!(
            a["attachments"],
            serde_json::json!([{"url": "https://example.org/a.mp3", "mime_type": "application/octet-stream", "size_in_bytes": 1200}])
        );
        let b = &items[1];
        assert!(b.get("id").is_none());
        assert_eq!(b["tags"], serde_json::json!(["1", "x"]));
        assert_eq!(
            b["attachments"],
            serde_json::json!([{"url": "/b.mp3", "mime_type": "application/octet-stream"}])
        );
    }

    #[test]
    fn only_documents_that_cannot_be_a_feed_are_refused() {
        for (doc, says) in [
            ("{\"items\": [", "invalid JSON Feed"),
            ("[1, 2]", "is a JSON list"),
            ("{\"error\": \"rate limited\"}", "no `items` list"),
            ("{\"items\": \"none\"}", "`items` is a string"),
        ] {
            let err = normalise(doc)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(says), "{doc}: {err}");
        }
        let n = normalise(r#"{"version":"https://jsonfeed.org/version/1.1","title":"t"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.seen, 0);
        let n = normalise(r#"{"items":[1,{"id":"a"}]}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.seen, 2);
    }
}
