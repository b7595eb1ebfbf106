//! HTML → text without a tree: html5ever's tokenizer feeds a sink that keeps
//! only what decides the text — the stack of open elements, the list of
//! active formatting elements, the form pointer — and applies the "in body"
//! tree construction rules to them, reporting each element's opening and
//! closing and each text node to [`Breaks`] as the tree walk of [`super::dom`]
//! would.
//!
//! That holds while every node is inserted at the current node, so that the
//! order of insertions is the tree's order. The rules that break it (foster
//! parenting out of a table, the adoption agency moving a block into a
//! formatting element, foreign SVG/MathML content, `<select>`, `<template>`,
//! `<plaintext>`, `<option>`, removing a block that is not the current node
//! from the stack) are not reproduced: the sink stops the tokenizer and
//! [`html_to_text`] returns `None`, for the tree walk to do it. So are
//! captions and column groups, forms, inputs, scripts and styles directly in
//! a table, and a table started in a table (not in a cell): rare in feeds.
//!
//! The rules are html5ever's own (`tree_builder/rules.rs`, insertion modes
//! "in body" and "text", with the "in head" ones "in body" defers to, and
//! "in table", "in table text", "in table body", "in row" and "in cell"),
//! in the context html5ever's fragment parsing of scraper sets: a `<body>`
//! context element, scripting enabled, no quirks. The table modes are read
//! off the stack of open elements, as "reset the insertion mode
//! appropriately" does.

use std::cell::{Cell, RefCell};
use std::mem;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use html5ever::{local_name, Attribute, LocalName, TokenizerResult};

use super::{Breaks, Role};

/// The text of an HTML fragment, or `None` when its tree is one the tokens
/// alone cannot tell (see the module documentation).
pub(super) fn html_to_text(html: &str) -> Option<String> {
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let tokenizer = Tokenizer::new(Sink::default(), TokenizerOpts::default());
    // `Script` is how the sink pauses the tokenizer to give up; the
    // encoding a `<meta>` names is of no interest in a decoded string.
    while !matches!(tokenizer.feed(&input), TokenizerResult::Done) {
        if tokenizer.sink.state.borrow().gave_up {
            return None;
        }
    }
    tokenizer.sink.ending.set(true);
    tokenizer.end();
    let state = tokenizer.sink.state.into_inner();
    if state.gave_up {
        return None;
    }
    Some(state.finish())
}

/// Whether the fragment has a start tag the sink gives up on (SVG/MathML,
/// `<select>`, …): a scan for them is cheaper than reading the fragment up
/// to one. Conservative: a match in a comment or a script counts too.
pub(super) fn stands_aside(html: &str) -> bool {
    const TAGS: [&[u8]; 7] = [
        b"svg",
        b"math",
        b"select",
        b"option",
        b"optgroup",
        b"template",
        b"plaintext",
    ];
    let b = html.as_bytes();
    memchr::memchr_iter(b'<', b).any(|lt| {
        let rest = &b[lt + 1..];
        TAGS.iter().any(|t| {
            rest.get(..t.len())
                .is_some_and(|name| name.eq_ignore_ascii_case(t))
        })
    })
}

/// Why the sink stands aside: the tree would not be built in token order.
struct GiveUp;

/// The insertion modes the sink follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Body,
    Table,
    TableBody,
    Row,
    Cell,
}

/// The row groups: "clear the stack back to a table body context" stops
/// at one of them.
const ROW_GROUPS: [LocalName; 3] = [
    local_name!("tbody"),
    local_name!("tfoot"),
    local_name!("thead"),
];

/// What a table mode did with a tag.
enum Next {
    /// Done with it.
    Done,
    /// The mode changed: read it again.
    Again,
    /// "In body" reads it.
    Body,
}

type Step<T = ()> = Result<T, GiveUp>;

/// The tokenizer's sink (html5ever calls it through `&self`).
#[derive(Default)]
struct Sink {
    state: RefCell<State>,
    /// The tokenizer is at its end: it must not be paused any more (it
    /// asserts so; no tag is emitted there in the first place).
    ending: Cell<bool>,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        if state.gave_up {
            return TokenSinkResult::Continue;
        }
        let is_tag = matches!(token, Token::TagToken(_));
        match state.process(token) {
            Ok(next) => next,
            Err(GiveUp) => {
                state.gave_up = true;
                // Only a tag's result can pause the tokenizer (html5ever
                // asserts `Continue` for other tokens); every give-up is
                // on a tag, and after one the sink ignores the rest anyway.
                if is_tag && !self.ending.get() {
                    TokenSinkResult::Script(())
                } else {
                    TokenSinkResult::Continue
                }
            }
        }
    }
}

/// An element on the stack of open elements.
struct Open {
    name: LocalName,
    /// Tells apart elements of the same name (html5ever compares handles).
    id: u32,
    /// [`flags`] of the name.
    flags: u16,
}

