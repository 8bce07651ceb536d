//! Files and finalisation: where downloaded bytes live until `complete`.
//!
//! A download is written to a hidden temporary file in the destination's own
//! directory, created exclusively and never through a symbolic link. The
//! directory is held open by descriptor from then on, so a symlink swapped in
//! for the directory (or for the destination name) between `add` and
//! `complete` is never followed: the final rename happens inside the
//! directory that was checked, and replaces whatever entry has the
//! destination's name instead of writing through it. Finishing syncs the
//! file, renames it into place atomically, and syncs the directory. An
//! upload-reply job's reply file is kept the same way ([`ReplySpool`]).

use crate::error::{ErrorContext, TransferError};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A download's temporary file, bound to its destination directory.
#[derive(Debug)]
pub struct TempFile {
    dir: Arc<OwnedFd>,
    dir_path: PathBuf,
    temp_name: String,
    final_name: String,
    file: Arc<File>,
}

/// The hidden name of the temporary file of `final_name` for job `tag`.
pub fn temp_name(final_name: &str, tag: &str) -> String {
    format!(".{final_name}.{tag}.ferry-part")
}

/// The code of a temporary file that is not the job's own (see
/// [`TempFile::reopen`]).
pub const UNTRUSTED_TEMP: &str = "untrusted-temp-file";

fn untrusted(message: String) -> TransferError {
    TransferError::fatal(ErrorContext::LocalFile, UNTRUSTED_TEMP, message)
}

/// A fresh random tag for temporary names (64 bits, as hex): a name
/// nobody can guess before the file exists.
pub fn random_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Splits an absolute destination into its directory and file name.
fn split(destination: &Path) -> Result<(&Path, String), TransferError> {
    let invalid = |why: &str| {
        TransferError::fatal(
            ErrorContext::LocalFile,
            "invalid-local-path",
            format!("{}: {why}", destination.display()),
        )
    };
    if !destination.is_absolute() {
        return Err(invalid("the local path must be absolute"));
    }
    let name = destination
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid("the local path has no valid file name"))?;
    let dir = destination
        .parent()
        .ok_or_else(|| invalid("the local path has no directory"))?;
    Ok((dir, name.to_string()))
}

/// Opens a directory without following a symlink at its last component.
fn open_dir(dir: &Path) -> Result<OwnedFd, TransferError> {
    rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| {
        TransferError::local_file(
            "cannot-open-directory",
            &e.into(),
            &format!("{}", dir.display()),
        )
    })
}

impl TempFile {
    /// Creates the temporary file of `destination` for job `tag`:
    /// exclusively (an existing entry of that name is an error), never
    /// through a symlink, with the usual permissions (0666 less the umask).
    pub fn create(destination: &Path, tag: &str) -> Result<TempFile, TransferError> {
        let flags = OFlags::CREATE | OFlags::EXCL;
        TempFile::open(destination, tag, flags, Mode::from_raw_mode(0o666))?.map_err(|(e, path)| {
            TransferError::local_file("cannot-create-file", &e.into(), &path.display().to_string())
        })
    }

    /// Opens the existing temporary file of `destination` for job `tag`
    /// (after a restart), never through a symlink, and only if it is one
    /// this job could have made: a regular file with one link, belonging to
    /// job owner `owner` (to the daemon's user when the daemon is not root).
    /// Anything else at that name (a symlink, a hard link to another file, a
    /// file someone else planted) is [`UNTRUSTED_TEMP`], and never written.
    pub fn reopen(destination: &Path, tag: &str, owner: u32) -> Result<TempFile, TransferError> {
        // Non-blocking until it is known to be a regular file: opening a
        // planted FIFO or device must neither wait nor take a terminal.
        let temp = match TempFile::open(
            destination,
            tag,
            OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )? {
            Ok(temp) => temp,
            Err((rustix::io::Errno::LOOP, path)) => {
                return Err(untrusted(format!("{} is a symbolic link", path.display())));
            }
            Err((e, path)) => {
                return Err(TransferError::local_file(
                    "cannot-open-file",
                    &e.into(),
                    &path.display().to_string(),
                ));
            }
        };
        let failed = |e: rustix::io::Errno| {
            TransferError::local_file(
                "cannot-open-file",
                &e.into(),
                &temp.path().display().to_string(),
            )
        };
        let stat = rustix::fs::fstat(&*temp.file).map_err(failed)?;
        let expected = if crate::identity::running_as_root() {
            owner
        } else {
            nix::unistd::geteuid().as_raw()
        };
        let regular =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
        if !regular || stat.st_nlink != 1 || stat.st_uid != expected {
            return Err(untrusted(format!(
                "{} is not this job's temporary file ({}, {} link(s), owner {}, not {expected})",
                temp.path().display(),
                if regular {
                    "a regular file"
                } else {
                    "not a regular file"
                },
                stat.st_nlink,
                stat.st_uid,
            )));
        }
        rustix::fs::fcntl_setfl(&*temp.file, OFlags::empty()).map_err(failed)?;
        Ok(temp)
    }

