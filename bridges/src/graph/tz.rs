//! Time-zone names and body text as Graph has them, turned into what the canonical record holds.
//!
//! - Windows zone names (`W. Europe Standard Time`) <-> IANA (`Europe/Berlin`). Windows -> IANA
//!   uses calcard's maintained table (it also knows the legacy Outlook display names); IANA ->
//!   Windows inverts it over the list of Windows zone ids below. An IANA zone without a Windows
//!   id is written to Graph by its IANA name, which Graph accepts.
//! - HTML bodies -> plain text for `description`, with quick-xml as a lenient tokenizer (HTML5
//!   entities resolved). The original HTML stays in the bridge's shadow; `translate` only writes a
//!   body when the plain text differs from what the stored HTML reads as.
//!
//! Pure functions; no I/O.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono_tz::Tz;
use quick_xml::Reader;
use quick_xml::escape::resolve_html5_entity;
use quick_xml::events::Event;

/// A zone name Graph reported, resolved: `None` for UTC, which the canonical form writes as `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    Named(Tz),
}

/// Resolves a Graph `timeZone` / `originalStartTimeZone` / `recurrenceTimeZone`: an IANA name, a
/// Windows id, a legacy Outlook display name, or `UTC`. `None` when unknown (including Graph's
/// `tzone://Microsoft/Custom`).
pub fn zone_of(name: &str) -> Option<Zone> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if [
        "UTC",
        "Etc/UTC",
        "Etc/GMT",
        "GMT",
        "Z",
        "tzone://Microsoft/Utc",
    ]
    .iter()
    .any(|u| u.eq_ignore_ascii_case(name))
    {
        return Some(Zone::Utc);
    }
    match calcard::common::timezone::Tz::from_str(name) {
        Ok(calcard::common::timezone::Tz::Tz(tz)) => Some(Zone::Named(tz)),
        _ => None,
    }
}

/// The IANA zone of a Windows zone id (or an IANA name, passed through).
pub fn windows_to_iana(name: &str) -> Option<Tz> {
    match zone_of(name)? {
        Zone::Utc => Some(Tz::UTC),
        Zone::Named(tz) => Some(tz),
    }
}

