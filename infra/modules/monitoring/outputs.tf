output "dashboard_url" {
  value = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards/dashboard/${aws_cloudwatch_dashboard.fleet.dashboard_name}"
}

output "alarm_names" {
  value = concat(
    [
      aws_cloudwatch_metric_alarm.dead_letters.alarm_name,
      aws_cloudwatch_metric_alarm.llm_error_rate.alarm_name,
      aws_cloudwatch_metric_alarm.no_workers.alarm_name,
    ],
    aws_cloudwatch_metric_alarm.spend_rate[*].alarm_name,
  )
}
