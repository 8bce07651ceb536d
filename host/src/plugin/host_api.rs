//! What the host gives a plugin: `ferry:transfer/host@0.2.0`, implemented
//! over the store's data and the host objects of `streams`.

use crate::error::TransferError;
use crate::plugin::bindings::v0_2::ferry::transfer::{host, types};
use crate::plugin::sandbox::PluginState;
use crate::plugin::streams::{Destination, ReplyFile, ReplySink, Source};
use crate::plugin::transfer::{RemoteInfo, ReplyHead};
use wasmtime::component::Resource;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

type Opened<T> = wasmtime::Result<Result<Resource<T>, types::TransferError>>;

impl PluginState {
    /// Puts a stream the host opened in the table, or passes its refusal on.
    pub(crate) fn push_stream<T: Send + 'static>(
        &mut self,
        opened: Result<T, TransferError>,
    ) -> wasmtime::Result<Result<Resource<T>, TransferError>> {
        match opened {
            Ok(stream) => Ok(Ok(self.table().push(stream)?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

/// A host stream for a 0.2 plugin.
fn opened<T>(pushed: wasmtime::Result<Result<Resource<T>, TransferError>>) -> Opened<T> {
    Ok(pushed?.map_err(Into::into))
}

/// The tracing level of a plugin's log level.
fn level(level: types::LogLevel) -> tracing::Level {
    match level {
        types::LogLevel::Trace => tracing::Level::TRACE,
        types::LogLevel::Debug => tracing::Level::DEBUG,
        types::LogLevel::Info => tracing::Level::INFO,
        types::LogLevel::Warn => tracing::Level::WARN,
        types::LogLevel::Error => tracing::Level::ERROR,
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level_: types::LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_line(level(level_), &message);
        Ok(())
    }

    fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.job.cancel.is_cancelled())
    }
}

impl host::HostDestination for PluginState {
    fn begin(
        &mut self,
        destination: Resource<Destination>,
        info: types::RemoteInfo,
        from: u64,
    ) -> Opened<DynOutputStream> {
        let info = self
            .http
            .with_served_digest(RemoteInfo::from(info).sanitized());
        let sink = self
            .table()
            .get_mut(&destination)?
            .begin(info, from)
            .map(|sink| Box::new(sink) as DynOutputStream);
        opened(self.push_stream(sink))
    }

    fn drop(&mut self, destination: Resource<Destination>) -> wasmtime::Result<()> {
        self.table().delete(destination)?;
        Ok(())
    }
}

impl host::HostSource for PluginState {
    fn size(&mut self, source: Resource<Source>) -> wasmtime::Result<u64> {
        Ok(self.table().get(&source)?.size())
    }

    fn open(&mut self, source: Resource<Source>, offset: u64) -> Opened<DynInputStream> {
        let stream = self
            .table()
            .get(&source)?
            .open(offset)
            .map(|stream| Box::new(stream) as DynInputStream);
        opened(self.push_stream(stream))
    }

    fn record_session(
        &mut self,
        source: Resource<Source>,
        session: String,
    ) -> wasmtime::Result<()> {
        if !crate::plugin::transfer::is_clean_token(&session, crate::plugin::transfer::MAX_URL) {
            // A session the host could not hand back as it was is not kept:
            // the upload starts a new session when it resumes.
            self.log_line(
                tracing::Level::WARN,
                &format!(
                    "upload session of {} bytes not recorded: longer than {} bytes or holds control characters",
                    session.len(),
                    crate::plugin::transfer::MAX_URL
                ),
            );
            return Ok(());
        }
        self.table().get(&source)?.record_session(session);
        Ok(())
    }

    fn acknowledge(&mut self, source: Resource<Source>, offset: u64) -> wasmtime::Result<()> {
        self.table().get(&source)?.acknowledge(offset);
        Ok(())
    }

    fn drop(&mut self, source: Resource<Source>) -> wasmtime::Result<()> {
        self.table().delete(source)?;
        Ok(())
    }
}

impl host::HostReplySink for PluginState {
    fn begin(
        &mut self,
        sink: Resource<ReplySink>,
        head: types::ReplyHead,
    ) -> Opened<DynOutputStream> {
        let stream = self
            .table()
            .get_mut(&sink)?
            .begin(ReplyHead::from(head).sanitized())
            .map(|stream| Box::new(stream) as DynOutputStream);
        opened(self.push_stream(stream))
    }

    fn drop(&mut self, sink: Resource<ReplySink>) -> wasmtime::Result<()> {
        self.table().delete(sink)?;
        Ok(())
    }
}

impl host::HostReplyFile for PluginState {
    fn open(&mut self, file: Resource<ReplyFile>) -> Opened<DynOutputStream> {
        let stream = self
            .table()
            .get_mut(&file)?
            .open()
            .map(|stream| Box::new(stream) as DynOutputStream);
        opened(self.push_stream(stream))
    }

    fn drop(&mut self, file: Resource<ReplyFile>) -> wasmtime::Result<()> {
        self.table().delete(file)?;
        Ok(())
    }
}
