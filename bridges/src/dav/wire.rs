//! WebDAV / CalDAV / CardDAV wire format: request bodies we send and the multistatus and error
//! bodies servers answer with.
//!
//! Parsing resolves namespaces properly (servers pick their own prefixes, or none), never
//! panics on hostile input, and names what was malformed in its error.

use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};

pub const DAV_NS: &str = "DAV:";
pub const CALDAV_NS: &str = "urn:ietf:params:xml:ns:caldav";
pub const CARDDAV_NS: &str = "urn:ietf:params:xml:ns:carddav";

/// Deeper documents are rejected: nothing we read nests beyond 6 levels, and a bound keeps
/// the tree's (recursive) drop from overflowing the stack.
const MAX_DEPTH: usize = 64;

/// Which kind of DAV collection a client talks to; decides the multiget report and the
/// property carrying the resource body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionKind {
    /// CalDAV calendar: `calendar-multiget`, `calendar-data`, `text/calendar`.
    Calendar,
    /// CardDAV address book: `addressbook-multiget`, `address-data`, `text/vcard`.
    AddressBook,
}

impl CollectionKind {
    fn data_local(self) -> &'static str {
        match self {
            Self::Calendar => "calendar-data",
            Self::AddressBook => "address-data",
        }
    }

    /// The media type of a member resource.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Calendar => "text/calendar; charset=utf-8",
            Self::AddressBook => "text/vcard; charset=utf-8",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// Escapes text for element content.
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

const XML_DECL: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

/// RFC 6578 `sync-collection` REPORT body asking for member etags.
///
/// `token` is `None` for the initial sync. `limit` adds `<D:limit><D:nresults>`; callers must
/// pass `None` for Xandikos, which truncates without a 507 marker and so loses changes.
pub fn sync_collection_body(token: Option<&str>, limit: Option<u32>) -> String {
    let token = match token {
        Some(t) => format!("<D:sync-token>{}</D:sync-token>", xml_text(t)),
        None => "<D:sync-token/>".to_string(),
    };
    let limit = match limit {
        Some(n) => format!("<D:limit><D:nresults>{n}</D:nresults></D:limit>"),
        None => String::new(),
    };
    format!(
        "{XML_DECL}<D:sync-collection xmlns:D=\"DAV:\">{token}<D:sync-level>1</D:sync-level>\
         {limit}<D:prop><D:getetag/></D:prop></D:sync-collection>"
    )
}

/// `calendar-multiget` or `addressbook-multiget` REPORT body for `hrefs`, asking for the etag
/// and the full body of each.
pub fn multiget_body(kind: CollectionKind, hrefs: &[impl AsRef<str>]) -> String {
    let (report, data, ns) = match kind {
        CollectionKind::Calendar => ("calendar-multiget", "calendar-data", CALDAV_NS),
        CollectionKind::AddressBook => ("addressbook-multiget", "address-data", CARDDAV_NS),
    };
    let mut out = format!(
        "{XML_DECL}<C:{report} xmlns:D=\"DAV:\" xmlns:C=\"{ns}\"><D:prop><D:getetag/><C:{data}/></D:prop>"
    );
    for href in hrefs {
        out.push_str("<D:href>");
        out.push_str(&xml_text(href.as_ref()));
        out.push_str("</D:href>");
    }
    out.push_str(&format!("</C:{report}>"));
    out
}

/// RFC 4791 MKCALENDAR body creating a calendar for events with a display name.
pub fn mkcalendar_body(display_name: &str) -> String {
    format!(
        "{XML_DECL}<C:mkcalendar xmlns:D=\"DAV:\" xmlns:C=\"{CALDAV_NS}\"><D:set><D:prop>\
         <D:displayname>{}</D:displayname><C:supported-calendar-component-set>\
         <C:comp name=\"VEVENT\"/></C:supported-calendar-component-set></D:prop></D:set>\
         </C:mkcalendar>",
        xml_text(display_name)
    )
}

