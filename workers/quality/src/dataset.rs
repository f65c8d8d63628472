//! A campaign's trajectories as a DuckDB table: one row per trajectory with its summary,
//! stage verdicts and review verdict. Reports query it. The column types are also the
//! exports' (written from Rust through Arrow, see [`crate::export`]).
//!
//! Rows reach DuckDB as newline-delimited JSON read with an explicit column list, so the
//! types are fixed even for an empty campaign, and nested columns (the chat `messages`)
//! arrive as real lists of structs.

use crate::QualityError;
use arrow_schema::{DataType, Field};
use duckdb::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One column of a table: its name, type, and meaning (for dataset cards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub doc: &'static str,
}

pub const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, doc }
}

/// The types of our columns, as DuckDB reads them and as Arrow (so Parquet) writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Varchar,
    Boolean,
    Double,
    UInteger,
    UBigInt,
    /// A list of chat messages in OpenAI format (see [`MESSAGES_TYPE`]).
    Messages,
}

/// DuckDB type of a list of chat messages in OpenAI format.
pub const MESSAGES_TYPE: &str = "STRUCT(role VARCHAR, content VARCHAR, reasoning_content VARCHAR, tool_calls STRUCT(id VARCHAR, \"type\" VARCHAR, \"function\" STRUCT(name VARCHAR, arguments VARCHAR))[], tool_call_id VARCHAR)[]";

/// The leaves of a [`ColumnType::Messages`] column that hold free text: a message's
/// content and reasoning, and a tool call's arguments.
pub const MESSAGE_FREE_TEXT: [&str; 3] = ["content", "reasoning_content", "arguments"];

impl ColumnType {
    /// The DuckDB type.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Varchar => "VARCHAR",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Double => "DOUBLE",
            ColumnType::UInteger => "UINTEGER",
            ColumnType::UBigInt => "UBIGINT",
            ColumnType::Messages => MESSAGES_TYPE,
        }
    }

    /// The type as a dataset card names it.
    pub fn card(self) -> &'static str {
        match self {
            ColumnType::Varchar => "string",
            ColumnType::Boolean => "bool",
            ColumnType::Double => "float64",
            ColumnType::UInteger => "uint32",
            ColumnType::UBigInt => "uint64",
            ColumnType::Messages => "list<struct>",
        }
    }

    /// The Arrow type, the same as DuckDB's Parquet writer gives the DuckDB type (a list's
    /// item is called `element`), so files of either writer read back alike.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Varchar => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Double => DataType::Float64,
            ColumnType::UInteger => DataType::UInt32,
            ColumnType::UBigInt => DataType::UInt64,
            ColumnType::Messages => {
                let text = |name: &str| Field::new(name, DataType::Utf8, true);
                let [.., arguments] = MESSAGE_FREE_TEXT;
                let function = DataType::Struct(vec![text("name"), text(arguments)].into());
                let tool_call = DataType::Struct(
                    vec![
                        text("id"),
                        text("type"),
                        Field::new("function", function, true),
                    ]
                    .into(),
                );
                let [content, reasoning, _] = MESSAGE_FREE_TEXT;
                let message = DataType::Struct(
                    vec![
                        text("role"),
                        text(content),
                        text(reasoning),
                        Field::new("tool_calls", list_of(tool_call), true),
                        text("tool_call_id"),
                    ]
                    .into(),
                );
                list_of(message)
            }
        }
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", item, true)))
}

const VERDICT: &str = "Quality stage verdict: pass / fail / skipped.";

