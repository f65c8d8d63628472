# Watching a fleet: a CloudWatch dashboard and the alarms that page through the alert
# topic. The workers publish their metrics in the embedded metric format in their logs;
# `synthfleet_core::metrics` defines them (namespace, names, units, dimension sets) and
# `tests/infra.rs` checks that every metric queried here is one of them, under one of its
# dimension sets (CloudWatch matches a metric by its whole set of dimensions), and that the
# dashboard shows each.

locals {
  # The workers' heartbeat interval: `synthfleet worker --heartbeat-s`'s default, which the
  # fleet keeps (tested). Heartbeats per period ÷ beats per worker = live workers.
  heartbeat_s = 30
  # The error-rate alarm judges a 5-minute period only when it saw this many LLM calls.
  llm_error_min_requests = 20
  # How long work may wait with no worker alive before the alarm fires.
  no_heartbeat_periods = 3 # × 5 minutes

  width  = 8
  height = 6

  alarm_arns = concat(
    [
      aws_cloudwatch_metric_alarm.dead_letters.arn,
      aws_cloudwatch_metric_alarm.llm_error_rate.arn,
      aws_cloudwatch_metric_alarm.no_workers.arn,
    ],
    aws_cloudwatch_metric_alarm.spend_rate[*].arn,
  )

  widgets = [
    {
      title = "Rollouts committed per minute"
      metrics = [
        [{ id = "per_minute", expression = "rollouts * 60 / PERIOD(rollouts)", label = "rollouts / min" }],
        ["Synthfleet", "RolloutsCompleted", "Deployment", var.name_prefix, { id = "rollouts", stat = "Sum", visible = false }],
      ]
    },
    {
      title = "LLM calls, and failed calls by class"
      metrics = [
        ["Synthfleet", "LlmRequests", "Deployment", var.name_prefix, { stat = "Sum", label = "calls" }],
        ["Synthfleet", "LlmErrors", "Deployment", var.name_prefix, "ErrorClass", "unavailable", { stat = "Sum", label = "unavailable" }],
        ["Synthfleet", "LlmErrors", "Deployment", var.name_prefix, "ErrorClass", "malformed", { stat = "Sum", label = "malformed" }],
        ["Synthfleet", "LlmErrors", "Deployment", var.name_prefix, "ErrorClass", "rejected", { stat = "Sum", label = "rejected" }],
        ["Synthfleet", "LlmErrors", "Deployment", var.name_prefix, "ErrorClass", "context_exceeded", { stat = "Sum", label = "context_exceeded" }],
        ["Synthfleet", "LlmErrors", "Deployment", var.name_prefix, "ErrorClass", "config", { stat = "Sum", label = "config" }],
      ]
      period = 60
    },
    {
      title = "Spend rate (USD per hour)"
      metrics = [
        [{ id = "usd_per_hour", expression = "spend * 3600 / PERIOD(spend) / 1000000", label = "USD / h" }],
        ["Synthfleet", "SpendMicroUsd", "Deployment", var.name_prefix, { id = "spend", stat = "Sum", visible = false }],
      ]
    },
    {
      title = "Sandbox acquire time (ms)"
      metrics = [
        ["Synthfleet", "SandboxAcquireMs", "Deployment", var.name_prefix, { stat = "p50", label = "p50" }],
        ["Synthfleet", "SandboxAcquireMs", "Deployment", var.name_prefix, { stat = "p90", label = "p90" }],
      ]
    },
    {
      title = "Task age when received (s, p90)"
      metrics = [
        ["Synthfleet", "QueueAgeS", "Deployment", var.name_prefix, { stat = "p90", label = "p90" }],
      ]
    },
    {
      title = "Live workers"
      metrics = [
        [{ id = "workers", expression = "beats * ${local.heartbeat_s} / PERIOD(beats)", label = "workers" }],
        ["Synthfleet", "WorkerHeartbeat", "Deployment", var.name_prefix, { id = "beats", stat = "SampleCount", visible = false }],
      ]
    },
    {
      title = "Task queue: messages, and the oldest one's age (s, right)"
      metrics = [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.queue_name, { stat = "Maximum", label = "waiting" }],
        ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", var.queue_name, { stat = "Maximum", label = "in flight" }],
        ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", var.queue_name, { stat = "Maximum", label = "oldest (s)", yAxis = "right" }],
      ]
    },
    {
      title = "Dead letters"
      metrics = [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.dlq_name, { stat = "Maximum", label = "dead letters" }],
      ]
    },
  ]
}

