//! Which upload protocol a job speaks, the sessions it records, and the
//! dispatch to the protocol's module.
//!
//! A recorded session names its protocol (`tus URL`, `bits GUID`), so a
//! resumed upload and a server-side cancel go on in the protocol the
//! upload began with, whatever detection would say today.

use crate::{bits, single, tus};
use ferry_guest_sdk::http::{Method, Request};
use ferry_guest_sdk::{
    ErrorClass, ErrorContext, JobContext, ReplySink, Source, TransferError, UploadRequest,
};

/// An upload protocol of `http` and `https` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0.
    Tus,
    /// The BITS upload protocol.
    Bits,
    /// One `PUT` of the whole file.
    Put,
    /// One `POST` of the whole file.
    Post,
}

impl Protocol {
    /// The protocol named `name` (`tus`, `bits`, `put`, `post`, any case).
    pub fn parse(name: &str) -> Result<Protocol, TransferError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tus" => Ok(Protocol::Tus),
            "bits" => Ok(Protocol::Bits),
            "put" => Ok(Protocol::Put),
            "post" => Ok(Protocol::Post),
            _ => Err(TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::Plugin,
                "unknown-protocol",
                format!(
                    "the http plugin speaks tus, bits, put and post, not {name:?} \
                     (`ferry set JOB --protocol NAME`, or --clear-protocol to detect it)"
                ),
            )),
        }
    }

    /// The protocol's name, as `--protocol` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tus => "tus",
            Protocol::Bits => "bits",
            Protocol::Put => "put",
            Protocol::Post => "post",
        }
    }
}

/// A server session as the host records it: `PROTOCOL VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub protocol: Protocol,
    /// The tus upload URL, the BITS session id.
    pub value: String,
}

impl Session {
    pub fn new(protocol: Protocol, value: &str) -> Session {
        Session {
            protocol,
            value: value.to_string(),
        }
    }

    /// The text recorded with `source.record-session`.
    pub fn encode(&self) -> String {
        format!("{} {}", self.protocol.name(), self.value)
    }

    /// A recorded session; none when it is not one of this plugin's.
    pub fn decode(text: &str) -> Option<Session> {
        let (protocol, value) = text.split_once(' ')?;
        let protocol = Protocol::parse(protocol).ok()?;
        (!value.is_empty()).then(|| Session::new(protocol, value))
    }
}

/// Uploads in the job's protocol: the recorded session's, else the one the
/// owner chose, else the one detected.
pub fn upload(
    job: &JobContext,
    request: &UploadRequest,
    source: &Source,
    reply: Option<&ReplySink>,
) -> Result<(), TransferError> {
    let chosen = request
        .protocol
        .as_deref()
        .map(Protocol::parse)
        .transpose()?;
    let recorded = match request.session.as_deref() {
        Some(text) => Some(Session::decode(text).ok_or_else(|| {
            TransferError::session_expired(format!(
                "the recorded session {text:?} is not one of the http plugin's"
            ))
        })?),
        None => None,
    };
    if let (Some(chosen), Some(recorded)) = (chosen, &recorded)
        && chosen != recorded.protocol
    {
        return Err(TransferError::session_expired(format!(
            "the upload began with {} and the job now asks for {}: starting over",
            recorded.protocol.name(),
            chosen.name()
        )));
    }
    let protocol = match (&recorded, chosen) {
        (Some(session), _) => session.protocol,
        (None, Some(chosen)) => chosen,
        (None, None) => detect(job, &request.url)?,
    };
    let session = recorded.map(|s| s.value);
    let session = session.as_deref();
    match protocol {
        Protocol::Tus => tus::upload(job, request, session, source, reply),
        Protocol::Bits => bits::upload(job, request, session, source, reply),
        Protocol::Put => single::upload(job, request, Method::Put, source, reply),
        Protocol::Post => single::upload(job, request, Method::Post, source, reply),
    }
}

/// Cancels a recorded session on the server, in its protocol.
pub fn cancel(job: &JobContext, url: &str, session: &str) -> Result<(), TransferError> {
    match Session::decode(session) {
        Some(Session {
            protocol: Protocol::Tus,
            value,
        }) => tus::cancel(job, &value),
        Some(Session {
            protocol: Protocol::Bits,
            value,
        }) => bits::cancel(job, url, &value),
        // Single-shot uploads keep no session; a session that is not ours
        // cannot be cancelled by us either.
        _ => Ok(()),
    }
}

/// Finds out what the server at `url` speaks: tus when it answers
/// `OPTIONS` with a `Tus-Version` that lists 1.0.0, BITS when it
/// acknowledges a `Ping`, else a single-shot `PUT`. A server that cannot
/// be reached fails the call (transiently) instead of being guessed at.
pub fn detect(job: &JobContext, url: &str) -> Result<Protocol, TransferError> {
    let options = Request::for_job(job, Method::Options, url)?
        .header(tus::RESUMABLE.0, tus::RESUMABLE.1)
        .send()?;
    let tus = (200..300).contains(&options.status)
        && options
            .header("tus-version")
            .is_some_and(|v| v.split(',').any(|v| v.trim() == tus::RESUMABLE.1));
    drop(options);
    let protocol = if tus {
        Protocol::Tus
    } else if bits::ping(job, url)? {
        Protocol::Bits
    } else {
        Protocol::Put
    };
    ferry_guest_sdk::info(&format!("{url} speaks {}", protocol.name()));
    Ok(protocol)
}

/// `location` (absolute, or relative to `base`) as an absolute URL.
pub fn join(base: &str, location: &str) -> Result<String, TransferError> {
    url::Url::parse(base)
        .and_then(|base| base.join(location))
        .map(String::from)
        .map_err(|e| ferry_guest_sdk::http::invalid_url(location, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name_and_sessions_name_their_protocol() {
        assert_eq!(Protocol::parse("TUS").unwrap(), Protocol::Tus);
        assert_eq!(Protocol::parse(" bits ").unwrap(), Protocol::Bits);
        for p in [Protocol::Tus, Protocol::Bits, Protocol::Put, Protocol::Post] {
            assert_eq!(Protocol::parse(p.name()).unwrap(), p);
        }
        let error = Protocol::parse("ftp").unwrap_err();
        assert_eq!(error.code.to_string(), "unknown-protocol");

        let session = Session::new(Protocol::Tus, "http://h/files/1");
        assert_eq!(session.encode(), "tus http://h/files/1");
        assert_eq!(Session::decode(&session.encode()), Some(session));
        let bits = Session::decode("bits {7df0354d-249b-430f-820d-3d2a9bef4931}").unwrap();
        assert_eq!(bits.protocol, Protocol::Bits);
        assert_eq!(Session::decode("http://h/files/1"), None);
        assert_eq!(Session::decode("tus "), None);
    }

    #[test]
    fn locations_join_the_url_that_answered() {
        assert_eq!(
            join("http://h:1/files", "/files/abc").unwrap(),
            "http://h:1/files/abc"
        );
        assert_eq!(
            join("http://h:1/files", "http://other/x").unwrap(),
            "http://other/x"
        );
        assert_eq!(
            crate::tus::metadata("report.pdf"),
            "filename cmVwb3J0LnBkZg=="
        );
    }
}
