//! Bytes → UTF-8 text for feed documents: BOM and encoding sniffing, lenient
//! transcoding of mislabeled charsets, and small prolog repairs so feed-rs
//! (which trusts the XML declaration) always reads clean UTF-8.
//!
//! Rule, in order (documented in docs/NORMALISATION.md):
//! 1. a byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) wins;
//! 2. without a BOM, a document starting with `<` or whitespace in UTF-16/32
//!    layout (zero bytes interleaved) is read as such;
//! 3. bytes that are valid UTF-8 are UTF-8, whatever the declaration or HTTP
//!    charset claim (a non-ASCII legacy-encoded text is practically never
//!    valid UTF-8, while "declared iso-8859-1, served UTF-8" is common);
//! 4. otherwise the XML declaration's encoding, then the HTTP charset, if
//!    either names a known non-UTF encoding; else windows-1252 (the WHATWG
//!    superset of latin-1, what mislabeled "utf-8" feeds nearly always are).
//!
//! Undecodable bytes become U+FFFD; decoding never fails.

use std::sync::LazyLock;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};
use regex::Regex;

/// A decoded document and the encoding it was read as.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The document as UTF-8, BOM removed.
    pub(crate) text: String,
    /// Name of the encoding the bytes were read as.
    pub(crate) encoding: &'static str,
}

/// Decodes `body` following the module's rule.
pub(crate) fn to_utf8(body: &[u8], content_type: Option<&str>) -> Decoded {
    if let Some((enc, skip)) = sniff_bom(body) {
        return decode_as(enc, &body[skip..]);
    }
    if let Some(enc) = sniff_wide(body) {
        return decode_as(enc, body);
    }
    if let Ok(s) = simdutf8::basic::from_utf8(body) {
        return Decoded {
            text: s.to_owned(),
            encoding: "UTF-8",
        };
    }
    let declared = declared_encoding(body).and_then(|l| Encoding::for_label(l.as_bytes()));
    let http = content_type
        .and_then(charset_param)
        .and_then(|l| Encoding::for_label(l.as_bytes()));
    let legacy = [declared, http]
        .into_iter()
        .flatten()
        .find(|e| *e != UTF_8 && *e != UTF_16LE && *e != UTF_16BE && e.is_ascii_compatible())
        .unwrap_or(WINDOWS_1252);
    decode_as(Wide::Enc(legacy), body)
}

/// Rewrites the prolog of a decoded XML document so feed-rs reads it as
/// UTF-8 and recognises RSS of any 0.9x/2.x version:
/// - drops `encoding="…"` from the XML declaration (the text is UTF-8 now);
/// - gives an `<rss>` root without a version (or with 0.93/0.94/2.01…) the
///   version feed-rs dispatches on ("2.0").
///
/// Namespaces and element structure are repaired later, on the XML events
/// (`structure`).
pub(crate) fn repair_prolog(mut text: String) -> String {
    static ENC_ATTR: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"\s+encoding\s*=\s*(?:"[^"]*"|'[^']*')"#).expect("constant regex")
    });
    static RSS_ROOT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<rss(?:\s[^>]*)?>").expect("constant regex"));
    static VERSION_ATTR: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"\sversion\s*=\s*(?:"([^"]*)"|'([^']*)')"#).expect("constant regex")
    });

    let head_end = floor_char_boundary(&text, 4096);
    if let Some(start) = text[..head_end].find("<?xml") {
        if let Some(len) = text[start..].find("?>") {
            let decl = &text[start..start + len];
            let fixed = ENC_ATTR.replace(decl, "").into_owned();
            if fixed.len() != decl.len() {
                text.replace_range(start..start + len, &fixed);
            }
        }
    }
    let head_end = floor_char_boundary(&text, 16 * 1024);
    if let Some(m) = RSS_ROOT.find(&text[..head_end]) {
        let tag = m.as_str();
        let version = VERSION_ATTR
            .captures(tag)
            .and_then(|c| c.get(1).or_else(|| c.get(2)))
            .map(|v| v.as_str().trim());
        let supported = matches!(version, Some("2.0" | "0.91" | "0.92" | ""));
        if !supported {
            let stripped = VERSION_ATTR.replace(tag, "").into_owned();
            let fixed = format!("<rss version=\"2.0\"{}", &stripped[4..]);
            text.replace_range(m.range(), &fixed);
        }
    }
    text
}

