//! How a trajectory record is stored: JSON, zstd-compressed, SHA-256 of the stored bytes.

use crate::resume::Checkpoint;
use crate::trajectory::{SCHEMA_VERSION, TrajectoryRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

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
    let bytes = zstd::encode_all(json.as_slice(), ZSTD_LEVEL).map_err(CodecError::Encode)?;
    let sha256 = sha256_hex(&bytes);
    Ok(Encoded { bytes, sha256 })
}

/// Verifies the checksum, then decodes. `key` only names the object in errors.
pub fn decode(
    key: &str,
    bytes: &[u8],
    expected_sha256: &str,
) -> Result<TrajectoryRecord, CodecError> {
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

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, CodecError> {
    let json = zstd::decode_all(bytes).map_err(|source| CodecError::Decompress {
        key: key.to_owned(),
        source,
    })?;
    // The version first (a skim, keeping nothing else), then the record straight from
    // the bytes: no intermediate `Value` tree of the whole conversation.
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        schema_version: Option<serde_json::Value>,
    }
    let json_error = |source| CodecError::Json {
        key: key.to_owned(),
        source,
    };
    let version: Version = serde_json::from_slice(&json).map_err(json_error)?;
    let found = version.schema_version.and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    if found > SCHEMA_VERSION {
        return Err(CodecError::FutureSchema {
            key: key.to_owned(),
            found,
        });
    }
    serde_json::from_slice(&json).map_err(json_error)
}
