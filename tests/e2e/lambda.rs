//! The four Lambda functions as Lambda runs them: the real `bootstrap` binaries, each in an
//! execution environment of its own — a Runtime API emulator
//! (`synthfleet_tests::lambda_api`) at `AWS_LAMBDA_RUNTIME_API` and the environment
//! infra/modules/functions gives it — against moto's server.

use crate::control::upload_nightly;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use synthfleet_backend::Backend;
use synthfleet_tests::lambda_api::{LambdaApi, Outcome};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::workspace_root;

/// Each function and its `memory_size` in infra/modules/functions/main.tf.
const FUNCTIONS: [(&str, u32); 4] = [
    ("enqueue", 512),
    ("budget", 256),
    ("finalize", 256),
    ("scaler", 256),
];

/// Every invocation's deadline: well inside each function's timeout in main.tf (60–300 s),
/// and how long the test waits for an answer.
const DEADLINE: Duration = Duration::from_secs(30);

/// The binary of each function, built by cargo for this test in one build, as
/// functions/build.sh does (`cargo test` builds none of them: they have no test harness),
/// and linked where the zip would hold it: `target/debug/lambda/<function>/bootstrap`. Up
/// to date, the build is a no-op.
fn binaries() -> &'static BTreeMap<&'static str, PathBuf> {
    static BUILT: OnceLock<BTreeMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> BTreeMap<&'static str, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    for (name, _) in FUNCTIONS {
        command.args(["-p", &format!("synthfleet-fn-{name}")]);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} to build the functions: {e}"));
    assert!(
        out.status.success(),
        "building the functions failed: run `cargo build -p synthfleet-fn-<name>` and fix what it reports\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let artifacts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect();
    FUNCTIONS
        .iter()
        .map(|(name, _)| {
            let target = format!("synthfleet-fn-{name}");
            let built = artifacts
                .iter()
                .filter(|m| m["target"]["name"] == target.as_str())
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| {
                    panic!("cargo named no `{target}` binary: run `cargo build -p {target}`")
                });
            let dir = built
                .parent()
                .expect("target/debug")
                .join("lambda")
                .join(name);
            std::fs::create_dir_all(&dir).expect("target/debug/lambda/<function>");
            let bin = dir.join("bootstrap");
            let _ = std::fs::remove_file(&bin);
            if std::fs::hard_link(&built, &bin).is_err() {
                std::fs::copy(&built, &bin).expect("copying the function's binary");
            }
            (*name, bin)
        })
        .collect()
}

/// What the functions are deployed against: the AWS endpoint and the deployment's names.
struct Deployment {
    endpoint: String,
    bucket: String,
    table: String,
    queue_url: String,
    dlq_url: String,
    alert_topic_arn: String,
}

impl Deployment {
    fn of(moto: &Moto, alert_topic_arn: String) -> Deployment {
        Deployment {
            endpoint: moto.endpoint.clone(),
            bucket: moto.names.bucket.clone(),
            table: moto.names.table.clone(),
            queue_url: moto.names.queue_url.clone(),
            dlq_url: moto.names.dead_letter_queue_url.clone(),
            alert_topic_arn,
        }
    }

    /// For setups that fail before any call: nothing listens at the endpoint.
    fn unreachable() -> Deployment {
        Deployment {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "synthfleet-bucket".into(),
            table: "synthfleet".into(),
            queue_url: "http://127.0.0.1:9/123456789012/synthfleet-tasks".into(),
            dlq_url: "http://127.0.0.1:9/123456789012/synthfleet-tasks-dlq".into(),
            alert_topic_arn: "arn:aws:sns:us-east-1:123456789012:synthfleet-alerts".into(),
        }
    }

