//! Reading and editing the vCard properties a `contact` needs (FN, N, ORG, TITLE, NOTE,
//! EMAIL, TEL, UID) without disturbing anything else.
//!
//! The resource is validated with `calcard`; edits go through [`ContentDoc`], so untouched
//! lines (photos, X- properties, grouped `item1.` labels, unknown parameters) are written back
//! byte-for-byte, and a setter given the value already present changes nothing. vCard 3 marks
//! the preferred entry with `TYPE=pref`, vCard 4 with `PREF=1`; both are read and the
//! resource's own convention is written.

use calcard::{Entry, Parser};

use super::content::{
    ComponentId, ContentDoc, ContentError, LineId, RawProp, escape_text, split_structured,
    unescape_text,
};

/// A property line and its parts.
type Line = (LineId, RawProp);

/// Why a resource could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcardError {
    #[error("not a vCard resource: {0}")]
    NotVcard(String),
    #[error("vCard structure: {0}")]
    Structure(#[from] ContentError),
    #[error("resource has no VCARD")]
    NoVcard,
}

/// N: family; given; additional; prefixes; suffixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructuredName {
    pub family: String,
    pub given: String,
    pub additional: String,
    pub prefixes: String,
    pub suffixes: String,
}

impl StructuredName {
    fn to_value(&self) -> String {
        [
            &self.family,
            &self.given,
            &self.additional,
            &self.prefixes,
            &self.suffixes,
        ]
        .iter()
        .map(|s| escape_text(s))
        .collect::<Vec<_>>()
        .join(";")
    }

    fn from_value(raw: &str) -> Self {
        let mut parts = split_structured(raw, ';').into_iter();
        let mut next = || parts.next().unwrap_or_default();
        Self {
            family: next(),
            given: next(),
            additional: next(),
            prefixes: next(),
            suffixes: next(),
        }
    }
}

/// An EMAIL or TEL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedValue {
    pub value: String,
    /// TYPE values lower-cased, without `pref` (`work`, `home`, `cell`, …).
    pub types: Vec<String>,
    /// `PREF=1` (vCard 4) or `TYPE=pref` (vCard 3).
    pub pref: bool,
}

impl TypedValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            types: Vec::new(),
            pref: false,
        }
    }
}

/// The properties of a VCARD that a `contact` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactProps {
    pub uid: Option<String>,
    pub full_name: Option<String>,
    pub name: Option<StructuredName>,
    /// The first ORG component (the organization name; units stay as they are).
    pub organization: Option<String>,
    pub title: Option<String>,
    pub note: Option<String>,
    pub emails: Vec<TypedValue>,
    pub phones: Vec<TypedValue>,
}

/// Single text-valued properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardText {
    Uid,
    FullName,
    Title,
    Note,
}

impl CardText {
    fn name(self) -> &'static str {
        match self {
            Self::Uid => "UID",
            Self::FullName => "FN",
            Self::Title => "TITLE",
            Self::Note => "NOTE",
        }
    }
}

/// EMAIL or TEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardList {
    Emails,
    Phones,
}

impl CardList {
    fn name(self) -> &'static str {
        match self {
            Self::Emails => "EMAIL",
            Self::Phones => "TEL",
        }
    }

    /// The value used to match entries: lower-cased email, or the digits (and a leading +)
    /// of a phone number.
    fn key(self, value: &str) -> String {
        match self {
            Self::Emails => value.trim().to_lowercase(),
            Self::Phones => value
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect(),
        }
    }
}

/// A parsed vCard resource (its first VCARD) that can be edited in place.
#[derive(Debug, Clone)]
pub struct Card {
    doc: ContentDoc,
    card: ComponentId,
    v4: bool,
}

/// A TEL value without a `tel:` URI scheme.
fn strip_tel(value: &str) -> &str {
    match value.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("tel:") => &value[4..],
        _ => value,
    }
}

