output "asg_name" {
  value = aws_autoscaling_group.workers.name
}

output "asg_arn" {
  value = aws_autoscaling_group.workers.arn
}

output "ecs_cluster_name" {
  value = var.kind == "ecs" ? aws_ecs_cluster.workers[0].name : null
}

output "ecs_service_name" {
  value = var.kind == "ecs" ? aws_ecs_service.workers[0].name : null
}

output "ecs_service_arn" {
  value = var.kind == "ecs" ? aws_ecs_service.workers[0].id : null
}

output "log_group" {
  value = aws_cloudwatch_log_group.worker.name
}

output "commits_topic_arn" {
  value = aws_sns_topic.commits.arn
}
