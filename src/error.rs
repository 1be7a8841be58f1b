//! The crate's error type: what was expected, and what came.

use core::fmt;

/// Everything a public function of this crate can reject.
///
/// Every variant names the argument it is about (`what`), so that a message reads as
/// "`w_q`: expected length 12288, got 12000". The enum is `#[non_exhaustive]`: later kinds of input
/// (files, configurations) add variants without breaking matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A slice length (or a dimension) does not match what the other arguments imply.
    ShapeMismatch {
        /// The argument whose length is wrong.
        what: &'static str,
        /// The length the dimensions require.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A caller-provided workspace is shorter than the function needs (see its `*_workspace_len`).
    WorkspaceTooSmall {
        /// Elements the function needs.
        needed: usize,
        /// Elements the workspace holds.
        got: usize,
    },
    /// An input is empty where the function needs at least one element.
    Empty {
        /// The argument that is empty.
        what: &'static str,
    },
    /// An input holds NaN or an infinity where the function promises to reject them.
    NonFinite {
        /// The argument holding the value.
        what: &'static str,
        /// Index of the first non-finite element.
        index: usize,
    },
    /// An element of an input lies outside the function's domain (e.g. a negative singular value).
    InvalidValue {
        /// The argument holding the value.
        what: &'static str,
        /// Index of the first offending element.
        index: usize,
        /// The domain that was expected, in words (e.g. "nonnegative").
        expected: &'static str,
    },
    /// A scalar parameter is outside its domain (e.g. a negative tolerance, a zero tile size).
    InvalidParameter {
        /// The parameter.
        what: &'static str,
        /// The domain that was expected, in words.
        expected: &'static str,
    },
    /// Dimensions whose product does not fit in `usize`.
    DimensionOverflow {
        /// The argument whose size overflowed.
        what: &'static str,
    },
    /// An iterative method stopped at its iteration limit before meeting its tolerance.
    NoConvergence {
        /// The method.
        what: &'static str,
        /// Iterations performed.
        iterations: usize,
    },
    /// Bytes that are not a valid instance of the expected file format.
    Malformed {
        /// What is wrong, in words.
        what: &'static str,
        /// Byte offset at which the problem was found.
        offset: usize,
    },
    /// A file whose stored checksum differs from the checksum of its contents: it is corrupted, and
    /// the damage can be anywhere in the checksummed bytes (a checksum does not locate it).
    ChecksumMismatch {
        /// The kind of file, in words (e.g. "checkpoint").
        what: &'static str,
        /// Number of bytes the checksum covers (from the start of the file).
        covered: usize,
    },
    /// A sequence longer than a model's context: the learned absolute positions stop at
    /// `context` (the incremental decoder's prompt, or a step past the last position).
    ContextOverflow {
        /// Positions the model has (`context_len`).
        context: usize,
        /// Positions the sequence would need.
        tokens: usize,
    },
    /// A token index outside the vocabulary.
    TokenOutOfRange {
        /// The token that came.
        token: usize,
        /// The vocabulary size (tokens must be below it).
        vocab: usize,
    },
}

/// Shorthand for `core::result::Result<T, sd_attention::Error>`.
pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ShapeMismatch { what, expected, got } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
            Error::WorkspaceTooSmall { needed, got } => {
                write!(f, "workspace: needs at least {needed} elements, got {got}")
            }
            Error::Empty { what } => write!(f, "{what}: must not be empty"),
            Error::NonFinite { what, index } => {
                write!(f, "{what}: non-finite value (NaN or infinity) at index {index}")
            }
            Error::InvalidValue { what, index, expected } => {
                write!(f, "{what}: value at index {index} is not {expected}")
            }
            Error::InvalidParameter { what, expected } => {
                write!(f, "{what}: expected {expected}")
            }
            Error::DimensionOverflow { what } => {
                write!(f, "{what}: dimensions overflow usize")
            }
            Error::NoConvergence { what, iterations } => {
                write!(f, "{what}: no convergence after {iterations} iterations")
            }
            Error::Malformed { what, offset } => {
                write!(f, "malformed input at byte {offset}: {what}")
            }
            Error::ChecksumMismatch { what, covered } => write!(
                f,
                "checksum mismatch over the whole {what} file (bytes 0..{covered}): the file is corrupted"
            ),
            Error::ContextOverflow { context, tokens } => {
                write!(f, "{tokens} tokens do not fit in the model's context of {context} positions")
            }
            Error::TokenOutOfRange { token, vocab } => {
                write!(f, "token {token} is outside the vocabulary of {vocab}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Checks that `got == rows * cols`; the length of a `rows x cols` row-major matrix.
pub(crate) fn check_matrix(what: &'static str, got: usize, rows: usize, cols: usize) -> Result<()> {
    let expected = rows.checked_mul(cols).ok_or(Error::DimensionOverflow { what })?;
    check_len(what, got, expected)
}

/// Checks that `got == expected`.
pub(crate) fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch { what, expected, got })
    }
}

/// Checks that a workspace holds at least `needed` elements (workspaces may be larger).
pub(crate) fn check_workspace(got: usize, needed: usize) -> Result<()> {
    if got >= needed {
        Ok(())
    } else {
        Err(Error::WorkspaceTooSmall { needed, got })
    }
}
