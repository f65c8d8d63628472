# A fleet of plain EC2 workers that scales to zero, with one nightly campaign.
#   terraform apply -var-file=examples/aws.tfvars
name_prefix          = "acme-synthfleet"
region               = "us-east-1"
availability_zones   = ["us-east-1a", "us-east-1b"]
fleet                = "asg"
worker_instance_type = "m7i.2xlarge"
worker_max           = 8
# Spot hosts (docs/deploy.md, "Spot"): several instance types of one size.
worker_spot = {
  instance_types = ["m7i.2xlarge", "m6i.2xlarge", "m6a.2xlarge", "m7a.2xlarge"]
  on_demand_base = 1
}
worker_concurrency  = 4
max_rollout_s       = 3600
model_key_variables = ["OPENAI_API_KEY"]
jobs_image          = "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-synthfleet/jobs:0.1.0"
task_images = {
  "synthfleet/quickstart:1" = "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-synthfleet/tasks:quickstart-1"
}
scheduled_campaigns = {
  nightly = {
    schedule     = "cron(0 6 * * ? *)"
    campaign_key = "schedules/nightly/campaign.toml"
  }
}
alert_emails = ["ml-infra@example.com"]
