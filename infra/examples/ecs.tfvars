# Workers as an ECS service on EC2 capacity (managed scaling and termination protection).
#   terraform apply -var-file=examples/ecs.tfvars
name_prefix          = "acme-synthfleet"
region               = "us-east-1"
fleet                = "ecs"
worker_instance_type = "m7i.2xlarge"
worker_max           = 8
worker_image         = "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-synthfleet/worker:0.1.0"
jobs_image           = "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-synthfleet/jobs:0.1.0"
model_key_variables  = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