/// Columns of the `trajectories` table, in order (names match [`crate::TrajectoryRow`]).
pub const TRAJECTORY_COLUMNS: &[Column] = &[
    col("instance_id", ColumnType::Varchar, "Task id."),
    col(
        "trajectory_id",
        ColumnType::Varchar,
        "Unique id of the rollout (ULID).",
    ),
    col(
        "model",
        ColumnType::Varchar,
        "Model pool entry that ran the rollout.",
    ),
    col(
        "exit_status",
        ColumnType::Varchar,
        "How the rollout ended: submitted, step_limit, timeout, cost_limit, budget_exhausted, error:<kind>.",
    ),
    col(
        "resolved",
        ColumnType::Boolean,
        "The task's eval passed on the patch, in a fresh sandbox.",
    ),
    col(
        "reward",
        ColumnType::Double,
        "Reward from verification (1.0 resolved, else 0.0).",
    ),
    col(
        "cost_usd",
        ColumnType::Double,
        "LLM spend of the rollout (USD).",
    ),
    col("n_steps", ColumnType::UInteger, "Agent steps."),
    col(
        "input_tokens",
        ColumnType::UBigInt,
        "Prompt tokens over the rollout, billed at the input price (cached ones excluded).",
    ),
    col(
        "output_tokens",
        ColumnType::UBigInt,
        "Completion tokens over the rollout.",
    ),
    col(
        "cache_read_tokens",
        ColumnType::UBigInt,
        "Prompt tokens read from the provider's cache.",
    ),
    col(
        "cache_write_tokens",
        ColumnType::UBigInt,
        "Prompt tokens written to the provider's cache.",
    ),
    col(
        "duration_ms",
        ColumnType::UBigInt,
        "Wall-clock time of the rollout.",
    ),
    col("scaffold", ColumnType::Varchar, "Scaffold name@version."),
    col(
        "variant",
        ColumnType::Varchar,
        "The experiment arm ([[variants]]) of the sample; null outside experiments.",
    ),
    col("provider", ColumnType::Varchar, "API family of the model."),
    col("campaign", ColumnType::Varchar, "synthfleet campaign."),
    col(
        "sample_index",
        ColumnType::UInteger,
        "Sample number of this task in the campaign.",
    ),
    col(
        "created_at",
        ColumnType::Varchar,
        "When the rollout finished (RFC 3339, UTC).",
    ),
    col("structural", ColumnType::Varchar, VERDICT),
    col(
        "integrity",
        ColumnType::Varchar,
        "No sign of reward hacking: pass / fail (suspect) / skipped.",
    ),
    col("execution", ColumnType::Varchar, VERDICT),
    col("heuristics", ColumnType::Varchar, VERDICT),
    col("dedup", ColumnType::Varchar, VERDICT),
    col(
        "judge",
        ColumnType::Varchar,
        "Second verifier (LLM judge) verdict: pass / fail / skipped.",
    ),
    col(
        "rejected_at",
        ColumnType::Varchar,
        "The first stage that rejected the trajectory.",
    ),
    col("reject_reason", ColumnType::Varchar, "Why it did."),
    col(
        "accepted",
        ColumnType::Boolean,
        "Passed every quality stage.",
    ),
    col(
        "pattern",
        ColumnType::Varchar,
        "The sequence of command names (diversity accounting).",
    ),
    col(
        "patch_hash",
        ColumnType::Varchar,
        "SHA-256 of the final patch.",
    ),
    col(
        "duplicate_of",
        ColumnType::Varchar,
        "The trajectory this one duplicates, when dedup rejected it.",
    ),
    col(
        "review",
        ColumnType::Varchar,
        "Human review verdict: accept / reject, when reviewed.",
    ),
    col(
        "suspect",
        ColumnType::Boolean,
        "Signs of reward hacking were found in the commands or the patch (never in accepted data).",
    ),
    col(
        "hack_signals",
        ColumnType::Varchar,
        "Which signs, comma-separated: history, test_edit, harness_edit, skip_marker, network, outside_workdir.",
    ),
    col(
        "start_commit",
        ColumnType::Varchar,
        "The one commit the agent's repository held at its first step.",
    ),
    col(
        "harness_hash",
        ColumnType::Varchar,
        "SHA-256 of the task's verification (setup, eval, harness test spec).",
    ),
];

/// An in-memory DuckDB database and a scratch directory for the files it reads.
pub struct Dataset {
    conn: Connection,
    scratch: tempfile::TempDir,
}

fn duck(operation: impl Into<String>) -> impl FnOnce(duckdb::Error) -> QualityError {
    let operation = operation.into();
    move |source| QualityError::DuckDb { operation, source }
}

