//! The namespaces the structure pass knows: the ones feed-rs reads elements
//! in (as it spells them), the RSS and Atom variants seen in the wild, and
//! the well-known prefixes feeds use without declaring them.

/// The namespace feed-rs reads RSS elements in.
pub(super) const RSS_NS: &str = "http://purl.org/rss/1.0/";
/// The namespace feed-rs reads Atom elements in.
pub(super) const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// Dublin Core's namespace, as feed-rs spells it.
pub(super) const DC_NS: &str = "http://purl.org/dc/elements/1.1/";
/// Media RSS's namespace, as feed-rs spells it.
pub(super) const MRSS_NS: &str = "http://search.yahoo.com/mrss/";
/// Atom 0.3's namespace.
pub(super) const ATOM_03_NS: &str = "http://purl.org/atom/ns#";

/// The RSS namespaces seen in the wild (RSS 0.90, 0.91 module, UserLand,
/// Harvard, RSS 1.0 with or without its trailing slash).
pub(super) fn is_rss_family(ns: &str) -> bool {
    matches!(
        ns.trim(),
        "http://purl.org/rss/1.0/"
            | "http://purl.org/rss/1.0"
            | "http://my.netscape.com/rdf/simple/0.9/"
            | "http://channel.netscape.com/rdf/simple/0.9/"
            | "http://purl.org/rss/1.0/modules/rss091#"
            | "http://backend.userland.com/rss2"
            | "http://backend.userland.com/rss"
            | "http://blogs.law.harvard.edu/tech/rss"
    )
}

/// Namespaces feed-rs reads, as it spells them, for a declaration that
/// names one with other case or without its trailing slash (the iTunes DTD
/// is often declared as `http://www.itunes.com/DTDs/Podcast-1.0.dtd`).
pub(super) fn known_spelling(ns: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "http://www.itunes.com/dtds/podcast-1.0.dtd",
        "http://purl.org/rss/1.0/modules/content/",
        DC_NS,
        MRSS_NS,
        "https://podcastindex.org/namespace/1.0",
        "http://wellformedweb.org/CommentAPI/",
        "http://www.w3.org/2005/Atom",
    ];
    let bare = ns.trim().trim_end_matches('/');
    KNOWN
        .iter()
        .copied()
        .find(|k| k.trim_end_matches('/').eq_ignore_ascii_case(bare))
}

/// The namespace of a prefix feeds use without declaring it.
pub(super) fn well_known_prefix(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "itunes" => "http://www.itunes.com/dtds/podcast-1.0.dtd",
        "content" => "http://purl.org/rss/1.0/modules/content/",
        "dc" => DC_NS,
        "media" => "http://search.yahoo.com/mrss/",
        "podcast" => "https://podcastindex.org/namespace/1.0",
        "wfw" => "http://wellformedweb.org/CommentAPI/",
        "atom" => ATOM_NS,
        "rdf" => "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        _ => return None,
    })
}
