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
