//! Acting for a user: who a uid is (primary group, groups), whether that
//! user may write a directory or read a file, and handing files over to them.
//!
//! A daemon running as root carries out jobs for many users. It must never
//! lend them its own rights: a user may only name destinations they could
//! write themselves, temporary files belong to the job's owner, and commands
//! run with the owner's uid and gid. This module is where that is decided.

use crate::error::TransferError;
use nix::unistd::{Gid, Group, Uid, User};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A Unix user as the daemon acts for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The primary group and every supplementary group.
    pub groups: Vec<u32>,
    pub name: Option<String>,
}

impl Identity {
    /// Looks `uid` up in the user database. A uid with no entry gets the
    /// overflow group ([`NO_GROUP`]) and no supplementary group (it can still
    /// own jobs): never a group that happens to share its number.
    pub fn of(uid: u32) -> Identity {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => {
                let gid = user.gid.as_raw();
                let mut groups = vec![gid];
                if let Ok(name) = std::ffi::CString::new(user.name.clone())
                    && let Ok(list) = nix::unistd::getgrouplist(&name, user.gid)
                {
                    groups.extend(list.into_iter().map(Gid::as_raw));
                }
                groups.sort_unstable();
                groups.dedup();
                Identity {
                    uid,
                    gid,
                    groups,
                    name: Some(user.name),
                }
            }
            _ => Identity {
                uid,
                gid: NO_GROUP,
                groups: vec![NO_GROUP],
                name: None,
            },
        }
    }

    /// The caller at the other end of a Unix socket, as the kernel says:
    /// uid and gid from the socket's credentials (`SO_PEERCRED`), the
    /// supplementary groups of process `pid` as it runs (`/proc/PID/status`,
    /// read when it connected; only if that process still has uid `uid`).
    /// When they cannot be read, the groups are the user database's (plus
    /// `gid`). The name is the user database's.
    pub fn of_peer(uid: u32, gid: u32, pid: Option<u32>) -> Identity {
        let known = Identity::of(uid);
        let mut groups = match pid.and_then(ProcessStatus::of).filter(|s| s.uid == uid) {
            Some(status) => status.groups,
            None => {
                tracing::debug!(uid, "the caller's groups come from the user database");
                known.groups
            }
        };
        groups.push(gid);
        groups.sort_unstable();
        groups.dedup();
        Identity {
            uid,
            gid,
            groups,
            name: known.name,
        }
    }

    /// Who a job of `uid` acts as: the user database's identity now, with
    /// only the groups the process that created the job also had
    /// (`recorded`): a group the user lost since, or one the process had
    /// dropped, lends nothing. The gid is the recorded one if the user still
    /// has it, else the database's if the process had it, else [`NO_GROUP`].
    pub fn acting_for(uid: u32, recorded: Option<&crate::job::OwnerGroups>) -> Identity {
        let known = Identity::of(uid);
        let Some(recorded) = recorded else {
            return known;
        };
        let had = |g: &u32| *g == recorded.gid || recorded.groups.contains(g);
        let gid = if known.groups.contains(&recorded.gid) {
            recorded.gid
        } else if had(&known.gid) {
            known.gid
        } else {
            NO_GROUP
        };
        let groups = known.groups.iter().copied().filter(had).collect();
        Identity {
            uid,
            gid,
            groups,
            name: known.name,
        }
    }

    /// Whether this user belongs to the group named `group`.
    pub fn in_group(&self, group: &str) -> bool {
        match Group::from_name(group) {
            Ok(Some(g)) => {
                self.groups.contains(&g.gid.as_raw())
                    || self.name.as_ref().is_some_and(|n| g.mem.contains(n))
            }
            _ => false,
        }
    }

    /// Whether the mode bits of `meta` grant this user `want` (a mask of
    /// 4 = read, 2 = write, 1 = search/execute). Root is granted everything.
    fn granted(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            (mode >> 6) & 7
        } else if self.groups.contains(&meta.gid()) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        bits & want == want
    }

    /// Whether every directory above `path` can be searched by this user.
    /// Each directory is looked at only once its parent is known to be
    /// searchable, so a refusal says nothing of what lies beyond it.
    fn may_reach(&self, path: &Path) -> Result<(), AccessError> {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors {
            let meta = std::fs::metadata(dir).map_err(|e| AccessError::Missing {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            if !self.granted(&meta, 1) {
                return Err(AccessError::Denied(dir.display().to_string()));
            }
        }
        Ok(())
    }

    /// Whether this user may create files in directory `dir`.
    /// The way there is checked first: whether `dir` exists is told only to
    /// a user who could find it out.
    pub fn check_writable_dir(&self, dir: &Path) -> Result<(), AccessError> {
        self.may_reach(dir)?;
        let meta = std::fs::metadata(dir).map_err(|e| AccessError::Missing {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(AccessError::NotADirectory(dir.display().to_string()));
        }
        if !self.granted(&meta, 2 | 1) {
            return Err(AccessError::Denied(dir.display().to_string()));
        }
        Ok(())
    }

    /// Whether this user may read the regular file `path`.
    /// The way there is checked first, as for [`Self::check_writable_dir`].
    pub fn check_readable_file(&self, path: &Path) -> Result<(), AccessError> {
        self.may_reach(path)?;
        let meta = std::fs::metadata(path).map_err(|e| AccessError::Missing {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if !self.granted(&meta, 4) {
            return Err(AccessError::Denied(path.display().to_string()));
        }
        Ok(())
    }
}

/// What the kernel says of a running process (`/proc/PID/status`): the
/// caller's own groups and umask, rather than what the user database says
/// they would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The effective uid.
    pub uid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
    /// The umask (Linux 4.7 and later say it).
    pub umask: Option<u32>,
}

impl ProcessStatus {
    /// Process `pid`'s status, if it can be read.
    pub fn of(pid: u32) -> Option<ProcessStatus> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        ProcessStatus::parse(&text)
    }

    /// Parses the text of `/proc/PID/status`.
    pub fn parse(text: &str) -> Option<ProcessStatus> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let uid = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
        let groups = field("Groups")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        let umask = field("Umask").and_then(|m| u32::from_str_radix(m, 8).ok());
        Some(ProcessStatus { uid, groups, umask })
    }
}

/// Why a user may not use a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("{path} does not exist or cannot be read: {reason}")]
    Missing { path: String, reason: String },
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("you may not use {0}")]
    Denied(String),
}

