//! What one plugin call runs inside: the store's data.
//!
//! Nothing is granted by default: the WASI context has no preopened
//! directories, no environment, no arguments, no sockets and no name lookup;
//! standard output and error are dropped. The network is `wasi:http` through
//! the host's hook ([`PluginHttp`]). Memory is capped by a limiter, and guest
//! code that runs too long without coming back to the host is stopped by the
//! epoch deadline; both leave a mark here so the host can say which limit a
//! failed call hit.

use crate::plugin::network::PluginHttp;
use crate::plugin::transfer::JobContext;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Which limit stopped a call, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Deadline,
    Memory,
    Cancelled,
}

/// The data of one plugin call's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    pub http: PluginHttp,
    pub(crate) plugin: String,
    pub(crate) job: JobContext,
    memory_limit: usize,
    deadline: Duration,
    /// When guest code last started running without the host in between.
    guest_since: Option<Instant>,
    /// Set while the epoch callback runs (the runtime reports it as a host call).
    in_epoch_callback: bool,
    pub limit_hit: Option<LimitHit>,
}

impl PluginState {
    pub fn new(
        plugin: &str,
        job: JobContext,
        http: PluginHttp,
        memory_limit: usize,
        deadline: Duration,
    ) -> Self {
        PluginState {
            // Nothing granted: no dirs, env, args, sockets, or name lookup.
            wasi: WasiCtx::builder()
                .allow_ip_name_lookup(false)
                .allow_tcp(false)
                .allow_udp(false)
                .build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http,
            plugin: plugin.to_string(),
            job,
            memory_limit,
            deadline,
            guest_since: None,
            in_epoch_callback: false,
            limit_hit: None,
        }
    }

    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Writes a plugin's log line, tagged with the plugin and the job: one
    /// line, cut to 1,024 characters.
    pub(crate) fn log_line(&self, level: tracing::Level, message: &str) {
        let (plugin, job) = (&self.plugin, &self.job.job_id);
        let message = crate::plugin::transfer::clean_message(message);
        match level {
            tracing::Level::TRACE => tracing::trace!(%plugin, %job, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(%plugin, %job, "{message}"),
            tracing::Level::INFO => tracing::info!(%plugin, %job, "{message}"),
            tracing::Level::WARN => tracing::warn!(%plugin, %job, "{message}"),
            tracing::Level::ERROR => tracing::error!(%plugin, %job, "{message}"),
        }
    }

    /// The call hook: notes when guest code last came back from the host.
    ///
    /// Entering the host does not clear the mark: the epoch callback itself
    /// runs as a host call, and a guest blocked in a real host call is never
    /// interrupted (it resets the mark when the host call returns).
    pub fn on_transition(&mut self, hook: wasmtime::CallHook) {
        use wasmtime::CallHook::*;
        match hook {
            // The return from the epoch callback is not a return from real host work.
            ReturningFromHost if self.in_epoch_callback => self.in_epoch_callback = false,
            CallingWasm | ReturningFromHost => self.guest_since = Some(Instant::now()),
            ReturningFromWasm => self.guest_since = None,
            CallingHost => {}
        }
    }

    /// The epoch callback: stops guest code that has run past the deadline
    /// without coming back to the host, or whose job was cancelled.
    pub fn on_epoch(
        mut store: StoreContextMut<'_, PluginState>,
    ) -> wasmtime::Result<UpdateDeadline> {
        let state = store.data_mut();
        state.in_epoch_callback = true;
        if state.job.cancel.is_cancelled() {
            state.limit_hit = Some(LimitHit::Cancelled);
            return Err(wasmtime::format_err!("the call was cancelled"));
        }
        if state
            .guest_since
            .is_some_and(|since| since.elapsed() > state.deadline)
        {
            state.limit_hit = Some(LimitHit::Deadline);
            return Err(wasmtime::format_err!(
                "guest code ran for more than {:?} without returning to the host",
                state.deadline
            ));
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

impl ResourceLimiter for PluginState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.limit_hit = Some(LimitHit::Memory);
            return Err(wasmtime::format_err!(
                "the plugin asked for {desired} bytes of memory; its limit is {}",
                self.memory_limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}