/// RFC 5689 extended MKCOL body creating a CardDAV address book with a display name.
pub fn mkcol_addressbook_body(display_name: &str) -> String {
    format!(
        "{XML_DECL}<D:mkcol xmlns:D=\"DAV:\" xmlns:CR=\"{CARDDAV_NS}\"><D:set><D:prop>\
         <D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>\
         <D:displayname>{}</D:displayname></D:prop></D:set></D:mkcol>",
        xml_text(display_name)
    )
}

// ---------------------------------------------------------------------------------------------
// A small namespace-resolved tree
// ---------------------------------------------------------------------------------------------

/// What was wrong with an XML body from the server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("XML nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("XML body has no root element")]
    Empty,
    #[error("expected root element {{{expected_ns}}}{expected}, found {{{found_ns}}}{found}")]
    UnexpectedRoot {
        expected_ns: &'static str,
        expected: &'static str,
        found_ns: String,
        found: String,
    },
    #[error("{element} is missing its {missing}")]
    Missing {
        element: &'static str,
        missing: &'static str,
    },
    #[error("{element} holds an unparsable status line {line:?}")]
    BadStatus { element: &'static str, line: String },
    #[error("multistatus has no sync-token")]
    NoSyncToken,
}

/// An element with its resolved namespace, children and the concatenation of its direct text.
#[derive(Debug, Default)]
struct Element {
    ns: String,
    local: String,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    fn children<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

fn malformed(reader: &NsReader<&[u8]>, message: impl ToString) -> XmlError {
    XmlError::Malformed {
        position: reader.buffer_position(),
        message: message.to_string(),
    }
}

fn element_name(reader: &NsReader<&[u8]>, qname: QName<'_>) -> Result<Element, XmlError> {
    let (resolved, local) = reader.resolve_element(qname);
    let ns = match resolved {
        ResolveResult::Bound(ns) => String::from_utf8(ns.as_ref().to_vec())
            .map_err(|_| malformed(reader, "namespace is not UTF-8"))?,
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(prefix) => {
            return Err(malformed(
                reader,
                format!(
                    "undeclared namespace prefix {:?}",
                    String::from_utf8_lossy(&prefix)
                ),
            ));
        }
    };
    let local = String::from_utf8(local.as_ref().to_vec())
        .map_err(|_| malformed(reader, "element name is not UTF-8"))?;
    Ok(Element {
        ns,
        local,
        ..Element::default()
    })
}

/// Parses a whole document into a tree and returns its root element.
fn parse_tree(body: &[u8]) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_reader(body);
    // Whitespace is significant inside calendar-data; trim where meaningful instead.
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(malformed(&reader, "content after the root element"));
            }
            Event::Start(start) => {
                let el = element_name(&reader, start.name())?;
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(el);
            }
            Event::Empty(start) => {
                let el = element_name(&reader, start.name())?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // The reader checks that end tags match start tags.
                let Some(el) = stack.pop() else {
                    return Err(malformed(&reader, "end tag without a start tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(text) => {
                let s = text.decode().map_err(|e| malformed(&reader, e))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&s);
                } else if !s.trim().is_empty() {
                    return Err(malformed(&reader, "text outside the root element"));
                }
            }
            Event::CData(data) => {
                let s = data.decode().map_err(|e| malformed(&reader, e))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| malformed(&reader, e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| malformed(&reader, e))?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| malformed(&reader, format!("unknown entity &{name};")))?
                            .to_string()
                    }
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&c);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(malformed(&reader, "unexpected end of document"));
    }
    root.ok_or(XmlError::Empty)
}

fn expect_root(body: &[u8], ns: &'static str, local: &'static str) -> Result<Element, XmlError> {
    let root = parse_tree(body)?;
    if !root.is(ns, local) {
        return Err(XmlError::UnexpectedRoot {
            expected_ns: ns,
            expected: local,
            found_ns: root.ns,
            found: root.local,
        });
    }
    Ok(root)
}