fn read_typed(list: CardList, p: &RawProp) -> TypedValue {
    let mut types = Vec::new();
    let mut pref = p.param("PREF").is_some_and(|v| v.trim() == "1");
    for t in p.param_values("TYPE") {
        // vCard 3 also allows `TYPE=work,pref` and bare `;PREF` is handled by param().
        for t in t.split(',') {
            let t = t.trim().to_lowercase();
            if t == "pref" {
                pref = true;
            } else if !t.is_empty() {
                types.push(t);
            }
        }
    }
    let value = unescape_text(&p.value);
    let value = match list {
        CardList::Phones => strip_tel(&value).to_string(),
        CardList::Emails => value,
    };
    TypedValue { value, types, pref }
}

impl Card {
    /// Parses a resource; `calcard` must accept it as a vCard.
    pub fn parse(text: &str) -> Result<Self, VcardError> {
        match Parser::new(text).entry() {
            Entry::VCard(_) => {}
            other => return Err(VcardError::NotVcard(format!("{other:?}"))),
        }
        let doc = ContentDoc::parse(text)?;
        let card = doc
            .children(doc.root())
            .into_iter()
            .find(|c| doc.kind(*c) == "VCARD")
            .ok_or(VcardError::NoVcard)?;
        let v4 = doc
            .prop(card, "VERSION")
            .is_some_and(|p| p.value.trim().starts_with('4'));
        Ok(Self { doc, card, v4 })
    }

    /// Whether an edit changed anything (only then is there anything to write).
    pub fn is_modified(&self) -> bool {
        self.doc.is_modified()
    }

    /// The resource: byte-for-byte the input when unedited.
    pub fn to_vcard(&self) -> String {
        self.doc.write()
    }

    fn text(&self, name: &str) -> Option<String> {
        self.doc
            .prop(self.card, name)
            .map(|p| unescape_text(&p.value))
    }

    /// Reads the properties driftless maps.
    pub fn contact(&self) -> ContactProps {
        let typed = |list: CardList| {
            self.doc
                .props(self.card, list.name())
                .into_iter()
                .map(|(_, p)| read_typed(list, p))
                .collect()
        };
        ContactProps {
            uid: self.text("UID"),
            full_name: self.text("FN"),
            name: self
                .doc
                .prop(self.card, "N")
                .map(|p| StructuredName::from_value(&p.value)),
            organization: self
                .doc
                .prop(self.card, "ORG")
                .and_then(|p| split_structured(&p.value, ';').into_iter().next()),
            title: self.text("TITLE"),
            note: self.text("NOTE"),
            emails: typed(CardList::Emails),
            phones: typed(CardList::Phones),
        }
    }

    fn existing(&self, name: &str) -> Vec<(LineId, RawProp)> {
        self.doc
            .props(self.card, name)
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .collect()
    }

    /// Sets (or with `None` removes) a text property, keeping its parameters and group.
    pub fn set_text(&mut self, prop: CardText, value: Option<&str>) {
        let name = prop.name();
        let existing = self.existing(name);
        match (value, existing.first()) {
            (None, _) => existing.into_iter().for_each(|(id, _)| self.doc.remove(id)),
            (Some(v), Some((id, p))) => {
                if unescape_text(&p.value) != v {
                    let mut p = p.clone();
                    p.value = escape_text(v);
                    self.doc.replace(*id, p);
                }
            }
            (Some(v), None) => {
                self.doc
                    .insert(self.card, RawProp::new(name, escape_text(v)), &[]);
            }
        }
    }

    /// Sets (or removes) N.
    pub fn set_name(&mut self, name: Option<&StructuredName>) {
        let existing = self.existing("N");
        match (name, existing.first()) {
            (None, _) => existing.into_iter().for_each(|(id, _)| self.doc.remove(id)),
            (Some(n), Some((id, p))) => {
                if StructuredName::from_value(&p.value) != *n {
                    let mut p = p.clone();
                    p.value = n.to_value();
                    self.doc.replace(*id, p);
                }
            }
            (Some(n), None) => {
                self.doc
                    .insert(self.card, RawProp::new("N", n.to_value()), &["FN"]);
            }
        }
    }

