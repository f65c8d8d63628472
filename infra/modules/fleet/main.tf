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
  })
  asg_env = merge(local.worker_env, { SYNTHFLEET_ASG_NAME = local.group_name })
  ecs_env = merge(local.worker_env, { SYNTHFLEET_ECS_TASK_PROTECTION = "true" })
  ami_parameter = {
    asg = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    ecs = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
  }
  # Task images are loaded before the host serves the queue (rollouts never pull), under
  # the names the task rows use. (Lines are joined here, not with template directives
  # inside the heredocs below, whose indentation those would break.)
  pull_images = join("\n", concat(
    [
      "dnf install -y -q awscli-2 >/dev/null 2>&1 || true",
      "aws ecr get-login-password --region ${var.region} | docker login --username AWS --password-stdin ${local.registry}",
    ],
    [for name, copy in var.task_images : "docker pull '${copy}' && docker tag '${copy}' '${name}'"],
  ))
  worker_env_file = join("", [for k, v in local.asg_env : "${k}=${v}\n"])
  fetch_secrets = join("", [
    for name, arn in var.model_secrets :
    "echo \"${name}=$(aws secretsmanager get-secret-value --region ${var.region} --secret-id '${arn}' --query SecretString --output text)\" >> \"$out.tmp\"\n"
  ])
  user_data = {
    asg = <<-EOT
      #!/bin/bash
      set -euo pipefail
      dnf install -y -q docker amazon-cloudwatch-agent
      systemctl enable --now docker
      useradd --system --no-create-home --groups docker synthfleet || true
      ${local.pull_images}
      aws s3 cp "s3://${var.bucket_name}/${var.binary_key}" /usr/local/bin/synthfleet
      chmod 755 /usr/local/bin/synthfleet
      install -d -m 755 /etc/synthfleet /usr/local/libexec/synthfleet
      install -d -o synthfleet -m 750 /var/log/synthfleet
      cat > /etc/synthfleet/worker.env <<'ENV'
      ${local.worker_env_file}ENV
      # At each start: the instance id (for scale-in protection) and the model keys, into
      # a root-only file under /run (tmpfs): never on disk, never in the launch template.
      cat > /usr/local/libexec/synthfleet/secrets <<'SCRIPT'
      #!/bin/bash
      set -euo pipefail
      umask 077
      out=/run/synthfleet/secrets.env
      mkdir -p /run/synthfleet
      token="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)"
      echo "SYNTHFLEET_INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)" > "$out.tmp"
      ${local.fetch_secrets}mv "$out.tmp" "$out"
      SCRIPT
      chmod 700 /usr/local/libexec/synthfleet/secrets
      cat > /etc/systemd/system/synthfleet-worker.service <<'UNIT'
      [Unit]
      Description=synthfleet worker
      After=docker.service network-online.target
      Requires=docker.service
      [Service]
      User=synthfleet
      EnvironmentFile=/etc/synthfleet/worker.env
      # Written by ExecStartPre: optional when systemd loads the environment for it.
      EnvironmentFile=-/run/synthfleet/secrets.env
      ExecStartPre=+/usr/local/libexec/synthfleet/secrets
      ExecStart=/usr/local/bin/synthfleet worker --log-format json
      # SIGTERM: stop receiving, let rollouts finish for SYNTHFLEET_GRACE_S (90), hand the
      # rest back without costing an attempt.
      KillSignal=SIGTERM
      TimeoutStopSec=150
      Restart=always
      RestartSec=5
      StandardOutput=append:/var/log/synthfleet/worker.log
      StandardError=append:/var/log/synthfleet/worker.log
      [Install]
      WantedBy=multi-user.target
      UNIT
      cat > /opt/aws/amazon-cloudwatch-agent/etc/synthfleet.json <<'AGENT'
      {"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "/var/log/synthfleet/worker.log", "log_group_name": "${aws_cloudwatch_log_group.worker.name}", "log_stream_name": "{instance_id}"}]}}}}
      AGENT
      /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:/opt/aws/amazon-cloudwatch-agent/etc/synthfleet.json
      systemctl daemon-reload
      systemctl enable --now synthfleet-worker
    EOT
    ecs = <<-EOT
      #!/bin/bash
      set -euo pipefail
      cat >> /etc/ecs/ecs.config <<'CONFIG'
      ECS_CLUSTER=${local.group_name}
      ECS_ENABLE_TASK_IAM_ROLE=true
      ECS_CONTAINER_STOP_TIMEOUT=120s
      CONFIG
      ${local.pull_images}
    EOT
  }
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

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
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
