//! A campaign's trajectories as a DuckDB table: one row per trajectory with its summary,
//! stage verdicts and review verdict. Reports query it; exports copy from it.
//!
//! Rows reach DuckDB as newline-delimited JSON read with an explicit column list, so the
//! types are fixed even for an empty campaign, and nested columns (the chat `messages`)
//! arrive as real lists of structs.

use crate::QualityError;
use duckdb::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufWriter, Write};
use std::path::Path;

/// DuckDB type of one chat message (OpenAI format), shared by every table that holds them.
pub const MESSAGE_TYPE: &str = "STRUCT(role VARCHAR, content VARCHAR, reasoning_content VARCHAR, tool_calls STRUCT(id VARCHAR, \"type\" VARCHAR, \"function\" STRUCT(name VARCHAR, arguments VARCHAR))[], tool_call_id VARCHAR)";

/// Columns of the `trajectories` table, in order (names match [`crate::TrajectoryRow`]).
pub const TRAJECTORY_COLUMNS: &[(&str, &str)] = &[
    ("campaign", "VARCHAR"),
    ("trajectory_id", "VARCHAR"),
    ("instance_id", "VARCHAR"),
    ("sample_index", "UINTEGER"),
    ("model", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("scaffold", "VARCHAR"),
    ("exit_status", "VARCHAR"),
    ("resolved", "BOOLEAN"),
    ("reward", "DOUBLE"),
    ("cost_usd", "DOUBLE"),
    ("input_tokens", "UBIGINT"),
    ("output_tokens", "UBIGINT"),
    ("n_steps", "UINTEGER"),
    ("duration_ms", "UBIGINT"),
    ("created_at", "VARCHAR"),
    ("structural", "VARCHAR"),
    ("execution", "VARCHAR"),
    ("heuristics", "VARCHAR"),
    ("dedup", "VARCHAR"),
    ("judge", "VARCHAR"),
    ("rejected_at", "VARCHAR"),
    ("reject_reason", "VARCHAR"),
    ("accepted", "BOOLEAN"),
    ("pattern", "VARCHAR"),
    ("patch_hash", "VARCHAR"),
    ("duplicate_of", "VARCHAR"),
    ("review", "VARCHAR"),
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

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates `table` from `rows` with the given columns.
    pub fn load<T: Serialize>(
        &self,
        table: &str,
        columns: &[(&str, &str)],
        rows: impl IntoIterator<Item = T>,
    ) -> Result<(), QualityError> {
        let path = self.scratch.path().join(format!("{table}.jsonl"));
        write_jsonl(&path, rows)?;
        self.load_jsonl(table, columns, &path)
    }

    /// Creates `table` from a newline-delimited JSON file with the given columns.
    pub fn load_jsonl(
        &self,
        table: &str,
        columns: &[(&str, &str)],
        path: &Path,
    ) -> Result<(), QualityError> {
        let spec = columns
            .iter()
            .map(|(name, ty)| format!("'{name}': '{}'", ty.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_json('{}', format = 'newline_delimited', columns = {{{spec}}}, maximum_object_size = 1073741824)",
            sql_path(path)
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

/// A path as a single-quoted SQL string body.
pub fn sql_path(path: &Path) -> String {
    path.to_string_lossy().replace('\'', "''")
}

/// Writes `rows` as newline-delimited JSON.
pub fn write_jsonl<T: Serialize>(
    path: &Path,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), QualityError> {
    let io = |source| QualityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for row in rows {
        serde_json::to_writer(&mut out, &row).map_err(|e| QualityError::Decode {
            what: format!("a row for {}", path.display()),
            detail: e.to_string(),
        })?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}
