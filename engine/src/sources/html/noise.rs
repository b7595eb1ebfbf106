//! Built-in noise rules applied to each normalised line before diffing, so
//! that text which rotates on every request does not count as a change.
//! Every rule here is listed in docs/SOURCES.md; keep the two in step.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use url::Url;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in regex is valid")
}

/// URLs written out in the text.
static URL: LazyLock<Regex> = LazyLock::new(|| re(r#"https?://[^\s<>"'`]+"#));

/// A labelled secret-ish value: `csrf_token: …`, `nonce=…`, `request id: …`.
static LABELLED_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)\b((?:csrf|xsrf)[\w-]*|authenticity[ _-]?token|_?token|nonce|(?:request|trace|correlation|session)[ _-]?id|ray[ _-]?id)(\s*[:=#]\s*)["']?[A-Za-z0-9+/=_\-.:]{6,}["']?"#,
    )
});

/// A long opaque word that mixes upper case, lower case and digits (base64/base62 tokens).
/// `/` is not part of it, so the path segments of a URL are judged one by one.
static OPAQUE_WORD: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9+_\-]{24,}={0,2}"));

/// ISO 8601 date-time with seconds: the time part is dropped, the date kept.
static ISO_DATETIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(\d{4}-\d{2}-\d{2})[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?",
    )
});

/// A clock time with seconds (`12:03:44`, `9:05:01 PM UTC`).
static CLOCK_SECONDS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?[ap]\.?m\.?)?(?:\s?(?:Z|UTC|GMT|CES?T|[+-]\d{2}:?\d{2}))?\b",
    )
});

/// Relative times that tick on every poll, English and Swedish.
static RELATIVE_TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:(?:\d+|an?|one)\s+(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)\s+ago|just now|(?:för\s+)?\d+\s+(?:sekunder|sekund|sek|minuter|minut|min|timmar|timme|tim|dagar|dag|veckor|vecka)\s+sedan)\b",
    )
});

/// "Page generated in 0.042 seconds" footers.
static RENDER_TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(generated|rendered|served|processed|loaded|created|genererades|skapades|laddades)\s+(in|på|i)\s+\d+(?:[.,]\d+)?\s*(?:ms|milliseconds?|s|secs?|seconds?|sekunder|sek)\b",
    )
});

/// Query parameters that only defeat caches or track clicks; always removed.
const TRACKING_PARAMS: &[&str] = &[
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "yclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "_hsenc",
    "_hsmi",
    "cachebust",
    "cachebuster",
    "cache_bust",
    "cache-bust",
    "cache_buster",
    "nocache",
    "no_cache",
    "bust",
    "jsessionid",
    "phpsessid",
    "sid",
    "sessionid",
];

/// Query parameters removed only when their value looks like a version,
/// timestamp or hash (digits, hex, dots, dashes): `?v=1718000000` goes,
/// YouTube's `?v=dQw4w9WgXcQ` stays.
const CACHE_PARAMS: &[&str] = &[
    "v",
    "ver",
    "version",
    "_",
    "__",
    "cb",
    "t",
    "ts",
    "_t",
    "time",
    "timestamp",
    "rnd",
    "rand",
    "random",
    "r",
    "hash",
    "rev",
];

/// Applies the built-in noise rules to one line.
///
/// Each rule with a `\b` first asks whether the line can match at all
/// ([`can_match`]): on text that is not ASCII the regex crate runs such
/// patterns on its slowest engine, and these rules cost a page as much as
/// parsing it. A line without a `:` cannot hold a clock time, and so on.
pub(crate) fn strip_builtin(line: &str) -> Cow<'_, str> {
    let mut s = Cow::Borrowed(line);
    s = replace(s, &URL, |c| normalise_url(&c[0]));
    if can_match::labelled_token(&s) {
        s = replace(s, &LABELLED_TOKEN, |c| {
            format!("{}{}", &c[1], c[2].trim_end())
        });
    }
    s = replace(s, &OPAQUE_WORD, |c| {
        if is_opaque_token(&c[0]) {
            String::new()
        } else {
            c[0].to_owned()
        }
    });
    if can_match::clock(&s) {
        s = replace(s, &ISO_DATETIME, |c| c[1].to_owned());
    }
    if can_match::clock(&s) {
        s = replace(s, &CLOCK_SECONDS, |_| String::new());
    }
    if can_match::relative_time(&s) {
        s = replace(s, &RELATIVE_TIME, |_| String::new());
    }
    if can_match::render_time(&s) {
        s = replace(s, &RENDER_TIME, |c| format!("{} {}", &c[1], &c[2]));
    }
    s
}

