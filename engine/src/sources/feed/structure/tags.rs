//! Start tags as written: their qualified name and raw attributes read, one
//! attribute set, and a start tag written back.

use quick_xml::events::BytesStart;

/// A raw attribute: qualified name and value exactly as written (still escaped).
pub(super) type Attr = (String, String);

pub(super) fn qname_of(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}

/// The attributes as written; `None` if they are malformed (then the tag is
/// left alone).
pub(super) fn attrs_of(e: &BytesStart<'_>) -> Option<Vec<Attr>> {
    e.attributes()
        .map(|a| {
            let a = a.ok()?;
            Some((a.key.as_ref().to_owned(), a.value.into_owned()))
        })
        .collect()
}

pub(super) fn set_attr(attrs: &mut Vec<Attr>, name: &str, value: &str) {
    match attrs.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => attrs.push((name.to_owned(), value.to_owned())),
    }
}

/// A start tag; values are written as they were read (already escaped), in
/// double quotes unless the value holds one.
pub(super) fn start_tag(qname: &str, attrs: &[Attr], empty: bool) -> String {
    let mut s = format!("<{qname}");
    for (k, v) in attrs {
        let q = if v.contains('"') { '\'' } else { '"' };
        s.push_str(&format!(" {k}={q}{v}{q}"));
    }
    s.push_str(if empty { "/>" } else { ">" });
    s
}
