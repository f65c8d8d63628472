output "synthfleet_env" {
  description = "What the CLI needs to reach this deployment (`terraform output -json synthfleet_env`; docs/deploy.md turns it into exports)."
  value       = merge(local.deployment_env, { SYNTHFLEET_BACKEND = "aws", AWS_REGION = var.region })
}

output "repositories" {
  description = "ECR repositories: worker and jobs images, task images (docs/deploy.md, \"Images\")."
  value       = try(module.registry[0].repository_urls, {})
}

output "model_key_secrets" {
  description = "Secret ARN of each model API key variable; put the values with `aws secretsmanager put-secret-value`."
  value       = local.model_secrets
}

output "campaign_upload_prefix" {
  description = "Upload a campaign file (*.toml) under s3://<bucket>/<this prefix> to start a run."
  value       = var.campaign_upload_prefix
}

output "functions" {
  value = module.functions.function_names
}

output "log_groups" {
  description = "Where to watch: the functions, the workers, the quality jobs."
  value = merge(
    module.functions.log_groups,
    { for f in module.fleet : "worker" => f.log_group },
    { for j in module.jobs : "jobs" => j.log_group },
  )
}

output "alert_topic_arn" {
  description = "Budget alerts and the fleet's alarms."
  value       = module.functions.alert_topic_arn
}

output "commits_topic_arn" {
  description = "The workers announce each committed trajectory here (docs/streaming.md); subscribe a queue or a function."
  value       = try(module.fleet[0].commits_topic_arn, null)
}

output "dashboard_url" {
  description = "The fleet's CloudWatch dashboard (docs/deploy.md, \"Watching a fleet\")."
  value       = try(module.monitoring[0].dashboard_url, null)
}

output "alarms" {
  description = "The fleet's CloudWatch alarms; each notifies the alert topic."
  value       = try(module.monitoring[0].alarm_names, [])
}

output "failed_invocations_queue_url" {
  description = "Asynchronous invocations (uploads, schedules) that failed after their retries."
  value       = module.functions.failed_invocations_queue_url
}

output "worker_group" {
  description = "The workers' Auto Scaling group (both fleet kinds run on one)."
  value       = try(module.fleet[0].asg_name, null)
}