/// `HTTP/1.1 404 Not Found` → 404.
fn parse_status(element: &'static str, line: &str) -> Result<u16, XmlError> {
    let bad = || XmlError::BadStatus {
        element,
        line: line.to_string(),
    };
    let mut parts = line.split_whitespace();
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/") {
        return Err(bad());
    }
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 {
        return Err(bad());
    }
    code.parse().map_err(|_| bad())
}

// ---------------------------------------------------------------------------------------------
// Multistatus
// ---------------------------------------------------------------------------------------------

/// One `D:propstat`: a status and the properties we know about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropStat {
    pub status: u16,
    pub etag: Option<String>,
    /// `C:calendar-data` or `CR:address-data`, whichever was present.
    pub data: Option<String>,
}

/// One `D:response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavResponse {
    /// The first `D:href` (RFC 4918 allows several only with a response-level status).
    pub href: String,
    /// A response-level `D:status` (404 for removed members, 507 for truncation).
    pub status: Option<u16>,
    pub propstats: Vec<PropStat>,
}

impl DavResponse {
    /// The etag from a 2xx propstat.
    pub fn etag(&self) -> Option<&str> {
        self.ok_propstat().and_then(|p| p.etag.as_deref())
    }

    /// The resource body from a 2xx propstat.
    pub fn data(&self) -> Option<&str> {
        self.ok_propstat().and_then(|p| p.data.as_deref())
    }

    fn ok_propstat(&self) -> Option<&PropStat> {
        self.propstats
            .iter()
            .find(|p| (200..300).contains(&p.status))
    }
}

/// A parsed `D:multistatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Multistatus {
    pub responses: Vec<DavResponse>,
    /// `D:sync-token`, wherever it appears among the responses.
    pub sync_token: Option<String>,
}

/// Parses a 207 multistatus body.
pub fn parse_multistatus(body: &[u8]) -> Result<Multistatus, XmlError> {
    let root = expect_root(body, DAV_NS, "multistatus")?;
    let mut out = Multistatus::default();
    if let Some(token) = root.child(DAV_NS, "sync-token") {
        out.sync_token = Some(token.trimmed().to_string());
    }
    for resp in root.children(DAV_NS, "response") {
        let href = resp
            .child(DAV_NS, "href")
            .map(|h| h.trimmed().to_string())
            .filter(|h| !h.is_empty())
            .ok_or(XmlError::Missing {
                element: "response",
                missing: "href",
            })?;
        let status = resp
            .child(DAV_NS, "status")
            .map(|s| parse_status("response", s.trimmed()))
            .transpose()?;
        let mut propstats = Vec::new();
        for ps in resp.children(DAV_NS, "propstat") {
            let status = ps
                .child(DAV_NS, "status")
                .ok_or(XmlError::Missing {
                    element: "propstat",
                    missing: "status",
                })
                .and_then(|s| parse_status("propstat", s.trimmed()))?;
            let mut prop_stat = PropStat {
                status,
                ..PropStat::default()
            };
            if let Some(prop) = ps.child(DAV_NS, "prop") {
                prop_stat.etag = prop
                    .child(DAV_NS, "getetag")
                    .map(|e| e.trimmed().to_string())
                    .filter(|e| !e.is_empty());
                prop_stat.data = prop
                    .children
                    .iter()
                    .find(|c| c.is(CALDAV_NS, "calendar-data") || c.is(CARDDAV_NS, "address-data"))
                    .map(|d| d.text.clone())
                    .filter(|d| !d.trim().is_empty());
            }
            propstats.push(prop_stat);
        }
        if status.is_none() && propstats.is_empty() {
            return Err(XmlError::Missing {
                element: "response",
                missing: "status or propstat",
            });
        }
        out.responses.push(DavResponse {
            href,
            status,
            propstats,
        });
    }
    Ok(out)
}