    /// Opens the temporary name of `destination` for `tag` in its directory:
    /// the outer error is the directory's, the inner the file's own.
    fn open(
        destination: &Path,
        tag: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<Result<TempFile, (rustix::io::Errno, PathBuf)>, TransferError> {
        let (dir_path, final_name) = split(destination)?;
        let dir = open_dir(dir_path)?;
        let temp_name = temp_name(&final_name, tag);
        let flags = flags | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, temp_name.as_str(), flags, mode) {
            Ok(fd) => fd,
            Err(e) => return Ok(Err((e, dir_path.join(&temp_name)))),
        };
        Ok(Ok(TempFile {
            dir: Arc::new(dir),
            dir_path: dir_path.to_path_buf(),
            temp_name,
            final_name,
            file: Arc::new(File::from(fd)),
        }))
    }

    /// Gives the file the permissions `umask` leaves of 0666, whatever the
    /// daemon's own umask took away when it was created.
    pub fn apply_umask(&self, umask: u32) -> Result<(), TransferError> {
        let mode = Mode::from_raw_mode(0o666 & !umask);
        rustix::fs::fchmod(&*self.file, mode).map_err(|e| {
            TransferError::local_file(
                "cannot-create-file",
                &e.into(),
                &self.path().display().to_string(),
            )
        })
    }

    /// The open file, to hand to a plugin's destination.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Where the temporary file is (for messages; never reopened by path).
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.temp_name)
    }

    /// Makes the bytes written so far durable (before recording progress).
    pub fn sync(&self) -> Result<(), TransferError> {
        self.file.sync_data().map_err(|e| {
            TransferError::local_file("sync-failed", &e, &format!("{}", self.path().display()))
        })
    }

    /// Cuts the file to `length` bytes (on restart, to the recorded progress).
    pub fn truncate(&self, length: u64) -> Result<(), TransferError> {
        self.file.set_len(length).map_err(|e| {
            TransferError::local_file("write-failed", &e, &format!("{}", self.path().display()))
        })
    }

    /// Syncs the file, renames it to its final name inside the directory it
    /// was created in, and syncs the directory. On failure the temporary file
    /// is left as it was, so finishing can be tried again.
    pub fn finish(&self) -> Result<PathBuf, TransferError> {
        let final_path = self.rename_into_place()?;
        self.sync_dir()?;
        Ok(final_path)
    }

    /// Syncs the file and renames it to its final name; the rename is
    /// durable once the directory is synced ([`TempFile::sync_dir`]), which
    /// a caller moving many files does once per directory.
    pub fn rename_into_place(&self) -> Result<PathBuf, TransferError> {
        self.sync()?;
        let final_path = self.dir_path.join(&self.final_name);
        rustix::fs::renameat(
            &*self.dir,
            self.temp_name.as_str(),
            &*self.dir,
            self.final_name.as_str(),
        )
        .map_err(|e| {
            TransferError::local_file(
                "rename-failed",
                &e.into(),
                &format!("{}", final_path.display()),
            )
        })?;
        Ok(final_path)
    }

    /// Syncs the directory the file was created in, so renames and
    /// creations in it are durable.
    pub fn sync_dir(&self) -> Result<(), TransferError> {
        rustix::fs::fsync(&*self.dir).map_err(|e| {
            TransferError::local_file(
                "sync-failed",
                &e.into(),
                &format!("{}", self.dir_path.display()),
            )
        })
    }

    /// Deletes the temporary file (cancel, or a partial file on complete).
    pub fn remove(&self) -> Result<(), TransferError> {
        match rustix::fs::unlinkat(
            &*self.dir,
            self.temp_name.as_str(),
            rustix::fs::AtFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(TransferError::local_file(
                "remove-failed",
                &e.into(),
                &format!("{}", self.path().display()),
            )),
        }
    }
}

/// Where an upload-reply job's reply is written while the upload runs, and
/// kept until `complete`: the hidden temporary file of the job's reply file
/// (moved into place on `complete` like a download), or, for a job without
/// one, an anonymous temporary file that only lends the reply's first MiB to
/// the job's record.
pub struct ReplySpool {
    temp: Option<TempFile>,
    file: Arc<File>,
}

impl ReplySpool {
    /// A fresh spool: the temporary file of `reply_file` for job `tag`,
    /// created anew (a leftover of an earlier attempt of job owner `owner`
    /// is removed first; anything else there makes creating it fail), or an
    /// anonymous temporary file. A reply file gets the permissions `umask`
    /// leaves (the job's; the daemon's own when `None`).
    pub fn create(
        reply_file: Option<&Path>,
        tag: &str,
        owner: u32,
        umask: Option<u32>,
    ) -> Result<ReplySpool, TransferError> {
        match reply_file {
            Some(path) => {
                if let Ok(old) = TempFile::reopen(path, tag, owner) {
                    old.remove()?;
                }
                let temp = TempFile::create(path, tag)?;
                if let Some(umask) = umask {
                    temp.apply_umask(umask)?;
                }
                Ok(ReplySpool {
                    file: temp.file(),
                    temp: Some(temp),
                })
            }
            None => {
                let file = tempfile::tempfile().map_err(|e| {
                    TransferError::local_file("cannot-create-file", &e, "the reply's spool file")
                })?;
                Ok(ReplySpool {
                    temp: None,
                    file: Arc::new(file),
                })
            }
        }
    }

