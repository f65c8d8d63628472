# The quality jobs: a Fargate task of the synthfleet-jobs image that the finalize function
# starts for each finished campaign (`synthfleet-jobs publish <campaign>`: report and
# dashboard to reports/<campaign>/, Hugging Face export to exports/<campaign>/). DuckDB
# lives in this image only.

variable "name_prefix" {
  type = string
}

variable "region" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "image" {
  type = string
}

variable "deployment_env" {
  type = map(string)
}

variable "kms_key_arn" {
  type = string
}

variable "bucket_arn" {
  type = string
}

variable "table_arn" {
  type = string
}

variable "repository_arns" {
  type = list(string)
}

variable "log_retention_days" {
  type = number
}

variable "cpu" {
  description = "Fargate vCPU units of the task (DuckDB uses every core it gets)."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Fargate memory of the task, MiB."
  type        = number
  default     = 8192
}

locals {
  container = "jobs"
}

resource "aws_ecs_cluster" "jobs" {
  name = "${var.name_prefix}-jobs"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = "/synthfleet/${var.name_prefix}/jobs"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_security_group" "jobs" {
  #checkov:skip=CKV2_AWS_5:Attached at run time: the finalize function starts the jobs task with it (SYNTHFLEET_JOBS_SECURITY_GROUPS).
  name        = "${var.name_prefix}-jobs"
  description = "synthfleet quality jobs: nothing inbound; HTTPS to AWS endpoints"
  vpc_id      = var.vpc_id
  egress {
    #checkov:skip=CKV_AWS_382:S3 and DynamoDB are reached through gateway endpoints, whose prefix lists change; egress is limited to HTTPS.
    description = "HTTPS to AWS APIs"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# What synthfleet-jobs reads and writes (docs/AWS.md, docs/QUALITY.md).
data "aws_iam_policy_document" "task" {
  statement {
    sid       = "Bucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "Read"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/*"]
  }
  statement {
    sid       = "Publish"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/reports/*", "${var.bucket_arn}/exports/*", "${var.bucket_arn}/quality/*", "${var.bucket_arn}/reviews/*"]
  }
  statement {
    sid       = "Metadata"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
    resources = [var.table_arn, "${var.table_arn}/index/*"]
  }
  statement {
    sid       = "Encryption"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name_prefix}-jobs-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "task" {
  name   = "jobs"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

module "execution_role" {
  source          = "../execution_role"
  name            = "${var.name_prefix}-jobs-execution"
  repository_arns = var.repository_arns
  log_group_arn   = aws_cloudwatch_log_group.jobs.arn
  kms_key_arn     = var.kms_key_arn
}

resource "aws_ecs_task_definition" "jobs" {
  family                   = "${var.name_prefix}-jobs"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = module.execution_role.arn

  ephemeral_storage {
    size_in_gib = 50
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = local.container
    image                  = var.image
    essential              = true
    command                = ["--help"]
    readonlyRootFilesystem = true
    environment            = [for k, v in var.deployment_env : { name = k, value = v }]
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.jobs.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "jobs"
      }
    }
  }])
}

output "cluster_name" {
  value = aws_ecs_cluster.jobs.name
}

output "cluster_arn" {
  value = aws_ecs_cluster.jobs.arn
}

output "task_definition_arn" {
  value = aws_ecs_task_definition.jobs.arn_without_revision
}

output "container_name" {
  value = local.container
}

output "security_group_id" {
  value = aws_security_group.jobs.id
}

output "role_arns" {
  description = "The roles finalize passes to ECS when it starts the task."
  value       = [aws_iam_role.task.arn, module.execution_role.arn]
}

output "log_group" {
  value = aws_cloudwatch_log_group.jobs.name
}
