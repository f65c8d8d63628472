//! What the dedup and diversity stages compare: hashes of the actions and the patch, a
//! MinHash signature of the action shingles, and the action pattern.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use synthfleet_core::trajectory::{ExitStatus, TrajectoryRecord};

/// Slots of a MinHash signature: the similarity estimate's standard error is about
/// `1 / sqrt(SLOTS)` (0.09 here), ample to tell near copies (>= 0.9) from others.
const SLOTS: usize = 128;
/// Words per shingle.
const SHINGLE: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// SHA-256 of the action sequence: equal means the same commands in the same order.
    pub action_hash: String,
    pub minhash: MinHash,
    /// The sequence of command names, e.g. `cat > python3 > submit`: what "one pattern
    /// dominates" is measured on.
    pub pattern: String,
    /// SHA-256 of the final patch, when there is one.
    pub patch_hash: Option<String>,
}

impl Features {
    pub fn of(record: &TrajectoryRecord) -> Features {
        let actions: Vec<&str> = record
            .steps
            .iter()
            .filter_map(|s| s.action.as_deref())
            .collect();
        let mut hasher = Sha256::new();
        for action in &actions {
            hasher.update(action.as_bytes());
            hasher.update([0]);
        }
        let mut verbs: Vec<&str> = actions.iter().map(|a| command_name(a)).collect();
        if record.exit_status == Some(ExitStatus::Submitted) {
            verbs.push("submit");
        }
        let words: Vec<&str> = actions.iter().flat_map(|a| a.split_whitespace()).collect();
        Features {
            action_hash: hex(&hasher.finalize()),
            minhash: MinHash::of(&words),
            pattern: verbs.join(" > "),
            patch_hash: (!record.patch.trim().is_empty())
                .then(|| hex(&Sha256::digest(record.patch.as_bytes()))),
        }
    }
}

/// The program a shell command starts with (`cd x && pytest` → `cd`).
fn command_name(action: &str) -> &str {
    let word = action.split_whitespace().next().unwrap_or("");
    word.rsplit('/').next().unwrap_or(word)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A MinHash signature over word shingles.
#[derive(Debug, Clone, PartialEq)]
pub struct MinHash(Vec<u64>);

impl MinHash {
    pub fn of(words: &[&str]) -> MinHash {
        let mut shingles: HashSet<u64> = HashSet::new();
        if words.len() < SHINGLE {
            shingles.extend(words.iter().map(|w| hash_of(std::slice::from_ref(w))));
        } else {
            shingles.extend(words.windows(SHINGLE).map(hash_of));
        }
        let mut slots = vec![u64::MAX; SLOTS];
        for shingle in shingles {
            for (k, slot) in slots.iter_mut().enumerate() {
                *slot = (*slot).min(splitmix64(shingle ^ (k as u64).wrapping_mul(0x9E37_79B9)));
            }
        }
        MinHash(slots)
    }

    /// Estimated Jaccard similarity of the two shingle sets.
    pub fn similarity(&self, other: &MinHash) -> f64 {
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / SLOTS as f64
    }
}

fn hash_of(words: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    words.hash(&mut hasher);
    hasher.finish()
}

/// A well-mixed 64-bit permutation (Steele et al.), one per signature slot.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn minhash_estimates_jaccard() {
        let a: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let mut b = a.clone();
        b[199] = "changed".into();
        let c: Vec<String> = (0..200).map(|i| format!("other{i}")).collect();
        let (a, b, c) = (
            MinHash::of(&words(&a)),
            MinHash::of(&words(&b)),
            MinHash::of(&words(&c)),
        );
        // 198 shingles shared out of 199: near 0.99.
        assert!(a.similarity(&b) > 0.9, "{}", a.similarity(&b));
        assert!(a.similarity(&c) < 0.1, "{}", a.similarity(&c));
        assert_eq!(a.similarity(&a), 1.0);
    }

    #[test]
    fn command_names() {
        assert_eq!(command_name("/usr/bin/python3 -m x"), "python3");
        assert_eq!(command_name("  cat a"), "cat");
    }
}
