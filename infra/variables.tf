variable "name_prefix" {
  description = "Prefix of every resource name. The bucket is \"<prefix>-trajectories\": S3 bucket names are global, so pick one unique to your organisation (e.g. \"acme-synthfleet\")."
  type        = string
  default     = "synthfleet"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the deployment."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# ---- Control plane -------------------------------------------------------------------

variable "functions_dir" {
  description = "Directory holding <function>/bootstrap.zip, as functions/build.sh writes them."
  type        = string
  default     = "../target/lambda"
}

variable "lambda_architecture" {
  description = "Architecture the function zips were built for: x86_64, or arm64 (ARCH=arm64 functions/build.sh)."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture must be x86_64 or arm64."
  }
}

variable "campaign_upload_prefix" {
  description = "S3 prefix under which an uploaded campaign file (*.toml) starts a run through the enqueue function."
  type        = string
  default     = "incoming/"
}

variable "scheduled_campaigns" {
  description = "Recurring campaigns: name => { schedule (EventBridge Scheduler expression, e.g. \"cron(0 6 * * ? *)\"), campaign_key (the campaign file in the bucket), timezone }. Each firing is its own run, <campaign>-<yyyymmddHHMM>, with its own budget."
  type = map(object({
    schedule     = string
    campaign_key = string
    timezone     = optional(string, "UTC")
  }))
  default = {}
}

variable "alert_emails" {
  description = "E-mail addresses subscribed to the budget alerts (50/80/100 % of a campaign's cap). Each must confirm its subscription."
  type        = list(string)
  default     = []
}

variable "spend_alarm_usd_per_hour" {
  description = "Alarm (to the alert topic) when the whole fleet books more than this many US dollars in a one-hour period, across campaigns: your plan's rate with some headroom. null (the default): no spend-rate alarm; each campaign's budget still caps its spend."
  type        = number
  default     = null
  validation {
    condition     = coalesce(var.spend_alarm_usd_per_hour, 1) > 0
    error_message = "spend_alarm_usd_per_hour must be a positive number of US dollars per hour, or null for no spend-rate alarm."
  }
}

variable "llm_error_rate_alarm" {
  description = "Alarm (to the alert topic) when more than this fraction of LLM calls fails in 2 of 3 five-minute periods (periods with fewer than 20 calls do not count)."
  type        = number
  default     = 0.2
  validation {
    condition     = var.llm_error_rate_alarm > 0 && var.llm_error_rate_alarm < 1
    error_message = "llm_error_rate_alarm must be a fraction between 0 and 1 (0.2: alarm when over 20 % of calls fail)."
  }
}

variable "log_retention_days" {
  description = "Retention of every log group."
  type        = number
  default     = 365
}

# ---- Queue and attempts --------------------------------------------------------------

variable "max_rollout_s" {
  description = "The longest rollout any campaign allows (its rollout_timeout_s plus verification), seconds: the task queue's visibility timeout. Workers extend the visibility of what they run; this covers a message nobody extends."
  type        = number
  default     = 3600
  validation {
    condition     = var.max_rollout_s >= 60 && var.max_rollout_s <= 43200
    error_message = "max_rollout_s must lie within SQS's visibility limits: 60 to 43200 seconds."
  }
}

variable "max_attempts" {
  description = "Attempts failed on an infrastructure fault before a sample is dead-lettered (SYNTHFLEET_MAX_ATTEMPTS)."
  type        = number
  default     = 3
}

variable "max_receives" {
  description = "Deliveries of one message to workers that never finished it before it is dead-lettered: the workers' backstop (SYNTHFLEET_MAX_RECEIVES) and the queue's redrive maxReceiveCount."
  type        = number
  default     = 10
}

# ---- Worker fleet --------------------------------------------------------------------

variable "fleet" {
  description = "How workers run: \"asg\" (an Auto Scaling group of EC2 instances running `synthfleet worker` under systemd), \"ecs\" (an ECS service on EC2 capacity) or \"none\" (no fleet in AWS, e.g. on LocalStack: run `synthfleet worker` as local processes)."
  type        = string
  default     = "asg"
  validation {
    condition     = contains(["asg", "ecs", "none"], var.fleet)
    error_message = "fleet must be asg, ecs or none."
  }
}

variable "worker_instance_type" {
  description = "EC2 instance type of a worker host (each runs worker_concurrency sandboxes)."
  type        = string
  default     = "m7i.2xlarge"
}

