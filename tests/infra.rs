//! `infra/` is the deployment's source of truth. These tests parse its HCL (no provider
//! needed) and hold the code, the docs and the LocalStack init hook to it: a name, index,
//! environment variable, function or permission added in one place and not the others
//! fails here.

use hcl::expr::{Expression, ObjectKey, TraversalOperator};
use hcl::{Block, Body};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use synthfleet_aws::provision::{self, QUEUE_RECEIVE_WAIT_S, QUEUE_RETENTION_S, TABLE};

fn root() -> PathBuf {
    synthfleet_tests::workspace_root()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `.tf` file of one module directory, as one body.
fn module(dir: &str) -> Body {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .collect();
    files.sort();
    let mut body = Body::builder();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read .tf");
        let parsed =
            hcl::parse(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
        body = body.add_structures(parsed);
    }
    body.build()
}

fn labels(block: &Block) -> Vec<&str> {
    block.labels.iter().map(|l| l.as_str()).collect()
}

/// The block `kind "labels..."` (a resource, data source, module or variable).
fn block<'a>(body: &'a Body, kind: &str, names: &[&str]) -> &'a Block {
    body.blocks()
        .find(|b| b.identifier.as_str() == kind && labels(b) == names)
        .unwrap_or_else(|| panic!("infra/ has no {kind} {names:?}"))
}

fn attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

fn nested<'a>(body: &'a Body, kind: &str) -> Vec<&'a Block> {
    body.blocks()
        .filter(|b| b.identifier.as_str() == kind)
        .collect()
}

fn string(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => t.to_string(),
        Expression::Number(n) => n.to_string(),
        other => panic!("expected a literal, got {other:?}"),
    }
}

fn number(expr: &Expression) -> u64 {
    match expr {
        Expression::Number(n) => n.as_u64().expect("a whole number"),
        other => panic!("expected a number, got {other:?}"),
    }
}

fn key_name(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Identifier(i) => i.to_string(),
        ObjectKey::Expression(e) => string(e),
        other => panic!("an object key of a kind this test does not know: {other:?}"),
    }
}

fn object_get<'a>(expr: &'a Expression, key: &str) -> &'a Expression {
    match expr {
        Expression::Object(o) => o
            .iter()
            .find(|(k, _)| key_name(k) == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("object has no key {key}")),
        other => panic!("expected an object with {key}, got {other:?}"),
    }
}

/// A module as it is called: its body, and the caller's arguments (with the caller's own
/// scope) for its `var.*` references.
struct Scope<'a> {
    body: &'a Body,
    args: Option<(&'a Body, &'a Scope<'a>)>,
}

impl Scope<'_> {
    fn local(&self, name: &str) -> Option<&Expression> {
        nested(self.body, "locals")
            .into_iter()
            .flat_map(|b| b.body.attributes())
            .find(|a| a.key.as_str() == name)
            .map(|a| &a.expr)
    }

    /// The `SYNTHFLEET_*` keys an expression can produce: object keys, through locals,
    /// the caller's arguments, merges, conditionals and `for` expressions.
    fn env_keys(&self, expr: &Expression, out: &mut BTreeSet<String>) {
        match expr {
            Expression::Object(o) => {
                for (k, v) in o.iter() {
                    if let ObjectKey::Identifier(_) | ObjectKey::Expression(Expression::String(_)) =
                        k
                    {
                        let name = key_name(k);
                        if name.starts_with("SYNTHFLEET_") {
                            out.insert(name);
                        }
                    }
                    self.env_keys(v, out);
                }
            }
            Expression::Traversal(t) => {
                let (Expression::Variable(root), Some(TraversalOperator::GetAttr(name))) =
                    (&t.expr, t.operators.first())
                else {
                    return;
                };
                match root.as_str() {
                    "local" => {
                        if let Some(e) = self.local(name.as_str()) {
                            self.env_keys(e, out);
                        }
                    }
                    "var" => {
                        if let Some((args, caller)) = self.args
                            && let Some(a) =
                                args.attributes().find(|a| a.key.as_str() == name.as_str())
                        {
                            caller.env_keys(&a.expr, out);
                        }
                    }
                    _ => {}
                }
            }
            Expression::FuncCall(f) => f.args.iter().for_each(|a| self.env_keys(a, out)),
            Expression::Array(items) => items.iter().for_each(|a| self.env_keys(a, out)),
            Expression::Parenthesis(e) => self.env_keys(e, out),
            Expression::Conditional(c) => {
                self.env_keys(&c.true_expr, out);
                self.env_keys(&c.false_expr, out);
            }
            Expression::ForExpr(f) => {
                self.env_keys(&f.value_expr, out);
                self.env_keys(&f.collection_expr, out);
            }
            _ => {}
        }
    }

    fn env_of(&self, expr: &Expression) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.env_keys(expr, &mut out);
        out
    }
}

