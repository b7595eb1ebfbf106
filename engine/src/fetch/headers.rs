//! Response header semantics: `Retry-After`, `Cache-Control` / `Expires`
//! caching hints and HTTP-date parsing (all three HTTP-date formats).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::{HeaderMap, CACHE_CONTROL, DATE, EXPIRES, RETRY_AFTER};

/// Upper bound for any wait derived from a response header: a hostile or
/// misconfigured upstream must not park a source (or a whole domain) for days.
pub const MAX_HEADER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses an HTTP-date: IMF-fixdate, the obsolete RFC 850 form, or asctime.
pub fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc2822(s) {
        return Some(d.with_timezone(&Utc));
    }
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT".
    if let Ok(d) = NaiveDateTime::parse_from_str(s, "%A, %d-%b-%y %H:%M:%S GMT") {
        return Some(d.and_utc());
    }
    // asctime: "Sun Nov  6 08:49:37 1994".
    let squeezed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    NaiveDateTime::parse_from_str(&squeezed, "%a %b %e %H:%M:%S %Y")
        .ok()
        .map(|d| d.and_utc())
}

/// The response's own clock (`Date`), else ours: relative headers are
/// computed against it so clock skew between us and the upstream cancels out.
fn response_date(headers: &HeaderMap, now: DateTime<Utc>) -> DateTime<Utc> {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(now)
}

/// `Retry-After` as a wait: delta-seconds or an HTTP-date, capped at
/// [`MAX_HEADER_WAIT`]. A date in the past is a zero wait; junk is `None`.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only; too many of them to fit means "very long": cap it.
        let secs = raw.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_HEADER_WAIT));
    }
    let at = parse_http_date(raw)?;
    let base = response_date(headers, now);
    Some(
        (at - base)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_HEADER_WAIT),
    )
}

/// Freshness lifetime from `Cache-Control` (`s-maxage`, then `max-age`) or
/// `Expires` − `Date`; `no-store` / `no-cache` mean none. Zero and unparsable
/// lifetimes are `None`; long ones are capped at [`MAX_HEADER_WAIT`].
pub(crate) fn freshness(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            let secs = || arg.and_then(|a| a.parse::<u64>().ok());
            if name.eq_ignore_ascii_case("max-age") {
                max_age = secs();
            } else if name.eq_ignore_ascii_case("s-maxage") {
                s_maxage = secs();
            }
        }
    }
    let lifetime = match s_maxage.or(max_age) {
        Some(secs) => Duration::from_secs(secs),
        // RFC 9111: max-age overrides Expires; Expires is only the fallback.
        None => {
            let expires = headers
                .get(EXPIRES)?
                .to_str()
                .ok()
                .and_then(parse_http_date)?;
            (expires - response_date(headers, now)).to_std().ok()?
        }
    };
    (!lifetime.is_zero()).then(|| lifetime.min(MAX_HEADER_WAIT))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 37)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn parses_all_http_date_formats() {
        let want = Some(now());
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn retry_after_seconds_dates_and_junk() {
        let n = now();
        assert_eq!(
            retry_after(&headers(&[("retry-after", "120")]), n),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", " 0 ")]), n),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "99999999999999999999999")]), n),
            Some(MAX_HEADER_WAIT)
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:51:37 GMT")]),
                n
            ),
            Some(Duration::from_secs(120))
        );
        // Relative to the upstream's Date, not our clock.
        let h = headers(&[
            ("retry-after", "Sun, 06 Nov 1994 08:51:37 GMT"),
            ("date", "Sun, 06 Nov 1994 08:50:37 GMT"),
        ]);
        assert_eq!(retry_after(&h, n), Some(Duration::from_secs(60)));
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
                n
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-5")]), n), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), n), None);
        assert_eq!(retry_after(&headers(&[]), n), None);
    }

    #[test]
    fn freshness_from_cache_control_and_expires() {
        let n = now();
        let f = |pairs: &[(&'static str, &'static str)]| freshness(&headers(pairs), n);
        assert_eq!(
            f(&[("cache-control", "public, max-age=300")]),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            f(&[("cache-control", "max-age=\"60\"")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            f(&[("cache-control", "max-age=300, s-maxage=600")]),
            Some(Duration::from_secs(600))
        );
        assert_eq!(f(&[("cache-control", "max-age=300, no-cache")]), None);
        assert_eq!(
            f(&[
                ("cache-control", "No-Store"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            None
        );
        assert_eq!(f(&[("cache-control", "max-age=0")]), None);
        assert_eq!(
            f(&[("cache-control", "max-age=31536000")]),
            Some(MAX_HEADER_WAIT)
        );
        assert_eq!(f(&[("cache-control", "max-age=abc")]), None);
        assert_eq!(
            f(&[("cache-control", "public"), ("cache-control", "max-age=5")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            f(&[("expires", "Sun, 06 Nov 1994 09:49:37 GMT")]),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            f(&[
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
                ("date", "Sun, 06 Nov 1994 09:19:37 GMT")
            ]),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            f(&[
                ("cache-control", "max-age=10"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(f(&[("expires", "0")]), None);
        assert_eq!(f(&[("expires", "Sun, 06 Nov 1994 08:00:00 GMT")]), None);
        assert_eq!(f(&[]), None);
    }
}
