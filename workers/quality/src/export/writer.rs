//! Export rows written as Parquet straight from Rust.
//!
//! A row is anything `Serialize` whose fields are the export's columns. Rows become Arrow
//! record batches through arrow-json's serde decoder — in strict mode, so a field without
//! a column is an error, not a silent loss — and the batches go through arrow-rs's Parquet
//! writer (zstd) into one file or into shards of a fixed number of rows. Batches are
//! encoded on a thread of their own while the next one is built, so reading and decoding
//! the records overlaps with compressing the last batch; memory holds three batches at
//! most, whatever the number of rows.

use super::ExportError;
use crate::QualityError;
use crate::dataset::Column;
use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Rows per record batch: an export row carries a whole conversation (hundreds of KB), and
/// three batches are in memory at most (being built, waiting, being written).
pub const BATCH_ROWS: usize = 500;

/// Rows per Parquet row group, as DuckDB wrote them before.
const ROW_GROUP_ROWS: usize = 1_000;

/// The zstd level of export files: 3, zstd's own default, as DuckDB wrote them before.
const ZSTD_LEVEL: i32 = 3;

/// Where an export's rows go.
#[derive(Debug, Clone)]
pub enum Target {
    /// One Parquet file.
    File(PathBuf),
    /// `{dir}/train-{stamp}{i:05}-of-{n:05}.parquet`, `rows_per_shard` rows each (the last
    /// fewer), as Hugging Face names a split's shards.
    Shards {
        dir: PathBuf,
        stamp: String,
        rows_per_shard: u64,
    },
}

/// What the writer thread is sent.
enum Message {
    Batch(RecordBatch),
    /// Every row was sent: close the files and give them their final names. Without it
    /// (the export failed and dropped its writer) the partial files are removed.
    Finish,
}

/// Writes rows as Parquet into a [`Target`]; [`RowWriter::finish`] returns the files.
pub struct RowWriter {
    decoder: Decoder,
    batches: mpsc::Sender<Message>,
    thread: JoinHandle<Result<Vec<PathBuf>, ExportError>>,
    rows: u64,
}

impl RowWriter {
    pub fn create(columns: &[Column], target: Target) -> Result<RowWriter, ExportError> {
        let schema: SchemaRef = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow(), true))
                .collect::<Vec<_>>(),
        ));
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .with_strict_mode(true)
            .build_decoder()
            .map_err(|source| ExportError::Rows { source })?;
        let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(|source| ExportError::Parquet {
            path: target.path().to_owned(),
            source,
        })?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_created_by(format!("synthfleet {}", env!("CARGO_PKG_VERSION")))
            .build();
        let mut files = Files {
            schema,
            properties,
            target,
            open: None,
            written: Vec::new(),
        };
        let (batches, mut received) = mpsc::channel(1);
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(message) = received.blocking_recv() {
                match message {
                    Message::Batch(batch) => {
                        if let Err(e) = files.write(&batch) {
                            files.abandon();
                            return Err(e);
                        }
                    }
                    Message::Finish => return files.finish(),
                }
            }
            files.abandon();
            Ok(Vec::new())
        });
        Ok(RowWriter {
            decoder,
            batches,
            thread,
            rows: 0,
        })
    }

    /// Adds a row; a full batch goes to the writer thread.
    pub async fn push<T: Serialize>(&mut self, row: &T) -> Result<(), ExportError> {
        self.decoder
            .serialize(std::slice::from_ref(row))
            .map_err(|source| ExportError::Rows { source })?;
        self.rows += 1;
        if self.decoder.len() >= BATCH_ROWS {
            self.send_batch().await?;
        }
        Ok(())
    }

    /// Sends the buffered rows to the writer thread (waiting while it writes the last).
    async fn send_batch(&mut self) -> Result<(), ExportError> {
        match self
            .decoder
            .flush()
            .map_err(|source| ExportError::Rows { source })?
        {
            Some(batch) => self.send(Message::Batch(batch)).await,
            None => Ok(()),
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), ExportError> {
        if self.batches.send(message).await.is_err() {
            // The thread stops early only at a write error, which it returns.
            return Err(match (&mut self.thread).await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => ExportError::WriterStopped,
                Err(e) => ExportError::Task(e),
            });
        }
        Ok(())
    }

    /// Writes the last rows and closes the files: the paths written, and the rows.
    pub async fn finish(mut self) -> Result<(Vec<PathBuf>, u64), ExportError> {
        self.send_batch().await?;
        self.send(Message::Finish).await?;
        let paths = self.thread.await.map_err(ExportError::Task)??;
        Ok((paths, self.rows))
    }
}

