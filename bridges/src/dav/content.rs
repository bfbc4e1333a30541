//! The content-line layer shared by iCalendar (RFC 5545) and vCard (RFC 6350).
//!
//! A resource is kept as its original physical lines (folding and line endings included),
//! grouped into a tree of `BEGIN`/`END` components. Editing replaces, removes or inserts
//! whole logical lines; every line that is not touched is written back byte-for-byte and in
//! order, so an unedited document serializes to exactly its input. This is the guarantee
//! `calcard`'s own writer (which normalizes folding, case and parameter quoting) cannot give.

/// Components nest a few levels deep (VCALENDAR > VEVENT > VALARM); the bound keeps the
/// recursive writer safe on hostile input.
const MAX_NESTING: usize = 16;

/// Octets per physical line when we fold lines we write (RFC 5545 §3.1).
const FOLD_AT: usize = 75;

/// Why a document could not be split into components.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("line {line}: END:{found} closes BEGIN:{expected}")]
    MismatchedEnd {
        line: usize,
        expected: String,
        found: String,
    },
    #[error("line {line}: END:{found} without a BEGIN")]
    UnopenedEnd { line: usize, found: String },
    #[error("BEGIN:{0} is never closed")]
    Unclosed(String),
    #[error("components nest deeper than {MAX_NESTING}")]
    TooDeep,
    #[error("line {line} is not a content line (no ':')")]
    NotAContentLine { line: usize },
}

/// One parameter as written: `NAME=value` where the value keeps its quotes and commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawParam {
    pub name: String,
    /// `None` for a bare parameter without `=` (vCard 2.1 style `TEL;CELL:`).
    pub value: Option<String>,
}

impl RawParam {
    /// The values, split on commas outside quotes and unquoted.
    pub fn values(&self) -> Vec<String> {
        let Some(v) = &self.value else {
            return Vec::new();
        };
        split_unquoted(v, ',')
            .into_iter()
            .map(|s| unquote(s).to_string())
            .collect()
    }
}

/// A logical content line split into its parts, without unescaping the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawProp {
    pub group: Option<String>,
    pub name: String,
    pub params: Vec<RawParam>,
    pub value: String,
}

impl RawProp {
    pub fn new(name: &str, value: String) -> Self {
        Self {
            group: None,
            name: name.to_string(),
            params: Vec::new(),
            value,
        }
    }

    /// Parses an unfolded line (without its line ending).
    pub fn parse(line: &str) -> Option<Self> {
        let colon = find_unquoted(line, ':')?;
        let head = &line[..colon];
        let value = line[colon + 1..].to_string();
        let mut parts = split_unquoted(head, ';').into_iter();
        let full_name = parts.next()?;
        let (group, name) = match full_name.rfind('.') {
            Some(i) => (Some(full_name[..i].to_string()), &full_name[i + 1..]),
            None => (None, full_name),
        };
        if name.is_empty() {
            return None;
        }
        let params = parts
            .map(|p| match p.find('=') {
                Some(i) => RawParam {
                    name: p[..i].to_string(),
                    value: Some(p[i + 1..].to_string()),
                },
                None => RawParam {
                    name: p.to_string(),
                    value: None,
                },
            })
            .collect();
        Some(Self {
            group,
            name: name.to_string(),
            params,
            value,
        })
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// All values of every parameter called `name` (case-insensitive), unquoted.
    pub fn param_values(&self, name: &str) -> Vec<String> {
        self.params
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(name))
            .flat_map(RawParam::values)
            .collect()
    }

    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.param_values(name).into_iter().next()
    }

    /// Sets parameter `name` to `value` (quoting when needed), keeping its position when
    /// present; `None` removes every parameter of that name.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else {
            self.params.retain(|p| !p.name.eq_ignore_ascii_case(name));
            return;
        };
        let encoded = quote_param(value);
        let mut seen = false;
        self.params.retain_mut(|p| {
            if !p.name.eq_ignore_ascii_case(name) {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            p.value = Some(encoded.clone());
            true
        });
        if !seen {
            self.params.push(RawParam {
                name: name.to_string(),
                value: Some(encoded),
            });
        }
    }

    /// Sets parameter `name` to the comma-joined `values` (`[]` removes it).
    pub fn set_param_list(&mut self, name: &str, values: &[String]) {
        if values.is_empty() {
            self.set_param(name, None);
            return;
        }
        let joined: Vec<String> = values.iter().map(|v| quote_param(v)).collect();
        self.set_param(name, None);
        self.params.push(RawParam {
            name: name.to_string(),
            value: Some(joined.join(",")),
        });
    }

    /// The unfolded line.
    pub fn to_line(&self) -> String {
        let mut out = String::new();
        if let Some(g) = &self.group {
            out.push_str(g);
            out.push('.');
        }
        out.push_str(&self.name);
        for p in &self.params {
            out.push(';');
            out.push_str(&p.name);
            if let Some(v) = &p.value {
                out.push('=');
                out.push_str(v);
            }
        }
        out.push(':');
        out.push_str(&self.value);
        out
    }
}

