//! The adapter for plugins built against the frozen `ferry:transfer@0.1.0`.
//!
//! Under the component model's semver rules a `0.x` minor is a contract of
//! its own, so a 0.1 component would not link against the 0.2 host. This
//! module gives such components the 0.1 host interface over the same host
//! objects (`Destination`, `Source`), and calls their 0.1 exports
//! (`transfers`, `replies`) on behalf of the runtime, converting to and from
//! the host's own types. What 0.1 could not express is filled in by the
//! host: a reply reaches a 0.1 plugin as at most 1 MiB of data, and a 0.1
//! plugin's reply comes back the same way.

use crate::error::{ErrorClass, ErrorContext, TransferError, code};
use crate::plugin::bindings::v0_1::ferry::transfer::{host, types};
use crate::plugin::bindings::v0_1::{exports, reply_processor};
use crate::plugin::manifest::Capability;
use crate::plugin::sandbox::PluginState;
use crate::plugin::streams::{Destination, Source};
use crate::plugin::transfer::{
    Credentials, DownloadRequest, RemoteInfo, ReplyHead, UploadReply, UploadRequest, Validator,
    clean_message,
};
use std::collections::BTreeSet;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Resource};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

/// The export names of a 0.1 component.
pub const TRANSFERS: &str = "ferry:transfer/transfers@0.1.0";
pub const REPLIES: &str = "ferry:transfer/replies@0.1.0";

/// What a 0.1 component exports, looked up once at load.
pub enum Exports {
    Transfers(exports::ferry::transfer::transfers::GuestIndices),
    Replies(reply_processor::exports::ferry::transfer::replies::GuestIndices),
}

impl Exports {
    /// Looks up the 0.1 export of `pre`, named `name`.
    pub fn find(pre: &InstancePre<PluginState>, name: &str) -> wasmtime::Result<Exports> {
        if name == REPLIES {
            Ok(Exports::Replies(
                reply_processor::exports::ferry::transfer::replies::GuestIndices::new(pre)?,
            ))
        } else {
            Ok(Exports::Transfers(
                exports::ferry::transfer::transfers::GuestIndices::new(pre)?,
            ))
        }
    }
}

/// A call's result as the runtime settles it.
type Called<R> = wasmtime::Result<Result<R, TransferError>>;

fn transfers(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
) -> wasmtime::Result<exports::ferry::transfer::transfers::Guest> {
    match exports {
        Exports::Transfers(indices) => indices.load(store, instance),
        Exports::Replies(_) => Err(wasmtime::format_err!("not a 0.1 transport")),
    }
}

/// What a 0.1 transport says it can do (`supported`).
pub async fn supported(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
) -> Called<BTreeSet<Capability>> {
    let guest = transfers(exports, store, instance)?;
    let flags = guest.call_supported(store).await?;
    let mut abilities = BTreeSet::new();
    for (flag, ability) in [
        (types::Capabilities::DOWNLOAD, Capability::Download),
        (types::Capabilities::UPLOAD, Capability::Upload),
        (types::Capabilities::UPLOAD_REPLY, Capability::UploadReply),
        (types::Capabilities::RANGES, Capability::Ranges),
    ] {
        if flags.contains(flag) {
            abilities.insert(ability);
        }
    }
    Ok(Ok(abilities))
}

/// `transfers.download` of a 0.1 transport.
pub async fn download(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
    request: DownloadRequest,
    destination: Resource<Destination>,
) -> Called<()> {
    let guest = transfers(exports, store, instance)?;
    let request = types::DownloadRequest {
        url: request.url,
        offset: request.offset,
        end: request.end,
        validator: request.validator.map(Into::into),
    };
    let result = guest.call_download(store, &request, destination).await?;
    Ok(result.map_err(Into::into))
}

/// `transfers.upload` of a 0.1 transport; the reply, when asked for, comes
/// back as data.
pub async fn upload(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
    request: UploadRequest,
    want_reply: bool,
    source: Resource<Source>,
) -> Called<Option<UploadReply>> {
    let guest = transfers(exports, store, instance)?;
    let request = types::UploadRequest {
        url: request.url,
        size: request.size,
        session: request.session,
        want_reply,
    };
    let result = guest.call_upload(store, &request, source).await?;
    Ok(result
        .map(|outcome| {
            outcome.reply.map(|r| UploadReply {
                status: r.status,
                headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                size: r.body.len() as u64,
                body: r.body,
            })
        })
        .map_err(Into::into))
}

/// `transfers.cancel-upload` of a 0.1 transport.
pub async fn cancel_upload(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
    url: &str,
    session: &str,
) -> Called<()> {
    let guest = transfers(exports, store, instance)?;
    let result = guest.call_cancel_upload(store, url, session).await?;
    Ok(result.map_err(Into::into))
}

/// `replies.process` of a 0.1 reply processor: the reply as data, the reply
/// file as a destination.
pub async fn process(
    exports: &Exports,
    store: &mut Store<PluginState>,
    instance: &Instance,
    head: &ReplyHead,
    body: Vec<u8>,
    file: Resource<Destination>,
) -> Called<Vec<u8>> {
    let Exports::Replies(indices) = exports else {
        return Err(wasmtime::format_err!("not a 0.1 reply processor"));
    };
    let guest = indices.load(&mut *store, instance)?;
    let reply = types::UploadReply {
        status: head.status,
        headers: head
            .headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body,
    };
    let result = guest.call_process(store, &reply, file).await?;
    Ok(result.map_err(Into::into))
}

