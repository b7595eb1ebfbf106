//! URLs as they may be shown: source URLs often carry credentials
//! (`?token=…`, `https://user:password@…`), and anything printed — logs,
//! a source's `last_error`, `livestrom sources` output, the admin API —
//! must not repeat them. Query keys stay (they say what the parameter is
//! for); values and userinfo passwords become `REDACTED`.

use std::borrow::Cow;

use url::Url;

/// What replaces a hidden value.
pub const REDACTED: &str = "REDACTED";

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
