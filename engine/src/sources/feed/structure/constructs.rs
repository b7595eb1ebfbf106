//! Text elements feed-rs is strict about — Atom text constructs (`title`,
//! `subtitle`, `summary`, `content`, `rights`) and Media RSS
//! `media:title`/`media:description`: followed through the event stream by
//! both the RSS and the Atom pass, and at their end retyped, base64-decoded
//! or (an empty Media RSS one) removed.

use std::ops::Range;

use base64::Engine as _;
use quick_xml::events::Event;

use super::namespaces::{known_spelling, MRSS_NS};
use super::tags::{attrs_of, qname_of, set_attr, start_tag, Attr};
use super::{Edit, Pass};

/// Text elements feed-rs is strict about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// Atom text constructs: `title`, `subtitle`, `summary`, `content`, `rights`.
    Atom,
    /// Media RSS `media:title`, `media:description`: feed-rs accepts only
    /// `type="plain"`/`"html"` and fails the feed on an empty one (a YouTube
    /// video without a description).
    Media,
}

/// A text element being read (its start tag seen, its end not yet).
#[derive(Debug)]
pub(super) struct Construct {
    /// Which vocabulary's rules apply.
    family: Family,
    /// Local name (`content`, `title`, …).
    local: String,
    /// Qualified name as written, to rebuild the start tag.
    qname: String,
    attrs: Vec<Attr>,
    /// The start tag's byte range.
    tag: Range<usize>,
    /// Where the body starts (right after the start tag).
    body_start: usize,
    /// Element depth of the construct itself.
    depth: usize,
    /// It has child elements (inline XHTML/XML).
    has_children: bool,
    /// Its own text, unescaped (entities and CDATA resolved).
    text: String,
}

