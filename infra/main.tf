# synthfleet's deployment: storage, queues, the control-plane functions, a worker fleet
# that scales to zero, the quality jobs' task, and the network they share.
#
# Every name and shape the binaries rely on is defined here once; the LocalStack init hook
# (localstack/init/ready.d) and `synthfleet_aws::provision` must match it, and
# `tests/infra.rs` checks that they do.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first two zones by name are used when availability_zones is empty; a zone AWS adds later sorts after them.
  state = "available"
}

locals {
  # What every synthfleet process is given to find the deployment (see docs/AWS.md).
  deployment_env = {
    SYNTHFLEET_BUCKET    = module.storage.bucket_name
    SYNTHFLEET_TABLE     = module.storage.table_name
    SYNTHFLEET_QUEUE_URL = module.queues.queue_url
    SYNTHFLEET_DLQ_URL   = module.queues.dlq_url
  }
  # The fleet and the jobs task run in the VPC from images in the registry; LocalStack's
  # free edition (fleet = "none", enable_jobs = false) has neither ECS nor Auto Scaling.
  needs_network = var.fleet != "none" || var.enable_jobs
  zones         = length(var.availability_zones) > 0 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 2)
  model_secrets = { for name in var.model_key_variables : name => aws_secretsmanager_secret.model_key[name].arn }
}

module "storage" {
  source      = "./modules/storage"
  name_prefix = var.name_prefix
  kms_key_arn = aws_kms_key.synthfleet.arn
  failed_tag  = { key = "synthfleet-status", value = "failed" }
  failed_days = 30
}

module "queues" {
  source               = "./modules/queues"
  name_prefix          = var.name_prefix
  kms_key_arn          = aws_kms_key.synthfleet.arn
  visibility_timeout_s = var.max_rollout_s
  max_receives         = var.max_receives
}

module "network" {
  source             = "./modules/network"
  count              = local.needs_network ? 1 : 0
  name_prefix        = var.name_prefix
  region             = var.region
  vpc_cidr           = var.vpc_cidr
  availability_zones = local.zones
  nat_gateway        = var.nat_gateway
  ecs_endpoints      = var.fleet == "ecs" || var.enable_jobs
  bedrock_endpoint   = length(var.bedrock_model_arns) > 0
  kms_key_arn        = aws_kms_key.synthfleet.arn
  log_retention_days = var.log_retention_days
}

module "registry" {
  source      = "./modules/registry"
  count       = local.needs_network ? 1 : 0
  name_prefix = var.name_prefix
  kms_key_arn = aws_kms_key.synthfleet.arn
}

module "fleet" {
  source               = "./modules/fleet"
  count                = var.fleet == "none" ? 0 : 1
  kind                 = var.fleet
  name_prefix          = var.name_prefix
  region               = var.region
  vpc_id               = module.network[0].vpc_id
  subnet_ids           = module.network[0].private_subnet_ids
  model_endpoint_ports = var.model_endpoint_ports
  instance_type        = var.worker_instance_type
  spot                 = var.worker_spot
  min_size             = var.worker_min
  max_size             = var.worker_max
  root_volume_gb       = var.worker_root_volume_gb
  concurrency          = var.worker_concurrency
  max_attempts         = var.max_attempts
  max_receives         = var.max_receives
  deployment_env       = local.deployment_env
  model_secrets        = local.model_secrets
  bedrock_model_arns   = var.bedrock_model_arns
  kms_key_arn          = aws_kms_key.synthfleet.arn
  bucket_arn           = module.storage.bucket_arn
  bucket_name          = module.storage.bucket_name
  table_arn            = module.storage.table_arn
  queue_arns           = [module.queues.queue_arn, module.queues.dlq_arn]
  repository_arns      = values(module.registry[0].repository_arns)
  binary_key           = var.worker_binary_key
  worker_image         = var.worker_image
  task_images          = var.task_images
  log_retention_days   = var.log_retention_days
}

module "jobs" {
  source             = "./modules/jobs"
  count              = var.enable_jobs ? 1 : 0
  name_prefix        = var.name_prefix
  region             = var.region
  vpc_id             = module.network[0].vpc_id
  image              = var.jobs_image
  deployment_env     = merge(local.deployment_env, { SYNTHFLEET_BACKEND = "aws" })
  kms_key_arn        = aws_kms_key.synthfleet.arn
  bucket_arn         = module.storage.bucket_arn
  table_arn          = module.storage.table_arn
  repository_arns    = [module.registry[0].repository_arns["jobs"]]
  log_retention_days = var.log_retention_days
}

module "functions" {
  source              = "./modules/functions"
  name_prefix         = var.name_prefix
  functions_dir       = var.functions_dir
  architecture        = var.lambda_architecture
  deployment_env      = local.deployment_env
  kms_key_arn         = aws_kms_key.synthfleet.arn
  bucket_arn          = module.storage.bucket_arn
  table_arn           = module.storage.table_arn
  queue_arn           = module.queues.queue_arn
  dlq_arn             = module.queues.dlq_arn
  upload_prefix       = var.campaign_upload_prefix
  scheduled_campaigns = var.scheduled_campaigns
  alert_emails        = var.alert_emails
  log_retention_days  = var.log_retention_days
  scaler = var.fleet == "none" ? null : {
    asg_name         = module.fleet[0].asg_name
    asg_arn          = module.fleet[0].asg_arn
    ecs_cluster_name = module.fleet[0].ecs_cluster_name
    ecs_service_name = module.fleet[0].ecs_service_name
    ecs_service_arn  = module.fleet[0].ecs_service_arn
    min              = var.worker_min
    max              = var.worker_max
    tasks_per_worker = var.worker_concurrency
    idle_s           = var.worker_idle_s
  }
  jobs = var.enable_jobs ? {
    cluster_name        = module.jobs[0].cluster_name
    cluster_arn         = module.jobs[0].cluster_arn
    task_definition_arn = module.jobs[0].task_definition_arn
    container           = module.jobs[0].container_name
    subnet_ids          = module.network[0].private_subnet_ids
    security_group_id   = module.jobs[0].security_group_id
    role_arns           = module.jobs[0].role_arns
  } : null
}

# The dashboard and alarms of a fleet in AWS (its workers' logs carry the metrics); the
# alarms notify the budget alerts' topic.
module "monitoring" {
  source                   = "./modules/monitoring"
  count                    = var.fleet == "none" ? 0 : 1
  name_prefix              = var.name_prefix
  region                   = var.region
  alert_topic_arn          = module.functions.alert_topic_arn
  queue_name               = module.queues.queue_name
  dlq_name                 = module.queues.dlq_name
  spend_alarm_usd_per_hour = var.spend_alarm_usd_per_hour
  llm_error_rate_alarm     = var.llm_error_rate_alarm
}

# Model API keys: one secret each, with no value in Terraform (and so none in its state).
resource "aws_secretsmanager_secret" "model_key" {
  #checkov:skip=CKV2_AWS_57:A provider API key is rotated at the provider; there is no rotation Lambda for it.
  for_each                = toset(var.model_key_variables)
  name                    = "${var.name_prefix}/${each.value}"
  description             = "API key read by synthfleet workers into ${each.value}."
  kms_key_id              = aws_kms_key.synthfleet.arn
  recovery_window_in_days = 7
}