/// What a line must contain for a rule to match it; false means the
/// rule's regex cannot match (tests hold each to its pattern). Words are
/// looked for without regard to ASCII case: none of the letters looked for
/// has a case variant outside ASCII (a test checks), so no spelling the
/// case-insensitive regexes accept is missed. Words with `s` or `k` (which
/// have one: `ſ`, `K`) are looked for by a part without them.
mod can_match {
    /// [`super::LABELLED_TOKEN`]: its separator `:`, `=` or `#`, and its
    /// label ("csrf"/"xsrf", "…token", "nonce", "…id").
    pub(super) fn labelled_token(s: &str) -> bool {
        s.contains([':', '=', '#']) && any_word(s, &["rf", "to", "nonce", "id"])
    }

    /// [`super::ISO_DATETIME`], [`super::CLOCK_SECONDS`]: a time with
    /// seconds, so `:`, two digits, `:` (`\d` is any Unicode decimal digit,
    /// which `char::is_numeric` includes).
    pub(super) fn clock(s: &str) -> bool {
        s.match_indices(':').any(|(i, _)| {
            let mut after = s[i + 1..].chars();
            matches!(
                (after.next(), after.next(), after.next()),
                (Some(a), Some(b), Some(':')) if a.is_numeric() && b.is_numeric()
            )
        })
    }

    /// [`super::RELATIVE_TIME`]: every branch ends with "ago", "just now"
    /// or "sedan".
    pub(super) fn relative_time(s: &str) -> bool {
        any_word(s, &["ago", "t now", "edan"])
    }

    /// [`super::RENDER_TIME`]: a number, and one of its verbs.
    pub(super) fn render_time(s: &str) -> bool {
        s.chars().any(char::is_numeric)
            && any_word(
                s,
                &[
                    "generated",
                    "rendered",
                    "erved",
                    "roce",
                    "loaded",
                    "created",
                    "genererade",
                    "apade",
                    "laddade",
                ],
            )
    }

    /// The letters [`any_word`] is called with, for the test.
    #[cfg(test)]
    pub(super) const LETTERS: &str = "rftonceidagwdvlp";

    fn any_word(s: &str, words: &[&str]) -> bool {
        words.iter().any(|w| {
            s.as_bytes()
                .windows(w.len())
                .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
        })
    }
}

fn replace<'a>(s: Cow<'a, str>, re: &Regex, f: impl Fn(&Captures<'_>) -> String) -> Cow<'a, str> {
    if !re.is_match(&s) {
        return s;
    }
    Cow::Owned(re.replace_all(&s, |c: &Captures<'_>| f(c)).into_owned())
}

/// A long word is a token (not a word of prose, nor a hex hash such as a
/// commit id, which is content) when it mixes upper case, lower case and digits.
fn is_opaque_token(word: &str) -> bool {
    let upper = word.bytes().any(|b| b.is_ascii_uppercase());
    let lower = word.bytes().any(|b| b.is_ascii_lowercase());
    let digit = word.bytes().any(|b| b.is_ascii_digit());
    upper && lower && digit
}

/// Removes cache-busting and tracking query parameters (and the fragment's
/// neighbours are left alone); keeps trailing sentence punctuation outside.
fn normalise_url(raw: &str) -> String {
    let trimmed = raw.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}']);
    let tail = &raw[trimmed.len()..];
    let Ok(mut url) = Url::parse(trimmed) else {
        return raw.to_owned();
    };
    // `;jsessionid=…` path parameters.
    if let Some(pos) = url.path().to_ascii_lowercase().find(";jsessionid=") {
        let path = url.path()[..pos].to_owned();
        url.set_path(&path);
    }
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, v)| !is_noise_param(k, v))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    format!("{url}{tail}")
}

