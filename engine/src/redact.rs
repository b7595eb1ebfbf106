//! URLs as they may be shown: source URLs often carry credentials
//! (`?token=…`, `https://user:password@…`), and anything printed — logs,
//! a source's `last_error`, `livestrom sources` output, the admin API —
//! must not repeat them. Query keys stay (they say what the parameter is
//! for); values and userinfo passwords become `REDACTED`.

use std::borrow::Cow;

use url::Url;

/// What replaces a hidden value.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names (lowercase substrings) that carry credentials.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "auth",
    "sig",
    "credential",
    "session",
];

/// `url` as it may be sent to subscribers (an event's `url` when the item
/// has no link of its own): the userinfo is removed and credential-like
/// query values (`token`, `api_key`, `secret`, `sig`, …) become
/// [`REDACTED`]; other parameters stay, since they usually say which page
/// it is (`?id=42`, `?format=rss`).
pub fn public_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let is_secret = |k: &str| {
        let lower = k.to_ascii_lowercase();
        SECRET_PARAMS.iter().any(|s| lower.contains(s))
    };
    // Only a query with a secret is rewritten (rewriting re-encodes it).
    if u.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// `url` with every query value and the userinfo password replaced by
/// [`REDACTED`]: `https://u:pw@h/p?token=abc&x` → `https://u:REDACTED@h/p?token=REDACTED&REDACTED`.
pub fn redact_url(url: &Url) -> String {
    redact_url_text(url.as_str())
}

/// [`redact_url`] for text that may not parse as a URL (a `Location`
/// header, a config value): the same rules applied to the text as written.
pub fn redact_url_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    if let Some(scheme_end) = rest.find("://") {
        let (scheme, after) = rest.split_at(scheme_end + 3);
        out.push_str(scheme);
        let authority_len = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, tail) = after.split_at(authority_len);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = tail;
    }
    let Some(query_start) = rest.find('?') else {
        out.push_str(rest);
        return out;
    };
    let (path, after) = rest.split_at(query_start + 1);
    out.push_str(path);
    let query_len = after.find('#').unwrap_or(after.len());
    let (query, fragment) = after.split_at(query_len);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, "")) => {
                out.push_str(key);
                out.push('=');
            }
            Some((key, _value)) => {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
            }
            // A bare value (`?abc123`) may be the secret itself.
            None if pair.is_empty() => {}
            None => out.push_str(REDACTED),
        }
    }
    out.push_str(fragment);
    out
}

/// `text` with every `http://` / `https://` URL in it redacted: for
/// messages that may quote a URL the caller did not format itself (another
/// library's error, a message stored by an older version).
pub fn redact_urls_in(text: &str) -> Cow<'_, str> {
    let find = |from: &str| {
        [from.find("http://"), from.find("https://")]
            .into_iter()
            .flatten()
            .min()
    };
    let Some(mut at) = find(text) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let (before, url_on) = rest.split_at(at);
        out.push_str(before);
        // A URL in prose ends at whitespace or the punctuation that quotes it.
        let len = url_on
            .find(|c: char| {
                c.is_whitespace() || matches!(c, ')' | '(' | '"' | '\'' | '`' | '<' | '>')
            })
            .unwrap_or(url_on.len());
        let (url, after) = url_on.split_at(len);
        out.push_str(&redact_url_text(url));
        rest = after;
        match find(rest) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_drop_credentials_and_keep_page_parameters() {
        let u = Url::parse("https://user:pw@example.com/feed?id=42&api_key=abc&Token=x&format=rss")
            .expect("url");
        assert_eq!(
            public_url(&u),
            "https://example.com/feed?id=42&api_key=REDACTED&Token=REDACTED&format=rss"
        );
        let plain = Url::parse("https://example.com/a").expect("url");
        assert_eq!(public_url(&plain), "https://example.com/a");
        // Without a secret the query is left exactly as written.
        let q = Url::parse("https://example.com/s?q=a%20b&x=1").expect("url");
        assert_eq!(public_url(&q), "https://example.com/s?q=a%20b&x=1");
    }

    #[test]
    fn query_values_and_passwords_are_hidden_keys_and_hosts_kept() {
        let cases = [
            (
                "https://api.example.org/feed?token=s3cret&page=2",
                "https://api.example.org/feed?token=REDACTED&page=REDACTED",
            ),
            (
                "https://user:pa55@example.org:8443/p?k=v#frag",
                "https://user:REDACTED@example.org:8443/p?k=REDACTED#frag",
            ),
            ("http://user@example.org/", "http://user@example.org/"),
            (
                "http://example.org/?abc123&empty=&&x=1",
                "http://example.org/?REDACTED&empty=&&x=REDACTED",
            ),
            ("http://example.org/plain", "http://example.org/plain"),
            ("/relative?sig=xyz", "/relative?sig=REDACTED"),
            ("not a url?key=value", "not a url?key=REDACTED"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url_text(input), want, "{input}");
        }
        let parsed =
            Url::parse("https://u:p%40ss@example.org/a?b=c%20d").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            redact_url(&parsed),
            "https://u:REDACTED@example.org/a?b=REDACTED"
        );
    }

    #[test]
    fn urls_quoted_in_messages_are_redacted_and_the_rest_kept() {
        let msg = "error sending request for url (https://h.example/f?token=abc&x=1): boom; \
                   see `http://u:pw@other.example/?k=v` and https://plain.example/";
        assert_eq!(
            redact_urls_in(msg),
            "error sending request for url (https://h.example/f?token=REDACTED&x=REDACTED): boom; \
             see `http://u:REDACTED@other.example/?k=REDACTED` and https://plain.example/"
        );
        assert!(matches!(
            redact_urls_in("HTTP 500, no url here"),
            Cow::Borrowed(_)
        ));
    }
}