fn quote_param(value: &str) -> String {
    // Parameter values cannot hold DQUOTE at all (RFC 6868 caret encoding aside).
    let clean: String = value.chars().filter(|c| *c != '"').collect();
    if clean.contains([':', ';', ',']) {
        format!("\"{clean}\"")
    } else {
        clean
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Unescapes an iCalendar / vCard TEXT value.
pub fn unescape_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    out
}

/// Escapes a TEXT value (`\`, `;`, `,` and newlines).
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Splits a structured value (N, ORG, ADR) on unescaped `sep`, unescaping each part.
pub fn split_structured(raw: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(unescape_text(&cur));
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    parts.push(unescape_text(&cur));
    parts
}

/// One logical line: its original bytes and, when parsable, its parts.
#[derive(Debug, Clone)]
struct Line {
    /// Exactly as read (folds and line ending included), or as we wrote it.
    raw: String,
    prop: Option<RawProp>,
}

#[derive(Debug, Clone)]
enum Node {
    Line(usize),
    Component(usize),
}

/// A `BEGIN:X` … `END:X` block (or the document root, which has neither line).
#[derive(Debug, Clone)]
struct Component {
    /// Upper-cased component name; empty for the root.
    kind: String,
    begin: Option<usize>,
    end: Option<usize>,
    nodes: Vec<Node>,
    parent: Option<usize>,
}

/// Handle to a component of a [`ContentDoc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentId(usize);

/// Handle to a property line of a [`ContentDoc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineId(usize);

/// A document of content lines that writes back untouched lines byte-for-byte.
#[derive(Debug, Clone)]
pub struct ContentDoc {
    lines: Vec<Line>,
    components: Vec<Component>,
    newline: &'static str,
    modified: bool,
}

/// Splits `text` into logical lines, each keeping its folds and line ending.
fn logical_lines(text: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let next = i + 1;
            // A following space or tab continues this logical line.
            let continues = matches!(bytes.get(next), Some(b' ' | b'\t'));
            if !continues {
                out.push(&text[start..next]);
                start = next;
            }
        }
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Removes folds and the line ending.
fn unfold(raw: &str) -> String {
    let trimmed = raw.strip_suffix('\n').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    let mut out = String::with_capacity(trimmed.len());
    let mut rest = trimmed;
    while let Some(i) = rest.find('\n') {
        let before = &rest[..i];
        out.push_str(before.strip_suffix('\r').unwrap_or(before));
        // Skip the single whitespace that marks the fold.
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix([' ', '\t']) {
            rest = r;
        }
    }
    out.push_str(rest);
    out
}

impl ContentDoc {
    pub fn parse(text: &str) -> Result<Self, ContentError> {
        let newline = if text.contains("\r\n") || !text.contains('\n') {
            "\r\n"
        } else {
            "\n"
        };
        let mut doc = Self {
            lines: Vec::new(),
            components: vec![Component {
                kind: String::new(),
                begin: None,
                end: None,
                nodes: Vec::new(),
                parent: None,
            }],
            newline,
            modified: false,
        };
        let mut stack = vec![0usize];
        for (n, raw) in logical_lines(text).into_iter().enumerate() {
            let unfolded = unfold(raw);
            let prop = RawProp::parse(&unfolded);
            let id = doc.lines.len();
            let current = *stack.last().unwrap_or(&0);
            let is_blank = unfolded.trim().is_empty();
            if prop.is_none() && !is_blank {
                return Err(ContentError::NotAContentLine { line: n + 1 });
            }
            doc.lines.push(Line {
                raw: raw.to_string(),
                prop: prop.clone(),
            });
            match prop {
                Some(p) if p.is("BEGIN") && p.params.is_empty() => {
                    if stack.len() > MAX_NESTING {
                        return Err(ContentError::TooDeep);
                    }
                    let cid = doc.components.len();
                    doc.components.push(Component {
                        kind: p.value.trim().to_ascii_uppercase(),
                        begin: Some(id),
                        end: None,
                        nodes: Vec::new(),
                        parent: Some(current),
                    });
                    doc.components[current].nodes.push(Node::Component(cid));
                    stack.push(cid);
                }
                Some(p) if p.is("END") && p.params.is_empty() => {
                    let found = p.value.trim().to_ascii_uppercase();
                    if current == 0 {
                        return Err(ContentError::UnopenedEnd { line: n + 1, found });
                    }
                    if doc.components[current].kind != found {
                        return Err(ContentError::MismatchedEnd {
                            line: n + 1,
                            expected: doc.components[current].kind.clone(),
                            found,
                        });
                    }
                    doc.components[current].end = Some(id);
                    stack.pop();
                }
                _ => doc.components[current].nodes.push(Node::Line(id)),
            }
        }
        if let Some(&open) = stack.last()
            && open != 0
        {
            return Err(ContentError::Unclosed(doc.components[open].kind.clone()));
        }
        Ok(doc)
    }

    /// The document root (holds the top-level components).
    pub fn root(&self) -> ComponentId {
        ComponentId(0)
    }

    /// Whether any edit changed a line.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Upper-cased kind (`VEVENT`) of a component.
    pub fn kind(&self, c: ComponentId) -> &str {
        self.components
            .get(c.0)
            .map_or("", |comp| comp.kind.as_str())
    }

    /// Direct sub-components of `c`, in order.
    pub fn children(&self, c: ComponentId) -> Vec<ComponentId> {
        self.components.get(c.0).map_or_else(Vec::new, |comp| {
            comp.nodes
                .iter()
                .filter_map(|n| match n {
                    Node::Component(id) => Some(ComponentId(*id)),
                    Node::Line(_) => None,
                })
                .collect()
        })
    }

    /// Every component of `kind` anywhere below `c`, in document order.
    pub fn descendants(&self, c: ComponentId, kind: &str) -> Vec<ComponentId> {
        let mut out = Vec::new();
        let mut stack = vec![c];
        while let Some(cur) = stack.pop() {
            let kids = self.children(cur);
            for k in kids.iter().rev() {
                stack.push(*k);
            }
            if cur != c && self.kind(cur).eq_ignore_ascii_case(kind) {
                out.push(cur);
            }
        }
        out
    }

    /// Property lines directly in `c` named `name` (case-insensitive), in order.
    pub fn props(&self, c: ComponentId, name: &str) -> Vec<(LineId, &RawProp)> {
        let Some(comp) = self.components.get(c.0) else {
            return Vec::new();
        };
        comp.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Line(id) => self
                    .lines
                    .get(*id)
                    .and_then(|l| l.prop.as_ref())
                    .filter(|p| p.is(name))
                    .map(|p| (LineId(*id), p)),
                Node::Component(_) => None,
            })
            .collect()
    }

    /// The first property `name` directly in `c`.
    pub fn prop(&self, c: ComponentId, name: &str) -> Option<&RawProp> {
        self.props(c, name).into_iter().next().map(|(_, p)| p)
    }

    /// The raw text (folds and line ending included) of a component, for re-parsing it
    /// with `calcard`.
    pub fn component_text(&self, c: ComponentId) -> String {
        let mut out = String::new();
        self.write_component(c.0, &mut out);
        out
    }

    /// Replaces line `id` with `prop`; a no-op (the original bytes stay) when equal.
    pub fn replace(&mut self, id: LineId, prop: RawProp) {
        let Some(line) = self.lines.get_mut(id.0) else {
            return;
        };
        if line.prop.as_ref() == Some(&prop) {
            return;
        }
        line.raw = fold(&prop.to_line(), self.newline);
        line.prop = Some(prop);
        self.modified = true;
    }

    /// Removes line `id` from its component.
    pub fn remove(&mut self, id: LineId) {
        for comp in &mut self.components {
            let before = comp.nodes.len();
            comp.nodes
                .retain(|n| !matches!(n, Node::Line(l) if *l == id.0));
            if comp.nodes.len() != before {
                self.modified = true;
                return;
            }
        }
    }

    /// Inserts `prop` into `c`: after the last line named `after` when there is one, else
    /// after the component's last property line (before its sub-components).
    pub fn insert(&mut self, c: ComponentId, prop: RawProp, after: &[&str]) -> LineId {
        let id = self.lines.len();
        self.lines.push(Line {
            raw: fold(&prop.to_line(), self.newline),
            prop: Some(prop),
        });
        let lines = &self.lines;
        let Some(comp) = self.components.get_mut(c.0) else {
            return LineId(id);
        };
        let is_line_named = |n: &Node, names: &[&str]| match n {
            Node::Line(l) => lines
                .get(*l)
                .and_then(|l| l.prop.as_ref())
                .is_some_and(|p| names.iter().any(|name| p.is(name))),
            Node::Component(_) => false,
        };
        let pos = comp
            .nodes
            .iter()
            .rposition(|n| is_line_named(n, after))
            .or_else(|| comp.nodes.iter().rposition(|n| matches!(n, Node::Line(_))))
            .map_or(0, |p| p + 1);
        comp.nodes.insert(pos, Node::Line(id));
        self.modified = true;
        LineId(id)
    }

    /// Appends a new component `kind` to `parent` right after `after` (or at the end) with
    /// the given property lines.
    pub fn insert_component(
        &mut self,
        parent: ComponentId,
        kind: &str,
        after: Option<ComponentId>,
        props: Vec<RawProp>,
    ) -> ComponentId {
        let begin = self.push_line(RawProp::new("BEGIN", kind.to_string()));
        let end = self.push_line(RawProp::new("END", kind.to_string()));
        let cid = self.components.len();
        let nodes = props
            .into_iter()
            .map(|p| Node::Line(self.push_line(p)))
            .collect();
        self.components.push(Component {
            kind: kind.to_ascii_uppercase(),
            begin: Some(begin),
            end: Some(end),
            nodes,
            parent: Some(parent.0),
        });
        if let Some(comp) = self.components.get_mut(parent.0) {
            let pos = after
                .and_then(|a| {
                    comp.nodes
                        .iter()
                        .position(|n| matches!(n, Node::Component(c) if *c == a.0))
                })
                .map_or(comp.nodes.len(), |p| p + 1);
            comp.nodes.insert(pos, Node::Component(cid));
        }
        self.modified = true;
        ComponentId(cid)
    }

    /// Removes component `c` (and everything in it).
    pub fn remove_component(&mut self, c: ComponentId) {
        let Some(parent) = self.components.get(c.0).and_then(|comp| comp.parent) else {
            return;
        };
        if let Some(p) = self.components.get_mut(parent) {
            p.nodes
                .retain(|n| !matches!(n, Node::Component(id) if *id == c.0));
            self.modified = true;
        }
    }

    fn push_line(&mut self, prop: RawProp) -> usize {
        self.lines.push(Line {
            raw: fold(&prop.to_line(), self.newline),
            prop: Some(prop),
        });
        self.lines.len() - 1
    }

    fn write_component(&self, c: usize, out: &mut String) {
        let Some(comp) = self.components.get(c) else {
            return;
        };
        let write_line = |id: usize, out: &mut String| {
            if let Some(l) = self.lines.get(id) {
                out.push_str(&l.raw);
                // A last line without a line ending gets one only if more lines follow.
            }
        };
        if let Some(b) = comp.begin {
            write_line(b, out);
        }
        for n in &comp.nodes {
            ensure_newline(out, self.newline);
            match n {
                Node::Line(id) => write_line(*id, out),
                Node::Component(id) => self.write_component(*id, out),
            }
        }
        if let Some(e) = comp.end {
            ensure_newline(out, self.newline);
            write_line(e, out);
        }
    }

    /// Serializes the document: the input itself when nothing was edited.
    pub fn write(&self) -> String {
        let mut out = String::new();
        self.write_component(0, &mut out);
        out
    }
}

