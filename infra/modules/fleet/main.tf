# The worker fleet: an Auto Scaling group (min 0) whose hosts run `synthfleet worker`,
# either under systemd (kind = "asg") or as the tasks of an ECS service (kind = "ecs").
# The scaler function sets the group's (or the service's) desired count; a busy worker
# protects itself from scale-in.

locals {
  group_name = "${var.name_prefix}-workers"
  registry   = "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com"
  # The worker's settings; the model keys come from Secrets Manager, never from here.
  worker_env = merge(var.deployment_env, {
    SYNTHFLEET_BACKEND      = "aws"
    SYNTHFLEET_CONCURRENCY  = tostring(var.concurrency)
    SYNTHFLEET_MAX_ATTEMPTS = tostring(var.max_attempts)
    SYNTHFLEET_MAX_RECEIVES = tostring(var.max_receives)
    # The metrics' Deployment dimension, as the dashboard and alarms query it.
    SYNTHFLEET_DEPLOYMENT = var.name_prefix
    # Each trajectory committed is announced on the commit topic (docs/streaming.md).
    SYNTHFLEET_COMMITS_TOPIC = aws_sns_topic.commits.arn
  })
  # On EC2 the worker watches the instance metadata for a Spot interruption, a rebalance
  # recommendation or its group's scale-in, and hands its rollouts back in time. (On ECS
  # the agent drains the host and the task gets SIGTERM.)
  asg_env = merge(local.worker_env, {
    SYNTHFLEET_ASG_NAME = local.group_name
    SYNTHFLEET_IMDS_URL = "http://169.254.169.254"
  })
  ecs_env = merge(local.worker_env, { SYNTHFLEET_ECS_TASK_PROTECTION = "true" })
  ami_parameter = {
    asg = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    ecs = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
  }
  # The hosts' boot scripts (templates/, rendered and checked by infra/check.sh).
  boot_vars = {
    region        = var.region
    registry      = local.registry
    task_images   = var.task_images
    bucket_name   = var.bucket_name
    binary_key    = var.binary_key
    worker_env    = local.asg_env
    model_secrets = var.model_secrets
    log_group     = aws_cloudwatch_log_group.worker.name
    cluster       = local.group_name
  }
  user_data = {
    asg = templatefile("${path.module}/templates/asg-boot.sh.tftpl", local.boot_vars)
    ecs = templatefile("${path.module}/templates/ecs-boot.sh.tftpl", local.boot_vars)
  }
}

# Commit events: one message per trajectory the workers commit, for trainers and other
# subscribers (an SQS queue, a Lambda; filter policies on `campaign`, `status`, `resolved`,
# `variant`). Best effort: `synthfleet tail` is the reliable stream (docs/streaming.md).
resource "aws_sns_topic" "commits" {
  name              = "${var.name_prefix}-commits"
  kms_master_key_id = var.kms_key_arn
}

data "aws_ssm_parameter" "ami" {
  name = local.ami_parameter[var.kind]
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/synthfleet/${var.name_prefix}/worker"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_security_group" "worker" {
  name        = "${var.name_prefix}-worker"
  description = "synthfleet workers: nothing inbound; HTTPS to AWS endpoints and model endpoints"
  vpc_id      = var.vpc_id
  dynamic "egress" {
    for_each = toset(var.model_endpoint_ports)
    content {
      #checkov:skip=CKV_AWS_382:Model endpoints (OpenAI, Anthropic, ...) have no fixed addresses; egress is limited to their ports.
      description = "model endpoints and AWS APIs on port ${egress.value}"
      from_port   = egress.value
      to_port     = egress.value
      protocol    = "tcp"
      cidr_blocks = ["0.0.0.0/0"]
    }
  }
}

resource "aws_launch_template" "worker" {
  name_prefix   = "${local.group_name}-"
  image_id      = data.aws_ssm_parameter.ami.value
  instance_type = var.instance_type
  ebs_optimized = true
  user_data     = base64encode(local.user_data[var.kind])

  iam_instance_profile {
    arn = aws_iam_instance_profile.host.arn
  }

  # IMDSv2 only, and one hop: a sandbox (a container on the host) cannot reach the
  # instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.worker.id]
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = var.root_volume_gb
      volume_type = "gp3"
      # The account's EBS key (aws/ebs): Auto Scaling's service-linked role may use it
      # without a grant in the deployment key's policy.
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = local.group_name }
  }
}

resource "aws_autoscaling_group" "workers" {
  #checkov:skip=CKV2_AWS_15:Workers serve a queue, not a load balancer; EC2 health checks apply.
  name                = local.group_name
  min_size            = var.min_size
  max_size            = var.max_size
  desired_capacity    = var.min_size
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"
  # ECS managed termination protection needs new instances protected (ECS lifts it from
  # idle ones); on plain EC2 each worker protects its own instance while busy.
  protect_from_scale_in = var.kind == "ecs"

  # On Spot, a replacement is started on a rebalance recommendation, before the two-minute
  # interruption notice; the worker hands its rollouts back when told to stop.
  capacity_rebalance = var.spot != null

  dynamic "launch_template" {
    for_each = var.spot == null ? [1] : []
    content {
      id      = aws_launch_template.worker.id
      version = aws_launch_template.worker.latest_version
    }
  }

  dynamic "mixed_instances_policy" {
    for_each = var.spot == null ? [] : [var.spot]
    content {
      instances_distribution {
        on_demand_base_capacity                  = mixed_instances_policy.value.on_demand_base
        on_demand_percentage_above_base_capacity = mixed_instances_policy.value.on_demand_percent
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.worker.id
          version            = aws_launch_template.worker.latest_version
        }
        dynamic "override" {
          for_each = mixed_instances_policy.value.instance_types
          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  tag {
    key                 = "Name"
    value               = local.group_name
    propagate_at_launch = true
  }
  tag {
    key                 = "AmazonECSManaged"
    value               = var.kind == "ecs" ? "true" : "false"
    propagate_at_launch = true
  }

  lifecycle {
    # The scaler function (or ECS managed scaling) owns the desired count.
    ignore_changes = [desired_capacity]
  }
}
