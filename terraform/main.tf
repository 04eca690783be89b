# Storage and serving for the published root, and the IAM identities of the
# Ray nodes. The bucket stays private: readers go through CloudFront, which
# reaches it with origin access control and serves only the published prefix.

locals {
  published_arn = "${aws_s3_bucket.root.arn}/${var.published_prefix}/*"
  # Objects a reader may fetch through CloudFront: the store, the manifests,
  # the optional geotessera export and viewer. Build state is not among them.
  public_paths = [
    "${aws_s3_bucket.root.arn}/${var.published_prefix}/tessera.zarr/*",
    "${aws_s3_bucket.root.arn}/${var.published_prefix}/manifests/*",
    "${aws_s3_bucket.root.arn}/${var.published_prefix}/geotessera/*",
    "${aws_s3_bucket.root.arn}/${var.published_prefix}/index.html",
  ]
}

data "aws_caller_identity" "current" {}

# --------------------------------------------------------------------- bucket

resource "aws_s3_bucket" "root" {
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the cost of a ~250 TB/year archive; the embeddings are reproducible from the public inputs.
  #checkov:skip=CKV_AWS_145:SSE-KMS would add a KMS request to every range read of public data; SSE-S3 is used.
  #checkov:skip=CKV2_AWS_62:No consumer of bucket events; publication is driven by the job's manifest.
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "root" {
  bucket = aws_s3_bucket.root.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "root" {
  bucket                  = aws_s3_bucket.root.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "root" {
  bucket = aws_s3_bucket.root.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "root" {
  bucket = aws_s3_bucket.root.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_logging" "root" {
  bucket        = aws_s3_bucket.root.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/"
}

resource "aws_s3_bucket_lifecycle_configuration" "root" {
  bucket = aws_s3_bucket.root.id

  dynamic "rule" {
    for_each = var.build_state_prefixes
    content {
      id     = "expire-build-state-${trimsuffix(rule.value, "/")}"
      status = "Enabled"
      filter {
        prefix = "${var.published_prefix}/${rule.value}"
      }
      expiration {
        days = var.build_state_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 1
      }
    }
  }

  rule {
    id     = "old-versions-and-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_cors_configuration" "root" {
  bucket = aws_s3_bucket.root.id
  cors_rule {
    allowed_methods = ["GET", "HEAD"]
    allowed_origins = var.cors_allowed_origins
    allowed_headers = ["Range", "If-None-Match", "If-Modified-Since"]
    expose_headers  = ["ETag", "Content-Range", "Accept-Ranges", "Content-Length"]
    max_age_seconds = 3600
  }
}

data "aws_iam_policy_document" "root_bucket" {
  statement {
    sid       = "CloudFrontReadsPublishedPaths"
    actions   = ["s3:GetObject"]
    resources = local.public_paths
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.root.arn]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.root.arn,
      "${aws_s3_bucket.root.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "root" {
  bucket = aws_s3_bucket.root.id
  policy = data.aws_iam_policy_document.root_bucket.json
}

# --------------------------------------------------------------------- access logs

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are not replicated.
  #checkov:skip=CKV_AWS_145:Log delivery to SSE-KMS buckets needs extra key grants; SSE-S3 is used.
  #checkov:skip=CKV2_AWS_62:No consumer of log bucket events.
  bucket = "${var.bucket_name}-logs"
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  #checkov:skip=CKV2_AWS_65:CloudFront standard logging delivers log files with ACLs, so this bucket must keep them enabled.
  bucket = aws_s3_bucket.logs.id
  rule {
    # CloudFront standard logging writes with ACLs.
    object_ownership = "BucketOwnerPreferred"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 90
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# --------------------------------------------------------------------- CloudFront

resource "aws_cloudfront_origin_access_control" "root" {
  name                              = "${var.bucket_name}-oac"
  description                       = "CloudFront reads the published root of ${var.bucket_name}"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_response_headers_policy" "cors" {
  name = "${var.cluster_name}-range-cors"
  cors_config {
    access_control_allow_credentials = false
    access_control_allow_headers {
      items = ["Range", "If-None-Match", "If-Modified-Since"]
    }
    access_control_allow_methods {
      items = ["GET", "HEAD", "OPTIONS"]
    }
    access_control_allow_origins {
      items = var.cors_allowed_origins
    }
    access_control_expose_headers {
      items = ["ETag", "Content-Range", "Accept-Ranges", "Content-Length"]
    }
    access_control_max_age_sec = 3600
    origin_override            = true
  }
  security_headers_config {
    content_type_options {
      override = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
  }
}

data "aws_cloudfront_cache_policy" "optimized" {
  name = "Managed-CachingOptimized"
}

data "aws_cloudfront_origin_request_policy" "cors_s3" {
  name = "Managed-CORS-S3Origin"
}

resource "aws_cloudfront_distribution" "root" {
  #checkov:skip=CKV_AWS_68:Public, read-only, static data; no application for a WAF to protect. Cost is bounded by CloudFront pricing.
  #checkov:skip=CKV_AWS_174:Uses the default *.cloudfront.net certificate; set a custom certificate with TLSv1.2_2021 when adding an alias.
  #checkov:skip=CKV_AWS_310:One origin; the bucket is the only copy, so there is nothing to fail over to.
  #checkov:skip=CKV_AWS_374:Embeddings are published for the whole world; no geo restriction by design.
  #checkov:skip=CKV2_AWS_47:No WAF (see CKV_AWS_68), so no Log4j rule set to attach.
  #checkov:skip=CKV2_AWS_42:Default certificate (see CKV_AWS_174).
  enabled         = true
  is_ipv6_enabled = true
  comment         = "tessera-ray published root"
  price_class     = "PriceClass_All"
  # A browser viewer can be published at the root; readers of the store ask for explicit keys.
  default_root_object = "index.html"

  origin {
    domain_name              = aws_s3_bucket.root.bucket_regional_domain_name
    origin_id                = "published-root"
    origin_path              = "/${var.published_prefix}"
    origin_access_control_id = aws_cloudfront_origin_access_control.root.id
  }

  default_cache_behavior {
    target_origin_id           = "published-root"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "redirect-to-https"
    compress                   = false # Zarr chunks are already compressed; keep byte ranges exact
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.cors_s3.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.cors.id
  }

  logging_config {
    bucket          = aws_s3_bucket.logs.bucket_domain_name
    prefix          = "cloudfront/"
    include_cookies = false
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
    minimum_protocol_version       = "TLSv1.2_2021"
  }

  tags = var.tags
}

# --------------------------------------------------------------------- IAM for Ray nodes

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Workers read COGs over public HTTPS and write the root: bucket access only.
data "aws_iam_policy_document" "bucket_rw" {
  statement {
    sid       = "ListThePublishedRoot"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.root.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.published_prefix}/*", var.published_prefix]
    }
  }
  statement {
    sid = "ReadWriteThePublishedRoot"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.published_arn]
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.cluster_name}-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "worker_bucket" {
  name   = "bucket-rw"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.bucket_rw.json
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.cluster_name}-worker"
  role = aws_iam_role.worker.name
}

# The head also runs Ray's autoscaler: it starts and stops this cluster's
# instances and hands them the worker profile, nothing else.
data "aws_iam_policy_document" "autoscaler" {
  statement {
    sid = "DescribeForScheduling"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeImages",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeKeyPairs",
      "ec2:DescribeInstanceTypes",
    ]
    resources = ["*"] # Describe* actions do not support resource scoping
  }
  statement {
    sid       = "LaunchClusterInstances"
    actions   = ["ec2:RunInstances", "ec2:CreateTags"]
    resources = ["*"] # RunInstances touches images, subnets and volumes; scoped by the tag condition below
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ray-cluster-name"
      values   = [var.cluster_name]
    }
  }
  statement {
    sid       = "ManageClusterInstances"
    actions   = ["ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/ray-cluster-name"
      values   = [var.cluster_name]
    }
  }
  statement {
    sid       = "PassWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
  }
}

resource "aws_iam_role" "head" {
  name               = "${var.cluster_name}-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "head_bucket" {
  name   = "bucket-rw"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.bucket_rw.json
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name   = "ray-autoscaler"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.autoscaler.json
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.cluster_name}-head"
  role = aws_iam_role.head.name
}
