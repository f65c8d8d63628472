variable "name_prefix" {
  description = "The deployment's name prefix: the value of the metrics' Deployment dimension."
  type        = string
}

variable "region" {
  type = string
}

variable "alert_topic_arn" {
  description = "The SNS topic every alarm notifies (the budget alerts' topic)."
  type        = string
}

variable "queue_name" {
  description = "The task queue."
  type        = string
}

variable "dlq_name" {
  description = "The task queue's dead-letter queue."
  type        = string
}

variable "spend_alarm_usd_per_hour" {
  description = "Alarm when the fleet books more than this many US dollars in an hour; null: no such alarm."
  type        = number
  default     = null
}

variable "llm_error_rate_alarm" {
  description = "Alarm when this fraction of LLM calls fails (over 5 minutes, in 2 of 3 periods)."
  type        = number
  default     = 0.2
}
