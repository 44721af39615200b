//! Crash-safe file replacement.
//!
//! [`write`] (or [`AtomicFile`] for content written piece by piece) replaces a
//! file so that readers, and the disk after a power cut, see either the old or
//! the new content, never a mix:
//!
//! 1. create a temporary file in the target's directory: `O_CREAT | O_EXCL`,
//!    mode 0600, a unique name `.<name>.<random>.tmp`, so concurrent writers
//!    never share one and a symlink planted at that name is not followed;
//! 2. write the content;
//! 3. `fchown` when an owner is given, then `fchmod` to the requested mode
//!    (the umask does not apply; chown goes first because it may clear the
//!    set-id bits);
//! 4. `fsync` the file;
//! 5. `rename` it over the target;
//! 6. `fsync` the directory, which makes the rename itself durable.
//!
//! Every failure is returned as an [`Error`] naming the step and the path
//! (`fsync of directory /var/lib/x: Input/output error`). A failure up to and
//! including the rename removes the temporary file and leaves the target as it
//! was. A failure of step 6 comes after the rename: the new content is in
//! place but may not survive a power cut, and the caller should treat the
//! write as failed.
//!
//! A symlink at the target is replaced by the new file, not followed:
//! rename(2) acts on the name. Symlinks in the directory part are followed.
//! The new file never inherits the old one's mode or owner: [`Options`] says
//! what they are.
//!
//! [`sync_dir`], [`sync_file`] and [`sync_fs`] are the same fsync steps for
//! callers that rename or remove files themselves (staging directories that
//! are committed by renames, a removed state file).
//!
//! ```no_run
//! use durable_file::Options;
//! # fn main() -> Result<(), durable_file::Error> {
//! // 0644 root:root (the defaults), fsync of file and directory.
//! durable_file::write("/etc/hostname", b"node-1\n", Options::default())?;
//! // A secret for a service user, in a directory that may not exist yet.
//! let opts = Options {
//!     owner: Some((990, 990)),
//!     create_parents: true,
//!     ..Options::new(0o600)
//! };
//! durable_file::write("/var/lib/app/token", b"...", opts)?;
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How the new file is made.
///
/// ```
/// # use durable_file::Options;
/// const STATE: Options = Options { create_parents: true, ..Options::new(0o600) };
/// assert!(STATE.sync);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Permission bits of the new file, set with fchmod: the umask does not
    /// apply. Default 0644.
    pub mode: u32,
    /// `(uid, gid)` of the new file; `None` (the default) leaves the creating
    /// process's. Changing it needs CAP_CHOWN unless it is the caller's own.
    pub owner: Option<(u32, u32)>,
    /// Fsync the file before the rename and the directory after it (the
    /// default). `false` keeps the replacement atomic for readers but not
    /// durable: after a power cut the target may still hold the old content,
    /// be missing, or be empty. Only for many files that are checked before
    /// they are used and made durable together before anything points at them
    /// (release chunks: hashed when reused, fsynced by
    /// `release_manifest::ReleaseWriter::finish` before the manifest naming
    /// them is written). Applies to `create_parents` too.
    pub sync: bool,
    /// Create missing parent directories (mode 0777 minus the umask, like
    /// `create_dir_all`), and fsync the directory that gained each new entry.
    /// Default false: a missing directory is an error.
    pub create_parents: bool,
}

impl Options {
    /// `mode`, no owner change, fsync, no parent creation.
    pub const fn new(mode: u32) -> Options {
        Options {
            mode,
            owner: None,
            sync: true,
            create_parents: false,
        }
    }
}

impl Default for Options {
    /// [`Options::new`]`(0o644)`.
    fn default() -> Options {
        Options::new(0o644)
    }
}

/// The step of a replacement that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The path has no file name (`/`, `..`, empty).
    InvalidPath,
    /// Creating a missing parent directory ([`Options::create_parents`]).
    CreateDir,
    /// Creating the temporary file in the target's directory.
    CreateTemp,
    /// Writing the content to the temporary file.
    Write,
    /// fchown of the temporary file.
    SetOwner,
    /// fchmod of the temporary file.
    SetMode,
    /// fsync of the file.
    SyncFile,
    /// Renaming the temporary file over the target.
    Rename,
    /// fsync of the directory (after the rename: the new content is in place).
    SyncDir,
    /// syncfs(2) of the filesystem ([`sync_fs`]).
    SyncFs,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::InvalidPath => "no file name to replace in",
            Step::CreateDir => "creating directory",
            Step::CreateTemp => "creating a temporary file in",
            Step::Write => "writing",
            Step::SetOwner => "chown of",
            Step::SetMode => "chmod of",
            Step::SyncFile => "fsync of",
            Step::Rename => "renaming a temporary file over",
            Step::SyncDir => "fsync of directory",
            Step::SyncFs => "syncfs of the filesystem holding",
        })
    }
}

