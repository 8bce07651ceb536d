//! A single-shot `PUT` or `POST` of the whole file, for servers that speak
//! neither tus nor BITS.
//!
//! Not resumable: the server's answer comes only once it holds the whole
//! body, so nothing is acknowledged before, and an interruption starts the
//! next attempt over from zero. Every error says so.

use ferry_guest_sdk::http::{Method, Request};
use ferry_guest_sdk::{JobContext, ReplySink, Source, TransferError, UploadRequest};

/// Sends the whole source with `method`; the answer is the reply.
pub fn upload(
    job: &JobContext,
    request: &UploadRequest,
    method: Method,
    source: &Source,
    reply: Option<&ReplySink>,
) -> Result<(), TransferError> {
    let size = source.size();
    let verb = if method == Method::Put { "PUT" } else { "POST" };
    if request.session.is_some() {
        ferry_guest_sdk::warn(&format!(
            "a single-shot {verb} keeps no session: starting over from zero"
        ));
    }
    let not_resumable = |mut e: TransferError| {
        e.message = format!(
            "{} (a single-shot {verb} is not resumable: the next attempt starts over from zero)",
            e.message
        );
        e
    };
    let body = source.open(0)?;
    let response = Request::for_job(job, method, &request.url)?
        .header("content-type", "application/octet-stream")
        .send_with_body(&body, size)
        .map_err(not_resumable)?;
    drop(body);
    if !(200..300).contains(&response.status) {
        return Err(not_resumable(TransferError::from_http_status(
            response.status,
            &request.url,
        )));
    }
    source.acknowledge(size);
    if let Some(reply) = reply {
        response.write_reply(reply)?;
    }
    Ok(())
}
