//! Where the interposer comes from, and why it can be trusted.
//!
//! `netblame run` often runs as root and puts a library into the command it runs. A library
//! that another local user could write, or a folder they could swap, would run their code in
//! that command. So the embedded library is written afresh into the run's own private folder
//! (created here, mode 0700, every ancestor checked), with `O_EXCL | O_NOFOLLOW`, and read back
//! before use: it must be a regular file owned by us, writable by no one else, with the embedded
//! library's exact bytes. Nothing is ever loaded from a shared folder such as /tmp.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The interposer, built by build.rs and embedded so an installed netblame needs nothing else.
static PRELOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnetblame_preload.so"));

/// The interposer's file name inside a run directory.
pub const PRELOAD_FILE: &str = "libnetblame_preload.so";

/// Permission bits that let group or others change a file or a folder's entries.
const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a path cannot be trusted with code that runs in the command.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrustError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Owned by a user who is neither root, netblame's user, nor the user the command runs as.
    ForeignOwner {
        path: PathBuf,
        uid: u32,
    },
    /// Group or others may write it (a folder: without the sticky bit).
    Writable {
        path: PathBuf,
        mode: u32,
    },
    /// Not a regular file (a link, a device, a folder).
    NotAFile {
        path: PathBuf,
    },
    /// The file's bytes are not the embedded interposer's.
    Altered {
        path: PathBuf,
    },
    /// ld.so splits LD_PRELOAD at spaces and colons.
    Unloadable {
        path: PathBuf,
    },
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustError::Io { path, .. } => write!(f, "{}: cannot check", path.display()),
            TrustError::ForeignOwner { path, uid } => write!(
                f,
                "{} belongs to uid {uid}, who could change the code netblame loads into the command; \
                 refusing it (choose a folder of your own, e.g. --out ./netblame-runs/NAME)",
                path.display()
            ),
            TrustError::Writable { path, mode } => write!(
                f,
                "{} is writable by other users (mode {mode:04o}); refusing to load code through it",
                path.display()
            ),
            TrustError::NotAFile { path } => {
                write!(f, "{} is not a regular file", path.display())
            }
            TrustError::Altered { path } => write!(
                f,
                "{} is not the interposer this netblame carries (its bytes differ); refusing it",
                path.display()
            ),
            TrustError::Unloadable { path } => write!(
                f,
                "{}: LD_PRELOAD (and PYTHONPATH) cannot name a path with a space or a colon; choose another --out",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TrustError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrustError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.into(),
        source,
    }
}

/// The users who may own what netblame loads: root, netblame's effective user, and the user the
/// command runs as (under sudo; the library runs with that user's rights, nobody else's).
#[derive(Debug, Clone)]
pub struct Owners(Vec<u32>);

impl Owners {
    pub fn new(run_as: Option<u32>) -> Owners {
        let mut v = vec![0, nix::unistd::Uid::effective().as_raw()];
        v.extend(run_as);
        Owners(v)
    }

    /// Checks the owner of `path` (following a link at its end).
    pub fn check_owner(&self, path: &Path) -> Result<(), TrustError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        self.check(path, &meta)
    }

    fn check(&self, path: &Path, meta: &std::fs::Metadata) -> Result<(), TrustError> {
        if !self.0.contains(&meta.uid()) {
            return Err(TrustError::ForeignOwner {
                path: path.into(),
                uid: meta.uid(),
            });
        }
        Ok(())
    }
}

/// Checks that only `owners` can change what `dir` (a folder) names: `dir` and each of its
/// ancestors is owned by one of them, `dir` is writable by no one else, and an ancestor is
/// writable by others only with the sticky bit (as /tmp: others may add names there, but not
/// move or replace ours).
pub fn check_folder(dir: &Path, owners: &Owners) -> Result<PathBuf, TrustError> {
    let dir = dir.canonicalize().map_err(io_err(dir))?;
    for (i, p) in dir.ancestors().enumerate() {
        let meta = std::fs::symlink_metadata(p).map_err(io_err(p))?;
        owners.check(p, &meta)?;
        let mode = meta.mode() & 0o7777;
        let shared = mode & GROUP_OTHER_WRITE != 0;
        if shared && (i == 0 || mode & STICKY == 0) {
            return Err(TrustError::Writable {
                path: p.into(),
                mode,
            });
        }
    }
    Ok(dir)
}

/// Checks an open file: regular, owned by one of `owners`, writable by no one else.
fn check_file(path: &Path, file: &File, owners: &Owners) -> Result<(), TrustError> {
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(TrustError::NotAFile { path: path.into() });
    }
    owners.check(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(TrustError::Writable {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> Result<File, TrustError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(io_err(path))
}

/// LD_PRELOAD's separators cannot appear in the path.
fn loadable(path: &Path) -> Result<(), TrustError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.iter().any(|&b| b == b' ' || b == b':' || b == b'\t') {
        return Err(TrustError::Unloadable { path: path.into() });
    }
    Ok(())
}

/// Writes `bytes` as a new read-only file `path` (never an existing file or link), then
/// checks it as `verify` would.
fn install(path: &Path, bytes: &[u8], owners: &Owners) -> Result<(), TrustError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true) // O_CREAT | O_EXCL: never an existing file or link
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o444)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    drop(file);
    verify(path, bytes, owners)
}