    /// Sets (or removes) the organization name: the first ORG component; units after it stay.
    pub fn set_organization(&mut self, org: Option<&str>) {
        let existing = self.existing("ORG");
        match (org, existing.first()) {
            (None, _) => existing.into_iter().for_each(|(id, _)| self.doc.remove(id)),
            (Some(o), Some((id, p))) => {
                let mut parts = split_structured(&p.value, ';');
                if parts.first().map(String::as_str) != Some(o) {
                    if let Some(first) = parts.first_mut() {
                        *first = o.to_string();
                    }
                    let mut p = p.clone();
                    p.value = parts
                        .iter()
                        .map(|s| escape_text(s))
                        .collect::<Vec<_>>()
                        .join(";");
                    self.doc.replace(*id, p);
                }
            }
            (Some(o), None) => {
                self.doc
                    .insert(self.card, RawProp::new("ORG", escape_text(o)), &[]);
            }
        }
    }

    /// Makes the EMAIL (or TEL) entries exactly `wanted`.
    ///
    /// Entries are matched first by value (see [`CardList`]), then the remaining ones pair up
    /// in order (an edited value keeps its line, group and other parameters). Matched lines
    /// change only where value, types or preference differ; unmatched lines are removed;
    /// the rest are added after the last line of that kind.
    pub fn set_list(&mut self, list: CardList, wanted: &[TypedValue]) {
        let name = list.name();
        let existing = self.existing(name);
        let mut pairs: Vec<(Option<Line>, Option<&TypedValue>)> = Vec::new();
        let mut unmatched: Vec<Line> = Vec::new();
        let mut open: Vec<&TypedValue> = wanted.iter().collect();
        for (id, p) in existing {
            let key = list.key(&read_typed(list, &p).value);
            match open.iter().position(|w| list.key(&w.value) == key) {
                Some(i) => pairs.push((Some((id, p)), Some(open.remove(i)))),
                None => unmatched.push((id, p)),
            }
        }
        let mut open = open.into_iter();
        for line in unmatched {
            pairs.push((Some(line), open.next()));
        }
        for w in open {
            pairs.push((None, Some(w)));
        }
        for pair in pairs {
            match pair {
                (Some((id, _)), None) => self.doc.remove(id),
                (Some((id, p)), Some(w)) => {
                    let new = self.update_typed(list, &p, w);
                    self.doc.replace(id, new);
                }
                (None, Some(w)) => {
                    let new = self.update_typed(list, &RawProp::new(name, String::new()), w);
                    self.doc.insert(self.card, new, &[name]);
                }
                (None, None) => {}
            }
        }
    }

