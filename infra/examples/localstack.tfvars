# LocalStack's free edition: storage, queues, functions, schedules and alerts; no ECS, no
# Auto Scaling, so no fleet and no jobs task. Workers run as local processes
# (`synthfleet worker` with `source localstack/env.sh`), reports with `synthfleet publish`.
#   cd infra && tflocal init && tflocal apply -var-file=examples/localstack.tfvars
name_prefix         = "synthfleet"
region              = "us-east-1"
fleet               = "none"
enable_jobs         = false
model_key_variables = []
