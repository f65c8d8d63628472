# The trajectory bucket and the metadata table (docs/AWS.md: "S3" and "DynamoDB").

variable "name_prefix" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "failed_tag" {
  description = "The tag synthfleet puts on failed trajectories and stale checkpoints (synthfleet_aws::FAILED_TAG)."
  type        = object({ key = string, value = string })
}

variable "failed_days" {
  description = "Days a failed trajectory is kept (synthfleet_core::store::FAILED_RETENTION_DAYS)."
  type        = number
}

variable "tier_after_days" {
  description = "Days after which trajectories move to S3 Intelligent-Tiering."
  type        = number
  default     = 30
}

resource "aws_s3_bucket" "trajectories" {
  #checkov:skip=CKV2_AWS_62:The bucket's event notification (campaign uploads start the enqueue function) is defined in modules/functions, beside the function and its permission.
  #checkov:skip=CKV_AWS_18:Reads and writes are made by the deployment's own roles and logged by CloudTrail data events if enabled; a server access log bucket would need its own copy of every control.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the storage bill; trajectories can be regenerated and exports are copied out by users.
  bucket = "${var.name_prefix}-trajectories"
}

resource "aws_s3_bucket_ownership_controls" "trajectories" {
  bucket = aws_s3_bucket.trajectories.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "trajectories" {
  bucket                  = aws_s3_bucket.trajectories.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "trajectories" {
  bucket = aws_s3_bucket.trajectories.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "trajectories" {
  bucket = aws_s3_bucket.trajectories.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "trajectories" {
  bucket = aws_s3_bucket.trajectories.id

  rule {
    id     = "expire-failed-trajectories"
    status = "Enabled"
    filter {
      tag {
        key   = var.failed_tag.key
        value = var.failed_tag.value
      }
    }
    expiration {
      days = var.failed_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
    # Objects are written once; an overwritten or deleted version is garbage.
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  # Intelligent-Tiering moves what nobody reads (old successes, once exported) to cheaper
  # tiers by itself, and back when read.
  rule {
    id     = "tier-old-trajectories"
    status = "Enabled"
    filter {
      prefix = "trajectories/"
    }
    transition {
      days          = var.tier_after_days
      storage_class = "INTELLIGENT_TIERING"
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.trajectories.arn,
      "${aws_s3_bucket.trajectories.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "trajectories" {
  bucket     = aws_s3_bucket.trajectories.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.trajectories]
}

# Keys pk/sk; the indexes synthfleet_aws::dynamo queries; TTL on `ttl`.
resource "aws_dynamodb_table" "metadata" {
  #checkov:skip=CKV2_AWS_16:On-demand billing scales by itself; Auto Scaling applies to provisioned capacity only.
  name         = "${var.name_prefix}-metadata"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "kind"
    type = "S"
  }
  attribute {
    name = "trajectory_id"
    type = "S"
  }
  attribute {
    name = "campaign_status"
    type = "S"
  }
  attribute {
    name = "created_at"
    type = "S"
  }
  attribute {
    name = "campaign"
    type = "S"
  }
  attribute {
    name = "commit_order"
    type = "S"
  }

  global_secondary_index {
    name            = "by_kind"
    hash_key        = "kind"
    range_key       = "sk"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "by_trajectory"
    hash_key        = "trajectory_id"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "by_status"
    hash_key        = "campaign_status"
    range_key       = "created_at"
    projection_type = "ALL"
  }
  # A campaign's commits in commit order (`synthfleet tail`; docs/AWS.md, "Commit order").
  global_secondary_index {
    name            = "by_commit"
    hash_key        = "campaign"
    range_key       = "commit_order"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  deletion_protection_enabled = true
}

output "bucket_name" {
  value = aws_s3_bucket.trajectories.bucket
}

output "bucket_arn" {
  value = aws_s3_bucket.trajectories.arn
}

output "table_name" {
  value = aws_dynamodb_table.metadata.name
}

output "table_arn" {
  value = aws_dynamodb_table.metadata.arn
}
