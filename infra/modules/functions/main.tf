# The control plane (docs/AWS.md, "Control-plane functions"): four Lambda functions built by
# functions/build.sh, each with its own log group and least-privilege role, the schedules
# that drive them, the S3 trigger for campaign uploads and the budget alert topic.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  # Zero or one of each, for `for` expressions and dynamic blocks.
  scalers    = var.scaler == null ? [] : [var.scaler]
  asg_fleets = [for s in local.scalers : s if s.ecs_service_name == null]
  ecs_fleets = [for s in local.scalers : s if s.ecs_service_name != null]
  jobs       = var.jobs == null ? [] : [var.jobs]

  scaler_env = merge(concat(
    [for s in local.asg_fleets : { SYNTHFLEET_SCALE_ASG = s.asg_name }],
    [for s in local.ecs_fleets : {
      SYNTHFLEET_SCALE_ECS_CLUSTER = s.ecs_cluster_name
      SYNTHFLEET_SCALE_ECS_SERVICE = s.ecs_service_name
    }],
    [for s in local.scalers : {
      SYNTHFLEET_SCALE_MIN              = tostring(s.min)
      SYNTHFLEET_SCALE_MAX              = tostring(s.max)
      SYNTHFLEET_SCALE_TASKS_PER_WORKER = tostring(s.tasks_per_worker)
      SYNTHFLEET_SCALE_IDLE_S           = tostring(s.idle_s)
    }],
  )...)
  finalize_env = merge([for j in local.jobs : {
    SYNTHFLEET_JOBS_CLUSTER         = j.cluster_name
    SYNTHFLEET_JOBS_TASK_DEFINITION = j.task_definition_arn
    SYNTHFLEET_JOBS_CONTAINER       = j.container
    SYNTHFLEET_JOBS_SUBNETS         = join(",", j.subnet_ids)
    SYNTHFLEET_JOBS_SECURITY_GROUPS = j.security_group_id
  }]...)

  # name => what makes it differ: environment, timeout, memory, concurrency, policy. The
  # scaler exists with a fleet only.
  functions = {
    for name, f in {
      enqueue = {
        env         = {}
        timeout     = 300
        memory      = 512
        concurrency = 4
        policy      = data.aws_iam_policy_document.enqueue.json
      }
      budget = {
        env         = { SYNTHFLEET_ALERT_TOPIC_ARN = aws_sns_topic.alerts.arn }
        timeout     = 120
        memory      = 256
        concurrency = 1
        policy      = data.aws_iam_policy_document.budget.json
      }
      finalize = {
        env         = local.finalize_env
        timeout     = 300
        memory      = 256
        concurrency = 1
        policy      = data.aws_iam_policy_document.finalize.json
      }
      scaler = {
        env         = local.scaler_env
        timeout     = 60
        memory      = 256
        concurrency = 1
        policy      = data.aws_iam_policy_document.scaler.json
      }
    } : name => f if name != "scaler" || var.scaler != null
  }

  # The functions invoked on a schedule, and how often.
  control_schedules = {
    for name, rate in {
      budget   = "rate(5 minutes)"
      finalize = "rate(5 minutes)"
      scaler   = "rate(1 minute)"
    } : name => rate if contains(keys(local.functions), name)
  }
}

resource "aws_cloudwatch_log_group" "function" {
  for_each          = local.functions
  name              = "/aws/lambda/${var.name_prefix}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# Failed asynchronous invocations (an S3 upload, a schedule's firing) land here rather
# than vanishing: inspect it with `aws sqs receive-message`.
resource "aws_sqs_queue" "failed_invocations" {
  name                      = "${var.name_prefix}-control-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = var.kms_key_arn
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.functions
  name               = "${var.name_prefix}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# What every function needs: its own log group, the key of its environment and data, the
# queue of its failed invocations.
data "aws_iam_policy_document" "common" {
  for_each = local.functions
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }
  statement {
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
  }
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failed_invocations.arn]
  }
}

