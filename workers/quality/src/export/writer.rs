//! Export rows written as Parquet straight from Rust, on every core.
//!
//! A row is anything `Serialize` whose fields are the export's columns. Rows are cut into
//! row groups (never across two files), and each row group is encoded on one of the
//! encoder threads, one per core (8 at most): its rows become Arrow arrays through
//! serde_arrow's builders, straight from the rows' fields with no intermediate form (the
//! first row of each row group is traced first, so that a field without a column is an
//! error, not a silent loss), and the batch becomes compressed column chunks through
//! arrow-rs's column writers (zstd). Row group `k` goes to encoder `k mod n`, and the file
//! thread takes the encoded row groups back in the same rotation, so they are appended in
//! row order with no reordering. Encoding a row group overlaps with reading the next
//! records and with the other encoders; memory holds about two row groups per encoder,
//! whatever the number of rows.

use super::ExportError;
use crate::QualityError;
use crate::dataset::{Column, ColumnType, MESSAGE_FREE_TEXT};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc as sync_mpsc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Rows per Parquet row group, the unit one encoder encodes: an export row carries a whole
/// conversation (about 150 KB in a 60-step rollout), so a row group is some 40 MB before
/// compression, and about two per core are in flight (500 rows cost 300 MB more at the
/// peak, for no speed).
const ROW_GROUP_ROWS: usize = 250;

/// Encoder threads at most, one per core below that: each holds about two row groups, so
/// the export's memory stays bounded on a machine of many cores too.
const MAX_ENCODERS: usize = 8;

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

/// What an encoder is sent.
enum Job<T> {
    /// The rows of one row group, the `index`-th of file `file`.
    Encode {
        file: usize,
        index: usize,
        rows: Vec<T>,
    },
    /// Every row was sent: pass it on to the file thread, which closes the files and
    /// gives them their final names. Without it (the export failed and dropped its
    /// writer) the partial files are removed.
    Finish,
}

/// What an encoder hands the file thread.
enum Encoded {
    RowGroup {
        file: usize,
        chunks: Vec<ArrowColumnChunk>,
    },
    Finish,
}

/// Writes rows as Parquet into a [`Target`]; [`RowWriter::finish`] returns the files.
pub struct RowWriter<T> {
    /// The rows of the row group being gathered.
    pending: Vec<T>,
    /// Where the next row group goes: its file, its index in the file, and the rows the
    /// file has before it.
    file: usize,
    index: usize,
    in_file: u64,
    rows_per_file: u64,
    /// Row groups sent so far: the next goes to encoder `sent % encoders.len()`.
    sent: usize,
    encoders: Vec<mpsc::Sender<Job<T>>>,
    files: JoinHandle<Result<Vec<PathBuf>, ExportError>>,
    rows: u64,
}