/// Checks a file netblame wrote just before use: a regular file, not a link, owned by us,
/// writable by no one else, in a trusted folder, holding exactly `bytes`.
fn verify(path: &Path, bytes: &[u8], owners: &Owners) -> Result<(), TrustError> {
    if let Some(dir) = path.parent() {
        check_folder(dir, owners)?;
    }
    let mut file = open_nofollow(path)?;
    check_file(path, &file, owners)?;
    let mut held = Vec::with_capacity(bytes.len());
    // One byte more than expected: a longer file differs.
    (&mut file)
        .take(bytes.len() as u64 + 1)
        .read_to_end(&mut held)
        .map_err(io_err(path))?;
    if held != bytes {
        return Err(TrustError::Altered { path: path.into() });
    }
    Ok(())
}

/// Writes the embedded interposer into `dir` (a folder netblame just created for this run) and
/// returns its absolute path, after checking the folder and reading the file back.
pub fn install_interposer(dir: &Path, owners: &Owners) -> Result<PathBuf, TrustError> {
    let dir = check_folder(dir, owners)?;
    let path = dir.join(PRELOAD_FILE);
    loadable(&path)?;
    install(&path, PRELOAD, owners)?;
    Ok(path)
}

/// Checks the interposer at `path` just before use (see `verify`).
pub fn verify_interposer(path: &Path, owners: &Owners) -> Result<(), TrustError> {
    verify(path, PRELOAD, owners)
}

/// The pytest plugin (crates/cli/python), its module name, and the folder of the run
/// directory it is written into (the only file there: the folder goes on PYTHONPATH).
static PYTEST_PLUGIN: &[u8] = include_bytes!("../python/netblame_pytest.py");
pub const PYTEST_PLUGIN_MODULE: &str = "netblame_pytest";
const PYTEST_PLUGIN_FOLDER: &str = "python";

/// Writes the pytest plugin into `RUN/python/` and returns its absolute path.
pub fn install_pytest_plugin(run_dir: &Path, owners: &Owners) -> Result<PathBuf, TrustError> {
    let run_dir = check_folder(run_dir, owners)?;
    let folder = run_dir.join(PYTEST_PLUGIN_FOLDER);
    std::fs::create_dir(&folder).map_err(io_err(&folder))?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(&folder))?;
    let folder = check_folder(&folder, owners)?;
    // PYTHONPATH's separator cannot appear in the path.
    if folder.as_os_str().as_encoded_bytes().contains(&b':') {
        return Err(TrustError::Unloadable { path: folder });
    }
    let path = folder.join(format!("{PYTEST_PLUGIN_MODULE}.py"));
    install(&path, PYTEST_PLUGIN, owners)?;
    Ok(path)
}

/// Checks the pytest plugin just before the command starts (see `verify`).
pub fn verify_pytest_plugin(path: &Path, owners: &Owners) -> Result<(), TrustError> {
    verify(path, PYTEST_PLUGIN, owners)
}

/// `NETBLAME_PRELOAD`, an explicit override (a library of one's own build): it must still be a
/// regular file in a trusted folder that no other user can write. Its content is the user's
/// choice.
pub fn check_override(path: &Path, owners: &Owners) -> Result<PathBuf, TrustError> {
    let file = open_nofollow(path)?;
    check_file(path, &file, owners)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = check_folder(dir, owners)?.join(path.file_name().unwrap_or_default());
    loadable(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir(name: &str) -> PathBuf {
        let d = std::env::current_dir()
            .unwrap()
            .join("target")
            .join(format!("trust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn installs_and_verifies_the_embedded_library() {
        let d = private_dir("ok");
        let owners = Owners::new(None);
        let p = install_interposer(&d, &owners).unwrap();
        assert!(p.is_absolute());
        verify_interposer(&p, &owners).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_existing_file_is_never_reused() {
        let d = private_dir("exists");
        std::fs::write(d.join(PRELOAD_FILE), b"planted").unwrap();
        let err = install_interposer(&d, &Owners::new(None)).unwrap_err();
        assert!(matches!(err, TrustError::Io { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_altered_library_is_refused() {
        let d = private_dir("altered");
        let owners = Owners::new(None);
        let p = install_interposer(&d, &owners).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let err = verify_interposer(&p, &owners).unwrap_err();
        assert!(matches!(err, TrustError::Altered { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let d = private_dir("shared");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = install_interposer(&d, &Owners::new(None)).unwrap_err();
        assert!(matches!(err, TrustError::Writable { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_group_writable_library_is_refused() {
        let d = private_dir("groupw");
        let owners = Owners::new(None);
        let p = install_interposer(&d, &owners).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o464)).unwrap();
        let err = verify_interposer(&p, &owners).unwrap_err();
        assert!(matches!(err, TrustError::Writable { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_path_ld_so_would_split_is_refused() {
        let d = private_dir("split").join("a:b");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = install_interposer(&d, &Owners::new(None)).unwrap_err();
        assert!(matches!(err, TrustError::Unloadable { .. }), "{err}");
        std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
    }
}