/// `SYNTHFLEET_*` names quoted in the Rust sources of `dir` (files named in `only`, or all).
fn quoted_env(dir: &str, only: Option<&[&str]>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(root().join(dir)).expect("source directory") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.extension().is_none_or(|e| e != "rs")
            || only.is_some_and(|o| !o.contains(&name.as_str()))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with("SYNTHFLEET_")
                && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            {
                found.insert(piece.to_owned());
            }
        }
    }
    found
}

/// What the workers' command line reads from the environment.
fn worker_env_known() -> BTreeSet<String> {
    let mut known = quoted_env("workers/cli/src", None);
    known.extend(quoted_env("workers/term/src", None));
    known.extend(quoted_env("workers/backend/src", None));
    known
}

/// The deployment's names every process needs (`BackendConfig::aws_names`).
fn deployment_env() -> BTreeSet<String> {
    quoted_env("workers/backend/src", Some(&["backend"]))
        .into_iter()
        .filter(|v| v != "SYNTHFLEET_BACKEND" && v != "SYNTHFLEET_STATE_DIR")
        .collect()
}

fn prefixed(template: &Expression, prefix: &str) -> String {
    string(template).replace("${var.name_prefix}", prefix)
}

#[test]
fn resource_names_and_shapes_match_the_code_and_the_localstack_hook() {
    let storage = module("infra/modules/storage");
    let queues = module("infra/modules/queues");
    let main = module("infra");
    let hook = read("localstack/init/ready.d/10-synthfleet.sh");
    let (bucket, table, queue, dlq) = provision::default_names("synthfleet");

    // Names: `<prefix>-…` in all three.
    let bucket_tf = block(&storage, "resource", &["aws_s3_bucket", "trajectories"]);
    let table_tf = block(&storage, "resource", &["aws_dynamodb_table", "metadata"]);
    let queue_tf = block(&queues, "resource", &["aws_sqs_queue", "tasks"]);
    let dlq_tf = block(&queues, "resource", &["aws_sqs_queue", "dead_letters"]);
    for (name, resource, key, hook_var) in [
        (&bucket, bucket_tf, "bucket", "bucket"),
        (&table, table_tf, "name", "table"),
        (&queue, queue_tf, "name", "queue"),
        (&dlq, dlq_tf, "name", "dlq"),
    ] {
        assert_eq!(&prefixed(attr(&resource.body, key), "synthfleet"), name);
        let suffix = name.trim_start_matches("synthfleet");
        assert!(
            hook.contains(&format!("{hook_var}=\"${{prefix}}{suffix}\"")),
            "the LocalStack hook does not name {name}"
        );
    }

    // The table: keys, attributes, indexes, TTL.
    let t = &table_tf.body;
    assert_eq!(string(attr(t, "hash_key")), TABLE.hash);
    assert_eq!(string(attr(t, "range_key")), TABLE.range);
    assert_eq!(string(attr(t, "billing_mode")), "PAY_PER_REQUEST");
    let mut wanted_attributes: BTreeSet<&str> = [TABLE.hash, TABLE.range].into();
    let mut wanted_indexes = BTreeMap::new();
    for index in TABLE.indexes {
        wanted_attributes.insert(index.hash);
        wanted_attributes.extend(index.range);
        wanted_indexes.insert(
            index.name.to_owned(),
            (index.hash.to_owned(), index.range.map(str::to_owned)),
        );
    }
    let attributes: BTreeSet<String> = nested(t, "attribute")
        .iter()
        .map(|a| string(attr(&a.body, "name")))
        .collect();
    assert_eq!(
        attributes,
        wanted_attributes.iter().map(|s| s.to_string()).collect()
    );
    let indexes: BTreeMap<String, (String, Option<String>)> = nested(t, "global_secondary_index")
        .iter()
        .map(|i| {
            assert_eq!(string(attr(&i.body, "projection_type")), "ALL");
            let range = i
                .body
                .attributes()
                .find(|a| a.key.as_str() == "range_key")
                .map(|a| string(&a.expr));
            (
                string(attr(&i.body, "name")),
                (string(attr(&i.body, "hash_key")), range),
            )
        })
        .collect();
    assert_eq!(indexes, wanted_indexes, "Terraform's indexes");
    assert_eq!(
        string(attr(&nested(t, "ttl")[0].body, "attribute_name")),
        TABLE.ttl
    );

    let hook_indexes: serde_json::Value = serde_json::from_str(
        hook.split("--global-secondary-indexes '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("the hook's --global-secondary-indexes"),
    )
    .expect("the hook's indexes are JSON");
    let hook_indexes: BTreeMap<String, (String, Option<String>)> = hook_indexes
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            let key = |kind: &str| {
                i["KeySchema"]
                    .as_array()
                    .expect("KeySchema")
                    .iter()
                    .find(|k| k["KeyType"] == kind)
                    .map(|k| k["AttributeName"].as_str().expect("name").to_owned())
            };
            assert_eq!(i["Projection"]["ProjectionType"], "ALL");
            (
                i["IndexName"].as_str().expect("IndexName").to_owned(),
                (key("HASH").expect("hash key"), key("RANGE")),
            )
        })
        .collect();
    assert_eq!(
        hook_indexes, wanted_indexes,
        "the LocalStack hook's indexes"
    );
    assert!(hook.contains(&format!(
        "--key-schema AttributeName={},KeyType=HASH AttributeName={},KeyType=RANGE",
        TABLE.hash, TABLE.range
    )));
    for attribute in &wanted_attributes {
        assert!(
            hook.contains(&format!("AttributeName={attribute},AttributeType=S")),
            "hook lacks attribute {attribute}"
        );
    }
    assert!(hook.contains(&format!("Enabled=true,AttributeName={}", TABLE.ttl)));

    // The bucket's retention of failed trajectories: the tag and days the code uses.
    let (tag, value) = synthfleet_aws::FAILED_TAG;
    let called = &block(&main, "module", &["storage"]).body;
    let failed_tag = attr(called, "failed_tag");
    assert_eq!(
        (
            string(object_get(failed_tag, "key")),
            string(object_get(failed_tag, "value"))
        ),
        (tag.to_owned(), value.to_owned())
    );
    assert_eq!(
        i64::try_from(number(attr(called, "failed_days"))).ok(),
        Some(synthfleet_core::store::FAILED_RETENTION_DAYS)
    );
    let lifecycle = block(
        &storage,
        "resource",
        &["aws_s3_bucket_lifecycle_configuration", "trajectories"],
    );
    let expire = nested(&lifecycle.body, "rule")
        .into_iter()
        .find(|r| string(attr(&r.body, "id")) == "expire-failed-trajectories")
        .expect("the expiry rule of failed trajectories");
    let filter_tag = &nested(&nested(&expire.body, "filter")[0].body, "tag")[0].body;
    assert_eq!(filter_tag.attributes().count(), 2);
    let hook_rule = format!(
        "\"Filter\": {{\"Tag\": {{\"Key\": \"{tag}\", \"Value\": \"{value}\"}}}},\n             \"Expiration\": {{\"Days\": {}}}",
        synthfleet_core::store::FAILED_RETENTION_DAYS
    );
    assert!(
        hook.contains(&hook_rule),
        "the LocalStack hook's lifecycle rule"
    );

    // The queues: retention, long polling, redrive at the workers' backstop.
    for q in [queue_tf, dlq_tf] {
        assert_eq!(
            number(attr(&q.body, "message_retention_seconds")),
            u64::from(QUEUE_RETENTION_S)
        );
    }
    assert_eq!(
        number(attr(&queue_tf.body, "receive_wait_time_seconds")),
        u64::from(QUEUE_RECEIVE_WAIT_S)
    );
    assert!(hook.contains(&format!("\nretention={QUEUE_RETENTION_S} ")));
    assert!(hook.contains(&format!("\nwait={QUEUE_RECEIVE_WAIT_S} ")));
    assert_eq!(hook.matches("MessageRetentionPeriod").count(), 2);
    assert_eq!(
        hook.matches("MessageRetentionPeriod=$retention").count()
            + hook
                .matches("MessageRetentionPeriod\\\": \\\"$retention")
                .count(),
        2,
        "both of the hook's queues keep messages {QUEUE_RETENTION_S} s"
    );
    assert!(hook.contains("ReceiveMessageWaitTimeSeconds\\\": \\\"$wait"));
    let max_receives = number(attr(
        &block(&main, "variable", &["max_receives"]).body,
        "default",
    ));
    let worker_default = read("workers/cli/src/worker.rs")
        .split("env = \"SYNTHFLEET_MAX_RECEIVES\", default_value_t = ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the worker's --max-receives default");
    assert_eq!(
        max_receives, worker_default,
        "the redrive count is the workers' backstop"
    );
    assert!(hook.contains(&format!("SYNTHFLEET_MAX_RECEIVES:-{worker_default}")));
}

