output "bucket" {
  description = "Bucket of the published root; jobs write to s3://<bucket>/<published_prefix>."
  value       = aws_s3_bucket.root.bucket
}

output "root_url_s3" {
  description = "The --out of jobs/embed.py."
  value       = "s3://${aws_s3_bucket.root.bucket}/${var.published_prefix}"
}

output "root_url_https" {
  description = "The published root for readers (tessera-ray sample --root ...)."
  value       = "https://${aws_cloudfront_distribution.root.domain_name}"
}

output "head_instance_profile_arn" {
  description = "IamInstanceProfile of the head node in cluster.yaml."
  value       = aws_iam_instance_profile.head.arn
}

output "worker_instance_profile_arn" {
  description = "IamInstanceProfile of the reader and encoder nodes in cluster.yaml."
  value       = aws_iam_instance_profile.worker.arn
}
