//! How a trajectory record is stored: JSON, zstd-compressed, SHA-256 of the stored bytes.

use crate::resume::Checkpoint;
use crate::trajectory::{SCHEMA_VERSION, TrajectoryRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "checksum mismatch for {key}: expected sha256 {expected}, stored bytes hash to {actual}; the object is corrupt or was overwritten"
    )]
    Checksum {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("{key} is not a zstd stream")]
    Decompress {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} is not a valid trajectory record")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{key} has schema_version {found}, newer than this build reads ({SCHEMA_VERSION}); upgrade synthfleet"
    )]
    FutureSchema { key: String, found: u32 },
    #[error("cannot encode trajectory record")]
    Encode(#[source] std::io::Error),
}

/// An encoded record, ready to store.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes` (a digest's usual text form).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn encode(record: &TrajectoryRecord) -> Result<Encoded, CodecError> {
    encode_json(record)
}

/// A checkpoint is stored like a record (its record's fields, beside the workdir digest).
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Result<Encoded, CodecError> {
    encode_json(checkpoint)
}

fn encode_json(value: &impl Serialize) -> Result<Encoded, CodecError> {
    let json =
        serde_json::to_vec(value).map_err(|e| CodecError::Encode(std::io::Error::other(e)))?;
    // One frame that states its size, so that a reader decompresses it in one call into a
    // buffer of that size ([`decompress`]).
    let bytes = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(CodecError::Encode)?;
    let sha256 = sha256_hex(&bytes);
    Ok(Encoded { bytes, sha256 })
}

/// What a stored record can be read as: the whole record, or a view of the fields one
/// reader needs (an export skips the steps it does not write). Every view carries the
/// record's schema version, so that a record newer than this build is refused whatever
/// the view.
pub trait Stored: DeserializeOwned {
    fn schema_version(&self) -> u32;
}

impl Stored for TrajectoryRecord {
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

impl Stored for Checkpoint {
    fn schema_version(&self) -> u32 {
        self.record.schema_version
    }
}

/// Verifies the checksum, then decodes the record as `T` (the record, or a view of it).
/// `key` only names the object in errors.
pub fn decode_as<T: Stored>(
    key: &str,
    bytes: &[u8],
    expected_sha256: &str,
) -> Result<T, CodecError> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(CodecError::Checksum {
            key: key.to_owned(),
            expected: expected_sha256.to_owned(),
            actual,
        });
    }
    decode_json(key, bytes)
}

/// Decodes a checkpoint. No checksum is kept for one: a corrupt checkpoint fails to
/// decompress or parse, and the attempt starts over.
pub fn decode_checkpoint(key: &str, bytes: &[u8]) -> Result<Checkpoint, CodecError> {
    decode_json(key, bytes)
}

/// The largest size (256 MiB) a frame may state for it to be decompressed in one call
/// into a buffer of that size: beyond, the stream decoder grows its buffer as the data
/// comes, so a corrupt size (checkpoints carry no checksum) cannot allocate more.
const ONE_CALL_LIMIT: u64 = 1 << 28;

/// The stored bytes, decompressed: in one call into a buffer of the size the frame states
/// (what [`encode`] writes), else streamed (records written before sizes were stated, or
/// several frames).
fn decompress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    thread_local! {
        /// A decompression context per thread, made once: readers decode many records.
        static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(bytes)
        && size <= ONE_CALL_LIMIT
    {
        let one_call = CONTEXT.with_borrow_mut(|context| {
            let context = match context {
                Some(context) => context,
                None => context.insert(zstd::bulk::Decompressor::new().ok()?),
            };
            context.decompress(bytes, size as usize).ok()
        });
        if let Some(json) = one_call {
            return Ok(json);
        }
    }
    zstd::decode_all(bytes)
}

/// Decompresses and parses in one pass over the JSON, straight into `T` (no `Value` tree
/// of the conversation). The schema version is checked on what was parsed; only a record
/// that does not parse is skimmed for its version, so that one written by a newer build
/// says so rather than failing on a field this build does not know.
fn decode_json<T: Stored>(key: &str, bytes: &[u8]) -> Result<T, CodecError> {
    let json = decompress(bytes).map_err(|source| CodecError::Decompress {
        key: key.to_owned(),
        source,
    })?;
    let future = |found: u32| {
        (found > SCHEMA_VERSION).then(|| CodecError::FutureSchema {
            key: key.to_owned(),
            found,
        })
    };
    match serde_json::from_slice::<T>(&json) {
        Ok(value) => match future(value.schema_version()) {
            Some(newer) => Err(newer),
            None => Ok(value),
        },
        Err(source) => {
            #[derive(serde::Deserialize)]
            struct Version {
                #[serde(default)]
                schema_version: Option<serde_json::Value>,
            }
            let found = serde_json::from_slice::<Version>(&json)
                .ok()
                .and_then(|v| v.schema_version)
                .and_then(|v| v.as_u64())
                .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX));
            Err(future(found).unwrap_or(CodecError::Json {
                key: key.to_owned(),
                source,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::tests::record;
    use serde_json::{Value, json};

    /// `record` as stored, with `change` applied to its JSON first.
    fn stored(change: impl FnOnce(&mut Value)) -> Encoded {
        let mut json = serde_json::to_value(record()).expect("a record as JSON");
        change(&mut json);
        let bytes = zstd::encode_all(json.to_string().as_bytes(), ZSTD_LEVEL).expect("zstd");
        let sha256 = sha256_hex(&bytes);
        Encoded { bytes, sha256 }
    }

    fn decode(encoded: &Encoded) -> Result<TrajectoryRecord, CodecError> {
        decode_as("k", &encoded.bytes, &encoded.sha256)
    }

    #[test]
    fn a_record_reads_back_and_a_changed_byte_is_caught() {
        let encoded = encode(&record()).expect("encode");
        assert_eq!(decode(&encoded).expect("decode"), record());
        let mut tampered = encoded.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(matches!(
            decode(&tampered),
            Err(CodecError::Checksum { .. })
        ));
    }

    /// Records written before frames stated their size (one stream) still read back.
    #[test]
    fn a_record_streamed_without_its_size_reads_back() {
        let json = serde_json::to_vec(&record()).expect("JSON");
        let bytes = zstd::encode_all(json.as_slice(), ZSTD_LEVEL).expect("zstd");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&bytes).ok(),
            Some(None),
            "a stream states no size"
        );
        let sha256 = sha256_hex(&bytes);
        assert_eq!(
            decode(&Encoded { bytes, sha256 }).expect("decode"),
            record()
        );
        let sized = encode(&record()).expect("encode");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&sized.bytes).ok(),
            Some(Some(json.len() as u64))
        );
    }

    #[test]
    fn a_newer_schema_is_refused_as_such_whether_or_not_it_parses() {
        let newer = SCHEMA_VERSION + 1;
        // Parses as this build's record, but is newer.
        let same_shape = stored(|j| j["schema_version"] = json!(newer));
        assert!(matches!(
            decode(&same_shape),
            Err(CodecError::FutureSchema { found, .. }) if found == newer
        ));
        // A field this build cannot read: still named as a newer schema, not as corrupt.
        let new_shape = stored(|j| {
            j["schema_version"] = json!(newer);
            j["messages"] = json!("a shape of the future");
        });
        assert!(matches!(
            decode(&new_shape),
            Err(CodecError::FutureSchema { found, .. }) if found == newer
        ));
        // The same field in a record of this schema: not a record.
        let broken = stored(|j| j["messages"] = json!("not a list"));
        assert!(matches!(decode(&broken), Err(CodecError::Json { .. })));
    }
}
