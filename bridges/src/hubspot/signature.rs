//! HubSpot webhook signatures, version 3: `base64(HMAC-SHA256(client_secret, method + uri + body +
//! timestamp))` over the raw request bytes, with the request timestamp (epoch milliseconds) no
//! older than five minutes.
//!
//! Verified before the body is parsed, so a forged or replayed request costs one HMAC and changes
//! nothing. The comparison is constant time (`Mac::verify_slice`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old a request timestamp may be (HubSpot's documented window).
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-HubSpot-Signature-v3";
/// The header carrying the request timestamp (epoch milliseconds).
pub const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("{TIMESTAMP_HEADER} is not epoch milliseconds: {0:?}")]
    BadTimestamp(String),
    #[error("request timestamp is {age_ms} ms old (at most {} ms allowed)", MAX_AGE.as_millis())]
    Stale { age_ms: i64 },
    #[error("request timestamp is {ahead_ms} ms in the future")]
    FromTheFuture { ahead_ms: i64 },
    #[error("signature does not match")]
    Mismatch,
}

/// One webhook request as received: the URI is the full URL HubSpot called (built from
/// `public_url`, since a proxy in front of the server may have rewritten scheme and host).
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub body: &'a [u8],
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// HubSpot signs the URI with these percent-escapes decoded (and only these).
pub fn decode_uri_for_v3(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos + 1..pos + 3);
        match escape.and_then(|e| {
            DECODED
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(e))
        }) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mac(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(method.as_bytes());
    mac.update(decode_uri_for_v3(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// The signature HubSpot would send (used by the fakes and tests).
pub fn sign_v3(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    STANDARD.encode(
        mac(secret, method, uri, body, timestamp)
            .finalize()
            .into_bytes(),
    )
}

/// Checks timestamp and signature of `request` at `now_ms` (epoch milliseconds). A timestamp more
/// than [`MAX_AGE`] ahead is refused too: clocks that far apart mean a forged header.
pub fn verify_v3(
    secret: &[u8],
    request: &SignedRequest<'_>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let timestamp = request
        .timestamp
        .ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
    let signature = request
        .signature
        .ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(timestamp.chars().take(40).collect()))?;
    let max_age = i64::try_from(MAX_AGE.as_millis()).unwrap_or(i64::MAX);
    let age = now_ms.saturating_sub(ts);
    if age > max_age {
        return Err(SignatureError::Stale { age_ms: age });
    }
    if -age > max_age {
        return Err(SignatureError::FromTheFuture { ahead_ms: -age });
    }
    let given = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    mac(secret, request.method, request.uri, request.body, timestamp)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://sync.example.com/webhooks/hubspot/crm-main?x=1";
    const BODY: &[u8] = br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123,"occurredAt":1700000000000}]"#;
    const TS: &str = "1700000000000";

    fn request<'a>(signature: &'a str, timestamp: &'a str) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            uri: URI,
            body: BODY,
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn matches_an_independently_computed_signature() {
        // python3: base64.b64encode(hmac.new(SECRET, b"POST" + URI + BODY + TS, sha256).digest())
        let expected = "NSbgqpix4XZZLAh2WGofAOcUrEAAi1HllJwaedgyQcQ=";
        assert_eq!(sign_v3(SECRET, "POST", URI, BODY, TS), expected);
        assert_eq!(
            verify_v3(SECRET, &request(expected, TS), 1_700_000_060_000),
            Ok(())
        );
    }

    #[test]
    fn the_listed_escapes_are_decoded_before_signing() {
        assert_eq!(
            decode_uri_for_v3(
                "https%3A%2F%2Fa.example%2Fp%3Fq%3Db%40c%21%24%27%28%29%2a%2C%3B%20%zz%"
            ),
            "https://a.example/p?q%3Db@c!$'()*,;%20%zz%"
        );
        let encoded = "https://sync.example.com/webhooks/hubspot/crm-main%3Fx=1";
        let plain = "https://sync.example.com/webhooks/hubspot/crm-main?x=1";
        assert_eq!(
            sign_v3(SECRET, "POST", encoded, BODY, TS),
            sign_v3(SECRET, "POST", plain, BODY, TS)
        );
    }

    #[test]
    fn refuses_tampering_staleness_and_missing_headers() {
        let good = sign_v3(SECRET, "POST", URI, BODY, TS);
        let now = 1_700_000_000_000 + 299_000;
        assert_eq!(verify_v3(SECRET, &request(&good, TS), now), Ok(()));
        // One byte of the body changed.
        let mut tampered = request(&good, TS);
        let body = BODY
            .to_vec()
            .into_iter()
            .map(|b| if b == b'3' { b'4' } else { b })
            .collect::<Vec<_>>();
        tampered.body = &body;
        assert_eq!(
            verify_v3(SECRET, &tampered, now),
            Err(SignatureError::Mismatch)
        );
        // Another secret, another method, another URI.
        assert_eq!(
            verify_v3(b"other", &request(&good, TS), now),
            Err(SignatureError::Mismatch)
        );
        let mut get = request(&good, TS);
        get.method = "GET";
        assert_eq!(verify_v3(SECRET, &get, now), Err(SignatureError::Mismatch));
        let mut moved = request(&good, TS);
        moved.uri = "https://sync.example.com/webhooks/hubspot/other";
        assert_eq!(
            verify_v3(SECRET, &moved, now),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: a replay with a fresh timestamp fails.
        assert_eq!(
            verify_v3(SECRET, &request(&good, "1700000200000"), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v3(SECRET, &request(&good, TS), 1_700_000_000_000 + 300_001),
            Err(SignatureError::Stale { age_ms: 300_001 })
        );
        assert_eq!(
            verify_v3(SECRET, &request(&good, TS), 1_700_000_000_000 - 300_001),
            Err(SignatureError::FromTheFuture { ahead_ms: 300_001 })
        );
        assert_eq!(
            verify_v3(SECRET, &request("not base64!", TS), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v3(SECRET, &request(&good, "yesterday"), now),
            Err(SignatureError::BadTimestamp("yesterday".into()))
        );
        let mut unsigned = request(&good, TS);
        unsigned.signature = None;
        assert_eq!(
            verify_v3(SECRET, &unsigned, now),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
        let mut undated = request(&good, TS);
        undated.timestamp = None;
        assert_eq!(
            verify_v3(SECRET, &undated, now),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
    }
}