/// A member that changed (or appeared) since the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedMember {
    pub href: String,
    /// `None` when the server left out the etag; fetch the body to learn it.
    pub etag: Option<String>,
}

/// One page of a `sync-collection` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPage {
    pub changed: Vec<ChangedMember>,
    /// Hrefs of members removed since the token (response status 404).
    pub removed: Vec<String>,
    /// The token to continue from (after truncation: the point the page reached).
    pub sync_token: String,
    /// RFC 6578 §3.6: the server returned only part of the changes (507 on the collection);
    /// ask again with `sync_token` for the rest.
    pub truncated: bool,
}

/// The path of an href or URL, without a trailing slash, to compare with the collection.
fn href_path(href: &str) -> &str {
    let path = match href.find("://") {
        Some(i) => {
            let after = &href[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
        }
        None => href,
    };
    path.trim_end_matches('/')
}

/// Interprets a `sync-collection` multistatus. `collection_href` (a path or URL) identifies
/// the response about the collection itself, which is never a member.
pub fn parse_sync_collection(body: &[u8], collection_href: &str) -> Result<SyncPage, XmlError> {
    let ms = parse_multistatus(body)?;
    let sync_token = ms
        .sync_token
        .filter(|t| !t.is_empty())
        .ok_or(XmlError::NoSyncToken)?;
    let collection = href_path(collection_href);
    let mut page = SyncPage {
        changed: Vec::new(),
        removed: Vec::new(),
        sync_token,
        truncated: false,
    };
    for resp in ms.responses {
        if resp.status == Some(507) {
            page.truncated = true;
            continue;
        }
        if href_path(&resp.href) == collection {
            continue;
        }
        match resp.status {
            Some(404) => page.removed.push(resp.href),
            Some(s) if !(200..300).contains(&s) => {
                return Err(XmlError::BadStatus {
                    element: "response",
                    line: format!("unexpected status {s} for member {}", resp.href),
                });
            }
            _ => {
                let etag = resp.etag().map(str::to_string);
                page.changed.push(ChangedMember {
                    href: resp.href,
                    etag,
                });
            }
        }
    }
    Ok(page)
}

/// One resource from a multiget answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Found {
        href: String,
        etag: Option<String>,
        body: String,
    },
    /// The server has no such member (it was deleted since it was listed).
    Missing { href: String },
}

/// Interprets a `calendar-multiget` / `addressbook-multiget` multistatus.
pub fn parse_multiget(body: &[u8], kind: CollectionKind) -> Result<Vec<Fetched>, XmlError> {
    let ms = parse_multistatus(body)?;
    let mut out = Vec::with_capacity(ms.responses.len());
    for resp in ms.responses {
        if resp.status == Some(404) || (resp.status.is_none() && resp.data().is_none()) {
            out.push(Fetched::Missing { href: resp.href });
            continue;
        }
        let Some(data) = resp.data() else {
            return Err(XmlError::Missing {
                element: "multiget response",
                missing: kind.data_local(),
            });
        };
        out.push(Fetched::Found {
            etag: resp.etag().map(str::to_string),
            body: data.to_string(),
            href: resp.href,
        });
    }
    Ok(out)
}

/// The precondition / postcondition elements named in a `D:error` body, as
/// `(namespace, local name)`.
pub fn parse_error_conditions(body: &[u8]) -> Result<Vec<(String, String)>, XmlError> {
    let root = expect_root(body, DAV_NS, "error")?;
    Ok(root.children.into_iter().map(|c| (c.ns, c.local)).collect())
}

