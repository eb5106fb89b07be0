//! Randomness, injected: the OS CSPRNG in production, a scripted source in
//! tests.

use std::cell::RefCell;

/// A source of random bytes.
pub trait RandomSource {
    /// Fills `buf`; an error means no safe randomness is available and the
    /// caller must fail closed.
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError>;
}

/// No safe randomness: the OS generator failed (its message inside).
/// Whoever gets it fails closed: no code, no challenge id.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(pub String);

/// `getrandom(2)`: the kernel CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
    }
}

/// Deterministic bytes for tests: repeats the given pattern, then counts up.
#[derive(Debug)]
pub struct FixedRandom {
    state: RefCell<u64>,
}

impl FixedRandom {
    /// A source whose bytes follow from `seed` alone (the same seed gives
    /// the same codes).
    pub fn new(seed: u64) -> Self {
        FixedRandom {
            state: RefCell::new(seed),
        }
    }
}

impl RandomSource for FixedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        let mut s = self.state.borrow_mut();
        for b in buf.iter_mut() {
            // xorshift64*: plenty for reproducible tests, never for codes.
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *b = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        Ok(())
    }
}