impl<T: Serialize + Send + 'static> RowWriter<T> {
    pub fn create(columns: &[Column], target: Target) -> Result<RowWriter<T>, ExportError> {
        let schema: SchemaRef = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow(), true))
                .collect::<Vec<_>>(),
        ));
        let parquet = |source| ExportError::Parquet {
            path: target.path().to_owned(),
            source,
        };
        let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(parquet)?;
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_created_by(format!("synthfleet {}", env!("CARGO_PKG_VERSION")));
        // No reader filters row groups by the text of a conversation: its leaves get no
        // min/max statistics, which would compare every message with two others. Its free
        // text (contents, reasoning, tool arguments) is all but unique: no dictionary
        // either, which would hash and copy the first megabyte of each column chunk before
        // falling back to plain values.
        let conversations: Vec<&str> = columns
            .iter()
            .filter(|c| c.ty == ColumnType::Messages)
            .map(|c| c.name)
            .collect();
        let leaves = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(parquet)?;
        for leaf in leaves.columns() {
            let path = leaf.path().parts();
            if conversations.contains(&path[0].as_str()) {
                properties = properties
                    .set_column_statistics_enabled(leaf.path().clone(), EnabledStatistics::None);
                if path
                    .last()
                    .is_some_and(|l| MESSAGE_FREE_TEXT.contains(&l.as_str()))
                {
                    properties =
                        properties.set_column_dictionary_enabled(leaf.path().clone(), false);
                }
            }
        }
        let properties = properties.build();
        // Column writers depend on the schema and the properties only, the same for every
        // file: a writer over nothing gives the encoders their factory.
        let (_, factory) =
            ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(properties.clone()))
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(parquet)?;
        let factory = Arc::new(factory);
        let rows_per_file = target.rows_per_file();
        let n = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_ENCODERS);
        let mut encoders = Vec::with_capacity(n);
        let mut encoded = Vec::with_capacity(n);
        for _ in 0..n {
            let (jobs, received) = mpsc::channel(1);
            let (done, taken) = sync_mpsc::sync_channel(1);
            let (schema, factory) = (schema.clone(), factory.clone());
            tokio::task::spawn_blocking(move || encoder(received, done, schema, factory));
            encoders.push(jobs);
            encoded.push(taken);
        }
        let files = Files {
            schema,
            properties,
            target,
            open: None,
            written: Vec::new(),
        };
        let files = tokio::task::spawn_blocking(move || files.take(encoded));
        Ok(RowWriter {
            pending: Vec::with_capacity(ROW_GROUP_ROWS),
            file: 0,
            index: 0,
            in_file: 0,
            rows_per_file,
            sent: 0,
            encoders,
            files,
            rows: 0,
        })
    }

    /// Adds a row; a full row group goes to its encoder (waiting while it is busy).
    pub async fn push(&mut self, row: T) -> Result<(), ExportError> {
        self.pending.push(row);
        self.rows += 1;
        let room = self.rows_per_file - self.in_file;
        if self.pending.len() >= ROW_GROUP_ROWS || self.pending.len() as u64 >= room {
            self.send_row_group().await?;
        }
        Ok(())
    }

    /// Sends the gathered rows as the next row group.
    async fn send_row_group(&mut self) -> Result<(), ExportError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(ROW_GROUP_ROWS));
        let (file, index) = (self.file, self.index);
        self.in_file += rows.len() as u64;
        if self.in_file >= self.rows_per_file {
            (self.file, self.index, self.in_file) = (file + 1, 0, 0);
        } else {
            self.index += 1;
        }
        self.send(Job::Encode { file, index, rows }).await
    }

    async fn send(&mut self, job: Job<T>) -> Result<(), ExportError> {
        let encoder = &self.encoders[self.sent % self.encoders.len()];
        self.sent += 1;
        if encoder.send(job).await.is_err() {
            // An encoder stops early only at an error, which the file thread returns.
            return Err(match (&mut self.files).await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => ExportError::WriterStopped,
                Err(e) => ExportError::Task(e),
            });
        }
        Ok(())
    }

    /// Writes the last rows and closes the files: the paths written, and the rows.
    pub async fn finish(mut self) -> Result<(Vec<PathBuf>, u64), ExportError> {
        self.send_row_group().await?;
        self.send(Job::Finish).await?;
        drop(std::mem::take(&mut self.encoders));
        let paths = self.files.await.map_err(ExportError::Task)??;
        Ok((paths, self.rows))
    }
}

/// An encoder thread: row groups in, compressed column chunks out, until `Finish` (passed
/// on) or an error (passed on, then it stops).
fn encoder<T: Serialize>(
    mut jobs: mpsc::Receiver<Job<T>>,
    done: sync_mpsc::SyncSender<Result<Encoded, ExportError>>,
    schema: SchemaRef,
    factory: Arc<ArrowRowGroupWriterFactory>,
) {
    let mut builder = match serde_arrow::ArrayBuilder::from_arrow(schema.fields()) {
        Ok(builder) => builder,
        Err(source) => {
            // The file thread reports it when it reaches this encoder's first row group.
            let _ = done.send(Err(ExportError::Rows { source }));
            return;
        }
    };
    while let Some(job) = jobs.blocking_recv() {
        let (file, index, rows) = match job {
            Job::Encode { file, index, rows } => (file, index, rows),
            Job::Finish => {
                let _ = done.send(Ok(Encoded::Finish));
                return;
            }
        };
        let encoded = check_fields(schema.fields(), &rows[..rows.len().min(1)])
            .and_then(|()| {
                builder
                    .extend(&rows)
                    .and_then(|()| builder.to_record_batch())
                    .map_err(|source| ExportError::Rows { source })
            })
            .and_then(|batch| {
                drop(rows);
                encode(&schema, &factory, index, &batch).map_err(|source| ExportError::Encode {
                    file,
                    index,
                    source,
                })
            })
            .map(|chunks| Encoded::RowGroup { file, chunks });
        let failed = encoded.is_err();
        if done.send(encoded).is_err() || failed {
            return;
        }
    }
}

/// Fails when `rows` have a field that no column holds (serde_arrow's builders would drop
/// it silently): the fields are traced from the rows themselves, nested ones included.
fn check_fields<T: Serialize>(columns: &Fields, rows: &[T]) -> Result<(), ExportError> {
    use serde_arrow::schema::{SchemaLike, TracingOptions};
    let options = TracingOptions::default()
        .allow_null_fields(true)
        .enums_without_data_as_strings(true);
    let traced = Vec::<FieldRef>::from_samples(rows, options)
        .map_err(|source| ExportError::Rows { source })?;
    match undeclared(
        &DataType::Struct(columns.clone()),
        &DataType::Struct(traced.into()),
    ) {
        Some(field) => Err(ExportError::Undeclared { field }),
        None => Ok(()),
    }
}

