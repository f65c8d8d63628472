#!/usr/bin/env bash
# Creates synthfleet's data-plane resources in LocalStack, with the names and shapes
# Terraform (infra/) gives them, as synthfleet_aws::provision does (tests/infra.rs checks
# all three); prefix "synthfleet" by default. With `tflocal apply` (docs/deploy.md) you
# need not run this hook: Terraform creates these and the control plane.
#   bucket  synthfleet-trajectories   (failed objects, tagged synthfleet-status=failed, expire after 30 days)
#   table   synthfleet-metadata       (pk/sk; indexes by_kind, by_trajectory, by_status, by_commit; TTL on ttl)
#   queue   synthfleet-tasks          (redrive to synthfleet-tasks-dlq after SYNTHFLEET_MAX_RECEIVES receives: the
#                                      backstop for workers that die; matches the worker's default of 10)
#   queue   synthfleet-tasks-dlq
set -euo pipefail
prefix="${SYNTHFLEET_PREFIX:-synthfleet}"
max_receives="${SYNTHFLEET_MAX_RECEIVES:-10}"
bucket="${prefix}-trajectories"
table="${prefix}-metadata"
queue="${prefix}-tasks"
dlq="${prefix}-tasks-dlq"
retention=1209600   # both queues keep messages 14 days
wait=20             # receives long-poll

awslocal s3api create-bucket --bucket "$bucket" >/dev/null 2>&1 || true
awslocal s3api put-bucket-lifecycle-configuration --bucket "$bucket" --lifecycle-configuration '{
  "Rules": [{"ID": "expire-failed-trajectories", "Status": "Enabled",
             "Filter": {"Tag": {"Key": "synthfleet-status", "Value": "failed"}},
             "Expiration": {"Days": 30}}]}'

if ! awslocal dynamodb describe-table --table-name "$table" >/dev/null 2>&1; then
  awslocal dynamodb create-table --table-name "$table" --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
      AttributeName=kind,AttributeType=S AttributeName=trajectory_id,AttributeType=S \
      AttributeName=campaign_status,AttributeType=S AttributeName=created_at,AttributeType=S \
      AttributeName=campaign,AttributeType=S AttributeName=commit_order,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --global-secondary-indexes '[
      {"IndexName": "by_kind", "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "ALL"}},
      {"IndexName": "by_trajectory", "KeySchema": [{"AttributeName": "trajectory_id", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}},
      {"IndexName": "by_status", "KeySchema": [{"AttributeName": "campaign_status", "KeyType": "HASH"}, {"AttributeName": "created_at", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "ALL"}},
      {"IndexName": "by_commit", "KeySchema": [{"AttributeName": "campaign", "KeyType": "HASH"}, {"AttributeName": "commit_order", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "ALL"}}
    ]' >/dev/null
  awslocal dynamodb update-time-to-live --table-name "$table" \
    --time-to-live-specification Enabled=true,AttributeName=ttl >/dev/null
fi

dlq_url="$(awslocal sqs create-queue --queue-name "$dlq" --attributes MessageRetentionPeriod=$retention --query QueueUrl --output text)"
dlq_arn="$(awslocal sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn --query Attributes.QueueArn --output text)"
awslocal sqs create-queue --queue-name "$queue" --attributes "{
  \"VisibilityTimeout\": \"300\", \"ReceiveMessageWaitTimeSeconds\": \"$wait\", \"MessageRetentionPeriod\": \"$retention\",
  \"RedrivePolicy\": \"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":$max_receives}\"}" >/dev/null
echo "synthfleet resources ready: s3://$bucket, table $table, queues $queue and $dlq"