resource "aws_cloudwatch_dashboard" "fleet" {
  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({
    start = "-PT6H"
    widgets = concat(
      [
        for i, w in local.widgets : {
          type   = "metric"
          x      = (i % 3) * local.width
          y      = floor(i / 3) * local.height
          width  = local.width
          height = local.height
          properties = {
            title   = w.title
            region  = var.region
            view    = "timeSeries"
            stacked = false
            period  = try(w.period, 300)
            metrics = w.metrics
            yAxis   = { left = { min = 0 } }
          }
        }
      ],
      [
        {
          type   = "alarm"
          x      = (length(local.widgets) % 3) * local.width
          y      = floor(length(local.widgets) / 3) * local.height
          width  = local.width
          height = local.height
          properties = {
            title  = "Alarms"
            alarms = local.alarm_arns
          }
        }
      ],
    )
  })
}

# ---- Alarms: each notifies the alert topic when it fires and when it clears ------------

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name_prefix}-dead-letters"
  alarm_description   = "Task messages were dead-lettered (poison tasks, or samples out of attempts). `synthfleet status` lists them; `synthfleet redrive` retries them (docs/deploy.md, \"Watching a fleet\")."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.dlq_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # SQS publishes nothing for a queue that has been empty and idle for hours.
  treat_missing_data = "notBreaching"
  alarm_actions      = [var.alert_topic_arn]
  ok_actions         = [var.alert_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "spend_rate" {
  count               = var.spend_alarm_usd_per_hour == null ? 0 : 1
  alarm_name          = "${var.name_prefix}-spend-rate"
  alarm_description   = "The fleet booked more than ${var.spend_alarm_usd_per_hour} USD in an hour (spend_alarm_usd_per_hour). Campaign budgets still cap each campaign; `synthfleet status` shows which one spends, `synthfleet pause` stops it."
  namespace           = "Synthfleet"
  metric_name         = "SpendMicroUsd"
  dimensions          = { Deployment = var.name_prefix }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.spend_alarm_usd_per_hour * 1000000
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alert_topic_arn]
  ok_actions          = [var.alert_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "llm_error_rate" {
  alarm_name          = "${var.name_prefix}-llm-error-rate"
  alarm_description   = "More than ${format("%.0f", var.llm_error_rate_alarm * 100)} % of LLM calls failed in 2 of the last 3 five-minute periods (llm_error_rate_alarm; periods with fewer than ${local.llm_error_min_requests} calls do not count). The dashboard shows the classes; the worker log group names the endpoint."
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.llm_error_rate_alarm
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alert_topic_arn]
  ok_actions          = [var.alert_topic_arn]

  metric_query {
    id          = "rate"
    expression  = "IF(requests >= ${local.llm_error_min_requests}, FILL(errors, 0) / requests, 0)"
    label       = "failed LLM calls / LLM calls"
    return_data = true
  }
  metric_query {
    id = "errors"
    metric {
      namespace   = "Synthfleet"
      metric_name = "LlmErrors"
      dimensions  = { Deployment = var.name_prefix }
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "Synthfleet"
      metric_name = "LlmRequests"
      dimensions  = { Deployment = var.name_prefix }
      stat        = "Sum"
      period      = 300
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "no_workers" {
  alarm_name          = "${var.name_prefix}-no-workers-while-work-waits"
  alarm_description   = "Tasks have waited in the queue for ${local.no_heartbeat_periods * 5} minutes with no worker heartbeat: the fleet does not start or its workers die at boot (the scaler's and the workers' log groups say why). Also fires while a paused or exhausted campaign's messages wait with the fleet at zero: `synthfleet resume` them or let them expire."
  evaluation_periods  = local.no_heartbeat_periods
  datapoints_to_alarm = local.no_heartbeat_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # No queue data (an idle queue) is no waiting work.
  treat_missing_data = "notBreaching"
  alarm_actions      = [var.alert_topic_arn]
  ok_actions         = [var.alert_topic_arn]

  metric_query {
    id          = "stranded"
    expression  = "IF(waiting > 0 AND FILL(beats, 0) == 0, 1, 0)"
    label       = "work waiting, no worker alive"
    return_data = true
  }
  metric_query {
    id = "waiting"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 300
    }
  }
  metric_query {
    id = "beats"
    metric {
      namespace   = "Synthfleet"
      metric_name = "WorkerHeartbeat"
      dimensions  = { Deployment = var.name_prefix }
      stat        = "SampleCount"
      period      = 300
    }
  }
}
