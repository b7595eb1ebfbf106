//! Recognises pages that are not the content: bot-challenge interstitials
//! (Cloudflare, DDoS-Guard, Akamai, PerimeterX, DataDome, Imperva, Sucuri,
//! captcha walls) and error pages served with status 200.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in regex is valid")
}

/// Interstitials are small: phrase markers only count on pages with less
/// visible text than this (an article *about* Cloudflare is not a challenge).
const SMALL_PAGE_CHARS: usize = 2000;

/// Whole-title matches of interstitial pages.
static CHALLENGE_TITLE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:just a moment\.*|attention required!? \| cloudflare|please wait\.*(?: \| cloudflare)?|one more step|ddos-guard|ddos protection by ddos-guard|checking your browser.*|access to this page has been denied\.?|pardon our interruption\.*|are you a (?:robot|human)\??|human verification|verify(?:ing)? (?:that )?you are (?:a )?human\.*|bot verification|security check(?:point)?|captcha|sucuri website firewall.*|request unsuccessful\.?.*incapsula.*|you have been blocked|robot check)$",
    )
});

/// Markers in the raw markup that only interstitials carry.
static CHALLENGE_MARKUP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)_cf_chl_opt|__cf_chl_|cf-chl-bypass|cf_chl_prog|cf-browser-verification|id="challenge-(?:form|stage|running)"|_pxcaptcha|id="px-captcha"|geo\.captcha-delivery\.com|ct\.captcha-delivery\.com|sec-if-cpt-container|/_sec/cp_challenge/|check\.ddos-guard\.net"#,
    )
});

/// Markers that also appear on ordinary pages (injected scripts, prose), so
/// they count only on small pages.
static CHALLENGE_SMALL_PAGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)checking your browser|enable javascript and cookies to continue|ddos-guard|_incapsula_resource|incapsula incident id|press & hold|press and hold|please verify you are a human|errors\.edgesuite\.net|reference #\s*\d+\.[0-9a-f]+|captcha-delivery|g-recaptcha|h-captcha|cf-turnstile|why have i been blocked",
    )
});

/// Segments of a title or an `<h1>` that mean "this is an error page".
static ERROR_SEGMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:error\s*:?\s*)?(?:(?:http\s*)?(?:error\s*)?[45]\d\d\s*[-:–]?\s*)?(?:error|not found|page not found|file not found|page does not exist|page doesn't exist|this page (?:could not|couldn't|can't|cannot) be found|the page you (?:requested|are looking for|were looking for) (?:was not found|could not be found|does not exist|doesn't exist)|internal server error|server error|service (?:temporarily )?unavailable|bad gateway|gateway time-?out|forbidden|bad request|too many requests|sidan (?:kunde inte hittas|hittades inte|finns inte)|tekniskt fel)[.!]?$|^(?:error\s*)?[45]\d\d$",
    )
});

/// The interstitial this page is, if it is one.
pub(crate) fn challenge(raw: &str, title: &str, visible_chars: usize) -> Option<String> {
    if CHALLENGE_TITLE.is_match(title.trim()) {
        return Some(format!("title `{}`", title.trim()));
    }
    if let Some(m) = CHALLENGE_MARKUP.find(raw) {
        return Some(format!("marker `{}`", m.as_str()));
    }
    if visible_chars < SMALL_PAGE_CHARS {
        if let Some(m) = CHALLENGE_SMALL_PAGE.find(raw) {
            return Some(format!("marker `{}` on a small page", m.as_str()));
        }
    }
    None
}

/// Why this page looks like an error page, if it does.
pub(crate) fn error_page(title: &str, h1: Option<&str>) -> Option<String> {
    let matches = |s: &str| {
        let s = s.trim();
        !s.is_empty()
            && (ERROR_SEGMENT.is_match(s)
                || s.split(['|', '–', '—', '·'])
                    .chain(s.split(" - "))
                    .any(|seg| ERROR_SEGMENT.is_match(seg.trim())))
    };
    if matches(title) {
        return Some(format!("title `{}`", title.trim()));
    }
    match h1 {
        Some(h) if matches(h) => Some(format!("heading `{}`", h.trim())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_titles() {
        for t in [
            "404 Not Found",
            "Page not found | Example",
            "500 Internal Server Error",
            "Service Unavailable",
            "Error 404",
            "Example - 404",
            "404: This page could not be found.",
            "Sidan kunde inte hittas – Kommun",
        ] {
            assert!(error_page(t, None).is_some(), "{t}");
        }
        for t in [
            "Error handling in Rust | Blog",
            "Why 404 pages matter",
            "Not found: a novel",
            "Home",
            "",
        ] {
            assert!(error_page(t, None).is_none(), "{t}");
        }
        assert!(error_page("Example", Some("Page not found")).is_some());
    }

    #[test]
    fn challenge_titles() {
        for t in [
            "Just a moment...",
            "Attention Required! | Cloudflare",
            "DDoS-Guard",
            "Access to this page has been denied.",
        ] {
            assert!(challenge("", t, 10_000).is_some(), "{t}");
        }
        assert!(challenge("<p>Checking your browser before accessing</p>", "x", 100).is_some());
        assert!(challenge("<p>Checking your browser before accessing</p>", "x", 50_000).is_none());
        assert!(challenge(
            "<script src=/cdn-cgi/challenge-platform/scripts/jsd/main.js>",
            "News",
            50
        )
        .is_none());
    }
}