/// A failed step, the path it was about and the system's error.
///
/// The cause is part of the message and deliberately not a `source()`, so an
/// error chain printed by anyhow does not repeat it; [`Error::io_error`] gives
/// it to code that needs the kind.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {cause}", path.display())]
pub struct Error {
    step: Step,
    path: PathBuf,
    cause: io::Error,
}

impl Error {
    fn new(step: Step, path: &Path, cause: io::Error) -> Error {
        Error {
            step,
            path: path.to_path_buf(),
            cause,
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// The target file, or the directory for [`Step::CreateTemp`],
    /// [`Step::CreateDir`] and [`Step::SyncDir`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn io_error(&self) -> &io::Error {
        &self.cause
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.cause.kind()
    }
}

/// For callers returning `io::Result`: the kind is kept, the message names the
/// step and the path.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Replaces `path` with `bytes`: temp file, write, chown/chmod, fsync, rename,
/// fsync of the directory (see the crate documentation).
pub fn write(path: impl AsRef<Path>, bytes: &[u8], options: Options) -> Result<(), Error> {
    let mut f = AtomicFile::create(path, options)?;
    inject(Step::Write)
        .and_then(|()| f.file.write_all(bytes))
        .map_err(|e| Error::new(Step::Write, &f.target, e))?;
    f.commit()
}

/// A replacement written piece by piece: [`create`](Self::create), write
/// through [`io::Write`] or [`as_file_mut`](Self::as_file_mut), then
/// [`commit`](Self::commit). Dropped without a successful commit, it removes
/// its temporary file and the target is untouched.
///
/// Errors of the `io::Write` calls carry no path; add it where they are handled.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    options: Options,
    renamed: bool,
}

impl AtomicFile {
    /// Creates the temporary file for `path` in its directory, empty and
    /// opened for reading and writing.
    pub fn create(path: impl AsRef<Path>, options: Options) -> Result<AtomicFile, Error> {
        let target = path.as_ref().to_path_buf();
        let Some(name) = target.file_name() else {
            return Err(Error::new(
                Step::InvalidPath,
                &target,
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            ));
        };
        let dir = parent_dir(&target).to_path_buf();
        if options.create_parents {
            create_parents(&dir, options.sync)?;
        }
        let (file, temp) = create_temp(&dir, name)?;
        Ok(AtomicFile {
            file,
            temp,
            target,
            dir,
            options,
            renamed: false,
        })
    }

    /// The file that is replaced on commit.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The temporary file (removed on drop without commit).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// For seeking and reading back what was written before committing.
    pub fn as_file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// chown/chmod, fsync, rename over the target, fsync of the directory (the
    /// fsyncs only with [`Options::sync`]). On an error before the rename the
    /// temporary file is removed; an error of the directory fsync comes after
    /// the target was replaced.
    pub fn commit(mut self) -> Result<(), Error> {
        let (target, options) = (&self.target, self.options);
        if let Some((uid, gid)) = options.owner {
            inject(Step::SetOwner)
                .and_then(|()| std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid)))
                .map_err(|e| Error::new(Step::SetOwner, target, e))?;
        }
        inject(Step::SetMode)
            .and_then(|()| {
                self.file
                    .set_permissions(fs::Permissions::from_mode(options.mode))
            })
            .map_err(|e| Error::new(Step::SetMode, target, e))?;
        if options.sync {
            inject(Step::SyncFile)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| Error::new(Step::SyncFile, target, e))?;
        }
        inject(Step::Rename)
            .and_then(|()| fs::rename(&self.temp, target))
            .map_err(|e| Error::new(Step::Rename, target, e))?;
        // The temporary name is gone: never remove it again, another writer
        // may have taken it by now.
        self.renamed = true;
        if options.sync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// fsync of a directory: makes the creation, rename or removal of its entries
