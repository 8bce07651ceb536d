//! The traits a plugin implements, one per interface of the contract, and
//! the macros that export them.
//!
//! Each trait mirrors one export interface of `ferry:transfer@0.2.0`, with
//! defaults for what a plugin may leave out. The macros adapt a type that
//! implements a trait to the generated bindings, so a plugin never names a
//! generated module.

use crate::{
    Destination, DownloadRequest, InputStream, JobContext, ReplyContext, ReplyFile, ReplyHead,
    ReplySink, Source, TransferError, UploadRequest,
};

/// A transport's downloads: the `download` interface. Export it with
/// [`export_download!`](crate::export_download).
pub trait Download {
    /// Downloads `request.url` into `destination`, from `request.offset`
    /// (up to `request.end` when it is set).
    ///
    /// Announce the response with `destination.begin` (at `request.offset`
    /// when the server honoured the range, at zero when it sends the whole
    /// resource), write the body into the stream it returns, and return once
    /// the body is whole. A body that broke off is a transient
    /// [`TransferError::connection_dropped`]: the host keeps the bytes
    /// written and asks again from there. [`crate::http::download`] does all
    /// of this for HTTP.
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError>;
}

/// A transport's uploads: the `upload` interface. Export it with
/// [`export_upload!`](crate::export_upload), or, together with
/// [`UploadReply`], with [`export_upload_reply!`](crate::export_upload_reply).
pub trait Upload {
    /// Uploads `source` to `request.url`, resuming `request.session` when it
    /// is given and the protocol allows it.
    ///
    /// Record a new server session with `source.record_session` and what
    /// the server durably holds with `source.acknowledge`. Return once the
    /// server holds the whole source. A recorded session the server no
    /// longer knows is [`TransferError::session_expired`]: the host forgets
    /// it and calls again without one.
    fn upload(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
    ) -> Result<(), TransferError>;

    /// Cancels an unfinished upload session on the server; a session the
    /// server no longer knows counts as cancelled.
    ///
    /// The default is for protocols without server-side sessions: there is
    /// nothing to cancel, and it returns `Ok(())`.
    fn cancel_upload(job: JobContext, url: String, session: String) -> Result<(), TransferError> {
        let _ = (job, url, session);
        Ok(())
    }
}

/// A transport's uploads that hand the host the server's reply: the
/// `upload-reply` interface. A type that implements it implements [`Upload`]
/// too, for plain uploads and cancels; [`export_upload_reply!`](crate::export_upload_reply)
/// exports both interfaces.
pub trait UploadReply: Upload {
    /// Uploads like [`Upload::upload`], then writes the server's final
    /// answer into `reply`: `reply.begin` with the status and headers, then
    /// the body into the stream it returns (of any size;
    /// [`crate::http::Response::write_reply`] does it for HTTP).
    fn upload_with_reply(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
        reply: &ReplySink,
    ) -> Result<(), TransferError>;
}

/// A reply processor: the `reply-processing` interface. Export it with
/// [`export_reply_processor!`](crate::export_reply_processor).
pub trait ReplyProcessor {
    /// Turns an upload's reply into what the job's owner receives.
    ///
    /// `body` reads the reply body as the server sent it, whole
    /// ([`crate::stream::read_to_end`] reads it into memory). The returned
    /// bytes are the job's reply data (at most 1 MiB); a processor may also
    /// replace the reply file by writing through `file.open()`, and leaves
    /// the raw reply in place when it does not.
    fn process(
        context: ReplyContext,
        head: ReplyHead,
        body: InputStream,
        file: &ReplyFile,
    ) -> Result<Vec<u8>, TransferError>;
}

impl<T: Download> crate::__download::exports::ferry::transfer::download::Guest for T {
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        <T as Download>::download(job, request, destination)
    }
}

impl<T: Upload> crate::__upload::exports::ferry::transfer::upload::Guest for T {
    fn upload(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
    ) -> Result<(), TransferError> {
        <T as Upload>::upload(job, request, source)
    }

    fn cancel_upload(job: JobContext, url: String, session: String) -> Result<(), TransferError> {
        <T as Upload>::cancel_upload(job, url, session)
    }
}

impl<T: UploadReply> crate::__upload_reply::exports::ferry::transfer::upload_reply::Guest for T {
    fn upload_with_reply(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
        reply: &ReplySink,
    ) -> Result<(), TransferError> {
        <T as UploadReply>::upload_with_reply(job, request, source, reply)
    }
}

impl<T: ReplyProcessor> crate::__reply_processing::exports::ferry::transfer::reply_processing::Guest
    for T
{
    fn process(
        context: ReplyContext,
        head: ReplyHead,
        body: InputStream,
        file: &ReplyFile,
    ) -> Result<Vec<u8>, TransferError> {
        <T as ReplyProcessor>::process(context, head, body, file)
    }
}

/// Exports a type implementing [`Download`] as the plugin's
/// `ferry:transfer/download@0.2.0`: `ferry_guest_sdk::export_download!(MyTransport);`
/// once in the plugin crate (see the crate's example).
#[macro_export]
macro_rules! export_download {
    ($plugin:ident) => {
        const _: () = {
            // Names the trait in the error when `$plugin` does not implement it.
            fn implements<T: $crate::Download>() {}
            let _ = implements::<$plugin>;
        };
        $crate::__download::__export_download_glue!($plugin with_types_in $crate::__download);
    };
}

/// Exports a type implementing [`Upload`] as the plugin's
/// `ferry:transfer/upload@0.2.0`. For a type that also implements
/// [`UploadReply`], use [`export_upload_reply!`](crate::export_upload_reply)
/// instead, which exports both.
#[macro_export]
macro_rules! export_upload {
    ($plugin:ident) => {
        const _: () = {
            // Names the trait in the error when `$plugin` does not implement it.
            fn implements<T: $crate::Upload>() {}
            let _ = implements::<$plugin>;
        };
        $crate::__upload::__export_upload_glue!($plugin with_types_in $crate::__upload);
    };
}

/// Exports a type implementing [`UploadReply`] (and so [`Upload`]) as the
/// plugin's `ferry:transfer/upload@0.2.0` AND
/// `ferry:transfer/upload-reply@0.2.0`, as the contract asks of a plugin
/// that returns replies. Do not use [`export_upload!`](crate::export_upload)
/// beside it.
#[macro_export]
macro_rules! export_upload_reply {
    ($plugin:ident) => {
        const _: () = {
            // Names the trait in the error when `$plugin` does not implement it.
            fn implements<T: $crate::UploadReply>() {}
            let _ = implements::<$plugin>;
        };
        $crate::__upload::__export_upload_glue!($plugin with_types_in $crate::__upload);
        $crate::__upload_reply::__export_upload_reply_glue!($plugin with_types_in $crate::__upload_reply);
    };
}

/// Exports a type implementing [`ReplyProcessor`] as the plugin's
/// `ferry:transfer/reply-processing@0.2.0`.
#[macro_export]
macro_rules! export_reply_processor {
    ($plugin:ident) => {
        const _: () = {
            // Names the trait in the error when `$plugin` does not implement it.
            fn implements<T: $crate::ReplyProcessor>() {}
            let _ = implements::<$plugin>;
        };
        $crate::__reply_processing::__export_reply_processing_glue!($plugin with_types_in $crate::__reply_processing);
    };
}
