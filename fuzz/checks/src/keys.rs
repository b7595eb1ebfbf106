//! `api_key`: presented API keys (the offline format check, and which key
//! a request carries) and the key settings an operator types.

use axum::http::Request;
use livestrom_edge::auth::presented_key;
use livestrom_engine::keys::{
    check_format, parse_rate, parse_scopes, validate_name, FormatError, KEY_BODY_LEN, KEY_PREFIX,
    MAX_RATE, MIN_RATE,
};

/// Input: text (lossy UTF-8). As a key: a key that passes the format check
/// has the documented shape and no one-character substitution of it
/// passes. As a request: the text split on `\n` into `X-API-Key`,
/// `Authorization` and `?api_key=` values gives one key only when they
/// agree, and the key is one of them. As settings: accepted scopes write
/// back and parse to the same, accepted rates are within bounds.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    key_format(&text);
    carriers(&text);
    if let Ok(scopes) = parse_scopes(&text) {
        let written: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let again = parse_scopes(&written.join(","))
            .unwrap_or_else(|e| panic!("{written:?} (written back) refused: {e}"));
        assert_eq!(again, scopes, "scopes change when written back");
    }
    if let Ok(rate) = parse_rate(&text) {
        assert!(
            (MIN_RATE..=MAX_RATE).contains(&rate),
            "{text:?} → rate {rate}"
        );
    }
    if validate_name(&text).is_ok() {
        assert!(!text.trim().is_empty(), "a blank key name was accepted");
    }
}

fn key_format(key: &str) {
    if check_format(key) != Ok(()) {
        return;
    }
    assert_eq!(key.len(), KEY_PREFIX.len() + KEY_BODY_LEN, "{key:?}");
    assert!(key.starts_with(KEY_PREFIX), "{key:?}");
    assert!(
        key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()),
        "{key:?}"
    );
    for i in KEY_PREFIX.len()..key.len() {
        let mut typo = key.as_bytes().to_vec();
        typo[i] = if typo[i] == b'z' { b'0' } else { typo[i] + 1 };
        let typo = String::from_utf8_lossy(&typo);
        let verdict = check_format(&typo);
        // `9` + 1 is `:`, `Z` + 1 is `[`: outside the alphabet.
        assert!(
            verdict == Err(FormatError::Checksum) || verdict == Err(FormatError::Alphabet),
            "typo {typo:?} of {key:?}: {verdict:?}"
        );
    }
}

fn carriers(text: &str) {
    let mut parts = text.splitn(3, '\n');
    let (header, bearer, query) = (parts.next(), parts.next(), parts.next());
    let mut req = Request::builder();
    let mut sent: Vec<String> = Vec::new();
    // What each carrier should yield, as `presented_key` reads it: header
    // values trimmed; an `X-API-Key` that is not ASCII text kept as U+FFFD
    // (so it is refused as malformed); an `Authorization` that is not
    // ASCII text ignored.
    if let Some(h) = header.filter(|h| !h.is_empty()) {
        req = req.header("x-api-key", h);
        sent.push(if h.is_ascii() {
            h.trim().to_owned()
        } else {
            "\u{fffd}".to_owned()
        });
    }
    if let Some(b) = bearer.filter(|b| !b.is_empty()) {
        req = req.header("authorization", format!("Bearer {b}"));
        if b.is_ascii() {
            sent.push(b.trim().to_owned());
        }
    }
    let query: String = query
        .map(|q| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("api_key", q)
                .finish()
        })
        .unwrap_or_default();
    sent.extend(parts_of_query(&query));
    let uri = if query.is_empty() {
        "/v1/stream".to_owned()
    } else {
        format!("/v1/stream?{query}")
    };
    let Ok(req) = req.uri(uri).body(()) else {
        return; // a value HTTP cannot carry
    };
    let (parts, ()) = req.into_parts();
    match presented_key(&parts) {
        Ok(None) => assert!(sent.iter().all(String::is_empty), "keys {sent:?} not seen"),
        Ok(Some(key)) => {
            assert!(!key.is_empty(), "an empty key");
            assert!(sent.contains(&key), "{key:?} is none of {sent:?}");
            assert!(
                sent.iter().filter(|s| !s.is_empty()).all(|s| *s == key),
                "{sent:?} disagree, yet {key:?} was taken"
            );
        }
        Err(p) => {
            assert_eq!(p.status, 400, "{p:?}");
            let distinct: std::collections::BTreeSet<&String> =
                sent.iter().filter(|s| !s.is_empty()).collect();
            assert!(distinct.len() > 1, "refused as conflicting: {sent:?}");
        }
    }
}

fn parts_of_query(query: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| k == "api_key" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .collect()
}