/// durable.
pub fn sync_dir(dir: impl AsRef<Path>) -> Result<(), Error> {
    let dir = dir.as_ref();
    inject(Step::SyncDir)
        .and_then(|()| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(dir)
        })
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::new(Step::SyncDir, dir, e))
}

/// fsync of an existing file, for a file written without [`Options::sync`] or
/// by another program, before something names it.
pub fn sync_file(path: impl AsRef<Path>) -> Result<(), Error> {
    let path = path.as_ref();
    inject(Step::SyncFile)
        .and_then(|()| File::open(path))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::new(Step::SyncFile, path, e))
}

/// syncfs(2) of the filesystem holding `path` (a file or a directory): every
/// file and directory on it. For whole trees, and for filesystems where a
/// directory fsync does not make renames durable (vfat).
pub fn sync_fs(path: impl AsRef<Path>) -> Result<(), Error> {
    let path = path.as_ref();
    inject(Step::SyncFs)
        .and_then(|()| File::open(path))
        .and_then(|f| {
            // SAFETY: a plain syscall on a descriptor owned for the whole call.
            if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .map_err(|e| Error::new(Step::SyncFs, path, e))
}

/// The directory `path` is in ("." for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `create_dir_all(dir)`, then fsync of the directory that gained each new one.
fn create_parents(dir: &Path, sync: bool) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut d = dir;
    while let Err(e) = fs::symlink_metadata(d) {
        if e.kind() != io::ErrorKind::NotFound {
            break; // create_dir_all reports it
        }
        missing.push(d);
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    inject(Step::CreateDir)
        .and_then(|()| fs::create_dir_all(dir))
        .map_err(|e| Error::new(Step::CreateDir, dir, e))?;
    if sync {
        for d in missing.iter().rev() {
            sync_dir(parent_dir(d))?;
        }
    }
    Ok(())
}

/// Longest part of the target's name kept in the temporary name, so that the
/// temporary name stays within NAME_MAX (255).
const NAME_KEPT: usize = 200;

/// Creates `.<name>.<16 hex>.tmp` in `dir` with O_EXCL, mode 0600.
fn create_temp(dir: &Path, name: &OsStr) -> Result<(File, PathBuf), Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = &name.as_bytes()[..name.len().min(NAME_KEPT)];
    let mut last = None;
    for _ in 0..64 {
        // RandomState is seeded from the OS once per thread and differs on
        // every call; pid, counter and clock make a collision with another
        // process's name unlikely, and O_EXCL makes it harmless.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(t) = std::time::SystemTime::UNIX_EPOCH.elapsed() {
            h.write_u128(t.as_nanos());
        }
        let mut temp = Vec::with_capacity(name.len() + 22);
        temp.push(b'.');
        temp.extend_from_slice(name);
        temp.extend_from_slice(format!(".{:016x}.tmp", h.finish()).as_bytes());
        let temp = dir.join(OsString::from_vec(temp));
        let opened = inject(Step::CreateTemp).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
        });
        match opened {
            Ok(f) => return Ok((f, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::new(Step::CreateTemp, dir, e)),
        }
    }
    Err(Error::new(
        Step::CreateTemp,
        dir,
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

#[cfg(not(test))]
#[inline(always)]
fn inject(_: Step) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Tests: the step that fails on this thread.
    static FAIL: std::cell::Cell<Option<Step>> = const { std::cell::Cell::new(None) };
}

/// Tests only: fails `step` when it is the one set in [`FAIL`], so every error
/// path (a directory fsync error included) can be exercised.
#[cfg(test)]
fn inject(step: Step) -> io::Result<()> {
    if FAIL.with(|f| f.get()) == Some(step) {
        return Err(io::Error::other("injected failure"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replaces_an_existing_file_with_the_mode_asked_for() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, "old content that is longer").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        write(&p, b"new", Options::default()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o644);
        // The umask does not apply, and group/other bits are not inherited.
        write(&p, b"x", Options::new(0o666)).unwrap();
        assert_eq!(mode(&p), 0o666);
        write(&p, b"y", Options::new(0o400)).unwrap();
        assert_eq!(mode(&p), 0o400);
        assert_eq!(names(t.path()), ["f"]);
    }

    #[test]
    fn a_bare_name_is_in_the_current_directory() {
        // Only the parent computation: changing the cwd would race other tests.
        assert_eq!(parent_dir(Path::new("f")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/f")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("a/b")), Path::new("a"));
        for p in ["/", "", "a/.."] {
            let e = write(p, b"x", Options::default()).unwrap_err();
            assert_eq!(e.step(), Step::InvalidPath, "{p:?}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn owner_is_applied() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let me = fs::metadata(t.path()).unwrap();
        let (uid, gid) = (me.uid(), me.gid());
        write(
            &p,
            b"x",
            Options {
                owner: Some((uid, gid)),
                ..Options::new(0o640)
            },
        )
        .unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid(), mode(&p)), (uid, gid, 0o640));
        // Set-id bits survive the chown because the mode is set after it.
        if uid == 0 {
            let opts = Options {
                owner: Some((65534, 65534)),
                ..Options::new(0o6755)
            };
            write(&p, b"y", opts).unwrap();
            let m = fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid(), mode(&p)), (65534, 65534, 0o6755));
        }
    }

    #[test]
    fn creates_missing_parents_only_when_asked() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/c/f");
        let e = write(&p, b"x", Options::default()).unwrap_err();
        assert_eq!(e.step(), Step::CreateTemp);
        assert_eq!(e.path(), t.path().join("a/b/c"));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let opts = Options {
            create_parents: true,
            ..Options::default()
        };
        write(&p, b"x", opts).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
        // Existing parents: nothing to create.
        write(&p, b"y", opts).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"y");
        assert_eq!(names(&t.path().join("a/b/c")), ["f"]);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write(&link, b"new", Options::default()).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        // A dangling one too.
        let dangling = t.path().join("dangling");
        std::os::unix::fs::symlink(t.path().join("nowhere"), &dangling).unwrap();
        write(&dangling, b"d", Options::default()).unwrap();
        assert!(!t.path().join("nowhere").exists());
        assert_eq!(fs::read(&dangling).unwrap(), b"d");
    }

    #[test]
    fn a_directory_at_the_target_fails_and_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), "x").unwrap();
        let e = write(&p, b"x", Options::default()).unwrap_err();
        assert_eq!(e.step(), Step::Rename);
        assert_eq!(e.path(), p);
        assert!(
            e.to_string()
                .starts_with(&format!("renaming a temporary file over {}: ", p.display()))
        );
        assert_eq!(names(t.path()), ["d"]);
        assert_eq!(names(&p), ["inside"]);
    }

    /// Every step's error is returned with its path; up to the rename the
    /// target is untouched and the temporary file removed.
    #[test]
    fn every_step_error_is_returned_and_cleaned_up() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let me = fs::metadata(t.path()).unwrap();
        let opts = Options {
            owner: Some((me.uid(), me.gid())),
            create_parents: true,
            ..Options::default()
        };
        for step in [
            Step::CreateTemp,
            Step::Write,
            Step::SetOwner,
            Step::SetMode,
            Step::SyncFile,
            Step::Rename,
        ] {
            fs::write(&p, "old").unwrap();
            FAIL.with(|f| f.set(Some(step)));
            let e = write(&p, b"new", opts).unwrap_err();
            FAIL.with(|f| f.set(None));
            assert_eq!(e.step(), step);
            assert_eq!(e.io_error().to_string(), "injected failure");
            let want = if step == Step::CreateTemp {
                t.path()
            } else {
                &p
            };
            assert_eq!(e.path(), want);
            assert_eq!(
                e.to_string(),
                format!("{step} {}: injected failure", want.display())
            );
            assert_eq!(fs::read(&p).unwrap(), b"old", "{step:?}");
            assert_eq!(names(t.path()), ["f"], "{step:?}");
        }
    }

    #[test]
    fn a_directory_fsync_error_is_returned_after_the_rename() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        FAIL.with(|f| f.set(Some(Step::SyncDir)));
        let e = write(&p, b"new", Options::default()).unwrap_err();
        // Without sync there is no directory fsync to fail.
        let unsynced = write(
            &p,
            b"newer",
            Options {
                sync: false,
                ..Options::default()
            },
        );
        FAIL.with(|f| f.set(None));
        assert_eq!(e.step(), Step::SyncDir);
        assert_eq!(
            e.to_string(),
            format!(
                "fsync of directory {}: injected failure",
                t.path().display()
            )
        );
        unsynced.unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"newer");
        assert_eq!(names(t.path()), ["f"]);

        // And a real one: the directory is gone.
        let gone = t.path().join("gone");
        let e = sync_dir(&gone).unwrap_err();
        assert_eq!(
            (e.step(), e.kind()),
            (Step::SyncDir, io::ErrorKind::NotFound)
        );
        let e = sync_dir(&p).unwrap_err();
        assert_eq!(e.step(), Step::SyncDir, "a file is not a directory");
        assert_eq!(sync_file(&gone).unwrap_err().step(), Step::SyncFile);
        assert_eq!(sync_fs(&gone).unwrap_err().step(), Step::SyncFs);
        sync_file(&p).unwrap();
        sync_fs(&p).unwrap();
        sync_dir(t.path()).unwrap();
    }

    #[test]
    fn a_parent_directory_fsync_error_is_returned() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("new/f");
        FAIL.with(|f| f.set(Some(Step::SyncDir)));
        let opts = Options {
            create_parents: true,
            ..Options::default()
        };
        let e = write(&p, b"x", opts).unwrap_err();
        FAIL.with(|f| f.set(None));
        assert_eq!((e.step(), e.path()), (Step::SyncDir, t.path()));
        assert!(!p.exists());
    }

    #[test]
    fn streaming_writer_commits_or_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, "old").unwrap();
        let mut f = AtomicFile::create(&p, Options::new(0o600)).unwrap();
        f.write_all(b"part 1, ").unwrap();
        f.write_all(b"part 2").unwrap();
        assert!(f.temp_path().starts_with(t.path()));
        assert_eq!(f.path(), p);
        // Read back through the handle before committing.
        use std::io::{Read, Seek};
        let mut back = String::new();
        f.as_file_mut().rewind().unwrap();
        f.as_file_mut().read_to_string(&mut back).unwrap();
        assert_eq!(back, "part 1, part 2");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"part 1, part 2");
        assert_eq!(mode(&p), 0o600);

        let mut f = AtomicFile::create(&p, Options::default()).unwrap();
        f.write_all(b"abandoned").unwrap();
        let temp = f.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(f);
        assert!(!temp.exists());
        assert_eq!(fs::read(&p).unwrap(), b"part 1, part 2");
        assert_eq!(names(t.path()), ["f"]);
    }

    #[test]
    fn temporary_names_are_unique_hidden_and_short_enough() {
        let t = tempfile::tempdir().unwrap();
        let long = "n".repeat(255);
        let files: Vec<_> = (0..50)
            .map(|_| AtomicFile::create(t.path().join(&long), Options::default()).unwrap())
            .collect();
        let mut temps: Vec<_> = files.iter().map(|f| f.temp_path().to_path_buf()).collect();
        temps.sort();
        temps.dedup();
        assert_eq!(temps.len(), 50);
        for tp in &temps {
            let n = tp.file_name().unwrap().to_str().unwrap();
            assert!(
                n.starts_with('.') && n.ends_with(".tmp") && n.len() <= 255,
                "{n}"
            );
            assert_eq!(mode(tp), 0o600);
        }
        drop(files);
        assert!(names(t.path()).is_empty());
    }

    /// Two writers replacing the same file: every read sees one writer's whole
    /// content, and no temporary file is left.
    #[test]
    fn concurrent_writers_do_not_corrupt() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let a = vec![b'a'; 256 << 10];
        let b = vec![b'b'; 128 << 10];
        write(&p, &a, Options::default()).unwrap();
        let finished = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for content in [&a, &b] {
                let (p, finished) = (&p, &finished);
                s.spawn(move || {
                    for i in 0..100 {
                        // Half without fsync: more interleaving in less time.
                        let opts = Options {
                            sync: i % 2 == 0,
                            ..Options::default()
                        };
                        write(p, content, opts).unwrap();
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
            s.spawn(|| {
                let mut reads = 0;
                while finished.load(Ordering::SeqCst) < 2 || reads == 0 {
                    let got = fs::read(&p).unwrap();
                    assert!(got == a || got == b, "torn read of {} bytes", got.len());
                    reads += 1;
                }
            });
        });
        let got = fs::read(&p).unwrap();
        assert!(got == a || got == b);
        assert_eq!(names(t.path()), ["f"]);
    }

    #[test]
    fn converts_to_io_error_with_kind_and_message() {
        let t = tempfile::tempdir().unwrap();
        let e = write(t.path().join("missing/f"), b"x", Options::default()).unwrap_err();
        let msg = e.to_string();
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert_eq!(io.to_string(), msg);
        assert!(msg.starts_with("creating a temporary file in "), "{msg}");
    }
}
