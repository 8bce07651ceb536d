//! Ferry's built-in `digest-verify` reply processor: fails an upload-reply
//! job whose server reports another digest of the upload than the SHA-256
//! the host computed of the source while it sent it.
//!
//! ```text
//! ferry set JOB --reply-processor digest-verify
//! ferry set JOB --reply-processor digest-verify --reply-option json=/sha256
//! ```
//!
//! Where the server's digest is read from (options):
//! - `json=POINTER`: a field of the JSON reply, by JSON pointer; its value
//!   is hex, base64, or `sha-256=:BASE64:`;
//! - `header=NAME`: that header of the reply;
//! - neither: `Repr-Digest` (RFC 9530, `sha-256=:BASE64:`), else `Digest`
//!   (RFC 3230, `SHA-256=BASE64`).
//!
//! And `unverifiable=fail` (the default) or `pass`: what to do when the host
//! has no digest of the source to compare with (an upload resumed after an
//! interruption, whose earlier bytes the host did not read in this run).
//!
//! On a match the reply data is the reply body as the server sent it (when
//! it is at most 1 MiB; else none, and the reply file keeps it). Failures
//! are fatal and typed: `digest-mismatch` (the server holds other bytes),
//! `digest-missing` (the reply reports no SHA-256), `digest-unavailable`
//! (the host has no digest of the source: the source changed after it was
//! uploaded, so there is nothing to compare with), `reply-not-json`,
//! `invalid-option`.

use base64::Engine as _;
use ferry_guest_sdk::{
    ErrorClass, ErrorContext, InputStream, ReplyContext, ReplyFile, ReplyHead, ReplyProcessor,
    TransferError, stream,
};

/// The most reply data the host keeps.
const DATA_LIMIT: usize = 1 << 20;
/// The largest JSON reply it parses.
const JSON_LIMIT: usize = 8 << 20;

struct DigestVerify;

