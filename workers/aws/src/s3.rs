//! The S3 object store: SHA-256 in the object's metadata, verified on every read;
//! multipart uploads for large objects.

use crate::aws_error;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use synthfleet_core::codec::sha256_hex;
use synthfleet_core::ports::{ObjectInfo, ObjectStore, StoreError};
use synthfleet_core::trajectory::expires;

const BACKEND: &str = "S3";
const SHA_KEY: &str = "sha256";
/// Objects that expire (failed records, checkpoints: [`expires`]) carry this tag; the
/// bucket's lifecycle rule expires tagged objects after 30 days (S3 rules cannot match a
/// prefix in the middle).
pub const FAILED_TAG: (&str, &str) = ("synthfleet-status", "failed");

fn tagging(key: &str) -> Option<String> {
    expires(key).then(|| format!("{}={}", FAILED_TAG.0, FAILED_TAG.1))
}
/// Objects above this size are uploaded in parts of this size.
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3ObjectStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str) -> S3ObjectStore {
        S3ObjectStore {
            client,
            bucket: bucket.to_owned(),
        }
    }

    fn op(&self, verb: &str, key: &str) -> String {
        format!("{verb} s3://{}/{key}", self.bucket)
    }

    /// Whether `key` exists with this SHA-256 metadata and size.
    async fn has_object(&self, key: &str, sha: &str, size: usize) -> bool {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => {
                head.metadata()
                    .and_then(|m| m.get(SHA_KEY))
                    .map(String::as_str)
                    == Some(sha)
                    && head.content_length() == Some(size as i64)
            }
            Err(_) => false,
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha: String,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .metadata(SHA_KEY, &sha)
            .set_tagging(tagging(key))
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, self.op("starting a multipart upload of", key), e))?;
        let sha = sha.as_str();
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                StoreError::backend(BACKEND, self.op("uploading", key), "no upload id returned")
            })?
            .to_owned();
        let result = async {
            let mut parts = Vec::new();
            for (index, chunk) in bytes.chunks(PART_SIZE).enumerate() {
                let number = index as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| {
                        aws_error(
                            BACKEND,
                            self.op(&format!("uploading part {number} of"), key),
                            e,
                        )
                    })?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                );
            }
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            if let Err(e) = completed {
                // Some S3-compatible servers (moto, older LocalStack) answer with a body the
                // SDK cannot parse although the upload completed: trust the object only if it
                // is there with our checksum and size.
                if !self.has_object(key, sha, bytes.len()).await {
                    return Err(aws_error(
                        BACKEND,
                        self.op("completing the upload of", key),
                        e,
                    ));
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            // Nothing half-written lingers: the parts are discarded.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let sha = sha256_hex(&bytes);
        if bytes.len() > PART_SIZE {
            return self.put_multipart(key, bytes, sha).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .metadata(SHA_KEY, sha)
            .set_tagging(tagging(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, self.op("writing", key), e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound {
                    what: format!("object s3://{}/{key}", self.bucket),
                });
            }
            Err(e) => return Err(aws_error(BACKEND, self.op("reading", key), e)),
        };
        let expected = output.metadata().and_then(|m| m.get(SHA_KEY)).cloned();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| aws_error(BACKEND, self.op("reading the body of", key), e))?
            .into_bytes()
            .to_vec();
        let actual = sha256_hex(&bytes);
        match expected {
            Some(expected) if expected == actual => Ok(bytes),
            Some(expected) => Err(StoreError::Corrupt {
                what: format!("object s3://{}/{key}", self.bucket),
                detail: format!("sha256 is {actual}, expected {expected}"),
            }),
            None => Err(StoreError::Corrupt {
                what: format!("object s3://{}/{key}", self.bucket),
                detail: "it has no sha256 metadata (not written by synthfleet?)".into(),
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, self.op("deleting", key), e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error(BACKEND, self.op("listing", prefix), e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let modified = object
                    .last_modified()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_else(Utc::now);
                out.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified,
                });
            }
        }
        Ok(out)
    }
}