    /// The `SYNTHFLEET_*` variables infra/modules/functions/main.tf gives function `name`
    /// (`merge(var.deployment_env, each.value.env)`), in a deployment with a jobs task and
    /// an Auto Scaling fleet.
    fn function_env(&self, name: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SYNTHFLEET_BUCKET", self.bucket.clone()),
            ("SYNTHFLEET_TABLE", self.table.clone()),
            ("SYNTHFLEET_QUEUE_URL", self.queue_url.clone()),
            ("SYNTHFLEET_DLQ_URL", self.dlq_url.clone()),
        ];
        let own: &[(&'static str, &str)] = match name {
            "enqueue" => &[],
            "budget" => &[("SYNTHFLEET_ALERT_TOPIC_ARN", &self.alert_topic_arn)],
            "finalize" => &[
                ("SYNTHFLEET_JOBS_CLUSTER", "synthfleet-jobs"),
                (
                    "SYNTHFLEET_JOBS_TASK_DEFINITION",
                    "arn:aws:ecs:us-east-1:123456789012:task-definition/synthfleet-jobs:1",
                ),
                ("SYNTHFLEET_JOBS_CONTAINER", "jobs"),
                ("SYNTHFLEET_JOBS_SUBNETS", "subnet-0a,subnet-0b"),
                ("SYNTHFLEET_JOBS_SECURITY_GROUPS", "sg-0a"),
            ],
            "scaler" => &[
                ("SYNTHFLEET_SCALE_ASG", "synthfleet-workers"),
                ("SYNTHFLEET_SCALE_MIN", "0"),
                ("SYNTHFLEET_SCALE_MAX", "4"),
                ("SYNTHFLEET_SCALE_TASKS_PER_WORKER", "2"),
                ("SYNTHFLEET_SCALE_IDLE_S", "600"),
            ],
            other => panic!("no function {other}"),
        };
        env.extend(own.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    /// The whole environment of function `name`'s process: what Lambda sets in every
    /// execution environment, moto's endpoint (the one addition for the tests) and the
    /// function's `SYNTHFLEET_*` variables.
    fn env(&self, name: &str, api: &LambdaApi) -> Vec<(String, String)> {
        let memory = FUNCTIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.to_string())
            .expect("a function");
        let function = format!("synthfleet-{name}");
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", api.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function}"),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/28/[$LATEST]0123".into(),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
            ("LAMBDA_TASK_ROOT", "/var/task".into()),
            ("_HANDLER", "bootstrap".into()),
            ("TZ", ":UTC".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ];
        lambda
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                self.function_env(name)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            )
            .collect()
    }
}

/// `SYNTHFLEET_*` names in a file.
fn synthfleet_names(path: &str) -> BTreeSet<String> {
    std::fs::read_to_string(workspace_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("SYNTHFLEET_"))
        .map(str::to_owned)
        .collect()
}

/// A function's process, its output read as it comes (so a full pipe never stalls it);
/// killed when dropped.
struct Process {
    name: String,
    child: Child,
    output: Arc<Mutex<Output>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default, Clone)]
struct Output {
    stdout: String,
    stderr: String,
}

impl Process {
    fn spawn(name: &str, env: Vec<(String, String)>) -> Process {
        let mut child = Command::new(&binaries()[name])
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {name} function: {e}"));
        let output = Arc::new(Mutex::new(Output::default()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (mut stream, is_stdout) in [
            (Box::new(stdout) as Box<dyn Read + Send>, true),
            (Box::new(stderr), false),
        ] {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = stream.read(&mut chunk) {
                    let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                    let mut output = output.lock().expect("output");
                    if is_stdout {
                        output.stdout.push_str(&text);
                    } else {
                        output.stderr.push_str(&text);
                    }
                }
            }));
        }
        Process {
            name: name.to_owned(),
            child,
            output,
            readers,
        }
    }

    fn output(&self) -> Output {
        self.output.lock().expect("output").clone()
    }

    /// The log so far, for failure messages.
    fn log(&self) -> String {
        let output = self.output();
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.name, output.stdout, self.name, output.stderr
        )
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the function's status")
    }

    /// Its exit status, once it has exited within `timeout`.
    async fn exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it (if still running) and returns everything it wrote.
    fn stop(mut self) -> Output {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        self.output()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line of `text` as a JSON object: the functions log JSON and nothing else.
fn json_lines(name: &str, stream: &str, text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| {
                    panic!("{name} wrote a line that is not JSON on {stream}: {line}\n{text}")
                })
        })
        .collect()
}

