# Source this to point synthfleet at the LocalStack of docker-compose.yml:
#   source localstack/env.sh
prefix="${SYNTHFLEET_PREFIX:-synthfleet}"
export AWS_ENDPOINT_URL="http://localhost:4566"
export AWS_ACCESS_KEY_ID="test"
export AWS_SECRET_ACCESS_KEY="test"
export AWS_REGION="us-east-1"
export SYNTHFLEET_BACKEND="aws"
export SYNTHFLEET_BUCKET="${prefix}-trajectories"
export SYNTHFLEET_TABLE="${prefix}-metadata"
export SYNTHFLEET_QUEUE_URL="http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/${prefix}-tasks"
export SYNTHFLEET_DLQ_URL="http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/${prefix}-tasks-dlq"
