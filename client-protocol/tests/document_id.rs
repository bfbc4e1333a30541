//! DocumentId (bs58check) and `automerge:` URL tests.

// `allow-unwrap-in-tests` covers only `#[test]` fns; the frame-building helpers here unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::str::FromStr;

use driftless_client_protocol::{AutomergeUrl, DocumentId, DocumentIdError, UrlError};

const DOCS_ID: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";
const DOCS_BYTES: [u8; 16] = [
    0xf1, 0xc2, 0x9c, 0x84, 0x74, 0xc8, 0x4a, 0xde, 0xb8, 0x00, 0xbe, 0x47, 0x62, 0x7d, 0x33, 0xbf,
];

#[test]
fn docs_example_decodes_and_reencodes() {
    let id = DocumentId::from_str(DOCS_ID).unwrap();
    assert_eq!(id.as_bytes(), DOCS_BYTES);
    assert_eq!(id.to_string(), DOCS_ID);
    assert_eq!(id.as_str(), DOCS_ID);
    assert_eq!(DocumentId::from_bytes(&DOCS_BYTES).to_string(), DOCS_ID);
    assert_eq!(format!("{id:?}"), format!("DocumentId({DOCS_ID})"));
}

#[test]
fn matches_bs58_crate_check_encoding() {
    // An independent encoder: bs58's own check mode (sha256d checksum, no version byte).
    for bytes in [&DOCS_BYTES[..], &[0, 0, 1], &[0xff; 32], &[7]] {
        let expected = bs58::encode(bytes).with_check().into_string();
        assert_eq!(DocumentId::from_bytes(bytes).to_string(), expected);
    }
}

#[test]
fn generate_round_trips_and_is_uuid_v4() {
    let mut seen = HashSet::new();
    for seed in 0u8..32 {
        let random = [seed.wrapping_mul(37); 16];
        let id = DocumentId::generate(random);
        assert_eq!(id.as_bytes().len(), 16);
        assert_eq!(id.as_bytes()[6] >> 4, 4, "UUID version 4");
        assert_eq!(id.as_bytes()[8] & 0xc0, 0x80, "RFC 4122 variant");
        let s = id.to_string();
        assert!((21..=28).contains(&s.len()), "{s}");
        let back = DocumentId::from_str(&s).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.as_bytes(), id.as_bytes());
        seen.insert(id);
    }
    assert!(seen.len() > 1);
}

#[test]
fn one_changed_char_is_bad_checksum() {
    let mut tried = 0;
    for i in 0..DOCS_ID.len() {
        let mut chars: Vec<char> = DOCS_ID.chars().collect();
        // Swap to a different alphabet character.
        chars[i] = if chars[i] == 'z' { 'y' } else { 'z' };
        let s: String = chars.into_iter().collect();
        let r = DocumentId::from_str(&s);
        assert_eq!(r, Err(DocumentIdError::BadChecksum(s.clone())), "{s}");
        tried += 1;
    }
    assert_eq!(tried, DOCS_ID.len());
}

#[test]
fn characters_outside_the_alphabet() {
    for bad in ['0', 'O', 'I', 'l', '-', ' ', 'é'] {
        let s = format!("{}{bad}{}", &DOCS_ID[..5], &DOCS_ID[6..]);
        assert_eq!(
            DocumentId::from_str(&s),
            Err(DocumentIdError::InvalidBase58(s.clone())),
            "{s}"
        );
    }
}

#[test]
fn empty_and_degenerate_inputs() {
    assert_eq!(DocumentId::from_str(""), Err(DocumentIdError::Empty));
    // A valid checksum over an empty payload is still an empty id.
    let empty_payload = bs58::encode([] as [u8; 0]).with_check().into_string();
    assert_eq!(
        DocumentId::from_str(&empty_payload),
        Err(DocumentIdError::Empty)
    );
    // Too short to hold a checksum.
    assert_eq!(
        DocumentId::from_str("1"),
        Err(DocumentIdError::BadChecksum("1".into()))
    );
    let long = "1".repeat(10_000);
    assert_eq!(
        DocumentId::from_str(&long),
        Err(DocumentIdError::TooLong(10_000))
    );
}

#[test]
fn other_payload_lengths_accepted() {
    for len in [1usize, 2, 15, 17, 20, 32, 64] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
        let s = bs58::encode(&bytes).with_check().into_string();
        let id = DocumentId::from_str(&s).unwrap();
        assert_eq!(id.as_bytes(), &bytes[..], "len {len}");
        assert_eq!(id.to_string(), s);
    }
    // Leading zero bytes become leading '1's and survive.
    let id = DocumentId::from_bytes(&[0, 0, 0, 9]);
    assert!(id.to_string().starts_with("111"));
    assert_eq!(DocumentId::from_str(&id.to_string()).unwrap(), id);
}

#[test]
fn legacy_uuid_form() {
    for s in [
        "f1c29c84-74c8-4ade-b800-be47627d33bf",
        "F1C29C84-74C8-4ADE-B800-BE47627D33BF",
    ] {
        let id = DocumentId::from_str(s).unwrap();
        assert_eq!(id.as_bytes(), DOCS_BYTES);
        // Always written back in the bs58check form.
        assert_eq!(id.to_string(), DOCS_ID);
    }
    // Malformed UUIDs are refused (and are not valid base58 either).
    for s in [
        "f1c29c84-74c8-4ade-b800-be47627d33bg",
        "f1c29c8474c8-4ade-b800-be47627d33bf-",
        "f1c29c84-74c8-4ade-b800-be47627d33b",
    ] {
        assert_eq!(
            DocumentId::from_str(s),
            Err(DocumentIdError::InvalidBase58(s.into())),
            "{s}"
        );
    }
}