impl Target {
    /// The file, or the shards' directory.
    fn path(&self) -> &Path {
        match self {
            Target::File(path) => path,
            Target::Shards { dir, .. } => dir,
        }
    }

    fn rows_per_file(&self) -> u64 {
        match self {
            Target::File(_) => u64::MAX,
            Target::Shards { rows_per_shard, .. } => *rows_per_shard,
        }
    }

    /// Where file `index` is written: a hidden name, so that no reader globbing the
    /// finished files sees it before it is renamed to its final name.
    fn partial(&self, index: usize) -> PathBuf {
        match self {
            Target::File(path) => path.with_file_name(format!(
                ".{}.partial",
                path.file_name().unwrap_or_default().to_string_lossy()
            )),
            Target::Shards { dir, stamp, .. } => {
                dir.join(format!(".train-{stamp}{index:05}.parquet.partial"))
            }
        }
    }

    /// The final name of file `index` of `count`.
    fn finished(&self, index: usize, count: usize) -> PathBuf {
        match self {
            Target::File(path) => path.clone(),
            Target::Shards { dir, stamp, .. } => {
                dir.join(format!("train-{stamp}{index:05}-of-{count:05}.parquet"))
            }
        }
    }
}

/// The Parquet files of one export, on the thread that writes them.
struct Files {
    schema: SchemaRef,
    properties: WriterProperties,
    target: Target,
    /// The file being written and its rows so far.
    open: Option<(ArrowWriter<File>, u64)>,
    /// The partial paths of the files written, in order.
    written: Vec<PathBuf>,
}

impl Files {
    /// Appends `batch`, starting a new file whenever one is full.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        let per_file = self.target.rows_per_file();
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (mut writer, rows) = match self.open.take() {
                Some(open) => open,
                None => (self.start()?, 0),
            };
            let room = usize::try_from(per_file - rows).unwrap_or(usize::MAX);
            let take = room.min(batch.num_rows() - offset);
            let path = self.written.last().cloned().unwrap_or_default();
            writer
                .write(&batch.slice(offset, take))
                .map_err(|source| ExportError::Parquet { path, source })?;
            offset += take;
            let rows = rows + take as u64;
            if rows < per_file {
                self.open = Some((writer, rows));
            } else {
                self.close(writer)?;
            }
        }
        Ok(())
    }

    /// Opens the next file.
    fn start(&mut self) -> Result<ArrowWriter<File>, ExportError> {
        let path = self.target.partial(self.written.len());
        let file = File::create(&path).map_err(|source| QualityError::Io {
            path: path.clone(),
            source,
        })?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.properties.clone()))
            .map_err(|source| ExportError::Parquet {
                path: path.clone(),
                source,
            })?;
        self.written.push(path);
        Ok(writer)
    }

    fn close(&self, writer: ArrowWriter<File>) -> Result<(), ExportError> {
        writer.close().map_err(|source| ExportError::Parquet {
            path: self.written.last().cloned().unwrap_or_default(),
            source,
        })?;
        Ok(())
    }

    /// Removes the files of an export that failed: none of them is complete.
    fn abandon(&mut self) {
        self.open = None;
        for partial in &self.written {
            if let Err(e) = std::fs::remove_file(partial) {
                tracing::warn!(path = %partial.display(), error = %e, "removing a partial export file");
            }
        }
    }

    /// Closes the last file (an export of no rows is one file of no rows, with the
    /// schema) and gives every file its final name.
    fn finish(mut self) -> Result<Vec<PathBuf>, ExportError> {
        let last = match self.open.take() {
            Some((writer, _)) => Some(writer),
            None if self.written.is_empty() => Some(self.start()?),
            None => None,
        };
        if let Some(writer) = last {
            self.close(writer)?;
        }
        let count = self.written.len();
        self.written
            .iter()
            .enumerate()
            .map(|(index, partial)| {
                let path = self.target.finished(index, count);
                std::fs::rename(partial, &path).map_err(|source| QualityError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok(path)
            })
            .collect()
    }
}

/// The rows of the Parquet files `train-*.parquet` in `dir`, from their footers.
pub fn count_rows(dir: &Path) -> Result<u64, ExportError> {
    let io = |source| QualityError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut rows = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !(name.starts_with("train-") && name.ends_with(".parquet")) {
            continue;
        }
        let file = File::open(&path).map_err(|source| QualityError::Io {
            path: path.clone(),
            source,
        })?;
        let reader = SerializedFileReader::new(file).map_err(|source| ExportError::Parquet {
            path: path.clone(),
            source,
        })?;
        rows += u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    }
    Ok(rows)
}