/// Windows time-zone ids (CLDR `windowsZones.xml`, `territory="001"` rows), in preference order:
/// when two ids resolve to one IANA zone, the first wins the inverse mapping.
const WINDOWS_IDS: &[&str] = &[
    "Dateline Standard Time",
    "UTC-11",
    "Aleutian Standard Time",
    "Hawaiian Standard Time",
    "Marquesas Standard Time",
    "Alaskan Standard Time",
    "UTC-09",
    "Pacific Standard Time (Mexico)",
    "UTC-08",
    "Pacific Standard Time",
    "US Mountain Standard Time",
    "Mountain Standard Time (Mexico)",
    "Mountain Standard Time",
    "Yukon Standard Time",
    "Central America Standard Time",
    "Central Standard Time",
    "Easter Island Standard Time",
    "Central Standard Time (Mexico)",
    "Canada Central Standard Time",
    "SA Pacific Standard Time",
    "Eastern Standard Time (Mexico)",
    "Eastern Standard Time",
    "Haiti Standard Time",
    "Cuba Standard Time",
    "US Eastern Standard Time",
    "Turks And Caicos Standard Time",
    "Paraguay Standard Time",
    "Atlantic Standard Time",
    "Venezuela Standard Time",
    "Central Brazilian Standard Time",
    "SA Western Standard Time",
    "Pacific SA Standard Time",
    "Newfoundland Standard Time",
    "Tocantins Standard Time",
    "E. South America Standard Time",
    "SA Eastern Standard Time",
    "Argentina Standard Time",
    "Greenland Standard Time",
    "Montevideo Standard Time",
    "Magallanes Standard Time",
    "Saint Pierre Standard Time",
    "Bahia Standard Time",
    "UTC-02",
    "Azores Standard Time",
    "Cape Verde Standard Time",
    "GMT Standard Time",
    "Greenwich Standard Time",
    "Sao Tome Standard Time",
    "Morocco Standard Time",
    "W. Europe Standard Time",
    "Central Europe Standard Time",
    "Romance Standard Time",
    "Central European Standard Time",
    "W. Central Africa Standard Time",
    "Jordan Standard Time",
    "GTB Standard Time",
    "Middle East Standard Time",
    "Egypt Standard Time",
    "E. Europe Standard Time",
    "Syria Standard Time",
    "West Bank Standard Time",
    "South Africa Standard Time",
    "FLE Standard Time",
    "Israel Standard Time",
    "Kaliningrad Standard Time",
    "Sudan Standard Time",
    "Libya Standard Time",
    "Namibia Standard Time",
    "Arabic Standard Time",
    "Turkey Standard Time",
    "Arab Standard Time",
    "Belarus Standard Time",
    "Russian Standard Time",
    "E. Africa Standard Time",
    "Volgograd Standard Time",
    "Iran Standard Time",
    "Arabian Standard Time",
    "Astrakhan Standard Time",
    "Azerbaijan Standard Time",
    "Russia Time Zone 3",
    "Mauritius Standard Time",
    "Saratov Standard Time",
    "Georgian Standard Time",
    "Caucasus Standard Time",
    "Afghanistan Standard Time",
    "West Asia Standard Time",
    "Qyzylorda Standard Time",
    "Ekaterinburg Standard Time",
    "Pakistan Standard Time",
    "India Standard Time",
    "Sri Lanka Standard Time",
    "Nepal Standard Time",
    "Central Asia Standard Time",
    "Bangladesh Standard Time",
    "Omsk Standard Time",
    "Myanmar Standard Time",
    "SE Asia Standard Time",
    "Altai Standard Time",
    "W. Mongolia Standard Time",
    "North Asia Standard Time",
    "N. Central Asia Standard Time",
    "Tomsk Standard Time",
    "China Standard Time",
    "North Asia East Standard Time",
    "Singapore Standard Time",
    "W. Australia Standard Time",
    "Taipei Standard Time",
    "Ulaanbaatar Standard Time",
    "Aus Central W. Standard Time",
    "Transbaikal Standard Time",
    "Tokyo Standard Time",
    "North Korea Standard Time",
    "Korea Standard Time",
    "Yakutsk Standard Time",
    "Cen. Australia Standard Time",
    "AUS Central Standard Time",
    "E. Australia Standard Time",
    "AUS Eastern Standard Time",
    "West Pacific Standard Time",
    "Tasmania Standard Time",
    "Vladivostok Standard Time",
    "Lord Howe Standard Time",
    "Bougainville Standard Time",
    "Russia Time Zone 10",
    "Magadan Standard Time",
    "Norfolk Standard Time",
    "Sakhalin Standard Time",
    "Central Pacific Standard Time",
    "Russia Time Zone 11",
    "New Zealand Standard Time",
    "UTC+12",
    "Fiji Standard Time",
    "Chatham Islands Standard Time",
    "UTC+13",
    "Tonga Standard Time",
    "Samoa Standard Time",
    "Line Islands Standard Time",
];

fn inverse() -> &'static HashMap<&'static str, &'static str> {
    static INVERSE: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    INVERSE.get_or_init(|| {
        let mut map = HashMap::new();
        for id in WINDOWS_IDS {
            if let Some(Zone::Named(tz)) = zone_of(id) {
                map.entry(tz.name()).or_insert(*id);
            }
        }
        map
    })
}

/// The Windows id Graph knows an IANA zone by, when there is one. `UTC` for UTC.
pub fn iana_to_windows(tz: Tz) -> Option<&'static str> {
    if tz == Tz::UTC {
        return Some("UTC");
    }
    inverse().get(tz.name()).copied()
}

/// The `timeZone` to write for `tz`: `current` when it already names that zone (so an unchanged
/// zone keeps Graph's spelling), else the Windows id, else the IANA name.
pub fn graph_zone_name(tz: Tz, current: Option<&str>) -> String {
    if let Some(current) = current
        && windows_to_iana(current) == Some(tz)
    {
        return current.to_owned();
    }
    iana_to_windows(tz).unwrap_or(tz.name()).to_owned()
}

