//! Throw-away Unix users and groups, for the end-to-end tests where the
//! attacker or the other party is another user: created with `useradd` and
//! `groupadd` (so only when the tests run as root), deleted on drop.

/// A throw-away Unix user, deleted on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// User `ferry-TAG-PID` in a group of their own and, as supplementary
    /// groups, `groups`; `None` when the user cannot be created (not root).
    pub fn create(tag: &str, groups: &[&str]) -> Option<TestUser> {
        let name = format!("ferry-{tag}-{}", std::process::id());
        let mut useradd = std::process::Command::new("useradd");
        useradd.args([
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if !groups.is_empty() {
            useradd.args(["--groups", &groups.join(",")]);
        }
        let status = useradd.arg(&name).status().ok()?;
        if !status.success() {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok()??;
        Some(TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

impl TestUser {
    /// Runs `f` on a thread of its own with this user's uid and gid, so
    /// what it connects to sees this user as the peer.
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        on_thread_as(self.uid, self.gid, f)
    }
}

/// Runs `f` on a thread of its own whose uid and gid are `uid` and `gid` (a
/// Linux thread's credentials are its own when changed by the raw system
/// calls; only root can change them).
pub fn on_thread_as<T: Send + 'static>(
    uid: u32,
    gid: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain system calls changing this thread's credentials.
        unsafe {
            assert_eq!(
                nix::libc::syscall(nix::libc::SYS_setresgid, gid, gid, gid),
                0
            );
            assert_eq!(
                nix::libc::syscall(nix::libc::SYS_setresuid, uid, uid, uid),
                0
            );
        }
        f()
    })
    .join()
    .expect("the thread ran")
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

/// A throw-away Unix group, deleted on drop.
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    /// Group `ferry-gTAG-PID`; `None` when it cannot be created.
    pub fn create(tag: &str) -> Option<TestGroup> {
        let name = format!("ferry-g{tag}-{}", std::process::id());
        let status = std::process::Command::new("groupadd")
            .arg(&name)
            .status()
            .ok()?;
        status.success().then_some(TestGroup { name })
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("groupdel")
            .arg(&self.name)
            .status();
    }
}