fn all_json_lines(name: &str, output: &Output) -> Vec<Value> {
    let mut lines = json_lines(name, "stdout", &output.stdout);
    lines.extend(json_lines(name, "stderr", &output.stderr));
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_missing_its_configuration_reports_an_init_error_in_json_and_exits() {
    // The environment here is the one Terraform gives, variable for variable.
    let deployment = Deployment::unreachable();
    let ours: BTreeSet<String> = FUNCTIONS
        .iter()
        .flat_map(|(name, _)| deployment.function_env(name))
        .map(|(k, _)| k.to_owned())
        .collect();
    // The scaler is given an Auto Scaling group here; an ECS fleet's service replaces it.
    let ecs_fleet = [
        "SYNTHFLEET_SCALE_ECS_CLUSTER",
        "SYNTHFLEET_SCALE_ECS_SERVICE",
    ];
    let mut terraform = synthfleet_names("infra/modules/functions/main.tf");
    terraform.retain(|v| !ecs_fleet.contains(&v.as_str()));
    let mut known = terraform.clone();
    known.extend(synthfleet_names("infra/main.tf"));
    assert!(
        terraform.is_subset(&ours) && ours.is_subset(&known),
        "the test's function environments and infra/modules/functions/main.tf differ: {ours:?} vs {terraform:?}"
    );

    // (function, variable, value): unset, or set to something the function cannot use.
    let cases = [
        ("enqueue", "SYNTHFLEET_BUCKET", None),
        ("budget", "SYNTHFLEET_TABLE", None),
        ("finalize", "SYNTHFLEET_QUEUE_URL", None),
        ("scaler", "SYNTHFLEET_DLQ_URL", None),
        ("scaler", "SYNTHFLEET_SCALE_MIN", Some("a few")),
        ("finalize", "SYNTHFLEET_JOBS_SUBNETS", Some("")),
    ];
    binaries();
    let mut started = Vec::new();
    for (name, variable, value) in cases {
        let api = LambdaApi::start(&format!("synthfleet-{name}"));
        let mut env = deployment.env(name, &api);
        env.retain(|(k, _)| k != variable);
        if let Some(value) = value {
            env.push((variable.to_owned(), value.to_owned()));
        }
        started.push((name, variable, value, api, Process::spawn(name, env)));
    }
    for (name, variable, value, api, mut process) in started {
        let case = format!("{name} with {variable} {value:?}");
        let status = process
            .exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{case} still runs after 30 s\n{}", process.log()));
        assert!(
            !status.success(),
            "{case} exited with {status}\n{}",
            process.log()
        );
        let reports = api.init_errors();
        assert_eq!(reports.len(), 1, "{case}: {reports:?}\n{}", process.log());
        let report = &reports[0];
        let message = report.body["errorMessage"].as_str().unwrap_or_default();
        assert_eq!(
            (
                report.error_type.as_deref(),
                report.body["errorType"].as_str()
            ),
            (Some("Runtime.ConfigInvalid"), Some("Runtime.ConfigInvalid")),
            "{case}: {report:?}"
        );
        assert!(
            message.starts_with(&format!("{variable}: ")),
            "{case}: the message names the variable: {message}"
        );
        if value.is_none() {
            assert!(
                message.contains("set it in the function's environment"),
                "{case}: the message says what to do: {message}"
            );
        }
        assert_eq!(
            api.polls(),
            0,
            "{case}: it stopped before the runtime started"
        );
        // Logged once, as JSON, with the message Lambda got.
        let output = process.stop();
        let lines = all_json_lines(name, &output);
        let logged: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["error"] == message)
            .collect();
        assert_eq!(logged.len(), 1, "{case}: {lines:?}");
        assert_eq!(
            (
                logged[0]["level"].as_str(),
                logged[0]["fields"]["error_type"].as_str()
            ),
            (Some("ERROR"), Some("Runtime.ConfigInvalid"))
        );
    }
}

