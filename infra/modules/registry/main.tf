# Private ECR repositories: the worker and jobs images, and the task images rollouts run
# (pushed once, tagged by instance; never pulled from a public registry at rollout time).

variable "name_prefix" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

resource "aws_ecr_repository" "this" {
  for_each             = toset(["worker", "jobs", "tasks"])
  name                 = "${var.name_prefix}/${each.value}"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

# Untagged layers (left by re-pushed tags in other repositories' workflows) go after a week.
resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "expire untagged images"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = 7
      }
      action = { type = "expire" }
    }]
  })
}

output "repository_urls" {
  value = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  value = { for k, r in aws_ecr_repository.this : k => r.arn }
}