fn fatal(context: ErrorContext, code: &str, message: String) -> TransferError {
    TransferError::other(ErrorClass::Fatal, context, code, message)
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A digest's bytes from hex or base64 (standard or URL-safe, padded or
/// not); none unless it is 32 bytes, the size of a SHA-256.
pub fn decode_value(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_matches(':').trim_matches('"');
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .filter(|bytes| bytes.len() == 32)
}

/// The SHA-256 in a digest field: a dictionary of `ALGORITHM=VALUE` items
/// (`sha-256=:B64:, sha-512=:B64:` or `SHA-256=B64`), or a bare value.
/// `Err` names what was there when it holds no SHA-256.
pub fn sha256_of(field: &str) -> Result<Vec<u8>, String> {
    let mut algorithms = Vec::new();
    for item in field.split(',') {
        let Some((algorithm, value)) = item.split_once('=') else {
            continue;
        };
        let algorithm = algorithm.trim().to_ascii_lowercase();
        if algorithm == "sha-256" || algorithm == "sha256" {
            // Parameters (`;q=1`) follow the value.
            let value = value.split(';').next().unwrap_or("");
            return decode_value(value).ok_or_else(|| format!("a sha-256 of {value:?}"));
        }
        algorithms.push(algorithm);
    }
    if algorithms.is_empty() {
        return decode_value(field).ok_or_else(|| format!("{:?}", field.trim()));
    }
    Err(format!("digests of {} only", algorithms.join(", ")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(head: &'a ReplyHead, name: &str) -> Option<&'a str> {
    head.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

impl ReplyProcessor for DigestVerify {
    fn process(
        context: ReplyContext,
        head: ReplyHead,
        body: InputStream,
        _file: &ReplyFile,
    ) -> Result<Vec<u8>, TransferError> {
        let url = context.url.clone();
        let unverifiable_passes = match option(&context.options, "unverifiable") {
            None | Some("fail") => false,
            Some("pass") => true,
            Some(other) => {
                return Err(fatal(
                    ErrorContext::Policy,
                    "invalid-option",
                    format!("unverifiable is fail or pass, not {other:?}"),
                ));
            }
        };
        let Some(ours) = context
            .source_digests
            .iter()
            .find(|d| d.algorithm == "sha-256")
            .map(|d| d.value.clone())
        else {
            let why = format!(
                "the host has no SHA-256 of the source uploaded to {url} (the source changed \
                 after it was uploaded): nothing to verify"
            );
            if !unverifiable_passes {
                return Err(fatal(ErrorContext::LocalFile, "digest-unavailable", why));
            }
            ferry_guest_sdk::warn(&format!("{why}; passed as unverifiable=pass says"));
            return match stream::read_to_end(&body, DATA_LIMIT) {
                Ok(data) => Ok(data),
                Err(e) if e.is_transient() => Err(e),
                Err(_) => Ok(Vec::new()),
            };
        };
        let json = option(&context.options, "json");
        let (theirs, data, from) = if let Some(pointer) = json {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(fatal(
                    ErrorContext::Policy,
                    "invalid-option",
                    format!("the JSON pointer {pointer:?} does not start with `/`"),
                ));
            }
            let data = stream::read_to_end(&body, JSON_LIMIT).map_err(|e| {
                if e.is_transient() {
                    e
                } else {
                    fatal(
                        ErrorContext::RemoteApplication,
                        "reply-too-large",
                        format!("the JSON reply of {url} is larger than {JSON_LIMIT} bytes"),
                    )
                }
            })?;
            let document: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
                fatal(
                    ErrorContext::RemoteApplication,
                    "reply-not-json",
                    format!("the reply of {url} is not JSON: {e}"),
                )
            })?;
            let field = document
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let data = if data.len() <= DATA_LIMIT {
                data
            } else {
                Vec::new()
            };
            (field, data, format!("the JSON field {pointer}"))
        } else {
            let name = option(&context.options, "header");
            let (field, from) = match name {
                Some(name) => (header(&head, name), format!("the header {name}")),
                None => match header(&head, "repr-digest") {
                    Some(value) => (Some(value), "Repr-Digest".to_string()),
                    None => (header(&head, "digest"), "Digest".to_string()),
                },
            };
            let field = field.map(str::to_string);
            let data = match stream::read_to_end(&body, DATA_LIMIT) {
                Ok(data) => data,
                Err(e) if e.is_transient() => return Err(e),
                // Larger than the reply data the host keeps: the reply file has it.
                Err(_) => Vec::new(),
            };
            (field, data, from)
        };
        let field = theirs.ok_or_else(|| {
            fatal(
                ErrorContext::RemoteApplication,
                "digest-missing",
                format!("the reply of {url} has no {from} to verify the upload with"),
            )
        })?;
        let theirs = sha256_of(&field).map_err(|what| {
            fatal(
                ErrorContext::RemoteApplication,
                "digest-missing",
                format!("{from} of the reply of {url} holds no SHA-256: {what}"),
            )
        })?;
        if theirs != ours {
            return Err(fatal(
                ErrorContext::RemoteFile,
                "digest-mismatch",
                format!(
                    "{url} reports sha-256 {} in {from}, the source has {}",
                    hex(&theirs),
                    hex(&ours)
                ),
            ));
        }
        ferry_guest_sdk::info(&format!("{url}: sha-256 {} verified ({from})", hex(&ours)));
        Ok(data)
    }
}

ferry_guest_sdk::export_reply_processor!(DigestVerify);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn digest_fields_in_every_spelling() {
        let want = decode_value(HEX).unwrap();
        assert_eq!(decode_value(B64).unwrap(), want);
        assert_eq!(sha256_of(&format!("sha-256=:{B64}:")).unwrap(), want);
        assert_eq!(
            sha256_of(&format!("sha-512=:AAAA:, sha-256=:{B64}:")).unwrap(),
            want
        );
        assert_eq!(sha256_of(&format!("SHA-256={B64}")).unwrap(), want);
        assert_eq!(sha256_of(HEX).unwrap(), want);
        assert!(sha256_of("md5=abc").unwrap_err().contains("md5"));
        assert!(sha256_of("sha-256=:short:").is_err());
    }
}
