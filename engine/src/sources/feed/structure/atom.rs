//! Atom documents (`<feed>`, a lone `<entry>`): a default namespace other
//! than Atom 1.0 becomes Atom 1.0, and every text construct and Media RSS
//! text is followed to its end for repair.

use std::ops::Range;

use quick_xml::events::{BytesStart, Event};

use super::constructs::{is_text_construct, media_text, Construct, Family};
use super::namespaces::{ATOM_03_NS, ATOM_NS};
use super::tags::{attrs_of, qname_of, start_tag};
use super::{Edit, Pass};

impl<'d> Pass<'d> {
    /// Atom: the root's namespace and every text construct's type.
    pub(super) fn atom(
        &mut self,
        root_tag: &BytesStart<'d>,
        root_span: Range<usize>,
    ) -> Option<()> {
        let attrs = attrs_of(root_tag)?;
        let root_default = attrs
            .iter()
            .find(|(k, _)| k == "xmlns")
            .map(|(_, v)| v.trim().to_owned());
        // Atom elements: no namespace (feed-rs defaults to Atom), Atom 1.0 or
        // 0.3, or whatever the root declared as default (rewritten to Atom).
        let is_atom = |ns: Option<&str>| {
            ns.is_none_or(|ns| {
                ns == ATOM_NS || ns == ATOM_03_NS || Some(ns) == root_default.as_deref()
            })
        };
        let mut depth = 1usize;
        let mut open: Option<Construct> = None;
        loop {
            let (ns, ev, span) = self.next()?;
            let family = match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    let local = e.local_name();
                    if is_atom(ns.as_deref()) && is_text_construct(local.as_ref()) {
                        Some(Family::Atom)
                    } else {
                        media_text(ns.as_deref(), local.as_ref())
                    }
                }
                _ => None,
            };
            match ev {
                Event::Start(_) | Event::Empty(_) => {
                    let is_empty = matches!(ev, Event::Empty(_));
                    self.text_element(&mut open, family, &ev, &span, depth);
                    if !is_empty {
                        depth += 1;
                    }
                }
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    self.text_element(&mut open, None, &ev, &span, depth);
                }
                Event::Eof => return None,
                _ => self.text_element(&mut open, None, &ev, &span, depth),
            }
        }
        let (fixed, changed) = self.root_attrs(attrs, ATOM_NS);
        if changed {
            self.edits.push(Edit {
                range: root_span,
                with: start_tag(&qname_of(root_tag), &fixed, false),
            });
        }
        Some(())
    }
}