/// An entry of the list of active formatting elements.
enum Entry {
    Marker,
    Element { id: u32, tag: Tag },
}

/// What the tree builder would hold, less the tree.
struct State {
    /// The stack of open elements; `stack[0]` is the fragment's `<html>`.
    stack: Vec<Open>,
    formatting: Vec<Entry>,
    /// The form element pointer.
    form: Option<u32>,
    next_id: u32,
    /// Drop a newline that starts the next token (after `<pre>`, `<listing>`,
    /// `<textarea>`).
    ignore_lf: bool,
    /// In the "text" insertion mode (inside a raw text or RCDATA element).
    text_mode: bool,
    /// `<table>` elements on the stack: while there is none, the mode is
    /// "in body" without a look at the stack.
    open_tables: usize,
    out: Breaks,
    gave_up: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            stack: vec![Open {
                name: local_name!("html"),
                id: 0,
                flags: flags("html"),
            }],
            formatting: Vec::new(),
            form: None,
            next_id: 1,
            ignore_lf: false,
            text_mode: false,
            open_tables: 0,
            out: Breaks::default(),
            gave_up: false,
        }
    }
}

/// Special elements (html5ever's `special_tag`).
const SPECIAL: u16 = 1;
/// Boundaries of the default scope.
const SCOPE: u16 = 1 << 1;
/// Further boundaries of the list item scope.
const LIST_SCOPE: u16 = 1 << 2;
/// Further boundaries of the button scope.
const BUTTON_SCOPE: u16 = 1 << 3;
/// Closed by "generate implied end tags" (html5ever's `cursory_implied_end`).
const IMPLIED: u16 = 1 << 4;
const HEADING: u16 = 1 << 5;

/// Which of html5ever's tag sets an HTML element name is in.
fn flags(name: &str) -> u16 {
    match name {
        "applet" | "marquee" | "object" | "template" | "html" | "table" | "td" | "th"
        | "caption" | "select" => SPECIAL | SCOPE,
        "ol" | "ul" => SPECIAL | LIST_SCOPE,
        "button" => SPECIAL | BUTTON_SCOPE,
        "dd" | "dt" | "li" | "p" => SPECIAL | IMPLIED,
        "option" | "optgroup" | "rb" | "rp" | "rt" | "rtc" => IMPLIED,
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => SPECIAL | HEADING,
        "address" | "area" | "article" | "aside" | "base" | "basefont" | "bgsound"
        | "blockquote" | "body" | "br" | "center" | "col" | "colgroup" | "details" | "dir"
        | "div" | "dl" | "embed" | "fieldset" | "figcaption" | "figure" | "footer" | "form"
        | "frame" | "frameset" | "head" | "header" | "hgroup" | "hr" | "iframe" | "img"
        | "input" | "isindex" | "link" | "listing" | "main" | "menu" | "meta" | "nav"
        | "noembed" | "noframes" | "noscript" | "param" | "plaintext" | "pre" | "script"
        | "section" | "source" | "style" | "summary" | "tbody" | "textarea" | "tfoot" | "thead"
        | "title" | "tr" | "track" | "wbr" | "xmp" => SPECIAL,
        _ => 0,
    }
}

/// Which scope an "in scope" check uses.
#[derive(Clone, Copy)]
enum Scope {
    Default,
    ListItem,
    Button,
}

impl Scope {
    fn boundary(self, flags: u16) -> bool {
        let extra = match self {
            Scope::Default => 0,
            Scope::ListItem => LIST_SCOPE,
            Scope::Button => BUTTON_SCOPE,
        };
        flags & (SCOPE | extra) != 0
    }
}

