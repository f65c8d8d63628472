//! A function's life under Lambda's runtime, shared by the four mains: JSON logs, its
//! setup run once (clients, the `SYNTHFLEET_*` environment), then its invocations served
//! by `lambda_runtime`. A setup that fails is reported as Lambda expects — an init error
//! posted to the Runtime API, `POST /2018-06-01/runtime/init/error` with the
//! `Lambda-Runtime-Function-Error-Type` header and an `{"errorMessage", "errorType"}`
//! body — logged once as a JSON line, and the process exits non-zero.
//!
//! `lambda_runtime` posts init errors only for its SnapStart hooks, so the report is sent
//! here, through the Runtime API client `lambda_runtime` itself uses
//! (`lambda_runtime_api_client`).

use crate::{ControlError, init_logging};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use lambda_runtime_api_client::PooledClient;
use lambda_runtime_api_client::body::Body;
use serde::Serialize;
use serde_json::Value;
use std::process::ExitCode;
use synthfleet_core::error_chain;
use tracing::error;

/// Where a runtime reports an error of its initialization (relative to
/// `http://${AWS_LAMBDA_RUNTIME_API}`).
pub const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";
/// The header naming the error's type, in Lambda's `Category.Reason` form.
pub const ERROR_TYPE_HEADER: &str = "Lambda-Runtime-Function-Error-Type";
/// The error type of a configuration the function cannot run with: a `SYNTHFLEET_*`
/// variable unset or invalid.
pub const CONFIG_INVALID: &str = "Runtime.ConfigInvalid";
/// The error type of any other failed setup (what `lambda_runtime` reports for its own).
pub const INIT_ERROR: &str = "Runtime.InitError";

/// Runs a function: logs as JSON, builds what it needs once with `setup`, then serves
/// every invocation with `handle`, borrowing it. A failed `setup` is reported to Lambda
/// as an init error; the exit code is a failure then, or when the runtime stops.
///
/// ```ignore
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     synthfleet_control::lambda::run(BudgetGuard::from_env(), BudgetGuard::handle).await
/// }
/// ```
pub async fn run<T, R>(
    setup: impl Future<Output = Result<T, ControlError>>,
    handle: impl AsyncFn(&T, LambdaEvent<Value>) -> Result<R, ControlError>,
) -> ExitCode
where
    R: Serialize,
{
    init_logging();
    let function = match setup.await {
        Ok(function) => function,
        Err(e) => {
            init_failed(&e).await;
            return ExitCode::FAILURE;
        }
    };
    let (function, handle) = (&function, &handle);
    let served = lambda_runtime::run(service_fn(move |event| async move {
        let result = handle(function, event).await?;
        serde_json::to_value(result).map_err(|source| ControlError::Encode {
            what: "the invocation's result",
            source,
        })
    }))
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %error_chain(e.as_ref()), "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// What Lambda is told of a setup that failed: the error's type and its whole chain.
pub fn init_diagnostic(error: &ControlError) -> Diagnostic {
    let error_type = if error.is_config() {
        CONFIG_INVALID
    } else {
        INIT_ERROR
    };
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: error_chain(error),
    }
}

/// Logs the failed setup (first, so that it reaches the log group even if Lambda ends
/// the environment as soon as it has the report), then reports it to the Runtime API.
async fn init_failed(error: &ControlError) {
    let diagnostic = init_diagnostic(error);
    error!(
        error_type = %diagnostic.error_type,
        error = %diagnostic.error_message,
        "the function cannot start; reporting an init error to Lambda"
    );
    if let Err(e) = report_init_error(&diagnostic).await {
        error!(error = %error_chain(&e), "reporting the init error to Lambda failed");
    }
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("AWS_LAMBDA_RUNTIME_API is unset: not running under Lambda's runtime")]
    NoRuntimeApi,
    #[error("posting to http://{api}{INIT_ERROR_PATH}")]
    Post {
        api: String,
        #[source]
        source: lambda_runtime::Error,
    },
    #[error("http://{api}{INIT_ERROR_PATH} answered {status} (expected 202 Accepted)")]
    Status { api: String, status: u16 },
}

/// Posts `diagnostic` to the Runtime API's init error endpoint.
async fn report_init_error(diagnostic: &Diagnostic) -> Result<(), ReportError> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(ReportError::NoRuntimeApi)?;
    let post = |source: lambda_runtime::Error| ReportError::Post {
        api: api.clone(),
        source,
    };
    let client = PooledClient::builder()
        .with_endpoint(parse(&format!("http://{api}")).map_err(post)?)
        .build();
    let body = serde_json::to_vec(diagnostic).map_err(|e| post(e.into()))?;
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri(INIT_ERROR_PATH)
        .header(ERROR_TYPE_HEADER, diagnostic.error_type.as_str())
        .header("Content-Type", "application/vnd.aws.lambda.error+json")
        .body(Body::from(body))
        .map_err(|e| post(e.into()))?;
    let response = client.call(request).await.map_err(post)?;
    match response.status().as_u16() {
        202 => Ok(()),
        status => Err(ReportError::Status { api, status }),
    }
}

/// `text` parsed as whatever the caller needs (the client's endpoint URI).
fn parse<T: std::str::FromStr>(text: &str) -> Result<T, lambda_runtime::Error>
where
    T::Err: Into<lambda_runtime::Error>,
{
    text.parse().map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_are_told_apart_and_keep_their_chain() {
        let missing = ControlError::Config {
            variable: "SYNTHFLEET_BUCKET",
            problem: "unset",
        };
        let diagnostic = init_diagnostic(&missing);
        assert_eq!(diagnostic.error_type, CONFIG_INVALID);
        assert_eq!(diagnostic.error_message, "SYNTHFLEET_BUCKET: unset");
        let other = ControlError::Io {
            path: "/tmp/x".into(),
            source: std::io::Error::other("disk full"),
        };
        let diagnostic = init_diagnostic(&other);
        assert_eq!(diagnostic.error_type, INIT_ERROR);
        assert_eq!(diagnostic.error_message, "writing /tmp/x: disk full");
        // The body Lambda reads.
        let body = serde_json::to_value(&diagnostic).expect("encode");
        assert_eq!(
            body,
            serde_json::json!({"errorType": INIT_ERROR, "errorMessage": "writing /tmp/x: disk full"})
        );
    }
}
