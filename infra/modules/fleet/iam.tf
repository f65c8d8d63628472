# What a worker may do (docs/AWS.md): read campaign specs, write trajectories, their facts
# and checkpoints, keep the table's items, serve the queues, read the model keys, and protect
# its own instance from scale-in.
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "Bucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "CampaignSpecs"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/campaigns/*"]
  }
  statement {
    sid       = "TrajectoriesAndCheckpoints"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/trajectories/*", "${var.bucket_arn}/checkpoints/*"]
  }
  statement {
    sid       = "TrajectoryFacts"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.bucket_arn}/quality/*/facts/*"]
  }
  statement {
    sid = "Metadata"
    actions = [
      "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
      "dynamodb:Query", "dynamodb:ConditionCheckItem", "dynamodb:BatchWriteItem",
    ]
    resources = [var.table_arn, "${var.table_arn}/index/*"]
  }
  statement {
    sid = "Queues"
    actions = [
      "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage",
      "sqs:GetQueueAttributes",
    ]
    resources = var.queue_arns
  }
  statement {
    sid       = "CommitEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.commits.arn]
  }
  statement {
    sid       = "Encryption"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
  }
  dynamic "statement" {
    for_each = length(var.model_secrets) > 0 ? [1] : []
    content {
      sid       = "ModelKeys"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = values(var.model_secrets)
    }
  }
  dynamic "statement" {
    for_each = length(var.bedrock_model_arns) > 0 ? [1] : []
    content {
      sid       = "BedrockModels"
      actions   = ["bedrock:InvokeModel"]
      resources = var.bedrock_model_arns
    }
  }
  dynamic "statement" {
    for_each = var.kind == "ecs" ? [1] : []
    content {
      # The ECS agent sets the task's scale-in protection with the task's role.
      sid       = "TaskProtection"
      actions   = ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]
      resources = ["arn:aws:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:task/${local.group_name}/*"]
    }
  }
  dynamic "statement" {
    for_each = var.kind == "asg" ? [1] : []
    content {
      sid       = "ScaleInProtection"
      actions   = ["autoscaling:SetInstanceProtection"]
      resources = ["arn:aws:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.group_name}"]
    }
  }
}

# What a worker host needs besides: pull images and ship logs.
data "aws_iam_policy_document" "host" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource-level permissions.
  #checkov:skip=CKV_AWS_111:ecr:GetAuthorizationToken has no resource-level permissions.
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullImages"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = var.repository_arns
  }
  statement {
    sid       = "Binary"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/${var.binary_key}"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }
  statement {
    sid       = "DecryptImagesAndBinary"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "host" {
  name               = "${var.name_prefix}-worker-host"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "host" {
  name   = "host"
  role   = aws_iam_role.host.id
  policy = data.aws_iam_policy_document.host.json
}

# On plain EC2 the worker runs on the host, with the host's role.
resource "aws_iam_role_policy" "host_worker" {
  count  = var.kind == "asg" ? 1 : 0
  name   = "worker"
  role   = aws_iam_role.host.id
  policy = data.aws_iam_policy_document.worker.json
}

# Session Manager instead of SSH: no inbound port is open.
resource "aws_iam_role_policy_attachment" "host_ssm" {
  role       = aws_iam_role.host.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_role_policy_attachment" "host_ecs" {
  count      = var.kind == "ecs" ? 1 : 0
  role       = aws_iam_role.host.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "host" {
  name = "${var.name_prefix}-worker-host"
  role = aws_iam_role.host.name
}