/// The Auto Scaling group the scaler sizes, at 0 instances.
async fn worker_group(moto: &Moto) {
    let asg = aws_sdk_autoscaling::Client::new(&moto.config);
    asg.create_launch_configuration()
        .launch_configuration_name("synthfleet-workers")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("launch configuration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("synthfleet-workers")
        .launch_configuration_name("synthfleet-workers")
        .min_size(0)
        .max_size(4)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("group");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_binaries_serve_invocations_behind_the_runtime_api() {
    binaries();
    let moto = Moto::start().await;
    upload_nightly(&moto).await;
    let topic = aws_sdk_sns::Client::new(&moto.config)
        .create_topic()
        .name("synthfleet-alerts")
        .send()
        .await
        .expect("alert topic")
        .topic_arn
        .expect("topic arn");
    worker_group(&moto).await;
    let deployment = Deployment::of(&moto, topic);

    // Every function starts in its own execution environment, at once.
    let mut environments: Vec<(&str, LambdaApi, Process)> = FUNCTIONS
        .iter()
        .map(|(name, _)| {
            let api = LambdaApi::start(&format!("synthfleet-{name}"));
            let process = Process::spawn(name, deployment.env(name, &api));
            (*name, api, process)
        })
        .collect();

    // The S3 notification of the upload, as the control tests build it.
    let uploaded = json!({"Records": [{"s3": {
        "bucket": {"name": moto.names.bucket},
        "object": {"key": "incoming/nightly/campaign.toml"}
    }}]});
    let queue = Backend::aws(&moto.clients, moto.names.clone()).queue("nightly");
    let mut answers: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (name, api, process) in &mut environments {
        // Each event, and the messages the task queue holds after it (for enqueue).
        let events = match *name {
            // The upload, Lambda's retry of it (nothing enqueued twice), then a schedule's
            // firing (a run of its own).
            "enqueue" => vec![
                (uploaded.clone(), Some(3)),
                (uploaded.clone(), Some(3)),
                (
                    json!({
                        "campaign_key": "incoming/nightly/campaign.toml",
                        "scheduled_time": "2026-11-28T05:00:00Z"
                    }),
                    Some(6),
                ),
            ],
            // The schedules' input in main.tf, as the Scheduler fills it in.
            _ => vec![
                (
                    json!({
                        "schedule_arn": format!("arn:aws:scheduler:us-east-1:123456789012:schedule/synthfleet/synthfleet-{name}"),
                        "scheduled_time": "2026-11-28T05:01:00Z"
                    }),
                    None
                );
                3
            ],
        };
        for (i, (event, queued)) in events.into_iter().enumerate() {
            let invocation = api.invoke(event, DEADLINE);
            let outcome = api
                .outcome(&invocation.request_id, DEADLINE)
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: no answer to invocation {i} within {DEADLINE:?}\n{}",
                        process.log()
                    )
                });
            assert!(
                outcome.at_ms() <= invocation.deadline_ms,
                "{name}: invocation {i} answered after its deadline"
            );
            match outcome {
                Outcome::Response { body, .. } => {
                    assert!(
                        body.is_object() || body.is_array(),
                        "{name}: invocation {i} answered {body}"
                    );
                    answers.entry(*name).or_default().push(body);
                }
                Outcome::Error(report) => panic!(
                    "{name}: invocation {i} failed: {report:?}\n{}",
                    process.log()
                ),
            }
            if let Some(queued) = queued {
                let visible = queue.stats().await.expect("queue stats").visible;
                assert_eq!(visible, queued, "{name}: after invocation {i}");
            }
        }
        assert!(
            process.exited().is_none(),
            "{name} served its invocations in one process and still waits for the next\n{}",
            process.log()
        );
        assert!(api.init_errors().is_empty(), "{name}");
    }
    let enqueued = &answers["enqueue"];
    assert_eq!(
        [&enqueued[0][0]["campaign"], &enqueued[2][0]["campaign"]],
        ["nightly", "nightly-202611280500"],
        "{enqueued:?}"
    );
    assert_eq!(enqueued[0][0]["enqueued"], 3, "{enqueued:?}");

    // Stopped as Lambda stops an environment; all they wrote was JSON, and each scheduled
    // function logged the schedule that invoked it.
    for (name, api, process) in environments {
        let output = process.stop();
        let lines = all_json_lines(name, &output);
        if name != "enqueue" {
            let schedule = format!(
                "arn:aws:scheduler:us-east-1:123456789012:schedule/synthfleet/synthfleet-{name}"
            );
            let invoked = lines
                .iter()
                .filter(|l| {
                    l["fields"]["source"] == "aws.scheduler"
                        && l["fields"]["schedule"] == schedule.as_str()
                })
                .count();
            assert_eq!(invoked, 3, "{name} logs what invoked it: {lines:?}");
        }
        drop(api);
    }
}