impl State {
    fn process(&mut self, token: Token) -> Step<TokenSinkResult<()>> {
        let ignore_lf = mem::take(&mut self.ignore_lf);
        match token {
            Token::CharacterTokens(t) => {
                let t = match t.strip_prefix('\n') {
                    Some(rest) if ignore_lf => rest,
                    _ => &t,
                };
                if t.is_empty() {
                    return Ok(TokenSinkResult::Continue);
                }
                if !self.text_mode
                    && matches!(self.mode(), Mode::Table | Mode::TableBody | Mode::Row)
                {
                    // "In table text": whitespace goes into the table; any
                    // other character is foster-parented out of it.
                    if !t
                        .bytes()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0c | b'\r'))
                    {
                        return Err(GiveUp);
                    }
                    self.out.text_node(t);
                    return Ok(TokenSinkResult::Continue);
                }
                if !self.text_mode {
                    self.reconstruct_formatting();
                }
                // Adjacent character tokens make one text node in the
                // tree; [`Breaks`] writes the same text for them one by one.
                self.out.text_node(t);
            }
            // Ignored in body; raw text states emit U+FFFD as characters.
            Token::NullCharacterToken | Token::ParseError(_) | Token::DoctypeToken(_) => {}
            // Comments are nodes of no text.
            Token::CommentToken(_) => {
                if self.text_mode {
                    return Err(GiveUp);
                }
            }
            Token::EOFToken => {
                if mem::take(&mut self.text_mode) {
                    self.pop()?;
                }
            }
            Token::TagToken(tag) => {
                if self.text_mode {
                    // The tokenizer ends raw text only at its end tag.
                    if tag.kind != TagKind::EndTag {
                        return Err(GiveUp);
                    }
                    self.text_mode = false;
                    self.pop()?;
                } else {
                    return self.tag(tag);
                }
            }
        }
        Ok(TokenSinkResult::Continue)
    }

    /// A tag outside raw text: the table modes' rules first, where one
    /// applies, then "in body".
    fn tag(&mut self, tag: Tag) -> Step<TokenSinkResult<()>> {
        // Each reading again pops or inserts towards a cell; a handful is
        // the most any tag takes (a guard, not a rule).
        for _ in 0..16 {
            let next = match self.mode() {
                Mode::Body => Next::Body,
                Mode::Cell => self.in_cell(&tag)?,
                Mode::Row => self.in_row(&tag)?,
                Mode::TableBody => self.in_table_body(&tag)?,
                Mode::Table => self.in_table(&tag)?,
            };
            match next {
                Next::Done => return Ok(TokenSinkResult::Continue),
                Next::Again => {}
                Next::Body if tag.kind == TagKind::StartTag => return self.start_tag(tag),
                Next::Body => return self.end_tag(tag).map(|()| TokenSinkResult::Continue),
            }
        }
        Err(GiveUp)
    }

    /// The insertion mode, as "reset the insertion mode appropriately"
    /// reads it off the stack: the nearest cell, row, row group or table.
    fn mode(&self) -> Mode {
        if self.open_tables == 0 {
            return Mode::Body;
        }
        for open in self.stack.iter().rev() {
            match open.name {
                local_name!("td") | local_name!("th") => return Mode::Cell,
                local_name!("tr") => return Mode::Row,
                local_name!("tbody") | local_name!("thead") | local_name!("tfoot") => {
                    return Mode::TableBody
                }
                local_name!("table") => return Mode::Table,
                _ => {}
            }
        }
        Mode::Body
    }

    /// "In table". Whatever the tree builder would foster-parent out of
    /// the table (any other element), captions, column groups, forms,
    /// inputs, scripts and styles in it, and a table in a table, the sink
    /// gives up on.
    fn in_table(&mut self, tag: &Tag) -> Step<Next> {
        let start = tag.kind == TagKind::StartTag;
        match tag.name {
            local_name!("tbody") | local_name!("tfoot") | local_name!("thead") if start => {
                self.clear_back_to(&[local_name!("table")])?;
                self.insert(&tag.name, &tag.attrs);
                Ok(Next::Done)
            }
            local_name!("td") | local_name!("th") | local_name!("tr") if start => {
                self.clear_back_to(&[local_name!("table")])?;
                self.insert(&local_name!("tbody"), &[]);
                Ok(Next::Again)
            }
            local_name!("table") if !start => {
                if self.in_table_scope(|o| o.name == local_name!("table")) {
                    self.pop_until(|o| o.name == local_name!("table"))?;
                }
                Ok(Next::Done)
            }
            local_name!("body")
            | local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("html")
            | local_name!("tbody")
            | local_name!("td")
            | local_name!("tfoot")
            | local_name!("th")
            | local_name!("thead")
            | local_name!("tr")
                if !start =>
            {
                Ok(Next::Done)
            }
            _ => Err(GiveUp),
        }
    }

    /// "In table body".
    fn in_table_body(&mut self, tag: &Tag) -> Step<Next> {
        let start = tag.kind == TagKind::StartTag;
        match tag.name {
            local_name!("tr") if start => {
                self.clear_back_to(&ROW_GROUPS)?;
                self.insert(&tag.name, &tag.attrs);
                Ok(Next::Done)
            }
            local_name!("td") | local_name!("th") if start => {
                self.clear_back_to(&ROW_GROUPS)?;
                self.insert(&local_name!("tr"), &[]);
                Ok(Next::Again)
            }
            local_name!("tbody") | local_name!("tfoot") | local_name!("thead") if !start => {
                if self.in_table_scope(|o| o.name == tag.name) {
                    self.clear_back_to(&ROW_GROUPS)?;
                    self.pop()?;
                }
                Ok(Next::Done)
            }
            local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("tbody")
            | local_name!("tfoot")
            | local_name!("thead")
                if start =>
            {
                self.leave_table_body()
            }
            local_name!("table") if !start => self.leave_table_body(),
            local_name!("body")
            | local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("html")
            | local_name!("td")
            | local_name!("th")
            | local_name!("tr")
                if !start =>
            {
                Ok(Next::Done)
            }
            _ => self.in_table(tag),
        }
    }

    /// Closes the row group and has the tag read again, if one is open.
    fn leave_table_body(&mut self) -> Step<Next> {
        if !self.in_table_scope(|o| ROW_GROUPS.contains(&o.name)) {
            return Ok(Next::Done);
        }
        self.clear_back_to(&ROW_GROUPS)?;
        self.pop()?;
        Ok(Next::Again)
    }

    /// "In row".
    fn in_row(&mut self, tag: &Tag) -> Step<Next> {
        let start = tag.kind == TagKind::StartTag;
        let row_in_scope = |s: &Self| s.in_table_scope(|o| o.name == local_name!("tr"));
        match tag.name {
            local_name!("td") | local_name!("th") if start => {
                self.clear_back_to(&[local_name!("tr")])?;
                self.insert(&tag.name, &tag.attrs);
                self.formatting.push(Entry::Marker);
                Ok(Next::Done)
            }
            local_name!("tr") if !start => {
                if row_in_scope(self) {
                    self.clear_back_to(&[local_name!("tr")])?;
                    self.pop()?;
                }
                Ok(Next::Done)
            }
            local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("tbody")
            | local_name!("tfoot")
            | local_name!("thead")
            | local_name!("tr")
                if start =>
            {
                self.leave_row(row_in_scope(self))
            }
            local_name!("table") if !start => self.leave_row(row_in_scope(self)),
            local_name!("tbody") | local_name!("tfoot") | local_name!("thead") if !start => {
                let group = self.in_table_scope(|o| o.name == tag.name);
                self.leave_row(group && row_in_scope(self))
            }
            local_name!("body")
            | local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("html")
            | local_name!("td")
            | local_name!("th")
                if !start =>
            {
                Ok(Next::Done)
            }
            _ => self.in_table(tag),
        }
    }

    /// Closes the row and has the tag read again, if `open` (else the tag
    /// is ignored).
    fn leave_row(&mut self, open: bool) -> Step<Next> {
        if !open {
            return Ok(Next::Done);
        }
        self.clear_back_to(&[local_name!("tr")])?;
        self.pop()?;
        Ok(Next::Again)
    }

    /// "In cell": table tags close the cell; everything else is "in body".
    fn in_cell(&mut self, tag: &Tag) -> Step<Next> {
        let start = tag.kind == TagKind::StartTag;
        let cell = |o: &Open| matches!(o.name, local_name!("td") | local_name!("th"));
        match tag.name {
            local_name!("td") | local_name!("th") if !start => {
                if self.in_table_scope(|o| o.name == tag.name) {
                    self.generate_implied_end_tags(None)?;
                    self.pop_until(|o| o.name == tag.name)?;
                    while let Some(Entry::Element { .. }) = self.formatting.pop() {}
                }
                Ok(Next::Done)
            }
            local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("tbody")
            | local_name!("td")
            | local_name!("tfoot")
            | local_name!("th")
            | local_name!("thead")
            | local_name!("tr")
                if start =>
            {
                if !self.in_table_scope(cell) {
                    return Ok(Next::Done);
                }
                self.close_cell()?;
                Ok(Next::Again)
            }
            local_name!("body")
            | local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("html")
                if !start =>
            {
                Ok(Next::Done)
            }
            local_name!("table")
            | local_name!("tbody")
            | local_name!("tfoot")
            | local_name!("thead")
            | local_name!("tr")
                if !start =>
            {
                if !self.in_table_scope(|o| o.name == tag.name) {
                    return Ok(Next::Done);
                }
                self.close_cell()?;
                Ok(Next::Again)
            }
            _ => Ok(Next::Body),
        }
    }

    fn close_cell(&mut self) -> Step {
        self.generate_implied_end_tags(None)?;
        self.pop_until(|o| matches!(o.name, local_name!("td") | local_name!("th")))?;
        while let Some(Entry::Element { .. }) = self.formatting.pop() {}
        Ok(())
    }

    /// Pops elements until the current node is one of `names`, a table or
    /// the fragment's `<html>` ("clear the stack back to a table context",
    /// a table body context, a table row context).
    fn clear_back_to(&mut self, names: &[LocalName]) -> Step {
        loop {
            let current = &self.current().name;
            if names.contains(current)
                || matches!(
                    *current,
                    local_name!("table") | local_name!("template") | local_name!("html")
                )
            {
                return Ok(());
            }
            self.pop()?;
        }
    }

    /// "Has an element in table scope".
    fn in_table_scope(&self, target: impl Fn(&Open) -> bool) -> bool {
        for open in self.stack.iter().rev() {
            if target(open) {
                return true;
            }
            if matches!(
                open.name,
                local_name!("html") | local_name!("table") | local_name!("template")
            ) {
                return false;
            }
        }
        false
    }

    fn start_tag(&mut self, tag: Tag) -> Step<TokenSinkResult<()>> {
        match tag.name {
            // "in head" rules.
            local_name!("base")
            | local_name!("basefont")
            | local_name!("bgsound")
            | local_name!("link")
            | local_name!("meta") => self.insert_void(&tag.name, &tag.attrs),
            local_name!("title") | local_name!("textarea") => {
                if tag.name == local_name!("textarea") {
                    self.ignore_lf = true;
                }
                return Ok(self.raw_text(&tag, RawKind::Rcdata));
            }
            local_name!("noframes")
            | local_name!("style")
            | local_name!("noscript")
            | local_name!("iframe")
            | local_name!("noembed") => return Ok(self.raw_text(&tag, RawKind::Rawtext)),
            local_name!("script") => return Ok(self.raw_text(&tag, RawKind::ScriptData)),
            local_name!("xmp") => {
                self.close_p_in_button_scope()?;
                self.reconstruct_formatting();
                return Ok(self.raw_text(&tag, RawKind::Rawtext));
            }
            // No effect on the tree in a fragment: attributes merged into
            // `<html>`, no `<body>` to merge into or replace, table parts
            // outside a table and `<head>` ignored.
            local_name!("html")
            | local_name!("body")
            | local_name!("frameset")
            | local_name!("caption")
            | local_name!("col")
            | local_name!("colgroup")
            | local_name!("frame")
            | local_name!("head")
            | local_name!("tbody")
            | local_name!("td")
            | local_name!("tfoot")
            | local_name!("th")
            | local_name!("thead")
            | local_name!("tr") => {}
            local_name!("address")
            | local_name!("article")
            | local_name!("aside")
            | local_name!("blockquote")
            | local_name!("center")
            | local_name!("details")
            | local_name!("dialog")
            | local_name!("dir")
            | local_name!("div")
            | local_name!("dl")
            | local_name!("fieldset")
            | local_name!("figcaption")
            | local_name!("figure")
            | local_name!("footer")
            | local_name!("header")
            | local_name!("hgroup")
            | local_name!("main")
            | local_name!("nav")
            | local_name!("ol")
            | local_name!("p")
            | local_name!("search")
            | local_name!("section")
            | local_name!("summary")
            | local_name!("ul")
            | local_name!("menu") => {
                self.close_p_in_button_scope()?;
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("h1")
            | local_name!("h2")
            | local_name!("h3")
            | local_name!("h4")
            | local_name!("h5")
            | local_name!("h6") => {
                self.close_p_in_button_scope()?;
                if self.current().flags & HEADING != 0 {
                    self.pop()?;
                }
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("pre") | local_name!("listing") => {
                self.close_p_in_button_scope()?;
                self.insert(&tag.name, &tag.attrs);
                self.ignore_lf = true;
            }
            local_name!("form") => {
                if self.form.is_none() {
                    self.close_p_in_button_scope()?;
                    self.form = Some(self.insert(&tag.name, &tag.attrs));
                }
            }
            local_name!("li") | local_name!("dd") | local_name!("dt") => {
                let list = tag.name == local_name!("li");
                let mut to_close = None;
                for open in self.stack.iter().rev() {
                    let closes = if list {
                        open.name == local_name!("li")
                    } else {
                        matches!(open.name, local_name!("dd") | local_name!("dt"))
                    };
                    if closes {
                        to_close = Some(open.name.clone());
                        break;
                    }
                    if open.flags & SPECIAL != 0
                        && !matches!(
                            open.name,
                            local_name!("address") | local_name!("div") | local_name!("p")
                        )
                    {
                        break;
                    }
                }
                if let Some(name) = to_close {
                    self.generate_implied_end_tags(Some(&name))?;
                    self.pop_until(|o| o.name == name)?;
                }
                self.close_p_in_button_scope()?;
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("button") => {
                if self.in_scope(Scope::Default, |o| o.name == local_name!("button")) {
                    self.generate_implied_end_tags(None)?;
                    self.pop_until(|o| o.name == local_name!("button"))?;
                }
                self.reconstruct_formatting();
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("a") => {
                let open_a = self
                    .formatting_to_marker()
                    .find_map(|(_, id, t)| (t.name == local_name!("a")).then_some(id));
                if let Some(id) = open_a {
                    self.adoption_agency(&local_name!("a"))?;
                    if let Some(i) = self.formatting_position(id) {
                        self.formatting.remove(i);
                    }
                    self.remove_from_stack(id)?;
                }
                self.reconstruct_formatting();
                self.insert_formatting(tag);
            }
            local_name!("b")
            | local_name!("big")
            | local_name!("code")
            | local_name!("em")
            | local_name!("font")
            | local_name!("i")
            | local_name!("s")
            | local_name!("small")
            | local_name!("strike")
            | local_name!("strong")
            | local_name!("tt")
            | local_name!("u") => {
                self.reconstruct_formatting();
                self.insert_formatting(tag);
            }
            local_name!("nobr") => {
                self.reconstruct_formatting();
                if self.in_scope(Scope::Default, |o| o.name == local_name!("nobr")) {
                    self.adoption_agency(&local_name!("nobr"))?;
                    self.reconstruct_formatting();
                }
                self.insert_formatting(tag);
            }
            local_name!("applet") | local_name!("marquee") | local_name!("object") => {
                self.reconstruct_formatting();
                self.insert(&tag.name, &tag.attrs);
                self.formatting.push(Entry::Marker);
            }
            local_name!("area")
            | local_name!("br")
            | local_name!("embed")
            | local_name!("img")
            | local_name!("keygen")
            | local_name!("wbr")
            | local_name!("input") => {
                self.reconstruct_formatting();
                self.insert_void(&tag.name, &tag.attrs);
            }
            local_name!("image") => {
                self.reconstruct_formatting();
                self.insert_void(&local_name!("img"), &tag.attrs);
            }
            local_name!("param") | local_name!("source") | local_name!("track") => {
                self.insert_void(&tag.name, &tag.attrs);
            }
            local_name!("hr") => {
                self.close_p_in_button_scope()?;
                self.insert_void(&tag.name, &tag.attrs);
            }
            local_name!("rb") | local_name!("rtc") => {
                if self.in_scope(Scope::Default, |o| o.name == local_name!("ruby")) {
                    self.generate_implied_end_tags(None)?;
                }
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("rp") | local_name!("rt") => {
                if self.in_scope(Scope::Default, |o| o.name == local_name!("ruby")) {
                    self.generate_implied_end_tags(Some(&local_name!("rtc")))?;
                }
                self.insert(&tag.name, &tag.attrs);
            }
            local_name!("table") => {
                self.close_p_in_button_scope()?;
                self.insert(&tag.name, &tag.attrs);
            }
            // Foreign content, select and its options, templates, plaintext.
            local_name!("svg")
            | local_name!("math")
            | local_name!("select")
            | local_name!("option")
            | local_name!("optgroup")
            | local_name!("template")
            | local_name!("plaintext") => return Err(GiveUp),
            _ => {
                self.reconstruct_formatting();
                self.insert(&tag.name, &tag.attrs);
            }
        }
        Ok(TokenSinkResult::Continue)
    }

    fn end_tag(&mut self, tag: Tag) -> Step {
        match tag.name {
            local_name!("template") | local_name!("option") | local_name!("optgroup") => {
                return Err(GiveUp)
            }
            // No `<body>` is ever open in a fragment.
            local_name!("body") | local_name!("html") => {}
            local_name!("address")
            | local_name!("article")
            | local_name!("aside")
            | local_name!("blockquote")
            | local_name!("button")
            | local_name!("center")
            | local_name!("details")
            | local_name!("dialog")
            | local_name!("dir")
            | local_name!("div")
            | local_name!("dl")
            | local_name!("fieldset")
            | local_name!("figcaption")
            | local_name!("figure")
            | local_name!("footer")
            | local_name!("header")
            | local_name!("hgroup")
            | local_name!("listing")
            | local_name!("main")
            | local_name!("menu")
            | local_name!("nav")
            | local_name!("ol")
            | local_name!("pre")
            | local_name!("search")
            | local_name!("section")
            | local_name!("select")
            | local_name!("summary")
            | local_name!("ul") => {
                if self.in_scope(Scope::Default, |o| o.name == tag.name) {
                    self.generate_implied_end_tags(None)?;
                    self.pop_until(|o| o.name == tag.name)?;
                }
            }
            local_name!("form") => {
                let Some(id) = self.form.take() else {
                    return Ok(());
                };
                if !self.in_scope(Scope::Default, |o| o.id == id) {
                    return Ok(());
                }
                self.generate_implied_end_tags(None)?;
                self.remove_from_stack(id)?;
            }
            local_name!("p") => {
                if !self.in_scope(Scope::Button, |o| o.name == local_name!("p")) {
                    self.insert(&local_name!("p"), &[]);
                }
                self.close_p()?;
            }
            local_name!("li") | local_name!("dd") | local_name!("dt") => {
                let scope = if tag.name == local_name!("li") {
                    Scope::ListItem
                } else {
                    Scope::Default
                };
                if self.in_scope(scope, |o| o.name == tag.name) {
                    self.generate_implied_end_tags(Some(&tag.name))?;
                    self.pop_until(|o| o.name == tag.name)?;
                }
            }
            local_name!("h1")
            | local_name!("h2")
            | local_name!("h3")
            | local_name!("h4")
            | local_name!("h5")
            | local_name!("h6") => {
                if self.in_scope(Scope::Default, |o| o.flags & HEADING != 0) {
                    self.generate_implied_end_tags(None)?;
                    self.pop_until(|o| o.flags & HEADING != 0)?;
                }
            }
            local_name!("a")
            | local_name!("b")
            | local_name!("big")
            | local_name!("code")
            | local_name!("em")
            | local_name!("font")
            | local_name!("i")
            | local_name!("nobr")
            | local_name!("s")
            | local_name!("small")
            | local_name!("strike")
            | local_name!("strong")
            | local_name!("tt")
            | local_name!("u") => self.adoption_agency(&tag.name)?,
            local_name!("applet") | local_name!("marquee") | local_name!("object") => {
                if self.in_scope(Scope::Default, |o| o.name == tag.name) {
                    self.generate_implied_end_tags(None)?;
                    self.pop_until(|o| o.name == tag.name)?;
                    while let Some(Entry::Element { .. }) = self.formatting.pop() {}
                }
            }
            // `</br>` is read as `<br>`.
            local_name!("br") => {
                self.reconstruct_formatting();
                self.insert_void(&local_name!("br"), &[]);
            }
            _ => self.any_other_end_tag(&tag.name)?,
        }
        Ok(())
    }

    /// "Any other end tag" in body.
    fn any_other_end_tag(&mut self, name: &LocalName) -> Step {
        let mut at = None;
        for (i, open) in self.stack.iter().enumerate().rev() {
            if open.name == *name {
                at = Some(i);
                break;
            }
            if open.flags & SPECIAL != 0 {
                return Ok(());
            }
        }
        let Some(at) = at else {
            return Ok(());
        };
        self.generate_implied_end_tags(Some(name))?;
        while self.stack.len() > at {
            self.pop()?;
        }
        Ok(())
    }

    /// The adoption agency algorithm, as far as it keeps the tree in token
    /// order: when a special element is open inside the formatting element
    /// (a "furthest block"), the tree builder moves it; the sink gives up.
    fn adoption_agency(&mut self, subject: &LocalName) -> Step {
        let current = self.current();
        if current.name == *subject && self.formatting_position(current.id).is_none() {
            return self.pop();
        }
        let found = self
            .formatting_to_marker()
            .find_map(|(i, id, t)| (t.name == *subject).then_some((i, id)));
        let Some((index, id)) = found else {
            return self.any_other_end_tag(subject);
        };
        let Some(at) = self.stack.iter().rposition(|o| o.id == id) else {
            self.formatting.remove(index);
            return Ok(());
        };
        if !self.in_scope(Scope::Default, |o| o.id == id) {
            return Ok(());
        }
        if self.stack[at..].iter().any(|o| o.flags & SPECIAL != 0) {
            return Err(GiveUp);
        }
        while self.stack.len() > at {
            self.pop()?;
        }
        self.formatting.remove(index);
        Ok(())
    }

    /// A raw text or RCDATA element: inserted, and the tokenizer switched to
    /// the state that reads its content as text.
    fn raw_text(&mut self, tag: &Tag, kind: RawKind) -> TokenSinkResult<()> {
        self.insert(&tag.name, &tag.attrs);
        self.text_mode = true;
        TokenSinkResult::RawData(kind)
    }

    fn current(&self) -> &Open {
        // `stack[0]` is never popped (see `pop`).
        &self.stack[self.stack.len() - 1]
    }

    fn in_scope(&self, scope: Scope, target: impl Fn(&Open) -> bool) -> bool {
        for open in self.stack.iter().rev() {
            if target(open) {
                return true;
            }
            if scope.boundary(open.flags) {
                return false;
            }
        }
        false
    }

    /// Pops the elements "generate implied end tags" closes, but `except`.
    fn generate_implied_end_tags(&mut self, except: Option<&LocalName>) -> Step {
        loop {
            let current = self.current();
            if current.flags & IMPLIED == 0 || Some(&current.name) == except {
                return Ok(());
            }
            self.pop()?;
        }
    }

    /// Pops elements until one that `target` matches has been popped.
    fn pop_until(&mut self, target: impl Fn(&Open) -> bool) -> Step {
        loop {
            if target(&self.pop_open()?) {
                return Ok(());
            }
        }
    }

    fn close_p(&mut self) -> Step {
        self.generate_implied_end_tags(Some(&local_name!("p")))?;
        self.pop_until(|o| o.name == local_name!("p"))
    }

    fn close_p_in_button_scope(&mut self) -> Step {
        if self.in_scope(Scope::Button, |o| o.name == local_name!("p")) {
            self.close_p()?;
        }
        Ok(())
    }

    /// Takes an element off the stack wherever it is. Off the top that is a
    /// pop; below it, the elements above stay open inside it, so its end
    /// comes later in the tree than now: fine for an element that does
    /// nothing to the text, not for one that does.
    fn remove_from_stack(&mut self, id: u32) -> Step {
        let Some(at) = self.stack.iter().rposition(|o| o.id == id) else {
            return Ok(());
        };
        if at + 1 == self.stack.len() {
            return self.pop();
        }
        if at == 0 || Role::of(&self.stack[at].name) != Role::Inline {
            return Err(GiveUp);
        }
        self.stack.remove(at);
        Ok(())
    }

    fn formatting_to_marker(&self) -> impl Iterator<Item = (usize, u32, &Tag)> {
        self.formatting
            .iter()
            .enumerate()
            .rev()
            .map_while(|(i, e)| match e {
                Entry::Marker => None,
                Entry::Element { id, tag } => Some((i, *id, tag)),
            })
    }

    fn formatting_position(&self, id: u32) -> Option<usize> {
        self.formatting
            .iter()
            .position(|e| matches!(e, Entry::Element { id: e_id, .. } if *e_id == id))
    }

    /// Inserts a formatting element and records it in the list of active
    /// formatting elements (at most three equal ones after the last marker).
    fn insert_formatting(&mut self, tag: Tag) {
        let mut first = None;
        let mut equal = 0usize;
        for (i, _, old) in self.formatting_to_marker() {
            if tag.equiv_modulo_attr_order(old) {
                first = Some(i);
                equal += 1;
            }
        }
        if let Some(first) = first.filter(|_| equal >= 3) {
            self.formatting.remove(first);
        }
        let id = self.insert(&tag.name, &tag.attrs);
        self.formatting.push(Entry::Element { id, tag });
    }

    /// Reopens the formatting elements that were closed implicitly since
    /// the last marker (they do nothing to the text, but they are open
    /// elements the rules look at, and new text nodes go into them).
    fn reconstruct_formatting(&mut self) {
        let open = |state: &State, e: &Entry| match e {
            Entry::Marker => true,
            Entry::Element { id, .. } => state.stack.iter().rev().any(|o| o.id == *id),
        };
        let Some(last) = self.formatting.last() else {
            return;
        };
        if open(self, last) {
            return;
        }
        let mut i = self.formatting.len() - 1;
        while i > 0 {
            i -= 1;
            if open(self, &self.formatting[i]) {
                i += 1;
                break;
            }
        }
        for i in i..self.formatting.len() {
            let Entry::Element { tag, .. } = &self.formatting[i] else {
                continue;
            };
            let (name, attrs) = (tag.name.clone(), tag.attrs.clone());
            let new = self.insert(&name, &attrs);
            if let Entry::Element { id, .. } = &mut self.formatting[i] {
                *id = new;
            }
        }
    }

    /// Inserts an element at the current node and pushes it.
    fn insert(&mut self, name: &LocalName, attrs: &[Attribute]) -> u32 {
        self.open_element(name, attrs);
        let id = self.next_id;
        self.next_id += 1;
        if *name == local_name!("table") {
            self.open_tables += 1;
        }
        self.stack.push(Open {
            name: name.clone(),
            id,
            flags: flags(name),
        });
        id
    }

    /// Inserts an element that is closed at once (void elements).
    fn insert_void(&mut self, name: &LocalName, attrs: &[Attribute]) {
        let role = self.open_element(name, attrs);
        self.out.close(role, *name == local_name!("br"));
    }

    fn open_element(&mut self, name: &LocalName, attrs: &[Attribute]) -> Role {
        let role = Role::of(name);
        let alt = match role {
            Role::Image => attrs
                .iter()
                .find(|a| a.name.local == local_name!("alt"))
                .map(|a| &*a.value),
            _ => None,
        };
        self.out.open(role, alt);
        role
    }

    fn pop(&mut self) -> Step {
        self.pop_open().map(drop)
    }

    /// Pops the current node; never the fragment's `<html>`.
    fn pop_open(&mut self) -> Step<Open> {
        if self.stack.len() <= 1 {
            return Err(GiveUp);
        }
        let open = self.stack.pop().ok_or(GiveUp)?;
        if open.name == local_name!("table") {
            self.open_tables = self.open_tables.saturating_sub(1);
        }
        self.out
            .close(Role::of(&open.name), open.name == local_name!("br"));
        Ok(open)
    }

    /// End of input: every open element closes.
    fn finish(mut self) -> String {
        while let Some(open) = self.stack.pop() {
            self.out
                .close(Role::of(&open.name), open.name == local_name!("br"));
        }
        self.out.finish()
    }
}