/// The group of a uid the user database does not know (the kernel's
/// overflow gid, `nogroup`).
pub const NO_GROUP: u32 = 65534;

/// Whether this process runs as root (and so must act for others).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Gives a file the daemon created for job owner `owner` to that owner
/// (when the daemon runs as root and the owner is someone else).
pub fn give_to_owner(file: &std::fs::File, owner: u32) -> std::io::Result<()> {
    if !running_as_root() || owner == 0 {
        return Ok(());
    }
    let who = Identity::of(owner);
    std::os::unix::fs::fchown(file, Some(who.uid), Some(who.gid))
}

/// Runs `op` on this thread with the filesystem identity (fsuid and fsgid)
/// of job owner `owner`, when the daemon runs as root. The kernel then checks
/// every path `op` touches as that user, at the moment it touches it: a
/// directory or symlink swapped in after the job was added cannot lend the
/// daemon its rights. `op` must not await (the identity is the thread's).
/// The thread's supplementary groups become the owner's too (Linux keeps
/// them per thread), so the daemon's own groups lend nothing either.
///
/// It fails closed: every switch is verified (the kernel's `setfsuid` does
/// not report failure, so the identity is read back), and when one did not
/// take, `op` does not run and the operation fails with `identity-failed`.
pub fn as_owner<T>(
    owner: u32,
    op: impl FnOnce() -> Result<T, TransferError>,
) -> Result<T, TransferError> {
    if !running_as_root() || owner == 0 {
        return op();
    }
    as_identity(&Identity::of(owner), op)
}

