//! What one plugin call runs inside: the store's data.
//!
//! Nothing is granted by default: the WASI context has no preopened
//! directories, no environment, no arguments, no sockets and no name lookup;
//! standard output and error are dropped. The network is `wasi:http` through
//! the host's hook ([`PluginHttp`]). Memory is capped by a limiter, and guest
//! code that runs too long without coming back to the host is stopped by the
//! epoch deadline; both leave a mark here so the host can say which limit a
//! failed call hit.
//!
//! The deadline alone is reset by every host call, so every call also has a
//! budget the plugin cannot reset ([`SandboxLimits::call_cpu`]): the time its
//! own code and its quick host calls (those that return within
//! [`QUICK_HOST_CALL`], that is, did not wait for I/O) take, summed over the
//! whole call. A call at load time has a plain wall clock instead. The host
//! memory a call can make the host hold is bounded too: the resource table,
//! `wasi:http` header fields, core instances, memories and tables, and the
//! log lines it may write.

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
    /// The call's busy time or wall clock ([`SandboxLimits`]).
    CallBudget,
    Memory,
    Cancelled,
}

/// A host call that returns within this long did host work for the plugin
/// rather than wait for I/O, and counts in the call's busy time.
pub const QUICK_HOST_CALL: Duration = Duration::from_millis(1);

/// The host's bounds on every plugin call, whatever the plugin's manifest
/// says (the operator sets them in `[plugins]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// The busy time (guest code and quick host calls) one call may use.
    pub call_cpu: Duration,
    /// The wall clock of a call the host makes while loading a plugin.
    pub load_call: Duration,
    /// Entries in the call's resource table (streams, fields, requests...).
    pub table_entries: usize,
    /// Bytes of one `wasi:http` fields resource (all its names and values).
    pub header_bytes: usize,
    /// Outgoing requests one call may have in flight at once.
    pub requests_in_flight: usize,
    /// Core instances, memories and tables of one instantiation.
    pub instances: usize,
    pub memories: usize,
    pub tables: usize,
    /// Log lines a call may write at once, and how many more per second.
    pub log_burst: u32,
    pub log_per_second: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            call_cpu: Duration::from_secs(900),
            load_call: Duration::from_secs(5),
            table_entries: 1024,
            header_bytes: 32 * 1024,
            requests_in_flight: 16,
            instances: 64,
            memories: 4,
            tables: 64,
            log_burst: 100,
            log_per_second: 10,
        }
    }
}

/// The data of one plugin call's store.
pub struct PluginState {
    wasi: WasiCtx,
    /// The end of the call's standard error (a panic's message), for traps.
    pub(crate) stderr: crate::plugin::stderr::StderrTail,
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
    limits: SandboxLimits,
    /// The busy time of this call so far, and since when it is running
    /// (guest code) or in a host call.
    busy: Duration,
    running_since: Option<Instant>,
    host_since: Option<Instant>,
    /// When the call began, for a call with a wall clock (load time).
    wall_clock: Option<(Instant, Duration)>,
    /// Log lines left, when they were last refilled, and lines dropped.
    log_tokens: f64,
    log_refilled: Instant,
    pub(crate) log_dropped: u64,
}

impl PluginState {
    pub fn new(
        plugin: &str,
        job: JobContext,
        http: PluginHttp,
        memory_limit: usize,
        deadline: Duration,
        limits: SandboxLimits,
    ) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.table_entries);
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(limits.header_bytes);
        let stderr = crate::plugin::stderr::StderrTail::new();
        PluginState {
            // Nothing granted: no dirs, env, args, sockets, or name lookup;
            // standard error is kept (bounded) only to explain a trap.
            wasi: WasiCtx::builder()
                .stderr(stderr.clone())
                .allow_ip_name_lookup(false)
                .allow_tcp(false)
                .allow_udp(false)
                .build(),
            stderr,
            table,
            http_ctx,
            http,
            plugin: plugin.to_string(),
            job,
            memory_limit,
            deadline,
            guest_since: None,
            in_epoch_callback: false,
            limit_hit: None,
            limits,
            busy: Duration::ZERO,
            running_since: None,
            host_since: None,
            wall_clock: None,
            log_tokens: f64::from(limits.log_burst),
            log_refilled: Instant::now(),
            log_dropped: 0,
        }
    }

    /// Gives this call a wall clock of the host's load-time bound.
    pub fn set_load_call(&mut self) {
        self.wall_clock = Some((Instant::now(), self.limits.load_call));
    }

    /// The host's bounds this call runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The busy time of the call so far.
    fn busy_now(&self) -> Duration {
        self.busy + self.running_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Whether a log line may be written now (the rate limit's bucket).
    fn take_log_token(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.log_refilled).as_secs_f64()
            * f64::from(self.limits.log_per_second);
        self.log_tokens = (self.log_tokens + refill).min(f64::from(self.limits.log_burst));
        self.log_refilled = now;
        if self.log_tokens >= 1.0 {
            self.log_tokens -= 1.0;
            true
        } else {
            self.log_dropped += 1;
            false
        }
    }

    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Writes a plugin's log line, tagged with the plugin and the job: one
    /// line, cut to 1,024 characters, within the call's log rate (lines over
    /// it are dropped and counted, and the count is logged once, after the
    /// call).
    pub(crate) fn log_line(&mut self, level: tracing::Level, message: &str) {
        if !self.take_log_token() {
            return;
        }
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
    ///
    /// It also sums the call's busy time: guest code, and host calls that
    /// came back within [`QUICK_HOST_CALL`] (the epoch callback's own time
    /// is counted too, which only makes the budget stricter).
    pub fn on_transition(&mut self, hook: wasmtime::CallHook) {
        use wasmtime::CallHook::*;
        let now = Instant::now();
        match hook {
            CallingWasm => self.running_since = Some(now),
            ReturningFromWasm => {
                self.busy += self
                    .running_since
                    .take()
                    .map_or(Duration::ZERO, |t| now - t);
            }
            CallingHost => {
                self.busy += self
                    .running_since
                    .take()
                    .map_or(Duration::ZERO, |t| now - t);
                self.host_since = Some(now);
            }
            ReturningFromHost => {
                let in_host = self.host_since.take().map_or(Duration::ZERO, |t| now - t);
                if in_host < QUICK_HOST_CALL {
                    self.busy += in_host;
                }
                self.running_since = Some(now);
            }
        }
        match hook {
            // The return from the epoch callback is not a return from real host work.
            ReturningFromHost if self.in_epoch_callback => self.in_epoch_callback = false,
            CallingWasm | ReturningFromHost => self.guest_since = Some(now),
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
        if let Some((began, limit)) = state.wall_clock
            && began.elapsed() > limit
        {
            state.limit_hit = Some(LimitHit::CallBudget);
            return Err(wasmtime::format_err!(
                "the call ran for more than its {limit:?} at load time"
            ));
        }
        let busy = state.busy_now();
        if busy > state.limits.call_cpu {
            state.limit_hit = Some(LimitHit::CallBudget);
            return Err(wasmtime::format_err!(
                "the call was busy for {busy:?}, more than its budget of {:?}",
                state.limits.call_cpu
            ));
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

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }

    fn tables(&self) -> usize {
        self.limits.tables
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