#[test]
fn every_variable_the_binaries_read_is_passed_by_terraform() {
    let main = module("infra");
    let top = Scope {
        body: &main,
        args: None,
    };
    let deployment = deployment_env();
    assert_eq!(
        top.env_of(top.local("deployment_env").expect("local.deployment_env")),
        deployment,
        "what BackendConfig::aws_names requires"
    );

    // Functions: exactly what each reads (its module of synthfleet-control, and the
    // deployment's names).
    let functions = module("infra/modules/functions");
    let called = &block(&main, "module", &["functions"]).body;
    let scope = Scope {
        body: &functions,
        args: Some((called, &top)),
    };
    let Expression::ForExpr(table) = scope.local("functions").expect("local.functions") else {
        panic!("local.functions is a `for` over the functions");
    };
    let Expression::Object(defined) = &table.collection_expr else {
        panic!("local.functions iterates an object literal");
    };
    let names: BTreeSet<String> = defined.iter().map(|(k, _)| key_name(k)).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("functions"))
        .expect("functions/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names, on_disk,
        "Terraform deploys every function under functions/, and no other"
    );
    let build = read("functions/build.sh");
    let built = build
        .split("functions=(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("build.sh's function list");
    assert_eq!(
        built
            .split_whitespace()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        on_disk
    );
    assert!(build.contains("out=\"target/lambda/$f\"") && build.contains("bootstrap.zip"));
    let lambda = block(&functions, "resource", &["aws_lambda_function", "this"]);
    assert_eq!(
        string(attr(&lambda.body, "filename")),
        "${var.functions_dir}/${each.key}/bootstrap.zip"
    );
    assert_eq!(
        string(attr(
            &block(&main, "variable", &["functions_dir"]).body,
            "default"
        )),
        "../target/lambda"
    );
    for name in &names {
        let mut passed = scope.env_of(attr(
            &nested(&lambda.body, "environment")[0].body,
            "variables",
        ));
        // `merge(var.deployment_env, each.value.env)`: the function's own entry.
        passed.retain(|v| deployment.contains(v));
        passed.extend(scope.env_of(object_get(object_get(&table.collection_expr, name), "env")));
        let mut reads = quoted_env("workers/control/src", Some(&[name.as_str()]));
        reads.extend(deployment.iter().cloned());
        assert_eq!(passed, reads, "the environment of the {name} function");
    }

    // Workers: only variables the command line knows, the deployment's names, and what
    // each fleet kind needs for scale-in protection.
    let known = worker_env_known();
    let fleet = module("infra/modules/fleet");
    let called = &block(&main, "module", &["fleet"]).body;
    let scope = Scope {
        body: &fleet,
        args: Some((called, &top)),
    };
    for (kind, extra) in [
        ("asg_env", "SYNTHFLEET_ASG_NAME"),
        ("ecs_env", "SYNTHFLEET_ECS_TASK_PROTECTION"),
    ] {
        let env = scope.env_of(scope.local(kind).expect("fleet env"));
        let unknown: Vec<_> = env.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{kind} sets variables no binary reads: {unknown:?}"
        );
        for needed in deployment
            .iter()
            .map(String::as_str)
            .chain(["SYNTHFLEET_BACKEND", extra])
        {
            assert!(env.contains(needed), "{kind} lacks {needed}");
        }
    }
    let boot = read("infra/modules/fleet/templates/asg-boot.sh.tftpl");
    assert!(known.contains("SYNTHFLEET_INSTANCE_ID") && boot.contains("SYNTHFLEET_INSTANCE_ID="));
    assert!(boot.contains("/usr/local/bin/synthfleet worker"));

    // The jobs task runs `synthfleet-jobs` against the same deployment.
    let jobs = module("infra/modules/jobs");
    let called = &block(&main, "module", &["jobs"]).body;
    let scope = Scope {
        body: &jobs,
        args: Some((called, &top)),
    };
    let task = block(&jobs, "resource", &["aws_ecs_task_definition", "jobs"]);
    let env = scope.env_of(attr(&task.body, "container_definitions"));
    for needed in deployment
        .iter()
        .map(String::as_str)
        .chain(["SYNTHFLEET_BACKEND"])
    {
        assert!(env.contains(needed), "the jobs task lacks {needed}");
    }
}

