terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = merge({ "synthfleet:deployment" = var.name_prefix }, var.tags)
  }
}
