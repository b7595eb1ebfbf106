//! Bytes → text for HTML pages: is it HTML at all (Content-Type and a sniff of
//! the first bytes), and which character encoding (BOM, header, `<meta>`,
//! then UTF-8 if valid, else windows-1252 as browsers do).

use std::borrow::Cow;
use std::sync::LazyLock;

use encoding_rs::Encoding;

/// How many leading bytes are sniffed for markup and a `<meta charset>`.
const SNIFF_BYTES: usize = 4096;

/// Content types that are HTML.
const HTML_TYPES: &[&str] = &["text/html", "application/xhtml+xml"];

/// Content types that may hold HTML despite the label (sniffed).
const AMBIGUOUS_TYPES: &[&str] = &[
    "text/plain",
    "application/octet-stream",
    "application/xml",
    "text/xml",
    "binary/octet-stream",
    "unknown/unknown",
];

/// Checks that `body` is an HTML page, returning why not.
pub(crate) fn check_html(body: &[u8], content_type: Option<&str>) -> Result<(), String> {
    let essence = content_type.map(mime_essence);
    let head = &body[..body.len().min(SNIFF_BYTES)];
    if head.contains(&0) && !starts_with_utf16_bom(head) {
        return Err(format!(
            "the body is binary{}",
            describe(essence.as_deref())
        ));
    }
    match essence.as_deref() {
        Some(e) if HTML_TYPES.contains(&e) => Ok(()),
        Some(e) if !e.is_empty() && !AMBIGUOUS_TYPES.contains(&e) => {
            Err(format!("content type is {e}, expected text/html"))
        }
        _ => {
            if looks_like_html(head) {
                Ok(())
            } else {
                Err(format!(
                    "the body does not look like HTML ({}){}",
                    what_it_looks_like(head),
                    describe(essence.as_deref())
                ))
            }
        }
    }
}

/// Decodes the body to text with the page's character encoding.
pub(crate) fn decode<'a>(body: &'a [u8], content_type: Option<&str>) -> Cow<'a, str> {
    if let Some((enc, bom_len)) = Encoding::for_bom(body) {
        let (text, _) = enc.decode_without_bom_handling(&body[bom_len..]);
        return text;
    }
    let declared = content_type
        .and_then(charset_param)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .or_else(|| meta_charset(&body[..body.len().min(SNIFF_BYTES)]));
    // A page cannot declare itself UTF-16 from inside (it would not be ASCII-compatible).
    let declared = declared.map(|e| {
        if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
            encoding_rs::UTF_8
        } else {
            e
        }
    });
    match declared {
        Some(enc) => enc.decode_without_bom_handling(body).0,
        None => match simdutf8::basic::from_utf8(body) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => {
                encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(body)
                    .0
            }
        },
    }
}

fn describe(essence: Option<&str>) -> String {
    match essence {
        Some(e) if !e.is_empty() => format!(", content type {e}"),
        _ => String::new(),
    }
}

fn mime_essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn charset_param(ct: &str) -> Option<String> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    static META: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
        regex::bytes::Regex::new(r#"(?i-u)<meta\b[^>]*?charset\s*=\s*["']?\s*([a-z0-9_:.\-]+)"#)
            .expect("built-in regex is valid")
    });
    let caps = META.captures(head)?;
    Encoding::for_label(caps.get(1)?.as_bytes())
}

fn starts_with_utf16_bom(head: &[u8]) -> bool {
    head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF])
}

fn trimmed_start(head: &[u8]) -> &[u8] {
    let head = head.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    &head[start..]
}

fn looks_like_html(head: &[u8]) -> bool {
    if starts_with_utf16_bom(head) {
        return true;
    }
    let start = trimmed_start(head);
    if !start.starts_with(b"<") {
        return false;
    }
    let lower = start.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"<rss") || has(b"<feed") || has(b"<rdf:rdf") {
        return false;
    }
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<title",
        b"<meta",
        b"<div",
        b"<p>",
        b"<p ",
        b"<main",
        b"<table",
        b"<!--",
    ]
    .iter()
    .any(|n| has(n))
}

fn what_it_looks_like(head: &[u8]) -> &'static str {
    let start = trimmed_start(head);
    let lower = start.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    match start.first() {
        Some(b'{') | Some(b'[') => "it looks like JSON",
        Some(b'<') if has(b"<rss") || has(b"<feed") || has(b"<rdf:rdf") => {
            "it looks like an RSS/Atom feed"
        }
        Some(b'<') => "it looks like XML",
        None => "it is empty",
        _ => "it looks like plain text",
    }
}