// ---------------------------------------------------------------------------------------------
// HTML -> text
// ---------------------------------------------------------------------------------------------

/// Elements whose content is not text a reader sees.
const SKIPPED: &[&str] = &["head", "style", "script", "title", "template"];
/// Elements that start on a new line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "li",
    "tr",
    "table",
    "ul",
    "ol",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
];

fn local_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).to_ascii_lowercase()
}

/// Collects text with HTML whitespace rules: runs of whitespace become one space, blocks and
/// `<br>` become line breaks.
#[derive(Default)]
struct TextOut {
    out: String,
    pending_space: bool,
}

impl TextOut {
    fn text(&mut self, s: &str) {
        for c in s.chars() {
            let c = if c == '\u{a0}' { ' ' } else { c };
            if c.is_whitespace() {
                self.pending_space = true;
            } else {
                if self.pending_space && !self.out.is_empty() && !self.out.ends_with('\n') {
                    self.out.push(' ');
                }
                self.pending_space = false;
                self.out.push(c);
            }
        }
    }

    fn line_break(&mut self) {
        self.pending_space = false;
        self.out.push('\n');
    }

    fn block_edge(&mut self) {
        self.pending_space = false;
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    fn finish(self) -> String {
        let lines: Vec<&str> = self.out.lines().map(str::trim_end).collect();
        let mut out = String::new();
        let mut blank_run = 0;
        for line in lines {
            if line.is_empty() {
                blank_run += 1;
                if blank_run > 1 {
                    continue;
                }
            } else {
                blank_run = 0;
            }
            out.push_str(line);
            out.push('\n');
        }
        out.trim().to_owned()
    }
}

/// The text a reader sees in an HTML body (Outlook's `<html><head><style>...` included).
/// Markup quick-xml cannot tokenize (a bare `<` in text, broken tags) falls back to dropping
/// everything between `<` and `>`: a description is never lost, only less tidy.
pub fn html_to_text(html: &str) -> String {
    match try_html_to_text(html) {
        Some(text) => text,
        None => strip_tags(html),
    }
}

fn try_html_to_text(html: &str) -> Option<String> {
    let mut reader = Reader::from_str(html);
    {
        let config = reader.config_mut();
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        config.check_comments = false;
    }
    let mut out = TextOut::default();
    let mut skip_depth = 0usize;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = local_name(e.local_name().as_ref());
                if SKIPPED.contains(&name.as_str()) {
                    skip_depth += 1;
                } else if skip_depth == 0 && BLOCKS.contains(&name.as_str()) {
                    out.block_edge();
                } else if skip_depth == 0 && name == "br" {
                    out.line_break();
                }
            }
            Event::Empty(e) => {
                let name = local_name(e.local_name().as_ref());
                if skip_depth == 0 && name == "br" {
                    out.line_break();
                } else if skip_depth == 0 && BLOCKS.contains(&name.as_str()) {
                    out.block_edge();
                }
            }
            Event::End(e) => {
                let name = local_name(e.local_name().as_ref());
                if SKIPPED.contains(&name.as_str()) {
                    skip_depth = skip_depth.saturating_sub(1);
                } else if skip_depth == 0 && BLOCKS.contains(&name.as_str()) {
                    out.block_edge();
                }
            }
            Event::Text(t) if skip_depth == 0 => out.text(&t.decode().ok()?),
            Event::CData(t) if skip_depth == 0 => out.text(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) if skip_depth == 0 => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.text(c.encode_utf8(&mut [0u8; 4]));
                } else {
                    let name = r.decode().ok()?;
                    match resolve_html5_entity(&name) {
                        Some(s) => out.text(s),
                        // An unknown entity is text as written.
                        None => out.text(&format!("&{name};")),
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(out.finish())
}

fn strip_tags(html: &str) -> String {
    let mut out = TextOut::default();
    let mut in_tag = false;
    let mut chunk = String::new();
    for c in html.chars() {
        match c {
            '<' => {
                out.text(&chunk);
                chunk.clear();
                in_tag = true;
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => chunk.push(c),
            _ => {}
        }
    }
    out.text(&chunk);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_zones_map_to_iana() {
        assert_eq!(
            windows_to_iana("W. Europe Standard Time"),
            Some(Tz::Europe__Berlin)
        );
        assert_eq!(
            windows_to_iana("Pacific Standard Time"),
            Some(Tz::America__Los_Angeles)
        );
        assert_eq!(
            windows_to_iana("Eastern Standard Time"),
            Some(Tz::America__New_York)
        );
        assert_eq!(
            windows_to_iana("Romance Standard Time"),
            Some(Tz::Europe__Paris)
        );
        assert_eq!(
            windows_to_iana("Tokyo Standard Time"),
            Some(Tz::Asia__Tokyo)
        );
        // IANA names pass through; UTC spellings are UTC.
        assert_eq!(windows_to_iana("Europe/Lisbon"), Some(Tz::Europe__Lisbon));
        assert_eq!(zone_of("UTC"), Some(Zone::Utc));
        assert_eq!(zone_of("tzone://Microsoft/Utc"), Some(Zone::Utc));
        assert_eq!(zone_of("tzone://Microsoft/Custom"), None);
        assert_eq!(zone_of("Nowhere Standard Time"), None);
    }

    #[test]
    fn iana_zones_map_back_to_windows_ids() {
        for id in [
            "W. Europe Standard Time",
            "Pacific Standard Time",
            "Eastern Standard Time",
            "GMT Standard Time",
            "Tokyo Standard Time",
            "AUS Eastern Standard Time",
            "India Standard Time",
        ] {
            let tz = windows_to_iana(id).unwrap();
            assert_eq!(iana_to_windows(tz), Some(id), "{id} -> {tz}");
        }
        assert_eq!(iana_to_windows(Tz::UTC), Some("UTC"));
        // Every listed Windows id resolves.
        for id in WINDOWS_IDS {
            assert!(zone_of(id).is_some(), "{id} is unknown to the table");
        }
    }

    #[test]
    fn zone_names_to_write() {
        // Unchanged zone keeps Graph's own spelling.
        assert_eq!(
            graph_zone_name(Tz::Europe__Berlin, Some("W. Europe Standard Time")),
            "W. Europe Standard Time"
        );
        assert_eq!(
            graph_zone_name(Tz::America__New_York, Some("W. Europe Standard Time")),
            "Eastern Standard Time"
        );
        // No Windows id: the IANA name.
        assert_eq!(
            graph_zone_name(Tz::Europe__Amsterdam, None),
            "Europe/Amsterdam"
        );
    }

    #[test]
    fn outlook_html_reads_as_text() {
        let html = "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n\
            <style type=\"text/css\" style=\"display:none\">\r\n<!--\r\np\r\n\t{margin-top:0;\r\n\tmargin-bottom:0}\r\n-->\r\n</style>\r\n\
            </head>\r\n<body dir=\"ltr\">\r\n<div class=\"elementToProof\" style=\"font-size: 12pt\">Agenda:&nbsp;budget &amp; hiring</div>\r\n\
            <div>Room&nbsp;4<br>Bring &lt;laptops&gt; &#x263A;</div>\r\n<ul><li>one</li><li>two</li></ul>\r\n</body>\r\n</html>\r\n";
        assert_eq!(
            html_to_text(html),
            "Agenda: budget & hiring\nRoom 4\nBring <laptops> \u{263a}\none\ntwo"
        );
    }

    #[test]
    fn plain_and_broken_html() {
        assert_eq!(html_to_text("just   text\n here"), "just text here");
        assert_eq!(html_to_text(""), "");
        // A bare `<` quick-xml rejects still yields the text.
        let broken = html_to_text("<p>a < b and c</p><p>next</p>");
        assert!(broken.contains("next"), "{broken}");
        assert_eq!(
            html_to_text("<p>&unknownentity; x</p>"),
            "&unknownentity; x"
        );
    }
}