    /// `p` changed only where it differs from `w`.
    fn update_typed(&self, list: CardList, p: &RawProp, w: &TypedValue) -> RawProp {
        let current = read_typed(list, p);
        let mut new = p.clone();
        if current.value != w.value {
            // Keep a `tel:` URI form if that is what the line used.
            let tel_uri = list == CardList::Phones && strip_tel(&p.value).len() != p.value.len();
            new.value = if tel_uri {
                format!("tel:{}", w.value)
            } else {
                escape_text(&w.value)
            };
        }
        let types_differ = {
            let mut a = current.types.clone();
            let mut b: Vec<String> = w.types.iter().map(|t| t.to_lowercase()).collect();
            a.sort();
            b.sort();
            a != b
        };
        if self.v4 {
            if types_differ {
                new.set_param_list("TYPE", &w.types);
            }
            if current.pref != w.pref {
                new.set_param("PREF", w.pref.then_some("1"));
            }
        } else if types_differ || current.pref != w.pref {
            let mut types = w.types.clone();
            if w.pref {
                types.push("pref".to_string());
            }
            new.set_param_list("TYPE", &types);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vCard 3 as Apple writes it: grouped labels, PHOTO folded, TYPE lists, X- properties.
    const V3: &str = "BEGIN:VCARD\r\n\
VERSION:3.0\r\n\
PRODID:-//Apple Inc.//iOS 17.0//EN\r\n\
N:Lovelace;Ada;Augusta;Lady;\r\n\
FN:Ada Lovelace\r\n\
ORG:Analytical Engines Ltd;Research\r\n\
TITLE:Countess\r\n\
item1.EMAIL;type=INTERNET;type=WORK;type=pref:ada@example.com\r\n\
item1.X-ABLabel:_$!<Work>!$_\r\n\
EMAIL;TYPE=INTERNET,HOME:ada@home.example\r\n\
TEL;TYPE=CELL;TYPE=VOICE:+44 20 7946 0018\r\n\
NOTE:Wrote the first program\\, arguably.\\nSecond line\r\n\
PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHR\r\n \
ofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA\r\n\
X-SOCIALPROFILE;type=twitter:https://twitter.com/ada\r\n\
UID:c-1@example.com\r\n\
END:VCARD\r\n";

    const V4: &str = "BEGIN:VCARD\r\n\
VERSION:4.0\r\n\
FN:Grace Hopper\r\n\
N:Hopper;Grace;;;\r\n\
EMAIL;TYPE=work;PREF=1:grace@navy.example\r\n\
TEL;VALUE=uri;TYPE=\"voice,cell\":tel:+1-555-0100\r\n\
UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n\
END:VCARD\r\n";

    #[test]
    fn reads_v3() {
        let card = Card::parse(V3).unwrap();
        let c = card.contact();
        assert_eq!(c.uid.as_deref(), Some("c-1@example.com"));
        assert_eq!(c.full_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            c.name,
            Some(StructuredName {
                family: "Lovelace".into(),
                given: "Ada".into(),
                additional: "Augusta".into(),
                prefixes: "Lady".into(),
                suffixes: String::new()
            })
        );
        assert_eq!(c.organization.as_deref(), Some("Analytical Engines Ltd"));
        assert_eq!(c.title.as_deref(), Some("Countess"));
        assert_eq!(
            c.note.as_deref(),
            Some("Wrote the first program, arguably.\nSecond line")
        );
        assert_eq!(
            c.emails,
            vec![
                TypedValue {
                    value: "ada@example.com".into(),
                    types: vec!["internet".into(), "work".into()],
                    pref: true
                },
                TypedValue {
                    value: "ada@home.example".into(),
                    types: vec!["internet".into(), "home".into()],
                    pref: false
                }
            ]
        );
        assert_eq!(c.phones[0].value, "+44 20 7946 0018");
        assert_eq!(c.phones[0].types, vec!["cell", "voice"]);
    }

    #[test]
    fn reads_v4() {
        let c = Card::parse(V4).unwrap().contact();
        assert_eq!(c.emails[0].types, vec!["work"]);
        assert!(c.emails[0].pref);
        assert_eq!(c.phones[0].value, "+1-555-0100");
        assert_eq!(c.phones[0].types, vec!["voice", "cell"]);
    }

    #[test]
    fn unchanged_round_trips_exactly() {
        for text in [V3, V4] {
            let mut card = Card::parse(text).unwrap();
            assert_eq!(card.to_vcard(), text);
            let c = card.contact();
            card.set_text(CardText::Uid, c.uid.as_deref());
            card.set_text(CardText::FullName, c.full_name.as_deref());
            card.set_text(CardText::Title, c.title.as_deref());
            card.set_text(CardText::Note, c.note.as_deref());
            card.set_name(c.name.as_ref());
            card.set_organization(c.organization.as_deref());
            card.set_list(CardList::Emails, &c.emails);
            card.set_list(CardList::Phones, &c.phones);
            assert!(!card.is_modified(), "{text}");
            assert_eq!(card.to_vcard(), text);
        }
    }

    #[test]
    fn edits_touch_only_their_lines() {
        let mut card = Card::parse(V3).unwrap();
        let mut c = card.contact();
        card.set_text(CardText::FullName, Some("Ada King"));
        card.set_organization(Some("Babbage & Co"));
        // Edit the work email's value: its group, label and parameters stay.
        c.emails[0].value = "ada@king.example".into();
        // Replace the home email by another one: unmatched entries pair up in order, so the
        // home line is rewritten in place.
        c.emails.remove(1);
        c.emails.push(TypedValue {
            value: "countess@example.org".into(),
            types: vec!["other".into()],
            pref: false,
        });
        card.set_list(CardList::Emails, &c.emails);
        let expected = V3
            .replace("FN:Ada Lovelace", "FN:Ada King")
            .replace(
                "ORG:Analytical Engines Ltd;Research",
                "ORG:Babbage & Co;Research",
            )
            .replace(
                "item1.EMAIL;type=INTERNET;type=WORK;type=pref:ada@example.com",
                "item1.EMAIL;type=INTERNET;type=WORK;type=pref:ada@king.example",
            )
            .replace(
                "EMAIL;TYPE=INTERNET,HOME:ada@home.example",
                "EMAIL;TYPE=other:countess@example.org",
            );
        assert_eq!(card.to_vcard(), expected);
        // A further entry goes after the last EMAIL line; dropping one removes its line.
        let mut emails = card.contact().emails;
        emails.push(TypedValue::new("third@example.org"));
        card.set_list(CardList::Emails, &emails);
        let expected = expected.replace(
            "EMAIL;TYPE=other:countess@example.org\r\n",
            "EMAIL;TYPE=other:countess@example.org\r\nEMAIL:third@example.org\r\n",
        );
        assert_eq!(card.to_vcard(), expected);
        emails.remove(1);
        card.set_list(CardList::Emails, &emails);
        let expected = expected.replace("EMAIL;TYPE=other:countess@example.org\r\n", "");
        assert_eq!(card.to_vcard(), expected);
    }

    #[test]
    fn preference_follows_the_version() {
        let mut v3 = Card::parse(V3).unwrap();
        let mut emails = v3.contact().emails;
        emails[0].pref = false;
        emails[1].pref = true;
        v3.set_list(CardList::Emails, &emails);
        let out = v3.to_vcard();
        assert!(
            out.contains("item1.EMAIL;TYPE=internet,work:ada@example.com"),
            "{out}"
        );
        assert!(
            out.contains("EMAIL;TYPE=internet,home,pref:ada@home.example"),
            "{out}"
        );
        assert_eq!(Card::parse(&out).unwrap().contact().emails, emails);

        let mut v4 = Card::parse(V4).unwrap();
        let mut phones = v4.contact().phones;
        phones[0].value = "+1-555-0199".into();
        phones[0].pref = true;
        v4.set_list(CardList::Phones, &phones);
        let out = v4.to_vcard();
        assert!(
            out.contains("TEL;VALUE=uri;TYPE=\"voice,cell\";PREF=1:tel:+1-555-0199\r\n"),
            "{out}"
        );
        assert_eq!(Card::parse(&out).unwrap().contact().phones, phones);
    }

    #[test]
    fn rejects_what_is_not_vcard() {
        assert!(Card::parse("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").is_err());
        assert!(Card::parse("nope").is_err());
    }

    proptest::proptest! {
        /// Provider input never panics the parser or the reader.
        #[test]
        fn hostile_input_never_panics(cut in 0usize..2000, flip in 0usize..2000, byte in 0u8..128, junk in "[ -~\r\n\t]{0,300}") {
            let mut bytes = V3.as_bytes().to_vec();
            let len = bytes.len();
            bytes[flip % len] = byte;
            bytes.truncate(cut % (len + 1));
            let text = String::from_utf8_lossy(&bytes).into_owned();
            for t in [text, format!("BEGIN:VCARD\r\nVERSION:4.0\r\n{junk}\r\nEND:VCARD\r\n"), junk] {
                if let Ok(card) = Card::parse(&t) {
                    let _ = card.contact();
                    proptest::prop_assert_eq!(card.to_vcard(), t);
                }
            }
        }
    }
}
