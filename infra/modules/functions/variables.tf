variable "name_prefix" {
  type = string
}

variable "functions_dir" {
  description = "Directory holding <function>/bootstrap.zip (functions/build.sh)."
  type        = string
}

variable "architecture" {
  type = string
}

variable "deployment_env" {
  description = "SYNTHFLEET_BUCKET, _TABLE, _QUEUE_URL, _DLQ_URL."
  type        = map(string)
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

variable "queue_arn" {
  type = string
}

variable "dlq_arn" {
  type = string
}

variable "upload_prefix" {
  type = string
}

variable "scheduled_campaigns" {
  type = map(object({
    schedule     = string
    campaign_key = string
    timezone     = string
  }))
}

variable "alert_emails" {
  type = list(string)
}

variable "log_retention_days" {
  type = number
}

variable "scaler" {
  description = "The fleet the scaler sizes (null: no fleet, no scaler)."
  type = object({
    asg_name         = string
    asg_arn          = string
    ecs_cluster_name = string
    ecs_service_name = string
    ecs_service_arn  = string
    min              = number
    max              = number
    tasks_per_worker = number
    idle_s           = number
  })
  default = null
}

variable "jobs" {
  description = "The quality jobs' task finalize starts (null: none; run `synthfleet publish`)."
  type = object({
    cluster_name        = string
    cluster_arn         = string
    task_definition_arn = string
    container           = string
    subnet_ids          = list(string)
    security_group_id   = string
    role_arns           = list(string)
  })
  default = null
}