/// The path of the first field of `traced` that `declared` lacks, looking into structs
/// and lists.
fn undeclared(declared: &DataType, traced: &DataType) -> Option<String> {
    match (declared, traced) {
        (DataType::Struct(declared), DataType::Struct(traced)) => {
            traced
                .iter()
                .find_map(|field| match declared.find(field.name()) {
                    None => Some(field.name().clone()),
                    Some((_, column)) => undeclared(column.data_type(), field.data_type())
                        .map(|inner| format!("{}.{inner}", field.name())),
                })
        }
        (
            DataType::List(declared) | DataType::LargeList(declared),
            DataType::List(traced) | DataType::LargeList(traced),
        ) => undeclared(declared.data_type(), traced.data_type()),
        _ => None,
    }
}

/// The compressed column chunks of one row group.
fn encode(
    schema: &SchemaRef,
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    batch: &arrow_array::RecordBatch,
) -> Result<Vec<ArrowColumnChunk>, ParquetError> {
    let mut writers = factory.create_column_writers(index)?.into_iter();
    let mut chunks = Vec::with_capacity(writers.len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column)? {
            let mut writer = writers.next().ok_or_else(|| {
                ParquetError::General(format!(
                    "no column writer left for a leaf of `{}`",
                    field.name()
                ))
            })?;
            writer.write(&leaf)?;
            chunks.push(writer.close()?);
        }
    }
    Ok(chunks)
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
    /// The file being written, and its index.
    open: Option<(SerializedFileWriter<File>, usize)>,
    /// The partial paths of the files written, in order.
    written: Vec<PathBuf>,
}

impl Files {
    /// Takes the encoded row groups from the encoders in turn (row group `k` from encoder
    /// `k mod n`) and appends them, until an encoder passes on `Finish`.
    fn take(
        mut self,
        encoders: Vec<sync_mpsc::Receiver<Result<Encoded, ExportError>>>,
    ) -> Result<Vec<PathBuf>, ExportError> {
        for encoder in encoders.iter().cycle() {
            let appended = match encoder.recv() {
                Ok(Ok(Encoded::RowGroup { file, chunks })) => self.append(file, chunks),
                Ok(Ok(Encoded::Finish)) => return self.finish(),
                Ok(Err(e)) => Err(e),
                // The export stopped before it finished: no file here is complete.
                Err(sync_mpsc::RecvError) => break,
            };
            if let Err(e) = appended {
                self.abandon();
                return Err(e);
            }
        }
        self.abandon();
        Ok(Vec::new())
    }

