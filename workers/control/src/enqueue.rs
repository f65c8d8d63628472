//! The enqueue function: a campaign file uploaded to S3 (under the trigger's prefix), a
//! schedule's firing (recurring campaigns) or a direct call → the campaign validated with
//! every task (nothing is written on an error), its spec stored, its campaign item created
//! with its budget and its samples enqueued — through [`synthfleet_backend::submit`], the
//! path `synthfleet submit` takes.
//!
//! Idempotent per run: a retried invocation finds its samples marked and enqueues nothing
//! twice. A schedule's firing is its own run, named `{name}-{yyyymmddHHMM}` after the
//! firing's scheduled time, with its own budget.
//!
//! S3 delivers an event at least once, and Lambda retries a failed asynchronous
//! invocation for hours: an upload's event is told from a new upload of the file by the
//! object's version id, eTag and the event's sequencer ([`Trigger::Upload`]). A repeat —
//! the same event again, an older one late, a firing retried — leaves the campaign as it
//! is (a `done` campaign stays done) and says so (`redelivered`); a new upload is the
//! user's intent and runs the campaign again, sending only the samples without a result.
//!
//! The campaign file's task sources and template directory are read from S3 beside it
//! (paths relative to the file, as on disk), into a scratch directory, and loaded by
//! [`synthfleet_tasks::load_campaign`] exactly as the CLI loads them.

use crate::{ControlError, deployment, payload};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};
use synthfleet_backend::Backend;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::gold;
use synthfleet_core::lifecycle::{Trigger, Upload};
use tracing::info;

/// What an invocation carries.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Event {
    /// An S3 event notification (`ObjectCreated`).
    Upload {
        #[serde(rename = "Records")]
        records: Vec<Record>,
    },
    /// A direct call or a schedule's target input: `{"campaign_key": "campaigns/x.toml",
    /// "scheduled_time": "<aws.scheduler.scheduled-time>"}`.
    Direct {
        campaign_key: String,
        #[serde(default)]
        scheduled_time: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Deserialize)]
struct Record {
    s3: S3Entity,
}

#[derive(Debug, Deserialize)]
struct S3Entity {
    bucket: Named,
    object: Key,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Key {
    key: String,
    #[serde(default, rename = "eTag")]
    etag: Option<String>,
    /// `null` in a bucket without versioning.
    #[serde(default, rename = "versionId")]
    version_id: Option<String>,
    #[serde(default)]
    sequencer: Option<String>,
}

/// One campaign run enqueued.
#[derive(Debug, Serialize, PartialEq)]
pub struct Enqueued {
    pub campaign: String,
    pub enqueued: u64,
    pub already_done: u64,
    pub already_queued: u64,
    /// Tasks left out as broken by gold validation.
    pub excluded: Vec<String>,
    /// The event was applied before (delivered again, an older one late, a firing
    /// retried): the campaign was left as it was.
    pub redelivered: bool,
    /// The campaign was `done` and runs again (a new upload of its file).
    pub reopened: bool,
}

pub struct Enqueuer {
    pub backend: Backend,
    /// Reads campaign files as users uploaded them (no checksum metadata of ours).
    pub s3: aws_sdk_s3::Client,
    /// The deployment's bucket: where direct and scheduled calls find campaign files.
    pub bucket: String,
}

impl Enqueuer {
    /// The deployment named by the function's `SYNTHFLEET_*` environment.
    pub async fn from_env() -> Result<Enqueuer, ControlError> {
        let (clients, names) = deployment().await?;
        Ok(Enqueuer {
            s3: clients.s3.clone(),
            bucket: names.bucket.clone(),
            backend: Backend::aws(&clients, names),
        })
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Vec<Enqueued>, ControlError> {
        let runs: Vec<(String, String, Trigger)> = match payload(event)? {
            // Task files are uploaded beside campaign files: only `.toml` uploads start runs.
            Event::Upload { records } => records
                .into_iter()
                .map(|r| {
                    let (bucket, key) = (r.s3.bucket.name, s3_key(&r.s3.object.key));
                    let upload = Upload {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        version_id: r.s3.object.version_id,
                        etag: r.s3.object.etag,
                        sequencer: r.s3.object.sequencer,
                    };
                    (bucket, key, Trigger::Upload(upload))
                })
                .filter(|(_, key, _)| key.ends_with(".toml"))
                .collect(),
            Event::Direct {
                campaign_key,
                scheduled_time,
            } => {
                let trigger = match scheduled_time {
                    Some(scheduled_time) => Trigger::Firing { scheduled_time },
                    None => Trigger::Request,
                };
                vec![(self.bucket.clone(), campaign_key, trigger)]
            }
        };
        let mut out = Vec::new();
        for (bucket, key, trigger) in runs {
            out.push(self.enqueue(&bucket, &key, &trigger).await?);
        }
        Ok(out)
    }

    /// Enqueues the campaign file at `s3://{bucket}/{key}` (the version an upload event
    /// names, if it names one); for a schedule's firing, as its own run.
    pub async fn enqueue(
        &self,
        bucket: &str,
        key: &str,
        trigger: &Trigger,
    ) -> Result<Enqueued, ControlError> {
        let scratch = tempfile::tempdir().map_err(|source| ControlError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let version = match trigger {
            Trigger::Upload(upload) => upload.version_id.as_deref(),
            Trigger::Request | Trigger::Firing { .. } => None,
        };
        let file = self
            .fetch_campaign(bucket, key, version, scratch.path())
            .await?;
        let mut campaign = synthfleet_tasks::load_campaign(&file)?;
        if let Trigger::Firing { scheduled_time: at } = *trigger {
            let base = campaign.name().to_owned();
            campaign.config.name = run_name(&base, at);
            // A run is vetted by its campaign's gold report (`validate --gold` ran once).
            let objects = self.backend.store().objects.as_ref();
            if campaign.config.skip_broken_tasks
                && let Some(mut report) = gold::get_report(objects, &base).await?
            {
                report.campaign = campaign.name().to_owned();
                gold::put_report(objects, &report).await?;
            }
        }
        let report = self.backend.submit_triggered(&campaign, trigger).await?;
        if report.redelivered {
            info!(campaign = %campaign.name(), bucket, key, ?trigger, enqueued = report.enqueued, "a repeat of an event already applied (delivered again, or older than the last upload): the campaign is left as it was");
        } else {
            info!(campaign = %campaign.name(), enqueued = report.enqueued, already_done = report.already_done, already_queued = report.already_queued, reopened = report.reopened, "campaign enqueued");
        }
        Ok(Enqueued {
            campaign: campaign.name().to_owned(),
            enqueued: report.enqueued,
            already_done: report.already_done,
            already_queued: report.already_queued,
            excluded: report.excluded,
            redelivered: report.redelivered,
            reopened: report.reopened,
        })
    }

    /// Downloads the campaign file (at `version`, if given) and everything it names
    /// relative to itself.
    async fn fetch_campaign(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        scratch: &Path,
    ) -> Result<PathBuf, ControlError> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let file = scratch.join(name);
        let text = String::from_utf8(self.get(bucket, key, version).await?).map_err(|source| {
            ControlError::NotUtf8 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source,
            }
        })?;
        write(&file, text.as_bytes())?;
        let config = Campaign::parse(&file, &text)?;
        let prefix = &key[..key.len() - name.len()];
        let mut relative: Vec<&Path> = config.tasks.iter().map(|s| s.path.as_path()).collect();
        relative.extend(config.scaffold.templates.as_deref());
        for path in relative {
            let Some(rel) = plain_relative(path) else {
                return Err(ControlError::NotRelative {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    path: path.to_owned(),
                });
            };
            self.fetch_tree(bucket, &format!("{prefix}{rel}"), &scratch.join(&rel))
                .await?;
        }
        Ok(file)
    }