/// IAM actions of a policy document: its statements' `actions`, dynamic ones included.
fn actions(document: &Block) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut statements: Vec<&Body> = nested(&document.body, "statement")
        .into_iter()
        .map(|s| &s.body)
        .collect();
    for dynamic in nested(&document.body, "dynamic") {
        statements.extend(
            nested(&dynamic.body, "content")
                .into_iter()
                .map(|c| &c.body),
        );
    }
    for statement in statements {
        let Expression::Array(items) = attr(statement, "actions") else {
            panic!("actions is a list");
        };
        out.extend(items.iter().map(string));
    }
    out
}

/// `service:A/B/C` permissions listed in a cell of docs/AWS.md's functions table.
fn documented(cell: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for code in cell.split('`').skip(1).step_by(2) {
        let Some((service, names)) = code.split_once(':') else {
            continue;
        };
        if !service
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            continue;
        }
        for name in names.split('/') {
            out.insert(format!("{service}:{name}"));
        }
    }
    out
}

/// The IAM actions an AWS SDK operation needs.
fn iam_actions(service: &str, operation: &str) -> Vec<String> {
    let pascal: String = operation
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let names: Vec<&str> = match (service, operation) {
        ("s3", "list_objects_v2") => vec!["ListBucket"],
        ("s3", "head_object") => vec!["GetObject"],
        ("s3", "create_multipart_upload" | "upload_part" | "complete_multipart_upload") => {
            vec!["PutObject"]
        }
        ("sqs", "send_message_batch") => vec!["SendMessage"],
        // A transaction is authorised item by item.
        ("dynamodb", "transact_write_items") => {
            vec!["PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"]
        }
        _ => return vec![format!("{service}:{pascal}")],
    };
    names
        .into_iter()
        .map(|n| format!("{service}:{n}"))
        .collect()
}