impl Dataset {
    pub fn new() -> Result<Dataset, QualityError> {
        let conn = Connection::open_in_memory().map_err(duck("opening DuckDB in memory"))?;
        let scratch = tempfile::tempdir().map_err(|source| QualityError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        Ok(Dataset { conn, scratch })
    }

    /// A path in the dataset's scratch directory (removed with it).
    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Creates `table` from `rows` with the given columns.
    pub fn load<T: Serialize>(
        &self,
        table: &str,
        columns: &[Column],
        rows: impl IntoIterator<Item = T>,
    ) -> Result<(), QualityError> {
        let path = self.scratch_file(&format!("{table}.jsonl"));
        write_jsonl(&path, rows)?;
        self.load_jsonl(table, columns, &path)
    }

    /// Creates `table` from a newline-delimited JSON file with the given columns.
    pub fn load_jsonl(
        &self,
        table: &str,
        columns: &[Column],
        path: &Path,
    ) -> Result<(), QualityError> {
        let sql = format!(
            "CREATE OR REPLACE TABLE {table} AS {}",
            read_jsonl(columns, path)
        );
        self.conn
            .execute_batch(&sql)
            .map_err(duck(format!("loading table {table}")))
    }

    /// Runs `sql` and deserialises each result row (through DuckDB's JSON of the row).
    pub fn query<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, QualityError> {
        let wrapped = format!("SELECT CAST(to_json(q) AS VARCHAR) FROM ({sql}) AS q");
        let mut statement = self
            .conn
            .prepare(&wrapped)
            .map_err(duck(format!("preparing `{sql}`")))?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(duck(format!("running `{sql}`")))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(duck(format!("reading a row of `{sql}`")))?;
            out.push(
                serde_json::from_str(&json).map_err(|e| QualityError::Decode {
                    what: format!("a row of `{sql}`"),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Runs `sql` that returns exactly one row.
    pub fn query_one<T: DeserializeOwned>(&self, sql: &str) -> Result<T, QualityError> {
        self.query(sql)?
            .into_iter()
            .next()
            .ok_or_else(|| QualityError::Decode {
                what: format!("`{sql}`"),
                detail: "returned no row".into(),
            })
    }

    /// `SELECT count(*) FROM {from}`.
    pub fn count(&self, from: &str) -> Result<u64, QualityError> {
        #[derive(serde::Deserialize)]
        struct Count {
            n: u64,
        }
        Ok(self
            .query_one::<Count>(&format!("SELECT count(*)::UBIGINT AS n FROM {from}"))?
            .n)
    }

    pub fn execute(&self, sql: &str) -> Result<(), QualityError> {
        self.conn.execute_batch(sql).map_err(duck(sql.to_owned()))
    }
}

/// A query reading a newline-delimited JSON file with the given columns.
fn read_jsonl(columns: &[Column], path: &Path) -> String {
    let spec = columns
        .iter()
        .map(|c| format!("'{}': '{}'", c.name, c.ty.sql().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT * FROM read_json('{}', format = 'newline_delimited', columns = {{{spec}}}, maximum_object_size = 134217728)",
        sql_path(path)
    )
}

/// A path as a single-quoted SQL string body.
pub fn sql_path(path: &Path) -> String {
    path.to_string_lossy().replace('\'', "''")
}

/// Writes rows as newline-delimited JSON, one at a time.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<JsonlWriter, QualityError> {
        let file = std::fs::File::create(path).map_err(|source| QualityError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(JsonlWriter {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    fn io(&self, source: std::io::Error) -> QualityError {
        QualityError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<(), QualityError> {
        serde_json::to_writer(&mut self.out, row).map_err(|e| QualityError::Decode {
            what: format!("a row for {}", self.path.display()),
            detail: e.to_string(),
        })?;
        self.out.write_all(b"\n").map_err(|e| self.io(e))
    }

    pub fn finish(mut self) -> Result<(), QualityError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// Writes `rows` as newline-delimited JSON.
pub fn write_jsonl<T: Serialize>(
    path: &Path,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), QualityError> {
    let mut out = JsonlWriter::create(path)?;
    for row in rows {
        out.write(&row)?;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::TRAJECTORY_COLUMNS;
    use crate::review::tests::row;
    use std::collections::BTreeSet;

    /// The table's column list is written beside the row type: this keeps the two the
    /// same set of names (a field without a column would be dropped by DuckDB's reader, a
    /// column without a field read as NULL).
    #[test]
    fn the_trajectory_columns_are_the_rows_serialized_fields() {
        // Every field is a key, `None` ones too (as `null`) — but an absent experiment arm,
        // which the summary leaves out (DuckDB reads the missing key as NULL).
        let mut row = row("01T", "m", "task", true);
        row.summary.variant = Some("arm".into());
        let value = serde_json::to_value(row).expect("a row serialises");
        let fields: BTreeSet<&str> = value
            .as_object()
            .expect("a row is an object")
            .keys()
            .map(String::as_str)
            .collect();
        let columns: BTreeSet<&str> = TRAJECTORY_COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(
            columns.len(),
            TRAJECTORY_COLUMNS.len(),
            "a column is listed twice"
        );
        assert_eq!(
            columns.difference(&fields).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "columns no TrajectoryRow field fills"
        );
        assert_eq!(
            fields.difference(&columns).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "TrajectoryRow fields without a column"
        );
    }
}
