# kind = "ecs": the group above is the capacity of an ECS cluster (managed scaling and
# managed termination protection), and workers are the tasks of a service whose desired
# count the scaler sets. Each task drives the host's Docker engine for its sandboxes and
# protects itself from scale-in through the ECS agent while busy.

resource "aws_ecs_cluster" "workers" {
  count = var.kind == "ecs" ? 1 : 0
  name  = local.group_name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_capacity_provider" "workers" {
  count = var.kind == "ecs" ? 1 : 0
  name  = local.group_name
  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.workers.arn
    managed_termination_protection = "ENABLED"
    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = 4
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "workers" {
  count              = var.kind == "ecs" ? 1 : 0
  cluster_name       = aws_ecs_cluster.workers[0].name
  capacity_providers = [aws_ecs_capacity_provider.workers[0].name]
  default_capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.workers[0].name
    weight            = 1
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The worker's own permissions (the task role) ...
resource "aws_iam_role" "task" {
  count              = var.kind == "ecs" ? 1 : 0
  name               = "${var.name_prefix}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "task" {
  count  = var.kind == "ecs" ? 1 : 0
  name   = "worker"
  role   = aws_iam_role.task[0].id
  policy = data.aws_iam_policy_document.worker.json
}

# ... and what ECS needs to start it: its image, its logs, the model keys it injects as
# environment variables.
module "execution_role" {
  source          = "../execution_role"
  count           = var.kind == "ecs" ? 1 : 0
  name            = "${var.name_prefix}-worker-execution"
  repository_arns = var.repository_arns
  log_group_arn   = aws_cloudwatch_log_group.worker.arn
  kms_key_arn     = var.kms_key_arn
  secret_arns     = values(var.model_secrets)
}

resource "aws_ecs_task_definition" "worker" {
  count                    = var.kind == "ecs" ? 1 : 0
  family                   = "${var.name_prefix}-worker"
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge"
  task_role_arn            = aws_iam_role.task[0].arn
  execution_role_arn       = module.execution_role[0].arn

  volume {
    name      = "docker"
    host_path = "/var/run/docker.sock"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "worker"
    image                  = var.worker_image
    essential              = true
    command                = ["worker", "--log-format", "json"]
    memoryReservation      = 512
    readonlyRootFilesystem = true
    stopTimeout            = 120
    user                   = "0"
    environment            = [for k, v in local.ecs_env : { name = k, value = v }]
    secrets                = [for k, arn in var.model_secrets : { name = k, valueFrom = arn }]
    mountPoints = [
      { sourceVolume = "docker", containerPath = "/var/run/docker.sock", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])
}

resource "aws_ecs_service" "workers" {
  count                              = var.kind == "ecs" ? 1 : 0
  name                               = "workers"
  cluster                            = aws_ecs_cluster.workers[0].id
  task_definition                    = aws_ecs_task_definition.worker[0].arn
  desired_count                      = var.min_size
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  # Spread over hosts: one worker drives one host's Docker engine.
  placement_constraints {
    type = "distinctInstance"
  }
  capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.workers[0].name
    weight            = 1
  }
  lifecycle {
    # The scaler function owns the desired count.
    ignore_changes = [desired_count]
  }
  depends_on = [aws_ecs_cluster_capacity_providers.workers]
}
