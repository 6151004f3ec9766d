//! Reading the files a configuration names (CA certificates, JWK Sets) safely: only
//! regular files, opened without blocking (a FIFO or a device must not hang a save in
//! the admin API, nor `tollgate check`), and at most a bounded size (`/dev/zero` or a
//! 2 GB file must not eat the memory).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most a certificate file may hold: far above a system CA bundle (~200 KB).
pub const MAX_CERTIFICATES: u64 = 4 << 20;
/// The most a JWK Set file may hold (as for one fetched from `jwks_url`).
pub const MAX_JWKS: u64 = 1 << 20;

/// The contents of the regular file at `path`, at most `max` bytes.
///
/// # Errors
/// In words, with the path: it does not exist, may not be read, is not a regular file
/// (a directory, a FIFO, a device), or is larger than `max`. A relative path says the
/// directory it was read from.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = || match std::env::current_dir() {
        Ok(dir) if path.is_relative() => {
            format!("{} (relative to {}, where Tollgate runs)", path.display(), dir.display())
        }
        _ => path.display().to_string(),
    };
    if path.as_os_str().is_empty() {
        return Err("no file named: give a path".to_string());
    }
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("cannot read {}: {why}", shown())
    })?;
    let meta = file.metadata().map_err(|e| format!("cannot read {}: {e}", shown()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file (a device, FIFO or socket)" };
        return Err(format!("cannot read {}: it is {what}", shown()));
    }
    if meta.len() > max {
        return Err(format!("cannot read {}: it holds {} bytes, more than the {max} allowed", shown(), meta.len()));
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: a file may grow, and /proc files report no size.
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {}: {e}", shown()))?;
    if bytes.len() as u64 > max {
        return Err(format!("cannot read {}: it holds more than the {max} bytes allowed", shown()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_at_once_and_sizes_are_bounded() {
        for special in ["/dev/zero", "/dev/urandom", "/"] {
            let e = read_bounded(Path::new(special), 1024).expect_err(special);
            assert!(e.contains("it is"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("tollgate-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let e = read_bounded(&fifo, 1024).expect_err("a FIFO");
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 2048]).expect("write");
        assert!(read_bounded(&big, 1024).expect_err("too big").contains("more than the 1024"));
        assert_eq!(read_bounded(&big, 4096).expect("fits").len(), 2048);
        assert!(read_bounded(Path::new(""), 1).expect_err("empty").contains("give a path"));
        assert!(read_bounded(&dir.join("none"), 1).expect_err("missing").contains("no such file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
