//! Tests of the structure pass: each repair on a small document, and what
//! is left alone.

use super::*;

fn fixed(doc: &str) -> String {
    repair(doc).text.unwrap_or_else(|| doc.to_owned())
}

#[test]
fn rss_090_becomes_rss_2_with_one_channel_and_about_ids() {
    let doc = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://my.netscape.com/rdf/simple/0.9/">
<channel><title>t</title><link>https://example.org/</link></channel>
<item rdf:about="https://example.org/1?a=1&amp;b=2"><title>one</title><link>https://example.org/1</link></item>
<item><title>two</title></item>
<item rdf:about="x"/>
</rdf:RDF>"#;
    let r = repair(doc);
    let text = r.text.unwrap_or_default();
    assert!(
        text.contains(r#"<rss version="2.0" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"><channel>"#),
        "{text}"
    );
    assert!(
        text.contains("\n<title>t</title><link>https://example.org/</link>\n"),
        "{text}"
    );
    assert!(text.contains(r#"<item rdf:about="x"/>"#), "{text}");
    assert!(text.trim_end().ends_with("</channel></rss>"), "{text}");
    assert_eq!(
        r.rdf_about,
        Some(vec![
            Some("https://example.org/1?a=1&b=2".to_owned()),
            None,
            Some("x".to_owned())
        ])
    );
}

#[test]
fn an_rss_10_item_without_description_reads_its_dc_description() {
    let doc = r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"><item><title>a</title><dc:description xml:lang="en">only dc</dc:description></item><item><description>own</description><dc:description>dc</dc:description></item></rdf:RDF>"#;
    let text = fixed(doc);
    assert!(
        text.contains(
            r#"<item><title>a</title><description xml:lang="en">only dc</description></item>"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "<item><description>own</description><dc:description>dc</dc:description></item>"
        ),
        "{text}"
    );
}

#[test]
fn rss_with_a_foreign_default_namespace_or_stray_items_is_regrouped() {
    let doc = r#"<rss version="2.0" xmlns="http://backend.userland.com/rss2"><channel><title>t</title><item><title>a</title></item></channel></rss>"#;
    assert_eq!(
        fixed(doc),
        r#"<rss version="2.0" xmlns="http://purl.org/rss/1.0/"><channel><title>t</title><item><title>a</title></item></channel></rss>"#
    );
    let doc = r#"<rss version="2.0"><channel><title>t</title></channel><item><title>a</title></item></rss>"#;
    assert_eq!(
        fixed(doc),
        r#"<rss version="2.0"><channel><title>t</title><item><title>a</title></item></channel></rss>"#
    );
    // A plain RSS 2.0 document is left byte for byte.
    let doc = r#"<rss version="2.0"><channel><item><title>a</title></item></channel></rss>"#;
    assert!(repair(doc).text.is_none());
}

#[test]
fn atom_text_construct_types_become_what_feed_rs_accepts() {
    let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry>
<title type="text/plain">a</title>
<summary type="application/xhtml+xml"><div xmlns="http://www.w3.org/1999/xhtml">s</div></summary>
<content type="application/xhtml+xml">&lt;p&gt;escaped&lt;/p&gt;</content>
<rights type="TEXT/HTML">r</rights>
<link type="text/plain" href="x"/>
</entry></feed>"#;
    let text = fixed(doc);
    assert!(text.contains(r#"<title type="text">a</title>"#), "{text}");
    assert!(text.contains(r#"<summary type="xhtml"><div"#), "{text}");
    assert!(text.contains(r#"<content type="html">&lt;p&gt;"#), "{text}");
    assert!(text.contains(r#"<rights type="html">"#), "{text}");
    assert!(
        text.contains(r#"<link type="text/plain" href="x"/>"#),
        "{text}"
    );
}

#[test]
fn atom_03_namespace_modes_and_content_src() {
    let doc = r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"><entry>
<title mode="base64" type="text/html">PGI+Ym9sZDwvYj4gJmFtcDsgbW9yZQ==</title>
<content type="text/html" mode="escaped">&lt;b&gt;x&lt;/b&gt;</content>
<summary type="image/png" src="https://example.org/i.png">body</summary>
</entry><entry><content src="/a.html" type="html"/><content src="/b.html" type="not a type"/></entry></feed>"#;
    let text = fixed(doc);
    assert!(
        text.starts_with(r#"<feed version="0.3" xmlns="http://www.w3.org/2005/Atom">"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"<title mode="base64" type="html">&lt;b&gt;bold&lt;/b&gt; &amp;amp; more</title>"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"<content type="html" mode="escaped">"#),
        "{text}"
    );
    assert!(text.contains(r#"<summary type="text" src="#), "{text}");
    assert!(
        text.contains(r#"<content src="/a.html" type="text/html"/>"#),
        "{text}"
    );
    assert!(text.contains(r#"<content src="/b.html"/>"#), "{text}");
}

#[test]
fn empty_or_oddly_typed_media_rss_texts_are_repaired() {
    // A YouTube-style entry whose video has no description.
    let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"><entry><media:group><media:title type="text/html">t</media:title><media:description></media:description></media:group></entry></feed>"#;
    assert_eq!(
        fixed(doc),
        r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"><entry><media:group><media:title type="html">t</media:title></media:group></entry></feed>"#
    );
    let doc = r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss"><channel><item><media:description type="text"> </media:description><media:title type="plain">ok</media:title><media:description/></item></channel></rss>"#;
    assert_eq!(
        fixed(doc),
        r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><media:title type="plain">ok</media:title></item></channel></rss>"#
    );
    let doc = r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><title>a</title><media:description/></item></channel></rss>"#;
    assert_eq!(
        fixed(doc),
        r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><title>a</title></item></channel></rss>"#
    );
}

#[test]
fn unreadable_xml_is_left_alone_and_items_are_counted_on_the_xml() {
    assert!(repair("<rdf:RDF><item></rdf:RDF>").text.is_none());
    assert!(repair("<feed><entry><title type='x'>").text.is_none());
    assert_eq!(
        count_items("<rss><channel><item/><x:item xmlns:x='u'/></channel><item></item></rss>"),
        Some((2, "item"))
    );
    assert_eq!(
        count_items("<feed xmlns='u'><entry/><entry></entry><x:entry xmlns:x='v'/></feed>"),
        Some((2, "entry"))
    );
    assert_eq!(count_items("<entry/>"), Some((1, "entry")));
    assert_eq!(
        count_items("<rss><channel><item/></channel></rss><br>PHP warning"),
        Some((1, "item"))
    );
    assert_eq!(count_items("<html/>"), None);
}

/// The document as the structure pass gets it from the feed parser.
fn prepared(body: &[u8]) -> Option<String> {
    let doc = crate::sources::feed::decode::repair_prolog(
        crate::sources::feed::decode::to_utf8(body, None).text,
    );
    let trimmed = doc.trim_start();
    (trimmed.starts_with('<')).then(|| crate::sources::feed::decode::escape_stray_ampersands(doc))
}

/// Every XML document of `fixtures/corpus/feeds` and `fixtures/scenarios`,
/// prepared, with its path.
fn documents() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut dirs = vec![root.join("corpus/feeds"), root.join("scenarios")];
    let mut out = Vec::new();
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Some(doc) = prepared(&body) {
                out.push((path.display().to_string(), doc));
            }
        }
    }
    out.sort();
    out
}

/// "Clean" holds the scan to its promise: the structure pass makes no edit.
fn holds(doc: &str, what: &str) -> Scan {
    let s = scan(doc, 512);
    if s == Scan::Clean {
        let r = repair(doc);
        assert!(
            r.text.is_none() && r.rdf_about.is_none(),
            "the scan called {what} clean, but the pass edits it:\n{doc}\n---\n{:?}",
            r.text
        );
    }
    s
}

#[test]
fn a_clean_scan_means_the_pass_edits_nothing_on_every_corpus_feed() {
    let docs = documents();
    assert!(docs.len() > 150, "{} documents", docs.len());
    let mut clean = 0;
    let mut edited = 0;
    for (path, doc) in &docs {
        if holds(doc, path) == Scan::Clean {
            clean += 1;
        } else if repair(doc).text.is_some() {
            edited += 1;
        }
    }
    // Most real feeds need no repair, and the scan sees that.
    assert!(clean * 2 > docs.len(), "{clean} of {} clean", docs.len());
    assert!(edited > 10, "{edited} repaired");
}

/// Markup that makes the pass edit (or that looks like it might), inserted
/// into real feeds at random places.
const TRIGGERS: &[&str] = &[
    "<item><title>x</title></item>",
    "<channel><item/></channel>",
    "</channel><item><title>late</title></item><channel>",
    "<media:title></media:title>",
    "<media:title>  </media:title>",
    "<media:title>&#32;</media:title>",
    "<media:description/>",
    "<media:description type=\"text\">d</media:description>",
    "<media:description type='html'>d</media:description>",
    "<media:title><![CDATA[ ]]></media:title>",
    "<m:description xmlns:m=\"http://search.yahoo.com/mrss/\"></m:description>",
    "<m:title xmlns:m=\"http://search.yahoo.com/mrss/\" type=\"text\">t</m:title>",
    "<a:summary xmlns:a=\"http://www.w3.org/2005/Atom\" type=\"text/plain\">s</a:summary>",
    "<itunes:summary>s</itunes:summary>",
    "<undeclared:x>u</undeclared:x>",
    "<dc:creator xmlns:dc=\"http://purl.org/dc/elements/1.1\">c</dc:creator>",
    "<p:x xmlns:p=\"u\"><p:y/></p:x><p:z/>",
    "<title type=\"text/plain\">t</title>",
    "<title type=\"TEXT\">t</title>",
    "<title type=\"xhtml\">t</title>",
    "<content type=\"xhtml\"><div>x</div></content>",
    "<content type=\"xhtml\">  </content>",
    "<summary mode=\"base64\">eA==</summary>",
    "<summary mode=\"escaped\">&lt;b&gt;</summary>",
    "<content src=\"x\"/>",
    "<content src=\"x\">body</content>",
    "<content type=\"text/markdown\">*x*</content>",
    "<x:item xmlns:x=\"http://purl.org/rss/1.0/\"/>",
    "<x:channel xmlns:x=\"u\"/>",
    "<title xmlns=\"http://search.yahoo.com/mrss/\"></title>",
    "<a xmlns=\"http://purl.org/atom/ns#\"><title type='text/html'>x</title></a>",
    "<![CDATA[</channel><item>]]>",
    "<!-- <item></item> </channel> -->",
    "<?pi </channel><item> ?>",
    "<link title=\"a>b\" href='c>d'/>",
    "<link title=\"a>b<item>\"/>",
    "<!--> <x> -->",
    "<!---> <item> -->",
    "<![cdata[ <x> ]]>",
    "<?> <x> ?>",
    "<y a='<x>'/>",
    "<entry><title type=\"html\">ok</title></entry>",
    "<entry><title type='text'>ok</title><summary>s</summary></entry>",
];

#[test]
fn a_clean_scan_means_the_pass_edits_nothing_on_generated_variants() {
    let docs = documents();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut clean, mut edited) = (0, 0);
    for (path, doc) in &docs {
        if doc.len() > 200_000 {
            continue;
        }
        for round in 0..12 {
            let mut variant = doc.clone();
            for _ in 0..1 + next() % 3 {
                // After a `>` (between tags, or inside text), or anywhere.
                let ends: Vec<usize> = variant.match_indices('>').map(|(i, _)| i + 1).collect();
                let at = if ends.is_empty() || next() % 4 == 0 {
                    let mut at = (next() as usize) % (variant.len() + 1);
                    while !variant.is_char_boundary(at) {
                        at -= 1;
                    }
                    at
                } else {
                    ends[(next() as usize) % ends.len()]
                };
                let what = TRIGGERS[(next() as usize) % TRIGGERS.len()];
                variant.insert_str(at, what);
            }
            match holds(&variant, &format!("{path} (variant {round})")) {
                Scan::Clean => clean += 1,
                _ if repair(&variant).text.is_some() => edited += 1,
                _ => {}
            }
        }
    }
    // Neither side is vacuous: variants of both kinds were met.
    assert!(clean > 100, "{clean} clean");
    assert!(edited > 500, "{edited} repaired");
}

#[test]
fn the_scan_sends_each_kind_of_repair_to_the_pass() {
    let needs = [
        // RSS 0.90/1.0, prefixed or foreign roots.
        r#"<rdf:RDF xmlns:rdf="r"><item/></rdf:RDF>"#,
        r#"<RDF><item/></RDF>"#,
        r#"<a:rss xmlns:a="u"><channel/></a:rss>"#,
        // A default namespace on an RSS root, or any other than Atom 1.0's.
        r#"<rss xmlns="http://backend.userland.com/rss2"><channel/></rss>"#,
        r#"<feed xmlns="http://purl.org/atom/ns#"><title>t</title></feed>"#,
        r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry xmlns="u"/></feed>"#,
        // Extension namespaces spelled otherwise, or not declared.
        r#"<rss xmlns:itunes="http://www.itunes.com/DTDs/Podcast-1.0.dtd"><channel/></rss>"#,
        r#"<rss><channel><item><itunes:author>a</itunes:author></item></channel></rss>"#,
        // Items outside one channel.
        r#"<rss><channel></channel><item/></rss>"#,
        r#"<rss><channel/><channel/></rss>"#,
        // Atom text constructs feed-rs refuses.
        r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text/plain">t</title></feed>"#,
        r#"<feed><entry><content mode="escaped">x</content></entry></feed>"#,
        r#"<feed><entry><content src="u"/></entry></feed>"#,
        r#"<feed><entry><summary type="xhtml">x</summary></entry></feed>"#,
        // Media RSS: empty, or typed otherwise.
        r#"<rss xmlns:media="http://search.yahoo.com/mrss/"><channel><item><media:title/></item></channel></rss>"#,
        r#"<rss xmlns:media="http://search.yahoo.com/mrss/"><channel><item><media:title> &#160; </media:title></item></channel></rss>"#,
        r#"<rss xmlns:media="http://search.yahoo.com/mrss/"><channel><item><media:title type="text">t</media:title></item></channel></rss>"#,
        r#"<rss xmlns:m="http://search.yahoo.com/mrss/"><channel><item><m:description/></item></channel></rss>"#,
        // Regions that end where quick-xml ends them: an item outside the
        // channel hides behind none of these.
        r#"<rss><channel></channel><!--> <x> --><item><title>a</title></item></rss>"#,
        r#"<rss><channel></channel><!---> <x> --><item><title>a</title></item></rss>"#,
        r#"<rss><channel></channel><![cdata[ <x> ]]><item><title>a</title></item></rss>"#,
        r#"<!DOCTYPE x SYSTEM "a><x>"><rss><channel></channel><item/></rss>"#,
        r#"<rss><channel></channel><y a="<x>"/><item/></rss>"#,
        // What the scan cannot read.
        r#"<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss><channel/></rss>"#,
        r#"<!DOCTYPE rss [<!ENTITY e "x">]><rss><channel/></rss>"#,
        r#"<rss a=b><channel/></rss>"#,
        r#"<rss><channel><item title="never closed"#,
    ];
    for doc in needs {
        assert_eq!(scan(doc, 512), Scan::NeedsPass, "{doc}");
    }
    let clean = [
        r#"<?xml version="1.0"?><!-- c --><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" xmlns:atom="http://www.w3.org/2005/Atom"><channel><title>t</title><atom:link href="x" rel="self"/><item><title>a &amp; b</title><description><![CDATA[<p>x</item></channel>]]></description><media:title type="plain">m</media:title><media:description>d</media:description></item></channel></rss>"#,
        r#"<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en"><title type="text">t</title><entry><title type="html">&lt;b&gt;</title><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">x</div></content><link href="a>b"/></entry></feed>"#,
        r#"<html><body><item/></body></html>"#,
        r#"<rss/>"#,
    ];
    for doc in clean {
        assert_eq!(holds(doc, doc), Scan::Clean, "{doc}");
    }
}

#[test]
fn thousands_of_declared_prefixes_go_to_the_pass_instead_of_a_long_search() {
    let decls: String = (0..50_000)
        .map(|i| format!(" xmlns:p{i}=\"u{i}\""))
        .collect();
    let uses = "<p49999:x/>".repeat(50_000);
    let doc = format!("<rss{decls}><channel>{uses}</channel></rss>");
    assert_eq!(scan(&doc, 512), Scan::NeedsPass);
    let few: String = (0..200).map(|i| format!(" xmlns:p{i}=\"u{i}\"")).collect();
    let doc = format!(
        "<rss{few}><channel>{}</channel></rss>",
        "<p199:x/>".repeat(100)
    );
    assert_eq!(scan(&doc, 512), Scan::Clean);
}

#[test]
fn the_scan_refuses_deep_nesting_but_not_deep_looking_text() {
    let deep = "<a>".repeat(513);
    assert_eq!(scan(&deep, 512), Scan::TooDeep);
    assert_ne!(scan(&"<a>".repeat(512), 512), Scan::TooDeep);
    let hidden = format!(
        "<rss><channel><!-- {} --><![CDATA[{}]]><?pi {}?><item title=\"{}\"/></channel></rss>",
        "<a>".repeat(600),
        "<b>".repeat(600),
        "<c>".repeat(600),
        "<d>".repeat(600)
    );
    assert_eq!(scan(&hidden, 512), Scan::Clean);
    let closed = "<a>".repeat(400) + &"</a>".repeat(400) + &"<a/>".repeat(600);
    assert_ne!(scan(&closed, 512), Scan::TooDeep);
}
