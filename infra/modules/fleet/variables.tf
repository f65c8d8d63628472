variable "kind" {
  description = "\"asg\": EC2 instances running `synthfleet worker` under systemd; \"ecs\": an ECS service on EC2 capacity."
  type        = string
}

variable "name_prefix" {
  type = string
}

variable "region" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "model_endpoint_ports" {
  type = list(number)
}

variable "instance_type" {
  type = string
}

variable "spot" {
  description = "Spot capacity (see the root module's worker_spot); null: on demand only."
  type = object({
    instance_types    = list(string)
    on_demand_base    = optional(number, 0)
    on_demand_percent = optional(number, 0)
  })
  default = null
}

variable "min_size" {
  type = number
}

variable "max_size" {
  type = number
}

variable "root_volume_gb" {
  type = number
}

variable "concurrency" {
  type = number
}

variable "max_attempts" {
  type = number
}

variable "max_receives" {
  type = number
}

variable "deployment_env" {
  description = "SYNTHFLEET_BUCKET, _TABLE, _QUEUE_URL, _DLQ_URL."
  type        = map(string)
}

variable "bedrock_model_arns" {
  description = "Bedrock models (foundation-model or inference-profile ARNs) campaigns may call."
  type        = list(string)
}

variable "model_secrets" {
  description = "Environment variable => Secrets Manager secret ARN of each model API key."
  type        = map(string)
}

variable "kms_key_arn" {
  type = string
}

variable "bucket_arn" {
  type = string
}

variable "bucket_name" {
  type = string
}

variable "table_arn" {
  type = string
}

variable "queue_arns" {
  description = "The task queue and its dead-letter queue."
  type        = list(string)
}

variable "repository_arns" {
  description = "ECR repositories the hosts pull from (worker, task images)."
  type        = list(string)
}

variable "binary_key" {
  type = string
}

variable "worker_image" {
  type = string
}

variable "task_images" {
  description = "The name task rows use => its ECR copy."
  type        = map(string)
}

variable "log_retention_days" {
  type = number
}
