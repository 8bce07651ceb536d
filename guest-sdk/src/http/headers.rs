//! What HTTP headers say, as pure functions: byte ranges, validators,
//! origins, authorization. No host call here, so all of it is unit-tested on
//! the build machine.

use crate::{Credentials, Validator};
use url::Url;

/// A parsed `Content-Range: bytes FIRST-LAST/TOTAL` (`TOTAL` may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first byte of the body, in the resource.
    pub first: u64,
    /// The last byte of the body, in the resource (inclusive).
    pub last: u64,
    /// The full size of the resource, when the server says it.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses a `Content-Range` of a 206: `bytes FIRST-LAST/TOTAL`, with
    /// `LAST >= FIRST` and, when `TOTAL` is known, `LAST < TOTAL`.
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = strip_bytes_unit(value)?;
        let (span, total) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let first = parse_number(first)?;
        let last = parse_number(last)?;
        let total = match total.trim() {
            "*" => None,
            n => Some(parse_number(n)?),
        };
        if last < first || total.is_some_and(|total| last >= total) {
            return None;
        }
        Some(ContentRange { first, last, total })
    }

    /// The number of bytes the range spans.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a range spans at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses the `Content-Range` of a 416: `bytes */TOTAL`, the full size of
/// the resource.
pub fn unsatisfied_range_total(value: &str) -> Option<u64> {
    let total = strip_bytes_unit(value)?.trim_start().strip_prefix("*/")?;
    parse_number(total)
}

fn strip_bytes_unit(value: &str) -> Option<&str> {
    let value = value.trim();
    let (unit, rest) = value.split_at_checked(5)?;
    unit.eq_ignore_ascii_case("bytes")
        .then_some(rest)
        .filter(|rest| rest.starts_with(' '))
        .map(str::trim_start)
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The `Range` header value for bytes `offset..end` (`end` exclusive; none
/// means to the end of the resource). None when the range is empty.
pub fn range_value(offset: u64, end: Option<u64>) -> Option<String> {
    match end {
        Some(end) if end > offset => Some(format!("bytes={offset}-{}", end - 1)),
        Some(_) => None,
        None => Some(format!("bytes={offset}-")),
    }
}

/// The validator a response offers: a strong ETag, else its Last-Modified
/// date. A weak ETag (`W/"..."`) cannot guard a range and is passed over.
pub fn validator_from(etag: Option<&str>, last_modified: Option<&str>) -> Option<Validator> {
    match etag.map(str::trim) {
        Some(tag) if !tag.is_empty() && !tag.starts_with("W/") => {
            Some(Validator::Etag(tag.to_string()))
        }
        _ => last_modified
            .map(str::trim)
            .filter(|date| !date.is_empty())
            .map(|date| Validator::LastModified(date.to_string())),
    }
}

/// The header value a validator is sent as (`If-Range`, `If-Match`): the
/// ETag or the date, exactly as the server sent it.
pub fn validator_value(validator: &Validator) -> &str {
    match validator {
        Validator::Etag(tag) => tag,
        Validator::LastModified(date) => date,
    }
}

/// Whether two validators name the same version of a resource.
pub fn same_validator(a: &Validator, b: &Validator) -> bool {
    match (a, b) {
        (Validator::Etag(a), Validator::Etag(b)) => a == b,
        (Validator::LastModified(a), Validator::LastModified(b)) => a == b,
        _ => false,
    }
}

/// Whether `a` and `b` have the same origin: scheme, host and port (the
/// scheme's default port when none is written).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Headers that carry the job owner's authority and never go to another
/// origin than the one the job named.
pub fn is_origin_bound(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|bound| name.eq_ignore_ascii_case(bound))
}

/// Whether a status is a redirect the client may follow with `Location`.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Whether `value` lists the `bytes` range unit (`Accept-Ranges`).
pub fn accepts_byte_ranges(value: &str) -> bool {
    value
        .split(',')
        .any(|unit| unit.trim().eq_ignore_ascii_case("bytes"))
}

/// The `Authorization` value for the job's credentials.
pub fn authorization(credentials: &Credentials) -> String {
    match credentials {
        Credentials::Basic(basic) => format!(
            "Basic {}",
            base64(format!("{}:{}", basic.user, basic.password).as_bytes())
        ),
        Credentials::Bearer(token) => format!("Bearer {token}"),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BasicCredentials;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            ContentRange::parse("bytes 0-99/1000"),
            Some(ContentRange {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        let open = ContentRange::parse(" bytes 100-199/* ").unwrap();
        assert_eq!((open.first, open.last, open.total), (100, 199, None));
        assert_eq!(open.len(), 100);
        assert_eq!(ContentRange::parse("BYTES 5-5/6").map(|r| r.len()), Some(1));
        for bad in [
            "",
            "bytes",
            "bytes 9-1/100",
            "bytes 0-100/100",
            "bytes -1-5/10",
            "bytes +1-5/10",
            "bytes 1-/10",
            "bytes */10",
            "items 0-1/2",
            "bytes0-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unsatisfied_ranges_parse() {
        assert_eq!(unsatisfied_range_total("bytes */1000"), Some(1000));
        assert_eq!(unsatisfied_range_total(" bytes  */0"), Some(0));
        assert_eq!(unsatisfied_range_total("bytes 0-1/1000"), None);
        assert_eq!(unsatisfied_range_total("bytes */*"), None);
    }

    #[test]
    fn range_values() {
        assert_eq!(range_value(0, Some(100)).as_deref(), Some("bytes=0-99"));
        assert_eq!(range_value(7, None).as_deref(), Some("bytes=7-"));
        assert_eq!(range_value(5, Some(5)), None);
    }

    #[test]
    fn validators_prefer_strong_etags() {
        let date = "Tue, 15 Nov 1994 08:12:31 GMT";
        assert!(matches!(
            validator_from(Some("\"abc\""), Some(date)),
            Some(Validator::Etag(tag)) if tag == "\"abc\""
        ));
        assert!(matches!(
            validator_from(Some("W/\"abc\""), Some(date)),
            Some(Validator::LastModified(d)) if d == date
        ));
        assert!(validator_from(Some("W/\"abc\""), None).is_none());
        assert!(validator_from(None, None).is_none());
        let tag = Validator::Etag("\"a\"".into());
        assert_eq!(validator_value(&tag), "\"a\"");
        assert!(same_validator(&tag, &Validator::Etag("\"a\"".into())));
        assert!(!same_validator(
            &tag,
            &Validator::LastModified("\"a\"".into())
        ));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &url("http://a.example/x"),
            &url("http://A.example:80/y")
        ));
        assert!(same_origin(
            &url("https://a.example/"),
            &url("https://a.example:443/")
        ));
        assert!(!same_origin(
            &url("http://a.example/"),
            &url("https://a.example/")
        ));
        assert!(!same_origin(
            &url("http://a.example/"),
            &url("http://b.example/")
        ));
        assert!(!same_origin(
            &url("http://a.example/"),
            &url("http://a.example:8080/")
        ));
        assert!(is_origin_bound("Authorization"));
        assert!(is_origin_bound("cookie"));
        assert!(is_origin_bound("PROXY-AUTHORIZATION"));
        assert!(!is_origin_bound("range"));
    }

    #[test]
    fn base64_and_authorization() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            authorization(&Credentials::Basic(BasicCredentials {
                user: "Aladdin".into(),
                password: "open sesame".into(),
            })),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            authorization(&Credentials::Bearer("t0k".into())),
            "Bearer t0k"
        );
        assert!(accepts_byte_ranges("none, Bytes"));
        assert!(!accepts_byte_ranges("none"));
    }
}