/// Escapes every `&` that does not start a character or entity reference
/// (`&amp;`, `&#38;`, `&#x26;`, `&name;`) as `&amp;`, outside CDATA sections
/// and comments. A bare `&` in a URL or a title ("Q&A") is the most common
/// way real feeds are not well-formed XML, and it made the whole document
/// unreadable; every mainstream reader reads it as the character.
pub(crate) fn escape_stray_ampersands(text: String) -> String {
    if !text.contains('&') {
        return text;
    }
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    // Only `<` (a CDATA section or comment may start) and `&` matter.
    while let Some(off) = memchr::memchr2(b'<', b'&', &b[i..]) {
        i += off;
        let skip_past = |end: &str| text[i..].find(end).map_or(b.len(), |p| i + p + end.len());
        match b[i] {
            b'<' if b[i..].starts_with(b"<![CDATA[") => i = skip_past("]]>"),
            b'<' if b[i..].starts_with(b"<!--") => i = skip_past("-->"),
            b'&' => {
                if !starts_reference(&b[i + 1..]) {
                    let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 64));
                    o.push_str(&text[copied..i]);
                    o.push_str("&amp;");
                    copied = i + 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    match out {
        None => text,
        Some(mut o) => {
            o.push_str(&text[copied..]);
            o
        }
    }
}

/// `rest` (what follows a `&`) is `#digits;`, `#xhex;` or `name;`.
fn starts_reference(rest: &[u8]) -> bool {
    let Some(end) = rest.iter().take(40).position(|&c| c == b';') else {
        return false;
    };
    match &rest[..end] {
        [b'#', b'x' | b'X', hex @ ..] => !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit),
        [b'#', dec @ ..] => !dec.is_empty() && dec.iter().all(u8::is_ascii_digit),
        [first, tail @ ..] => {
            (first.is_ascii_alphabetic() || matches!(first, b'_' | b':'))
                && tail
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b':'))
        }
        [] => false,
    }
}

/// The `charset` parameter of a Content-Type value.
pub(crate) fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset"))
            .then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