fn is_noise_param(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.starts_with("utm_") || TRACKING_PARAMS.contains(&key.as_str()) {
        return true;
    }
    CACHE_PARAMS.contains(&key.as_str())
        && !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_busting_query_strings_are_removed() {
        assert_eq!(
            strip_builtin("see https://cdn.example.com/app.js?v=1718000000."),
            "see https://cdn.example.com/app.js."
        );
        assert_eq!(
            strip_builtin("https://e.com/a?id=7&utm_source=x&cb=ff00"),
            "https://e.com/a?id=7"
        );
        assert_eq!(
            strip_builtin("https://youtube.com/watch?v=dQw4w9WgXcQ"),
            "https://youtube.com/watch?v=dQw4w9WgXcQ"
        );
    }

    #[test]
    fn tokens_are_removed_but_hashes_and_words_stay() {
        assert_eq!(strip_builtin("csrf_token: 9fJk2LmQ0pXz"), "csrf_token:");
        assert_eq!(
            strip_builtin("x Q2hhbmdlc0V2ZXJ5UmVxdWVzdDEyMw== y"),
            "x  y"
        );
        assert_eq!(
            strip_builtin("commit 3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901"),
            "commit 3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901"
        );
        assert_eq!(
            strip_builtin("Donaudampfschifffahrtsgesellschaft"),
            "Donaudampfschifffahrtsgesellschaft"
        );
    }

    #[test]
    fn a_rule_skipped_by_its_precheck_could_not_have_matched() {
        // The letters the relative-time check looks for have no case
        // variant outside ASCII (so an ASCII-only search finds every match).
        let letters =
            Regex::new(&format!("(?i)^[{}]$", can_match::LETTERS)).expect("constant regex");
        let outside: Vec<char> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii() && letters.is_match(c.encode_utf8(&mut [0; 4])))
            .collect();
        assert!(outside.is_empty(), "{outside:?}");
        // Every line a check rejects, none of the rule's regex matches.
        let lines = [
            "Updated 12:03:44 UTC",
            "at 2024-05-01T10:11:12Z",
            "posted 5 minutes ago",
            "POSTED AN HOUR AGO",
            "just now",
            "JUST NOW",
            "publicerad för 3 timmar sedan",
            "för 3 TIMMAR SEDAN",
            "Page generated in 0.042 seconds",
            "Sidan genererades på 0,2 sekunder.",
            "rendered in ٣ ms",
            "csrf_token: 9fJk2LmQ0pXz",
            "request-id=abcdef123",
            "nonce #abcdef12",
            "Meeting at 14:30 on 2024-05-01",
            "Ett stycke text på svenska, utan siffror.",
            "Texte en français : « déjà vu » à 10 h.",
            "ſedan",
            "session_id = abcdef123456",
            "Authenticity-Token: abcdefgh",
            "xsrf#abcdefgh",
            "Processed in 12 ms",
            "skapades på 3 sek",
            "laddades i 2 s",
            "12:3:44",
            "1٢:٣٤:٥٦",
            "at 10:11:12",
            "2024-05-01 10:11:12.5 +02:00",
        ];
        type Rule = (&'static Regex, fn(&str) -> bool);
        let rules: [Rule; 5] = [
            (&LABELLED_TOKEN, can_match::labelled_token),
            (&ISO_DATETIME, can_match::clock),
            (&CLOCK_SECONDS, can_match::clock),
            (&RELATIVE_TIME, can_match::relative_time),
            (&RENDER_TIME, can_match::render_time),
        ];
        let mut matched = [0; 5];
        for line in lines {
            for (i, (re, check)) in rules.iter().enumerate() {
                if re.is_match(line) {
                    matched[i] += 1;
                    assert!(
                        check(line),
                        "rule {i} matches {line:?} but its check says no"
                    );
                }
            }
        }
        assert!(matched.iter().all(|n| *n >= 2), "{matched:?}");
    }

    #[test]
    fn ticking_times_are_removed() {
        assert_eq!(strip_builtin("Updated 12:03:44 UTC"), "Updated ");
        assert_eq!(strip_builtin("at 2024-05-01T10:11:12Z"), "at 2024-05-01");
        assert_eq!(strip_builtin("posted 5 minutes ago"), "posted ");
        assert_eq!(
            strip_builtin("publicerad för 3 timmar sedan"),
            "publicerad "
        );
        assert_eq!(
            strip_builtin("Page generated in 0.042 seconds"),
            "Page generated in"
        );
        assert_eq!(
            strip_builtin("Sidan genererades på 0,2 sekunder."),
            "Sidan genererades på."
        );
        assert_eq!(
            strip_builtin("Meeting at 14:30 on 2024-05-01"),
            "Meeting at 14:30 on 2024-05-01"
        );
    }
}