#[test]
fn equality_hash_and_order_by_bytes() {
    let a = DocumentId::from_bytes(&[1, 2]);
    let b = DocumentId::from_str(&a.to_string()).unwrap();
    let c = DocumentId::from_bytes(&[1, 3]);
    assert_eq!(a, b);
    assert!(a < c);
    let set: HashSet<_> = [a.clone(), b, c].into_iter().collect();
    assert_eq!(set.len(), 2);
}

// ----- URLs ------------------------------------------------------------------------------------

fn head(byte: u8) -> [u8; 32] {
    let mut h = [byte; 32];
    h[0] = byte;
    h[31] = byte.wrapping_add(1);
    h
}

fn head_str(h: &[u8; 32]) -> String {
    bs58::encode(h).with_check().into_string()
}

#[test]
fn url_without_heads() {
    let url = AutomergeUrl::from_str(&format!("automerge:{DOCS_ID}")).unwrap();
    assert_eq!(url.document_id.as_bytes(), DOCS_BYTES);
    assert_eq!(url.heads, None);
    assert_eq!(url.to_string(), format!("automerge:{DOCS_ID}"));
    assert_eq!(
        AutomergeUrl::new(url.document_id.clone()).to_string(),
        url.to_string()
    );
}

#[test]
fn url_with_heads_sorted_on_display() {
    // Given out of order; the output must be sorted by hash bytes.
    let (lo, hi) = (head(0x01), head(0xfe));
    let s = format!("automerge:{DOCS_ID}#{}|{}", head_str(&hi), head_str(&lo));
    let url = AutomergeUrl::from_str(&s).unwrap();
    assert_eq!(url.heads, Some(vec![hi, lo]), "input order kept");
    assert_eq!(
        url.to_string(),
        format!("automerge:{DOCS_ID}#{}|{}", head_str(&lo), head_str(&hi))
    );
    // And it parses back to the same set.
    let again = AutomergeUrl::from_str(&url.to_string()).unwrap();
    assert_eq!(again.heads, Some(vec![lo, hi]));

    let single = AutomergeUrl {
        document_id: url.document_id.clone(),
        heads: Some(vec![lo]),
    };
    assert_eq!(
        single.to_string(),
        format!("automerge:{DOCS_ID}#{}", head_str(&lo))
    );
}

#[test]
fn url_empty_heads_and_paths() {
    let url = AutomergeUrl::from_str(&format!("automerge:{DOCS_ID}#")).unwrap();
    assert_eq!(url.heads, Some(vec![]));
    assert_eq!(url.to_string(), format!("automerge:{DOCS_ID}#"));

    let h = head(9);
    let url =
        AutomergeUrl::from_str(&format!("automerge:{DOCS_ID}/a/b/0#{}", head_str(&h))).unwrap();
    assert_eq!(url.document_id.as_bytes(), DOCS_BYTES);
    assert_eq!(url.heads, Some(vec![h]));
    let url = AutomergeUrl::from_str(&format!("automerge:{DOCS_ID}/path")).unwrap();
    assert_eq!(url.heads, None);
    assert_eq!(url.to_string(), format!("automerge:{DOCS_ID}"));
}

#[test]
fn url_errors() {
    for s in [
        DOCS_ID.to_owned(),
        format!("Automerge:{DOCS_ID}"),
        format!("automerge/{DOCS_ID}"),
        String::new(),
    ] {
        assert_eq!(
            AutomergeUrl::from_str(&s),
            Err(UrlError::NotAutomerge(s.clone()))
        );
    }
    assert_eq!(
        AutomergeUrl::from_str("automerge:"),
        Err(UrlError::DocumentId(DocumentIdError::Empty))
    );
    assert!(matches!(
        AutomergeUrl::from_str("automerge:0OIl"),
        Err(UrlError::DocumentId(DocumentIdError::InvalidBase58(_)))
    ));
    assert!(matches!(
        AutomergeUrl::from_str("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXv"),
        Err(UrlError::DocumentId(DocumentIdError::BadChecksum(_)))
    ));
    // A head that is valid bs58check but not 32 bytes (here: a document id).
    let s = format!("automerge:{DOCS_ID}#{DOCS_ID}");
    assert_eq!(
        AutomergeUrl::from_str(&s),
        Err(UrlError::BadHead(DOCS_ID.into()))
    );
    // A head with a bad checksum, and an empty head between separators.
    let good = head_str(&head(3));
    let mut bad = good.clone();
    bad.replace_range(2..3, if &good[2..3] == "z" { "y" } else { "z" });
    let s = format!("automerge:{DOCS_ID}#{good}|{bad}");
    assert_eq!(AutomergeUrl::from_str(&s), Err(UrlError::BadHead(bad)));
    let s = format!("automerge:{DOCS_ID}#{good}||{good}");
    assert_eq!(
        AutomergeUrl::from_str(&s),
        Err(UrlError::BadHead(String::new()))
    );
    // Hex heads (1.x form) are refused.
    let s = format!("automerge:{DOCS_ID}#{}", "ab".repeat(32));
    assert!(matches!(
        AutomergeUrl::from_str(&s),
        Err(UrlError::BadHead(_))
    ));
}