enum Wide {
    Enc(&'static Encoding),
    Utf32Le,
    Utf32Be,
}

fn sniff_bom(b: &[u8]) -> Option<(Wide, usize)> {
    match b {
        [0xFF, 0xFE, 0, 0, ..] => Some((Wide::Utf32Le, 4)),
        [0, 0, 0xFE, 0xFF, ..] => Some((Wide::Utf32Be, 4)),
        [0xEF, 0xBB, 0xBF, ..] => Some((Wide::Enc(UTF_8), 3)),
        [0xFF, 0xFE, ..] => Some((Wide::Enc(UTF_16LE), 2)),
        [0xFE, 0xFF, ..] => Some((Wide::Enc(UTF_16BE), 2)),
        _ => None,
    }
}

fn sniff_wide(b: &[u8]) -> Option<Wide> {
    let ascii = |c: u8| c == b'<' || c.is_ascii_whitespace();
    match b {
        [c, 0, 0, 0, ..] if ascii(*c) => Some(Wide::Utf32Le),
        [0, 0, 0, c, ..] if ascii(*c) => Some(Wide::Utf32Be),
        [c, 0, d, 0, ..] if ascii(*c) && d.is_ascii() && *d != 0 => Some(Wide::Enc(UTF_16LE)),
        [0, c, 0, d, ..] if ascii(*c) && d.is_ascii() && *d != 0 => Some(Wide::Enc(UTF_16BE)),
        _ => None,
    }
}

fn decode_as(enc: Wide, bytes: &[u8]) -> Decoded {
    let (text, encoding) = match enc {
        Wide::Enc(e) => {
            let (cow, _had_errors) = e.decode_without_bom_handling(bytes);
            (cow.into_owned(), e.name())
        }
        Wide::Utf32Le => (decode_utf32(bytes, u32::from_le_bytes), "UTF-32LE"),
        Wide::Utf32Be => (decode_utf32(bytes, u32::from_be_bytes), "UTF-32BE"),
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    Decoded { text, encoding }
}

fn decode_utf32(bytes: &[u8], from: fn([u8; 4]) -> u32) -> String {
    bytes
        .chunks(4)
        .map(|c| match <[u8; 4]>::try_from(c) {
            Ok(four) => char::from_u32(from(four)).unwrap_or(char::REPLACEMENT_CHARACTER),
            Err(_) => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// The `encoding` pseudo-attribute of an ASCII-compatible XML declaration.
fn declared_encoding(body: &[u8]) -> Option<String> {
    static DECL: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
        regex::bytes::Regex::new(r#"<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']"#)
            .expect("constant regex")
    });
    let head = &body[..body.len().min(4096)];
    DECL.captures(head)
        .and_then(|c| c.get(1))
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_with_bom_decodes() {
        let mut b = vec![0xFF, 0xFE];
        for u in "<rss>é</rss>".encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        let d = to_utf8(&b, None);
        assert_eq!(d.text, "<rss>é</rss>");
    }

    #[test]
    fn mislabeled_utf8_falls_back_to_windows_1252() {
        let b = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><rss><t>caf\xe9 \x93q\x94</t></rss>";
        let d = to_utf8(b, Some("text/xml; charset=utf-8"));
        assert!(d.text.contains("café \u{201c}q\u{201d}"), "{}", d.text);
    }

    #[test]
    fn declared_legacy_encoding_is_used_for_non_utf8_bytes() {
        let b = b"<?xml version=\"1.0\" encoding=\"iso-8859-2\"?><rss><t>\xb1</t></rss>";
        assert!(to_utf8(b, None).text.contains('ą'));
    }

    #[test]
    fn valid_utf8_wins_over_a_wrong_declaration() {
        let b = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><rss><t>é</t></rss>".as_bytes();
        assert!(to_utf8(b, None).text.contains("<t>é</t>"));
    }

    #[test]
    fn prolog_loses_encoding_and_rss_gets_a_version() {
        let t =
            repair_prolog("<?xml version='1.0' encoding='koi8-r' ?>\n<rss xmlns:x=\"y\">".into());
        assert_eq!(
            t,
            "<?xml version='1.0' ?>\n<rss version=\"2.0\" xmlns:x=\"y\">"
        );
        let t = repair_prolog("<rss version=\"0.94\">".into());
        assert_eq!(t, "<rss version=\"2.0\">");
        let t = repair_prolog("<rss version=\"2.0\">".into());
        assert_eq!(t, "<rss version=\"2.0\">");
    }

    #[test]
    fn stray_ampersands_are_escaped_and_references_kept() {
        let t = escape_stray_ampersands(
            "<a href=\"?x=1&y=2\">Q&A &amp; &#38; &#x26; &nbsp; &; & </a><![CDATA[a&b]]><!-- c&d -->".into(),
        );
        assert_eq!(
            t,
            "<a href=\"?x=1&amp;y=2\">Q&amp;A &amp; &#38; &#x26; &nbsp; &amp;; &amp; </a><![CDATA[a&b]]><!-- c&d -->"
        );
        let clean = "<t>a &amp; b</t>".to_owned();
        assert_eq!(escape_stray_ampersands(clean.clone()), clean);
        // An unterminated CDATA section or comment ends the scan, no panic.
        assert_eq!(
            escape_stray_ampersands("<![CDATA[a&b".into()),
            "<![CDATA[a&b"
        );
        assert_eq!(escape_stray_ampersands("é&<!--".into()), "é&amp;<!--");
    }

    #[test]
    fn charset_param_is_found() {
        assert_eq!(
            charset_param("text/xml; Charset=\"ISO-8859-1\"").as_deref(),
            Some("ISO-8859-1")
        );
        assert_eq!(charset_param("text/xml"), None);
    }
}