    /// Appends a row group to file `file`, closing the file before it when it is new.
    fn append(&mut self, file: usize, chunks: Vec<ArrowColumnChunk>) -> Result<(), ExportError> {
        let mut writer = match self.open.take() {
            Some((writer, open)) if open == file => writer,
            earlier => {
                if let Some((writer, _)) = earlier {
                    self.close(writer)?;
                }
                self.start()?
            }
        };
        let path = self.written.last().cloned().unwrap_or_default();
        let parquet = |source| ExportError::Parquet {
            path: path.clone(),
            source,
        };
        let mut row_group = writer.next_row_group().map_err(parquet)?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group).map_err(parquet)?;
        }
        row_group.close().map_err(parquet)?;
        self.open = Some((writer, file));
        Ok(())
    }

    /// Opens the next file (with the Arrow schema in its metadata, as `ArrowWriter`
    /// writes it, so readers get the same types back).
    fn start(&mut self) -> Result<SerializedFileWriter<File>, ExportError> {
        let path = self.target.partial(self.written.len());
        let file = File::create(&path).map_err(|source| QualityError::Io {
            path: path.clone(),
            source,
        })?;
        let (writer, _) =
            ArrowWriter::try_new(file, self.schema.clone(), Some(self.properties.clone()))
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(|source| ExportError::Parquet {
                    path: path.clone(),
                    source,
                })?;
        self.written.push(path);
        Ok(writer)
    }

    fn close(&self, writer: SerializedFileWriter<File>) -> Result<(), ExportError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::col;
    use arrow_array::{Array, StringArray, UInt32Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[derive(Serialize)]
    struct Small {
        instance_id: String,
        n_steps: u32,
    }

    const COLUMNS: &[Column] = &[
        col("instance_id", ColumnType::Varchar, "id"),
        col("n_steps", ColumnType::UInteger, "n"),
    ];

    fn shards(dir: &Path, rows_per_shard: u64) -> Target {
        Target::Shards {
            dir: dir.to_owned(),
            stamp: String::new(),
            rows_per_shard,
        }
    }

    /// Every row of `path` in order, and the rows of each of its row groups.
    fn read(path: &Path) -> (Vec<(String, u32)>, Vec<i64>) {
        let file = File::open(path).expect("open");
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
        let groups = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        let mut rows = Vec::new();
        for batch in builder.build().expect("reader") {
            let batch = batch.expect("a batch");
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings");
            let steps = batch
                .column(1)
                .as_any()
                .downcast_ref::<UInt32Array>()
                .expect("u32");
            rows.extend((0..batch.num_rows()).map(|i| (ids.value(i).to_owned(), steps.value(i))));
        }
        (rows, groups)
    }

    /// Row groups are encoded on several threads and must still land in row order, cut at
    /// every shard's end and at the row-group size, in shards named as Hugging Face does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_land_in_order_in_full_shards_of_bounded_row_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n: u32 = 3_210;
        let mut writer = RowWriter::create(COLUMNS, shards(dir.path(), 1_200)).expect("writer");
        for i in 0..n {
            writer
                .push(Small {
                    instance_id: format!("task-{i:05}"),
                    n_steps: i,
                })
                .await
                .expect("push");
        }
        let (files, rows) = writer.finish().await.expect("finish");
        assert_eq!(rows, u64::from(n));
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "train-00000-of-00003.parquet",
                "train-00001-of-00003.parquet",
                "train-00002-of-00003.parquet"
            ]
        );
        let mut all = Vec::new();
        let mut shard_rows = Vec::new();
        for file in &files {
            let (rows, groups) = read(file);
            assert!(
                groups.iter().all(|&g| 0 < g && g <= ROW_GROUP_ROWS as i64),
                "{groups:?}"
            );
            assert_eq!(groups.iter().sum::<i64>(), rows.len() as i64);
            shard_rows.push(rows.len());
            all.extend(rows);
        }
        assert_eq!(shard_rows, [1_200, 1_200, 810]);
        let expected: Vec<(String, u32)> = (0..n).map(|i| (format!("task-{i:05}"), i)).collect();
        assert_eq!(all, expected);
        assert_eq!(count_rows(dir.path()).expect("count"), u64::from(n));
        // No partial file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 3);
    }

    /// A row that does not fit the columns fails the export, and leaves no file behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_that_does_not_fit_fails_the_export_and_leaves_no_file() {
        #[derive(Serialize)]
        struct Extra {
            instance_id: String,
            n_steps: u32,
            surplus: bool,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = RowWriter::create(COLUMNS, shards(dir.path(), 100)).expect("writer");
        let mut failed = None;
        for i in 0..2_000 {
            let row = Extra {
                instance_id: format!("t{i}"),
                n_steps: i,
                surplus: true,
            };
            if let Err(e) = writer.push(row).await {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => e,
            None => writer.finish().await.expect_err("a field without a column"),
        };
        assert!(
            matches!(&error, ExportError::Undeclared { field } if field == "surplus"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    /// The check looks into the conversation's messages and their tool calls: a field
    /// there without a column is named by its path; the real messages fit.
    #[test]
    fn a_nested_field_without_a_column_is_found_and_real_messages_fit() {
        use synthfleet_core::trajectory::{ChatMessage, FunctionCall, Role, ToolCall};
        let columns: Fields =
            vec![Field::new("messages", ColumnType::Messages.arrow(), true)].into();
        #[derive(Serialize)]
        struct Message {
            role: &'static str,
            content: &'static str,
            name: &'static str,
        }
        #[derive(Serialize)]
        struct Named {
            messages: Vec<Message>,
        }
        let named = Named {
            messages: vec![Message {
                role: "user",
                content: "hi",
                name: "alice",
            }],
        };
        let error = check_fields(&columns, &[named]).expect_err("an undeclared field");
        assert!(
            matches!(&error, ExportError::Undeclared { field } if field == "messages.name"),
            "{error}"
        );
        #[derive(Serialize)]
        struct Real {
            messages: Vec<ChatMessage>,
        }
        let call = ChatMessage {
            tool_calls: vec![ToolCall {
                id: "call_0".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "bash".into(),
                    arguments: "{}".into(),
                },
            }],
            ..ChatMessage::text(Role::Assistant, "Next.")
        };
        let real = Real {
            messages: vec![ChatMessage::text(Role::User, "Fix it."), call],
        };
        check_fields(&columns, &[real]).expect("the real messages fit their column");
    }
}