/// Whether an error body names the `DAV:valid-sync-token` precondition.
pub fn is_valid_sync_token_error(body: &[u8]) -> bool {
    parse_error_conditions(body)
        .map(|conds| {
            conds
                .iter()
                .any(|(ns, local)| ns == DAV_NS && local == "valid-sync-token")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RADICALE_SYNC: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:"><sync-token>http://radicale.org/ns/sync/abc</sync-token><response><href>/alice/cal/a.ics</href><propstat><prop><getetag>"e1"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/alice/cal/b.ics</href><status>HTTP/1.1 404 Not Found</status></response></multistatus>"#;

    const XANDIKOS_SYNC: &str = r#"<ns0:multistatus xmlns:ns0="DAV:"><ns0:response><ns0:href>/user/calendars/calendar/a.ics</ns0:href><ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop><ns0:getetag>"s1"</ns0:getetag></ns0:prop></ns0:propstat></ns0:response><ns0:sync-token>deadbeef</ns0:sync-token></ns0:multistatus>"#;

    #[test]
    fn sync_token_before_responses() {
        let page = parse_sync_collection(RADICALE_SYNC.as_bytes(), "/alice/cal/").unwrap();
        assert_eq!(page.sync_token, "http://radicale.org/ns/sync/abc");
        assert_eq!(
            page.changed,
            vec![ChangedMember {
                href: "/alice/cal/a.ics".into(),
                etag: Some("\"e1\"".into())
            }]
        );
        assert_eq!(page.removed, vec!["/alice/cal/b.ics".to_string()]);
        assert!(!page.truncated);
    }

    #[test]
    fn sync_token_after_responses_other_prefix() {
        let page = parse_sync_collection(
            XANDIKOS_SYNC.as_bytes(),
            "http://127.0.0.1:1/user/calendars/calendar/",
        )
        .unwrap();
        assert_eq!(page.sync_token, "deadbeef");
        assert_eq!(page.changed.len(), 1);
        assert_eq!(page.changed[0].etag.as_deref(), Some("\"s1\""));
    }

    #[test]
    fn truncation_marker_on_collection() {
        let body = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/c/1.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:response><d:href>http://h/c/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status><d:error><d:number-of-matches-within-limits/></d:error></d:response><d:sync-token>t2</d:sync-token></d:multistatus>"#;
        let page = parse_sync_collection(body.as_bytes(), "/c/").unwrap();
        assert!(page.truncated);
        assert_eq!(page.changed.len(), 1);
        assert_eq!(page.sync_token, "t2");
    }

    #[test]
    fn collection_self_response_is_not_a_member() {
        let body = r#"<multistatus xmlns="DAV:"><response><href>/c</href><propstat><prop><getetag>"x"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response><sync-token>t</sync-token></multistatus>"#;
        let page = parse_sync_collection(body.as_bytes(), "/c/").unwrap();
        assert!(page.changed.is_empty());
    }

    #[test]
    fn missing_token_is_an_error() {
        let body = r#"<multistatus xmlns="DAV:"></multistatus>"#;
        assert_eq!(
            parse_sync_collection(body.as_bytes(), "/c/"),
            Err(XmlError::NoSyncToken)
        );
    }

    #[test]
    fn multiget_with_entities_and_cdata() {
        let body = "<D:multistatus xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\"><D:response><D:href>/c/a.ics</D:href><D:propstat><D:prop><D:getetag>&quot;e&quot;</D:getetag><C:calendar-data>BEGIN:VCALENDAR&#13;\nX:a&amp;b<![CDATA[<y>]]>&#13;\nEND:VCALENDAR&#13;\n</C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response><D:response><D:href>/c/gone.ics</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response></D:multistatus>";
        let got = parse_multiget(body.as_bytes(), CollectionKind::Calendar).unwrap();
        assert_eq!(
            got,
            vec![
                Fetched::Found {
                    href: "/c/a.ics".into(),
                    etag: Some("\"e\"".into()),
                    body: "BEGIN:VCALENDAR\r\nX:a&b<y>\r\nEND:VCALENDAR\r\n".into()
                },
                Fetched::Missing {
                    href: "/c/gone.ics".into()
                }
            ]
        );
    }

    #[test]
    fn valid_sync_token_errors() {
        assert!(is_valid_sync_token_error(
            br#"<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>"#
        ));
        assert!(is_valid_sync_token_error(
            br#"<ns0:error xmlns:ns0="DAV:"><ns0:valid-sync-token /><ns0:responsedescription>x</ns0:responsedescription></ns0:error>"#
        ));
        assert!(!is_valid_sync_token_error(
            br#"<error xmlns="DAV:"><need-privileges/></error>"#
        ));
        assert!(!is_valid_sync_token_error(b"<html>Forbidden</html>"));
        assert!(!is_valid_sync_token_error(b"Forbidden"));
    }

    #[test]
    fn typed_errors() {
        assert!(matches!(
            parse_multistatus(b"<x xmlns='DAV:'/>"),
            Err(XmlError::UnexpectedRoot { .. })
        ));
        assert!(matches!(
            parse_multistatus(b"<multistatus xmlns='DAV:'><response/></multistatus>"),
            Err(XmlError::Missing {
                missing: "href",
                ..
            })
        ));
        assert!(matches!(
            parse_multistatus(b"<a:multistatus xmlns:a='DAV:'><b:x/></a:multistatus>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse_multistatus(
                b"<multistatus xmlns='DAV:'><response><href>/a</href><status>teapot</status></response></multistatus>"
            ),
            Err(XmlError::BadStatus { .. })
        ));
        let deep = "<a>".repeat(100_000);
        assert_eq!(parse_multistatus(deep.as_bytes()), Err(XmlError::TooDeep));
        assert_eq!(parse_multistatus(b""), Err(XmlError::Empty));
    }

    #[test]
    fn request_bodies_parse_back() {
        let body = sync_collection_body(Some("a<&b"), Some(10));
        assert!(body.contains("<D:sync-token>a&lt;&amp;b</D:sync-token>"));
        assert!(body.contains("<D:nresults>10</D:nresults>"));
        let body = sync_collection_body(None, None);
        assert!(body.contains("<D:sync-token/>") && !body.contains("limit"));
        for body in [
            multiget_body(CollectionKind::Calendar, &["/a b.ics", "/c&d.ics"]),
            multiget_body(CollectionKind::AddressBook, &["/x.vcf"]),
            mkcalendar_body("Team & co"),
            mkcol_addressbook_body("Contacts"),
        ] {
            parse_tree(body.as_bytes()).unwrap();
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_multistatus(&bytes);
            let _ = parse_sync_collection(&bytes, "/c/");
            let _ = parse_multiget(&bytes, CollectionKind::AddressBook);
            let _ = is_valid_sync_token_error(&bytes);
        }

        #[test]
        fn truncated_and_mutated_xml_never_panics(cut in 0usize..2000, flip in 0usize..2000, byte in any::<u8>()) {
            for sample in [RADICALE_SYNC, XANDIKOS_SYNC] {
                let mut bytes = sample.as_bytes().to_vec();
                let len = bytes.len();
                if len > 0 {
                    bytes[flip % len] = byte;
                }
                bytes.truncate(cut % (len + 1));
                let _ = parse_sync_collection(&bytes, "/c/");
                let _ = parse_multiget(&bytes, CollectionKind::Calendar);
            }
        }

        #[test]
        fn tag_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
            Just("<multistatus xmlns=\"DAV:\">"), Just("</multistatus>"), Just("<response>"),
            Just("</response>"), Just("<href>/a</href>"), Just("<propstat>"), Just("</propstat>"),
            Just("<status>HTTP/1.1 200 OK</status>"), Just("<prop>"), Just("</prop>"),
            Just("<getetag>\"x\"</getetag>"), Just("<sync-token>t</sync-token>"), Just("&amp;"),
            Just("&bogus;"), Just("<![CDATA[x"), Just("]]>"), Just("<x:y>"), Just("&#0;"),
        ], 0..40)) {
            let body = parts.concat();
            let _ = parse_sync_collection(body.as_bytes(), "/c/");
            let _ = parse_multiget(body.as_bytes(), CollectionKind::Calendar);
        }
    }
}
