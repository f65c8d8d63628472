output "function_names" {
  value = { for k, f in aws_lambda_function.this : k => f.function_name }
}

output "log_groups" {
  value = { for k, g in aws_cloudwatch_log_group.function : k => g.name }
}

output "alert_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "failed_invocations_queue_url" {
  value = aws_sqs_queue.failed_invocations.url
}