    /// The open file, to hand to the plugin's reply sink.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Whether the reply is written beside the job's reply file.
    pub fn is_reply_file(&self) -> bool {
        self.temp.is_some()
    }

    /// Makes the reply durable.
    pub fn sync(&self) -> Result<(), TransferError> {
        match &self.temp {
            Some(temp) => temp.sync(),
            None => Ok(()),
        }
    }

    /// Replaces the reply with the content of `other` (what a reply
    /// processor wrote), when the reply goes to a reply file.
    pub fn replace_with(&self, other: &File) -> Result<(), TransferError> {
        let Some(temp) = &self.temp else {
            return Ok(());
        };
        let failed = |e: std::io::Error| {
            TransferError::local_file("write-failed", &e, &temp.path().display().to_string())
        };
        temp.truncate(0)?;
        let mut reader = other;
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0)).map_err(failed)?;
        let mut writer: &File = &self.file;
        std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(0)).map_err(failed)?;
        std::io::copy(&mut reader, &mut writer).map_err(failed)?;
        temp.sync()
    }

    /// Keeps the reply for `complete`: true when it waits in the reply
    /// file's temporary file.
    pub fn keep(self) -> Result<bool, TransferError> {
        self.sync()?;
        Ok(self.temp.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn creates_hidden_exclusive_and_finishes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let temp = TempFile::create(&dest, "job1").unwrap();
        assert!(
            temp.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with('.')
        );
        assert!(
            TempFile::create(&dest, "job1").is_err(),
            "creation is exclusive"
        );
        (&*temp.file()).write_all(b"hello").unwrap();
        assert!(!dest.exists());
        assert_eq!(temp.finish().unwrap(), dest);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert!(!temp.path().exists());
    }

    #[test]
    fn never_follows_a_symlink_planted_for_the_directory_or_the_file() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let dest = real.join("file");
        let temp = TempFile::create(&dest, "j").unwrap();
        (&*temp.file()).write_all(b"data").unwrap();
        // Swap the destination directory for a symlink to another place, and
        // plant a symlink at the destination name inside the real directory.
        let moved = root.path().join("moved");
        std::fs::rename(&real, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("victim"), moved.join("file")).unwrap();
        temp.finish().unwrap();
        assert_eq!(
            std::fs::read(moved.join("file")).unwrap(),
            b"data",
            "landed in the checked directory"
        );
        assert!(
            !moved.join("file").is_symlink(),
            "the planted link was replaced, not followed"
        );
        assert!(!elsewhere.join("file").exists() && !elsewhere.join("victim").exists());
    }

    #[test]
    fn refuses_relative_paths_and_a_symlinked_directory() {
        assert_eq!(
            TempFile::create(Path::new("rel/file"), "j")
                .unwrap_err()
                .code,
            "invalid-local-path"
        );
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(root.path(), root.path().join("link")).unwrap();
        let error = TempFile::create(&root.path().join("link").join("f"), "j").unwrap_err();
        assert_eq!(error.code, "cannot-open-directory");
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn only_the_jobs_own_temporary_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let elsewhere = dir.path().join("victim");
        std::fs::write(&elsewhere, b"precious").unwrap();
        let name = dir.path().join(temp_name("f", "j"));
        // A symlink at the name.
        std::os::unix::fs::symlink(&elsewhere, &name).unwrap();
        assert_eq!(
            TempFile::reopen(&dest, "j", me()).unwrap_err().code,
            UNTRUSTED_TEMP
        );
        // A hard link to another file.
        std::fs::remove_file(&name).unwrap();
        std::fs::hard_link(&elsewhere, &name).unwrap();
        assert_eq!(
            TempFile::reopen(&dest, "j", me()).unwrap_err().code,
            UNTRUSTED_TEMP
        );
        // Not a regular file (opened without blocking).
        std::fs::remove_file(&name).unwrap();
        nix::unistd::mkfifo(&name, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            TempFile::reopen(&dest, "j", me()).unwrap_err().code,
            UNTRUSTED_TEMP
        );
        // Someone else's file (a daemon not running as root expects its own).
        std::fs::remove_file(&name).unwrap();
        std::fs::write(&name, b"x").unwrap();
        if crate::identity::running_as_root() {
            assert_eq!(
                TempFile::reopen(&dest, "j", me() + 4242).unwrap_err().code,
                UNTRUSTED_TEMP
            );
        }
        TempFile::reopen(&dest, "j", me()).unwrap();
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"precious");
    }

    #[test]
    fn random_tags_differ() {
        let (a, b) = (random_tag(), random_tag());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let temp = TempFile::create(&dest, "j").unwrap();
        (&*temp.file()).write_all(b"abc").unwrap();
        let again = TempFile::reopen(&dest, "j", me()).unwrap();
        again.truncate(1).unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), b"a");
        temp.remove().unwrap();
        assert!(!temp.path().exists());
        temp.remove().unwrap();
    }
}
