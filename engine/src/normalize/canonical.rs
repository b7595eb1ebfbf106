//! Canonical links and significance text: the normal forms identity and
//! fingerprints are computed from, so that tracking parameters, fragments,
//! case of scheme/host and whitespace never make a "new" item or version.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use url::Url;

use crate::sources::feed::text::collapse_whitespace;

/// Query parameters that only track the reader, never select content.
/// Compared case-insensitively; `utm_*` is matched as a prefix.
pub const TRACKING_PARAMS: &[&str] = &[
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "twclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "__hstc",
    "__hssc",
    "__hsfp",
    "hsctatracking",
    "mkt_tok",
    "ref",
    "ref_src",
    "ref_url",
    "wt.mc_id",
    "cmpid",
    "ncid",
    "sr_share",
    "oly_anon_id",
    "oly_enc_id",
    "vero_id",
    "at_medium",
    "at_campaign",
];

/// The canonical form of an absolute http(s) link: scheme and host lowercased
/// (by the URL parser, which also drops default ports), fragment dropped,
/// tracking parameters dropped; everything else, including the order of the
/// remaining parameters, kept. `None` if `link` is not an absolute URL.
pub fn canonical_link(link: &str) -> Option<String> {
    let mut url = Url::parse(link.trim()).ok()?;
    url.set_fragment(None);
    if let Some(q) = url.query() {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|pair| !pair.is_empty() && !is_tracking(pair))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else if kept.len() != q.split('&').count() {
            let joined = kept.join("&");
            url.set_query(Some(&joined));
        }
    }
    Some(url.to_string())
}

/// The text a fingerprint is computed from: URLs inside it canonicalised,
/// typographic quotes folded to ASCII, zero-width characters removed, and
/// every run of whitespace collapsed to one space. Case and other
/// punctuation are kept (they can carry meaning: "US" vs "us").
pub fn significant_text(s: &str) -> String {
    static URL_IN_TEXT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"https?://[^\s<>"'()\[\]]+"#).expect("constant regex"));
    // Only a URL with a query or a fragment is rewritten: text without
    // `?` and `#` has none, and skips the search.
    let with_urls: Cow<'_, str> =
        if s.contains("://") && memchr::memchr2(b'?', b'#', s.as_bytes()).is_some() {
            URL_IN_TEXT.replace_all(s, |c: &regex::Captures<'_>| {
                let m = &c[0];
                if m.contains('?') || m.contains('#') {
                    canonical_link(m).unwrap_or_else(|| m.to_owned())
                } else {
                    m.to_owned()
                }
            })
        } else {
            Cow::Borrowed(s)
        };
    // Every quote folded here is encoded with a 0xE2 lead byte: text
    // without one has none, and skips the copy.
    let folded: Cow<'_, str> = if with_urls.as_bytes().contains(&0xE2) {
        Cow::Owned(with_urls.chars().map(fold_quote).collect())
    } else {
        with_urls
    };
    collapse_whitespace(&folded)
}

/// A typographic quote or prime as its ASCII form; any other char as it is.
fn fold_quote(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{2032}' => '\'',
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{2033}' => '"',
        c => c,
    }
}

fn is_tracking(pair: &str) -> bool {
    let key = pair.split('=').next().unwrap_or(pair);
    let key = percent_decode_lower(key);
    key.starts_with("utm_") || TRACKING_PARAMS.contains(&key.as_str())
}

fn percent_decode_lower(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .next()
        .map(|(k, _)| k.to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_link_drops_tracking_and_fragment_only() {
        assert_eq!(
            canonical_link(
                "HTTPS://Example.COM:443/a/B?z=1&utm_source=rss&UTM_Medium=x&fbclid=9&a=2#top"
            )
            .as_deref(),
            Some("https://example.com/a/B?z=1&a=2")
        );
        assert_eq!(
            canonical_link("https://example.com/?ref=hn").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(canonical_link("not a url"), None);
    }

    #[test]
    fn every_folded_quote_starts_with_the_byte_the_fast_path_looks_for() {
        // Every char there is: the check holds whatever `fold_quote` learns.
        let mut folded = 0;
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            if fold_quote(c) == c {
                continue;
            }
            folded += 1;
            let mut buf = [0u8; 4];
            assert_eq!(c.encode_utf8(&mut buf).as_bytes()[0], 0xE2, "{c:?}");
            assert!(
                !significant_text(&format!("a {c} b")).contains(c),
                "{c:?} not folded"
            );
        }
        assert_eq!(folded, 8);
        assert_eq!(
            significant_text("plain  text\u{2014}dash"),
            "plain text\u{2014}dash"
        );
    }

    #[test]
    fn significant_text_ignores_whitespace_quotes_and_tracking() {
        assert_eq!(
            significant_text("  Read \u{201c}this\u{201d}\n\n at https://x.org/a?utm_source=z  "),
            significant_text("Read \"this\" at https://x.org/a")
        );
        assert_ne!(significant_text("US"), significant_text("us"));
    }
}