impl<'d> Pass<'d> {
    /// Follows the text elements of `family` through the event stream:
    /// `depth` is the depth of the element an event starts (before it) or
    /// ends (after it). A text element's edits are made at its end.
    pub(super) fn text_element(
        &mut self,
        open: &mut Option<Construct>,
        family: Option<Family>,
        ev: &Event<'d>,
        span: &Range<usize>,
        depth: usize,
    ) {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                if let Some(c) = open.as_mut() {
                    c.has_children = true;
                    return;
                }
                let Some(family) = family else {
                    return;
                };
                // Malformed attributes: that element is left as it is.
                let Some(attrs) = attrs_of(e) else {
                    return;
                };
                let c = Construct {
                    family,
                    local: e.local_name().as_ref().to_owned(),
                    qname: qname_of(e),
                    attrs,
                    tag: span.clone(),
                    body_start: span.end,
                    depth,
                    has_children: false,
                    text: String::new(),
                };
                if matches!(ev, Event::Empty(_)) {
                    self.finish(c, None, span.clone());
                } else {
                    *open = Some(c);
                }
            }
            Event::End(_) if open.as_ref().is_some_and(|c| c.depth == depth) => {
                if let Some(c) = open.take() {
                    let body = c.body_start..span.start;
                    let whole = c.tag.start..span.end;
                    self.finish(c, Some(body), whole);
                }
            }
            Event::Text(t) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    c.text.push_str(t);
                }
            }
            Event::CData(t) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    c.text.push_str(t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    match r.resolve_char_ref() {
                        Ok(Some(ch)) => c.text.push(ch),
                        _ => {
                            let name: &str = r;
                            match quick_xml::escape::resolve_predefined_entity(name) {
                                Some(s) => c.text.push_str(s),
                                None => {
                                    c.text.push('&');
                                    c.text.push_str(name);
                                    c.text.push(';');
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Media RSS `media:title`/`media:description`: an empty one is removed
    /// (feed-rs fails the feed on it); a `type` other than `plain`/`html`
    /// becomes the one it means.
    fn finish_media(&mut self, c: Construct, whole: Range<usize>) {
        if c.text.trim().is_empty() && !c.has_children {
            self.edits.push(Edit {
                range: whole,
                with: String::new(),
            });
            return;
        }
        let ty = c
            .attrs
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.as_str());
        let Some(ty) = ty else {
            return;
        };
        let wanted = match Kind::of(Some(ty)) {
            Kind::Html | Kind::Xhtml => "html",
            _ => "plain",
        };
        if ty != wanted {
            let mut attrs = c.attrs.clone();
            set_attr(&mut attrs, "type", wanted);
            self.retag(&c, attrs);
        }
    }

    /// The edits one text element needs, if any. `body` is the byte range
    /// between its tags (`None` for `<x/>`), `whole` the element's.
    fn finish(&mut self, c: Construct, body: Option<Range<usize>>, whole: Range<usize>) {
        if c.family == Family::Media {
            self.finish_media(c, whole);
            return;
        }
        let attr = |name: &str| {
            c.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let is_content = c.local == "content";
        let has_text = !c.text.trim().is_empty();
        let inline = has_text || c.has_children;
        let kind = Kind::of(attr("type"));
        let mode = attr("mode").map(|m| m.trim().to_ascii_lowercase());
        let mut attrs = c.attrs.clone();

        if is_content && attr("src").is_some() {
            if inline {
                // Both a body and `src` (feed-rs refuses that): keep the body.
                attrs.retain(|(k, _)| k != "src");
            } else {
                // Out-of-line content: feed-rs wants a MIME type, or none.
                match kind.mime() {
                    Some(m) if attr("type").is_some() => set_attr(&mut attrs, "type", &m),
                    Some(_) => {}
                    None => attrs.retain(|(k, _)| k != "type"),
                }
                if attrs != c.attrs {
                    self.retag(&c, attrs);
                }
                return;
            }
        }

        let mut kind = kind;
        if mode.as_deref() == Some("base64") && has_text && !c.has_children && kind.is_textual() {
            if let (Some(decoded), Some(body)) = (decode_base64(&c.text), body) {
                kind = if matches!(kind, Kind::Text) {
                    Kind::Text
                } else {
                    Kind::Html
                };
                self.edits.push(Edit {
                    range: body,
                    with: quick_xml::escape::escape(decoded.as_str()).into_owned(),
                });
            }
        }
        let new_type = match kind {
            Kind::Text => "text".to_owned(),
            Kind::Html => "html".to_owned(),
            // Inline markup of any declared type: feed-rs serialises it as XHTML.
            _ if c.has_children => "xhtml".to_owned(),
            // Escaped XHTML (Atom 0.3 `mode="escaped"`) is HTML text.
            Kind::Xhtml => "html".to_owned(),
            // Inline text of another type (`text/markdown`, base64 media).
            Kind::Mime(m) if is_content && has_text => m,
            Kind::Xml | Kind::Mime(_) | Kind::Other => "text".to_owned(),
        };
        if attr("type") != Some(new_type.as_str())
            && !(attr("type").is_none() && new_type == "text")
        {
            set_attr(&mut attrs, "type", &new_type);
        }
        if attrs != c.attrs {
            self.retag(&c, attrs);
        }
    }

    /// Replaces a construct's start tag by one with `attrs`.
    fn retag(&mut self, c: &Construct, attrs: Vec<Attr>) {
        let empty = self.doc[c.tag.clone()].ends_with("/>");
        self.edits.push(Edit {
            range: c.tag.clone(),
            with: start_tag(&c.qname, &attrs, empty),
        });
    }
}

/// What a text construct's `type` says its body is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `text`, `text/plain`, or no type.
    Text,
    /// `html`, `text/html`.
    Html,
    /// `xhtml`, `application/xhtml+xml`.
    Xhtml,
    /// Another XML type (`…/xml`, `…+xml`).
    Xml,
    /// Another valid MIME type (lowercased, parameters dropped).
    Mime(String),
    /// Not a type at all.
    Other,
}

impl Kind {
    fn of(ty: Option<&str>) -> Kind {
        let Some(ty) = ty else {
            return Kind::Text;
        };
        let ty = ty
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ty.as_str() {
            "" | "text" | "text/plain" | "plain" => Kind::Text,
            "html" | "text/html" => Kind::Html,
            "xhtml" | "application/xhtml+xml" | "text/xhtml" => Kind::Xhtml,
            t if t.ends_with("/xml") || t.ends_with("+xml") => Kind::Xml,
            t if is_mime(t) => Kind::Mime(t.to_owned()),
            _ => Kind::Other,
        }
    }

    /// A body of this kind is text (worth base64-decoding into text).
    fn is_textual(&self) -> bool {
        matches!(self, Kind::Text | Kind::Html | Kind::Xhtml | Kind::Xml)
    }

    /// The MIME spelling (for `<content src>`), `None` if there is none.
    fn mime(&self) -> Option<String> {
        match self {
            Kind::Text => Some("text/plain".into()),
            Kind::Html => Some("text/html".into()),
            Kind::Xhtml => Some("application/xhtml+xml".into()),
            Kind::Xml => Some("application/xml".into()),
            Kind::Mime(m) => Some(m.clone()),
            Kind::Other => None,
        }
    }
}

fn is_mime(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    t.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// A Media RSS text element feed-rs parses strictly.
pub(super) fn media_text(ns: Option<&str>, local: &str) -> Option<Family> {
    let media = || ns.and_then(known_spelling) == Some(MRSS_NS);
    (matches!(local, "title" | "description") && media()).then_some(Family::Media)
}

pub(super) fn is_text_construct(local: &str) -> bool {
    matches!(
        local,
        "title" | "subtitle" | "summary" | "content" | "rights"
    )
}

fn decode_base64(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()?;
    String::from_utf8(bytes).ok()
}