/// SDK operations called in a source file: a `.operation()` line right after the client.
fn sdk_operations(path: &str) -> BTreeSet<String> {
    let text = read(path);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| {
            ["client", ".s3", ".sqs", ".dynamodb", ".autoscaling"]
                .iter()
                .any(|c| w[0].ends_with(c))
        })
        .filter_map(|w| w[1].strip_prefix('.').and_then(|op| op.strip_suffix("()")))
        .filter(|op| {
            op.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn permissions_are_what_the_code_and_the_docs_say() {
    // Functions: each role allows exactly what docs/AWS.md's table lists for it.
    let functions = module("infra/modules/functions");
    let docs = read("docs/AWS.md");
    let rows: BTreeMap<String, &str> = docs
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let name = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
            Some((name.to_owned(), *cells.last()?))
        })
        .collect();
    for name in ["enqueue", "budget", "finalize", "scaler"] {
        let document = block(&functions, "data", &["aws_iam_policy_document", name]);
        let row = rows
            .get(name)
            .unwrap_or_else(|| panic!("docs/AWS.md has no row for `{name}`"));
        assert_eq!(
            actions(document),
            documented(row),
            "the {name} function's permissions (infra/ vs docs/AWS.md)"
        );
    }

    // Workers: everything the AWS adapters call, and nothing else but reading the model
    // keys at boot.
    let fleet = module("infra/modules/fleet");
    let granted = actions(block(
        &fleet,
        "data",
        &["aws_iam_policy_document", "worker"],
    ));
    let mut needed = BTreeSet::new();
    for (file, service) in [
        ("s3", "s3"),
        ("sqs", "sqs"),
        ("dynamo", "dynamodb"),
        ("asg", "autoscaling"),
        ("sns", "sns"),
    ] {
        let operations = sdk_operations(&format!("workers/aws/src/{file}.rs"));
        assert!(!operations.is_empty(), "no SDK call found in {file}.rs");
        for op in operations {
            needed.extend(iam_actions(service, &op));
        }
    }
    // Failed trajectories are written with their retention tag.
    needed.insert("s3:PutObjectTagging".into());
    needed.insert("kms:Decrypt".into());
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(missing.is_empty(), "the worker role lacks {missing:?}");
    let extra: Vec<_> = granted
        .difference(&needed)
        // Reading the model keys at boot, and calling Bedrock models (a provider, not an
        // adapter).
        .filter(|a| {
            !a.starts_with("kms:")
                && *a != "secretsmanager:GetSecretValue"
                && *a != "bedrock:InvokeModel"
                // The ECS agent sets a task's scale-in protection with the task's role.
                && *a != "ecs:UpdateTaskProtection"
                && *a != "ecs:GetTaskProtection"
        })
        .collect();
    assert!(
        extra.is_empty(),
        "the worker role allows what no worker calls: {extra:?}"
    );
}