impl From<types::TransferError> for TransferError {
    /// 0.1 codes were strings; the ones the host acted on then keep their
    /// meaning, anything that is not a short kebab-case code is replaced.
    fn from(e: types::TransferError) -> Self {
        let kebab = !e.code.is_empty()
            && e.code.len() <= 64
            && e.code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        TransferError {
            class: match e.class {
                types::ErrorClass::Transient => ErrorClass::Transient,
                types::ErrorClass::Fatal => ErrorClass::Fatal,
            },
            context: match e.context {
                types::ErrorContext::LocalFile => ErrorContext::LocalFile,
                types::ErrorContext::RemoteFile => ErrorContext::RemoteFile,
                types::ErrorContext::RemoteApplication => ErrorContext::RemoteApplication,
                types::ErrorContext::Transport => ErrorContext::Transport,
                types::ErrorContext::Plugin => ErrorContext::Plugin,
                types::ErrorContext::Policy => ErrorContext::Policy,
            },
            code: if kebab {
                e.code
            } else {
                code::PLUGIN_ERROR.into()
            },
            http_status: e.http_status,
            message: clean_message(&e.message),
        }
    }
}

impl From<TransferError> for types::TransferError {
    fn from(e: TransferError) -> Self {
        types::TransferError {
            class: match e.class {
                ErrorClass::Transient => types::ErrorClass::Transient,
                ErrorClass::Fatal => types::ErrorClass::Fatal,
            },
            context: match e.context {
                ErrorContext::LocalFile => types::ErrorContext::LocalFile,
                ErrorContext::RemoteFile => types::ErrorContext::RemoteFile,
                ErrorContext::RemoteApplication => types::ErrorContext::RemoteApplication,
                ErrorContext::Transport => types::ErrorContext::Transport,
                ErrorContext::Plugin => types::ErrorContext::Plugin,
                ErrorContext::Policy => types::ErrorContext::Policy,
            },
            code: e.code,
            http_status: e.http_status,
            message: e.message,
        }
    }
}

impl From<types::Validator> for Validator {
    fn from(v: types::Validator) -> Self {
        match v {
            types::Validator::Etag(t) => Validator::Etag(t),
            types::Validator::LastModified(d) => Validator::LastModified(d),
        }
    }
}

impl From<Validator> for types::Validator {
    fn from(v: Validator) -> Self {
        match v {
            Validator::Etag(t) => types::Validator::Etag(t),
            Validator::LastModified(d) => types::Validator::LastModified(d),
        }
    }
}

impl From<types::RemoteInfo> for RemoteInfo {
    fn from(r: types::RemoteInfo) -> Self {
        RemoteInfo {
            size: r.size,
            validator: r.validator.map(Into::into),
            accepts_ranges: r.accepts_ranges,
            location: r.location,
            served_sha256: None,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level_: types::LogLevel, message: String) -> wasmtime::Result<()> {
        let level_ = match level_ {
            types::LogLevel::Trace => tracing::Level::TRACE,
            types::LogLevel::Debug => tracing::Level::DEBUG,
            types::LogLevel::Info => tracing::Level::INFO,
            types::LogLevel::Warn => tracing::Level::WARN,
            types::LogLevel::Error => tracing::Level::ERROR,
        };
        self.log_line(level_, &message);
        Ok(())
    }

    fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.job.cancel.is_cancelled())
    }

    /// The 0.1 contract handed the job context through this call; a reply
    /// processor's calls are given one without headers or credentials.
    fn context(&mut self) -> wasmtime::Result<host::JobContext> {
        Ok(host::JobContext {
            job_id: self.job.job_id.clone(),
            headers: self
                .job
                .headers
                .iter()
                .map(|(name, value)| types::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            credentials: self.job.credentials.as_ref().map(|c| match c {
                Credentials::Basic { user, password } => {
                    types::Credentials::Basic(types::BasicCredentials {
                        user: user.clone(),
                        password: password.clone(),
                    })
                }
                Credentials::Bearer { token } => types::Credentials::Bearer(token.clone()),
            }),
            max_redirects: self.job.max_redirects,
        })
    }
}

// The resources are the host objects of the current contract: each 0.1
// method is its 0.2 namesake, with the 0.1 error type.
use crate::plugin::bindings::v0_2::ferry::transfer::host as current;

impl host::HostDestination for PluginState {
    fn begin(
        &mut self,
        destination: Resource<Destination>,
        info: types::RemoteInfo,
        from: u64,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, types::TransferError>> {
        let info = self
            .http
            .with_served_digest(RemoteInfo::from(info).sanitized());
        let sink = self
            .table()
            .get_mut(&destination)?
            .begin(info, from)
            .map(|sink| Box::new(sink) as DynOutputStream);
        Ok(self.push_stream(sink)?.map_err(Into::into))
    }

    fn drop(&mut self, destination: Resource<Destination>) -> wasmtime::Result<()> {
        current::HostDestination::drop(self, destination)
    }
}

impl host::HostSource for PluginState {
    fn size(&mut self, source: Resource<Source>) -> wasmtime::Result<u64> {
        current::HostSource::size(self, source)
    }

    fn open(
        &mut self,
        source: Resource<Source>,
        offset: u64,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, types::TransferError>> {
        let stream = self
            .table()
            .get(&source)?
            .open(offset)
            .map(|stream| Box::new(stream) as DynInputStream);
        Ok(self.push_stream(stream)?.map_err(Into::into))
    }

    fn record_session(
        &mut self,
        source: Resource<Source>,
        session: String,
    ) -> wasmtime::Result<()> {
        current::HostSource::record_session(self, source, session)
    }

    fn acknowledge(&mut self, source: Resource<Source>, offset: u64) -> wasmtime::Result<()> {
        current::HostSource::acknowledge(self, source, offset)
    }

    fn drop(&mut self, source: Resource<Source>) -> wasmtime::Result<()> {
        current::HostSource::drop(self, source)
    }
}
