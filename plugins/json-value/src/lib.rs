//! Ferry's built-in `json-value` reply processor: the reply data of an
//! upload-reply job is one value of the server's JSON reply, picked by a
//! JSON pointer (RFC 6901).
//!
//! ```text
//! ferry set JOB --reply-processor json-value --reply-option pointer=/links/self
//! ```
//!
//! Options:
//! - `pointer` (required): the JSON pointer, such as `/id` or
//!   `/files/0/url`; the empty pointer is the whole document.
//!
//! A string value is the reply data as its text (`https://...`, not
//! `"https://..."`); any other value is its compact JSON. The reply file, if
//! the job has one, keeps the raw reply. Failures are fatal and typed:
//! `missing-option` (no `pointer`), `invalid-option` (a pointer that does
//! not start with `/`), `reply-not-json`, `json-pointer-not-found`,
//! `reply-too-large` (a body over 8 MiB).

use ferry_guest_sdk::{
    ErrorClass, ErrorContext, InputStream, ReplyContext, ReplyFile, ReplyHead, ReplyProcessor,
    TransferError, stream,
};

/// The largest reply body it parses.
const BODY_LIMIT: usize = 8 << 20;

struct JsonValue;

fn fatal(context: ErrorContext, code: &str, message: String) -> TransferError {
    TransferError::other(ErrorClass::Fatal, context, code, message)
}

/// The value of `options` named `key` (the last one given).
fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The reply data for `value`: a string's text, else compact JSON.
fn render(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

impl ReplyProcessor for JsonValue {
    fn process(
        context: ReplyContext,
        _head: ReplyHead,
        body: InputStream,
        _file: &ReplyFile,
    ) -> Result<Vec<u8>, TransferError> {
        let pointer = option(&context.options, "pointer").ok_or_else(|| {
            fatal(
                ErrorContext::Policy,
                "missing-option",
                "json-value needs the option pointer (`--reply-option pointer=/id`)".into(),
            )
        })?;
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(fatal(
                ErrorContext::Policy,
                "invalid-option",
                format!("the JSON pointer {pointer:?} does not start with `/`"),
            ));
        }
        let data = stream::read_to_end(&body, BODY_LIMIT).map_err(|e| {
            if e.is_transient() {
                e
            } else {
                fatal(
                    ErrorContext::RemoteApplication,
                    "reply-too-large",
                    format!(
                        "the reply of {} is larger than {BODY_LIMIT} bytes",
                        context.url
                    ),
                )
            }
        })?;
        let document: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
            fatal(
                ErrorContext::RemoteApplication,
                "reply-not-json",
                format!("the reply of {} is not JSON: {e}", context.url),
            )
        })?;
        let value = document.pointer(pointer).ok_or_else(|| {
            fatal(
                ErrorContext::RemoteApplication,
                "json-pointer-not-found",
                format!("the reply of {} has nothing at {pointer:?}", context.url),
            )
        })?;
        Ok(render(value))
    }
}

ferry_guest_sdk::export_reply_processor!(JsonValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_their_text_and_the_rest_json() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"url":"https://x/1","n":3,"o":{"a":[1]}}"#).unwrap();
        assert_eq!(render(doc.pointer("/url").unwrap()), b"https://x/1");
        assert_eq!(render(doc.pointer("/n").unwrap()), b"3");
        assert_eq!(render(doc.pointer("/o").unwrap()), br#"{"a":[1]}"#);
        let options = vec![
            ("pointer".to_string(), "/a".to_string()),
            ("pointer".to_string(), "/b".to_string()),
        ];
        assert_eq!(option(&options, "pointer"), Some("/b"));
        assert_eq!(option(&options, "other"), None);
    }
}