/// One metric a dashboard widget or an alarm queries.
#[derive(Debug)]
struct MetricRef {
    namespace: String,
    name: String,
    /// Dimension name => its value as written (`var.name_prefix`, a literal).
    dimensions: BTreeMap<String, String>,
}

/// A literal's text, or any other expression as written (`var.name_prefix`).
fn text(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The items of a list, each as [`text`] renders it.
fn texts(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Array(items) => items.iter().map(text).collect(),
        other => panic!("expected a list, got {other}"),
    }
}

/// Metric rows of a dashboard body (`[namespace, name, dimension, value, ..., {options}]`),
/// through the module's locals.
fn dashboard_metrics(scope: &Scope<'_>, expr: &Expression, out: &mut Vec<MetricRef>) {
    match expr {
        Expression::Array(items) => {
            if let [
                Expression::String(namespace),
                Expression::String(name),
                rest @ ..,
            ] = items.as_slice()
            {
                let rest = match rest {
                    [pairs @ .., Expression::Object(_)] => pairs,
                    pairs => pairs,
                };
                assert!(
                    rest.len() % 2 == 0,
                    "a dashboard row names dimensions in pairs: {namespace} {name}"
                );
                out.push(MetricRef {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    dimensions: rest
                        .chunks(2)
                        .map(|pair| (text(&pair[0]), text(&pair[1])))
                        .collect(),
                });
            }
            items
                .iter()
                .for_each(|item| dashboard_metrics(scope, item, out));
        }
        Expression::Object(o) => o.iter().for_each(|(_, v)| dashboard_metrics(scope, v, out)),
        Expression::Traversal(t) => {
            if let (Expression::Variable(root), Some(TraversalOperator::GetAttr(name))) =
                (&t.expr, t.operators.first())
                && root.as_str() == "local"
                && let Some(e) = scope.local(name.as_str())
            {
                dashboard_metrics(scope, e, out);
            }
        }
        Expression::FuncCall(f) => f.args.iter().for_each(|a| dashboard_metrics(scope, a, out)),
        Expression::Parenthesis(e) => dashboard_metrics(scope, e, out),
        Expression::Conditional(c) => {
            dashboard_metrics(scope, &c.true_expr, out);
            dashboard_metrics(scope, &c.false_expr, out);
        }
        Expression::ForExpr(f) => {
            dashboard_metrics(scope, &f.collection_expr, out);
            dashboard_metrics(scope, &f.value_expr, out);
        }
        _ => {}
    }
}

/// The metric an alarm (or one of its `metric_query` blocks) names.
fn alarm_metric(body: &Body) -> Option<MetricRef> {
    let namespace = body.attributes().find(|a| a.key.as_str() == "namespace")?;
    let dimensions = match attr(body, "dimensions") {
        Expression::Object(o) => o.iter().map(|(k, v)| (key_name(k), text(v))).collect(),
        other => panic!("an alarm's dimensions are an object, not {other}"),
    };
    Some(MetricRef {
        namespace: text(&namespace.expr),
        name: text(attr(body, "metric_name")),
        dimensions,
    })
}