    /// Downloads one object, or every object under `key/` (a dataset directory).
    async fn fetch_tree(&self, bucket: &str, key: &str, dest: &Path) -> Result<(), ControlError> {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(key)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error(bucket, key, "listing"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        let mut found = false;
        for object_key in &keys {
            let object_key = object_key.as_str();
            let target = if object_key == key {
                dest.to_owned()
            } else if let Some(rest) = object_key.strip_prefix(&format!("{key}/")) {
                match plain_relative(Path::new(rest)) {
                    Some(rest) => dest.join(rest),
                    None => continue,
                }
            } else {
                continue;
            };
            write(&target, &self.get(bucket, object_key, None).await?)?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(ControlError::MissingObject {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
        }
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, ControlError> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(s3_error(bucket, key, "reading"))?;
        let bytes = out.body.collect().await.map_err(s3_error(
            bucket,
            key,
            "reading the body of the object",
        ))?;
        Ok(bytes.into_bytes().to_vec())
    }
}

/// The run of a scheduled campaign fired at `at`.
pub fn run_name(campaign: &str, at: DateTime<Utc>) -> String {
    format!("{campaign}-{}", at.format("%Y%m%d%H%M"))
}

/// An S3 event's object key, decoded (`+` is a space, then percent-escapes).
fn s3_key(raw: &str) -> String {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `path` as a plain relative path (no root, no `..`), or `None`.
fn plain_relative(path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    parts.filter(|p| !p.is_empty()).map(|p| p.join("/"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

/// An S3 call's error on `s3://{bucket}/{key}`, the SDK's error kept as the source.
fn s3_error<E: std::error::Error + Send + Sync + 'static>(
    bucket: &str,
    key: &str,
    operation: &'static str,
) -> impl FnOnce(E) -> ControlError {
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    move |e| ControlError::S3 {
        bucket,
        key,
        operation,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_decoded_and_paths_stay_inside() {
        assert_eq!(
            s3_key("campaigns/my+run%2B1.toml"),
            "campaigns/my run+1.toml"
        );
        assert_eq!(s3_key("a%zz"), "a%zz");
        assert_eq!(
            plain_relative(Path::new("./tasks/a.jsonl")).as_deref(),
            Some("tasks/a.jsonl")
        );
        assert_eq!(plain_relative(Path::new("../secret")), None);
        assert_eq!(plain_relative(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn a_firing_is_its_own_run() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T05:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        assert_eq!(run_name("nightly", at), "nightly-202611280500");
    }
}
