//! Reading a file a user names (a trace, an image to send), whole and bounded: a FIFO
//! would block the reader, a device never end, and a file of gigabytes be held in
//! memory whole.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Why a file could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    NotAFile,
    TooLarge { max_bytes: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(error) => error.fmt(f),
            ReadError::NotAFile => f.write_str("not a regular file"),
            ReadError::TooLarge { max_bytes } => write!(f, "larger than {max_bytes} bytes"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(error) => Some(error),
            ReadError::NotAFile | ReadError::TooLarge { .. } => None,
        }
    }
}

/// The whole of `path`, a regular file of at most `max_bytes` (counted as it is read,
/// so a file that grows after it was looked at is bounded too).
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    if !std::fs::metadata(path).map_err(ReadError::Io)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { max_bytes });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_within_the_bound_is_read() {
        let path = std::env::temp_dir().join(format!("matte-files-{}", std::process::id()));
        std::fs::write(&path, b"12345").expect("a temporary file");
        assert_eq!(read_bounded(&path, 5).expect("within"), b"12345");
        assert!(matches!(read_bounded(&path, 4), Err(ReadError::TooLarge { max_bytes: 4 })));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(read_bounded(&path, 5), Err(ReadError::Io(_))), "gone");
        assert!(matches!(read_bounded(Path::new("/dev/zero"), 5), Err(ReadError::NotAFile)), "a device");
        assert!(matches!(read_bounded(&std::env::temp_dir(), 5), Err(ReadError::NotAFile)), "a directory");
    }
}
