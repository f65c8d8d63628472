# The task queue and its dead-letter queue (docs/AWS.md: "SQS").

variable "name_prefix" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "visibility_timeout_s" {
  description = "Above the longest rollout a campaign allows: the workers extend what they run, this covers a message nobody extends."
  type        = number
}

variable "max_receives" {
  description = "Deliveries before SQS moves a message to the dead-letter queue: the backstop for workers that die before reading it (workers dead-letter at the same count, with a record)."
  type        = number
}

resource "aws_sqs_queue" "dead_letters" {
  name                      = "${var.name_prefix}-tasks-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = var.kms_key_arn
}

resource "aws_sqs_queue" "tasks" {
  name                       = "${var.name_prefix}-tasks"
  visibility_timeout_seconds = var.visibility_timeout_s
  receive_wait_time_seconds  = 20
  message_retention_seconds  = 1209600
  kms_master_key_id          = var.kms_key_arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letters.arn
    maxReceiveCount     = var.max_receives
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "dead_letters" {
  queue_url = aws_sqs_queue.dead_letters.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.tasks.arn]
  })
}

output "queue_url" {
  value = aws_sqs_queue.tasks.url
}

output "queue_name" {
  value = aws_sqs_queue.tasks.name
}

output "queue_arn" {
  value = aws_sqs_queue.tasks.arn
}

output "dlq_url" {
  value = aws_sqs_queue.dead_letters.url
}

output "dlq_name" {
  value = aws_sqs_queue.dead_letters.name
}

output "dlq_arn" {
  value = aws_sqs_queue.dead_letters.arn
}