/// Ends `out` with a line ending unless it is empty or already ends with one (the input's
/// last line may lack it, and lines may be inserted after it).
fn ensure_newline(out: &mut String, newline: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(newline);
    }
}

/// Folds an unfolded line at 75 octets (never inside a UTF-8 sequence) and ends it.
pub fn fold(line: &str, newline: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / FOLD_AT * 3 + 2);
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > FOLD_AT {
            out.push_str(newline);
            out.push(' ');
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOC: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\nSUMMARY;LANGUAGE=en:Long \r\n line\r\nX-Y;A=\"a:b;c\":v\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn unedited_round_trip_is_identity() {
        for text in [
            DOC,
            "BEGIN:VCARD\nFN:x\nEND:VCARD",
            "",
            "\r\n",
            "BEGIN:VCARD\r\nEND:VCARD\r\n\r\n",
        ] {
            let doc = ContentDoc::parse(text).unwrap();
            assert_eq!(doc.write(), text);
            assert!(!doc.is_modified());
        }
    }

    #[test]
    fn parts_and_unfolding() {
        let doc = ContentDoc::parse(DOC).unwrap();
        let ev = doc.descendants(doc.root(), "VEVENT")[0];
        let s = doc.prop(ev, "summary").unwrap();
        assert_eq!(s.value, "Long line");
        assert_eq!(s.param("language").as_deref(), Some("en"));
        let x = doc.prop(ev, "X-Y").unwrap();
        assert_eq!(x.param("A").as_deref(), Some("a:b;c"));
        assert_eq!(x.value, "v");
        assert_eq!(doc.descendants(doc.root(), "VALARM").len(), 1);
    }

    #[test]
    fn edits_touch_only_their_line() {
        let mut doc = ContentDoc::parse(DOC).unwrap();
        let ev = doc.descendants(doc.root(), "VEVENT")[0];
        let (id, p) = doc.props(ev, "SUMMARY")[0];
        let mut p = p.clone();
        p.value = "Short".into();
        doc.replace(id, p);
        doc.insert(ev, RawProp::new("LOCATION", "Here".into()), &["SUMMARY"]);
        assert_eq!(
            doc.write(),
            DOC.replace(
                "SUMMARY;LANGUAGE=en:Long \r\n line\r\n",
                "SUMMARY;LANGUAGE=en:Short\r\nLOCATION:Here\r\n"
            )
        );
    }

    #[test]
    fn structure_errors() {
        assert!(matches!(
            ContentDoc::parse("BEGIN:A\r\nEND:B\r\n"),
            Err(ContentError::MismatchedEnd { .. })
        ));
        assert!(matches!(
            ContentDoc::parse("BEGIN:A\r\n"),
            Err(ContentError::Unclosed(_))
        ));
        assert!(matches!(
            ContentDoc::parse("END:A\r\n"),
            Err(ContentError::UnopenedEnd { .. })
        ));
        assert!(matches!(
            ContentDoc::parse("garbage\r\n"),
            Err(ContentError::NotAContentLine { .. })
        ));
        assert_eq!(
            ContentDoc::parse(&"BEGIN:A\r\n".repeat(100)).err(),
            Some(ContentError::TooDeep)
        );
    }

    #[test]
    fn folding_respects_utf8_and_width() {
        let line = format!("DESCRIPTION:{}", "é".repeat(100));
        let folded = fold(&line, "\r\n");
        for l in folded.split("\r\n") {
            assert!(l.len() <= FOLD_AT, "{l:?}");
        }
        assert_eq!(unfold(&folded), line);
    }

    #[test]
    fn text_escaping() {
        let s = "a,b;c\\d\ne";
        assert_eq!(escape_text(s), "a\\,b\\;c\\\\d\\ne");
        assert_eq!(unescape_text(&escape_text(s)), s);
        assert_eq!(
            split_structured("Doe;John\\;x;;", ';'),
            ["Doe", "John;x", "", ""]
        );
    }

    proptest! {
        #[test]
        fn any_parsable_text_round_trips(text in "[A-Z:;=\",\\. \r\n\t-]{0,200}") {
            if let Ok(doc) = ContentDoc::parse(&text) {
                prop_assert_eq!(doc.write(), text);
            }
        }
    }
}
