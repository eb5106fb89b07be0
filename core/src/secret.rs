//! The one type for a secret held in memory: provider tokens and
//! passwords, the SMPP password, the code key, a RADIUS client's shared
//! secret. One rule for all of them: zeroized when dropped, `[redacted]`
//! when debug-printed, no `Display`, and read only through
//! [`Secret::expose`] at the place it is used, so a secret cannot reach a
//! log or an error by a stray `{}` or `{:?}`.

use std::fmt;
use std::ops::Deref;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use crate::files::{self, FileError};

/// A secret value (text by default). Zeroized on drop; its `Debug` prints
/// `[redacted]`; it has no `Display`.
pub struct Secret<T: Zeroize + Deref = String>(Zeroizing<T>);

/// A secret of raw bytes (the code key, a RADIUS shared secret).
pub type SecretBytes = Secret<Vec<u8>>;

impl<T: Zeroize + Deref> Secret<T> {
    /// Takes ownership of `value`; it is zeroized when the secret is dropped.
    pub fn new(value: T) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret itself, for the one place that uses it (a request, a
    /// bind, a MAC). Never for a message.
    pub fn expose(&self) -> &T::Target {
        &self.0
    }
}

impl<T: Zeroize + Deref> From<Zeroizing<T>> for Secret<T> {
    /// Keeps a value that is already zeroized on drop, without copying it.
    fn from(value: Zeroizing<T>) -> Self {
        Secret(value)
    }
}

impl Secret {
    /// Reads a secret (token, password) from a root-only file (owner-only
    /// mode, see [`files::read_secret`]), trimming one trailing newline.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        files::read_secret(path)
    }
}

impl<T: Zeroize + Deref> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
        let b = SecretBytes::new(b"key".to_vec());
        assert_eq!(format!("{b:?}"), "[redacted]");
        assert_eq!(b.expose(), b"key");
    }
}