resource "aws_iam_role_policy" "common" {
  for_each = local.functions
  name     = "common"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.common[each.key].json
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions
  name     = each.key
  role     = aws_iam_role.function[each.key].id
  policy   = each.value.policy
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each   = local.functions
  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:The functions call AWS APIs only (S3, DynamoDB, SQS, SNS, ECS, Auto Scaling); outside a VPC they need no NAT or endpoints.
  #checkov:skip=CKV_AWS_272:The zips are built from this repository by functions/build.sh; Lambda code signing needs a Signer profile this deployment does not assume.
  for_each                       = local.functions
  function_name                  = "${var.name_prefix}-${each.key}"
  description                    = "synthfleet ${each.key} (synthfleet_control::${each.key})"
  role                           = aws_iam_role.function[each.key].arn
  filename                       = "${var.functions_dir}/${each.key}/bootstrap.zip"
  source_code_hash               = filebase64sha256("${var.functions_dir}/${each.key}/bootstrap.zip")
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.architecture]
  memory_size                    = each.value.memory
  timeout                        = each.value.timeout
  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = var.kms_key_arn

  environment {
    variables = merge(var.deployment_env, each.value.env)
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.failed_invocations.arn
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  depends_on = [aws_iam_role_policy.common]
}

# ---- Triggers ------------------------------------------------------------------------

# A campaign file uploaded under the upload prefix starts a run.
resource "aws_lambda_permission" "s3_upload" {
  statement_id   = "campaign-upload"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.this["enqueue"].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = var.bucket_arn
  source_account = data.aws_caller_identity.current.account_id
}

resource "aws_s3_bucket_notification" "campaign_upload" {
  bucket = var.deployment_env["SYNTHFLEET_BUCKET"]
  lambda_function {
    lambda_function_arn = aws_lambda_function.this["enqueue"].arn
    events              = ["s3:ObjectCreated:*"]
    filter_prefix       = var.upload_prefix
    filter_suffix       = ".toml"
  }
  depends_on = [aws_lambda_permission.s3_upload]
}

resource "aws_scheduler_schedule_group" "this" {
  name = var.name_prefix
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name_prefix}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    actions   = ["lambda:InvokeFunction"]
    resources = [for f in aws_lambda_function.this : f.arn]
  }
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failed_invocations.arn]
  }
  statement {
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "invoke"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "control" {
  for_each            = local.control_schedules
  name                = "${var.name_prefix}-${each.key}"
  group_name          = aws_scheduler_schedule_group.this.name
  schedule_expression = each.value
  kms_key_arn         = var.kms_key_arn
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = aws_lambda_function.this[each.key].arn
    role_arn = aws_iam_role.scheduler.arn
    # Ignored by the function but logged (control::log_invocation): which schedule fired, when.
    input = jsonencode({
      schedule_arn   = "<aws.scheduler.schedule-arn>"
      scheduled_time = "<aws.scheduler.scheduled-time>"
    })
    retry_policy {
      maximum_retry_attempts       = 0
      maximum_event_age_in_seconds = 60
    }
  }
}

# A recurring campaign: each firing is a run of its own, <campaign>-<yyyymmddHHMM>.
resource "aws_scheduler_schedule" "campaign" {
  for_each                     = var.scheduled_campaigns
  name                         = "${var.name_prefix}-campaign-${each.key}"
  group_name                   = aws_scheduler_schedule_group.this.name
  schedule_expression          = each.value.schedule
  schedule_expression_timezone = each.value.timezone
  kms_key_arn                  = var.kms_key_arn
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = aws_lambda_function.this["enqueue"].arn
    role_arn = aws_iam_role.scheduler.arn
    input = jsonencode({
      campaign_key   = each.value.campaign_key
      scheduled_time = "<aws.scheduler.scheduled-time>"
    })
    retry_policy {
      maximum_retry_attempts       = 3
      maximum_event_age_in_seconds = 3600
    }
    dead_letter_config {
      arn = aws_sqs_queue.failed_invocations.arn
    }
  }
}

# ---- Budget alerts -------------------------------------------------------------------

resource "aws_sns_topic" "alerts" {
  name              = "${var.name_prefix}-budget-alerts"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alert_emails)
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = each.value
}
