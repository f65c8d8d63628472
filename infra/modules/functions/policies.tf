# Each function's own permissions (docs/AWS.md, the functions table).

locals {
  table_and_indexes = [var.table_arn, "${var.table_arn}/index/*"]
  # Recurring campaigns' files (and the task files beside them) may live outside the
  # upload prefix (they should: an upload there also starts a run).
  campaign_dirs = distinct(concat(
    [var.upload_prefix],
    [for c in values(var.scheduled_campaigns) : "${dirname(c.campaign_key)}/"],
  ))
}

data "aws_iam_policy_document" "enqueue" {
  statement {
    sid       = "ListCampaignDirectories"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for d in local.campaign_dirs : "${d}*"]
    }
  }
  statement {
    sid       = "ReadCampaignFilesAndGoldReports"
    actions   = ["s3:GetObject"]
    resources = concat([for d in local.campaign_dirs : "${var.bucket_arn}/${d}*"], ["${var.bucket_arn}/gold/*", "${var.bucket_arn}/campaigns/*"])
  }
  statement {
    sid       = "StoreSpecsAndRunGoldReports"
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arn}/campaigns/*", "${var.bucket_arn}/gold/*"]
  }
  statement {
    sid       = "Campaigns"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchWriteItem"]
    resources = local.table_and_indexes
  }
  statement {
    sid       = "Enqueue"
    actions   = ["sqs:SendMessage"]
    resources = [var.queue_arn]
  }
}

data "aws_iam_policy_document" "budget" {
  statement {
    sid       = "LeasesAndCampaigns"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
    resources = local.table_and_indexes
  }
  statement {
    sid       = "Alerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
}

data "aws_iam_policy_document" "finalize" {
  statement {
    sid       = "Campaigns"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    resources = local.table_and_indexes
  }
  statement {
    sid       = "Totals"
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arn}/reports/*"]
  }
  dynamic "statement" {
    for_each = local.jobs
    content {
      sid       = "StartQualityJobs"
      actions   = ["ecs:RunTask"]
      resources = ["${statement.value.task_definition_arn}:*"]
      condition {
        test     = "ArnEquals"
        variable = "ecs:cluster"
        values   = [statement.value.cluster_arn]
      }
    }
  }
  dynamic "statement" {
    for_each = local.jobs
    content {
      sid       = "PassQualityJobRoles"
      actions   = ["iam:PassRole"]
      resources = statement.value.role_arns
      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["ecs-tasks.amazonaws.com"]
      }
    }
  }
}

data "aws_iam_policy_document" "scaler" {
  #checkov:skip=CKV_AWS_356:autoscaling:DescribeAutoScalingGroups has no resource-level permissions.
  #checkov:skip=CKV_AWS_111:autoscaling:DescribeAutoScalingGroups has no resource-level permissions.
  statement {
    sid       = "QueueDepth"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [var.queue_arn, var.dlq_arn]
  }
  statement {
    sid       = "HeartbeatsAndCounts"
    actions   = ["dynamodb:Query", "dynamodb:BatchGetItem"]
    resources = local.table_and_indexes
  }
  dynamic "statement" {
    for_each = local.asg_fleets
    content {
      sid       = "DescribeGroups"
      actions   = ["autoscaling:DescribeAutoScalingGroups"]
      resources = ["*"]
    }
  }
  dynamic "statement" {
    for_each = local.asg_fleets
    content {
      sid       = "SizeTheGroup"
      actions   = ["autoscaling:SetDesiredCapacity"]
      resources = [statement.value.asg_arn]
    }
  }
  dynamic "statement" {
    for_each = local.ecs_fleets
    content {
      sid       = "SizeTheService"
      actions   = ["ecs:DescribeServices", "ecs:UpdateService"]
      resources = [statement.value.ecs_service_arn]
    }
  }
}
