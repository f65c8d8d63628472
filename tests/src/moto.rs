//! moto's server, started per test on a free loopback port, with synthfleet's resources
//! provisioned by the same code LocalStack users get.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_aws::{AwsClients, AwsNames, DynamoMetadata, S3ObjectStore, provision};
use synthfleet_core::store::TrajectoryStore;

pub struct Moto {
    pub endpoint: String,
    /// The SDK configuration for this server, for clients the kit does not build.
    pub config: aws_config::SdkConfig,
    pub clients: AwsClients,
    pub names: AwsNames,
    server: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The child is the Python process that listens (no wrapper script in between).
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

pub const MAX_RECEIVES: u32 = 3;

/// moto's own server app (`moto.server.main` builds the same), without threads.
const SERVE: &str = "import os, sys
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple
port = int(sys.argv[1])
os.environ['MOTO_PORT'] = str(port)
run_simple('127.0.0.1', port, DomainDispatcherApplication(create_backend_app), threaded=False)
";

impl Moto {
    /// Starts moto's server and creates the bucket, table and queues.
    ///
    /// moto's WSGI app is served single-threaded: moto's backends are not safe under
    /// concurrent requests (two concurrent conditional updates of one item can both read
    /// the old value), whereas DynamoDB serialises writes to an item. Serving one request
    /// at a time restores the per-item atomicity our conditional writes rely on, so the
    /// concurrency tests test our code rather than moto's races. Workers therefore use
    /// short polling (`--poll-wait-s 0`) against it.
    pub async fn start() -> Moto {
        Moto::start_with(MAX_RECEIVES).await
    }

    /// [`Moto::start`] with the queue's redrive after `max_receives` deliveries (workers
    /// get the same `--max-receives`).
    pub async fn start_with(max_receives: u32) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let python = std::env::var("SYNTHFLEET_MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let server = Command::new(&python)
            .args(["-c", SERVE, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting moto's server with {python}: {e}; pip install 'moto[server]'")
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await;
        let clients = AwsClients::from_sdk_config(&config, true);
        let (bucket, table, queue, dlq) = provision::default_names("synthfleet");
        let names = provision::ensure(&clients, &bucket, &table, &queue, &dlq, max_receives)
            .await
            .expect("provisioning moto");
        Moto {
            endpoint,
            config,
            clients,
            names,
            server,
        }
    }

    /// The trajectory store on this server's bucket and table.
    pub fn store(&self) -> TrajectoryStore {
        TrajectoryStore::new(
            Arc::new(S3ObjectStore::new(
                self.clients.s3.clone(),
                &self.names.bucket,
            )),
            Arc::new(DynamoMetadata::new(
                self.clients.dynamodb.clone(),
                &self.names.table,
            )),
        )
    }

    /// Environment for a `synthfleet` process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("SYNTHFLEET_BACKEND".into(), "aws".into()),
            ("SYNTHFLEET_BUCKET".into(), self.names.bucket.clone()),
            ("SYNTHFLEET_TABLE".into(), self.names.table.clone()),
            ("SYNTHFLEET_QUEUE_URL".into(), self.names.queue_url.clone()),
            (
                "SYNTHFLEET_DLQ_URL".into(),
                self.names.dead_letter_queue_url.clone(),
            ),
        ]
    }
}
