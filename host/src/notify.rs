//! The notify command (SPEC §2, "Notifications"): a job's command, run as
//! the job's owner when the job reaches `transferred` or `error`, with
//! `FERRY_JOB_ID` and `FERRY_JOB_STATE` in its environment.
//!
//! It lives beside the engine rather than in it because running a program
//! for a user is the daemon's business: the command gets the owner's uid,
//! gid and groups (never the daemon's), a clean environment, and no
//! terminal. A command that fails is run again after the job's retry delay
//! while the job is still in the state that triggered it.

use crate::engine::{Caller, Engine};
use crate::events::{Event, EventKind};
use crate::identity::{Identity, running_as_root};
use crate::job::JobState;
use std::os::unix::process::CommandExt;
/// What stops the notifier ([`spawn`]).
pub use tokio_util::sync::CancellationToken;

/// Follows the engine's events and runs notify commands until `shutdown`.
/// It hears of every job reaching `transferred` or `error` however many
/// other events go by meanwhile (a lossless subscription: the broadcast
/// stream the API's event streams read may drop the oldest events).
pub fn spawn(engine: Engine, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let mut events = engine.subscribe_lossless(reaches_notify);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = shutdown.cancelled() => return,
            };
            let Some(event) = event else {
                return;
            };
            tokio::spawn(notify(
                engine.clone(),
                event.job.clone(),
                event.state,
                shutdown.clone(),
            ));
        }
    })
}

/// Whether `event` is a job reaching a state that runs its notify command.
fn reaches_notify(event: &Event) -> bool {
    matches!(event.kind, EventKind::State | EventKind::Error)
        && matches!(event.state, JobState::Transferred | JobState::Error)
}

const ANYONE: Caller = Caller {
    uid: 0,
    admin: true,
};

/// Runs job `id`'s command for `state`, again after the retry delay while
/// it fails and the job stays in `state`.
async fn notify(engine: Engine, id: String, state: JobState, shutdown: CancellationToken) {
    loop {
        let Ok(job) = engine.get(ANYONE, &id) else {
            return;
        };
        if job.state() != state {
            return;
        }
        let Some(command) = job.settings.notify_command.clone() else {
            return;
        };
        let who = Identity::acting_for(job.owner, job.owner_groups.as_ref());
        match run(&command, &id, state, &who).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(job = %id, "the notify command failed: {e}"),
        }
        let delay = job.settings.retry_delay;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Why a notify command failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot start it: {0}")]
    Spawn(std::io::Error),
    #[error("it exited with {0}")]
    Exit(std::process::ExitStatus),
}

/// Runs `command` through `/bin/sh -c` as `who` (a job's owner, with the
/// groups the job acts with: [`Identity::acting_for`]).
pub async fn run(
    command: &str,
    id: &str,
    state: JobState,
    who: &Identity,
) -> Result<(), NotifyError> {
    let owner = who.uid;
    let home = who
        .name
        .as_ref()
        .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
        .map(|u| u.dir)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| "/".into());
    let state_name = serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("FERRY_JOB_ID", id)
        .env("FERRY_JOB_STATE", state_name)
        .current_dir(&home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(name) = &who.name {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    if running_as_root() && owner != 0 {
        // The owner's groups, then gid, then uid (std's `uid` would drop
        // the supplementary groups altogether).
        let groups: Vec<nix::unistd::Gid> = who
            .groups
            .iter()
            .map(|&g| nix::unistd::Gid::from_raw(g))
            .collect();
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(who.uid),
            nix::unistd::Gid::from_raw(who.gid),
        );
        // SAFETY: between fork and exec the closure only makes the
        // setgroups, setgid and setuid system calls, on memory prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let status = cmd.status().await.map_err(NotifyError::Spawn)?;
    if status.success() {
        Ok(())
    } else {
        Err(NotifyError::Exit(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_command_sees_the_job_and_its_state_and_failures_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let command = format!(
            "echo \"$FERRY_JOB_ID $FERRY_JOB_STATE\" > '{}'",
            out.display()
        );
        let me = Identity::of(nix::unistd::geteuid().as_raw());
        run(&command, "j1", JobState::Transferred, &me)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "j1 transferred\n");
        assert!(matches!(
            run("exit 3", "j1", JobState::Error, &me).await,
            Err(NotifyError::Exit(_))
        ));
    }
}