/// [`as_owner`] with the identity `who` (see [`Identity::acting_for`]).
pub fn as_identity<T>(
    who: &Identity,
    op: impl FnOnce() -> Result<T, TransferError>,
) -> Result<T, TransferError> {
    let owner = who.uid;
    if !running_as_root() || owner == 0 {
        return op();
    }
    let failed = |what: &str| {
        TransferError::local_file(
            "identity-failed",
            &std::io::Error::other(format!("cannot act as uid {owner}: {what}")),
            "the daemon's identity switch",
        )
    };
    /// Puts the daemon's own filesystem identity back, even on a panic.
    struct Restore(Option<Vec<rustix::thread::Gid>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(groups) = &self.0
                && let Err(e) = rustix::thread::set_thread_groups(groups)
            {
                tracing::error!("cannot restore the daemon's groups: {e}");
            }
            nix::unistd::setfsuid(Uid::from_raw(0));
            nix::unistd::setfsgid(Gid::from_raw(0));
        }
    }
    let daemon_groups: Vec<rustix::thread::Gid> = nix::unistd::getgroups()
        .map_err(|e| failed(&format!("the daemon's groups cannot be read: {e}")))?
        .into_iter()
        .map(|g| rustix::thread::Gid::from_raw(g.as_raw()))
        .collect();
    let owner_groups: Vec<rustix::thread::Gid> = who
        .groups
        .iter()
        .map(|&g| rustix::thread::Gid::from_raw(g))
        .collect();
    rustix::thread::set_thread_groups(&owner_groups)
        .map_err(|e| failed(&format!("the owner's groups cannot be taken: {e}")))?;
    let _restore = Restore(Some(daemon_groups));
    // An invalid id changes nothing and returns the current one.
    nix::unistd::setfsgid(Gid::from_raw(who.gid));
    let fsgid = nix::unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw();
    nix::unistd::setfsuid(Uid::from_raw(who.uid));
    let fsuid = nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw();
    if fsgid != who.gid || fsuid != who.uid {
        return Err(failed(&format!(
            "the filesystem identity is {fsuid}:{fsgid}, not {}:{}",
            who.uid, who.gid
        )));
    }
    op()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mode_bits_decide_for_other_users_and_root_may_do_anything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let stranger = Identity {
            uid: meta.uid().wrapping_add(4242),
            gid: 4242,
            groups: vec![4242],
            name: None,
        };
        let root = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            name: None,
        };
        if meta.uid() != stranger.uid {
            assert!(matches!(
                stranger.check_writable_dir(dir.path()),
                Err(AccessError::Denied(_))
            ));
        }
        assert_eq!(root.check_writable_dir(dir.path()), Ok(()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(stranger.check_writable_dir(dir.path()), Ok(()));
        assert!(matches!(
            stranger.check_writable_dir(&dir.path().join("missing")),
            Err(AccessError::Missing { .. })
        ));
    }

    #[test]
    fn a_path_behind_a_closed_directory_is_refused_the_same_whether_it_exists_or_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exists")).unwrap();
        std::fs::write(dir.path().join("exists/file"), b"x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let stranger = Identity {
            uid: meta.uid().wrapping_add(4242),
            gid: 4242,
            groups: vec![4242],
            name: None,
        };
        let closed = dir.path().display().to_string();
        for (there, missing) in [("exists", "missing"), ("exists/file", "missing/file")] {
            let (there, missing) = (dir.path().join(there), dir.path().join(missing));
            assert_eq!(
                stranger.check_writable_dir(&there),
                Err(AccessError::Denied(closed.clone()))
            );
            assert_eq!(
                stranger.check_writable_dir(&missing),
                Err(AccessError::Denied(closed.clone()))
            );
            assert_eq!(
                stranger.check_readable_file(&there),
                Err(AccessError::Denied(closed.clone()))
            );
            assert_eq!(
                stranger.check_readable_file(&missing),
                Err(AccessError::Denied(closed.clone()))
            );
        }
    }

    #[test]
    fn a_process_status_gives_its_effective_uid_groups_and_umask() {
        let text = "Name:\tsh\nUmask:\t0027\nState:\tS (sleeping)\n\
                    Uid:\t1000\t1001\t1001\t1001\nGid:\t1000\t1000\t1000\t1000\n\
                    FDSize:\t64\nGroups:\t24 27 1000 \n";
        assert_eq!(
            ProcessStatus::parse(text),
            Some(ProcessStatus {
                uid: 1001,
                groups: vec![24, 27, 1000],
                umask: Some(0o027),
            })
        );
        let none = "Name:\tsh\nUid:\t5\t5\t5\t5\nGroups:\t\n";
        assert_eq!(
            ProcessStatus::parse(none),
            Some(ProcessStatus {
                uid: 5,
                groups: vec![],
                umask: None,
            })
        );
        let me = ProcessStatus::of(std::process::id()).unwrap();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert!(me.umask.is_some(), "the kernel says a process's umask");
    }

    #[test]
    fn a_job_acts_with_no_group_its_creating_process_lacked() {
        use crate::job::OwnerGroups;
        let me = nix::unistd::geteuid().as_raw();
        let known = Identity::of(me);
        assert_eq!(Identity::acting_for(me, None), known);
        let none = OwnerGroups {
            gid: 4_000_000_001,
            groups: vec![4_000_000_002],
        };
        let acting = Identity::acting_for(me, Some(&none));
        assert_eq!((acting.gid, acting.groups), (NO_GROUP, vec![]));
        let all = OwnerGroups {
            gid: known.gid,
            groups: known.groups.clone(),
        };
        assert_eq!(Identity::acting_for(me, Some(&all)), known);
    }

    #[test]
    fn a_uid_without_an_entry_gets_no_real_group() {
        let unknown = Identity::of(3_999_999_999);
        assert_eq!(unknown.gid, NO_GROUP);
        assert_eq!(unknown.groups, vec![NO_GROUP]);
    }
}