variable "worker_spot" {
  description = <<-EOT
    Run worker hosts on Spot capacity: a mixed-instances Auto Scaling group (price-capacity-optimized
    Spot over several instance types of the same size, capacity rebalancing on) with
    on_demand_base hosts always on demand and on_demand_percent of the rest. Workers hand
    interrupted rollouts back without costing an attempt (docs/deploy.md, "Spot"). null: on demand only.
  EOT
  type = object({
    instance_types    = list(string)
    on_demand_base    = optional(number, 0)
    on_demand_percent = optional(number, 0)
  })
  default = null
  validation {
    condition = var.worker_spot == null || (
      length(try(var.worker_spot.instance_types, [])) >= 2 &&
      try(var.worker_spot.on_demand_base, 0) >= 0 &&
      try(var.worker_spot.on_demand_percent, 0) >= 0 &&
      try(var.worker_spot.on_demand_percent, 0) <= 100
    )
    error_message = "worker_spot needs at least two instance types (Spot pools to choose from), on_demand_base >= 0 and on_demand_percent in 0..100."
  }
}

variable "worker_max" {
  description = "The most workers the scaler starts."
  type        = number
  default     = 10
}

variable "worker_min" {
  description = "The fewest workers kept running; 0 lets an idle fleet cost nothing but storage."
  type        = number
  default     = 0
}

variable "worker_concurrency" {
  description = "Rollouts one worker runs at once (SYNTHFLEET_CONCURRENCY), and the scaler's tasks per worker."
  type        = number
  default     = 4
}

variable "worker_idle_s" {
  description = "Seconds every worker must have been idle, with an empty queue, before the scaler goes to worker_min."
  type        = number
  default     = 600
}

variable "worker_root_volume_gb" {
  description = "Encrypted root volume of a worker host: the task images (SWE-bench images are 1-10 GB each) and the sandboxes' writable layers."
  type        = number
  default     = 200
}

variable "worker_binary_key" {
  description = "fleet = asg: key in the bucket of the `synthfleet` binary (Linux, the instance's architecture) the hosts install at boot."
  type        = string
  default     = "artifacts/synthfleet"
}

variable "worker_image" {
  description = "fleet = ecs: image URI of the worker (infra/images), in the deployment's ECR repository."
  type        = string
  default     = ""
  validation {
    condition     = var.fleet != "ecs" || var.worker_image != ""
    error_message = "fleet = \"ecs\" needs worker_image: build and push it with infra/images/build.sh (docs/deploy.md)."
  }
}

variable "task_images" {
  description = "Task images every worker host loads at boot, before it serves the queue (rollouts never pull): the name the task rows use => the deployment's ECR copy of it. The host pulls the copy and tags it with the name."
  type        = map(string)
  default     = {}
}

variable "bedrock_model_arns" {
  description = "Bedrock models (foundation-model or inference-profile ARNs) the campaigns' `provider = \"bedrock\"` models may call; the workers' role gets bedrock:InvokeModel on them. Add the bedrock-runtime interface endpoint (or the NAT) for the workers to reach Bedrock."
  type        = list(string)
  default     = []
}

variable "model_key_variables" {
  description = "Environment variables the campaigns' models read their API keys from (api_key_env). Each gets a Secrets Manager secret <prefix>/<name>; put its value with `aws secretsmanager put-secret-value`. Workers read them at start."
  type        = list(string)
  default     = ["OPENAI_API_KEY"]
}

# ---- Network -------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the deployment's VPC (workers and the jobs task run in its private subnets)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones of the private subnets (one subnet each); empty: the region's first two."
  type        = list(string)
  default     = []
}

variable "nat_gateway" {
  description = "A NAT gateway for the workers' outbound HTTPS to model endpoints on the internet. Without it workers reach AWS only through VPC endpoints (enough for Bedrock or a model server inside the VPC)."
  type        = bool
  default     = true
}

variable "model_endpoint_ports" {
  description = "TCP ports workers may open to model endpoints (443 for hosted APIs; add e.g. 8000 for a vLLM server)."
  type        = list(number)
  default     = [443]
  validation {
    condition     = contains(var.model_endpoint_ports, 443)
    error_message = "model_endpoint_ports must keep 443: workers reach AWS (SQS, S3, DynamoDB, ECR, Secrets Manager) over HTTPS."
  }
}

# ---- Quality jobs --------------------------------------------------------------------

variable "enable_jobs" {
  description = "The quality jobs' Fargate task, which the finalize function launches for each finished campaign (report, dashboard, Hugging Face export). Off on LocalStack: run `synthfleet publish` yourself."
  type        = bool
  default     = true
}

variable "jobs_image" {
  description = "Image URI of synthfleet-jobs (infra/images), in the deployment's ECR repository."
  type        = string
  default     = ""
  validation {
    condition     = !var.enable_jobs || var.jobs_image != ""
    error_message = "enable_jobs needs jobs_image: build and push it with infra/images/build.sh (docs/deploy.md), or set enable_jobs = false."
  }
}