#[test]
fn the_dashboard_and_alarms_use_the_metrics_the_workers_publish() {
    use synthfleet_core::metrics::{self, ErrorClass, Metric};

    let monitoring = module("infra/modules/monitoring");
    let scope = Scope {
        body: &monitoring,
        args: None,
    };
    let dashboard = block(
        &monitoring,
        "resource",
        &["aws_cloudwatch_dashboard", "fleet"],
    );
    let mut shown = Vec::new();
    dashboard_metrics(&scope, attr(&dashboard.body, "dashboard_body"), &mut shown);

    let alarm_names = ["dead_letters", "spend_rate", "llm_error_rate", "no_workers"];
    let alarms: Vec<&Block> = alarm_names
        .iter()
        .map(|name| {
            block(
                &monitoring,
                "resource",
                &["aws_cloudwatch_metric_alarm", name],
            )
        })
        .collect();
    assert_eq!(
        nested(&monitoring, "resource")
            .iter()
            .filter(|r| labels(r)[0] == "aws_cloudwatch_metric_alarm")
            .count(),
        alarm_names.len(),
        "an alarm added here is named in this test and in docs/deploy.md"
    );
    let mut alarmed = Vec::new();
    for alarm in &alarms {
        let name = labels(alarm)[1];
        let queried: Vec<MetricRef> = alarm_metric(&alarm.body)
            .into_iter()
            .chain(
                nested(&alarm.body, "metric_query")
                    .into_iter()
                    .flat_map(|q| nested(&q.body, "metric"))
                    .filter_map(|m| alarm_metric(&m.body)),
            )
            .collect();
        assert!(!queried.is_empty(), "the {name} alarm queries no metric");
        alarmed.extend(queried);
        // Every alarm notifies the alert topic, when it fires and when it clears.
        for actions in ["alarm_actions", "ok_actions"] {
            assert_eq!(
                texts(attr(&alarm.body, actions)),
                ["var.alert_topic_arn"],
                "the {name} alarm's {actions}"
            );
        }
    }

    // Every metric queried is one the code defines, under one of its dimension sets, for
    // this deployment; or one of the task queues' SQS metrics.
    let queues = ["var.queue_name", "var.dlq_name"];
    for m in shown.iter().chain(&alarmed) {
        match m.namespace.as_str() {
            metrics::NAMESPACE => {
                let metric = Metric::ALL
                    .into_iter()
                    .find(|metric| metric.name() == m.name)
                    .unwrap_or_else(|| panic!("{} is no synthfleet_core::metrics::Metric", m.name));
                let keys: BTreeSet<&str> = m.dimensions.keys().map(String::as_str).collect();
                assert!(
                    metric.dimension_sets().iter().any(|set| set
                        .iter()
                        .copied()
                        .collect::<BTreeSet<_>>()
                        == keys),
                    "{} is published under {:?}, not {keys:?}: CloudWatch would show nothing",
                    m.name,
                    metric.dimension_sets()
                );
                assert_eq!(
                    m.dimensions.get(metrics::DEPLOYMENT).map(String::as_str),
                    Some("var.name_prefix"),
                    "{}",
                    m.name
                );
                if let Some(class) = m.dimensions.get(metrics::ERROR_CLASS) {
                    assert!(
                        ErrorClass::ALL.iter().any(|c| c.as_str() == class),
                        "no error class {class}"
                    );
                }
            }
            "AWS/SQS" => {
                assert_eq!(m.dimensions.len(), 1, "{m:?}");
                let queue = m.dimensions.get("QueueName").expect("QueueName");
                assert!(queues.contains(&queue.as_str()), "{m:?}");
            }
            other => panic!("a metric in namespace {other}: {m:?}"),
        }
    }

    // The dashboard shows every metric, and LLM failures of every class.
    let on_dashboard: BTreeSet<&str> = shown
        .iter()
        .filter(|m| m.namespace == metrics::NAMESPACE)
        .map(|m| m.name.as_str())
        .collect();
    for metric in Metric::ALL {
        assert!(
            on_dashboard.contains(metric.name()),
            "the dashboard does not show {}",
            metric.name()
        );
    }
    let classes: BTreeSet<&str> = shown
        .iter()
        .filter_map(|m| m.dimensions.get(metrics::ERROR_CLASS))
        .map(String::as_str)
        .collect();
    assert_eq!(
        classes,
        ErrorClass::ALL.iter().map(|c| c.as_str()).collect(),
        "the dashboard's LLM failures by class"
    );
    for queue in queues {
        assert!(
            shown
                .iter()
                .any(|m| m.dimensions.get("QueueName") == Some(&queue.to_owned())),
            "the dashboard does not show {queue}"
        );
    }

    // The dead-letter alarm watches the dead-letter queue; spend is alarmed in micro-dollars.
    let dead_letters = alarm_metric(&alarms[0].body).expect("a metric");
    assert_eq!(
        (
            dead_letters.name.as_str(),
            dead_letters.dimensions["QueueName"].as_str()
        ),
        ("ApproximateNumberOfMessagesVisible", "var.dlq_name")
    );
    assert_eq!(
        attr(&alarms[1].body, "threshold").to_string(),
        format!(
            "var.spend_alarm_usd_per_hour * {}",
            synthfleet_core::MicroUsd::from_usd_ceil(1.0).0
        )
    );

    // Live workers are heartbeats over the workers' interval: the worker's default.
    let heartbeat_s = number(scope.local("heartbeat_s").expect("local.heartbeat_s"));
    let worker_default = read("workers/cli/src/worker.rs")
        .split("env = \"SYNTHFLEET_HEARTBEAT_S\", default_value_t = ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("the worker's --heartbeat-s default");
    assert_eq!(heartbeat_s, worker_default);

    // The alert topic is the one the budget function publishes to, and CloudWatch may use
    // the key that encrypts it (without it, alarms notify nobody, silently).
    let main = module("infra");
    let called = &block(&main, "module", &["monitoring"]).body;
    for (argument, value) in [
        ("alert_topic_arn", "module.functions.alert_topic_arn"),
        ("queue_name", "module.queues.queue_name"),
        ("dlq_name", "module.queues.dlq_name"),
        ("name_prefix", "var.name_prefix"),
    ] {
        assert_eq!(
            attr(called, argument).to_string(),
            value,
            "module.monitoring"
        );
    }
    let functions = module("infra/modules/functions");
    let topic = "aws_sns_topic.alerts.arn";
    assert_eq!(
        attr(
            &block(&functions, "output", &["alert_topic_arn"]).body,
            "value"
        )
        .to_string(),
        topic
    );
    let functions_scope = Scope {
        body: &functions,
        args: None,
    };
    let Expression::ForExpr(table) = functions_scope.local("functions").expect("local.functions")
    else {
        panic!("local.functions is a `for` over the functions");
    };
    assert_eq!(
        object_get(
            object_get(object_get(&table.collection_expr, "budget"), "env"),
            "SYNTHFLEET_ALERT_TOPIC_ARN"
        )
        .to_string(),
        topic
    );
    let queues_tf = module("infra/modules/queues");
    for (output, value) in [
        ("queue_name", "aws_sqs_queue.tasks.name"),
        ("dlq_name", "aws_sqs_queue.dead_letters.name"),
    ] {
        assert_eq!(
            attr(&block(&queues_tf, "output", &[output]).body, "value").to_string(),
            value
        );
    }
    let key_policy = block(&main, "data", &["aws_iam_policy_document", "kms"]);
    let cloudwatch = nested(&key_policy.body, "statement")
        .into_iter()
        .find(|s| {
            nested(&s.body, "principals")
                .iter()
                .any(|p| texts(attr(&p.body, "identifiers")) == ["cloudwatch.amazonaws.com"])
        })
        .expect("the key policy lets CloudWatch alarms publish to the encrypted alert topic");
    assert_eq!(
        texts(attr(&cloudwatch.body, "actions")),
        ["kms:GenerateDataKey*", "kms:Decrypt"]
    );
}

/// `worker_spot` turns the worker hosts' group into a Spot fleet: several instance types of
/// one size, price-capacity-optimized, an on-demand base, capacity rebalancing; ECS hosts
/// drain on an interruption notice (their tasks get the SIGTERM the worker hands rollouts
/// back on).
#[test]
fn the_worker_fleet_can_run_on_spot() {
    let root_module = module("infra");
    let spot = block(&root_module, "variable", &["worker_spot"]);
    assert_eq!(
        attr(&spot.body, "default").to_string(),
        "null",
        "on demand unless asked"
    );
    let fleet_call = block(&root_module, "module", &["fleet"]);
    assert_eq!(
        attr(&fleet_call.body, "spot").to_string(),
        "var.worker_spot"
    );

    let fleet = module("infra/modules/fleet");
    let group = block(&fleet, "resource", &["aws_autoscaling_group", "workers"]);
    assert_eq!(
        attr(&group.body, "capacity_rebalance").to_string(),
        "var.spot != null"
    );
    let dynamic = |name: &str| -> &Block {
        group
            .body
            .blocks()
            .find(|b| b.identifier.as_str() == "dynamic" && labels(b) == [name])
            .unwrap_or_else(|| panic!("the group has no dynamic {name}"))
    };
    // Exactly one of the two: a plain launch template on demand, a mixed policy on Spot.
    assert_eq!(
        attr(&dynamic("launch_template").body, "for_each").to_string(),
        "var.spot == null ? [1] : []"
    );
    let mixed = dynamic("mixed_instances_policy");
    assert_eq!(
        attr(&mixed.body, "for_each").to_string(),
        "var.spot == null ? [] : [var.spot]"
    );
    let content = &nested(&mixed.body, "content")[0].body;
    let distribution = &nested(content, "instances_distribution")[0].body;
    assert_eq!(
        string(attr(distribution, "spot_allocation_strategy")),
        "price-capacity-optimized"
    );
    for key in [
        "on_demand_base_capacity",
        "on_demand_percentage_above_base_capacity",
    ] {
        attr(distribution, key);
    }
    let template = &nested(content, "launch_template")[0].body;
    assert!(
        template
            .blocks()
            .any(|b| b.identifier.as_str() == "dynamic" && labels(b) == ["override"]),
        "one override per instance type"
    );
    assert!(
        read("infra/modules/fleet/templates/ecs-boot.sh.tftpl")
            .lines()
            .any(|l| l == "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true"),
        "ECS hosts drain on a Spot interruption notice"
    );
}
